//! Typed errors for key material and handshakes.
//!
//! Every variant has a stable machine code ([`BundleError::code`], [`HandshakeError::code`]) that
//! is part of the protocol (docs/PROTOCOL.md, "Error codes"): apps and the relay switch on the
//! code, humans read the message. Codes never change meaning once released.

use thiserror::Error;

/// Why public key material (an identity, a prekey or a whole bundle) was rejected.
///
/// Produced by decoding and by signature verification; neither needs any private state, so the
/// relay uses the same checks on uploads.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The leading version byte names a format this build does not know.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// Which structure carried the version.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The input is shorter or longer than the structure's fixed layout.
    #[error("invalid length for {what}")]
    InvalidLength {
        /// Which structure was being decoded.
        what: &'static str,
    },
    /// A field holds a value the layout does not allow (unknown flag bits, unknown kind).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure was being decoded.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// An Ed25519 signature did not verify under the identity key.
    #[error("bad signature on {what}")]
    BadSignature {
        /// Which signed object failed.
        what: &'static str,
    },
    /// A public key is not usable: an invalid Ed25519 point, a weak key, or an ML-KEM
    /// encapsulation key that fails the FIPS 203 input check.
    #[error("invalid public key: {what}")]
    InvalidKey {
        /// Which key was rejected.
        what: &'static str,
    },
}

impl BundleError {
    /// The stable machine code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::InvalidLength { .. } => "invalid_length",
            Self::Malformed { .. } => "malformed",
            Self::BadSignature { .. } => "bad_signature",
            Self::InvalidKey { .. } => "invalid_key",
        }
    }
}

/// Why a handshake could not be completed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer's key material (identity, header or bundle) was rejected.
    #[error(transparent)]
    Key(#[from] BundleError),
    /// The initial message names a signed prekey this device no longer (or never) had.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The initial message names a one-time prekey that was already used or never existed.
    /// A replay of a handshake that used a one-time prekey ends here.
    #[error("unknown or already used one-time prekey {0}")]
    UnknownOneTimePreKey(u32),
    /// The initial message names a KEM prekey that was already used or never existed.
    #[error("unknown or already used KEM prekey {0}")]
    UnknownKemPreKey(u32),
    /// This exact handshake (same signed prekey and ephemeral key) was already accepted.
    #[error("handshake replayed: this initial message was already accepted")]
    Replayed,
    /// A Diffie-Hellman output was all zeros: the peer sent a low-order point.
    #[error("non-contributory key agreement (low-order public key)")]
    NonContributory,
}

impl HandshakeError {
    /// The stable machine code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Key(e) => e.code(),
            Self::UnknownSignedPreKey(_) => "unknown_signed_prekey",
            Self::UnknownOneTimePreKey(_) => "unknown_one_time_prekey",
            Self::UnknownKemPreKey(_) => "unknown_kem_prekey",
            Self::Replayed => "replayed_handshake",
            Self::NonContributory => "invalid_key",
        }
    }
}
