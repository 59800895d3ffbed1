//! Unit tests of the object semantics (`state.rs`, `objects.rs`, `waiters.rs`) with no socket:
//! requests go straight into a [`State`], and a [`Recorder`] stands for the connections,
//! keeping every reply in the order it was sent.

use std::collections::HashSet;

use serde_bytes::ByteBuf;

use super::objects::{Arrival, Object};
use super::state::{GetStart, Link, State};
use crate::manager::protocol::{ErrorCode, ItemPayload, Kind, Reply, WaitLimit};

/// The connections as the tests see them: what each was sent, and which are closed.
#[derive(Default)]
struct Recorder {
    sent: Vec<(u64, Reply)>,
    closed: HashSet<u64>,
}

impl Link for Recorder {
    fn is_closed(&self, conn: u64) -> bool {
        self.closed.contains(&conn)
    }

    fn can_send(&mut self, conn: u64) -> bool {
        !self.closed.contains(&conn)
    }

    fn send(&mut self, conn: u64, reply: &Reply) {
        if !self.closed.contains(&conn) {
            // `Reply` is not `Clone`: a postcard round trip copies it.
            let copy = postcard::from_bytes(&postcard::to_stdvec(reply).unwrap()).unwrap();
            self.sent.push((conn, copy));
        }
    }

    fn close(&mut self, conn: u64) {
        self.closed.insert(conn);
    }
}

impl Recorder {
    /// What was sent since the last call.
    fn take(&mut self) -> Vec<(u64, Reply)> {
        std::mem::take(&mut self.sent)
    }
}

/// A state with connections 1..=n authenticated, and no arena.
fn state(n: u64) -> (State, Recorder) {
    let mut state = State::new(None);
    for conn in 1..=n {
        state.connect(conn, Some(1000 + conn as u32));
    }
    (state, Recorder::default())
}

/// The bytes of the items in a lend reply.
fn items(reply: &Reply) -> Vec<Vec<u8>> {
    let Reply::Items(items) = reply else { panic!("not items: {reply:?}") };
    items
        .iter()
        .map(|i| match i {
            ItemPayload::Inline(b) => b.to_vec(),
            ItemPayload::Shared { .. } => panic!("no arena here"),
        })
        .collect()
}

/// A get that either lends at once or parks (no stalled holder to take back here).
fn get(s: &mut State, io: &mut Recorder, conn: u64, id: u64, wait: WaitLimit, max: u32) {
    if let GetStart::Blocked { lent_elsewhere } = s.get_now(io, conn, id, max, false) {
        s.get_later(io, conn, id, wait, max, false, lent_elsewhere);
    }
}

#[test]
fn queue_is_fifo_and_a_bounded_put_parks_until_a_slot_frees() {
    let (mut s, mut io) = state(3);
    let q = s.create(Kind::Queue { maxsize: Some(2) });
    s.put(&mut io, 1, q, vec![1], WaitLimit::No);
    s.put(&mut io, 1, q, vec![2], WaitLimit::No);
    assert!(matches!(io.take()[..], [(1, Reply::Done), (1, Reply::Done)]));
    // Full: at once it fails, and with a wait it parks (no reply yet).
    s.put(&mut io, 2, q, vec![3], WaitLimit::No);
    assert!(matches!(io.take()[..], [(2, Reply::Failed(ErrorCode::Full))]));
    s.put(&mut io, 2, q, vec![3], WaitLimit::Forever);
    assert!(io.take().is_empty());
    // A get lends the oldest; the lent item keeps its slot until acknowledged.
    get(&mut s, &mut io, 3, q, WaitLimit::No, 1);
    let sent = io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, items(&sent[0].1)), (3, vec![vec![1]]));
    s.ack(&mut io, 3, 1);
    // The acknowledgement frees the slot: the parked put goes in and is answered.
    assert!(matches!(io.take()[..], [(2, Reply::Done)]));
    get(&mut s, &mut io, 3, q, WaitLimit::No, 8);
    let sent = io.take();
    assert_eq!(items(&sent[0].1), [vec![2], vec![3]], "in the order they were put");
}

#[test]
fn items_lent_to_a_connection_that_closes_go_back_to_the_front() {
    let (mut s, mut io) = state(2);
    let q = s.create(Kind::Queue { maxsize: None });
    for i in 0..3 {
        s.put_no_reply(&mut io, 1, q, vec![i]);
    }
    get(&mut s, &mut io, 1, q, WaitLimit::No, 2);
    assert_eq!(items(&io.take()[0].1), [vec![0], vec![1]]);
    // Connection 2 waits; connection 1 dies without acknowledging.
    get(&mut s, &mut io, 2, q, WaitLimit::Forever, 1);
    assert_eq!(items(&io.take()[0].1), [vec![2]]);
    get(&mut s, &mut io, 2, q, WaitLimit::Forever, 8);
    assert!(io.take().is_empty(), "parked");
    io.close(1);
    s.give_back_lent(&mut io, 1);
    s.disconnect(&mut io, 1);
    let sent = io.take();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, items(&sent[0].1)), (2, vec![vec![0], vec![1]]));
}

