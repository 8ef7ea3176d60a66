//! Hush wire types: everything the relay and a client must agree on byte for byte.
//!
//! - [`frame`]: the length-prefixed framing used on every QUIC stream, with its size limit.
//! - [`wire`]: the protobuf (prost) requests, responses and pushes.
//! - [`device_list`]: the account-signed list of an account's devices, and the account key.
//! - [`auth`]: the device authentication transcript, bound to the QUIC connection.
//! - [`error`]: the stable error codes carried on the wire.
//!
//! The relay depends on this crate and on `hush-prekeys`, never on the client core; clients in
//! any language implement the same layouts from docs/PROTOCOL.md ("Relay protocol").

pub mod auth;
pub mod device_list;
pub mod error;
pub mod frame;
#[cfg(feature = "quinn")]
pub mod quic;
pub mod refusal;
#[cfg(test)]
mod vectors;
pub mod websocket;
pub mod wire;

pub use device_list::{AccountKey, AccountKeyPair, DeviceEntry, DeviceList, DeviceListError};
pub use error::ErrorCode;
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use refusal::{Refusal, RefusalCode};

/// The QUIC ALPN protocol identifier of relay protocol version 1.
pub const ALPN: &[u8] = b"hush/1";

/// The TLS exporter label used for the channel binding in device authentication.
pub const AUTH_EXPORTER_LABEL: &[u8] = b"EXPORTER-hush-device-auth";

/// QUIC application close codes the relay uses when it closes a connection on purpose.
pub mod close {
    /// Normal close (client or relay done).
    pub const NORMAL: u32 = 0;
    /// The relay is shutting down: reconnect (to another node, or later).
    pub const GOING_AWAY: u32 = 1;
    /// The authenticated device was removed from its account.
    pub const DEVICE_REMOVED: u32 = 2;
    /// Too many connections from this address.
    pub const TOO_MANY_CONNECTIONS: u32 = 3;
    /// Reserved for protocol violations that end a whole connection (relay v1 does not send
    /// it: it answers bad requests per stream).
    pub const PROTOCOL_VIOLATION: u32 = 4;
    /// Authentication did not complete within the relay's deadline.
    pub const AUTH_TIMEOUT: u32 = 5;
}
