//! A bounded stand-in for `fuzz/fuzz_targets/decode_message.rs` that runs on stable in CI:
//! a few seconds of random and mutated inputs through the decoder. It checks that decoding
//! never panics, that every error maps to a NOTIFICATION that itself encodes and decodes,
//! and that whatever decodes re-encodes to bytes that decode again.
//!
//! Inputs: the captured vectors of `capture/msgs.txt` (see vectors.rs), mutated by bit flips,
//! byte overwrites, truncation, insertion, deletion and splicing, with the header length
//! fixed up half of the time so mutations reach the body parsers; plus random bodies under a
//! valid header. The RNG is seeded, so a failure reproduces.

mod common;

use std::time::{Duration, Instant};

use bgp::packet::*;
use common::{ctx2, ctx4, enc, hex};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    include_str!("capture/msgs.txt")
        .lines()
        .map(|l| hex(l.rsplit(' ').next().unwrap()))
        .collect()
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(len + 1)),
            3 => {
                let i = rng.below(len + 1);
                b.insert(i, rng.next() as u8);
            }
            4 if len > 0 => {
                b.remove(rng.below(len));
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let at = rng.below(len + 1);
                let tail = b.split_off(at);
                b.extend_from_slice(&other[from..]);
                b.extend_from_slice(&tail);
            }
            _ if len > 19 => {
                // Interesting values in the body: lengths, flags, type codes.
                let i = 19 + rng.below(len - 19);
                b[i] = [0, 1, 2, 3, 4, 0x0f, 0x10, 0x40, 0x80, 0xc0, 0xff][rng.below(11)];
            }
            _ => {}
        }
    }
    if rng.below(2) == 0 && b.len() >= 19 {
        let l = (b.len().min(0xffff) as u16).to_be_bytes();
        b[16..18].copy_from_slice(&l);
    }
    b
}

fn random_message(rng: &mut Rng) -> Vec<u8> {
    let body_len = rng.below(200);
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
    b.push(1 + rng.below(5) as u8);
    b.extend((0..body_len).map(|_| rng.next() as u8));
    b
}

fn check(input: &[u8], stats: &mut [usize; 2]) {
    let ext = DecodeContext {
        extended_messages: true,
        ..ctx4()
    };
    for ctx in [ctx4(), ctx2(), ext] {
        let _ = frame_len(input, &ctx);
        match Message::decode(input, &ctx) {
            Err(e) => {
                stats[1] += 1;
                let n = Notification::from(&e);
                assert!((1..=7).contains(&n.error.code()), "{e:?} → {n:?}");
                let wire = Message::Notification(n.clone()).encode(&EncodeContext::default());
                assert_eq!(
                    Message::decode(&wire, &ctx4()),
                    Ok(Message::Notification(n))
                );
            }
            Ok(m) => {
                stats[0] += 1;
                let wide = DecodeContext {
                    extended_messages: true,
                    ..ctx.clone()
                };
                let bytes = m.encode(&enc(&wide));
                let again = Message::decode(&bytes, &wide)
                    .unwrap_or_else(|e| panic!("{m:?} re-encoded to {bytes:02x?}: {e}"));
                assert_eq!(again.encode(&enc(&wide)), bytes, "{m:?}");
            }
        }
    }
}

#[test]
fn decoder_survives_random_and_mutated_input() {
    let corpus = corpus();
    let mut rng = Rng(0x007a_bb1e_5eed);
    // FUZZ_SMOKE_SECS / FUZZ_SMOKE_SEED let a developer run longer or elsewhere by hand.
    let secs = std::env::var("FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    if let Some(seed) = std::env::var("FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        rng = Rng(seed);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let max = if secs > 3 { usize::MAX } else { 300_000 };
    let mut stats = [0usize; 2];
    let mut n = 0;
    while n < max && Instant::now() < deadline {
        let input = if n % 4 == 0 {
            random_message(&mut rng)
        } else {
            mutate(&mut rng, &corpus)
        };
        check(&input, &mut stats);
        n += 1;
    }
    eprintln!("{n} inputs, {} decoded, {} rejected", stats[0], stats[1]);
    assert!(n > 1000, "only {n} inputs in the time budget");
    assert!(stats[0] > 0 && stats[1] > 0, "{stats:?}");
}