#[test]
fn a_get_with_a_deadline_expires_empty_and_leaves_no_waiter() {
    let (mut s, mut io) = state(1);
    let q = s.create(Kind::Queue { maxsize: None });
    get(&mut s, &mut io, 1, q, WaitLimit::Micros(0), 1);
    assert!(io.take().is_empty());
    let due = s.due(std::time::Instant::now());
    assert_eq!(due, [1]);
    assert!(s.parked_get(1));
    s.expire(&mut io, 1);
    assert!(matches!(io.take()[..], [(1, Reply::Failed(ErrorCode::Empty))]));
    assert_eq!(s.census(), (0, 0, 0), "no waiter, no parked request");
}

#[test]
fn a_lock_holder_that_dies_releases_it_and_the_next_holder_is_told() {
    let (mut s, mut io) = state(3);
    let lock = s.create(Kind::Lock);
    s.acquire(&mut io, 1, lock, WaitLimit::Forever);
    assert!(matches!(io.take()[..], [(1, Reply::Acquired { owner_died: false })]));
    s.acquire(&mut io, 2, lock, WaitLimit::No);
    assert!(matches!(io.take()[..], [(2, Reply::Failed(ErrorCode::WouldBlock))]));
    s.acquire(&mut io, 2, lock, WaitLimit::Forever);
    // Only the holder may release a lock.
    s.release(&mut io, 3, lock);
    assert!(matches!(io.take()[..], [(3, Reply::Failed(ErrorCode::NotOwner))]));
    io.close(1);
    s.disconnect(&mut io, 1);
    assert!(matches!(io.take()[..], [(2, Reply::Acquired { owner_died: true })]));
    // Told once.
    s.release(&mut io, 2, lock);
    s.acquire(&mut io, 3, lock, WaitLimit::No);
    assert!(matches!(io.take()[..], [(2, Reply::Done), (3, Reply::Acquired { owner_died: false })]));
}

#[test]
fn a_process_that_dies_holding_permits_on_two_connections_is_told_once() {
    let (mut s, mut io) = (State::new(None), Recorder::default());
    // Connections 1 and 2 are one process, 3 another, 4 a third; 5 and 6 are of no known pid.
    for (conn, pid) in [(1, Some(7)), (2, Some(7)), (3, Some(8)), (4, Some(9)), (5, None), (6, None)] {
        s.connect(conn, pid);
    }
    let sem = s.create(Kind::Semaphore { permits: 3 });
    for conn in [1, 2, 3] {
        s.acquire(&mut io, conn, sem, WaitLimit::No);
    }
    assert_eq!(io.take().len(), 3);
    // Process 7 dies: the server reads its two ends in two rounds, an acquire in between.
    io.close(1);
    io.close(2);
    s.disconnect(&mut io, 1);
    s.acquire(&mut io, 3, sem, WaitLimit::No);
    assert!(matches!(io.take()[..], [(3, Reply::Acquired { owner_died: true })]), "the first is told");
    s.disconnect(&mut io, 2);
    s.acquire(&mut io, 3, sem, WaitLimit::No);
    assert!(matches!(io.take()[..], [(3, Reply::Acquired { owner_died: false })]), "one death, told once");
    // Another process's death is told again.
    s.release(&mut io, 3, sem);
    s.acquire(&mut io, 4, sem, WaitLimit::No);
    io.close(4);
    s.disconnect(&mut io, 4);
    s.acquire(&mut io, 3, sem, WaitLimit::No);
    assert!(matches!(
        io.take()[..],
        [(3, Reply::Done), (4, Reply::Acquired { owner_died: false }), (3, Reply::Acquired { owner_died: true })]
    ));
    // Without a pid, each connection's end is a death of its own.
    for conn in [3, 3, 3] {
        s.release(&mut io, conn, sem);
    }
    for conn in [5, 6] {
        s.acquire(&mut io, conn, sem, WaitLimit::No);
    }
    io.take();
    for conn in [5, 6] {
        io.close(conn);
        s.disconnect(&mut io, conn);
        s.acquire(&mut io, 3, sem, WaitLimit::No);
        assert!(matches!(io.take()[..], [(3, Reply::Acquired { owner_died: true })]));
    }
}

