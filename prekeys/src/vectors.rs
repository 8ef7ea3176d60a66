//! Known-answer test vectors for bundles and the handshake (test-vectors/*.json).
//!
//! The vectors are generated from fixed seeds and committed; this test regenerates them and
//! requires a byte-for-byte match. Every secret input is listed explicitly so a peer in another
//! language can reproduce every output without our RNG. Regenerate deliberately with
//! `HUSH_REGENERATE_VECTORS=1 cargo test -p hush-prekeys vectors`.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::handshake::initiate_with;
use crate::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind, PreKeyBundle};

pub(crate) fn check_or_write(name: &str, value: &Value) {
    let path = format!("{}/../test-vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("HUSH_REGENERATE_VECTORS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{name} differs from what the code produces; if the change is intended, regenerate with \
         HUSH_REGENERATE_VECTORS=1 and bump the relevant version"
    );
}

fn identity_json(id: &IdentityKeyPair) -> Value {
    let state = id.to_state_bytes();
    json!({
        "ed25519_seed": hex::encode(&state[1..33]),
        "x25519_secret": hex::encode(&state[33..65]),
        "identity_key": hex::encode(id.public().to_bytes()),
        "signed_identity": hex::encode(id.public().encode_signed()),
    })
}

/// Bob's device: identity, one signed prekey, two one-time prekeys, one one-time KEM prekey and
/// one last-resort KEM prekey, all from seed 0x42.
fn bob() -> (IdentityKeyPair, DevicePrekeys) {
    let mut rng = ChaCha20Rng::from_seed([0x42; 32]);
    let id = IdentityKeyPair::generate(&mut rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(&mut rng, &id, 1_767_225_600);
    pk.generate_one_time_prekeys(&mut rng, 2);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::OneTime, 1);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::LastResort, 1);
    (id, pk)
}

fn prekeys_json(pk: &DevicePrekeys) -> Value {
    let signed: Vec<Value> = pk
        .signed
        .iter()
        .map(|r| {
            json!({
                "id": r.public.id,
                "created_at": r.public.created_at,
                "secret": hex::encode(r.secret.as_ref()),
                "public": hex::encode(r.public.public),
                "signature": hex::encode(r.public.signature),
                "encoded": hex::encode(r.public.encode()),
            })
        })
        .collect();
    let one_time: Vec<Value> = pk
        .one_time
        .iter()
        .map(|(id, r)| {
            json!({ "id": id, "secret": hex::encode(r.secret.as_ref()), "public": hex::encode(r.public) })
        })
        .collect();
    let kem: Vec<Value> = pk
        .kem
        .iter()
        .map(|(id, r)| {
            json!({
                "id": id,
                "kind": r.kind.to_byte(),
                "seed_d_z": hex::encode(r.seed.as_ref()),
                "public": hex::encode(crate::store::kem_public(&r.seed).as_slice()),
                "signature": hex::encode(r.signature),
            })
        })
        .collect();
    json!({ "signed_prekeys": signed, "one_time_prekeys": one_time, "kem_prekeys": kem })
}

fn bundle_vector() -> Value {
    let (id, pk) = bob();
    let with = pk.bundle(&id, true).unwrap();
    let without = pk.bundle(&id, false).unwrap();
    for b in [&with, &without] {
        let enc = b.encode();
        assert_eq!(PreKeyBundle::decode(&enc).unwrap(), *b);
        b.clone().verify().unwrap();
    }
    json!({
        "description": "Bob's identity and prekeys (seed 0x42), and the two bundles a relay would serve: with a one-time prekey and one-time KEM prekey, and without (last-resort KEM prekey).",
        "identity": identity_json(&id),
        "prekeys": prekeys_json(&pk),
        "bundle_with_one_time": hex::encode(with.encode()),
        "bundle_without_one_time": hex::encode(without.encode()),
    })
}

fn dh(secret: &[u8], public: &[u8; 32]) -> String {
    let s: [u8; 32] = secret.try_into().unwrap();
    hex::encode(StaticSecret::from(s).diffie_hellman(&PublicKey::from(*public)).as_bytes())
}

