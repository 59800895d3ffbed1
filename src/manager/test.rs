//! White-box tests of the manager, in one process: threads as clients, and raw sockets for
//! clients that misbehave or die half-way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::auth;
use super::client::handle::{decode, encode};
use super::protocol::{self, HEADER, ItemPayload, Reply, Request, WaitLimit};
use super::*;

const LONG: Duration = Duration::from_secs(30);

/// A client that speaks the protocol by hand, to die at chosen moments.
struct Raw(UnixStream);

impl Raw {
    fn connect(manager: &Manager) -> Raw {
        let mut raw = Raw::unauthenticated(manager);
        let secret = manager.address.secret;
        let nc = [7; 32];
        let Reply::Challenge { nonce: ns, proof } = raw.call(&Request::Hello { nonce: nc }) else { panic!() };
        assert!(auth::check_server(&secret, &nc, &ns, &proof));
        assert!(matches!(raw.call(&Request::Proof { proof: auth::client_proof(&secret, &ns, &nc) }), Reply::Done));
        raw
    }

    fn unauthenticated(manager: &Manager) -> Raw {
        Raw(UnixStream::connect_addr(&manager.address.socket_addr().unwrap()).unwrap())
    }

    fn send(&mut self, request: &Request) {
        let mut buf = Vec::new();
        protocol::frame(request, &mut buf).unwrap();
        self.0.write_all(&buf).unwrap();
    }

    fn call(&mut self, request: &Request) -> Reply {
        self.send(request);
        let mut header = [0; HEADER];
        self.0.read_exact(&mut header).unwrap();
        let mut body = vec![0; u32::from_le_bytes(header) as usize];
        self.0.read_exact(&mut body).unwrap();
        postcard::from_bytes(&body).unwrap()
    }
}

#[test]
fn queue_is_fifo_across_many_producers_and_consumers() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<(u32, u32)>(8).unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || (0..300).for_each(|i| q.put((p, i)).unwrap()))
        })
        .collect();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(item) = q.get_timeout(Duration::from_millis(500)) {
                    got.push(item);
                }
                got
            })
        })
        .collect();
    producers.into_iter().for_each(|p| p.join().unwrap());
    let mut all: Vec<(u32, u32)> = Vec::new();
    for c in consumers {
        let got = c.join().unwrap();
        // Each consumer sees each producer's items in the order they were put.
        for p in 0..4 {
            let seq: Vec<u32> = got.iter().filter(|(from, _)| *from == p).map(|(_, i)| *i).collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "out of order: {seq:?}");
        }
        all.extend(got);
    }
    all.sort_unstable();
    let expected: Vec<(u32, u32)> = (0..4).flat_map(|p| (0..300).map(move |i| (p, i))).collect();
    assert_eq!(all, expected, "every item exactly once");
}

#[test]
fn bounded_queue_blocks_put_until_a_get() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<u32>(1).unwrap();
    q.put(1).unwrap();
    assert!(q.is_full().unwrap());
    let (done_tx, done_rx) = mpsc::channel();
    let putter = {
        let q = q.clone();
        thread::spawn(move || {
            q.put(2).unwrap();
            done_tx.send(()).unwrap();
        })
    };
    // The queue is full, so the put cannot have finished yet.
    assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(q.get(), Ok(1));
    done_rx.recv_timeout(LONG).unwrap();
    putter.join().unwrap();
    assert_eq!(q.len(), Ok(1));
    assert_eq!(q.get(), Ok(2));
    assert_eq!(q.is_empty(), Ok(true));
}

