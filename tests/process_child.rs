//! `Process`, `pipe`, and manager objects used from other processes: real children, real
//! signals, real sockets.

use std::time::Duration;

use serde_bytes::ByteBuf;

use stealpool::manager::{GetError, Lock, Manager, Queue, ReleaseError, Semaphore, TryAcquireError};
use stealpool::pipe::{self, Connection, Receiver};
use stealpool::pipe::{RecvError, RecvTimeoutError, TryRecvError};
use stealpool::process::Process;
use stealpool::{Executor, ExitStatus, JobError, ProcessError, ProcessPoolExecutor};

const LONG: Duration = Duration::from_secs(60);

fn add_and_check(a: u32, b: u32, expected: u32) {
    assert_eq!(a + b, expected, "arguments arrived in order");
}
stealpool::register_fn!(add_and_check);

fn panics(message: String) {
    panic!("{message}");
}
stealpool::register_fn!(panics);

fn exits(code: i32) {
    std::process::exit(code);
}
stealpool::register_fn!(exits);

fn sleeps_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
stealpool::register_fn!(sleeps_forever);

/// Kills a child when a test fails half-way, so none outlives the test.
struct Reap<'a>(&'a Process);

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        self.0.kill();
        self.0.join();
    }
}

#[test]
fn a_process_runs_its_function_with_positional_arguments() {
    let p = Process::spawn(add_and_check, (2, 3, 5)).unwrap();
    assert_eq!(p.join(), ExitStatus::Exited(0));
    assert_eq!(p.exit_status(), Some(ExitStatus::Exited(0)), "asking again gives the same answer");
    assert!(!p.is_alive());
    let wrong = Process::spawn(add_and_check, (2, 3, 6)).unwrap();
    assert_eq!(wrong.join(), ExitStatus::Exited(1), "a panic exits with 1");
}

#[test]
fn exit_codes_and_signals_are_told_apart() {
    let p = Process::spawn(panics, "on purpose".to_string()).unwrap();
    assert_eq!(p.join(), ExitStatus::Exited(1));
    let p = Process::spawn(exits, 7).unwrap();
    assert_eq!(p.join(), ExitStatus::Exited(7));

    let p = Process::builder().name("sp-sleeper").spawn(sleeps_forever, ()).unwrap();
    let _reap = Reap(&p);
    assert_eq!(p.name(), "sp-sleeper");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid())).unwrap();
    assert_eq!(comm.trim(), "sp-sleeper");
    assert!(p.is_alive());
    assert_eq!(p.join_timeout(Duration::from_millis(50)), None);
    p.terminate();
    assert_eq!(p.join_timeout(LONG), Some(ExitStatus::Signaled { signal: 15 }));
    assert!(!p.is_alive());
    p.kill(); // harmless once it has ended: the pid is not signalled again

    let p = Process::spawn(sleeps_forever, ()).unwrap();
    let _reap = Reap(&p);
    p.kill();
    assert_eq!(p.join(), ExitStatus::Signaled { signal: 9 });
    assert_eq!(p.join().to_string(), "killed by signal 9 (SIGKILL)");
}

#[test]
fn an_unregistered_function_is_refused_before_anything_starts() {
    fn not_registered(_: u8) {}
    let err = Process::spawn(not_registered, 1).unwrap_err();
    assert!(matches!(err, ProcessError::Unregistered { ref name } if name.contains("not_registered")), "{err}");
}

fn echo_upper(conn: Connection<String>) {
    while let Ok(line) = conn.recv() {
        conn.send(line.to_uppercase()).unwrap();
    }
}
stealpool::register_fn!(echo_upper);

fn count_to(tx: pipe::Sender<u32>, n: u32) {
    for i in 1..=n {
        tx.send(i).unwrap();
    }
}
stealpool::register_fn!(count_to);

