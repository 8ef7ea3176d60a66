//! Behaviour of real sessions over the real handshake: delivery, ordering, limits, replays,
//! tampering and persistence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, first_message, handshaken};
use hush_core::ratchet::{MAX_PREVIOUS_RATCHET_KEYS, MAX_SKIP, MAX_SKIPPED_KEYS};
use hush_core::{Role, Session, SessionError};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn both_directions_with_dh_steps() {
    let mut p = established(1);
    for round in 0..5u8 {
        for i in 0..3u8 {
            let m = p.alice.encrypt(&mut p.rng, &[round, i, 0]).unwrap();
            assert_eq!(p.bob.decrypt(&m).unwrap(), [round, i, 0]);
        }
        let m = p.bob.encrypt(&mut p.rng, &[round, 1]).unwrap();
        assert_eq!(p.alice.decrypt(&m).unwrap(), [round, 1]);
    }
    assert_eq!(p.alice.role(), Role::Initiator);
    assert_eq!(p.bob.role(), Role::Responder);
    assert_eq!(p.alice.remote_identity(), p.bob_id.public().to_bytes());
    assert_eq!(p.bob.remote_identity(), p.alice_id.public().to_bytes());
}

#[test]
fn initiator_sends_prekey_messages_until_it_hears_back() {
    let mut p = handshaken(2, true);
    assert!(p.alice.is_pending());
    let second = p.alice.encrypt(&mut p.rng, b"second").unwrap();
    assert_eq!(second[1], hush_core::message::TYPE_PREKEY);
    // Bob already has the session: the repeated handshake routes to it.
    assert_eq!(p.bob.decrypt(&second).unwrap(), b"second");
    let reply = p.bob.encrypt(&mut p.rng, b"ok").unwrap();
    p.alice.decrypt(&reply).unwrap();
    assert!(!p.alice.is_pending());
    let third = p.alice.encrypt(&mut p.rng, b"third").unwrap();
    assert_eq!(third[1], hush_core::message::TYPE_MESSAGE);
    assert_eq!(p.bob.decrypt(&third).unwrap(), b"third");
}

#[test]
fn responder_can_start_from_a_later_prekey_message() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut prekeys = DevicePrekeys::new();
    prekeys.generate_signed_prekey(&mut rng, &bob_id, 1);
    prekeys.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::LastResort, 1);
    let bundle = prekeys.bundle(&bob_id, false).unwrap().verify().unwrap();
    let mut alice = Session::initiate(&mut rng, &alice_id, &bundle).unwrap();
    let m0 = alice.encrypt(&mut rng, b"zero").unwrap();
    let m1 = alice.encrypt(&mut rng, b"one").unwrap();
    // m0 was lost or delayed; m1 starts the session.
    let (mut bob, pt) = Session::accept(&bob_id, &mut prekeys, &m1).unwrap();
    assert_eq!(pt, b"one");
    assert_eq!(bob.decrypt(&m0).unwrap(), b"zero");
    assert_eq!(bob.decrypt(&m0).unwrap_err(), SessionError::Duplicate);
}

#[test]
fn replayed_initial_message_never_creates_a_second_session() {
    // With one-time prekeys: the replay is caught by the remembered base key (and the one-time
    // keys are gone anyway).
    let mut p = handshaken(4, true);
    let replay = first_message(4, true);
    let err = Session::accept(&p.bob_id, &mut p.bob_prekeys, &replay).unwrap_err();
    assert_eq!(err.code(), "replayed_handshake");

    // Without a one-time X25519 prekey (last-resort KEM key): the base key is remembered.
    let mut p = handshaken(5, false);
    let replay = first_message(5, false);
    let err = Session::accept(&p.bob_id, &mut p.bob_prekeys, &replay).unwrap_err();
    assert_eq!(err.code(), "replayed_handshake");
    // Routed to the existing session instead, it is a duplicate.
    assert_eq!(p.bob.decrypt(&replay).unwrap_err().code(), "duplicate_message");
}

#[test]
fn a_repeated_prekey_message_must_match_the_handshake_byte_for_byte() {
    let mut p = handshaken(19, true);
    let second = p.alice.encrypt(&mut p.rng, b"second").unwrap();
    // Flip a bit in the KEM ciphertext of the (otherwise unused) repeated header.
    let mut bad = second.clone();
    bad[2 + 128 + 32 + 4 + 1 + 4 + 4 + 10] ^= 1;
    assert_eq!(p.bob.decrypt(&bad).unwrap_err().code(), "session_mismatch");
    assert_eq!(p.bob.decrypt(&second).unwrap(), b"second");
}