#[test]
fn queue_errors_are_distinct() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<String>(1).unwrap();
    assert_eq!(q.maxsize(), Some(1));
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
    assert_eq!(q.get_timeout(Duration::from_millis(20)), Err(GetTimeoutError::Timeout));
    q.try_put("a".into()).unwrap();
    let full = q.try_put("b".into()).unwrap_err();
    assert!(full.is_full());
    assert_eq!(full.into_inner(), "b");
    let full = q.put_timeout("c".into(), Duration::from_millis(20)).unwrap_err();
    assert!(full.is_timeout() && !full.is_disconnected());
    assert_eq!(full.into_inner(), "c");
    // A handle of the wrong type is a serialization error, not a panic ("a" is two bytes;
    // four integers need at least four).
    let wrong: Queue<[u64; 4]> = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
    assert!(matches!(wrong.try_get(), Err(TryGetError::Serialization(_))));
    manager.shutdown();
    assert!(q.try_put("d".into()).unwrap_err().is_disconnected());
    assert_eq!(q.len(), Err(CallError::Disconnected));
}

#[test]
fn lock_excludes_and_times_out() {
    let manager = Manager::new().unwrap();
    let lock = manager.lock().unwrap();
    let count = manager.map::<String, u64>().unwrap();
    count.insert("n".into(), 0).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (lock, count) = (lock.clone(), count.clone());
            thread::spawn(move || {
                for _ in 0..50 {
                    let _guard = lock.lock().unwrap();
                    let n = count.get(&"n".into()).unwrap().unwrap();
                    count.insert("n".into(), n + 1).unwrap();
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(count.get(&"n".into()), Ok(Some(200)), "no update lost");

    let guard = lock.lock().unwrap();
    assert_eq!(lock.try_lock().unwrap_err(), TryAcquireError::WouldBlock);
    assert_eq!(lock.lock_timeout(Duration::from_millis(20)).unwrap_err(), AcquireTimeoutError::Timeout);
    guard.unlock().unwrap();
    assert!(!lock.lock_timeout(LONG).unwrap().previous_owner_died());
}

#[test]
fn a_dead_holder_releases_the_lock_and_the_next_owner_is_told() {
    let manager = Manager::new().unwrap();
    let lock = manager.lock().unwrap();
    let mut raw = Raw::connect(&manager);
    assert!(matches!(raw.call(&Request::Acquire { id: lock.handle.id, wait: WaitLimit::No }), Reply::Acquired { .. }));
    assert_eq!(lock.try_lock().unwrap_err(), TryAcquireError::WouldBlock);
    drop(raw); // the holder "dies": the kernel closes its socket
    let guard = lock.lock_timeout(LONG).unwrap();
    assert!(guard.previous_owner_died());
    drop(guard);
    assert!(!lock.lock().unwrap().previous_owner_died(), "told once");
}

#[test]
fn semaphore_is_bounded_and_recovers_permits_of_the_dead() {
    let manager = Manager::new().unwrap();
    let sem = manager.semaphore(2).unwrap();
    assert_eq!(sem.release(), Err(ReleaseError::OverReleased));
    let mut raw = Raw::connect(&manager);
    assert!(matches!(raw.call(&Request::Acquire { id: sem.handle.id, wait: WaitLimit::No }), Reply::Acquired { .. }));
    let mine = sem.acquire().unwrap();
    assert_eq!(sem.acquire_timeout(Duration::from_millis(20)).unwrap_err(), AcquireTimeoutError::Timeout);
    drop(raw);
    let back = sem.acquire_timeout(LONG).unwrap();
    assert!(back.previous_owner_died());
    drop(mine);
    back.forget();
    sem.release().unwrap();
    assert_eq!(sem.release(), Err(ReleaseError::OverReleased));
}

#[test]
fn event_and_barrier() {
    let manager = Manager::new().unwrap();
    let event = manager.event().unwrap();
    assert_eq!(event.is_set(), Ok(false));
    assert_eq!(event.wait_timeout(Duration::from_millis(10)), Ok(false));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let e = event.clone();
            thread::spawn(move || e.wait())
        })
        .collect();
    event.set().unwrap();
    waiters.into_iter().for_each(|w| w.join().unwrap().unwrap());
    assert_eq!(event.wait_timeout(Duration::ZERO), Ok(true));
    event.clear().unwrap();
    assert_eq!(event.is_set(), Ok(false));

    let barrier = manager.barrier(3).unwrap();
    assert_eq!(barrier.parties(), 3);
    let parties: Vec<_> = (0..3)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || b.wait_timeout(LONG))
        })
        .collect();
    let mut indices: Vec<usize> = parties.into_iter().map(|p| p.join().unwrap().unwrap()).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);

    // A party that times out breaks the barrier for the others, until reset.
    let other = {
        let b = barrier.clone();
        thread::spawn(move || b.wait())
    };
    assert_eq!(barrier.wait_timeout(Duration::from_millis(50)), Err(BarrierWaitTimeoutError::Timeout));
    assert_eq!(other.join().unwrap(), Err(BarrierWaitError::Broken));
    assert_eq!(barrier.wait(), Err(BarrierWaitError::Broken));
    barrier.reset().unwrap();
    let b = barrier.clone();
    let t = thread::spawn(move || b.wait_timeout(LONG));
    let b = barrier.clone();
    let u = thread::spawn(move || b.wait_timeout(LONG));
    assert!(barrier.wait_timeout(LONG).is_ok());
    assert!(t.join().unwrap().is_ok() && u.join().unwrap().is_ok());
}

