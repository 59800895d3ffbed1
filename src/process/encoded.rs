//! The executors that run *registered* code from its encoded form (the process pool, and the
//! Redis client built on its frames) implement [`Submit`](crate::Submit) the same way for every
//! shape of job: a registered job type, `apply_async` with a registered function, a `map` chunk
//! and a `starmap` chunk. [`EncodedSubmit`] is what such an executor provides (how to encode and
//! queue one job, and its default time limit); [`encoded_submit_impls!`] writes the four `Submit`
//! implementations over it for one executor type, so they exist once.
//!
//! A macro, not blanket impls over the trait: the public `Submit` implementations stay exactly
//! as they were (one per executor type, as the docs list them), and the private trait never
//! shows in a public bound. Every call is static (the trait's methods are generic and inlined):
//! nothing is added to the process pool's submit path.
//!
//! This file must never decide anything about a job (limits, codes, layouts are the callers'):
//! it only routes each shape of job to its executor's `send`.

use std::time::Duration;

use crate::error::{JobError, SubmitError};
use crate::future::Future;
use crate::process::protocol::{InputLayout, Status};

/// An executor that queues jobs as the process pool encodes them: a registered name, an input
/// layout, postcard input, a decoder for the reply and a time limit.
pub(crate) trait EncodedSubmit {
    /// The time limit of a job submitted without one of its own.
    fn default_limit(&self) -> Option<Duration>;

    /// Encodes `job` after the frame start it is given and queues it; `code` is the registered
    /// name, or the type name of unregistered code (its future then fails with
    /// [`JobError::Unregistered`]).
    fn send<J, T>(
        &self,
        job: J,
        code: Result<&str, &'static str>,
        layout: InputLayout,
        encode: impl FnOnce(&J, Vec<u8>) -> postcard::Result<Vec<u8>>,
        decode: fn(Status, &[u8]) -> Result<T, JobError>,
        limit: Option<Duration>,
    ) -> Result<Future<T>, SubmitError<J>>
    where
        T: Send + 'static;
}

/// The four `Submit` implementations of an [`EncodedSubmit`] executor `$executor`: registered
/// job types, `Call` (apply_async), `Batch` (map chunks) and `Batch<Star>` (starmap chunks).
macro_rules! encoded_submit_impls {
    // One job to `send`: its input is the job itself, or the named field of it.
    (@send $self:ident, $job:ident, $code:expr, $layout:ident, $decode:ident $(, $field:ident)?) => {{
        use $crate::process::encoded::EncodedSubmit as _;
        let limit = $self.default_limit();
        $self.send(
            $job,
            $code,
            $crate::process::protocol::InputLayout::$layout,
            |job, frame| $crate::process::protocol::append(&(job $(.$field)?), frame),
            $crate::process::$decode,
            limit,
        )
    }};
    ($executor:ty) => {
        /// A registered job type (see [`register_job!`](crate::register_job)).
        impl<J: $crate::process::RemoteJob> $crate::executor::Submit<J> for $executor {
            fn submit(
                &self,
                job: J,
            ) -> ::std::result::Result<$crate::future::Future<J::Output>, $crate::error::SubmitError<J>> {
                $crate::process::encoded::encoded_submit_impls!(@send self, job, Ok(J::NAME), One, decode_one)
            }
        }

        /// `apply_async(f, args)` with a registered function of one argument.
        impl<F, A, R> $crate::executor::Submit<$crate::job::Call<F, A>> for $executor
        where
            F: Fn(A) -> R + 'static,
            A: ::serde::Serialize,
            R: ::serde::de::DeserializeOwned + Send + 'static,
        {
            fn submit(
                &self,
                call: $crate::job::Call<F, A>,
            ) -> ::std::result::Result<$crate::future::Future<R>, $crate::error::SubmitError<$crate::job::Call<F, A>>>
            {
                $crate::process::encoded::encoded_submit_impls!(@send self, call, $crate::process::fn_code::<F>(), One, decode_one, args)
            }
        }

        /// One chunk of `map` / `imap` / `imap_unordered` with a registered function of one
        /// argument.
        impl<F, A, R> $crate::executor::Submit<$crate::job::Batch<F, A>> for $executor
        where
            F: Fn(A) -> R + 'static,
            A: ::serde::Serialize,
            R: ::serde::de::DeserializeOwned + Send + 'static,
        {
            fn submit(
                &self,
                batch: $crate::job::Batch<F, A>,
            ) -> ::std::result::Result<
                $crate::future::Future<Vec<Result<R, $crate::error::JobError>>>,
                $crate::error::SubmitError<$crate::job::Batch<F, A>>,
            > {
                $crate::process::encoded::encoded_submit_impls!(@send self, batch, $crate::process::fn_code::<F>(), Many, decode_many, items)
            }
        }

        /// One chunk of `starmap` with a registered function of two to four arguments.
        impl<F, A, R> $crate::executor::Submit<$crate::job::Batch<$crate::job::Star<F>, A>> for $executor
        where
            $crate::job::Star<F>: $crate::job::Apply<A, Output = R>,
            F: 'static,
            A: ::serde::Serialize,
            R: ::serde::de::DeserializeOwned + Send + 'static,
        {
            fn submit(
                &self,
                batch: $crate::job::Batch<$crate::job::Star<F>, A>,
            ) -> ::std::result::Result<
                $crate::future::Future<Vec<Result<R, $crate::error::JobError>>>,
                $crate::error::SubmitError<$crate::job::Batch<$crate::job::Star<F>, A>>,
            > {
                $crate::process::encoded::encoded_submit_impls!(@send self, batch, $crate::process::fn_code::<F>(), Many, decode_many, items)
            }
        }
    };
}
pub(crate) use encoded_submit_impls;
