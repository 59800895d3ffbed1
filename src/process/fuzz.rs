//! Protocol fuzzing of the worker protocol, on stable Rust: mutated real frames and generated
//! ones go through every decoder the two sides run on the other's bytes (the framing reader,
//! the header decoders, batch unpacking, the worker's frame sorting), which must return errors
//! and never panic. A fixed seed makes a failure repeatable.
//!
//! CI runs a bounded number of cases; for a longer run:
//! `STEALPOOL_FUZZ_CASES=2000000 STEALPOOL_FUZZ_SEED=<n> cargo test --lib process::fuzz -- --nocapture`.
//! The live half (a worker that sends garbage while the pool serves others) is in
//! `tests/process_hardening.rs`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use crate::fuzzing::{Rng, env_or as env};
use crate::ipc::{Blocking, FrameError, Reader};
use crate::process::protocol::{self, FromWorker, InputLayout, Status, ToWorker};

/// Real frames of both directions, as the two sides build them.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (id, mode, code) in
        [(1, InputLayout::One, "a::b"), (u64::MAX >> 2, InputLayout::Many, "tests::square"), (7, InputLayout::One, "")]
    {
        out.push(protocol::append(&(3u64, "input"), protocol::task_frame(id, mode, code, 16)).unwrap());
    }
    out.push(protocol::skip_frame(42));
    let mut batch = Vec::new();
    protocol::batch_start(&mut batch);
    protocol::batch_push(&mut batch, &out[0]);
    protocol::batch_push(&mut batch, &protocol::skip_frame(9));
    out.push(batch);
    let mut buf = Vec::new();
    for header in [
        FromWorker::Ready { pid: 1234, init_error: None },
        FromWorker::Ready { pid: 1, init_error: Some("boom") },
        FromWorker::Done { id: 3, status: Status::Ok, busy_ns: 50_000 },
        FromWorker::Done { id: u64::MAX, status: Status::Panicked, busy_ns: u64::MAX },
        FromWorker::Skipped { id: 8 },
    ] {
        protocol::reply_frame(&header, b"body bytes", &mut buf);
        out.push(buf.clone());
    }
    // A reply batch of a `Done` and a `Skipped`, as a worker whose pool is behind sends.
    let mut batch = Vec::new();
    protocol::reply_frame(&FromWorker::Batch, &[], &mut batch);
    protocol::batch_push(&mut batch, &out[out.len() - 3]);
    protocol::batch_push(&mut batch, &out[out.len() - 1]);
    out.push(batch);
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    for _ in 0..=rng.index(4) {
        match rng.index(7) {
            0 if !f.is_empty() => {
                let i = rng.index(f.len());
                f[i] ^= 1 << rng.index(8);
            }
            1 if !f.is_empty() => {
                let i = rng.index(f.len());
                f[i] = [0, 0x7f, 0x80, 0xff][rng.index(4)];
            }
            2 => f.truncate(rng.index(f.len() + 1)),
            3 => f.extend((0..rng.index(32)).map(|_| rng.next() as u8)),
            4 if !f.is_empty() => {
                // A varint run that never ends, or one that claims a huge length.
                let i = rng.index(f.len());
                for b in f.iter_mut().skip(i).take(10) {
                    *b = 0xff;
                }
            }
            5 => {
                let i = rng.index(f.len() + 1);
                f.splice(i..i, (0..rng.index(16)).map(|_| rng.next() as u8));
            }
            _ => f = (0..rng.index(64)).map(|_| rng.next() as u8).collect(),
        }
    }
    f
}

/// Everything either side decodes from the other's bytes; must not panic.
fn decode_all(frame: &[u8]) {
    if let Ok((ToWorker::Batch, body)) = protocol::split::<ToWorker<'_>>(frame) {
        for inner in protocol::batch_frames(body) {
            let _ = protocol::split::<ToWorker<'_>>(inner);
        }
    }
    if let Ok((FromWorker::Batch, body)) = protocol::split::<FromWorker<'_>>(frame)
        && let Ok(replies) = protocol::reply_batch(body)
    {
        for reply in replies {
            let _ = protocol::split::<FromWorker<'_>>(reply);
        }
    }
    crate::process::worker::sort_for_fuzzing(frame);
}

#[test]
fn decoders_return_errors_on_mutated_and_generated_frames() {
    let cases = env("STEALPOOL_FUZZ_CASES", 50_000);
    let mut rng = Rng(env("STEALPOOL_FUZZ_SEED", 0x5713_a1b0_0c13_0013) | 1);
    let corpus = corpus();
    for seed in &corpus {
        decode_all(seed);
    }
    for _ in 0..cases {
        let pick = rng.index(corpus.len());
        decode_all(&mutate(&mut rng, &corpus[pick]));
    }
}

fn pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    // SAFETY: socketpair just created both descriptors; each is owned once.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn raw(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length.
    unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
}

/// The framing reader on records that are mutated real framings, followed by end of file:
/// every frame read is decoded, anything else fails as a violation (or reads as end of file);
/// the reader never panics, never blocks past end of file and never reserves by a length the
/// peer only claimed.
#[test]
fn the_framing_reader_survives_mutated_records() {
    let cases = env("STEALPOOL_FUZZ_CASES", 50_000) / 10;
    let mut rng = Rng(env("STEALPOOL_FUZZ_SEED", 0x0bad_f00d_dead_beef) | 1);
    let corpus = corpus();
    for _ in 0..cases {
        let (tx, rx) = pair();
        for _ in 0..=rng.index(3) {
            let pick = rng.index(corpus.len());
            let body = mutate(&mut rng, &corpus[pick]);
            let mut record = (body.len() as u64).to_le_bytes().to_vec();
            record.extend_from_slice(&body);
            let record = if rng.index(4) == 0 { record } else { mutate(&mut rng, &record) };
            raw(&tx, &record);
        }
        drop(tx);
        let mut reader = Reader::new(rx, 1 << 20);
        loop {
            match reader.recv(Blocking::Yes) {
                Ok(Some(frame)) => decode_all(frame),
                Ok(None) => unreachable!("a waiting read returns a frame or an error"),
                Err(FrameError::Violation(_) | FrameError::Truncated(_) | FrameError::Closed) => break,
                Err(FrameError::Io(e)) => panic!("unexpected {e}"),
            }
        }
    }
}
