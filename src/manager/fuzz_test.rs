//! Protocol fuzzing on stable Rust: a live manager is sent mutated real frames and generated
//! ones (random lengths, truncated frames, huge length prefixes, garbage postcard), on fresh
//! connections, before and after authentication, while a well-behaved client checks that the
//! server keeps serving. A panic of the server thread, a hang, or a wrong answer to the
//! well-behaved client fails the test.
//!
//! The sequence is fixed by its seed. CI runs a few seconds' worth (at most
//! [`DEFAULT_ROUNDS`] rounds and [`DEFAULT_BUDGET`]); for a long local run:
//!
//! ```text
//! STEALPOOL_FUZZ_ROUNDS=1000000 STEALPOOL_FUZZ_SECS=3600 STEALPOOL_FUZZ_SEED=7 \
//!     cargo test --release --lib manager::fuzz_test -- --nocapture
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::auth;
use super::protocol::{self, HEADER, Kind, Reply, Request, WaitLimit};
use super::*;
use crate::fuzzing::{Rng, env_or};

const DEFAULT_ROUNDS: u64 = 4000;
const DEFAULT_BUDGET: Duration = Duration::from_secs(4);
const LONG: Duration = Duration::from_secs(30);

fn framed(request: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    protocol::frame(request, &mut buf).unwrap();
    buf
}

/// A real request of every kind, on objects `1..=objects` (the probe queue excluded).
fn real_request(rng: &mut Rng, objects: u64) -> Request {
    let id = 2 + rng.below(objects);
    let wait = match rng.below(4) {
        0 => WaitLimit::No,
        1 => WaitLimit::Forever,
        2 => WaitLimit::Micros(rng.below(2000)),
        _ => WaitLimit::Micros(rng.next()),
    };
    let bytes = |rng: &mut Rng| ByteBuf::from(rng.some_bytes(64));
    match rng.below(26) {
        0 => Request::Hello { nonce: [rng.next() as u8; 32] },
        1 => Request::Proof { proof: [rng.next() as u8; 32] },
        2 => Request::Create(match rng.below(6) {
            0 => Kind::Queue { maxsize: Some(rng.below(4)) },
            1 => Kind::Lock,
            2 => Kind::Semaphore { permits: rng.below(3) },
            3 => Kind::Event,
            4 => Kind::Barrier { parties: rng.below(4) },
            _ => Kind::Map,
        }),
        3 => Request::Put { id, item: bytes(rng), wait },
        4 => Request::PutNoReply { id, item: bytes(rng) },
        5 => Request::PutShared { id, at: rng.below(80 << 20), len: rng.below(1 << 21) as u32 },
        6 => Request::Arena,
        7 => Request::Chunk { retire: Some(rng.below(70) as u32).filter(|_| rng.below(2) == 0) },
        8 => Request::Get { id, wait, max: rng.next() as u32, shared: rng.below(2) == 0 },
        9 => Request::Ack { n: rng.next() as u32 },
        10 => Request::Return,
        11 => Request::QueueLen { id },
        12 => Request::Acquire { id, wait },
        13 => Request::Release { id },
        14 => Request::SetEvent { id, value: rng.below(2) == 0 },
        15 => Request::IsSet { id },
        16 => Request::WaitEvent { id, wait },
        17 => Request::WaitBarrier { id, wait },
        18 => Request::ResetBarrier { id },
        19 => Request::MapInsert { id, key: bytes(rng), value: bytes(rng) },
        20 => Request::MapGet { id, key: bytes(rng) },
        21 => Request::MapRemove { id, key: bytes(rng) },
        22 => Request::MapLen { id },
        23 => Request::MapKeys { id },
        24 => Request::MapClear { id },
        _ => Request::Get { id: rng.next(), wait: WaitLimit::No, max: 1, shared: false },
    }
}

/// A real frame, mutated or not, or a made-up one.
fn frame(rng: &mut Rng, objects: u64) -> Vec<u8> {
    let mut f = framed(&real_request(rng, objects));
    match rng.below(8) {
        // As it is.
        0 | 1 => {}
        // Flipped bits and changed bytes, the length prefix included.
        2 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(f.len() as u64) as usize;
                f[i] ^= 1 << rng.below(8);
            }
        }
        3 => {
            let i = HEADER + rng.below((f.len() - HEADER) as u64) as usize;
            f[i] = rng.next() as u8;
        }
        // Truncated (the rest never comes), or with bytes added inside.
        4 => f.truncate(rng.below(f.len() as u64) as usize),
        5 => {
            let extra = rng.some_bytes(16);
            let at = HEADER + rng.below((f.len() - HEADER) as u64 + 1) as usize;
            f.splice(at..at, extra);
            let len = (f.len() - HEADER) as u32;
            f[..HEADER].copy_from_slice(&len.to_le_bytes());
        }
        // A huge length prefix.
        6 => f[..HEADER].copy_from_slice(&[u32::MAX, 1 << 30, (1 << 30) + 1, 300][rng.below(4) as usize].to_le_bytes()),
        // Garbage postcard of a random length, correctly framed.
        _ => {
            let body = rng.some_bytes(300);
            f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend(body);
        }
    }
    f
}

