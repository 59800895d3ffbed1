//! The distributed shared objects against a real `redis-server` (one per test): handles sent
//! into real child processes that block on them, a lock holder SIGKILLed while holding,
//! bounded queues, timeouts, garbage in keys, Redis restarted and killed mid-wait, and the
//! expiry of every key written.

mod common;

use std::time::{Duration, Instant};

use common::HANG;
use common::redis_server::{self, RedisServer};
use stealpool::distributed::objects::{Event, Lock, Map, ObjectError, Objects, Queue, Semaphore};
use stealpool::process::Process;
use stealpool::{Executor, ExitStatus, ProcessPoolExecutor};

/// Starts a server, or says why the test is skipped.
fn server() -> Option<RedisServer> {
    if let Some(reason) = redis_server::unavailable() {
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(RedisServer::start())
}

fn objects(server: &RedisServer) -> Objects {
    Objects::new(server.url()).namespace("test")
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

/// Kills and waits for a child when the test ends, also when it fails half-way.
struct Reap(Process);

impl Drop for Reap {
    fn drop(&mut self) {
        self.0.kill();
        self.0.join();
    }
}

fn spawn<F, M>(f: F, args: F::Args) -> Reap
where
    F: stealpool::process::RemoteFn<M>,
    F::Args: serde::Serialize,
{
    Reap(Process::spawn(f, args).unwrap())
}

/// Child: says it is ready, blocks in `get` (no deadline), and answers with twice the item.
fn doubler(ready: Event, input: Queue<u64>, output: Queue<u64>) {
    ready.set().unwrap();
    let item = input.get_timeout(Duration::MAX).unwrap();
    output.put(&(item * 2)).unwrap();
}
stealpool::register_fn!(doubler);

#[test]
fn a_process_blocked_in_get_takes_what_the_test_puts() {
    let Some(server) = server() else { return };
    let objects = objects(&server);
    let (ready, input, output) = (objects.event("ready"), objects.queue::<u64>("in"), objects.queue::<u64>("out"));
    let child = spawn(doubler, (ready.clone(), input.clone(), output.clone()));
    assert!(ready.wait_timeout(HANG).unwrap(), "the child started");
    assert!(output.try_get().unwrap_err().is_empty(), "it waits: nothing came out yet");
    input.put(&21).unwrap();
    assert_eq!(output.get_timeout(HANG).unwrap(), 42);
    assert_eq!(child.0.join_timeout(HANG), Some(ExitStatus::Exited(0)));
    assert_eq!(input.len().unwrap(), 0);
}

/// Pool job: takes one item from `input` within `ms`, or reports the timeout.
fn take_within((input, ms): (Queue<String>, u64)) -> Result<String, String> {
    input.get_timeout(Duration::from_millis(ms)).map_err(|e| e.to_string())
}
stealpool::register_fn!(take_within);

#[test]
fn handles_travel_inside_pool_jobs() {
    let Some(server) = server() else { return };
    let input = objects(&server).queue::<String>("words");
    let pool = ProcessPoolExecutor::new(2);
    let waiting: Vec<_> = (0..2).map(|_| pool.apply_async(take_within, (input.clone(), 30_000)).unwrap()).collect();
    input.put(&"one".to_string()).unwrap();
    input.put(&"two".to_string()).unwrap();
    let mut got: Vec<String> = waiting.into_iter().map(|f| f.result().unwrap().unwrap()).collect();
    got.sort();
    assert_eq!(got, ["one", "two"], "each worker took one item");
    let late = pool.apply_async(take_within, (input.clone(), 50)).unwrap().result().unwrap();
    assert_eq!(late, Err("timed out".to_string()));
}

/// Child: puts `items` into a bounded queue (blocking when full), then sets `done`.
fn producer(queue: Queue<u32>, items: Vec<u32>, done: Event) {
    for item in items {
        queue.put(&item).unwrap();
    }
    done.set().unwrap();
}
stealpool::register_fn!(producer);

#[test]
fn a_bounded_queue_blocks_putters_until_a_slot_frees() {
    let Some(server) = server() else { return };
    let objects = objects(&server);
    let q = objects.bounded_queue::<u32>("bounded", 2);
    assert_eq!(q.maxsize(), Some(2));
    q.try_put(&1).unwrap();
    q.put_timeout(&2, Duration::ZERO).unwrap();
    assert!(q.try_put(&3).unwrap_err().is_full());
    let started = Instant::now();
    assert!(q.put_timeout(&3, Duration::from_millis(200)).unwrap_err().is_timeout());
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited the whole timeout");
    assert!(q.put_timeout(&3, Duration::ZERO).unwrap_err().is_timeout(), "zero: one try");
    assert_eq!(q.len().unwrap(), 2);

    let done = objects.event("done");
    let child = spawn(producer, (q.clone(), vec![3, 4, 5], done.clone()));
    assert!(!done.wait_timeout(Duration::from_millis(300)).unwrap(), "the child is blocked: the queue is full");
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(q.get_timeout(HANG).unwrap());
    }
    assert_eq!(got, [1, 2, 3, 4, 5], "in order, every item once");
    assert!(done.wait_timeout(HANG).unwrap());
    assert_eq!(child.0.join_timeout(HANG), Some(ExitStatus::Exited(0)));
    assert!(q.try_get().unwrap_err().is_empty());
    assert!(q.get_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
}

/// Child: takes the lock, says so, and then never lets go (until it is killed).
fn hold_forever(lock: Lock, held: Event) {
    let guard = lock.lock().unwrap();
    held.set().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = &guard;
    }
}
stealpool::register_fn!(hold_forever);

#[test]
fn a_lock_whose_holder_is_killed_comes_back_after_the_lease_and_says_so() {
    let Some(server) = server() else { return };
    let objects = objects(&server).lease(Duration::from_millis(800));
    let (lock, held) = (objects.lock("l"), objects.event("held"));
    let child = spawn(hold_forever, (lock.clone(), held.clone()));
    assert!(held.wait_timeout(HANG).unwrap());
    assert!(lock.try_lock().unwrap_err().is_would_block());
    assert!(lock.lock_timeout(Duration::from_millis(100)).unwrap_err().is_timeout());

    child.0.kill();
    assert_eq!(child.0.join(), ExitStatus::Signaled { signal: 9 });
    let started = Instant::now();
    let guard = lock.lock_timeout(HANG).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "it came back with the lease, not later");
    assert!(guard.previous_owner_died(), "the next holder learns the last one vanished");
    guard.unlock().unwrap();
    let guard = lock.try_lock().unwrap();
    assert!(!guard.previous_owner_died(), "told once; this time it was unlocked properly");
    drop(guard);
    assert!(!lock.lock_timeout(Duration::ZERO).unwrap().previous_owner_died(), "a dropped guard unlocks");
}

