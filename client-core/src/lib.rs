//! Hush client core: end-to-end encrypted pairwise sessions.
//!
//! This release holds the protocol core: [`Session`] runs the hybrid X3DH/PQXDH handshake from
//! `hush-prekeys` and then the Double Ratchet ([`ratchet`] module docs list the KDFs). It is
//! sans-I/O: it takes and returns bytes and never touches the network or the disk. The wire
//! format, state format, limits and error codes are specified in docs/PROTOCOL.md.
//!
//! ```
//! use hush_core::Session;
//! use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind, PreKeyBundle};
//!
//! let mut rng = rand::rng();
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let mut bob_prekeys = DevicePrekeys::new();
//! bob_prekeys.generate_signed_prekey(&mut rng, &bob, 1_700_000_000);
//! bob_prekeys.generate_one_time_prekeys(&mut rng, 1);
//! bob_prekeys.generate_kem_prekeys(&mut rng, &bob, KemPreKeyKind::OneTime, 1);
//! let bundle = bob_prekeys.bundle(&bob, true).unwrap().verify().unwrap();
//!
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
//! let first = a.encrypt(&mut rng, b"hello bob").unwrap();
//!
//! let (mut b, plaintext) = Session::accept(&bob, &mut bob_prekeys, &first).unwrap();
//! assert_eq!(plaintext, b"hello bob");
//! let reply = b.encrypt(&mut rng, b"hi alice").unwrap();
//! assert_eq!(a.decrypt(&reply).unwrap(), b"hi alice");
//! // Replaying Alice's first message is refused, and Bob's session is unchanged.
//! assert_eq!(b.decrypt(&first).unwrap_err().code(), "duplicate_message");
//! ```

pub mod error;
pub mod message;
pub mod ratchet;
pub mod session;
#[cfg(test)]
mod vectors;

pub use error::SessionError;
pub use session::{Role, Session};
