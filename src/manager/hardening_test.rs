//! White-box tests of the manager against other users, impostors, misbehaving clients and
//! extreme values (issue 13). Attackers are raw sockets in this process, or this test binary
//! run again as an unprivileged user.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::auth;
use super::client::handle::decode;
use super::protocol::{self, HEADER, Kind, Reply, Request, WaitLimit};
use super::*;

const LONG: Duration = Duration::from_secs(30);

fn frame(request: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    protocol::frame(request, &mut buf).unwrap();
    buf
}

/// An authenticated raw connection.
fn raw(manager: &Manager) -> UnixStream {
    let mut s = UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let secret = manager.address.secret;
    let nc = [3; 32];
    let Reply::Challenge { nonce: ns, proof } = call(&mut s, &Request::Hello { nonce: nc }) else { panic!() };
    assert!(auth::check_server(&secret, &nc, &ns, &proof));
    assert!(matches!(call(&mut s, &Request::Proof { proof: auth::client_proof(&secret, &ns, &nc) }), Reply::Done));
    s
}

fn read_reply(s: &mut UnixStream) -> Reply {
    let mut header = [0; HEADER];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    postcard::from_bytes(&body).unwrap()
}

fn call(s: &mut UnixStream, request: &Request) -> Reply {
    s.write_all(&frame(request)).unwrap();
    read_reply(s)
}

/// (waiter entries, connections, parked requests, connections holding lent items, refused).
fn census(manager: &Manager) -> (u64, u64, u64, u64, u64) {
    let mut s = raw(manager);
    match call(&mut s, &Request::Census) {
        // This census connection itself is one of the connections.
        Reply::Census { waiters, conns, parked, lent_by, refused } => (waiters, conns - 1, parked, lent_by, refused),
        other => panic!("{other:?}"),
    }
}

/// Whether the peer closed `s` (reads end of file, or the connection was reset).
fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut byte = [0u8; 1];
    matches!(s.read(&mut byte), Ok(0) | Err(_))
}

fn serves(manager: &Manager) {
    let q = manager.queue::<u32>().unwrap();
    q.put(41).unwrap();
    assert_eq!(q.get_timeout(LONG), Ok(41));
}

// ---- who can reach the endpoint ----

const ATTACKER_ENV: &str = "STEALPOOL_TEST_ATTACK_MANAGER";

/// The attacker's side of [`another_user_is_refused_at_accept`]: runs only when this binary
/// is started again with [`ATTACKER_ENV`] naming the manager's socket. Exits 0 when every
/// attempt was refused, 3 when the manager answered anything.
#[test]
fn attacker_role() {
    let Ok(name) = std::env::var(ATTACKER_ENV) else { return };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut answered = false;
    for attempt in [frame(&Request::Hello { nonce: [9; 32] }), frame(&Request::Create(Kind::Queue { maxsize: None }))] {
        // The kernel takes the connection into the backlog; the manager closes it at accept.
        let Ok(mut s) = UnixStream::connect_addr(&addr) else { continue };
        let _ = s.write_all(&attempt);
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut reply = [0u8; 64];
        answered |= matches!(s.read(&mut reply), Ok(n) if n > 0);
    }
    // Nor can the name be taken while the manager lives.
    let bound = UnixListener::bind_addr(&addr).is_ok();
    println!("attacker: answered={answered} bound={bound}");
    std::process::exit(if answered || bound { 3 } else { 0 });
}

#[test]
fn another_user_is_refused_at_accept() {
    if !nix::unistd::geteuid().is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv to run an attacker as another user");
        return;
    }
    let manager = Manager::new().unwrap();
    serves(&manager);
    // The test binary, where user 65534 can run it.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("attacker");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "manager::hardening_test::attacker_role", "--nocapture", "--test-threads=1"])
        .env(ATTACKER_ENV, &manager.address.name)
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LONG {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the attacker hung");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("attacker: answered=false bound=false"), "{status}: {out}");
    assert!(status.success(), "{status}: {out}");
    assert!(census(&manager).4 >= 2, "both attempts refused at accept");
    serves(&manager);
}

