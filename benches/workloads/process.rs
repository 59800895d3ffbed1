//! Process-pool workloads shared by the `process` criterion bench and `process_compare`: the
//! registered job functions, the timed runs, and a raw ipc-channel peer to measure against.
//!
//! The raw peer is this same bench binary started again with [`RAW_PEER_ENV`] set; call
//! [`serve_raw_peer_if_asked`] first thing in `main`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use stealpool::{Executor, MapOptions, ProcessPoolExecutor};

/// Small jobs: two integers in, one out.
pub fn add((a, b): (u64, u64)) -> u64 {
    a.wrapping_add(b)
}
stealpool::register_fn!(add);

/// Large payload jobs: a byte buffer in, its length out.
pub fn byte_len(b: serde_bytes::ByteBuf) -> u64 {
    b.len() as u64
}
stealpool::register_fn!(byte_len);

pub const MIB: usize = 1 << 20;

/// `n` small jobs through `apply_async` (one submission each), all in flight at once.
pub fn submit_small(pool: &ProcessPoolExecutor, n: u64) -> u64 {
    let futures: Vec<_> = (0..n).map(|i| pool.apply_async(add, (i, 1)).unwrap()).collect();
    futures.into_iter().map(|f| f.result().unwrap()).fold(0, u64::wrapping_add)
}

/// `n` small jobs through `map` with its default chunk size (as `multiprocessing.Pool.map`).
pub fn map_small(pool: &ProcessPoolExecutor, n: u64) -> u64 {
    let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i, 1)).collect();
    // A window that covers the whole input, as Pool.map submits every chunk at once.
    let chunks = pairs.len().div_ceil(4 * pool.max_workers()).max(1);
    let opts = MapOptions::new().chunksize(chunks).buffersize(usize::MAX);
    pool.map_with(add, pairs, opts).unwrap().map(Result::unwrap).fold(0, u64::wrapping_add)
}

/// `n` owned 1 MiB job arguments, made before the timed part (the raw transfer it is compared
/// with sends a buffer the caller already has, too).
pub fn payload_args(n: u64, payload: &[u8]) -> Vec<serde_bytes::ByteBuf> {
    (0..n).map(|_| serde_bytes::ByteBuf::from(payload.to_vec())).collect()
}

/// One job per argument (1 MiB each); all in flight at once.
pub fn payloads(pool: &ProcessPoolExecutor, args: Vec<serde_bytes::ByteBuf>) -> u64 {
    let futures: Vec<_> = args.into_iter().map(|a| pool.apply_async(byte_len, a).unwrap()).collect();
    futures.into_iter().map(|f| f.result().unwrap()).sum()
}

/// Time until a fresh pool of `workers` has run one job.
pub fn startup(workers: usize) -> Duration {
    let started = Instant::now();
    let pool = ProcessPoolExecutor::new(workers);
    assert_eq!(pool.apply_async(add, (1, 2)).unwrap().result(), Ok(3));
    let took = started.elapsed();
    drop(pool);
    took
}

pub const RAW_PEER_ENV: &str = "STEALPOOL_BENCH_RAW_PEER";

#[derive(serde::Serialize, serde::Deserialize)]
struct PeerHello {
    data: IpcBytesSender,
    acks: IpcBytesReceiver,
}

/// The other end of a raw ipc-channel transfer, in a child process: acknowledges every message
/// with 8 bytes.
pub fn serve_raw_peer_if_asked() {
    let Ok(name) = std::env::var(RAW_PEER_ENV) else { return };
    let (data_tx, data_rx) = ipc::bytes_channel().unwrap();
    let (acks_tx, acks_rx) = ipc::bytes_channel().unwrap();
    IpcSender::connect(name).unwrap().send(PeerHello { data: data_tx, acks: acks_rx }).unwrap();
    while let Ok(msg) = data_rx.recv() {
        if acks_tx.send(&(msg.len() as u64).to_le_bytes()).is_err() {
            break;
        }
    }
    std::process::exit(0);
}

/// A child process at the other end of a raw ipc-channel bytes channel.
pub struct RawPeer {
    child: std::process::Child,
    data: IpcBytesSender,
    acks: IpcBytesReceiver,
}

impl RawPeer {
    pub fn start() -> RawPeer {
        let (server, name) = IpcOneShotServer::<PeerHello>::new().unwrap();
        let child =
            std::process::Command::new(std::env::current_exe().unwrap()).env(RAW_PEER_ENV, name).spawn().unwrap();
        let (_, hello) = server.accept().unwrap();
        RawPeer { child, data: hello.data, acks: hello.acks }
    }

    /// Sends `n` messages of `payload`, pipelined (a thread sends while this one reads the
    /// acknowledgements); returns the sum of the acknowledged lengths.
    pub fn transfer(&self, n: u64, payload: &[u8]) -> u64 {
        let data = &self.data;
        std::thread::scope(|s| {
            s.spawn(move || {
                for _ in 0..n {
                    data.send(payload).unwrap();
                }
            });
            (0..n)
                .map(|_| {
                    let ack = self.acks.recv().unwrap();
                    u64::from_le_bytes(ack[..8].try_into().unwrap())
                })
                .sum()
        })
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        // Closing our sender ends the peer's loop; then reap it.
        let (dead, _) = ipc::bytes_channel().unwrap();
        self.data = dead;
        let _ = self.child.wait();
    }
}

stealpool::register_fn!(super::cpu_job, name = "bench::cpu_job");
stealpool::register_fn!(super::io_job, name = "bench::io_job");

/// The CPU-bound or IO-bound batch on a process pool: one `apply_async` per job. `f` must be a
/// registered function item (a plain `fn` pointer has no name a worker could look up).
pub fn run_process<F: Fn(u64) -> u64 + Copy + 'static>(pool: &ProcessPoolExecutor, jobs: u64, f: F) -> u64 {
    let futures: Vec<_> = (0..jobs).map(|i| pool.apply_async(f, i).unwrap()).collect();
    futures.into_iter().map(|f| f.result().unwrap()).fold(0, u64::wrapping_add)
}
