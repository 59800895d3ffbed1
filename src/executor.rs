//! The [`Executor`] trait that every pool implements, the [`Submit`] trait for the jobs a pool
//! accepts, and the machinery behind `map`, `imap` and `imap_unordered` shared by all pools.
//!
//! A backend implements only `Submit<J>` for the job types it can run, plus the lifecycle
//! methods; everything else (`apply_async`, the maps, callbacks, deadlines, windows, chunking,
//! cancel-on-failure and cancel-on-drop) lives here once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadline;
use crate::error::{JobError, JoinError, MapError, MapErrorKind, ResultTimeoutError, ShutdownError, SubmitError};
use crate::future::Future;
use crate::future::wait::Mailbox;
use crate::job::{Apply, Batch, Call, Job, Star};

/// What every executor does, whatever the jobs it runs: lifecycle, `apply_async`, the maps.
///
/// Implemented by [`ThreadPoolExecutor`](crate::ThreadPoolExecutor); the process pool
/// implements it too, so code written against `Executor` + [`Submit`] runs on either backend.
///
/// | Python (`concurrent.futures` / `multiprocessing.Pool`) | stealpool |
/// |---|---|
/// | `ex.submit(fn)` | [`Submit::submit`] |
/// | `pool.apply_async(fn, args, callback, error_callback)` | [`apply_async`](Executor::apply_async), [`apply_async_with`](Executor::apply_async_with) |
/// | `ex.map(fn, it, timeout=, chunksize=, buffersize=)` | [`map`](Executor::map), [`map_with`](Executor::map_with) |
/// | `pool.imap(fn, it)` | [`imap`](Executor::imap) |
/// | `pool.imap_unordered(fn, it)` | [`imap_unordered`](Executor::imap_unordered) |
/// | `pool.starmap(fn, pairs)` | [`starmap`](Executor::starmap) |
/// | `ex.shutdown(wait, cancel_futures=)` | [`shutdown`](Executor::shutdown) |
/// | `pool.close()`, `pool.join()`, `pool.terminate()` | [`close`](Executor::close), [`join`](Executor::join), [`terminate`](Executor::terminate) |
///
/// # Examples
/// Generic code, written once for any executor that accepts the job:
/// ```
/// use stealpool::{Executor, Submit, ThreadPoolExecutor};
///
/// fn total<E: Executor + Submit<fn() -> u64>>(pool: &E, jobs: Vec<fn() -> u64>) -> u64 {
///     let futures: Vec<_> = jobs.into_iter().map(|j| pool.submit(j).unwrap()).collect();
///     futures.into_iter().map(|f| f.result().unwrap()).sum()
/// }
///
/// let pool = ThreadPoolExecutor::new(2);
/// assert_eq!(total(&pool, vec![|| 1, || 2, || 3]), 6);
/// ```
pub trait Executor {
    /// The number of workers (threads or processes) the executor runs jobs on.
    fn max_workers(&self) -> usize;

    /// Stops accepting new work, like Python's `Executor.shutdown(wait, cancel_futures=...)`.
    ///
    /// With `cancel_futures`, jobs that have not started are cancelled (their futures resolve
    /// to [`JobError::Cancelled`], and the jobs, with what they captured, are dropped at once);
    /// running jobs always finish. With `wait`, blocks until every
    /// remaining job has finished and the workers have exited. Calling it again is harmless;
    /// submitting afterwards fails with [`SubmitError`].
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Stops accepting new work and lets queued jobs finish (`multiprocessing.Pool.close`).
    fn close(&self);

    /// Blocks until every worker has exited (`multiprocessing.Pool.join`).
    ///
    /// # Errors
    /// [`JoinError`] if the executor is still accepting work: call
    /// [`close`](Executor::close), [`terminate`](Executor::terminate) or
    /// [`shutdown`](Executor::shutdown) first.
    fn join(&self) -> Result<(), JoinError>;