#[test]
fn names_are_random_and_a_taken_name_is_skipped() {
    // What a predictable scheme (pid and a counter, as before) would have used: taken.
    let squatted: Vec<UnixListener> = (1..=16)
        .filter_map(|n| {
            let name = format!("stealpool-manager-{}-{n}", std::process::id());
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).ok()
        })
        .collect();
    assert!(!squatted.is_empty());
    let (a, b) = (Manager::new().unwrap(), Manager::new().unwrap());
    for m in [&a, &b] {
        let random = m.address.name.strip_prefix("stealpool-manager-").unwrap();
        assert!(random.len() == 32 && random.bytes().all(|c| c.is_ascii_hexdigit()), "{}", m.address.name);
        serves(m);
    }
    assert_ne!(a.address.name, b.address.name);
    assert_ne!(a.address.secret, b.address.secret);
    // Someone else holds the first name drawn: the next is tried.
    let taken = a.address.name.clone();
    let mut names =
        [taken.clone(), "stealpool-test-free-name".to_string() + &hex(&auth::random::<8>().unwrap())].into_iter();
    let (_listener, name) = bind_unique(|| Ok(names.next().unwrap())).unwrap();
    assert_ne!(name, taken);
}

// ---- mutual authentication, client-side deadlines ----

/// Listens at `name` (a manager's old name) as an impostor that does not know the secret:
/// answers every `Hello` with a made-up proof (or never, if `silent`). Sends back everything
/// it was told, once `stop` is sent.
fn impostor(name: &str, silent: bool) -> (mpsc::Sender<()>, thread::JoinHandle<Vec<Vec<u8>>>) {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = mpsc::channel();
    let thread = thread::spawn(move || {
        let mut heard = Vec::new();
        let mut open = Vec::new();
        while stopped.try_recv().is_err() {
            if let Ok((mut s, _)) = listener.accept() {
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let mut header = [0; HEADER];
                if s.read_exact(&mut header).is_ok() {
                    let mut body = vec![0; (u32::from_le_bytes(header) as usize).min(1 << 16)];
                    let _ = s.read_exact(&mut body);
                    if !silent {
                        let _ = s.write_all(&reply_frame(&Reply::Challenge { nonce: [5; 32], proof: [6; 32] }));
                    }
                    heard.push(body);
                    // Whatever comes next.
                    let mut more = Vec::new();
                    let _ = s.read_to_end(&mut more);
                    if !more.is_empty() {
                        heard.push(more);
                    }
                }
                open.push(s);
            }
            thread::sleep(Duration::from_millis(1));
        }
        heard
    });
    (stop, thread)
}

fn reply_frame(reply: &Reply) -> Vec<u8> {
    let mut buf = Vec::new();
    protocol::frame(reply, &mut buf).unwrap();
    buf
}

#[test]
fn an_old_handle_never_talks_to_an_impostor_at_its_managers_name() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let lock = manager.lock().unwrap();
    serves(&manager);
    q.put(1).unwrap();
    assert_eq!(q.get(), Ok(1));
    let (name, secret) = (manager.address.name.clone(), manager.address.secret);
    drop(manager);
    let (stop, impostor) = impostor(&name, false);
    assert_eq!(q.get_timeout(Duration::from_millis(10)), Err(GetTimeoutError::Disconnected));
    assert_eq!(q.try_get(), Err(TryGetError::Disconnected));
    assert_eq!(q.put(2).map_err(|e| e.into_inner()), Err(2));
    assert_eq!(q.len(), Err(CallError::Disconnected));
    assert_eq!(lock.try_lock().unwrap_err(), TryAcquireError::Disconnected);
    stop.send(()).unwrap();
    let heard = impostor.join().unwrap();
    assert!(!heard.is_empty(), "the handles did try the old name");
    for bytes in &heard {
        // Only challenges, never a proof, and never the secret itself.
        assert!(matches!(postcard::from_bytes::<Request>(bytes), Ok(Request::Hello { .. })), "{bytes:?}");
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    }
}