#[test]
fn a_holder_past_its_lease_loses_the_lock_and_hears_it() {
    let Some(server) = server() else { return };
    let lock = objects(&server).lease(Duration::from_millis(200)).lock("l");
    let stale = lock.lock().unwrap();
    stale.renew().unwrap();
    let next = lock.lock_timeout(HANG).unwrap();
    assert!(next.previous_owner_died());
    assert!(stale.renew().unwrap_err().is_lease_lost());
    assert!(stale.unlock().unwrap_err().is_lease_lost(), "it must not unlock the new holder's lock");
    assert!(lock.try_lock().unwrap_err().is_would_block(), "the new holder still holds it");
    drop(next);
    // A lease that lapsed while nobody else came is released normally.
    let late = lock.lock().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let the lease lapse: what the test is about
    late.unlock().unwrap();
    assert!(!lock.try_lock().unwrap().previous_owner_died());
}

/// Child: takes every permit of `sem`, says so, and holds them until killed.
fn hold_permits(sem: Semaphore, held: Event) {
    let permits: Vec<_> = (0..sem.permits()).map(|_| sem.acquire().unwrap()).collect();
    held.set().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = &permits;
    }
}
stealpool::register_fn!(hold_permits);

/// Child: waits for a permit (no deadline) and reports whether a previous holder died.
fn wait_permit(sem: Semaphore, report: Queue<bool>) {
    let permit = sem.acquire().unwrap();
    report.put(&permit.previous_owner_died()).unwrap();
    permit.release().unwrap();
}
stealpool::register_fn!(wait_permit);