    /// Stops at once: queued jobs are cancelled, and no new work is accepted.
    ///
    /// Running jobs are stopped where the backend can do that (processes); a thread cannot be
    /// stopped safely, so on the thread pool running jobs finish and their results are kept.
    fn terminate(&self);

    /// Whether the executor has stopped accepting new work.
    fn is_shutdown(&self) -> bool;

    /// Runs `f(args)` on a worker: Python's `Pool.apply_async(f, args)`.
    ///
    /// # Errors
    /// [`SubmitError`], handing the call back, if the executor is shut down.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// fn power((base, exp): (u64, u32)) -> u64 { base.pow(exp) }
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// assert_eq!(pool.apply_async(power, (2, 10)).unwrap().result(), Ok(1024));
    /// ```
    fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<Future<R>, SubmitError<Call<F, A>>>
    where
        Self: Submit<Call<F, A>> + Sized,
        F: FnOnce(A) -> R,
        R: Send + 'static,
    {
        self.submit(Call { f, args })
    }

    /// [`apply_async`](Executor::apply_async) with Python's `callback` and `error_callback`:
    /// exactly one of them runs, once, when the job ends.
    ///
    /// # Errors
    /// [`SubmitError`], handing the call back, if the executor is shut down.
    ///
    /// # Examples
    /// ```
    /// use std::sync::mpsc;
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let (tx, rx) = mpsc::channel();
    /// let tx2 = tx.clone();
    /// pool.apply_async_with(|x: i32| x + 1, 41,
    ///     move |v| tx.send(Ok(*v)).unwrap(),
    ///     move |e| tx2.send(Err(e.to_string())).unwrap()).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Ok(42));
    /// ```
    fn apply_async_with<F, A, R, S, E>(
        &self,
        f: F,
        args: A,
        on_success: S,
        on_error: E,
    ) -> Result<Future<R>, SubmitError<Call<F, A>>>
    where
        Self: Submit<Call<F, A>> + Sized,
        F: FnOnce(A) -> R,
        R: Send + 'static,
        S: FnOnce(&R) + Send + 'static,
        E: FnOnce(&JobError) + Send + 'static,
    {
        let future = self.submit(Call { f, args })?;
        future.add_done_callback(move |outcome| match outcome {
            Ok(v) => on_success(v),
            Err(e) => on_error(e),
        });
        Ok(future)
    }