#[test]
fn a_server_that_never_answers_cannot_stretch_a_timeout() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let event = manager.event().unwrap();
    let name = manager.address.name.clone();
    drop(manager);
    let (stop, impostor) = impostor(&name, true);
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let got = q.get_timeout(Duration::from_millis(10));
        let waited = event.wait_timeout(Duration::from_millis(10));
        done.send((got, waited)).unwrap();
    });
    // Far more than 10 ms plus the grace, far less than forever.
    let (got, waited) = finished.recv_timeout(LONG).expect("a timed call hung on a silent server");
    assert!(got.is_err() && waited.is_err() || waited == Ok(false), "{got:?} {waited:?}");
    stop.send(()).unwrap();
    impostor.join().unwrap();
}

/// A manager that authenticates (it knows the secret) and then never answers: as one that
/// was stopped with `SIGSTOP` after the handshake.
#[test]
fn a_stalled_manager_cannot_stretch_a_timeout() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let lock = manager.lock().unwrap();
    let event = manager.event().unwrap();
    let barrier = manager.barrier(2).unwrap();
    let (name, secret) = (manager.address.name.clone(), manager.address.secret);
    drop(manager);
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = mpsc::channel::<()>();
    let stalled = thread::spawn(move || {
        let mut open = Vec::new();
        while stopped.try_recv().is_err() {
            if let Ok((mut s, _)) = listener.accept() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(LONG)).unwrap();
                let Request::Hello { nonce: nc } = read_request(&mut s) else { panic!() };
                let ns = [8; 32];
                let proof = auth::server_proof(&secret, &nc, &ns);
                s.write_all(&reply_frame(&Reply::Challenge { nonce: ns, proof })).unwrap();
                let Request::Proof { proof } = read_request(&mut s) else { panic!() };
                assert!(auth::check_client(&secret, &ns, &nc, &proof));
                s.write_all(&reply_frame(&Reply::Done)).unwrap();
                open.push(s); // and never another word
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let tiny = Duration::from_millis(10);
        let results = (
            q.get_timeout(tiny),
            lock.lock_timeout(tiny).map(drop),
            lock.try_lock().map(drop),
            event.wait_timeout(tiny),
            barrier.wait_timeout(tiny),
        );
        done.send(results).unwrap();
    });
    let results = finished.recv_timeout(LONG).expect("a timed call hung on a stalled manager");
    assert_eq!(
        results,
        (
            Err(GetTimeoutError::Timeout),
            Err(AcquireTimeoutError::Timeout),
            Err(TryAcquireError::WouldBlock),
            Ok(false),
            Err(BarrierWaitTimeoutError::Timeout)
        )
    );
    stop.send(()).unwrap();
    stalled.join().unwrap();
}

fn read_request(s: &mut UnixStream) -> Request {
    let mut header = [0; HEADER];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    postcard::from_bytes(&body).unwrap()
}

// ---- what a connection can make the server hold ----

#[test]
fn before_authentication_only_a_handshake_frame_is_read() {
    let manager = Manager::new().unwrap();
    // A huge length prefix.
    let mut s = UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed(&mut s));
    // A frame just over the limit, whatever it holds.
    let mut s = UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap();
    let len = protocol::HANDSHAKE_FRAME as u32 + 1;
    let mut big = len.to_le_bytes().to_vec();
    big.resize(HEADER + len as usize, 0);
    let _ = s.write_all(&big);
    assert!(closed(&mut s));
    // Silence: dropped after the handshake deadline.
    let mut s = UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap();
    assert!(closed(&mut s));
    serves(&manager);
}

