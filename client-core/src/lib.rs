//! Hush client core: the SDK app developers hold, through the Kotlin, Swift and web bindings.
//!
//! Two layers, split by a feature: the sans-I/O protocol core (always built: [`session`],
//! [`ratchet`], [`message`], [`content`]) and the client SDK on top of it (feature `client`,
//! on by default with `native`). `cargo test -p hush-core --no-default-features` builds and
//! tests the core alone, without tokio, quinn or redb.
//!
//! - [`Client`] (module [`client`]): accounts and devices, contacts with safety numbers,
//!   multi-device 1:1 messaging with receipts and typing, encrypted local history with
//!   full-text search, and sync between a user's devices. Async and event-driven.
//! - I/O sits behind two small traits: [`store::Store`] (native: redb; browser: IndexedDB)
//!   and [`transport::Connector`] (native: QUIC; browser: WebSocket, in `browser`). Everything stored is encrypted by
//!   [`vault::Vault`] with a key the app supplies.
//! - The protocol core below it is sans-I/O: [`Session`] runs the hybrid X3DH/PQXDH handshake
//!   from `hush-prekeys` and then the Double Ratchet ([`ratchet`] module docs list the KDFs).
//!   It takes and returns bytes and never touches the network or the disk. The wire format,
//!   state format, limits and error codes are specified in docs/PROTOCOL.md.
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

pub mod attachment;
mod blob_digest;
#[cfg(all(feature = "client", target_arch = "wasm32"))]
pub mod browser;
#[cfg(feature = "client")]
pub mod client;
pub mod content;
pub mod error;
pub mod group;
#[cfg(feature = "client")]
mod hashing;
pub mod message;
pub mod ratchet;
#[cfg(feature = "client")]
pub mod records;
#[cfg(feature = "client")]
pub mod runtime;
#[cfg(feature = "client")]
pub mod search;
pub mod sender_key;
pub mod session;
pub mod signatures;
#[cfg(feature = "client")]
pub mod store;
#[cfg(feature = "client")]
pub mod transport;
#[cfg(feature = "client")]
pub mod vault;
#[cfg(test)]
mod vectors;

#[cfg(feature = "client")]
pub use client::{
    AttachmentMeta, AttachmentSink, AttachmentSource, AttachmentView, Client, ClientConfig,
    ClientError, ClientOptions, ConnectionState, ContactView, ConversationView, DeviceView, Event,
    EventStream, GroupMemberView, GroupReceipts, GroupView, MessageKind, MessageStatus,
    MessageView, PendingUpload, SearchHit, TrustState,
};
pub use error::SessionError;
pub use session::{Role, Session};
#[cfg(feature = "client")]
pub use vault::StoreKey;
