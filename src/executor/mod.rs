//! The [`Executor`] trait that every pool implements and the [`Submit`] trait for the jobs a pool
//! accepts. The machinery behind `map`, `imap` and `imap_unordered`, shared by all pools, is in
//! `map.rs`.
//!
//! A backend implements only `Submit<J>` for the job types it can run, plus the lifecycle
//! methods; everything else (`apply_async`, the maps, callbacks, deadlines, windows, chunking,
//! cancel-on-failure and cancel-on-drop) lives here once.
//!
//! This layer sits above `future/` and below the backends: it must never name a backend.

mod map;

use self::map::Order;
pub use self::map::{MapIter, MapOptions};
use crate::error::{JobError, JoinError, ShutdownError, SubmitError};
use crate::future::Future;
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
        MapIter::start(self, f, items.into_iter(), options, Order::Ordered { stop_on_error: true })
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
        MapIter::start(self, f, items.into_iter(), options, Order::Ordered { stop_on_error: false })
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
        MapIter::start(self, f, items.into_iter(), options, Order::Unordered)
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
        MapIter::start(self, Star(f), items.into_iter(), options, Order::Ordered { stop_on_error: true })
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run jobs of type `{J}`",
    label = "this executor does not accept `{J}`",
    note = "the thread pool runs any `Job + Send + 'static`, closures included; the process pool runs only registered code: functions registered with `register_fn!` (with `apply_async`, `map`, ...) and job types registered with `register_job!`, never closures"
)]
pub trait Submit<J: Job>: Executor {
    /// Schedules `job` and returns the [`Future`] of its output.
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, if the executor is shut down.
    fn submit(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>>;
}