#[test]
fn silent_newcomers_never_keep_a_client_out() {
    let manager = Manager::new().unwrap();
    let mut silent: Vec<UnixStream> = (0..server::MAX_HANDSHAKING + 36)
        .map(|_| UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap())
        .collect();
    // A client that does its handshake gets in at once, past all of them.
    serves(&manager);
    let (_, conns, _, _, refused) = census(&manager);
    assert!(refused >= 36, "the oldest silent ones made room: {refused}");
    // The server never holds more handshakes than its cap (plus the ones just served).
    assert!(conns <= server::MAX_HANDSHAKING as u64 + 2, "{conns}");
    assert!(silent.iter_mut().all(closed), "all dropped by the handshake deadline at the latest");
}

#[test]
fn a_client_that_does_not_read_its_replies_is_cut_off() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let mut s = raw(&manager);
    let request = frame(&Request::QueueLen { id: q.handle.id });
    let batch: Vec<u8> = request.iter().copied().cycle().take(request.len() * 4096).collect();
    let mut written = 0usize;
    // Each request gets a reply as long as itself; well past the cut-off, writes must fail.
    let cut_off = (0..20_000).any(|_| match s.write_all(&batch) {
        Ok(()) => {
            written += batch.len();
            false
        }
        Err(_) => true,
    });
    assert!(cut_off, "still accepted after {written} bytes of unread replies");
    serves(&manager);
}

#[test]
fn waiters_that_time_out_leave_nothing_behind() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let full = manager.bounded_queue::<u32>(1).unwrap();
    full.put(0).unwrap();
    let lock = manager.lock().unwrap();
    let held = lock.lock().unwrap();
    let sem = manager.semaphore(1).unwrap();
    let permit = sem.acquire().unwrap();
    let event = manager.event().unwrap();
    let tiny = Duration::from_micros(1);
    for _ in 0..300 {
        assert_eq!(q.get_timeout(tiny), Err(GetTimeoutError::Timeout));
        assert!(full.put_timeout(1, tiny).unwrap_err().is_timeout());
        assert_eq!(lock.lock_timeout(tiny).unwrap_err(), AcquireTimeoutError::Timeout);
        assert_eq!(sem.acquire_timeout(tiny).unwrap_err(), AcquireTimeoutError::Timeout);
        assert_eq!(event.wait_timeout(tiny), Ok(false));
    }
    // Requests that park on one connection over and over, and connections that die parked.
    let mut s = raw(&manager);
    for _ in 0..300 {
        let reply = call(&mut s, &Request::Get { id: q.handle.id, wait: WaitLimit::Micros(1), max: 1, shared: false });
        assert!(matches!(reply, Reply::Failed(protocol::ErrorCode::Empty)), "{reply:?}");
    }
    for _ in 0..50 {
        let mut s = raw(&manager);
        s.write_all(&frame(&Request::WaitEvent { id: event.handle.id, wait: WaitLimit::Forever })).unwrap();
        // Seen parked before it dies.
        while census(&manager).2 == 0 {
            thread::yield_now();
        }
    }
    let start = Instant::now();
    let (waiters, conns, parked, lent_by, _) = loop {
        let c = census(&manager);
        if c.0 == 0 || start.elapsed() > LONG {
            break c;
        }
        thread::yield_now();
    };
    assert_eq!((waiters, parked, lent_by), (0, 0, 0), "waiter entries, parked requests, lenders");
    // This process's pooled connections and the holders', nothing per request.
    assert!(conns <= 70, "{conns}");
    drop((held, permit));
}

// ---- extreme values ----

