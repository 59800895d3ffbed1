use stealpool::{Executor, ProcessPoolExecutor};

fn square(x: u64) -> u64 {
    x * x
}
stealpool::register_fn!(square);

#[test]
fn smoke() {
    let t = std::time::Instant::now();
    let pool = ProcessPoolExecutor::new(2).unwrap();
    eprintln!("built in {:?}, pids {:?}", t.elapsed(), pool.worker_pids());
    assert_eq!(pool.apply_async(square, 12).unwrap().result(), Ok(144));
    let v: Vec<u64> = pool.map(square, 0..100u64).unwrap().map(Result::unwrap).collect();
    assert_eq!(v[99], 99 * 99);
    let t = std::time::Instant::now();
    let futs: Vec<_> = (0..20000u64).map(|i| pool.apply_async(square, i).unwrap()).collect();
    let s: u64 = futs.into_iter().map(|f| f.result().unwrap()).sum();
    eprintln!("20000 submits in {:?} sum {s}", t.elapsed());
}
