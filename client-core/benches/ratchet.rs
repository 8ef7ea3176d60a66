//! Hush sessions against vodozemac (Olm) and against the primitive floor, in one run.
//!
//! Groups (each reports `hush`, `vodozemac` and where meaningful `floor`):
//! - `handshake_initiator`, `handshake_responder`: creating a session from a bundle / from the
//!   first (prekey) message. Hush does PQXDH (4 DH + ML-KEM-768) where Olm does 3 DH, so these
//!   ratios measure the price of post-quantum protection, not a target.
//! - `chain_100B`: encrypt + decrypt of a 100-byte message on an existing chain. Target ≤ 1.0×
//!   vodozemac.
//! - `ping_pong_100B`: a → b, b → a, each message a DH ratchet step. Target ≤ 1.3× the floor: the
//!   X25519, HKDF, HMAC and ChaCha20-Poly1305 calls those two messages must make, called
//!   directly.
//! - `session_serialize_restore`: state to bytes and back (vodozemac: pickle as JSON and back).
//!
//! Run: `scripts/bench.sh` (prints the ratio table used in docs/BENCHMARKS.md).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use hush_core::Session;
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind, VerifiedBundle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

const MSG: [u8; 100] = [0x61; 100];

struct Bob {
    id: IdentityKeyPair,
    prekey_state: Vec<u8>,
    bundle: VerifiedBundle,
}