#[test]
fn any_duration_is_accepted_and_the_longest_mean_forever() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<u32>(1).unwrap();
    let lock = manager.lock().unwrap();
    let event = manager.event().unwrap();
    let barrier = manager.barrier(1).unwrap();
    q.put_timeout(1, Duration::MAX).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX), Ok(1));
    drop(lock.lock_timeout(Duration::MAX).unwrap());
    event.set().unwrap();
    assert_eq!(event.wait_timeout(Duration::MAX), Ok(true));
    assert_eq!(barrier.wait_timeout(Duration::MAX), Ok(0));
    // A wait that really waits: forever, until a put comes.
    let q = manager.queue::<u32>().unwrap();
    let getter = {
        let q = q.clone();
        thread::spawn(move || q.get_timeout(Duration::MAX))
    };
    let mut s = raw(&manager);
    let parked = frame(&Request::Get { id: q.handle.id, wait: WaitLimit::Micros(u64::MAX), max: 1, shared: false });
    s.write_all(&parked).unwrap();
    while census(&manager).2 < 2 {
        thread::yield_now();
    }
    q.put(2).unwrap();
    q.put(3).unwrap();
    // Whichever parked first has the first item; the raw one acknowledges its own, so that
    // the other is served.
    let Reply::Items(items) = read_reply(&mut s) else { panic!() };
    s.write_all(&frame(&Request::Ack { n: 1 })).unwrap();
    let [protocol::ItemPayload::Inline(b)] = &items[..] else { panic!("{items:?}") };
    let mut got = vec![decode::<u32>(b).unwrap(), getter.join().unwrap().unwrap()];
    got.sort();
    assert_eq!(got, [2, 3]);
    serves(&manager);
}

// ---- the shared-memory arena ----

#[test]
fn the_arena_cannot_be_resized_and_only_a_sealed_one_is_mapped() {
    use super::arena::{Arena, CHUNK, CHUNKS, Mapping, Span};
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let arena = Arena::new().unwrap();
    let file = std::fs::File::from(arena.fd().try_clone_to_owned().unwrap());
    assert!(file.set_len(0).is_err(), "shrinking is sealed");
    assert!(file.set_len((CHUNKS * CHUNK) as u64 * 2).is_err(), "growing is sealed");
    assert!(fcntl(&file, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)).is_err(), "the seals are sealed");
    assert!(Mapping::new(&file).is_ok());
    // What a peer might send instead.
    let memfd = |flags, len: u64, seals: Option<SealFlag>| {
        let file = std::fs::File::from(memfd_create(c"test", flags).unwrap());
        file.set_len(len).unwrap();
        if let Some(seals) = seals {
            fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).unwrap();
        }
        file
    };
    let all = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    let size = (CHUNKS * CHUNK) as u64;
    let unsealed = memfd(MFdFlags::MFD_CLOEXEC, size, None);
    let small = memfd(MFdFlags::MFD_ALLOW_SEALING, 4096, Some(all));
    let growable = memfd(MFdFlags::MFD_ALLOW_SEALING, size, Some(SealFlag::F_SEAL_SHRINK));
    for bad in [&unsealed, &small, &growable] {
        assert!(Mapping::new(bad).is_err());
    }
    let plain = tempfile::tempfile().unwrap();
    plain.set_len(size).unwrap();
    assert!(Mapping::new(&plain).is_err(), "not a memfd: cannot be sealed");
    // Positions are checked, never trusted.
    let mapping = Mapping::new(&file).unwrap();
    let mut out = Vec::new();
    assert!(Span::from_at(u64::MAX, u32::MAX).is_none());
    assert!(Span::from_at((CHUNKS * CHUNK) as u64, 1).is_none());
    assert!(Span::from_at(CHUNK as u64 - 1, 2).is_none(), "across a chunk's end");
    assert!(!mapping.read(Span { chunk: CHUNKS as u32, offset: 0, len: 1 }, &mut out));
    assert!(!mapping.read(Span { chunk: 0, offset: u32::MAX, len: u32::MAX }, &mut out));
    assert!(mapping.write(Span { chunk: 0, offset: 0, len: 3 }, &serde_bytes::ByteBuf::from(vec![1; 8])).is_none());
    let written = mapping.write(Span { chunk: 1, offset: 64, len: 64 }, &7u64).unwrap();
    assert!(mapping.read(Span { chunk: 1, offset: 64, len: written as u32 }, &mut out));
    assert_eq!(decode::<u64>(&out), Ok(7));
}

// ---- a stalled consumer ----

