//! Hush key material and the hybrid X3DH/PQXDH handshake.
//!
//! This crate is shared by the relay and the client. Everything the relay needs (decoding and
//! verifying identities, prekeys and bundles) works on public data only; everything private
//! (identity key pairs, [`DevicePrekeys`]) is zeroized on drop and hidden from `Debug`.
//!
//! The byte layouts, labels and error codes are specified in docs/PROTOCOL.md and pinned by the
//! JSON test vectors in `test-vectors/`.
//!
//! ```
//! use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind, PreKeyBundle, initiate};
//!
//! let mut rng = rand::rng();
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let mut bob_prekeys = DevicePrekeys::new();
//! bob_prekeys.generate_signed_prekey(&mut rng, &bob, 1_700_000_000);
//! bob_prekeys.generate_one_time_prekeys(&mut rng, 10);
//! bob_prekeys.generate_kem_prekeys(&mut rng, &bob, KemPreKeyKind::LastResort, 1);
//!
//! // Bob's bundle travels through the relay as bytes; Alice decodes and verifies it.
//! let wire = bob_prekeys.bundle(&bob, true).unwrap().encode();
//! let bundle = PreKeyBundle::decode(&wire).unwrap().verify().unwrap();
//!
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let sent = initiate(&mut rng, &alice, &bundle).unwrap();
//!
//! let received = bob_prekeys.respond(&bob, &sent.header).unwrap();
//! assert_eq!(sent.shared_secret.as_bytes(), received.shared_secret.as_bytes());
//! bob_prekeys.commit(&received).unwrap();
//! // The one-time keys are gone: the same initial message can't be accepted twice.
//! assert_eq!(bob_prekeys.respond(&bob, &sent.header).unwrap_err().code(), "replayed_handshake");
//! ```

pub mod bundle;
pub mod codec;
pub mod error;
pub mod handshake;
pub mod identity;
pub mod kdf;
pub mod prekey;
pub mod safety_number;
pub mod store;
#[cfg(test)]
mod vectors;

pub use bundle::{PreKeyBundle, VerifiedBundle};
pub use error::{BundleError, HandshakeError};
pub use handshake::{
    InitialHeader, InitiatorHandshake, RatchetSecret, ResponderHandshake, SharedSecret, initiate,
};
pub use identity::{IdentityKey, IdentityKeyPair};
pub use prekey::{KemPreKey, KemPreKeyKind, OneTimePreKey, SignedPreKey};
pub use safety_number::{Party, SafetyNumber};
pub use store::DevicePrekeys;