#[test]
fn failed_first_message_consumes_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut prekeys = DevicePrekeys::new();
    prekeys.generate_signed_prekey(&mut rng, &bob_id, 1);
    prekeys.generate_one_time_prekeys(&mut rng, 1);
    prekeys.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::OneTime, 1);
    let before = prekeys.to_state_bytes();
    let bundle = prekeys.bundle(&bob_id, true).unwrap().verify().unwrap();
    let mut alice = Session::initiate(&mut rng, &alice_id, &bundle).unwrap();
    let mut m = alice.encrypt(&mut rng, b"hello").unwrap();
    let last = m.len() - 1;
    m[last] ^= 1;
    let err = Session::accept(&bob_id, &mut prekeys, &m).unwrap_err();
    assert_eq!(err, SessionError::DecryptionFailed);
    assert_eq!(*prekeys.to_state_bytes(), *before, "prekey state changed by a failed accept");
    m[last] ^= 1;
    let (_, pt) = Session::accept(&bob_id, &mut prekeys, &m).unwrap();
    assert_eq!(pt, b"hello");
    assert_eq!(prekeys.one_time_prekey_count(), 0);
    assert_eq!(prekeys.one_time_kem_prekey_count(), 0);
}

#[test]
fn out_of_order_within_and_across_chains() {
    let mut p = established(7);
    let a: Vec<_> = (0..5u8).map(|i| p.alice.encrypt(&mut p.rng, &[i]).unwrap()).collect();
    // Deliver 4, 0, 2 on the current chain.
    for i in [4usize, 0, 2] {
        assert_eq!(p.bob.decrypt(&a[i]).unwrap(), [i as u8]);
    }
    assert_eq!(p.bob.skipped_key_count(), 2);
    // Bob replies; Alice steps; her new chain arrives before the old stragglers.
    let r = p.bob.encrypt(&mut p.rng, b"r").unwrap();
    p.alice.decrypt(&r).unwrap();
    let b0 = p.alice.encrypt(&mut p.rng, b"new chain").unwrap();
    assert_eq!(p.bob.decrypt(&b0).unwrap(), b"new chain");
    assert_eq!(p.bob.decrypt(&a[3]).unwrap(), [3]);
    assert_eq!(p.bob.decrypt(&a[1]).unwrap(), [1]);
    assert_eq!(p.bob.skipped_key_count(), 0);
    for m in &a {
        assert_eq!(p.bob.decrypt(m).unwrap_err(), SessionError::Duplicate);
    }
}

#[test]
fn messages_from_an_old_chain_whose_pn_was_announced_are_still_readable() {
    let mut p = established(8);
    let old: Vec<_> = (0..3u8).map(|i| p.alice.encrypt(&mut p.rng, &[i]).unwrap()).collect();
    // Bob gets only old[0], replies; Alice's next message announces pn = 3.
    p.bob.decrypt(&old[0]).unwrap();
    let r = p.bob.encrypt(&mut p.rng, b"r").unwrap();
    p.alice.decrypt(&r).unwrap();
    let new = p.alice.encrypt(&mut p.rng, b"n").unwrap();
    p.bob.decrypt(&new).unwrap();
    assert_eq!(p.bob.skipped_key_count(), 2);
    assert_eq!(p.bob.decrypt(&old[2]).unwrap(), [2]);
    assert_eq!(p.bob.decrypt(&old[1]).unwrap(), [1]);
}

#[test]
fn replays_are_duplicates_on_the_remembered_chains_and_fail_cleanly_beyond_them() {
    let mut p = established(11);
    // One message from Bob on each of his chains, each followed by a reply that makes him step.
    let mut from_bob = Vec::new();
    for round in 0..=MAX_PREVIOUS_RATCHET_KEYS + 1 {
        let m = p.bob.encrypt(&mut p.rng, &[round as u8]).unwrap();
        assert_eq!(p.alice.decrypt(&m).unwrap(), [round as u8]);
        from_bob.push(m);
        let reply = p.alice.encrypt(&mut p.rng, b"ack").unwrap();
        p.bob.decrypt(&reply).unwrap();
    }
    // from_bob[0] is on the chain now MAX_PREVIOUS_RATCHET_KEYS + 1 steps back.
    let before = p.alice.to_bytes();
    assert_eq!(p.alice.decrypt(&from_bob[0]), Err(SessionError::DecryptionFailed));
    for m in &from_bob[1..] {
        assert_eq!(p.alice.decrypt(m), Err(SessionError::Duplicate));
    }
    assert_eq!(&*p.alice.to_bytes(), &*before);
    let m = p.bob.encrypt(&mut p.rng, b"still talking").unwrap();
    assert_eq!(p.alice.decrypt(&m).unwrap(), b"still talking");
}