#[test]
fn a_stalled_consumer_loses_its_read_ahead_and_delivers_nothing_twice() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    (0..10).for_each(|i| q.put(i).unwrap());
    // A consumer that read eight items ahead, handed one to its program, then stopped.
    let mut stalled = raw(&manager);
    let reply = call(&mut stalled, &Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 8, shared: false });
    let Reply::Items(items) = reply else { panic!("{reply:?}") };
    assert_eq!(items.len(), 8);
    stalled.write_all(&frame(&Request::Ack { n: 1 })).unwrap();
    // Another consumer is served at once what nobody holds, then, after the lease, what the
    // stalled one did not take, back at the front in put order: each item once.
    let got: Vec<u32> = (0..9).map(|_| q.get_timeout(LONG).unwrap()).collect();
    assert_eq!(got, [8, 9, 1, 2, 3, 4, 5, 6, 7]);
    // The stalled one wakes up: its acknowledgement is refused, so it cannot hand over an item
    // that went to someone else.
    let late = (0..100).find_map(|_| stalled.write_all(&frame(&Request::Ack { n: 1 })).err());
    assert!(late.is_some(), "the stalled connection was shut");
    assert_eq!(census(&manager).3, 0, "nobody holds lent items");
    // Through the public API too: a reader whose read-ahead was taken back starts afresh.
    (0..3).for_each(|i| q.put(i).unwrap());
    assert_eq!(q.get_timeout(LONG), Ok(0));
}

/// Not a test: a local measurement (`cargo test --release --lib manager::hardening_test::measure
/// -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_big_items() {
    let manager = Manager::new().unwrap();
    for _ in 0..3 {
        let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
        let n = 4000;
        let started = Instant::now();
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                let payload = vec![7u8; 64 << 10];
                (0..n).for_each(|_| q.put(serde_bytes::ByteBuf::from(payload.clone())).unwrap());
            })
        };
        for _ in 0..n {
            assert_eq!(q.get().unwrap().len(), 64 << 10);
        }
        producer.join().unwrap();
        let s = started.elapsed().as_secs_f64();
        eprintln!("64 KiB: {:.0} MiB/s", n as f64 * 64.0 / 1024.0 / s);
    }
}