#[test]
fn a_party_dying_at_a_barrier_breaks_it() {
    let manager = Manager::new().unwrap();
    let barrier = manager.barrier(3).unwrap();
    let mut raw = Raw::connect(&manager);
    raw.send(&Request::WaitBarrier { id: barrier.handle.id, wait: WaitLimit::Forever });
    // Two round trips: the server has parked the raw party (see `a_dead_waiter_never_...`).
    manager.event().unwrap();
    manager.event().unwrap();
    let other = {
        let b = barrier.clone();
        thread::spawn(move || b.wait_timeout(LONG))
    };
    drop(raw);
    assert_eq!(other.join().unwrap(), Err(BarrierWaitTimeoutError::Broken));
    assert_eq!(barrier.wait(), Err(BarrierWaitError::Broken), "broken until reset");
}

#[test]
fn map_operations() {
    let manager = Manager::new().unwrap();
    let m = manager.map::<u32, String>().unwrap();
    assert_eq!(m.insert(2, "two".into()), Ok(None));
    assert_eq!(m.insert(1, "one".into()), Ok(None));
    assert_eq!(m.contains_key(&1), Ok(true));
    assert_eq!(
        m.keys().map(|mut k| {
            k.sort_unstable();
            k
        }),
        Ok(vec![1, 2])
    );
    m.clear().unwrap();
    assert_eq!(m.len(), Ok(0));
    assert_eq!(m.get(&1), Ok(None));
}

#[test]
fn shutdown_wakes_every_blocked_call() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u8>().unwrap();
    let lock = manager.lock().unwrap();
    let event = manager.event().unwrap();
    let held = lock.lock().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    // Each blocked call has its own error type; all must say the manager is gone.
    let blocked: Vec<thread::JoinHandle<bool>> = vec![
        {
            let (q, tx) = (q.clone(), ready_tx.clone());
            thread::spawn(move || {
                tx.send(()).unwrap();
                q.get().unwrap_err().is_disconnected()
            })
        },
        {
            let (lock, tx) = (lock.clone(), ready_tx.clone());
            thread::spawn(move || {
                tx.send(()).unwrap();
                lock.lock().unwrap_err().is_disconnected()
            })
        },
        {
            let (event, tx) = (event.clone(), ready_tx);
            thread::spawn(move || {
                tx.send(()).unwrap();
                event.wait().unwrap_err().is_disconnected()
            })
        },
    ];
    for _ in 0..3 {
        ready_rx.recv().unwrap();
    }
    // Whether or not each thread has reached the server yet, it must end Disconnected.
    manager.shutdown();
    manager.shutdown(); // harmless twice
    for t in blocked {
        assert!(t.join().unwrap());
    }
    assert_eq!(held.unlock(), Err(CallError::Disconnected));
    assert_eq!(q.try_get(), Err(TryGetError::Disconnected));
    assert_eq!(event.set(), Err(CallError::Disconnected));
    assert!(manager.queue::<u8>().unwrap_err().is_disconnected());
}