#[test]
fn skip_limit_is_a_typed_error_and_changes_nothing() {
    let mut p = established(9);
    let mut last = Vec::new();
    // MAX_SKIP + 2 messages: the last one skips MAX_SKIP + 1 keys.
    for _ in 0..=MAX_SKIP + 1 {
        last = p.alice.encrypt(&mut p.rng, b"x").unwrap();
    }
    let before = p.bob.to_bytes();
    let err = p.bob.decrypt(&last).unwrap_err();
    assert_eq!(err.code(), "too_far_ahead");
    assert_eq!(*p.bob.to_bytes(), *before);
}

#[test]
fn a_jump_of_exactly_max_skip_is_accepted_and_storage_stays_bounded() {
    let mut p = established(10);
    let mut msgs = Vec::new();
    for i in 0..=MAX_SKIP {
        msgs.push(p.alice.encrypt(&mut p.rng, &i.to_be_bytes()).unwrap());
    }
    let last = msgs.last().unwrap();
    assert_eq!(p.bob.decrypt(last).unwrap(), MAX_SKIP.to_be_bytes());
    assert_eq!(p.bob.skipped_key_count(), MAX_SKIPPED_KEYS);
    // The newest skipped keys were kept, the oldest dropped.
    let newest = &msgs[MAX_SKIP as usize - 1];
    assert_eq!(p.bob.decrypt(newest).unwrap(), (MAX_SKIP - 1).to_be_bytes());
    assert_eq!(p.bob.decrypt(&msgs[0]).unwrap_err(), SessionError::Duplicate);
    let boundary = MAX_SKIP as usize - MAX_SKIPPED_KEYS;
    assert!(p.bob.decrypt(&msgs[boundary]).is_ok());
    assert_eq!(p.bob.decrypt(&msgs[boundary - 1]).unwrap_err(), SessionError::Duplicate);
}

#[test]
fn tampering_anywhere_is_rejected_and_state_is_untouched() {
    let mut p = established(11);
    let m = p.alice.encrypt(&mut p.rng, b"tamper with me").unwrap();
    let before = p.bob.to_bytes();
    for i in 0..m.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = m.clone();
            bad[i] ^= bit;
            assert!(p.bob.decrypt(&bad).is_err(), "flip at byte {i} accepted");
            assert_eq!(*p.bob.to_bytes(), *before, "state changed by flip at byte {i}");
        }
    }
    assert_eq!(p.bob.decrypt(&m).unwrap(), b"tamper with me");
}

#[test]
fn message_for_another_session_fails_cleanly() {
    let mut p = established(12);
    let mut q = established(13);
    let m = q.alice.encrypt(&mut q.rng, b"not for you").unwrap();
    let before = p.bob.to_bytes();
    assert!(p.bob.decrypt(&m).is_err());
    assert_eq!(*p.bob.to_bytes(), *before);
    let _ = p.alice.encrypt(&mut p.rng, b"fine").unwrap();
}

#[test]
fn size_limits() {
    let mut p = established(14);
    let max = vec![7u8; hush_core::message::MAX_PLAINTEXT_LEN];
    let m = p.alice.encrypt(&mut p.rng, &max).unwrap();
    assert_eq!(p.bob.decrypt(&m).unwrap(), max);
    let too_big = vec![7u8; hush_core::message::MAX_PLAINTEXT_LEN + 1];
    assert_eq!(p.alice.encrypt(&mut p.rng, &too_big).unwrap_err().code(), "too_large");
    let huge = vec![1u8; hush_core::message::MAX_MESSAGE_LEN + 1];
    assert_eq!(p.bob.decrypt(&huge).unwrap_err().code(), "too_large");
}

#[test]
fn garbage_gets_typed_errors() {
    let mut p = established(15);
    let cases: &[(&[u8], &str)] = &[
        (&[], "malformed_message"),
        (&[9, 1], "unsupported_version"),
        (&[1, 7, 0], "malformed_message"),
        (&[1, 1, 0, 0], "malformed_message"),
        (&[1, 2, 0, 0], "invalid_length"),
    ];
    for (bytes, code) in cases {
        assert_eq!(p.bob.decrypt(bytes).unwrap_err().code(), *code, "{bytes:?}");
    }
    let mut header_only = p.alice.encrypt(&mut p.rng, b"").unwrap();
    header_only.truncate(42 + 15);
    assert_eq!(p.bob.decrypt(&header_only).unwrap_err().code(), "malformed_message");
}

