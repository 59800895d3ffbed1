//! The machinery behind [`Executor::map`](crate::Executor::map)(super::Executor::map) and its relatives, shared by
//! every backend: chunking the input, a window of chunks in flight, one deadline, results in
//! input order (or as they finish), cancel on failure and on drop.
//!
//! This module must never name a backend: it only submits [`Batch`] jobs through [`Submit`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Submit;
use crate::deadline;
use crate::error::{JobError, MapError, MapErrorKind, ResultTimeoutError, ShutdownError};
use crate::future::{CompletionQueue, Future};
use crate::job::{Apply, Batch};

/// Options for [`Executor::map_with`](crate::Executor::map_with), [`Executor::imap_with`](crate::Executor::imap_with) and
/// [`Executor::imap_unordered_with`](crate::Executor::imap_unordered_with).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::{Executor, MapOptions, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2);
/// // 4 items per job, at most 8 jobs ahead of the consumer, one deadline for the whole map
/// let opts = MapOptions::new().chunksize(4).buffersize(8).timeout(Duration::from_secs(60));
/// let squares: Vec<u64> = pool.map_with(|x: u64| x * x, 0..100, opts).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares[99], 9801);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    chunksize: Option<usize>,
    buffersize: Option<usize>,
    timeout: Option<Duration>,
}

impl MapOptions {
    /// The defaults: automatic chunk size, automatic window, no deadline.
    pub fn new() -> Self {
        MapOptions::default()
    }

    /// Items per job. 0 means the default: adaptive. The first jobs get one item each; then,
    /// from the rate at which items come back (wall time × workers / items done), each new
    /// job gets about 100 µs of work, so tiny items travel in large chunks and slow ones one
    /// at a time (an even spread across the workers, also when one of them gets less CPU).
    /// The adaptive size is at most `len / (4 × workers)` rounded up when the input's length
    /// is known (an exact `size_hint`, as `multiprocessing.Pool`'s chunk), and at most what
    /// keeps the items and results in flight within 8 MiB (see [`buffersize`](Self::buffersize)).
    pub fn chunksize(mut self, items: usize) -> Self {
        self.chunksize = (items > 0).then_some(items);
        self
    }

    /// How many chunks may be submitted ahead of the consumer, like Python 3.14's `buffersize`.
    /// Items are read from the input only as the window allows, so an endless input works.
    /// Default: `4 × workers`. 0 means the default.
    ///
    /// The memory of a map is bounded by it: at most `(buffersize + 1) × chunksize` items are
    /// in flight (submitted and not yet yielded), each costing its input item and its result
    /// (`size_of::<A>() + size_of::<Result<R, JobError>>()`). With the default chunk size that
    /// product stays within 8 MiB, whatever the input's length.
    pub fn buffersize(mut self, chunks: usize) -> Self {
        self.buffersize = (chunks > 0).then_some(chunks);
        self
    }

    /// One deadline for the whole map, counted from the call. An item not ready by then yields
    /// a timeout error, and the rest is cancelled.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Ordered { stop_on_error: bool },
    Unordered,
}

type ChunkFuture<R> = Future<Vec<Result<R, JobError>>>;

/// Reads the input in chunks and submits them; type-erased so `MapIter` has one parameter.
trait ChunkSource<R> {
    /// The next chunk: its first index, its length, and its future (or the refusal).
    fn next_chunk(&mut self) -> Option<(usize, usize, Result<ChunkFuture<R>, ShutdownError>)>;

    /// Sets the number of items of the chunks to come.
    fn set_chunksize(&mut self, items: usize);
}

/// Bytes of items and results a map with the default chunk size keeps in flight at most.
const IN_FLIGHT_BYTES: usize = 8 << 20;

/// The work an adaptive chunk aims at: far above a job's overhead (about a microsecond), far
/// below what would leave a worker idle at the end of the map.
const CHUNK_TARGET_SECS: f64 = 100e-6;

/// The adaptive chunk size (see [`MapOptions::chunksize`]).
#[derive(Debug)]
struct Adaptive {
    started: Instant,
    /// Items whose results came back.
    done: usize,
    workers: usize,
    max: usize,
}

impl Adaptive {
    /// The chunk size after `items` more came back: the items of about `CHUNK_TARGET_SECS` of
    /// work at the rate seen so far, growing at most fourfold a step.
    fn update(&mut self, items: usize, current: usize) -> usize {
        self.done += items;
        let per_item = self.started.elapsed().as_secs_f64() * self.workers as f64 / self.done.max(1) as f64;
        let wanted = if per_item > 0.0 { (CHUNK_TARGET_SECS / per_item) as usize } else { self.max };
        wanted.clamp(1, self.max).min(current.saturating_mul(4).max(1))
    }
}