#[test]
fn a_semaphore_is_released_by_anyone_but_never_over_released() {
    let (mut s, mut io) = state(2);
    let sem = s.create(Kind::Semaphore { permits: 2 });
    s.release(&mut io, 1, sem);
    assert!(matches!(io.take()[..], [(1, Reply::Failed(ErrorCode::OverReleased))]));
    s.acquire(&mut io, 1, sem, WaitLimit::No);
    s.acquire(&mut io, 1, sem, WaitLimit::No);
    s.acquire(&mut io, 2, sem, WaitLimit::Forever);
    assert_eq!(io.take().len(), 2, "two granted, the third parked");
    // Another connection gives back the oldest permit out: the parked one gets it.
    s.release(&mut io, 2, sem);
    assert!(matches!(io.take()[..], [(2, Reply::Done), (2, Reply::Acquired { owner_died: false })]));
    let Some(Object::Semaphore(sem)) = s.objects.get(&sem) else { panic!() };
    let holders: Vec<u64> = sem.holders.iter().map(|h| h.conn).collect();
    assert_eq!((sem.available, holders.as_slice()), (0, &[1, 2][..]));
}

#[test]
fn a_barrier_trips_for_its_parties_and_a_timeout_breaks_it() {
    let (mut s, mut io) = state(3);
    let b = s.create(Kind::Barrier { parties: 2 });
    s.wait_barrier(&mut io, 1, b, WaitLimit::Forever);
    assert!(io.take().is_empty());
    s.wait_barrier(&mut io, 2, b, WaitLimit::Forever);
    assert!(matches!(io.take()[..], [(1, Reply::Index(0)), (2, Reply::Index(1))]));
    // A party that does not wait at a barrier that is not full breaks it for the others.
    let b = s.create(Kind::Barrier { parties: 3 });
    s.wait_barrier(&mut io, 1, b, WaitLimit::Micros(u64::MAX));
    s.wait_barrier(&mut io, 3, b, WaitLimit::No);
    assert!(matches!(
        io.take()[..],
        [(1, Reply::Failed(ErrorCode::BrokenBarrier)), (3, Reply::Failed(ErrorCode::Timeout))]
    ));
    let Some(Object::Barrier(barrier)) = s.objects.get(&b) else { panic!() };
    assert_eq!(barrier.arrive(), Arrival::Broken);
    s.reset_barrier(&mut io, 2, b);
    let Some(Object::Barrier(barrier)) = s.objects.get(&b) else { panic!() };
    assert_eq!(barrier.arrive(), Arrival::Waits);
}

#[test]
fn setting_an_event_wakes_every_waiter_and_clearing_wakes_none() {
    let (mut s, mut io) = state(3);
    let e = s.create(Kind::Event);
    s.wait_event(&mut io, 1, e, WaitLimit::No);
    assert!(matches!(io.take()[..], [(1, Reply::Flag(false))]));
    s.wait_event(&mut io, 1, e, WaitLimit::Forever);
    s.wait_event(&mut io, 2, e, WaitLimit::Forever);
    s.set_event(&mut io, 3, e, false);
    assert!(matches!(io.take()[..], [(3, Reply::Done)]));
    s.set_event(&mut io, 3, e, true);
    assert!(matches!(io.take()[..], [(1, Reply::Flag(true)), (2, Reply::Flag(true)), (3, Reply::Done)]));
    s.is_set(&mut io, 3, e);
    assert!(matches!(io.take()[..], [(3, Reply::Flag(true))]));
}

#[test]
fn a_second_request_while_one_is_parked_closes_the_connection() {
    let (mut s, mut io) = state(1);
    let e = s.create(Kind::Event);
    s.wait_event(&mut io, 1, e, WaitLimit::Forever);
    s.wait_event(&mut io, 1, e, WaitLimit::Forever);
    assert!(io.is_closed(1));
    // A closed connection's waiter is skipped, never answered.
    s.set_event(&mut io, 1, e, true);
    assert!(io.take().is_empty());
}

#[test]
fn requests_on_the_wrong_kind_of_object_are_refused() {
    let (mut s, mut io) = state(1);
    let m = s.create(Kind::Map);
    s.acquire(&mut io, 1, m, WaitLimit::No);
    s.put(&mut io, 1, m, vec![], WaitLimit::No);
    s.map(&mut io, 1, m, |m| Reply::Value(m.insert(vec![1], vec![2]).map(ByteBuf::from)));
    let sent = io.take();
    assert!(matches!(
        sent[..],
        [
            (1, Reply::Failed(ErrorCode::NoSuchObject)),
            (1, Reply::Failed(ErrorCode::NoSuchObject)),
            (1, Reply::Value(None))
        ]
    ));
    // An unanswered put to anything but an unbounded queue is a broken client.
    s.put_no_reply(&mut io, 1, m, vec![]);
    assert!(io.is_closed(1));
}