#[test]
fn save_and_restore_mid_conversation() {
    let mut p = established(16);
    let pending: Vec<_> = (0..3u8).map(|i| p.alice.encrypt(&mut p.rng, &[i]).unwrap()).collect();
    p.bob.decrypt(&pending[2]).unwrap();
    let alice_state = p.alice.to_bytes();
    let bob_state = p.bob.to_bytes();
    let mut alice = Session::from_bytes(&alice_state).unwrap();
    let mut bob = Session::from_bytes(&bob_state).unwrap();
    assert_eq!(*alice.to_bytes(), *alice_state);
    assert_eq!(*bob.to_bytes(), *bob_state);
    assert_eq!(bob.decrypt(&pending[0]).unwrap(), [0]);
    let r = bob.encrypt(&mut p.rng, b"after restore").unwrap();
    assert_eq!(alice.decrypt(&r).unwrap(), b"after restore");
    let a = alice.encrypt(&mut p.rng, b"and back").unwrap();
    assert_eq!(bob.decrypt(&a).unwrap(), b"and back");
}

#[test]
fn corrupt_state_is_rejected() {
    let p = established(17);
    let state = p.bob.to_bytes();
    let mut bad = state.to_vec();
    bad[0] = 2;
    assert_eq!(Session::from_bytes(&bad).unwrap_err().code(), "unsupported_state_version");
    for cut in [1, 10, state.len() - 1] {
        assert_eq!(Session::from_bytes(&state[..cut]).unwrap_err().code(), "corrupt_state");
    }
    let mut trailing = state.to_vec();
    trailing.push(0);
    assert_eq!(Session::from_bytes(&trailing).unwrap_err().code(), "corrupt_state");
    let mut bad_role = state.to_vec();
    bad_role[1] = 5;
    assert_eq!(Session::from_bytes(&bad_role).unwrap_err().code(), "corrupt_state");
}

#[test]
fn debug_output_never_contains_secrets() {
    let mut p = established(18);
    // Leave skipped keys in the state so every kind of secret is present.
    let _skipped = p.alice.encrypt(&mut p.rng, b"skipped").unwrap();
    let m = p.alice.encrypt(&mut p.rng, b"m").unwrap();
    p.bob.decrypt(&m).unwrap();
    assert_eq!(p.bob.skipped_key_count(), 1);
    let dbg = format!("{:?} {:?} {:?} {:?}", p.bob, p.alice, p.bob_prekeys, p.bob_id);
    // Structural: no byte arrays and no hex run longer than the 12-character public-key prefixes.
    let bytes = dbg.as_bytes();
    let array_like =
        bytes.windows(3).any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2] == b' ')
            && dbg.split(", ").any(|part| part.starts_with(|c: char| c.is_ascii_digit()));
    assert!(!array_like, "looks like a byte array: {dbg}");
    let longest_hex = dbg.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
    assert!(longest_hex <= 12, "long hex run in Debug output: {dbg}");
    // Specific: the root key (right after the fixed prefix of the state) is nowhere.
    let state = p.bob.to_bytes();
    let root = &state[1 + 1 + 128 + 32 + 1..][..32];
    assert!(!dbg.contains(&hex::encode(&root[..6])));
}

#[test]
fn forward_secrecy_a_later_state_cannot_read_earlier_messages() {
    let mut p = established(20);
    let m = p.alice.encrypt(&mut p.rng, b"secret").unwrap();
    assert_eq!(p.bob.decrypt(&m).unwrap(), b"secret");
    // An attacker who steals Bob's state now learns nothing about the message just read: its key
    // is gone, and the chain key has moved past it.
    let mut stolen = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    assert_eq!(stolen.decrypt(&m).unwrap_err(), SessionError::Duplicate);
    // Not even from an older, not-yet-delivered message's perspective: deliver one in order,
    // steal, then the stolen copy can't re-read it.
    let m2 = p.alice.encrypt(&mut p.rng, b"second").unwrap();
    p.bob.decrypt(&m2).unwrap();
    let mut stolen = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    assert!(stolen.decrypt(&m2).is_err());
}

#[test]
fn a_dh_ratchet_step_heals_after_a_compromise() {
    let mut p = established(21);
    // The attacker copies Bob's full state (all keys) at this moment...
    let mut attacker = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    // ...and can read what Alice sends on the current chain.
    let m = p.alice.encrypt(&mut p.rng, b"exposed").unwrap();
    assert_eq!(attacker.decrypt(&m).unwrap(), b"exposed");
    p.bob.decrypt(&m).unwrap();
    // Bob replies (new ratchet key from fresh randomness the attacker doesn't have); Alice
    // answers on a chain derived from a DH the attacker cannot compute.
    let r = p.bob.encrypt(&mut p.rng, b"reply").unwrap();
    p.alice.decrypt(&r).unwrap();
    let healed = p.alice.encrypt(&mut p.rng, b"healed").unwrap();
    assert_eq!(p.bob.decrypt(&healed).unwrap(), b"healed");
    // The attacker's copy, fed the same traffic, is locked out.
    let mut attacker_rng = ChaCha20Rng::seed_from_u64(999);
    let _ = attacker.encrypt(&mut attacker_rng, b"x"); // its own (useless) sending step
    assert!(attacker.decrypt(&healed).is_err());
}