struct Source<'a, E, F, I> {
    executor: &'a E,
    f: F,
    items: I,
    chunksize: usize,
    next_index: usize,
}

impl<'a, E, F, A, R, I> ChunkSource<R> for Source<'a, E, F, I>
where
    E: Submit<Batch<F, A>>,
    F: Apply<A, Output = R> + Clone,
    R: Send + 'static,
    I: Iterator<Item = A>,
{
    fn next_chunk(&mut self) -> Option<(usize, usize, Result<ChunkFuture<R>, ShutdownError>)> {
        let items: Vec<A> = self.items.by_ref().take(self.chunksize).collect();
        if items.is_empty() {
            return None;
        }
        let start = self.next_index;
        let len = items.len();
        self.next_index += len;
        let submitted = self.executor.submit(Batch { f: self.f.clone(), items }).map_err(|_| ShutdownError);
        Some((start, len, submitted))
    }

    fn set_chunksize(&mut self, items: usize) {
        self.chunksize = items.max(1);
    }
}

struct Chunk<R> {
    start: usize,
    len: usize,
    /// `None` when the executor refused the chunk.
    future: Option<ChunkFuture<R>>,
}

/// The iterator returned by [`Executor::map`](crate::Executor::map) and its relatives.
///
/// Yields `Ok(value)` or `Err(MapError)` per item (whose [`index`](MapError::index) is the
/// item's input position). Dropping it cancels every job not yet finished.
pub struct MapIter<'a, R> {
    source: Option<Box<dyn ChunkSource<R> + 'a>>,
    order: Order,
    window: usize,
    deadline: Option<Instant>,
    /// Ordered mode: submitted chunks in input order.
    queue: VecDeque<Chunk<R>>,
    /// Unordered mode: submitted chunks by slot; finished ones post their slot to `completed`.
    slots: Vec<Option<Chunk<R>>>,
    free_slots: Vec<usize>,
    completed: Option<Arc<CompletionQueue>>,
    /// Results of the chunk being yielded now, with the input index of the next one.
    current: Option<(usize, std::vec::IntoIter<Result<R, JobError>>)>,
    finished: bool,
    /// `None` when the caller chose the chunk size.
    adaptive: Option<Adaptive>,
    chunksize: usize,
}