    /// Applies `f` to every item; results come in input order, like Python's `Executor.map`.
    ///
    /// The first failed item yields its error at its position; then the iterator ends and every
    /// job not yet finished is cancelled. Dropping the iterator early cancels the rest too. A
    /// cancelled chunk drops its items and its copy of `f` at once, as does the iterator its
    /// own copy when it ends. Items are read lazily, a bounded window ahead (see [`MapOptions`]).
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let squares: Result<Vec<u64>, _> = pool.map(|x: u64| x * x, 1..=4).unwrap().collect();
    /// assert_eq!(squares.unwrap(), vec![1, 4, 9, 16]);
    /// ```
    fn map<'a, F, A, R, I>(&'a self, f: F, items: I) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Executor::map) with options: chunk size, deadline, window.
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use stealpool::{Executor, MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let opts = MapOptions::new().chunksize(16).timeout(Duration::from_secs(60));
    /// let sum: u64 = pool.map_with(|x: u64| x + 1, 0..1000, opts).unwrap().map(Result::unwrap).sum();
    /// assert_eq!(sum, 500_500);
    /// ```
    fn map_with<'a, F, A, R, I>(&'a self, f: F, items: I, options: MapOptions) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        MapIter::start(self, f, items.into_iter(), options, Mode::Ordered { stop_on_error: true })
    }

    /// Like [`map`](Executor::map), but a failed item does not stop the iteration: each item
    /// yields its own result, in input order (`multiprocessing.Pool.imap`).
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let out: Vec<bool> = pool
    ///     .imap(|x: i32| if x == 2 { panic!("two") } else { x }, 1..=3)
    ///     .unwrap()
    ///     .map(|r| r.is_ok())
    ///     .collect();
    /// assert_eq!(out, vec![true, false, true]);
    /// ```
    fn imap<'a, F, A, R, I>(&'a self, f: F, items: I) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_with(f, items, MapOptions::new())
    }

    /// [`imap`](Executor::imap) with options.
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    fn imap_with<'a, F, A, R, I>(&'a self, f: F, items: I, options: MapOptions) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        MapIter::start(self, f, items.into_iter(), options, Mode::Ordered { stop_on_error: false })
    }

    /// Like [`imap`](Executor::imap), but results come in completion order
    /// (`multiprocessing.Pool.imap_unordered`).
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let mut out: Vec<u32> = pool.imap_unordered(|x: u32| x * 3, 0..5).unwrap().map(Result::unwrap).collect();
    /// out.sort();
    /// assert_eq!(out, vec![0, 3, 6, 9, 12]);
    /// ```
    fn imap_unordered<'a, F, A, R, I>(&'a self, f: F, items: I) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_unordered_with(f, items, MapOptions::new())
    }

    /// [`imap_unordered`](Executor::imap_unordered) with options.
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    fn imap_unordered_with<'a, F, A, R, I>(
        &'a self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<F, A>> + Sized,
        F: Fn(A) -> R + Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        MapIter::start(self, f, items.into_iter(), options, Mode::Unordered)
    }

    /// Like [`map`](Executor::map) for a function of several arguments, each item a tuple of
    /// them: `f(a, b)` for every `(a, b)` (`multiprocessing.Pool.starmap`).
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, ThreadPoolExecutor};
    ///
    /// fn add(a: u32, b: u32) -> u32 { a + b }
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let sums: Vec<u32> = pool.starmap(add, [(1, 2), (3, 4)]).unwrap().map(Result::unwrap).collect();
    /// assert_eq!(sums, [3, 7]);
    /// ```
    fn starmap<'a, F, A, R, I>(&'a self, f: F, items: I) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<Star<F>, A>> + Sized,
        Star<F>: Apply<A, Output = R>,
        F: Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.starmap_with(f, items, MapOptions::new())
    }

    /// [`starmap`](Executor::starmap) with options.
    ///
    /// # Errors
    /// [`ShutdownError`] if the executor no longer accepts work.
    fn starmap_with<'a, F, A, R, I>(
        &'a self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapIter<'a, R>, ShutdownError>
    where
        Self: Submit<Batch<Star<F>, A>> + Sized,
        Star<F>: Apply<A, Output = R>,
        F: Clone + 'a,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        MapIter::start(self, Star(f), items.into_iter(), options, Mode::Ordered { stop_on_error: true })
    }
}

/// Submitting jobs of type `J`: implemented by each executor for the jobs it can run.
///
/// The thread pool accepts every `J: Job + Send + 'static` (every `FnOnce() -> R + Send`
/// closure among them).
///
/// # Examples
/// ```
/// use stealpool::{Submit, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2);
/// let f = Submit::submit(&pool, || "hello".len()).unwrap();
/// assert_eq!(f.result(), Ok(5));
/// ```
pub trait Submit<J: Job>: Executor {
    /// Schedules `job` and returns the [`Future`] of its output.
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, if the executor is shut down.
    fn submit(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>>;
}

/// Options for [`Executor::map_with`], [`Executor::imap_with`] and
/// [`Executor::imap_unordered_with`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let opts = stealpool::MapOptions::new().chunksize(4).buffersize(8).timeout(Duration::from_secs(5));
/// assert_eq!(opts.get_chunksize(), Some(4));
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

    /// Items per job. Default: when the input's length is known (an exact `size_hint`),
    /// `len / (4 × workers)` rounded up, as in `multiprocessing.Pool`; otherwise 1.
    /// 0 means the default.
    pub fn chunksize(mut self, items: usize) -> Self {
        self.chunksize = (items > 0).then_some(items);
        self
    }

