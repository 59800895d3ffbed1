//! The process pool against a corrupt or hostile worker, extreme values and awkward shutdowns
//! (issue 13): garbage on a worker's reply channel, `Duration::MAX` limits, a result whose
//! `Deserialize` panics, a worker that dies while a large input is being written to it, and
//! shutdown with a task limit. Every pool is dropped (shut down and joined) at the end of its
//! test, so no worker outlives it.

use std::os::fd::RawFd;
use std::time::Duration;

use nix::libc;
use serde::{Deserialize, Deserializer, Serialize};
use stealpool::{Executor, JobError, ProcessPoolBuilder, ProcessPoolExecutor};

fn square(x: u64) -> u64 {
    x * x
}
stealpool::register_fn!(square);

fn my_pid(_: ()) -> u32 {
    std::process::id()
}
stealpool::register_fn!(my_pid);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
stealpool::register_fn!(sleep_ms);

/// The worker's Unix seqpacket sockets (its task and reply channels).
fn seqpacket_sockets() -> Vec<RawFd> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `ty` and `len` are valid for writes; a descriptor that is not a socket fails.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut ty).cast(), &raw mut len) };
        if r == 0 && ty == libc::SOCK_SEQPACKET {
            fds.push(fd);
        }
    }
    fds
}

/// Sends one packet on `fd`, with `pass` attached as `SCM_RIGHTS` if not empty.
fn packet(fd: RawFd, bytes: &[u8], pass: &[RawFd]) {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut cmsg = [0u64; 16];
    // SAFETY: an all-zero msghdr is a valid empty header; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !pass.is_empty() {
        let data = std::mem::size_of_val(pass) as u32;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        // SAFETY: size computations only; the buffer (128 bytes) holds a header and 8 fds.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(data) } as _;
        // SAFETY: the control buffer is large enough and aligned for one cmsghdr with `pass`.
        unsafe {
            let h = libc::CMSG_FIRSTHDR(&msg);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(data) as _;
            std::ptr::copy_nonoverlapping(pass.as_ptr(), libc::CMSG_DATA(h).cast::<RawFd>(), pass.len());
        }
    }
    // SAFETY: `msg` points at live buffers.
    unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A frame of the pool's framing around `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Inside a worker: writes garbage of kind `kind` to the worker's channels, then waits to be