#[test]
fn a_pipe_talks_both_ways_and_ends_with_eof() {
    let (mine, theirs) = pipe::duplex::<String>().unwrap();
    let child = Process::spawn(echo_upper, theirs).unwrap();
    let _reap = Reap(&child);
    for word in ["one", "two", "three"] {
        mine.send(word.into()).unwrap();
        assert_eq!(mine.recv_timeout(LONG).unwrap(), word.to_uppercase());
    }
    assert_eq!(mine.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(mine.recv_timeout(Duration::from_millis(20)), Err(RecvTimeoutError::Timeout));
    let (tx, rx) = mine.split();
    drop(tx); // the child's recv sees end of file, and it returns
    assert_eq!(child.join_timeout(LONG), Some(ExitStatus::Exited(0)));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected), "the child's end is gone: end of file, not a hang");

    let (tx, rx): (_, Receiver<u32>) = pipe::one_way().unwrap();
    let child = Process::spawn(count_to, (tx, 5)).unwrap();
    let got: Vec<u32> = std::iter::from_fn(|| rx.recv().ok()).collect();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    assert_eq!(child.join(), ExitStatus::Exited(0));
}

fn length(conn: Connection<String>) -> usize {
    conn.recv().map(|s| s.len()).unwrap_or(0)
}
stealpool::register_fn!(length);

#[test]
fn a_pipe_end_in_a_pool_job_is_a_clear_error_and_the_pool_goes_on() {
    let pool = ProcessPoolExecutor::new(1);
    let (_mine, theirs) = pipe::duplex::<String>().unwrap();
    let err = pool.apply_async(length, theirs).unwrap().result().unwrap_err();
    // (postcard keeps no message of its own for a refusal like this one.)
    assert!(matches!(err, JobError::Serialization { .. }), "{err}");
    // Nothing was left behind to ride along with later messages: processes still start.
    let p = Process::spawn(add_and_check, (1, 1, 2)).unwrap();
    assert_eq!(p.join(), ExitStatus::Exited(0));
}

fn hold_lock_forever(lock: Lock, held: Queue<u32>) {
    let _guard = lock.lock().unwrap();
    held.put(std::process::id()).unwrap();
    sleeps_forever();
}
stealpool::register_fn!(hold_lock_forever);

#[test]
fn a_process_killed_holding_the_lock_releases_it_and_the_next_owner_knows() {
    let manager = Manager::new().unwrap();
    let lock = manager.lock().unwrap();
    let held = manager.queue::<u32>().unwrap();
    let p = Process::spawn(hold_lock_forever, (lock.clone(), held.clone())).unwrap();
    let _reap = Reap(&p);
    assert_eq!(held.get_timeout(LONG), Ok(p.pid()));
    assert_eq!(lock.try_lock().unwrap_err(), TryAcquireError::WouldBlock);
    p.kill();
    assert_eq!(p.join(), ExitStatus::Signaled { signal: 9 });
    let guard = lock.lock_timeout(LONG).unwrap();
    assert!(guard.previous_owner_died());
}

fn hold_permits_forever(room: Semaphore, held: Queue<u32>) {
    let _a = room.acquire().unwrap();
    let _b = room.acquire().unwrap();
    held.put(std::process::id()).unwrap();
    sleeps_forever();
}
stealpool::register_fn!(hold_permits_forever);

#[test]
fn a_process_killed_holding_permits_gives_them_back() {
    let manager = Manager::new().unwrap();
    let room = manager.semaphore(3).unwrap();
    let held = manager.queue::<u32>().unwrap();
    let p = Process::spawn(hold_permits_forever, (room.clone(), held.clone())).unwrap();
    let _reap = Reap(&p);
    assert_eq!(held.get_timeout(LONG), Ok(p.pid()));
    let mine = room.try_acquire().unwrap();
    assert_eq!(room.try_acquire().unwrap_err(), TryAcquireError::WouldBlock, "two of three are held");
    p.kill();
    assert_eq!(p.join(), ExitStatus::Signaled { signal: 9 });
    let a = room.acquire_timeout(LONG).unwrap();
    let b = room.acquire_timeout(LONG).unwrap();
    assert!(a.previous_owner_died(), "the first to get a dead holder's permit is told");
    assert!(!b.previous_owner_died(), "once");
    drop((mine, a, b));
    assert_eq!(room.release(), Err(ReleaseError::OverReleased), "never more than three");
}