    /// How many chunks may be submitted ahead of the consumer, like Python 3.14's `buffersize`.
    /// Items are read from the input only as the window allows, so an endless input works.
    /// Default: `4 × workers`. 0 means the default.
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

    /// The chunk size set, if any.
    pub fn get_chunksize(&self) -> Option<usize> {
        self.chunksize
    }

    /// The window set, if any.
    pub fn get_buffersize(&self) -> Option<usize> {
        self.buffersize
    }

    /// The deadline span set, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ordered { stop_on_error: bool },
    Unordered,
}

type ChunkFuture<R> = Future<Vec<Result<R, JobError>>>;

/// Reads the input in chunks and submits them; type-erased so `MapIter` has one parameter.
trait ChunkSource<R> {
    /// The next chunk: its first index, its length, and its future (or the refusal).
    fn next_chunk(&mut self) -> Option<(usize, usize, Result<ChunkFuture<R>, ShutdownError>)>;
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
}

struct Chunk<R> {
    start: usize,
    len: usize,
    /// `None` when the executor refused the chunk.
    future: Option<ChunkFuture<R>>,
}

/// The iterator returned by [`Executor::map`] and its relatives.
///
/// Yields `Ok(value)` or `Err(MapError)` per item (whose [`index`](MapError::index) is the
/// item's input position). Dropping it cancels every job not yet finished.
pub struct MapIter<'a, R> {
    source: Option<Box<dyn ChunkSource<R> + 'a>>,
    mode: Mode,
    window: usize,
    deadline: Option<Instant>,
    /// Ordered mode: submitted chunks in input order.
    queue: VecDeque<Chunk<R>>,
    /// Unordered mode: submitted chunks by slot; finished ones post their slot to `mailbox`.
    slots: Vec<Option<Chunk<R>>>,
    free_slots: Vec<usize>,
    mailbox: Option<Arc<Mailbox>>,
    /// Results of the chunk being yielded now, with the input index of the next one.
    current: Option<(usize, std::vec::IntoIter<Result<R, JobError>>)>,
    finished: bool,
}

impl<'a, R: Send + 'static> MapIter<'a, R> {
    fn start<E, F, A, I>(
        executor: &'a E,
        f: F,
        items: I,
        options: MapOptions,
        mode: Mode,
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
        let chunksize = options.chunksize.unwrap_or_else(|| match items.size_hint() {
            (lo, Some(hi)) if lo == hi => lo.div_ceil(4 * workers).max(1),
            _ => 1,
        });
        let mut it = MapIter {
            source: Some(Box::new(Source { executor, f, items, chunksize, next_index: 0 })),
            mode,
            window: options.buffersize.unwrap_or(4 * workers),
            deadline: deadline::after_opt(options.timeout),
            queue: VecDeque::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            mailbox: (mode == Mode::Unordered).then(Mailbox::new),
            current: None,
            finished: false,
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
            match &self.mailbox {
                None => self.queue.push_back(chunk),
                Some(mailbox) => {
                    let slot = self.free_slots.pop().unwrap_or(self.slots.len());
                    match &chunk.future {
                        Some(f) => mailbox.watch(f, slot),
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
        if let Some(mailbox) = &self.mailbox {
            mailbox.post(slot, true);
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
            matches!(kind, MapErrorKind::Failed(_)) && self.mode != (Mode::Ordered { stop_on_error: true });
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
        self.current = Some((chunk.start, results.into_iter()));
        None
    }

    /// The next chunk to yield from, in the order of the mode.
    fn next_chunk(&mut self) -> Result<Option<Chunk<R>>, usize> {
        let Some(mailbox) = &self.mailbox else {
            return Ok(self.queue.pop_front());
        };
        if self.chunks_in_flight() == 0 {
            return Ok(None);
        }
        match mailbox.recv_deadline(self.deadline) {
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
            .field("mode", &self.mode)
            .field("window", &self.window)
            .field("deadline", &self.deadline)
            .field("chunks_in_flight", &self.chunks_in_flight())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