/// killed (it never answers its task itself).
fn write_garbage(kind: u8) -> u32 {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` has room for two descriptors.
    unsafe { libc::pipe(pipe.as_mut_ptr()) };
    let bytes: Vec<u8> = match kind {
        // A length no allocation could satisfy.
        0 => u64::MAX.to_le_bytes().to_vec(),
        // A length just under the limit and a few bytes, then end of file (the worker exits
        // below): a worker that died while sending.
        1 => {
            let mut b = u64::from(u32::MAX - 1).to_le_bytes().to_vec();
            b.extend_from_slice(&[1, 2, 3]);
            b
        }
        // A well-framed reply whose header is garbage.
        2 => framed(&[0xff; 40]),
        // Descriptors attached (ipc-channel would have tried to map the pipe).
        3 => framed(&[1, 2, 3]),
        // A record too short to hold a length.
        4 => vec![1, 2, 3],
        // A well-formed `Done` for a task it was never given, with an absurd duration.
        5 => {
            let mut b = vec![1];
            varint(u64::MAX, &mut b);
            b.push(0);
            varint(u64::MAX, &mut b);
            framed(&b)
        }
        // A second `Ready`, claiming a failed initializer (would break the pool if believed).
        6 => framed(&[0, 1, 1, 4, b'l', b'i', b'e', b's']),
        // More bytes than the length says.
        7 => {
            let mut b = 2u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[9; 100]);
            b
        }
        // A reply batch (header 3) with nothing in it.
        8 => framed(&[3]),
        // A reply batch whose one reply claims more bytes than follow.
        9 => framed(&[3, 50, 2, 1]),
        // A reply batch holding a second `Ready`.
        10 => framed(&[3, 3, 0, 0, 0]),
        // A reply batch holding a reply batch.
        11 => framed(&[3, 1, 3]),
        // A reply batch with a byte after its last reply (an empty reply).
        _ => framed(&[3, 2, 2, 1, 0]),
    };
    let pass: &[RawFd] = if kind == 3 { &pipe } else { &[] };
    for fd in seqpacket_sockets() {
        packet(fd, &bytes, pass);
    }
    if kind == 1 {
        std::process::exit(0);
    }
    std::thread::sleep(Duration::from_secs(30));
    0
}
stealpool::register_fn!(write_garbage);

#[test]
fn a_worker_that_writes_garbage_is_killed_and_replaced_and_only_its_job_fails() {
    let p = ProcessPoolBuilder::new().num_workers(2).build().unwrap();
    // Other work keeps flowing through the other worker (and the replacements) meanwhile.
    let others: Vec<_> = (0..400u64).map(|i| p.apply_async(square, i).unwrap()).collect();
    for kind in 0..13u8 {
        let before = p.worker_pids();
        let err = p.apply_async(write_garbage, kind).unwrap().result().unwrap_err();
        match &err {
            JobError::ProtocolViolation { pid, reason } if kind != 1 => {
                assert!(before.contains(pid), "kind {kind}: the error names the worker: {err}");
                assert!(!reason.is_empty());
                assert!(err.to_string().contains(&pid.to_string()), "{err}");
            }
            // Cut off inside a frame by its own exit: a worker that died while sending.
            JobError::WorkerDied { pid, .. } if kind == 1 => assert!(before.contains(pid), "{err}"),
            other => panic!("kind {kind}: expected a protocol violation, got {other:?}"),
        }
        // The pool replaced it and goes on.
        assert_eq!(p.apply_async(square, 7).unwrap().result(), Ok(49), "kind {kind}");
    }
    for (i, f) in others.into_iter().enumerate() {
        assert_eq!(f.result(), Ok((i * i) as u64));
    }
    assert!(!p.is_shutdown());
    // The last replacement may still be starting: wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.worker_pids().len(), 2, "every faulty worker was replaced");
}

// ----- extreme values ------------------------------------------------------------------------

#[test]
fn duration_max_means_no_limit_and_other_limits_still_hold() {
    let p = ProcessPoolBuilder::new().num_workers(1).task_timeout(Duration::MAX).build().unwrap();
    assert_eq!(p.apply_async(sleep_ms, 30).unwrap().result(), Ok(30));
    assert_eq!(p.apply_async(sleep_ms, 30).unwrap().result(), Ok(30));
    // The supervisor is alive: a real limit still kills.
    #[derive(Serialize, Deserialize)]
    struct Nap(u64);
    impl stealpool::Job for Nap {
        type Output = u64;
        fn run(self) -> u64 {
            sleep_ms(self.0)
        }
    }
    stealpool::register_job!(Nap);
    let late = p.submit_with_timeout(Nap(60_000), Some(Duration::from_millis(100))).unwrap();
    assert!(matches!(late.result(), Err(JobError::TimedOut { .. })));
    let fine = p.submit_with_timeout(Nap(20), Some(Duration::MAX)).unwrap();
    assert_eq!(fine.result(), Ok(20));
    assert!(!p.is_shutdown());
}

// ----- shutdown never strands or hangs work --------------------------------------------------

/// A result whose `Deserialize` (run in the parent) panics.
#[derive(Debug, PartialEq)]
struct Bomb;
impl Serialize for Bomb {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(0)
    }
}
impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("this result cannot be read");
    }
}
fn make_bomb(_: ()) -> Bomb {
    Bomb
}
stealpool::register_fn!(make_bomb);

#[test]
fn a_result_whose_deserialize_panics_fails_that_future_only() {
    let p = ProcessPoolBuilder::new().num_workers(1).build().unwrap();
    let pid = p.worker_pids()[0];
    let err = p.apply_async(make_bomb, ()).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Serialization { message } if message.contains("cannot be read")), "{err:?}");
    // The same worker goes on with the next job; shutdown(wait) returns.
    assert_eq!(p.apply_async(my_pid, ()).unwrap().result(), Ok(pid));
    p.shutdown(true, false);
    assert!(p.worker_pids().is_empty());
}

fn abort_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::abort()
}
stealpool::register_fn!(abort_after);

fn byte_sum(b: serde_bytes::ByteBuf) -> u64 {
    b.iter().map(|&x| u64::from(x)).sum()
}
stealpool::register_fn!(byte_sum);

#[test]
fn a_worker_that_dies_while_a_large_input_is_written_to_it_does_not_block_the_writer() {
    let p = ProcessPoolBuilder::new().num_workers(1).window(2).build().unwrap();
    let dying = p.apply_async(abort_after, 300).unwrap();
    // Sent into the window behind the dying job: the writer blocks on the full socket until
    // the worker dies, then must give up at once (and the job runs on the replacement).
    let big = serde_bytes::ByteBuf::from(vec![1u8; 32 << 20]);
    let large = p.apply_async(byte_sum, big).unwrap();
    assert!(dying.result().unwrap_err().is_worker_died());
    assert_eq!(large.result(), Ok(32 << 20));
    p.shutdown(true, false);
    assert!(p.worker_pids().is_empty());
}

#[test]
fn shutdown_with_a_task_limit_runs_every_queued_job() {
    // CPython's gh-119592: max_tasks_per_child=2, submit many, shutdown(wait=True).
    let p = ProcessPoolBuilder::new().num_workers(2).max_tasks_per_child(2).build().unwrap();
    let fs: Vec<_> = (0..40u64).map(|i| p.apply_async(square, i).unwrap()).collect();
    p.shutdown(true, false);
    for (i, f) in fs.into_iter().enumerate() {
        assert!(f.is_done(), "job {i} still pending after shutdown(wait)");
        assert_eq!(f.result(), Ok((i * i) as u64));
    }
    let p = ProcessPoolBuilder::new().num_workers(1).max_tasks_per_child(1).build().unwrap();
    let fs: Vec<_> = (0..10u64).map(|i| p.apply_async(square, i).unwrap()).collect();
    p.close();
    p.join().unwrap();
    assert!(fs.iter().all(stealpool::Future::is_done));
    assert_eq!(fs.into_iter().map(|f| f.result().unwrap()).sum::<u64>(), (0..10).map(|i| i * i).sum());
}

// ----- replacing workers leaks nothing -------------------------------------------------------

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `max_tasks_per_child(1)`: a new worker per job. 2,000 in CI; `STEALPOOL_RECYCLES=100000`
/// for the long run (it prints its figures).
#[test]
fn recycling_workers_keeps_threads_maps_and_memory_flat() {
    let n: u64 = std::env::var("STEALPOOL_RECYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let p = ProcessPoolBuilder::new().num_workers(2).max_tasks_per_child(1).build().unwrap();
    let warm = 200.min(n);
    let run = |count: u64| {
        let fs: Vec<_> = (0..count).map(|i| p.apply_async(square, i).unwrap()).collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert_eq!(f.result(), Ok((i * i) as u64));
        }
    };
    run(warm);
    let (maps0, threads0, rss0) = (maps(), threads(), rss_kib());
    let started = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        let step = 500.min(n - done);
        run(step);
        done += step;
    }
    let (maps1, threads1, rss1) = (maps(), threads(), rss_kib());
    eprintln!(
        "{n} recycles in {:.1?}: maps {maps0} -> {maps1}, threads {threads0} -> {threads1}, RSS {rss0} -> {rss1} KiB",
        started.elapsed()
    );
    // A leak of one map or one thread per recycle would show as thousands.
    assert!(maps1 <= maps0 + 40, "maps grew from {maps0} to {maps1} over {n} recycles");
    assert!(threads1 <= threads0 + 8, "threads grew from {threads0} to {threads1} over {n} recycles");
    assert!(rss1 <= rss0 + 16 * 1024, "RSS grew from {rss0} to {rss1} KiB over {n} recycles");
}

#[test]
fn a_large_result_and_a_large_input_travel_whole() {
    let p = ProcessPoolExecutor::new(1);
    let big = serde_bytes::ByteBuf::from((0..(3 << 20)).map(|i| (i % 7) as u8).collect::<Vec<u8>>());
    let want: u64 = big.iter().map(|&x| u64::from(x)).sum();
    assert_eq!(p.apply_async(byte_sum, big).unwrap().result(), Ok(want));
}

/// Inside a worker: writes a few records of seeded random bytes (some with a plausible length
/// in front) to the worker's channels, then exits.
fn write_random_garbage(seed: u64) -> u32 {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let sockets = seqpacket_sockets();
    for _ in 0..=(next() % 3) {
        let len = 1 + (next() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 && len > 8 {
            bytes[..8].copy_from_slice(&((len - 8) as u64).to_le_bytes());
        }
        for &fd in &sockets {
            packet(fd, &bytes, &[]);
        }
    }
    std::process::exit(0)
}
stealpool::register_fn!(write_random_garbage);

/// The live half of the protocol fuzzing: seeded random garbage from a worker is always a
/// protocol violation of that worker alone, while the pool goes on serving everyone else.
/// `STEALPOOL_FUZZ_LIVE=<n>` runs more seeds.
#[test]
fn random_garbage_from_workers_never_stops_the_pool() {
    let seeds: u64 = std::env::var("STEALPOOL_FUZZ_LIVE").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let p = ProcessPoolBuilder::new().num_workers(2).build().unwrap();
    let others: Vec<_> = (0..300u64).map(|i| p.apply_async(square, i).unwrap()).collect();
    for seed in 0..seeds {
        let err = p.apply_async(write_random_garbage, 0x9e37_79b9_7f4a_7c15 ^ seed).unwrap().result().unwrap_err();
        // Garbage, or a frame cut off by the worker's exit (it died while sending).
        assert!(
            matches!(err, JobError::ProtocolViolation { .. } | JobError::WorkerDied { .. }),
            "seed {seed}: {err:?}"
        );
    }
    for (i, f) in others.into_iter().enumerate() {
        assert_eq!(f.result(), Ok((i * i) as u64));
    }
    assert_eq!(p.apply_async(square, 9).unwrap().result(), Ok(81));
}

/// An initializer that writes garbage where `Ready` should come.
fn init_writes_garbage() {
    for fd in seqpacket_sockets() {
        packet(fd, &framed(&[0xee; 12]), &[]);
    }
    std::thread::sleep(Duration::from_secs(30));
}
stealpool::register_fn!(init_writes_garbage);

#[test]
fn workers_that_always_send_garbage_at_start_break_the_build_instead_of_respawning_for_ever() {
    let started = std::time::Instant::now();
    let err = ProcessPoolBuilder::new().num_workers(1).initializer(init_writes_garbage).build().unwrap_err();
    assert!(err.to_string().contains("in a row"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A forced cancel stops only the job it is meant for: the others (running next on the same
/// worker, or waiting in its window) all finish, whatever the moment of the cancel.
#[test]
fn a_forced_cancel_kills_only_the_job_it_is_meant_for() {
    let p = ProcessPoolBuilder::new().num_workers(2).build().unwrap();
    let fs: Vec<_> =
        (0..3_000u64).map(|i| p.apply_async(sleep_us, if i % 50 == 0 { 20_000 } else { 100 }).unwrap()).collect();
    let mut cancelled = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        if (i % 50 == 0 || i % 37 == 0) && f.force_cancel() {
            cancelled.push(i);
        }
    }
    for (i, f) in fs.into_iter().enumerate() {
        match f.result() {
            Err(JobError::Cancelled) => assert!(cancelled.contains(&i), "job {i} was cancelled but nobody asked"),
            Ok(_) => assert!(!cancelled.contains(&i), "job {i} was cancelled but resolved Ok"),
            Err(e) => panic!("job {i}: {e}"),
        }
    }
    assert_eq!(p.apply_async(square, 3).unwrap().result(), Ok(9));
}

fn sleep_us(us: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(us));
    us
}
stealpool::register_fn!(sleep_us);

/// A slow done callback holds up the reply reader; the next job's reply waits unread. That job
/// ended in time and must not be reported `TimedOut` however long the callback takes.
#[test]
fn a_slow_done_callback_does_not_time_out_the_next_job() {
    let p = ProcessPoolBuilder::new().num_workers(1).window(2).task_timeout(Duration::from_millis(50)).build().unwrap();
    let slow = p.apply_async_with(sleep_ms, 1, |_| std::thread::sleep(Duration::from_millis(1_500)), |_| {}).unwrap();
    let next = p.apply_async(sleep_ms, 1).unwrap();
    assert_eq!(slow.result(), Ok(1));
    assert_eq!(next.result(), Ok(1));
}

/// Inside a worker: writes "task ended" into its own slot (the shared page the pool reads to
/// know which task it runs), as a hostile worker could, and then never replies.
fn lie_in_slot(_: ()) -> u32 {
    const CONDEMNED: u64 = 1 << 63;
    const ENDED: u64 = 1 << 62;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut lied = 0;
    for line in maps.lines().filter(|l| l.contains("memfd:stealpool-slot")) {
        let start = usize::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
        // SAFETY: `start` is the page-aligned start of a live shared mapping of the slot memfd
        // (at least one page); its first word is an AtomicU64 that the pool, too, only touches
        // through atomics.
        let word = unsafe { &*(start as *const std::sync::atomic::AtomicU64) };
        let w = word.load(std::sync::atomic::Ordering::SeqCst);
        // The slot of the task running now names it, without flags.
        if w != 0 && w & (CONDEMNED | ENDED) == 0 {
            word.store(w | ENDED, std::sync::atomic::Ordering::SeqCst);
            lied += 1;
        }
    }
    assert_eq!(lied, 1, "expected exactly one slot naming a running task in\n{maps}");
    loop {
        std::thread::sleep(Duration::from_secs(3_600));
    }
}
stealpool::register_fn!(lie_in_slot);

/// A worker whose slot says its task ended, and which then never replies, does not escape the
/// time limit: once its reply reader has waited for the reply as long as the backstop allows,
/// the worker is killed as faulty and replaced, and only its job fails.
#[test]
fn a_worker_that_lies_in_its_slot_is_killed_and_its_job_fails() {
    let p = ProcessPoolBuilder::new().num_workers(1).task_timeout(Duration::from_millis(100)).build().unwrap();
    let before = p.worker_pids();
    let mut f = p.apply_async(lie_in_slot, ()).unwrap();
    let outcome = f.result_timeout(Duration::from_secs(30));
    if outcome.as_ref().is_err_and(|e| e.is_timeout()) {
        p.terminate(); // so that dropping the pool does not wait for the liar
    }
    match outcome {
        Err(stealpool::ResultTimeoutError::Failed(JobError::ProtocolViolation { pid, reason })) => {
            assert_eq!(vec![pid], before);
            assert!(reason.contains("slot"), "{reason}");
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    assert_eq!(p.apply_async(square, 7).unwrap().result(), Ok(49));
    assert_ne!(p.worker_pids(), before);
}

// ----- held replies ---------------------------------------------------------------------------

/// Inside a worker: waits (at most 10 s) for `path` to exist; whether it came.
fn wait_for_file(path: String) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::path::Path::new(&path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
stealpool::register_fn!(wait_for_file);

#[test]
fn a_held_reply_reaches_the_parent_while_the_next_job_waits_for_what_the_parent_does_with_it() {
    let p = ProcessPoolBuilder::new().num_workers(1).build().unwrap();
    for i in 0..50u64 {
        assert_eq!(p.apply_async(square, i).unwrap().result(), Ok(i * i)); // short: the window opens
    }
    let base = std::env::temp_dir().join(format!("stealpool-held-{}", std::process::id()));
    for round in 0..20 {
        let path = format!("{}-{round}", base.display());
        // Slow done callbacks keep the parent behind, so the worker holds the last quick reply
        // while it runs the waiter, which waits for the parent to act on that very reply.
        let mut quick: Vec<_> = (0..8u64)
            .map(|i| p.apply_async_with(square, i, |_| std::thread::sleep(Duration::from_millis(1)), |_| {}).unwrap())
            .collect();
        let waiter = p.apply_async(wait_for_file, path.clone()).unwrap();
        assert_eq!(quick.pop().unwrap().result(), Ok(49), "round {round}");
        std::fs::write(&path, b"").unwrap();
        let saw = waiter.result();
        let _ = std::fs::remove_file(&path);
        assert_eq!(saw, Ok(true), "round {round}: the held reply came while the next job ran");
    }
}
