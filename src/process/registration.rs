//! Code that worker processes can run, known by a stable name.
//!
//! A job travels to a worker process as a name plus serialized input. The name is the identity
//! of the code: it is the same in every build of the same source (unlike a code address, which
//! ASLR moves), so a later backend can send the same job to a worker on another machine that
//! runs the same program. Registration happens at link time ([`linkme`]), so the table is
//! complete before `main` and before the fork server starts: nothing has to run first.
//!
//! A message that names code the worker does not know is answered with
//! [`Status::Unregistered`]; nothing is ever called through an address taken from a message.
//!
//! This module must never panic on input from a message: bad input is a [`Status`].

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;

use ipc_channel::ipc::OpaqueIpcReceiver;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::Job;
use crate::process::protocol::{self, InputLayout, PanicReport, Status};
use crate::unwind;

/// One registered piece of code. Built by [`register_fn!`](crate::register_fn) and
/// [`register_job!`](crate::register_job); not meant to be built by hand.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration {
    name: &'static str,
    type_id: fn() -> TypeId,
    invoke: Invoke,
    /// For a function: runs it once in a [`Process`](crate::process::Process).
    start: Option<Start>,
}

/// Runs the code on serialized input, appending the serialized output (or an error message)
/// to the buffer.
type Invoke = fn(InputLayout, &[u8], &mut Vec<u8>) -> Status;

/// Receives the arguments from the channel, runs the code, and returns the exit code.
type Start = fn(OpaqueIpcReceiver) -> i32;

impl Registration {
    /// A registered function.
    pub const fn function(name: &'static str, type_id: fn() -> TypeId, invoke: Invoke, start: Start) -> Self {
        Registration { name, type_id, invoke, start: Some(start) }
    }

    /// A registered job type.
    pub const fn job(name: &'static str, type_id: fn() -> TypeId, invoke: Invoke) -> Self {
        Registration { name, type_id, invoke, start: None }
    }
}

/// Every registration in the binary, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static REGISTRY: [Registration];

struct Tables {
    /// Function type -> name: how the parent names a function it was handed.
    by_type: HashMap<TypeId, &'static str>,
    /// Name -> code: how a worker finds what a message names. `None` marks a name that two
    /// different pieces of code claim, which is refused rather than guessed.
    by_name: HashMap<&'static str, Option<&'static Registration>>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut by_type = HashMap::new();
        let mut by_name: HashMap<&'static str, Option<&'static Registration>> = HashMap::new();
        let mut owner: HashMap<&'static str, TypeId> = HashMap::new();
        for r in REGISTRY.iter() {
            let id = (r.type_id)();
            if r.start.is_some() {
                by_type.entry(id).or_insert(r.name);
            }
            match owner.get(r.name) {
                // The same code registered twice under one name: harmless.
                Some(existing) if *existing == id => {}
                Some(_) => {
                    by_name.insert(r.name, None);
                }
                None => {
                    owner.insert(r.name, id);
                    by_name.insert(r.name, Some(r));
                }
            }
        }
        Tables { by_type, by_name }
    })
}

/// The registered name of the function type `F`, if it was registered.
pub(crate) fn name_of_fn<F: 'static>() -> Option<&'static str> {
    tables().by_type.get(&TypeId::of::<F>()).copied()
}

/// Runs the code registered under `name`; the worker's side of a task.
pub(crate) fn invoke(name: &str, mode: InputLayout, input: &[u8], out: &mut Vec<u8>) -> Status {
    match tables().by_name.get(name) {
        Some(Some(r)) => (r.invoke)(mode, input, out),
        Some(None) => {
            out.extend_from_slice(
                format!("{name} (two different pieces of code are registered under this name)").as_bytes(),
            );
            Status::Unregistered
        }
        None => {
            out.extend_from_slice(name.as_bytes());
            Status::Unregistered
        }
    }
}

/// Runs the function registered as `name` once, as the body of a child process: the exit code
/// is 0 if it returned, 1 if it panicked (the panic message went to stderr), 2 if its
/// arguments did not arrive.
pub(crate) fn start(name: &str, args: OpaqueIpcReceiver) -> i32 {
    match tables().by_name.get(name).copied().flatten().and_then(|r| r.start) {
        Some(start) => start(args),
        None => {
            eprintln!("stealpool: no function is registered as `{name}`");
            2
        }
    }
}

/// A function that can run in a worker process: a plain `fn` (or non-capturing closure) whose
/// arguments deserialize and whose result serializes.
///
/// Implemented for functions of zero to four arguments. A function of one argument takes its
/// input as is (`apply_async(f, x)`, `map(f, xs)`); a function of several takes a tuple
/// (`starmap(f, [(a, b), ...])`). `Marker` only tells the arities apart. Implemented by the
/// compiler's blanket rules below; [`register_fn!`](crate::register_fn) checks it, so a
/// function whose arguments or result are not serde types is refused at compile time:
///
/// ```compile_fail,E0277
/// struct NotSerde(u32);
/// fn unwrap(x: NotSerde) -> u32 { x.0 }
/// stealpool::register_fn!(unwrap); // error: arguments must be serde types
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run in a worker process: its arguments must be serde types (`Deserialize`) and its result `Serialize`",
    label = "registered here",
    note = "a registered function is a plain `fn` (or a non-capturing closure) of at most four arguments, each \
            `serde::de::DeserializeOwned`, returning a `serde::Serialize` type; derive them with \
            `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait RemoteFn<Marker>: 'static {
    /// The input, as it travels.
    type Args: DeserializeOwned;
    /// The result, as it travels.
    type Output: Serialize;
    /// Calls the function.
    fn call_with(&self, args: Self::Args) -> Self::Output;
}

