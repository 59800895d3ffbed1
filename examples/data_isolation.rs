//! Data isolation: a global changed in a child process is unchanged in the parent, while the
//! same change made by a thread is visible.
//!
//! Run with `cargo run --example data_isolation`.

use std::sync::Mutex;

use stealpool::process::Process;

static ITEMS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn add_items(n: u32) {
    let mut items = ITEMS.lock().unwrap();
    items.extend(0..n);
    println!("in process {}: ITEMS = {:?}", std::process::id(), *items);
}
stealpool::register_fn!(add_items);

fn main() {
    let child = Process::spawn(add_items, 3).expect("process starts");
    assert!(child.join().success());
    let after_process = ITEMS.lock().unwrap().clone();
    println!("in the parent after the child process: ITEMS = {after_process:?}");
    assert!(after_process.is_empty(), "a child process has its own memory");

    std::thread::spawn(|| add_items(3)).join().unwrap();
    let after_thread = ITEMS.lock().unwrap().clone();
    println!("in the parent after a thread: ITEMS = {after_thread:?}");
    assert_eq!(after_thread, [0, 1, 2], "a thread shares the parent's memory");
}
