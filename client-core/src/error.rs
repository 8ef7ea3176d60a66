//! Typed errors for sessions: message decoding, the ratchet and stored state.
//!
//! Every variant has a stable machine code ([`SessionError::code`]) listed in docs/PROTOCOL.md.
//! A failed decryption never changes the session, whatever the error.

use hush_prekeys::HandshakeError;
use thiserror::Error;

/// Why a session operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The handshake in a prekey message failed (unknown or used prekeys, replay, bad keys).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The bytes are not a well-formed Hush message.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The message's version byte is not one this build speaks.
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u8),
    /// The plaintext or message exceeds the protocol limit.
    #[error("too large: {len} bytes, the limit is {limit}")]
    TooLarge {
        /// The offending length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// This message was already decrypted, or its key was evicted from the skipped-key store.
    #[error("duplicate message: already received, or its key is no longer kept")]
    Duplicate,
    /// The message claims to be further ahead in its chain than the skip limit allows.
    #[error("message skips {skip} keys in one chain; the limit is {limit}")]
    TooFarAhead {
        /// How many message keys the message would skip.
        skip: u64,
        /// The limit.
        limit: u32,
    },
    /// Authentication failed: the message was tampered with or is not for this session.
    #[error("decryption failed: the message was tampered with or is not for this session")]
    DecryptionFailed,
    /// The sending chain reached 2^32 - 1 messages without a reply.
    #[error("sending chain exhausted: 2^32 - 1 messages without a reply")]
    ChainExhausted,
    /// The session has never received a message from its peer and has no sending chain.
    #[error("session cannot send before it has received")]
    NotReady,
    /// A prekey message for a different handshake than the one this session came from.
    #[error("prekey message belongs to a different session")]
    SessionMismatch,
    /// Stored session state could not be decoded.
    #[error("corrupt session state: {0}")]
    CorruptState(&'static str),
    /// Stored session state has a version this build does not know.
    #[error("unsupported session state version {0}")]
    UnsupportedStateVersion(u8),
}

impl SessionError {
    /// The stable machine code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Handshake(e) => e.code(),
            Self::Malformed(_) => "malformed_message",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::TooLarge { .. } => "too_large",
            Self::Duplicate => "duplicate_message",
            Self::TooFarAhead { .. } => "too_far_ahead",
            Self::DecryptionFailed => "decryption_failed",
            Self::ChainExhausted => "chain_exhausted",
            Self::NotReady => "session_not_ready",
            Self::SessionMismatch => "session_mismatch",
            Self::CorruptState(_) => "corrupt_state",
            Self::UnsupportedStateVersion(_) => "unsupported_state_version",
        }
    }
}

impl From<hush_prekeys::BundleError> for SessionError {
    fn from(e: hush_prekeys::BundleError) -> Self {
        Self::Handshake(HandshakeError::Key(e))
    }
}