#[test]
fn semaphore_permits_of_a_killed_holder_come_back_and_waiters_wake_on_release() {
    let Some(server) = server() else { return };
    let objects = objects(&server).lease(Duration::from_millis(600));
    let sem = objects.semaphore("s", 2);
    let held = objects.event("held");
    let holder = spawn(hold_permits, (sem.clone(), held.clone()));
    assert!(held.wait_timeout(HANG).unwrap());
    assert!(sem.try_acquire().unwrap_err().is_would_block());
    holder.0.kill();
    holder.0.join();
    let a = sem.acquire_timeout(HANG).unwrap();
    let b = sem.acquire_timeout(HANG).unwrap();
    assert!(a.previous_owner_died() && b.previous_owner_died(), "each returned permit is reported once");

    let report = objects.queue::<bool>("report");
    let waiter = spawn(wait_permit, (sem.clone(), report.clone()));
    assert!(report.get_timeout(Duration::from_millis(300)).unwrap_err().is_timeout(), "no permit is free");
    a.renew().unwrap();
    b.renew().unwrap();
    a.release().unwrap();
    assert!(!report.get_timeout(HANG).unwrap(), "woken by the release; nobody died this time");
    assert_eq!(waiter.0.join_timeout(HANG), Some(ExitStatus::Exited(0)));
    drop(b);
    assert!(!sem.try_acquire().map(|p| p.previous_owner_died()).unwrap());
}

/// Child: waits for `go`, then reports its pid.
fn wait_event(go: Event, report: Queue<u32>) {
    go.wait().unwrap();
    report.put(&std::process::id()).unwrap();
}
stealpool::register_fn!(wait_event);

#[test]
fn an_event_wakes_every_waiting_process() {
    let Some(server) = server() else { return };
    let objects = objects(&server);
    let (go, report) = (objects.event("go"), objects.queue::<u32>("report"));
    assert!(!go.is_set().unwrap());
    assert!(!go.wait_timeout(Duration::ZERO).unwrap());
    let children: Vec<_> = (0..3).map(|_| spawn(wait_event, (go.clone(), report.clone()))).collect();
    assert!(report.get_timeout(Duration::from_millis(300)).unwrap_err().is_timeout(), "they wait");
    go.set().unwrap();
    let mut pids: Vec<u32> = (0..3).map(|_| report.get_timeout(HANG).unwrap()).collect();
    pids.sort();
    let mut expected: Vec<u32> = children.iter().map(|c| c.0.pid()).collect();
    expected.sort();
    assert_eq!(pids, expected, "every waiter woke");
    assert!(go.is_set().unwrap());
    assert!(go.wait_timeout(Duration::MAX).unwrap(), "a set event does not wait");
    go.clear().unwrap();
    assert!(!go.wait_timeout(Duration::from_millis(20)).unwrap());
}

/// Child: counts words into the map.
fn count_words(map: Map<String, u32>, words: Vec<String>) {
    for word in words {
        let n = map.get(&word).unwrap().unwrap_or(0);
        map.insert(&word, &(n + 1)).unwrap();
    }
}
stealpool::register_fn!(count_words);

#[test]
fn a_map_is_shared_with_another_process() {
    let Some(server) = server() else { return };
    let map = objects(&server).map::<String, u32>("counts");
    assert_eq!(map.insert(&"seed".into(), &7).unwrap(), None);
    let child = spawn(count_words, (map.clone(), vec!["a".into(), "b".into(), "a".into()]));
    assert_eq!(child.0.join_timeout(HANG), Some(ExitStatus::Exited(0)));
    assert_eq!(map.get(&"a".into()).unwrap(), Some(2));
    assert_eq!(map.len().unwrap(), 3);
    let mut keys = map.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b", "seed"]);
    assert!(map.contains_key(&"b".into()).unwrap());
    assert_eq!(map.remove(&"b".into()).unwrap(), Some(1));
    assert_eq!(map.remove(&"b".into()).unwrap(), None);
    assert_eq!(map.insert(&"a".into(), &9).unwrap(), Some(2));
    map.clear().unwrap();
    assert!(map.is_empty().unwrap());
}

