//! Every public-key-material decoder on arbitrary and mutated bytes: typed error or value, never
//! a panic. A mutated bundle must never verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_prekeys::codec::Reader;
use hush_prekeys::{
    DevicePrekeys, IdentityKey, IdentityKeyPair, InitialHeader, KemPreKey, KemPreKeyKind,
    OneTimePreKey, PreKeyBundle, SignedPreKey,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn bundle_bytes(seed: u64, one_time: bool) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let id = IdentityKeyPair::generate(&mut rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(&mut rng, &id, 1);
    pk.generate_one_time_prekeys(&mut rng, 1);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::OneTime, 1);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::LastResort, 1);
    pk.bundle(&id, one_time).unwrap().encode()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = PreKeyBundle::decode(&bytes).map(PreKeyBundle::verify);
        let _ = IdentityKey::decode_signed(&bytes);
        let _ = SignedPreKey::decode(&bytes);
        let _ = OneTimePreKey::decode(&bytes);
        let _ = KemPreKey::decode(&bytes);
        let _ = InitialHeader::read(&mut Reader::new(&bytes));
        let _ = DevicePrekeys::from_state_bytes(&bytes);
        let _ = IdentityKeyPair::from_state_bytes(&bytes);
    }

    #[test]
    fn mutated_bundles_never_verify(seed in 0..4u64, one_time in any::<bool>(), at in any::<usize>(), x in 1..=255u8) {
        let mut b = bundle_bytes(seed, one_time);
        let len = b.len();
        b[at % len] ^= x;
        let result = PreKeyBundle::decode(&b).and_then(PreKeyBundle::verify);
        // The one-time prekey is unsigned by design (X3DH); a change there decodes and verifies
        // but can only weaken the handshake to the signed prekey's strength (see PROTOCOL.md).
        let opk = 1 + 128 + 108 + 1;
        if one_time && (opk..opk + 36).contains(&(at % len)) {
            return Ok(());
        }
        prop_assert!(result.is_err(), "mutated bundle verified (byte {})", at % len);
    }

    #[test]
    fn truncated_bundles_are_invalid_length(seed in 0..4u64, cut in any::<usize>()) {
        let b = bundle_bytes(seed, true);
        let cut = cut % b.len();
        let err = PreKeyBundle::decode(&b[..cut]).unwrap_err();
        prop_assert_eq!(err.code(), "invalid_length");
    }
}

#[test]
fn bundle_errors_are_typed() {
    let good = bundle_bytes(1, true);
    let verified = PreKeyBundle::decode(&good).unwrap().verify().unwrap();
    assert_eq!(verified.bundle().encode(), good);

    let mut bad_version = good.clone();
    bad_version[0] = 2;
    assert_eq!(PreKeyBundle::decode(&bad_version).unwrap_err().code(), "unsupported_version");

    let mut bad_sig = good.clone();
    let sig_at = 1 + 128 + 44; // first byte of the signed prekey's signature
    bad_sig[sig_at] ^= 1;
    let err = PreKeyBundle::decode(&bad_sig).unwrap().verify().unwrap_err();
    assert_eq!(err.code(), "bad_signature");

    let mut bad_flags = good.clone();
    bad_flags[1 + 128 + 108] = 0x03;
    assert_eq!(PreKeyBundle::decode(&bad_flags).unwrap_err().code(), "malformed");

    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(PreKeyBundle::decode(&extra).unwrap_err().code(), "invalid_length");

    // A KEM key that fails the FIPS 203 modulus check, correctly signed: rejected as invalid.
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let id = IdentityKeyPair::generate(&mut rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(&mut rng, &id, 1);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::LastResort, 1);
    let mut bundle = pk.bundle(&id, false).unwrap();
    bundle.kem_prekey.public[..2].copy_from_slice(&[0xFF, 0xFF]);
    bundle.kem_prekey.signature = id.sign(&KemPreKey::signed_message(
        bundle.kem_prekey.id,
        bundle.kem_prekey.kind,
        &bundle.kem_prekey.public,
    ));
    assert_eq!(bundle.verify().unwrap_err().code(), "invalid_key");
}