impl<F, R> RemoteFn<fn() -> R> for F
where
    F: Fn() -> R + 'static,
    R: Serialize,
{
    type Args = ();
    type Output = R;
    fn call_with(&self, (): ()) -> R {
        self()
    }
}

impl<F, A, R> RemoteFn<fn(A) -> R> for F
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    type Args = A;
    type Output = R;
    fn call_with(&self, a: A) -> R {
        self(a)
    }
}

macro_rules! remote_fn_tuple {
    ($($a:ident),+) => {
        impl<F, $($a,)+ R> RemoteFn<fn($($a),+) -> R> for F
        where
            F: Fn($($a),+) -> R + 'static,
            $($a: DeserializeOwned,)+
            R: Serialize,
        {
            type Args = ($($a,)+);
            type Output = R;
            #[allow(non_snake_case)]
            fn call_with(&self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
remote_fn_tuple!(A, B);
remote_fn_tuple!(A, B, C);
remote_fn_tuple!(A, B, C, D);

/// A job type that can run in a worker process. Implemented by
/// [`register_job!`](crate::register_job), which also registers it; do not implement it by
/// hand.
///
/// A closure is not a `RemoteJob`: a worker process runs only code it can find by name in its
/// own copy of the binary, so giving one to the process pool is a compile-time error.
///
/// ```compile_fail,E0277
/// let pool = stealpool::ProcessPoolExecutor::builder().num_workers(1).build().unwrap();
/// let _ = pool.submit(|| 6 * 7); // error: the process pool runs registered code only
/// ```
///
/// The same through the generic [`Submit`](crate::Submit) trait:
///
/// ```compile_fail,E0277
/// use stealpool::prelude::*;
/// fn run<E: Submit<J>, J: Job>(executor: &E, job: J) {
///     let _ = executor.submit(job);
/// }
/// let pool = stealpool::ProcessPoolExecutor::builder().num_workers(1).build().unwrap();
/// run(&pool, || 6 * 7); // error: not a registered job type
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a registered job type: the process pool runs registered code only",
    label = "not registered with `stealpool::register_job!`",
    note = "a closure cannot be sent to a worker process: register a function with `stealpool::register_fn!(f)` \
            and call `apply_async(f, args)` / `map(f, items)`, or register a job type with `stealpool::register_job!(T)`"
)]
pub trait RemoteJob:
    Job<Output: Serialize + DeserializeOwned + Send + 'static> + Serialize + DeserializeOwned + 'static
{
    /// The stable name the job type is registered under.
    const NAME: &'static str;
}

#[doc(hidden)]
pub fn type_id_of<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// The worker's side of a registered function.
#[doc(hidden)]
pub fn invoke_fn<F, M>(f: &F, mode: InputLayout, input: &[u8], out: &mut Vec<u8>) -> Status
where
    F: RemoteFn<M>,
{
    match mode {
        InputLayout::One => {
            let args = match postcard::from_bytes::<F::Args>(input) {
                Ok(a) => a,
                Err(e) => return fail(out, Status::BadInput, &e),
            };
            match unwind::catch(|| f.call_with(args)) {
                Ok(r) => encode(out, &r),
                Err(e) => panicked(out, e),
            }
        }
        InputLayout::Many => {
            let items = match postcard::from_bytes::<Vec<F::Args>>(input) {
                Ok(a) => a,
                Err(e) => return fail(out, Status::BadInput, &e),
            };
            let results: Vec<Result<F::Output, PanicReport>> =
                items.into_iter().map(|args| unwind::catch(|| f.call_with(args)).map_err(PanicReport::of)).collect();
            encode(out, &results)
        }
    }
}

/// The worker's side of a registered job type.
#[doc(hidden)]
pub fn invoke_job<J>(mode: InputLayout, input: &[u8], out: &mut Vec<u8>) -> Status
where
    J: Job<Output: Serialize> + DeserializeOwned,
{
    if mode != InputLayout::One {
        return fail(out, Status::BadInput, &"a job type runs one job per message");
    }
    let job = match postcard::from_bytes::<J>(input) {
        Ok(j) => j,
        Err(e) => return fail(out, Status::BadInput, &e),
    };
    match unwind::catch(|| job.run()) {
        Ok(r) => encode(out, &r),
        Err(e) => panicked(out, e),
    }
}

/// The child's side of a [`Process`](crate::process::Process): receive the arguments, call.
#[doc(hidden)]
pub fn start_fn<F, M>(f: &F, args: OpaqueIpcReceiver) -> i32
where
    F: RemoteFn<M>,
{
    let args = match args.to::<Incoming<F::Args>>().recv() {
        Ok(Incoming(a)) => a,
        Err(e) => {
            eprintln!("stealpool process {}: the arguments did not arrive: {e:?}", std::process::id());
            return 2;
        }
    };
    // The panic hook has already printed the message to stderr, as Python prints a traceback.
    match unwind::catch(|| f.call_with(args)) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// What the parent sends to a [`Process`](crate::process::Process): the arguments, through an
/// ipc-channel so that channels inside them (a [`Connection`](crate::pipe::Connection)) travel
/// as file descriptors. ipc-channel wants both directions of serde on each side; each side
/// only ever goes one way, and the two wrappers have the same wire form.
pub(crate) struct Outgoing<A>(pub(crate) A);

struct Incoming<A>(A);

impl<A: Serialize> Serialize for Outgoing<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, A> serde::Deserialize<'de> for Outgoing<A> {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("process arguments are only sent by the parent"))
    }
}

impl<A> Serialize for Incoming<A> {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("process arguments are only received by the child"))
    }
}