fn get_one(q: Queue<u32>, started: Queue<u32>) {
    started.put(0).unwrap();
    let item = q.get().unwrap();
    panic!("this process was killed before it could get anything, yet it got {item}");
}
stealpool::register_fn!(get_one);

#[test]
fn a_process_killed_while_blocked_in_get_takes_no_item_with_it() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let started = manager.queue::<u32>().unwrap();
    let p = Process::spawn(get_one, (q.clone(), started.clone())).unwrap();
    let _reap = Reap(&p);
    started.get_timeout(LONG).unwrap();
    p.kill();
    assert_eq!(p.join(), ExitStatus::Signaled { signal: 9 });
    q.put(42).unwrap();
    assert_eq!(q.get_timeout(LONG), Ok(42));
}

fn wait_for_disconnect(q: Queue<u32>, started: Queue<u32>) {
    started.put(0).unwrap();
    // Exit 0 only if the blocked call ended with the right error.
    assert_eq!(q.get(), Err(GetError::Disconnected));
}
stealpool::register_fn!(wait_for_disconnect);

#[test]
fn manager_shutdown_releases_a_process_blocked_in_get() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let started = manager.queue::<u32>().unwrap();
    let p = Process::spawn(wait_for_disconnect, (q, started.clone())).unwrap();
    let _reap = Reap(&p);
    started.get_timeout(LONG).unwrap();
    manager.shutdown();
    assert_eq!(p.join_timeout(LONG), Some(ExitStatus::Exited(0)));
}

fn produce((q, from, n): (Queue<u64>, u64, u64)) -> u64 {
    (from..from + n).map(|i| q.put(i).map(|()| i).unwrap()).sum()
}
stealpool::register_fn!(produce);

fn consume((q, n): (Queue<u64>, u64)) -> u64 {
    (0..n).map(|_| q.get().unwrap()).sum()
}
stealpool::register_fn!(consume);

#[test]
fn many_producers_and_consumers_across_processes() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<u64>(16).unwrap();
    let pool = ProcessPoolExecutor::new(6);
    let consumers: Vec<_> = (0..3).map(|_| pool.apply_async(consume, (q.clone(), 400)).unwrap()).collect();
    let producers: Vec<_> = (0..3).map(|p| pool.apply_async(produce, (q.clone(), p * 400, 400)).unwrap()).collect();
    let put: u64 = producers.into_iter().map(|f| f.result().unwrap()).sum();
    let got: u64 = consumers.into_iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(put, (0..1200).sum::<u64>());
    assert_eq!(got, put, "every item exactly once");
    assert_eq!(q.is_empty(), Ok(true));
}

/// An item whose bytes tell which it is.
fn numbered(index: u32) -> ByteBuf {
    ByteBuf::from((0..64 << 10).map(|b: usize| (index as usize * 31 + b) as u8).collect::<Vec<u8>>())
}

fn put_large_and_hang(q: Queue<ByteBuf>, done: Queue<u32>) {
    (0..40).for_each(|i| q.put(numbered(i)).unwrap());
    done.put(0).unwrap();
    sleeps_forever();
}
stealpool::register_fn!(put_large_and_hang);

#[test]
fn large_items_put_by_a_process_that_was_then_killed_arrive_intact() {
    // 64 KiB items travel through the manager's shared memory: the producer's death must not
    // take them (or the memory they are in) with it.
    let manager = Manager::new().unwrap();
    let q = manager.queue::<ByteBuf>().unwrap();
    let done = manager.queue::<u32>().unwrap();
    let p = Process::spawn(put_large_and_hang, (q.clone(), done.clone())).unwrap();
    let _reap = Reap(&p);
    done.get_timeout(LONG).unwrap();
    p.kill();
    assert_eq!(p.join(), ExitStatus::Signaled { signal: 9 });
    for i in 0..40 {
        assert!(q.get_timeout(LONG).unwrap() == numbered(i), "item {i} arrived whole and in order");
    }
    // Its chunk was given up: more large items still go through.
    for i in 40..200 {
        q.put(numbered(i)).unwrap();
        assert!(q.get_timeout(LONG).unwrap() == numbered(i));
    }
}
