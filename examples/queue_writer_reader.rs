//! A writer job and a reader job in a process pool, exchanging items through a manager
//! `Queue`.
//!
//! Run with `cargo run --example queue_writer_reader`.

use stealpool::manager::{Manager, Queue};
use stealpool::{Executor, ProcessPoolExecutor};

/// Puts ten items, then `None` to say it is done.
fn writer(q: Queue<Option<String>>) -> u32 {
    for i in 0..10 {
        let item = format!("item {i} from process {}", std::process::id());
        q.put(Some(item)).expect("the manager is up");
    }
    q.put(None).unwrap();
    10
}
stealpool::register_fn!(writer);

/// Gets items until `None`.
fn reader(q: Queue<Option<String>>) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(item) = q.get().expect("the manager is up") {
        println!("reader in process {} got: {item}", std::process::id());
        got.push(item);
    }
    got
}
stealpool::register_fn!(reader);

fn main() {
    let manager = Manager::new().expect("manager starts");
    // Bounded, so the writer waits whenever it gets three items ahead.
    let q = manager.bounded_queue::<Option<String>>(3).unwrap();
    let pool = ProcessPoolExecutor::new(2);
    let read = pool.apply_async(reader, q.clone()).unwrap();
    let wrote = pool.apply_async(writer, q).unwrap();
    let wrote = wrote.result().expect("the writer finished");
    let read = read.result().expect("the reader finished");
    assert_eq!(read.len() as u32, wrote);
    assert!(read.iter().enumerate().all(|(i, item)| item.starts_with(&format!("item {i} "))), "in order");
    println!("the writer put {wrote} items; the reader got all {} in order", read.len());
}