impl<'de, A: DeserializeOwned> serde::Deserialize<'de> for Incoming<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        A::deserialize(d).map(Incoming)
    }
}

/// Writes the report of a panic (the error [`unwind::catch`] returned) as a reply body.
fn panicked(out: &mut Vec<u8>, error: crate::JobError) -> Status {
    let report = PanicReport::of(error);
    match protocol::append(&report, std::mem::take(out)) {
        Ok(v) => *out = v,
        // A report of strings always serializes; should it not, the message alone will do.
        Err(_) => out.extend_from_slice(report.message.as_bytes()),
    }
    Status::Panicked
}

fn encode<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Status {
    let start = out.len();
    match protocol::append(value, std::mem::take(out)) {
        Ok(v) => {
            *out = v;
            Status::Ok
        }
        Err(e) => {
            out.truncate(start);
            fail(out, Status::BadOutput, &e)
        }
    }
}

fn fail(out: &mut Vec<u8>, status: Status, what: &dyn std::fmt::Display) -> Status {
    use std::io::Write;
    let _ = write!(out, "{what}");
    status
}

/// Registers a function so that process pools can run it: `apply_async(f, x)`, `map(f, xs)`,
/// `starmap(f, pairs)`, or as a worker initializer.
///
/// The function is known to workers by a stable name, by default its module path and name
/// (`my_crate::jobs::resize`); give one explicitly with `name = "..."` if the function may move.
/// Put the macro next to the function, at module level or inside a function body. Arguments
/// must implement `serde::Deserialize`, the result `serde::Serialize`.
///
/// # Examples
/// ```
/// use stealpool::{Executor, ProcessPoolExecutor};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// stealpool::register_fn!(square);
///
/// let pool = ProcessPoolExecutor::new(2);
/// assert_eq!(pool.apply_async(square, 12).unwrap().result(), Ok(144));
/// ```
#[macro_export]
macro_rules! register_fn {
    ($f:path) => {
        $crate::register_fn!($f, name = concat!(module_path!(), "::", stringify!($f)));
    };
    ($f:path, name = $name:expr) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::REGISTRY)]
            #[linkme(crate = $crate::__private::linkme)]
            static REGISTRATION: $crate::__private::Registration = $crate::__private::Registration::function(
                $name,
                || $crate::__private::type_id_of(&$f),
                |mode, input, out| $crate::__private::invoke_fn(&$f, mode, input, out),
                |args| $crate::__private::start_fn(&$f, args),
            );
        };
    };
}

/// Registers a job type (a [`Job`](crate::Job) that implements `serde::Serialize` and
/// `serde::Deserialize`, with a serializable output) so that process pools can `submit` it.
///
/// The type is known to workers by a stable name, by default its module path and name; give one
/// explicitly with `name = "..."`.
///
/// # Examples
/// ```
/// use serde::{Deserialize, Serialize};
/// use stealpool::{Job, ProcessPoolExecutor};
///
/// #[derive(Serialize, Deserialize)]
/// struct WordCount(String);
///
/// impl Job for WordCount {
///     type Output = usize;
///     fn run(self) -> usize {
///         self.0.split_whitespace().count()
///     }
/// }
/// stealpool::register_job!(WordCount);
///
/// let pool = ProcessPoolExecutor::new(1);
/// let n = pool.submit(WordCount("to be or not to be".into())).unwrap();
/// assert_eq!(n.result(), Ok(6));
/// ```
#[macro_export]
macro_rules! register_job {
    ($t:ty) => {
        $crate::register_job!($t, name = concat!(module_path!(), "::", stringify!($t)));
    };
    ($t:ty, name = $name:expr) => {
        impl $crate::RemoteJob for $t {
            const NAME: &'static str = $name;
        }
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::REGISTRY)]
            #[linkme(crate = $crate::__private::linkme)]
            static REGISTRATION: $crate::__private::Registration = $crate::__private::Registration::job(
                $name,
                ::std::any::TypeId::of::<$t>,
                $crate::__private::invoke_job::<$t>,
            );
        };
    };
}
