//! Messages: decoding, and decrypting on a real session, never panic.
#![no_main]
use std::sync::{LazyLock, Mutex};

use hush_core::{Session, message};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use libfuzzer_sys::fuzz_target;

struct Bob {
    id: IdentityKeyPair,
    prekeys: Vec<u8>,
    session: Vec<u8>,
}

static BOB: LazyLock<Mutex<Bob>> = LazyLock::new(|| {
    let mut rng = rand::rng();
    let id = IdentityKeyPair::generate(&mut rng);
    let mut pk = DevicePrekeys::new();
    pk.generate_signed_prekey(&mut rng, &id, 1);
    pk.generate_kem_prekeys(&mut rng, &id, KemPreKeyKind::LastResort, 1);
    let bundle = pk.bundle(&id, false).unwrap().verify().unwrap();
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = a.encrypt(&mut rng, b"hi").unwrap();
    let (s, _) = Session::accept(&id, &mut pk, &first).unwrap();
    Mutex::new(Bob { id, prekeys: pk.to_state_bytes().to_vec(), session: s.to_bytes().to_vec() })
});

fuzz_target!(|data: &[u8]| {
    let _ = message::decode(data);
    let bob = BOB.lock().unwrap();
    let mut session = Session::from_bytes(&bob.session).unwrap();
    if session.decrypt(data).is_err() {
        assert_eq!(*session.to_bytes(), bob.session, "a failed decrypt changed the session");
    }
    let mut pk = DevicePrekeys::from_state_bytes(&bob.prekeys).unwrap();
    if Session::accept(&bob.id, &mut pk, data).is_err() {
        assert_eq!(*pk.to_state_bytes(), bob.prekeys, "a failed accept changed the prekeys");
    }
});