/// A peer that knows the secret but hands out a descriptor that is no proper arena: too small
/// and unsealed, or too small and sealed. The client refuses to map it, and an item lent by a
/// position in it is an error, never a `SIGBUS`.
#[test]
fn a_client_never_maps_an_unsealed_or_short_arena() {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    for sealed in [false, true] {
        let manager = Manager::new().unwrap();
        let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
        let (name, secret) = (manager.address.name.clone(), manager.address.secret);
        drop(manager);
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let fake = thread::spawn(move || {
            let bad = std::fs::File::from(memfd_create(c"bad", MFdFlags::MFD_ALLOW_SEALING).unwrap());
            bad.set_len(4096).unwrap();
            if sealed {
                let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
                fcntl(&bad, FcntlArg::F_ADD_SEALS(seals)).unwrap();
            }
            let mut served = Vec::new();
            // Serve connections (each until it closes, or asks for items).
            loop {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(LONG)).unwrap();
                let Request::Hello { nonce: nc } = read_request(&mut s) else { panic!() };
                let ns = [4; 32];
                let proof = auth::server_proof(&secret, &nc, &ns);
                s.write_all(&reply_frame(&Reply::Challenge { nonce: ns, proof })).unwrap();
                let Request::Proof { .. } = read_request(&mut s) else { panic!() };
                s.write_all(&reply_frame(&Reply::Done)).unwrap();
                while let Some(request) = read_request_or_eof(&mut s) {
                    match request {
                        Request::Arena => {
                            let frame = reply_frame(&Reply::Done);
                            let fds = [bad.as_raw_fd()];
                            let iov = [std::io::IoSlice::new(&frame)];
                            let cmsg = [ControlMessage::ScmRights(&fds)];
                            sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
                        }
                        Request::Get { .. } => {
                            // A position far past the end of the descriptor it was sent.
                            let items = vec![protocol::ItemPayload::Shared { at: 10 << 20, len: 64 << 10 }];
                            s.write_all(&reply_frame(&Reply::Items(items))).unwrap();
                            // Its acknowledgement (an item that does not decode is taken too).
                            assert!(matches!(read_request_or_eof(&mut s), Some(Request::Ack { n: 1 })));
                            return;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                served.push(s);
            }
        });
        let got = q.get_timeout(LONG);
        assert!(matches!(got, Err(GetTimeoutError::Serialization(_))), "{got:?}");
        fake.join().unwrap();
    }
}

/// A server that attaches two descriptors to its `Arena` reply (the manager attaches one):
/// the client keeps the first (and, as it is no sealed memfd, drops it unmapped) and closes
/// the other at once, so a peer cannot fill this process's descriptor table.
#[test]
fn a_second_descriptor_from_the_server_is_closed() {
    use super::client::connection;
    use super::client::mappings as arena;
    use super::protocol::Address;
    use crate::ipc::{Blocking, fd};
    use nix::fcntl::OFlag;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    /// Whether every copy of the write end of `read`'s pipe is closed (end of file, not "would
    /// block").
    fn writers_closed(read: &OwnedFd) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: `byte` is valid for writes of one byte.
        unsafe { nix::libc::read(read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) == 0 }
    }

    let address = Address {
        name: format!("stealpool-test-fds-{:032x}", u128::from_le_bytes(auth::random().unwrap())),
        secret: [7; 32],
    };
    let listener = UnixListener::bind_addr(&address.socket_addr().unwrap()).unwrap();
    let (r1, w1) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
    let (r2, w2) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
    let secret = address.secret;
    let fake = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let Request::Hello { nonce: nc } = read_request(&mut s) else { panic!() };
        let ns = [4; 32];
        s.write_all(&reply_frame(&Reply::Challenge { nonce: ns, proof: auth::server_proof(&secret, &nc, &ns) }))
            .unwrap();
        let Request::Proof { .. } = read_request(&mut s) else { panic!() };
        s.write_all(&reply_frame(&Reply::Done)).unwrap();
        let Request::Arena = read_request(&mut s) else { panic!() };
        let frame = reply_frame(&Reply::Done);
        let sent =
            fd::send_with_fds(s.as_fd(), &[std::io::IoSlice::new(&frame)], &[w1.as_fd(), w2.as_fd()], Blocking::Yes);
        assert_eq!(sent.unwrap(), frame.len());
        // Keeps the connection open (the client pools it), drops its own copies of both.
        s
    });
    assert!(arena::mapping(&address, None).is_none(), "a pipe is no arena");
    let s = fake.join().unwrap();
    assert!(writers_closed(&r2), "the descriptor beyond the first is closed, not leaked");
    assert!(writers_closed(&r1), "the first, refused for a mapping, is closed too");
    arena::forget(&address);
    connection::forget(&address);
    drop(s);
}

fn read_request_or_eof(s: &mut UnixStream) -> Option<Request> {
    let mut header = [0; HEADER];
    s.read_exact(&mut header).ok()?;
    let mut body = vec![0; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).ok()?;
    postcard::from_bytes(&body).ok()
}

// ---- an `accept` that fails for want of descriptors ----

const EMFILE_ENV: &str = "STEALPOOL_TEST_MANAGER_EMFILE";

/// The id of this process's thread named `name` (of which the kernel keeps 15 bytes).
fn thread_named(name: &str) -> Option<u32> {
    let kept = &name.as_bytes()[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|t| {
        let comm = std::fs::read(t.path().join("comm")).ok()?;
        if comm.strip_suffix(b"\n") == Some(kept) { t.file_name().to_str()?.parse().ok() } else { None }
    })
}