fn hush_bob(rng: &mut ChaCha20Rng) -> Bob {
    let id = IdentityKeyPair::generate(rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(rng, &id, 1);
    pk.generate_one_time_prekeys(rng, 1);
    pk.generate_kem_prekeys(rng, &id, KemPreKeyKind::OneTime, 1);
    let bundle = pk.bundle(&id, true).unwrap().verify().unwrap();
    Bob { id, prekey_state: pk.to_state_bytes().to_vec(), bundle }
}

/// Two hush sessions past the handshake, each having received from the other.
fn hush_pair(rng: &mut ChaCha20Rng) -> (Session, Session) {
    let bob = hush_bob(rng);
    let alice = IdentityKeyPair::generate(rng);
    let mut a = Session::initiate(rng, &alice, &bob.bundle).unwrap();
    let first = a.encrypt(rng, &MSG).unwrap();
    let mut pk = DevicePrekeys::from_state_bytes(&bob.prekey_state).unwrap();
    let (mut b, _) = Session::accept(&bob.id, &mut pk, &first).unwrap();
    let reply = b.encrypt(rng, &MSG).unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

/// Two vodozemac sessions past the handshake, each having received from the other.
fn olm_pair() -> (OlmSession, OlmSession) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    bob.mark_keys_as_published();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(first) = a.encrypt(MSG).unwrap() else { panic!("expected prekey") };
    let mut b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .unwrap()
        .session;
    let reply = b.encrypt(MSG).unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn handshake(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let bob = hush_bob(&mut rng);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bundle_bytes = bob.bundle.bundle().encode();

    let mut g = c.benchmark_group("handshake_initiator");
    g.bench_function("hush", |b| {
        b.iter(|| Session::initiate(&mut rng, &alice, black_box(&bob.bundle)).unwrap())
    });
    g.bench_function("hush_with_bundle_verify", |b| {
        b.iter(|| {
            let bundle = hush_prekeys::PreKeyBundle::decode(black_box(&bundle_bytes))
                .unwrap()
                .verify()
                .unwrap();
            Session::initiate(&mut rng, &alice, &bundle).unwrap()
        })
    });
    let olm_alice = Account::new();
    let mut olm_bob = Account::new();
    olm_bob.generate_one_time_keys(1);
    let otk = *olm_bob.one_time_keys().values().next().unwrap();
    let bob_key = olm_bob.curve25519_key();
    g.bench_function("vodozemac", |b| {
        b.iter(|| {
            olm_alice
                .create_outbound_session(SessionConfig::version_1(), black_box(bob_key), otk)
                .unwrap()
        })
    });
    g.finish();

    // Responder: accept the first message (handshake + first decryption + key consumption).
    let mut g = c.benchmark_group("handshake_responder");
    let mut a = Session::initiate(&mut rng, &alice, &bob.bundle).unwrap();
    let first = a.encrypt(&mut rng, &MSG).unwrap();
    g.bench_function("hush", |b| {
        b.iter_batched(
            || DevicePrekeys::from_state_bytes(&bob.prekey_state).unwrap(),
            |mut pk| Session::accept(&bob.id, &mut pk, black_box(&first)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut outbound =
        olm_alice.create_outbound_session(SessionConfig::version_1(), bob_key, otk).unwrap();
    let OlmMessage::PreKey(olm_first) = outbound.encrypt(MSG).unwrap() else { panic!() };
    let bob_pickle = olm_bob.pickle();
    let alice_key = olm_alice.curve25519_key();
    g.bench_function("vodozemac", |b| {
        b.iter_batched(
            || Account::from_pickle(clone_pickle(&bob_pickle)),
            |mut acc| {
                acc.create_inbound_session(
                    SessionConfig::version_1(),
                    alice_key,
                    black_box(&olm_first),
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn clone_pickle(p: &vodozemac::olm::AccountPickle) -> vodozemac::olm::AccountPickle {
    serde_json::from_value(serde_json::to_value(p).unwrap()).unwrap()
}

// ---- The primitive floor, written directly against the crates. ----

fn floor_kdf_rk(rk: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(rk), dh).expand(b"Hush_Ratchet_Root", &mut okm).unwrap();
    (okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap())
}

fn floor_kdf_ck(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(ck).unwrap();
    let mk = mac.clone().chain_update([1]).finalize().into_bytes().into();
    let next = mac.chain_update([2]).finalize().into_bytes().into();
    (mk, next)
}

fn floor_cipher(mk: &[u8; 32]) -> (ChaCha20Poly1305, [u8; 12]) {
    let mut okm = [0u8; 44];
    Hkdf::<Sha256>::new(Some(&[0; 32]), mk).expand(b"Hush_Ratchet_MessageKeys", &mut okm).unwrap();
    let key: [u8; 32] = okm[..32].try_into().unwrap();
    (ChaCha20Poly1305::new(&key.into()), okm[32..].try_into().unwrap())
}

/// The symmetric work of one message on an existing chain, both sides.
fn floor_chain_message(ck_send: &[u8; 32], ck_recv: &[u8; 32], ad: &[u8]) -> Vec<u8> {
    let (mk, _) = floor_kdf_ck(ck_send);
    let (cipher, nonce) = floor_cipher(&mk);
    let mut buf = MSG.to_vec();
    let tag = cipher.encrypt_inout_detached(&nonce.into(), ad, buf.as_mut_slice().into()).unwrap();
    let (mk, _) = floor_kdf_ck(ck_recv);
    let (cipher, nonce) = floor_cipher(&mk);
    cipher.decrypt_inout_detached(&nonce.into(), ad, buf.as_mut_slice().into(), &tag).unwrap();
    buf
}

/// One DH-stepping message: the sender draws a key, derives its public key, does one DH and
/// KDF_RK; the receiver does one DH and KDF_RK; then the chain work of one message.
fn floor_step_message(
    rng: &mut ChaCha20Rng,
    rk: &[u8; 32],
    their: &PublicKey,
    ours: &StaticSecret,
    ad: &[u8],
) -> Vec<u8> {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    let secret = StaticSecret::from(s);
    let public = PublicKey::from(&secret);
    let dh_send = secret.diffie_hellman(their);
    let (_, ck_send) = floor_kdf_rk(rk, dh_send.as_bytes());
    let dh_recv = ours.diffie_hellman(&public);
    let (_, ck_recv) = floor_kdf_rk(rk, dh_recv.as_bytes());
    floor_chain_message(&ck_send, &ck_recv, ad)
}

/// Runs three workloads interleaved, iteration by iteration, and returns the time spent in one
/// of them. Each of the three Criterion benchmarks of a group runs all three and reports its
/// own share, so slow drifts of this noisy 2-core machine hit every side of a ratio equally.
struct Interleaved<'a> {
    work: [Box<dyn FnMut() + 'a>; 3],
}

impl Interleaved<'_> {
    fn time(&mut self, iters: u64, which: usize) -> Duration {
        let mut spent = [Duration::ZERO; 3];
        for iter in 0..iters {
            // Rotate who goes first so no workload always runs in the same position.
            for k in 0..3 {
                let i = (iter as usize + k) % 3;
                let t = Instant::now();
                (self.work[i])();
                spent[i] += t.elapsed();
            }
        }
        spent[which]
    }
}

fn bench_interleaved(c: &mut Criterion, group: &str, mut w: Interleaved<'_>) {
    let mut g = c.benchmark_group(group);
    for (i, name) in ["hush", "vodozemac", "floor"].into_iter().enumerate() {
        g.bench_function(name, |b| b.iter_custom(|iters| w.time(iters, i)));
    }
    g.finish();
}

// The workloads, as named non-inlined functions so `callgrind_annotate` can count each one's
// instructions (scripts/bench.sh --instructions).

#[inline(never)]
fn hush_chain(a: &mut Session, b: &mut Session, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let m = a.encrypt(rng, black_box(&MSG)).unwrap();
    b.decrypt(&m).unwrap()
}

#[inline(never)]
fn olm_chain(a: &mut OlmSession, b: &mut OlmSession) -> Vec<u8> {
    let m = a.encrypt(black_box(MSG)).unwrap();
    b.decrypt(&m).unwrap()
}

#[inline(never)]
fn floor_chain(ad: &[u8]) -> Vec<u8> {
    floor_chain_message(black_box(&[1; 32]), &[1; 32], ad)
}

#[inline(never)]
fn hush_ping_pong(a: &mut Session, b: &mut Session, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let m = a.encrypt(rng, black_box(&MSG)).unwrap();
    b.decrypt(&m).unwrap();
    let r = b.encrypt(rng, black_box(&MSG)).unwrap();
    a.decrypt(&r).unwrap()
}

#[inline(never)]
fn olm_ping_pong(a: &mut OlmSession, b: &mut OlmSession) -> Vec<u8> {
    let m = a.encrypt(black_box(MSG)).unwrap();
    b.decrypt(&m).unwrap();
    let r = b.encrypt(black_box(MSG)).unwrap();
    a.decrypt(&r).unwrap()
}

#[inline(never)]
fn floor_ping_pong(
    rng: &mut ChaCha20Rng,
    ours: &StaticSecret,
    theirs: &PublicKey,
    ad: &[u8],
) -> Vec<u8> {
    floor_step_message(rng, black_box(&[1; 32]), theirs, ours, ad);
    floor_step_message(rng, black_box(&[2; 32]), theirs, ours, ad)
}

fn chain(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut a, mut b) = hush_pair(&mut rng);
    let (mut oa, mut ob) = olm_pair();
    let ad = [7u8; 170];
    let work: [Box<dyn FnMut() + '_>; 3] = [
        Box::new(|| drop(black_box(hush_chain(&mut a, &mut b, &mut rng)))),
        Box::new(|| drop(black_box(olm_chain(&mut oa, &mut ob)))),
        Box::new(|| drop(black_box(floor_chain(&ad)))),
    ];
    bench_interleaved(c, "chain_100B", Interleaved { work });
}

fn ping_pong(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut floor_rng = ChaCha20Rng::seed_from_u64(5);
    let (mut a, mut b) = hush_pair(&mut rng);
    let (mut oa, mut ob) = olm_pair();
    // The receiver's ratchet key pair; the sender steps against its public half.
    let ours = StaticSecret::from([9u8; 32]);
    let theirs = PublicKey::from(&ours);
    let ad = [7u8; 170];
    let work: [Box<dyn FnMut() + '_>; 3] = [
        Box::new(|| drop(black_box(hush_ping_pong(&mut a, &mut b, &mut rng)))),
        Box::new(|| drop(black_box(olm_ping_pong(&mut oa, &mut ob)))),
        Box::new(|| drop(black_box(floor_ping_pong(&mut floor_rng, &ours, &theirs, &ad)))),
    ];
    bench_interleaved(c, "ping_pong_100B", Interleaved { work });
}

fn serialize(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut g = c.benchmark_group("session_serialize_restore");
    let (a, _b) = hush_pair(&mut rng);
    g.bench_function("hush", |bch| bch.iter(|| Session::from_bytes(&a.to_bytes()).unwrap()));
    let (oa, _ob) = olm_pair();
    g.bench_function("vodozemac", |bch| {
        bch.iter(|| {
            let bytes = serde_json::to_vec(&oa.pickle()).unwrap();
            OlmSession::from_pickle(serde_json::from_slice(&bytes).unwrap())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = handshake, chain, ping_pong, serialize }
criterion_main!(benches);