#[test]
fn a_request_cut_off_half_way_is_never_applied() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let mut raw = Raw::connect(&manager);
    let mut frame = Vec::new();
    protocol::frame(&Request::Put { id: q.handle.id, item: encode(&7u32).unwrap(), wait: WaitLimit::No }, &mut frame)
        .unwrap();
    raw.0.write_all(&frame[..frame.len() - 1]).unwrap();
    drop(raw);
    q.put(8).unwrap();
    assert_eq!(q.get(), Ok(8));
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
}

#[test]
fn items_lent_to_a_getter_that_dies_unacknowledged_go_back_to_the_front() {
    let manager = Manager::new().unwrap();
    let q = manager.bounded_queue::<u32>(3).unwrap();
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    let mut raw = Raw::connect(&manager);
    let Reply::Items(items) = raw.call(&Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 2, shared: false })
    else {
        panic!("items expected")
    };
    assert_eq!(items.len(), 2);
    // ItemPayload, not acknowledged: they still take their slots.
    assert_eq!(q.len(), Ok(1));
    assert!(q.is_full().unwrap());
    drop(raw);
    // The server sees the end of file in the round that answers our next request (the close
    // came first) and cleans up at the end of that round; the round after sees the result.
    q.len().unwrap();
    assert_eq!(q.len(), Ok(3));
    assert_eq!((q.get(), q.get(), q.get()), (Ok(1), Ok(2), Ok(3)), "back at the front, in order");

    // Once acknowledged, an item is the getter's: its death changes nothing.
    q.put(4).unwrap();
    q.put(5).unwrap();
    let mut raw = Raw::connect(&manager);
    assert!(matches!(
        raw.call(&Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 2, shared: false }),
        Reply::Items(_)
    ));
    raw.send(&Request::Ack { n: 1 });
    drop(raw);
    q.len().unwrap();
    assert_eq!(q.get_timeout(LONG), Ok(5), "only the unacknowledged item came back");
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
}

#[test]
fn a_reader_that_stops_draining_gives_back_what_it_read_ahead() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    for i in 0..200 {
        q.put(i).unwrap();
    }
    // Drain fast up to an end marker: read-ahead kicks in and takes more than that.
    while q.get().unwrap() != 99 {}
    // Another process (a raw client here) gets the rest, each item once, although this
    // process keeps its handle: first what nobody read ahead, in put order, then the unused
    // read-ahead, given back to the front, in put order (`PROTOCOL.md`, "Order").
    let mut other = Raw::connect(&manager);
    let mut got: Vec<u32> = Vec::new();
    while got.len() < 100 {
        let Reply::Items(items) =
            other.call(&Request::Get { id: q.handle.id, wait: WaitLimit::Micros(30_000_000), max: 200, shared: false })
        else {
            panic!("items expected")
        };
        other.send(&Request::Ack { n: items.len() as u32 });
        got.extend(items.iter().map(|i| match i {
            ItemPayload::Inline(bytes) => decode::<u32>(bytes).unwrap(),
            ItemPayload::Shared { .. } => panic!("small items go inline"),
        }));
    }
    let read_ahead_ended = got[0];
    let expected: Vec<u32> = (read_ahead_ended..200).chain(100..read_ahead_ended).collect();
    assert_eq!(got, expected, "the rest after the marker, then the read-ahead given back, each once");
}

