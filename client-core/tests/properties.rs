//! Property tests on real sessions: random interleavings of sends in both directions with loss,
//! reordering, duplication, bit flips and save/restore at random points; and every decoder on
//! arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::needless_range_loop)]

mod common;

use std::collections::HashSet;

use hush_core::message::Incoming;
use hush_core::ratchet::MAX_PREVIOUS_RATCHET_KEYS;
use hush_core::{Session, SessionError, message};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Side 0 = Alice, 1 = Bob.
    Send(usize),
    /// Deliver the in-flight message at this (wrapped) index to the other side.
    Deliver(usize, usize),
    /// Lose it.
    Drop(usize, usize),
    /// Deliver an already delivered message again.
    Duplicate(usize, usize),
    /// Deliver a copy with one bit flipped.
    Flip(usize, usize, usize),
    /// Serialize and restore a side.
    SaveRestore(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let side = 0..2usize;
    prop_oneof![
        4 => side.clone().prop_map(Op::Send),
        4 => (side.clone(), any::<usize>()).prop_map(|(s, i)| Op::Deliver(s, i)),
        1 => (side.clone(), any::<usize>()).prop_map(|(s, i)| Op::Drop(s, i)),
        1 => (side.clone(), any::<usize>()).prop_map(|(s, i)| Op::Duplicate(s, i)),
        1 => (side.clone(), any::<usize>(), any::<usize>()).prop_map(|(s, i, b)| Op::Flip(s, i, b)),
        1 => side.prop_map(Op::SaveRestore),
    ]
}

struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
}

fn ratchet_key(bytes: &[u8]) -> [u8; 32] {
    match message::decode(bytes).unwrap() {
        Incoming::Message(m) | Incoming::PreKey { message: m, .. } => m.header.ratchet_key,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sessions_survive_any_schedule(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..120)) {
        let mut p = common::handshaken(seed, seed % 2 == 0);
        let mut counter = 0u32;
        // in_flight[s]: messages sent by side s, not yet delivered or lost.
        let mut in_flight: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
        let mut delivered: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
        let mut seen: [HashSet<Vec<u8>>; 2] = [HashSet::new(), HashSet::new()];
        // chains[s]: side s's ratchet keys in the order the other side first accepted them; the
        // receiver remembers the current one and the MAX_PREVIOUS_RATCHET_KEYS before it.
        let mut chains: [Vec<[u8; 32]>; 2] = [Vec::new(), Vec::new()];
        for op in ops {
            match op {
                Op::Send(s) => {
                    // Bob can always send (he accepted); Alice always can (she initiated).
                    counter += 1;
                    let plaintext = format!("{s}:{counter}").into_bytes();
                    let (sender, rng) = if s == 0 { (&mut p.alice, &mut p.rng) } else { (&mut p.bob, &mut p.rng) };
                    let bytes = sender.encrypt(rng, &plaintext).unwrap();
                    in_flight[s].push(InFlight { bytes, plaintext });
                }
                Op::Deliver(s, i) if !in_flight[s].is_empty() => {
                    let m = in_flight[s].remove(i % in_flight[s].len());
                    let receiver = if s == 0 { &mut p.bob } else { &mut p.alice };
                    let got = receiver.decrypt(&m.bytes);
                    prop_assert_eq!(got.as_deref(), Ok(m.plaintext.as_slice()));
                    prop_assert!(seen[s].insert(m.plaintext.clone()), "delivered twice");
                    let key = ratchet_key(&m.bytes);
                    if !chains[s].contains(&key) {
                        chains[s].push(key);
                    }
                    delivered[s].push(m);
                }
                Op::Drop(s, i) if !in_flight[s].is_empty() => {
                    let n = in_flight[s].len();
                    in_flight[s].remove(i % n);
                }
                Op::Duplicate(s, i) if !delivered[s].is_empty() => {
                    let m = &delivered[s][i % delivered[s].len()];
                    let receiver = if s == 0 { &mut p.bob } else { &mut p.alice };
                    let before = receiver.to_bytes();
                    // A replay on a remembered chain is classified as a duplicate; one from an
                    // older chain looks like a new ratchet key and fails its tag (PROTOCOL.md
                    // §8.5). Either way the state is untouched.
                    let key = ratchet_key(&m.bytes);
                    let age = chains[s].iter().rev().position(|k| *k == key).unwrap();
                    let expected = if age <= MAX_PREVIOUS_RATCHET_KEYS {
                        SessionError::Duplicate
                    } else {
                        SessionError::DecryptionFailed
                    };
                    prop_assert_eq!(receiver.decrypt(&m.bytes), Err(expected));
                    prop_assert_eq!(&*receiver.to_bytes(), &*before);
                }
                Op::Flip(s, i, bit) if !in_flight[s].is_empty() => {
                    let m = &in_flight[s][i % in_flight[s].len()];
                    let mut bad = m.bytes.clone();
                    let bit = bit % (bad.len() * 8);
                    bad[bit / 8] ^= 1 << (bit % 8);
                    let receiver = if s == 0 { &mut p.bob } else { &mut p.alice };
                    let before = receiver.to_bytes();
                    prop_assert!(receiver.decrypt(&bad).is_err(), "flipped bit {} accepted", bit);
                    prop_assert_eq!(&*receiver.to_bytes(), &*before, "state changed by flip");
                }
                Op::SaveRestore(s) => {
                    let side = if s == 0 { &mut p.alice } else { &mut p.bob };
                    let state = side.to_bytes();
                    *side = Session::from_bytes(&state).unwrap();
                    prop_assert_eq!(&*side.to_bytes(), &*state);
                }
                _ => {}
            }
        }
        // Whatever happened, everything still in flight decrypts, and the sessions still talk.
        for s in 0..2 {
            for m in std::mem::take(&mut in_flight[s]) {
                let receiver = if s == 0 { &mut p.bob } else { &mut p.alice };
                let got = receiver.decrypt(&m.bytes);
                prop_assert_eq!(got.as_deref(), Ok(m.plaintext.as_slice()));
            }
        }
        let m = p.alice.encrypt(&mut p.rng, b"end").unwrap();
        prop_assert_eq!(p.bob.decrypt(&m).unwrap(), b"end");
        let m = p.bob.encrypt(&mut p.rng, b"end").unwrap();
        prop_assert_eq!(p.alice.decrypt(&m).unwrap(), b"end");
    }

    #[test]
    fn message_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = message::decode(&bytes);
    }

    #[test]
    fn message_decoder_survives_mutations_of_valid_messages(
        seed in any::<u64>(),
        cut in any::<usize>(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    ) {
        let mut p = common::handshaken(seed, true);
        let mut m = p.alice.encrypt(&mut p.rng, b"payload").unwrap();
        for (at, x) in flips {
            let len = m.len();
            m[at % len] ^= x;
        }
        m.truncate(cut % (m.len() + 1));
        let _ = message::decode(&m);
        let _ = p.bob.decrypt(&m);
        let _ = Session::accept(&p.bob_id, &mut p.bob_prekeys, &m);
    }

    #[test]
    fn session_state_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Session::from_bytes(&bytes);
    }

    #[test]
    fn session_state_decoder_survives_mutations(seed in any::<u64>(), at in any::<usize>(), x in 1..=255u8, cut in any::<usize>()) {
        let p = common::established(seed);
        let mut state = p.bob.to_bytes().to_vec();
        let len = state.len();
        state[at % len] ^= x;
        let _ = Session::from_bytes(&state);
        state.truncate(cut % (len + 1));
        let _ = Session::from_bytes(&state);
    }
}
