//! A `Process` with positional arguments, `join`, and `terminate`.
//!
//! Run with `cargo run --example process_basics`.

use std::time::Duration;

use stealpool::ExitStatus;
use stealpool::process::Process;

fn greet(name: String, times: u32) {
    for i in 1..=times {
        println!("[child {}] hello, {name} ({i}/{times})", std::process::id());
    }
}
stealpool::register_fn!(greet);

fn work_forever() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}
stealpool::register_fn!(work_forever);

fn main() {
    let p = Process::spawn(greet, ("world".to_string(), 3)).expect("process starts");
    println!("started {} with pid {}", p.name(), p.pid());
    let status = p.join();
    println!("joined {}: {status}", p.name());
    assert_eq!(status, ExitStatus::Exited(0));

    let busy = Process::builder().name("busy").spawn(work_forever, ()).expect("process starts");
    println!("{} is alive: {}", busy.name(), busy.is_alive());
    assert_eq!(busy.join_timeout(Duration::from_millis(200)), None, "still working");
    busy.terminate();
    let status = busy.join();
    println!("after terminate, {} is alive: {}; it ended: {status}", busy.name(), busy.is_alive());
    assert_eq!(status, ExitStatus::Signaled { signal: 15 });
}