#[test]
fn a_consumer_holding_read_ahead_does_not_hold_back_others() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    (0..10).for_each(|i| q.put(i).unwrap());
    // Another consumer (a raw client) holds five items lent, not acknowledged.
    let mut holder = Raw::connect(&manager);
    let Reply::Items(items) =
        holder.call(&Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 5, shared: false })
    else {
        panic!("items expected")
    };
    assert_eq!(items.len(), 5);
    // This one is served at once, from the queue's front past them.
    assert_eq!(q.try_get(), Ok(5));
    // The holder takes one and gives back the rest: those go to the front, in order, and come
    // next; then the queue goes on where it was. Each item once.
    holder.send(&Request::Ack { n: 1 });
    holder.send(&Request::Return);
    // `len` reads what every other connection already sent (the `Return` too) first.
    assert_eq!(q.len(), Ok(8));
    let got: Vec<u32> = (0..8).map(|_| q.get_timeout(LONG).unwrap()).collect();
    assert_eq!(got, [1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
}

#[test]
fn a_put_is_visible_to_whoever_looks_after_it_returned() {
    // Puts to an unbounded queue are not answered; a later look from another connection must
    // still see them.
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    for round in 0..200 {
        let writer = {
            let q = q.clone();
            thread::spawn(move || q.put(round).unwrap())
        };
        writer.join().unwrap();
        assert_eq!(q.len(), Ok(1), "round {round}");
        assert_eq!(q.try_get(), Ok(round));
    }
}

#[test]
fn a_dead_waiter_never_swallows_an_item() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let mut raw = Raw::connect(&manager);
    raw.send(&Request::Get { id: q.handle.id, wait: WaitLimit::Forever, max: 1, shared: false });
    // Make sure the server has parked it before it dies. Our bytes are in the server's socket
    // before the next request is sent, so the loop round that answers that request sees them
    // too (and may serve them after it); the round answering a second request starts after
    // that one ended.
    q.len().unwrap();
    q.len().unwrap();
    drop(raw);
    q.put(5).unwrap();
    assert_eq!(q.get_timeout(LONG), Ok(5));
}

#[test]
fn a_client_without_the_secret_is_refused() {
    let manager = Manager::new().unwrap();
    // A wrong proof.
    let mut raw = Raw::unauthenticated(&manager);
    let Reply::Challenge { .. } = raw.call(&Request::Hello { nonce: [1; 32] }) else { panic!() };
    let mut buf = Vec::new();
    protocol::frame(&Request::Proof { proof: [0; 32] }, &mut buf).unwrap();
    protocol::frame(&Request::Create(protocol::Kind::Event), &mut buf).unwrap();
    raw.0.write_all(&buf).unwrap();
    let mut reply = Vec::new();
    assert_eq!(raw.0.read_to_end(&mut reply).unwrap(), 0, "closed without a word");
    // A request before the handshake.
    let mut raw = Raw::unauthenticated(&manager);
    raw.send(&Request::Create(protocol::Kind::Event));
    assert_eq!(raw.0.read_to_end(&mut reply).unwrap(), 0, "closed without a word");
    // The manager serves on.
    let q = manager.queue::<u32>().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get(), Ok(1));
}

#[test]
fn reading_many_queues_keeps_no_state_per_queue() {
    let manager = Manager::new().unwrap();
    for i in 0..400u32 {
        let q = manager.queue::<u32>().unwrap();
        q.put(i).unwrap();
        assert_eq!(q.get(), Ok(i));
    }
    // Buffers of other tests running in parallel may be counted too; 400 drained queues must
    // not all be remembered.
    assert!(super::client::prefetch::buffer_count() < 400, "{}", super::client::prefetch::buffer_count());
}

/// An item whose bytes tell which it is: `n` bytes, each derived from `index`.
fn numbered(index: u32, n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from((0..n).map(|b| (index as usize * 31 + b) as u8).collect::<Vec<u8>>())
}

fn assert_numbered(item: &[u8], index: u32, n: usize) {
    assert_eq!(item.len(), n, "item {index}: length");
    assert!(item.iter().enumerate().all(|(b, v)| *v == (index as usize * 31 + b) as u8), "item {index}: bytes");
}

/// Sizes on both sides of the arena's limits (4 KiB and 1 MiB), cycled through.
const SIZES: [usize; 7] = [3, 4 << 10, 64 << 10, 300 << 10, (1 << 20) - 16, 1 << 20, 100];