impl<'a, R: Send + 'static> MapIter<'a, R> {
    pub(super) fn start<E, F, A, I>(
        executor: &'a E,
        f: F,
        items: I,
        options: MapOptions,
        order: Order,
    ) -> Result<Self, ShutdownError>
    where
        E: Submit<Batch<F, A>>,
        F: Apply<A, Output = R> + Clone + 'a,
        I: Iterator<Item = A> + 'a,
    {
        if executor.is_shutdown() {
            return Err(ShutdownError);
        }
        let workers = executor.max_workers().max(1);
        let window = options.buffersize.unwrap_or(4 * workers);
        let adaptive = options.chunksize.is_none().then(|| {
            let item_bytes = (std::mem::size_of::<A>() + std::mem::size_of::<Result<R, JobError>>()).max(1);
            let by_memory = (IN_FLIGHT_BYTES / item_bytes / window.saturating_add(1)).max(1);
            let by_length = match items.size_hint() {
                (lo, Some(hi)) if lo == hi => lo.div_ceil(4 * workers).max(1),
                _ => usize::MAX,
            };
            Adaptive { started: Instant::now(), done: 0, workers, max: by_memory.min(by_length) }
        });
        let chunksize = options.chunksize.unwrap_or(1);
        let mut it = MapIter {
            source: Some(Box::new(Source { executor, f, items, chunksize, next_index: 0 })),
            order,
            window,
            deadline: deadline::after_opt(options.timeout),
            queue: VecDeque::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            completed: (order == Order::Unordered).then(CompletionQueue::new),
            current: None,
            finished: false,
            adaptive,
            chunksize,
        };
        it.fill();
        Ok(it)
    }

    /// Submits chunks until the window is full or the input ends. A refused chunk is kept, so
    /// that its error is reported (at its position, in ordered mode); the input is then
    /// abandoned.
    fn fill(&mut self) {
        while self.chunks_in_flight() < self.window {
            let Some(source) = self.source.as_mut() else { return };
            let Some((start, len, submitted)) = source.next_chunk() else {
                self.source = None;
                return;
            };
            let future = submitted.ok();
            if future.is_none() {
                self.source = None;
            }
            let chunk = Chunk { start, len, future };
            match &self.completed {
                None => self.queue.push_back(chunk),
                Some(completed) => {
                    let slot = self.free_slots.pop().unwrap_or(self.slots.len());
                    match &chunk.future {
                        Some(f) => completed.watch(f, slot),
                        None => self.current_refusal(slot),
                    }
                    if slot == self.slots.len() {
                        self.slots.push(Some(chunk));
                    } else {
                        self.slots[slot] = Some(chunk);
                    }
                }
            }
        }
    }

    /// Unordered mode has no position to wait for: a refused chunk is reported at once.
    fn current_refusal(&self, slot: usize) {
        if let Some(completed) = &self.completed {
            completed.post(slot, true);
        }
    }

    /// Stops everything: cancels every job not finished, abandons the input.
    fn stop(&mut self) {
        self.finished = true;
        self.source = None;
        self.current = None;
        self.cancel_all();
    }

    fn fail(&mut self, index: usize, kind: MapErrorKind) -> Option<Result<R, MapError>> {
        let item_failure_tolerated =
            matches!(kind, MapErrorKind::Failed(_)) && self.order != (Order::Ordered { stop_on_error: true });
        if !item_failure_tolerated {
            self.stop();
        }
        Some(Err(MapError { index, kind }))
    }

    /// Waits for `chunk`'s results and makes them current, or returns the error to yield.
    fn open(&mut self, chunk: Chunk<R>) -> Option<Result<R, MapError>> {
        let Some(mut future) = chunk.future else {
            return self.fail(chunk.start, MapErrorKind::Shutdown);
        };
        let results = match future.result_inner(self.deadline) {
            Ok(results) => results,
            Err(ResultTimeoutError::Timeout) => {
                future.cancel();
                return self.fail(chunk.start, MapErrorKind::Timeout);
            }
            // The chunk failed as a whole (not item by item): every item gets the error.
            Err(ResultTimeoutError::Failed(e)) => std::iter::repeat_with(|| Err(e.clone())).take(chunk.len).collect(),
        };
        if let Some(adaptive) = &mut self.adaptive {
            let size = adaptive.update(chunk.len, self.chunksize);
            if size != self.chunksize {
                self.chunksize = size;
                if let Some(source) = self.source.as_mut() {
                    source.set_chunksize(size);
                }
            }
        }
        self.current = Some((chunk.start, results.into_iter()));
        None
    }

    /// The next chunk to yield from, in the order of the mode.
    fn next_chunk(&mut self) -> Result<Option<Chunk<R>>, usize> {
        let Some(completed) = &self.completed else {
            return Ok(self.queue.pop_front());
        };
        if self.chunks_in_flight() == 0 {
            return Ok(None);
        }
        match completed.recv_deadline(self.deadline) {
            Some((slot, _)) => {
                self.free_slots.push(slot);
                Ok(self.slots[slot].take())
            }
            // Timed out: report it at the earliest item still outstanding.
            None => Err(self.slots.iter().flatten().map(|c| c.start).min().unwrap_or(0)),
        }
    }
}

impl<R> MapIter<'_, R> {
    fn chunks_in_flight(&self) -> usize {
        self.queue.len() + (self.slots.len() - self.free_slots.len())
    }

    fn cancel_all(&mut self) {
        let queued = self.queue.drain(..);
        let slotted = self.slots.drain(..).flatten();
        for future in queued.chain(slotted).filter_map(|c| c.future) {
            future.cancel();
        }
        self.free_slots.clear();
    }
}

impl<R: Send + 'static> Iterator for MapIter<'_, R> {
    type Item = Result<R, MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            if let Some((index, results)) = &mut self.current {
                let i = *index;
                *index += 1;
                match results.next() {
                    Some(Ok(v)) => return Some(Ok(v)),
                    Some(Err(e)) => return self.fail(i, MapErrorKind::Failed(e)),
                    None => self.current = None,
                }
            }
            self.fill();
            match self.next_chunk() {
                Ok(Some(chunk)) => {
                    if let Some(err) = self.open(chunk) {
                        return Some(err);
                    }
                }
                Ok(None) => self.finished = true,
                Err(index) => return self.fail(index, MapErrorKind::Timeout),
            }
        }
        None
    }
}

impl<R> Drop for MapIter<'_, R> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl<R> fmt::Debug for MapIter<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("order", &self.order)
            .field("window", &self.window)
            .field("deadline", &self.deadline)
            .field("chunks_in_flight", &self.chunks_in_flight())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