/// CPU time a thread has used, from its `schedstat` (opened beforehand: no descriptor may be
/// needed once the limit is lowered), in ns.
fn cpu_ns(schedstat: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0; 128];
    let n = schedstat.read_at(&mut buf, 0).unwrap();
    std::str::from_utf8(&buf[..n]).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// The child's side of [`a_failing_accept_backs_off_instead_of_spinning`]: runs only when this
/// binary is started again with [`EMFILE_ENV`] set. A manager runs here; the process lowers
/// its own `RLIMIT_NOFILE` so that every `accept` fails with `EMFILE` while clients wait in
/// the backlog, measures the server thread's CPU time over a second, then raises the limit
/// and checks that a new client is served. Prints its figures; panics (exit 101) on failure.
#[test]
fn emfile_role() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::{AsFd, AsRawFd};
    if std::env::var_os(EMFILE_ENV).is_none() {
        return;
    }
    let manager = Manager::new().unwrap();
    // The server thread names itself once it runs.
    let named = Instant::now();
    let tid = loop {
        match thread_named("stealpool-manager") {
            Some(tid) => break tid,
            None if named.elapsed() < LONG => thread::sleep(Duration::from_millis(1)),
            None => panic!("no thread named stealpool-manager"),
        }
    };
    let schedstat = std::fs::File::open(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    let addr = UnixAddr::new_abstract(manager.address.name.as_bytes()).unwrap();
    // The clients' sockets, made while descriptors are still to be had.
    let clients: Vec<_> =
        (0..32).map(|_| socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap()).collect();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The lowest free descriptor: with the limit there, every number below it is taken.
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free, hard).unwrap();
    let no_fd = std::fs::File::open("/dev/null").unwrap_err();
    assert_eq!(no_fd.raw_os_error(), Some(nix::libc::EMFILE), "{no_fd}");
    // Half the clients connect now (they wait in the backlog: the listener stays readable),
    // the rest during the measurement.
    let hello = frame(&Request::Hello { nonce: [1; 32] });
    for c in &clients[..16] {
        connect(c.as_raw_fd(), &addr).unwrap();
        nix::sys::socket::send(c.as_raw_fd(), &hello, nix::sys::socket::MsgFlags::MSG_NOSIGNAL).unwrap();
    }
    let (cpu0, wall0) = (cpu_ns(&schedstat), Instant::now());
    for c in &clients[16..] {
        thread::sleep(Duration::from_millis(60));
        connect(c.as_raw_fd(), &addr).unwrap();
    }
    let (cpu1, wall1) = (cpu_ns(&schedstat), Instant::now());
    // Nobody was served meanwhile: no answer to any `Hello`.
    for c in &clients[..16] {
        let mut fds = [nix::poll::PollFd::new(c.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(), 0, "a client was answered");
    }
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let (cpu, wall) = (cpu1 - cpu0, wall1.duration_since(wall0).as_nanos() as u64);
    println!("emfile: server thread used {cpu} ns of CPU in {wall} ns");
    // A loop that polled the readable listener again at once would use a whole core.
    assert!(cpu * 10 < wall, "the server thread used {cpu} ns of CPU in {wall} ns: it spins");
    // The back-off ends: a new client is served (after at most the longest pause).
    serves(&manager);
    println!("emfile: served after the back-off");
}

/// An `accept` that fails with `EMFILE` pauses the listener (10 ms, doubling to 1 s) instead
/// of spinning, and a client is served again once descriptors are free. Runs in a child
/// process ([`emfile_role`]), since it lowers its own descriptor limit; the child is killed
/// if it takes more than 30 s, and always reaped.
#[test]
fn a_failing_accept_backs_off_instead_of_spinning() {
    /// Kills (by pid) and reaps the child however this test ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "manager::hardening_test::emfile_role", "--nocapture", "--test-threads=1"])
            .env(EMFILE_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read in threads, so that a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.0.stdout.take().unwrap()));
    let err = drain(Box::new(child.0.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LONG {
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    drop(child); // kills it if it still runs; reaps it
    let text = out.join().unwrap() + &err.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("the child hung: {text}"));
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("emfile: served after the back-off"), "{text}");
}
