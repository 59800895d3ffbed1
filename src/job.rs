//! What a job is: a value that can be run once to produce an output.
//!
//! Every `FnOnce() -> R` is a [`Job`], so the thread pool runs closures directly. Named job types
//! (structs implementing `Job`) are how the same work can run on any backend: the process pool
//! will accept the ones that serialize. [`Job`] is re-exported at the crate root.
//!
//! The rest is plumbing, kept in this module rather than the crate root: [`Call`], [`Batch`] and
//! [`Star`] are the jobs behind `apply_async`, `map` and `starmap`, and [`Apply`] is what a
//! mapped function is. They are public because they appear in the bounds of
//! [`Executor`](crate::Executor)'s methods (generic code over executors names them, as in
//! `E: Submit<Call<F, A>>`), and nobody needs to build them by hand.

use crate::error::JobError;
use crate::unwind;

/// A unit of work: run once, produce an output.
///
/// # Examples
/// ```
/// use stealpool::{Job, ThreadPoolExecutor, Submit};
///
/// struct Square(u64);
///
/// impl Job for Square {
///     type Output = u64;
///     fn run(self) -> u64 {
///         self.0 * self.0
///     }
/// }
///
/// let pool = ThreadPoolExecutor::new(2);
/// assert_eq!(pool.submit(Square(12)).unwrap().result(), Ok(144));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job",
    note = "a job is a closure `FnOnce() -> R` or a type that implements `stealpool::Job`"
)]
pub trait Job {
    /// What the job produces.
    type Output;

    /// Runs the job.
    fn run(self) -> Self::Output;
}

impl<F, R> Job for F
where
    F: FnOnce() -> R,
{
    type Output = R;

    #[inline]
    fn run(self) -> R {
        self()
    }
}

/// The job behind `apply_async(f, args)`: `f(args)`.
#[derive(Debug, Clone)]
pub struct Call<F, A> {
    pub(crate) f: F,
    pub(crate) args: A,
}

impl<F, A, R> Job for Call<F, A>
where
    F: FnOnce(A) -> R,
{
    type Output = R;

    #[inline]
    fn run(self) -> R {
        (self.f)(self.args)
    }
}

/// A function applied to each item of a map: every `Fn(A) -> R`, and, through [`Star`], every
/// function of two to four arguments applied to tuples (`starmap`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be applied to items of type `{A}`",
    note = "a mapped function takes one item (`Fn(A) -> R`); `starmap` takes a function of 2 to 4 arguments and tuples of them"
)]
pub trait Apply<A> {
    /// What one application produces.
    type Output;

    /// Applies the function to one item.
    fn apply(&self, item: A) -> Self::Output;
}

impl<F, A, R> Apply<A> for F
where
    F: Fn(A) -> R,
{
    type Output = R;

    #[inline]
    fn apply(&self, item: A) -> R {
        self(item)
    }
}

/// A function of several arguments applied to tuples of them: the function behind
/// [`Executor::starmap`](crate::Executor::starmap), like Python's `Pool.starmap`.
#[derive(Debug, Clone, Copy)]
pub struct Star<F>(pub(crate) F);

macro_rules! star_apply {
    ($($a:ident),+) => {
        impl<F, $($a,)+ R> Apply<($($a,)+)> for Star<F>
        where
            F: Fn($($a),+) -> R,
        {
            type Output = R;

            #[inline]
            #[allow(non_snake_case)]
            fn apply(&self, ($($a,)+): ($($a,)+)) -> R {
                (self.0)($($a),+)
            }
        }
    };
}
star_apply!(A, B);
star_apply!(A, B, C);
star_apply!(A, B, C, D);

/// The job behind one chunk of a `map`: `f` applied to each item, each outcome kept apart.
///
/// Each item runs under its own panic guard, so a panic fails exactly the item that panicked and
/// the error surfaces at that item's position, not at the start of its chunk.
#[derive(Debug, Clone)]
pub struct Batch<F, A> {
    pub(crate) f: F,
    pub(crate) items: Vec<A>,
}

impl<F, A> Job for Batch<F, A>
where
    F: Apply<A>,
{
    type Output = Vec<Result<F::Output, JobError>>;

    fn run(self) -> Self::Output {
        let f = &self.f;
        self.items.into_iter().map(|item| unwind::catch(|| f.apply(item))).collect()
    }
}
