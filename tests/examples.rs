//! Runs the classic multiprocessing programs in `examples/` (built by `cargo test`) and checks
//! what each prints and how it exits. Each example also asserts its own invariants.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// Runs an example to the end (killing it after a minute) and returns its stdout.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} is not built: run the whole `cargo test`, which builds the examples", path.display());
    let mut child = Command::new(&path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish in a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{name} failed ({status}):\n{out}\n{err}");
    out
}

#[test]
fn ticket_sale() {
    let out = run("ticket_sale");
    assert!(out.contains("100 tickets sold by 6 processes, each exactly once; 0 left"), "{out}");
}

#[test]
fn room_for_four() {
    let out = run("room_for_four");
    assert_eq!(out.lines().filter(|l| l.contains("enters")).count(), 13, "{out}");
    assert!(out.contains("13 guests visited; at most"), "{out}");
}

#[test]
fn queue_writer_reader() {
    let out = run("queue_writer_reader");
    assert!(out.contains("the writer put 10 items; the reader got all 10 in order"), "{out}");
}

#[test]
fn process_basics() {
    let out = run("process_basics");
    assert_eq!(out.lines().filter(|l| l.contains("hello, world")).count(), 3, "{out}");
    assert!(out.contains("joined stealpool-p1: exited with code 0"), "{out}");
    assert!(out.contains("it ended: killed by signal 15 (SIGTERM)"), "{out}");
}

#[test]
fn data_isolation() {
    let out = run("data_isolation");
    assert!(out.contains("after the child process: ITEMS = []"), "{out}");
    assert!(out.contains("after a thread: ITEMS = [0, 1, 2]"), "{out}");
}

#[test]
fn pipe_talk() {
    let out = run("pipe_talk");
    assert!(out.contains("[child] got: hello, child"), "{out}");
    assert!(out.contains("end of file after 3 messages"), "{out}");
}
