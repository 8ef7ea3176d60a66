//! Shared setup for session tests: two real identities and a real handshake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use hush_core::Session;
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub struct Pair {
    pub rng: ChaCha20Rng,
    pub alice_id: IdentityKeyPair,
    pub bob_id: IdentityKeyPair,
    pub bob_prekeys: DevicePrekeys,
    pub alice: Session,
    pub bob: Session,
}

/// Bob publishes prekeys; Alice initiates; Bob accepts Alice's first message; Bob replies once
/// so both sides have completed a DH step.
pub fn established(seed: u64) -> Pair {
    let mut p = handshaken(seed, true);
    let reply = p.bob.encrypt(&mut p.rng, b"reply").unwrap();
    assert_eq!(p.alice.decrypt(&reply).unwrap(), b"reply");
    p
}

/// Like [`established`] but without Bob's reply: Alice is still sending prekey messages.
pub fn handshaken(seed: u64, one_time: bool) -> Pair {
    let (rng, alice_id, bob_id, mut bob_prekeys, alice, first) = start(seed, one_time);
    let (bob, pt) = Session::accept(&bob_id, &mut bob_prekeys, &first).unwrap();
    assert_eq!(pt, b"first");
    Pair { rng, alice_id, bob_id, bob_prekeys, alice, bob }
}

/// The exact first message `handshaken(seed, one_time)` delivers (everything is seeded), for
/// replaying it.
pub fn first_message(seed: u64, one_time: bool) -> Vec<u8> {
    start(seed, one_time).5
}

/// Bob publishes prekeys; Alice initiates and encrypts her first message.
fn start(
    seed: u64,
    one_time: bool,
) -> (ChaCha20Rng, IdentityKeyPair, IdentityKeyPair, DevicePrekeys, Session, Vec<u8>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut bob_prekeys = DevicePrekeys::new();
    bob_prekeys.generate_signed_prekey(&mut rng, &bob_id, 1_700_000_000);
    bob_prekeys.generate_one_time_prekeys(&mut rng, 2);
    bob_prekeys.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::OneTime, 2);
    bob_prekeys.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::LastResort, 1);
    let bundle = bob_prekeys.bundle(&bob_id, one_time).unwrap().verify().unwrap();
    let mut alice = Session::initiate(&mut rng, &alice_id, &bundle).unwrap();
    let first = alice.encrypt(&mut rng, b"first").unwrap();
    (rng, alice_id, bob_id, bob_prekeys, alice, first)
}