#[test]
fn garbage_in_keys_is_an_error_never_a_panic() {
    let Some(server) = server() else { return };
    let objects = objects(&server);
    let mut raw = raw(&server);
    let set = |raw: &mut redis::Connection, key: &str, value: &[u8]| {
        redis::cmd("SET").arg(key).arg(value).query::<()>(raw).unwrap();
    };

    // A queue key that is not a list, and list items that are not postcard of the type.
    let q = objects.queue::<String>("q");
    set(&mut raw, "{test}:obj:queue:q", b"not a list");
    assert!(matches!(q.try_get(), Err(ObjectError::Redis(_))));
    assert!(matches!(q.put(&"x".into()), Err(ObjectError::Redis(_))));
    assert!(q.len().unwrap_err().is_corrupt());
    redis::cmd("DEL").arg("{test}:obj:queue:q").query::<()>(&mut raw).unwrap();
    redis::cmd("RPUSH").arg("{test}:obj:queue:q").arg(&[0xff_u8, 0xff, 0xff][..]).query::<()>(&mut raw).unwrap();
    assert!(matches!(q.get_timeout(HANG), Err(ObjectError::Corrupt(_))));
    // The signal stream replaced by a string: a waiter's step fails, it does not spin.
    set(&mut raw, "{test}:obj:queue:q:put", b"junk");
    assert!(q.get_timeout(Duration::from_millis(50)).unwrap_err().is_corrupt());

    // Lock: holders key of the wrong type, a lapsed counter that is not a number.
    let lock = objects.lock("l");
    set(&mut raw, "{test}:obj:lock:l", b"held?");
    assert!(lock.try_lock().unwrap_err().is_corrupt());
    redis::cmd("DEL").arg("{test}:obj:lock:l").query::<()>(&mut raw).unwrap();
    set(&mut raw, "{test}:obj:lock:l:lapsed", b"many");
    assert!(lock.lock_timeout(HANG).unwrap_err().is_corrupt());

    // Event flag holding something else than 1.
    let ev = objects.event("e");
    set(&mut raw, "{test}:obj:event:e", b"yes");
    assert!(ev.is_set().unwrap_err().is_corrupt());
    assert!(ev.wait_timeout(HANG).unwrap_err().is_corrupt());

    // Map fields and values that do not decode.
    let map = objects.map::<u64, String>("m");
    redis::cmd("HSET")
        .arg("{test}:obj:map:m")
        .arg(&[0xff_u8; 11][..])
        .arg(&[0xff_u8][..])
        .query::<()>(&mut raw)
        .unwrap();
    assert!(matches!(map.keys(), Err(ObjectError::Corrupt(_))));
    redis::cmd("HSET")
        .arg("{test}:obj:map:m")
        .arg(&[1_u8][..])
        .arg(&[0x05_u8, b'a'][..])
        .query::<()>(&mut raw)
        .unwrap();
    assert!(matches!(map.get(&1), Err(ObjectError::Corrupt(_))), "a string that claims 5 bytes and has 1");
}

/// Child: blocks in `get` (no deadline) and reports what came, or the error.
fn get_and_report(input: Queue<u64>, ready: Event, report: Queue<Result<u64, String>>) {
    ready.set().unwrap();
    let got = input.get().map_err(|e| e.to_string());
    report.put(&got).unwrap();
}
stealpool::register_fn!(get_and_report);

#[test]
fn a_getter_survives_a_redis_restart_mid_wait() {
    if let Some(reason) = redis_server::unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut server = RedisServer::start_persistent();
    let objects = objects(&server).reconnect_window(Duration::from_secs(20));
    let (input, ready, report) =
        (objects.queue::<u64>("in"), objects.event("ready"), objects.queue::<Result<u64, String>>("report"));
    let child = spawn(get_and_report, (input.clone(), ready.clone(), report.clone()));
    assert!(ready.wait_timeout(HANG).unwrap());
    server.restart();
    input.put(&5).unwrap();
    assert_eq!(report.get_timeout(HANG).unwrap(), Ok(5), "the getter reconnected and took the item");
    assert_eq!(child.0.join_timeout(HANG), Some(ExitStatus::Exited(0)));
}