fn handshake_case(with_one_time: bool) -> Value {
    let (bob_id, mut bob_pk) = bob();
    let mut rng = ChaCha20Rng::from_seed([0xA1; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bundle = bob_pk.bundle(&bob_id, with_one_time).unwrap();
    let bundle_bytes = bundle.encode();
    let verified = PreKeyBundle::decode(&bundle_bytes).unwrap().verify().unwrap();
    let ephemeral = [0xE0 | u8::from(with_one_time); 32];
    let kem_m = [0x5A; 32];
    let out = initiate_with(&alice, &verified, &ephemeral, &kem_m).unwrap();
    let mut header = Vec::new();
    out.header.write(&mut header);

    // Intermediate values, computed independently of the handshake code.
    let b = verified.bundle();
    let alice_state = alice.to_state_bytes();
    let base = PublicKey::from(&StaticSecret::from(ephemeral)).to_bytes();
    let mut dhs = vec![
        dh(&alice_state[33..65], &b.signed_prekey.public),
        dh(&ephemeral, &b.identity.dh_key()),
        dh(&ephemeral, &b.signed_prekey.public),
    ];
    if let Some(k) = &b.one_time_prekey {
        dhs.push(dh(&ephemeral, &k.public));
    }
    let dk = bob_pk.kem.get(&b.kem_prekey.id).unwrap().decapsulation_key();
    let ct = ml_kem::Ciphertext::<ml_kem::MlKem768>::from(*out.header.kem_ciphertext);
    let ss = ml_kem::Decapsulate::decapsulate(&dk, &ct);

    let responded = bob_pk.respond(&bob_id, &out.header).unwrap();
    assert_eq!(responded.shared_secret.as_bytes(), out.shared_secret.as_bytes());
    assert_eq!(responded.associated_data, out.associated_data);
    bob_pk.commit(&responded).unwrap();
    assert_eq!(bob_pk.respond(&bob_id, &out.header).unwrap_err().code(), "replayed_handshake");

    json!({
        "with_one_time_prekey": with_one_time,
        "alice_identity": identity_json(&alice),
        "bundle": hex::encode(&bundle_bytes),
        "alice_ephemeral_secret": hex::encode(ephemeral),
        "alice_base_key": hex::encode(base),
        "kem_encaps_randomness_m": hex::encode(kem_m),
        "kem_ciphertext": hex::encode(out.header.kem_ciphertext.as_slice()),
        "kem_shared_secret": hex::encode(ss.as_slice()),
        "dh_outputs": dhs,
        "shared_secret": hex::encode(out.shared_secret.as_bytes()),
        "associated_data": hex::encode(out.associated_data),
        "initial_header": hex::encode(&header),
        "responder_shared_secret": hex::encode(responded.shared_secret.as_bytes()),
        "responder_ratchet_secret": hex::encode(responded.ratchet_secret().as_bytes()),
        "responder_state_after_commit": {
            "one_time_prekeys_left": bob_pk.one_time_prekey_count(),
            "one_time_kem_prekeys_left": bob_pk.one_time_kem_prekey_count(),
        },
    })
}

fn safety_number_case() -> Value {
    let (bob_id, _) = bob();
    let mut rng = ChaCha20Rng::from_seed([0xA1; 32]);
    let alice = IdentityKeyPair::generate(&mut rng);
    let (a, b) = (alice.public().to_bytes(), bob_id.public().to_bytes());
    let alice_party = crate::Party { stable_id: b"alice-account", identity_key: &a };
    let bob_party = crate::Party { stable_id: b"bob-account", identity_key: &b };
    let n = crate::SafetyNumber::new(alice_party, bob_party);
    assert_eq!(n, crate::SafetyNumber::new(bob_party, alice_party));
    json!({
        "alice_stable_id": "alice-account",
        "alice_identity_key": hex::encode(a),
        "bob_stable_id": "bob-account",
        "bob_identity_key": hex::encode(b),
        "digits": n.digits(),
        "grouped": n.grouped(),
    })
}

#[test]
fn bundle_vectors_match() {
    check_or_write("bundle.json", &bundle_vector());
}

#[test]
fn handshake_vectors_match() {
    let v = json!({
        "description": "PQXDH handshakes from Alice (identity from seed 0xA1, explicit ephemeral secret and ML-KEM randomness) to Bob's bundle from bundle.json, computed by both sides. dh_outputs are DH1..DH3 (and DH4 when a one-time prekey is used), in KDF order.",
        "cases": [handshake_case(true), handshake_case(false)],
        "safety_number": safety_number_case(),
    });
    check_or_write("handshake.json", &v);
}
