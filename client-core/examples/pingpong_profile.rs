//! Runs ping-pong round trips for profiling (`valgrind --tool=callgrind`).
#![allow(missing_docs, clippy::unwrap_used)]
use hush_core::Session;
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(&mut rng, &bob_id, 1);
    pk.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::LastResort, 1);
    let bundle = pk.bundle(&bob_id, false).unwrap().verify().unwrap();
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let mut a = Session::initiate(&mut rng, &alice_id, &bundle).unwrap();
    let m = a.encrypt(&mut rng, &[0; 100]).unwrap();
    let (mut b, _) = Session::accept(&bob_id, &mut pk, &m).unwrap();
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    for _ in 0..n {
        let r = b.encrypt(&mut rng, &[0; 100]).unwrap();
        a.decrypt(&r).unwrap();
        let m = a.encrypt(&mut rng, &[0; 100]).unwrap();
        b.decrypt(&m).unwrap();
    }
}