#[test]
fn a_wait_on_a_redis_that_is_gone_fails_after_the_reconnect_window() {
    let Some(mut server) = server() else { return };
    let objects = objects(&server).reconnect_window(Duration::from_millis(500)).connect_timeout(Duration::from_secs(1));
    let q = objects.queue::<u64>("q");
    let event = objects.event("e");
    assert!(q.try_get().unwrap_err().is_empty(), "connected once");
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (q.get(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100)); // let it block first (it fails the same way if not)
    server.kill();
    let (got, waited) = waiter.join().unwrap();
    let err = got.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    assert!(err.to_string().contains("cannot reach Redis at redis://127.0.0.1:"), "{err}");
    assert!(waited < Duration::from_secs(10), "failed within the window, did not hang ({waited:?})");
    assert!(event.set().unwrap_err().is_disconnected(), "a call without a wait fails at once");
}

#[test]
fn every_key_written_has_an_expiry() {
    let Some(server) = server() else { return };
    let objects = objects(&server).idle_expiry(Duration::from_secs(3600)).lease(Duration::from_millis(200));
    let bounded = objects.bounded_queue::<u8>("b", 1);
    bounded.put(&1).unwrap();
    assert_eq!(bounded.get().unwrap(), 1);
    bounded.put(&2).unwrap();
    objects.queue::<u8>("u").put(&1).unwrap();
    let lock = objects.lock("l");
    let stale = lock.lock().unwrap();
    let next = lock.lock_timeout(HANG).unwrap(); // after a lapse: the lapsed counter is written
    drop(next);
    drop(stale);
    let sem = objects.semaphore("s", 3);
    let _held = sem.acquire().unwrap();
    objects.event("e").set().unwrap();
    objects.map::<u8, u8>("m").insert(&1, &1).unwrap();

    let mut raw = raw(&server);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert!(keys.len() >= 8, "the objects wrote their keys: {keys:?}");
    for key in keys {
        assert!(key.starts_with("{test}:obj:"), "{key} is in the namespace");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut raw).unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key} expires (PTTL {ttl})");
    }
}

/// Set in the re-run of this test binary that does the forking (one test thread there, so no
/// other thread of the process holds a lock at the fork).
const FORK_CHILD_URL: &str = "STEALPOOL_TEST_FORK_URL";

#[test]
fn a_forked_child_uses_connections_of_its_own() {
    let Ok(url) = std::env::var(FORK_CHILD_URL) else {
        let Some(server) = server() else { return };
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_forked_child_uses_connections_of_its_own", "--test-threads=1", "--nocapture"])
            .env(FORK_CHILD_URL, server.url())
            .status()
            .unwrap();
        assert!(status.success(), "the forking run failed: {status}");
        return;
    };
    let objects = Objects::new(url).namespace("fork");
    let (to_child, to_parent) = (objects.queue::<u32>("down"), objects.queue::<u32>("up"));
    assert!(to_child.try_get().unwrap_err().is_empty(), "the parent's pool now holds a connection");
    // SAFETY: this process runs one test thread (the harness's main thread only waits for it),
    // so no other thread holds a lock or the allocator at the fork; the child uses the objects,
    // which reset their per-process connections, and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // Blocks on a connection of its own while the parent talks on its own: were the
            // socket shared, the replies would cross.
            let ok = to_child.get_timeout(HANG).is_ok_and(|n| n == 1) && to_parent.put(&2).is_ok();
            // SAFETY: `_exit` ends the child at once, running nothing of the parent's.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            for _ in 0..20 {
                assert!(to_parent.try_get().unwrap_err().is_empty());
            }
            to_child.put(&1).unwrap();
            assert_eq!(to_parent.get_timeout(HANG).unwrap(), 2);
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
}

#[test]
fn no_redis_at_all_is_a_clear_error_at_once() {
    // A port that was free a moment ago: nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let objects =
        Objects::new(format!("redis://user:secret@127.0.0.1:{port}/")).connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = objects.queue::<u8>("q").get().unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")) && !message.contains("secret"), "{message}");
    assert!(objects.lock("l").try_lock().unwrap_err().is_disconnected());
    assert!(objects.map::<u8, u8>("m").len().unwrap_err().is_disconnected());
    assert!(started.elapsed() < Duration::from_secs(10), "no retrying before the first connection");
}
