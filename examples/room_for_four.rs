//! A room for four: 13 jobs in a process pool share a manager `Semaphore` of 4 permits; never
//! more than four are inside at once.
//!
//! Run with `cargo run --example room_for_four`.

use std::time::Duration;

use stealpool::manager::{Lock, Manager, Map, Semaphore};
use stealpool::{Executor, ProcessPoolExecutor};

const GUESTS: u32 = 13;
const ROOM: usize = 4;

/// Enters the room (waiting for a permit), stays a moment, leaves. Returns how many were
/// inside, this guest included, when it entered.
fn visit((guest, room, lock, counts): (u32, Semaphore, Lock, Map<String, u32>)) -> u32 {
    let _permit = room.acquire().expect("the manager is up");
    let inside = {
        let _g = lock.lock().unwrap();
        let inside = counts.get(&"inside".into()).unwrap().unwrap_or(0) + 1;
        counts.insert("inside".into(), inside).unwrap();
        let max = counts.get(&"max".into()).unwrap().unwrap_or(0);
        counts.insert("max".into(), max.max(inside)).unwrap();
        inside
    };
    println!("guest {guest:2} enters ({inside} inside)");
    std::thread::sleep(Duration::from_millis(20)); // the visit itself
    let _g = lock.lock().unwrap();
    let now = counts.get(&"inside".into()).unwrap().unwrap() - 1;
    counts.insert("inside".into(), now).unwrap();
    println!("guest {guest:2} leaves ({now} inside)");
    inside
}
stealpool::register_fn!(visit);

fn main() {
    let manager = Manager::new().expect("manager starts");
    let room = manager.semaphore(ROOM).unwrap();
    let lock = manager.lock().unwrap();
    let counts = manager.map::<String, u32>().unwrap();
    // One worker per guest, so that all of them really do try to get in at once.
    let pool = ProcessPoolExecutor::new(GUESTS as usize);
    let guests = (0..GUESTS).map(|g| (g, room.clone(), lock.clone(), counts.clone()));
    let seen: Vec<u32> = pool.map(visit, guests).unwrap().map(|r| r.expect("the visit went well")).collect();
    let max = counts.get(&"max".into()).unwrap().unwrap();
    assert_eq!(seen.len(), GUESTS as usize);
    assert!(max <= ROOM as u32 && seen.iter().all(|n| *n <= ROOM as u32), "the room overflowed: {max}");
    println!("{GUESTS} guests visited; at most {max} inside at once (room for {ROOM})");
}
