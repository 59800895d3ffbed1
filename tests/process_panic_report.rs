//! A panic in a process pool's worker reaches the job's future with its location and, when the
//! worker's environment enables backtraces, its backtrace. Every pool is dropped at the end of
//! its test, so no worker outlives it.

use stealpool::{Executor, JobError, MapOptions, ProcessPoolBuilder, ProcessPoolExecutor};

/// The line of the `panic!` below: the location the error must name.
const PANIC_LINE: u32 = line!() + 4;

fn refuse_odd(x: u32) -> u32 {
    if x % 2 == 1 {
        panic!("odd input {x}");
    }
    x
}
stealpool::register_fn!(refuse_odd);

fn expected_location() -> String {
    format!("{}:{PANIC_LINE}:9", file!())
}

/// A pool whose workers have backtraces enabled (`true`) or disabled (`false`), whatever the
/// test runner's environment says.
fn pool(backtraces: bool) -> ProcessPoolExecutor {
    let builder = ProcessPoolBuilder::new().num_workers(1).env_remove("RUST_LIB_BACKTRACE");
    let builder = if backtraces { builder.env("RUST_BACKTRACE", "1") } else { builder.env_remove("RUST_BACKTRACE") };
    builder.build().unwrap()
}

#[test]
fn a_panic_carries_its_location_and_no_backtrace_when_disabled() {
    let p = pool(false);
    let err = p.apply_async(refuse_odd, 3).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Panicked { message, .. } if message == "odd input 3"), "{err:?}");
    assert_eq!(err.panic_location(), Some(expected_location().as_str()));
    assert_eq!(err.panic_backtrace(), None);
    assert_eq!(err.to_string(), format!("job panicked at {}: odd input 3", expected_location()));
    // The next job on the same worker is not given the last one's panic.
    assert_eq!(p.apply_async(refuse_odd, 4).unwrap().result(), Ok(4));
}

#[test]
fn with_rust_backtrace_set_in_the_workers_the_backtrace_comes_back() {
    let p = pool(true);
    let err = p.apply_async(refuse_odd, 5).unwrap().result().unwrap_err();
    assert_eq!(err.panic_location(), Some(expected_location().as_str()));
    let backtrace = err.panic_backtrace().expect("RUST_BACKTRACE=1 in the worker's environment");
    assert!(backtrace.contains("refuse_odd"), "the backtrace names the panicking function:\n{backtrace}");
    assert!(backtrace.len() <= 64 * 1024 + 16, "bounded: {} bytes", backtrace.len());
    assert!(!err.to_string().contains("refuse_odd"), "Display shows the location, not the backtrace");
}

#[test]
fn each_item_of_a_map_chunk_carries_its_own_location() {
    let p = pool(false);
    let out: Vec<_> = p.imap_with(refuse_odd, 0..4u32, MapOptions::new().chunksize(4)).unwrap().collect();
    assert_eq!(out[0], Ok(0));
    let err = out[1].as_ref().unwrap_err().job_error().unwrap();
    assert_eq!(err.panic_location(), Some(expected_location().as_str()));
    assert_eq!(out[2], Ok(2));
    assert!(out[3].as_ref().unwrap_err().job_error().unwrap().is_panic());
}

#[test]
fn a_panicking_registered_job_type_carries_its_location_too() {
    let p = pool(false);
    let f = p.submit(Boom).unwrap();
    let err = f.result().unwrap_err();
    assert_eq!(err.panic_location(), Some(format!("{}:{}:9", file!(), BOOM_LINE).as_str()));
}

const BOOM_LINE: u32 = line!() + 8;

#[derive(serde::Serialize, serde::Deserialize)]
struct Boom;

impl stealpool::Job for Boom {
    type Output = u8;
    fn run(self) -> u8 {
        panic!("boom")
    }
}
stealpool::register_job!(Boom);

const INIT_LINE: u32 = line!() + 3;

fn init_refuses() {
    panic!("no configuration");
}
stealpool::register_fn!(init_refuses);

#[test]
fn a_panicking_initializer_says_where_in_the_build_error() {
    let err = ProcessPoolBuilder::new().num_workers(1).initializer(init_refuses).build().unwrap_err();
    assert!(err.is_initializer_failure(), "{err}");
    let text = err.to_string();
    assert!(text.contains("no configuration"), "{text}");
    assert!(text.contains(&format!("{}:{INIT_LINE}:5", file!())), "{text}");
}
