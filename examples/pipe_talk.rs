//! A parent and a child talking over a pipe until the child closes its end.
//!
//! Run with `cargo run --example pipe_talk`.

use stealpool::pipe::RecvError;
use stealpool::pipe::{self, Connection};
use stealpool::process::Process;

fn child(conn: Connection<String>) {
    let greeting = conn.recv().expect("the parent says hello");
    println!("[child] got: {greeting}");
    for line in ["hello, parent", "here is some news", "bye"] {
        conn.send(line.to_string()).unwrap();
    }
    // Returning drops `conn`, closing the child's end.
}
stealpool::register_fn!(child);

fn main() {
    let (parent_end, child_end) = pipe::duplex::<String>().expect("pipe");
    let p = Process::spawn(child, child_end).expect("process starts");
    parent_end.send("hello, child".to_string()).unwrap();
    let mut heard = 0;
    loop {
        match parent_end.recv() {
            Ok(line) => {
                heard += 1;
                println!("[parent] got: {line}");
            }
            Err(RecvError::Disconnected) => {
                println!("[parent] the child closed its end: end of file after {heard} messages");
                break;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(heard, 3);
    assert!(p.join().success());
}