#[test]
fn large_and_small_items_keep_their_order_and_bytes() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
    let consumer = {
        let q = q.clone();
        thread::spawn(move || {
            for i in 0..400u32 {
                assert_numbered(&q.get_timeout(LONG).unwrap(), i, SIZES[i as usize % SIZES.len()]);
            }
        })
    };
    for i in 0..400u32 {
        q.put(numbered(i, SIZES[i as usize % SIZES.len()])).unwrap();
    }
    consumer.join().unwrap();
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
}

/// A large item put now: lent by position to a client that mapped the arena.
fn is_lent_by_position(manager: &Manager, q: &Queue<serde_bytes::ByteBuf>) -> bool {
    q.put(numbered(7, 64 << 10)).unwrap();
    let mut raw = Raw::connect(manager);
    let Reply::Items(items) =
        raw.call(&Request::Get { id: q.handle.id, wait: WaitLimit::Micros(60_000_000), max: 1, shared: true })
    else {
        panic!("items expected")
    };
    raw.send(&Request::Ack { n: 1 });
    matches!(items[..], [ItemPayload::Shared { .. }])
}

#[test]
fn arena_chunks_are_used_again_once_their_items_are_taken() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
    assert!(is_lent_by_position(&manager, &q), "a 64 KiB item goes through the arena");
    // Twice the arena's size, ten items at a time: only works without falling back to the
    // sockets if chunks come back once their items were acknowledged.
    for round in 0..200u32 {
        for i in 0..10 {
            q.put(numbered(round * 10 + i, 64 << 10)).unwrap();
        }
        for i in 0..10 {
            assert_numbered(&q.get().unwrap(), round * 10 + i, 64 << 10);
        }
    }
    assert!(is_lent_by_position(&manager, &q), "the arena still has free chunks");
}

#[test]
fn a_full_arena_sends_items_inline_and_loses_none() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
    // 100 MiB with nobody reading: more than the arena holds.
    for i in 0..200u32 {
        q.put(numbered(i, 512 << 10)).unwrap();
    }
    assert_eq!(q.len(), Ok(200));
    for i in 0..200u32 {
        assert_numbered(&q.get().unwrap(), i, 512 << 10);
    }
}

#[test]
fn arena_items_lent_to_a_getter_that_dies_go_back_intact() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
    for i in 0..3 {
        q.put(numbered(i, 64 << 10)).unwrap();
    }
    let mut raw = Raw::connect(&manager);
    let Reply::Items(items) = raw.call(&Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 2, shared: true })
    else {
        panic!("items expected")
    };
    assert!(matches!(items[..], [ItemPayload::Shared { .. }, ItemPayload::Shared { .. }]));
    drop(raw);
    q.len().unwrap();
    for i in 0..3 {
        assert_numbered(&q.get_timeout(LONG).unwrap(), i, 64 << 10);
    }
}

#[test]
fn a_client_without_the_arena_gets_copies() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<serde_bytes::ByteBuf>().unwrap();
    q.put(numbered(5, 64 << 10)).unwrap();
    let mut raw = Raw::connect(&manager);
    let Reply::Items(items) = raw.call(&Request::Get { id: q.handle.id, wait: WaitLimit::No, max: 1, shared: false })
    else {
        panic!("items expected")
    };
    raw.send(&Request::Ack { n: 1 });
    let [ItemPayload::Inline(bytes)] = &items[..] else { panic!("an inline copy expected, got {items:?}") };
    assert_numbered(&decode::<serde_bytes::ByteBuf>(bytes).unwrap(), 5, 64 << 10);
    assert!(is_lent_by_position(&manager, &q), "its chunk was not lost");
}

#[test]
fn a_put_into_a_chunk_the_client_does_not_hold_is_refused() {
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u32>().unwrap();
    let mut raw = Raw::connect(&manager);
    raw.send(&Request::PutShared { id: q.handle.id, at: 0, len: 16 });
    let mut byte = [0u8; 1];
    assert_eq!(raw.0.read(&mut byte).unwrap(), 0, "the server closed the connection");
    assert_eq!(q.len(), Ok(0));
}
