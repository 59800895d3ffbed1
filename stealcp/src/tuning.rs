//! The engine's tuning constants, in one leaf module that everything may import: how much
//! work goes into one task and how much is kept in flight.
//!
//! This module must never hold anything but constants (it has no imports, so it can be in no
//! cycle).

/// Tasks in flight per worker: enough to hide a process pool's round trip, and to keep the
/// workers busy while the coordinator waits for a CPU of its own (a woken thread may wait a
/// scheduler tick, 4 ms, while the workers hold both cores: some five batches of small files).
pub(crate) const TASKS_PER_WORKER: usize = 16;
/// A batch not yet full is sent only while fewer tasks than this per worker are in flight
/// (a worker may soon be idle); otherwise small files keep gathering into full batches here.
pub(crate) const PARTIAL_BATCH_BELOW: usize = 4;
/// Batches waiting on the coordinator beyond which it sends files before it reads more
/// directories (about 130k files, some 50 MB): scanning first keeps every worker busy, but
/// must not hold a whole tree of millions of files in memory.
pub(crate) const READY_BATCHES_MAX: usize = 2048;
/// Most files in one batch.
pub(crate) const FILES_PER_TASK: usize = 64;
/// Most bytes in one batch: a batch of mid-sized files should not hold one worker for long
/// (at 16 MiB, ten 5 MiB files of one directory went out as batches of 4, 4 and 2 to two
/// workers: a fifth slower than one file per worker in turn). Where sizes are not known up
/// front, the worker enforces it (the rest of its batch comes back uncopied).
pub(crate) const BYTES_PER_TASK: u64 = 4 << 20;
/// A scan copies the files it lists itself only below this size (larger ones go to the
/// coordinator to be batched, once the scan has returned): two 16 MiB files in one directory
/// were copied one after the other on the scan's worker, while the other worker had nothing.
pub(crate) const SCAN_COPIES_BELOW: u64 = 1 << 20;
const _: () = assert!(SCAN_COPIES_BELOW < SPLIT_AT, "a file to split is never copied by a scan");
/// Files this large are split into ranges of [`RANGE`] copied by several workers at once.
pub(crate) const SPLIT_AT: u64 = 64 << 20;
/// The size of one range of a split file.
pub(crate) const RANGE: u64 = 32 << 20;
/// Fewer directories of one depth than this are finished on the coordinator; more are shared
/// among the workers (a directory takes three quick calls; a task's round trip is dearer).
pub(crate) const DIRS_WORTH_SHARING: usize = 32;
