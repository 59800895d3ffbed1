//! Ticket sale: several seller processes sell from one shared count, guarded by a manager
//! `Lock`. The count never goes below zero and no ticket is sold twice.
//!
//! Run with `cargo run --example ticket_sale`.

use stealpool::manager::{Lock, Manager, Map, Queue};
use stealpool::process::Process;

const TICKETS: u32 = 100;
const SELLERS: u32 = 6;

/// Sells tickets until none is left; each sale is logged as (seller, ticket number).
fn sell(seller: u32, lock: Lock, count: Map<String, u32>, sales: Queue<(u32, u32)>) {
    loop {
        let _guard = lock.lock().expect("the manager is up");
        let left = count.get(&"left".to_string()).unwrap().expect("the count exists");
        if left == 0 {
            return;
        }
        sales.put((seller, left)).unwrap();
        count.insert("left".to_string(), left - 1).unwrap();
    }
}
stealpool::register_fn!(sell);

fn main() {
    let manager = Manager::new().expect("manager starts");
    let lock = manager.lock().unwrap();
    let count = manager.map::<String, u32>().unwrap();
    let sales = manager.queue::<(u32, u32)>().unwrap();
    count.insert("left".to_string(), TICKETS).unwrap();

    let sellers: Vec<Process> = (0..SELLERS)
        .map(|s| Process::spawn(sell, (s, lock.clone(), count.clone(), sales.clone())).expect("seller starts"))
        .collect();
    for p in &sellers {
        let status = p.join();
        assert!(status.success(), "seller {} ended: {status}", p.pid());
    }

    let mut sold: Vec<(u32, u32)> = std::iter::from_fn(|| sales.try_get().ok()).collect();
    let mut per_seller = vec![0u32; SELLERS as usize];
    for (seller, _) in &sold {
        per_seller[*seller as usize] += 1;
    }
    for (seller, n) in per_seller.iter().enumerate() {
        println!("seller {seller} sold {n} tickets");
    }
    sold.sort_unstable_by_key(|(_, ticket)| *ticket);
    let tickets: Vec<u32> = sold.iter().map(|(_, t)| *t).collect();
    assert_eq!(tickets, (1..=TICKETS).collect::<Vec<_>>(), "every ticket sold exactly once");
    let left = count.get(&"left".to_string()).unwrap().unwrap();
    assert_eq!(left, 0);
    println!("{} tickets sold by {SELLERS} processes, each exactly once; {left} left", tickets.len());
}