/// Whether the server, reading `stream` as one connection's bytes, would apply a request to
/// the probe queue (object 1). The fuzzer leaves the well-behaved client's queue alone so
/// that its answers can be checked exactly; it checks the whole stream, because a mutated
/// length prefix makes the server cut frames elsewhere than the fuzzer did.
fn touches_probe(mut stream: &[u8]) -> bool {
    use Request::*;
    while let Some(len) = protocol::frame_len(stream) {
        let Some(body) = stream.get(HEADER..HEADER.saturating_add(len)) else { return false };
        // The server closes the connection at the first frame that does not decode.
        let Ok(request) = postcard::from_bytes::<Request>(body) else { return false };
        let id = match request {
            Put { id, .. }
            | PutNoReply { id, .. }
            | PutShared { id, .. }
            | Get { id, .. }
            | QueueLen { id }
            | Acquire { id, .. }
            | Release { id }
            | SetEvent { id, .. }
            | IsSet { id }
            | WaitEvent { id, .. }
            | WaitBarrier { id, .. }
            | ResetBarrier { id }
            | MapInsert { id, .. }
            | MapGet { id, .. }
            | MapRemove { id, .. }
            | MapLen { id }
            | MapKeys { id }
            | MapClear { id } => id,
            _ => 0,
        };
        if id == 1 {
            return true;
        }
        stream = &stream[HEADER + len..];
    }
    false
}

fn handshake(s: &mut UnixStream, secret: &auth::Secret) -> bool {
    let read = |s: &mut UnixStream| -> Option<Reply> {
        let mut header = [0; HEADER];
        s.read_exact(&mut header).ok()?;
        let mut body = vec![0; u32::from_le_bytes(header) as usize];
        s.read_exact(&mut body).ok()?;
        postcard::from_bytes(&body).ok()
    };
    let nc = [1; 32];
    if s.write_all(&framed(&Request::Hello { nonce: nc })).is_err() {
        return false;
    }
    let Some(Reply::Challenge { nonce: ns, .. }) = read(s) else { return false };
    s.write_all(&framed(&Request::Proof { proof: auth::client_proof(secret, &ns, &nc) })).is_ok()
        && matches!(read(s), Some(Reply::Done))
}

#[test]
fn the_manager_survives_mutated_and_generated_frames() {
    let seed = env_or("STEALPOOL_FUZZ_SEED", 0x5eed_1234);
    let rounds = env_or("STEALPOOL_FUZZ_ROUNDS", DEFAULT_ROUNDS);
    let budget = Duration::from_secs(env_or("STEALPOOL_FUZZ_SECS", DEFAULT_BUDGET.as_secs()));
    let mut rng = Rng(seed | 1);
    let manager = Manager::new().unwrap();
    let probe = manager.queue::<u64>().unwrap();
    assert_eq!(probe.handle.id, 1);
    // Objects of every kind for the frames to hit.
    let objects = 12;
    for i in 0..objects {
        let kind = [
            Kind::Queue { maxsize: None },
            Kind::Queue { maxsize: Some(2) },
            Kind::Lock,
            Kind::Semaphore { permits: 2 },
            Kind::Event,
            Kind::Barrier { parties: 2 },
            Kind::Map,
        ][i as usize % 7];
        manager.create(kind).unwrap();
    }
    let addr = manager.address.socket_addr().unwrap();
    let secret = manager.address.secret;
    let started = Instant::now();
    let mut done = 0;
    while done < rounds && started.elapsed() < budget {
        let mut s = UnixStream::connect_addr(&addr).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let authenticated = rng.below(4) != 0 && handshake(&mut s, &secret);
        s.set_nonblocking(true).unwrap();
        let mut sent = Vec::new();
        for _ in 0..=rng.below(6) {
            let f = if authenticated || rng.below(2) == 0 {
                frame(&mut rng, objects)
            } else {
                // Before authentication: a mutated or a made-up handshake frame.
                let mut f = framed(&Request::Hello { nonce: [rng.next() as u8; 32] });
                let i = rng.below(f.len() as u64) as usize;
                f[i] = rng.next() as u8;
                if rng.below(3) == 0 {
                    f = rng.some_bytes(600);
                }
                f
            };
            let len = sent.len();
            sent.extend_from_slice(&f);
            if authenticated && touches_probe(&sent) {
                sent.truncate(len);
                continue;
            }
            // The server may have closed already; a full socket is as good as sent.
            if s.write_all(&f).is_err() {
                break;
            }
        }
        // Read some of what came back (or not), then leave.
        let mut sink = [0u8; 4096];
        if rng.below(2) == 0 {
            let _ = s.read(&mut sink);
        }
        drop(s);
        done += 1;
        if done % 32 == 0 {
            probe.put(done).unwrap();
            assert_eq!(probe.get_timeout(LONG), Ok(done), "the manager stopped serving after {done} rounds");
        }
    }
    probe.put(u64::MAX).unwrap();
    assert_eq!(probe.get_timeout(LONG), Ok(u64::MAX));
    assert_eq!(manager.queue::<u8>().map(|q| q.len()), Ok(Ok(0)));
    eprintln!("fuzz: {done} rounds in {:?} (seed {seed:#x})", started.elapsed());
}
