//! Public prekeys: what a device publishes so others can start sessions with it while it is
//! offline.
//!
//! - [`SignedPreKey`]: a medium-term X25519 key, signed by the identity, with an id and a
//!   creation time (seconds since the Unix epoch).
//! - [`OneTimePreKey`]: X25519 keys handed out at most once each. Unsigned, as in X3DH: a forged
//!   one can only make the handshake fall back to the signed prekey's strength, and a low-order
//!   forgery is rejected by the contributory check.
//! - [`KemPreKey`]: ML-KEM-768 encapsulation keys, signed like PQXDH's PQSPK/PQOPK. One is the
//!   last-resort key, served when the one-time KEM keys run out.
//!
//! Each type encodes to a fixed layout (docs/PROTOCOL.md) and verifies against an
//! [`IdentityKey`] without any private state, so the relay checks uploads with the same code the
//! client uses on fetched bundles.

use ml_kem::{EncapsulationKey, MlKem768};

use crate::codec::{Reader, Writer};
use crate::error::BundleError;
use crate::identity::{IdentityKey, hex_prefix};

/// Signature label for signed prekeys.
pub const SIGNED_PREKEY_LABEL: &[u8] = b"Hush_SignedPreKey_v1";
/// Signature label for KEM prekeys.
pub const KEM_PREKEY_LABEL: &[u8] = b"Hush_KemPreKey_v1";
/// Encoded length of a [`SignedPreKey`].
pub const SIGNED_PREKEY_LEN: usize = 4 + 8 + 32 + 64;
/// Encoded length of a [`OneTimePreKey`].
pub const ONE_TIME_PREKEY_LEN: usize = 4 + 32;
/// Length of an ML-KEM-768 encapsulation key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Encoded length of a [`KemPreKey`].
pub const KEM_PREKEY_LEN: usize = 4 + 1 + KEM_PUBLIC_KEY_LEN + 64;

/// A signed X25519 prekey (public part).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPreKey {
    /// Device-local id, chosen by the owner.
    pub id: u32,
    /// Creation time, seconds since the Unix epoch; clients use it to rotate.
    pub created_at: u64,
    /// X25519 public key.
    pub public: [u8; 32],
    /// Ed25519 signature by the identity over [`SignedPreKey::signed_message`].
    pub signature: [u8; 64],
}

impl SignedPreKey {
    /// The bytes the identity signs: `label ‖ id ‖ created_at ‖ public`.
    pub fn signed_message(id: u32, created_at: u64, public: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNED_PREKEY_LABEL.len() + 44);
        m.extend_from_slice(SIGNED_PREKEY_LABEL);
        m.put_u32(id);
        m.put_u64(created_at);
        m.extend_from_slice(public);
        m
    }

    /// Checks the signature under `identity`.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), BundleError> {
        identity.verify(
            &Self::signed_message(self.id, self.created_at, &self.public),
            &self.signature,
            "signed prekey",
        )
    }

    /// Appends the fixed 108-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.id);
        out.put_u64(self.created_at);
        out.extend_from_slice(&self.public);
        out.extend_from_slice(&self.signature);
    }

    /// The fixed 108-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_PREKEY_LEN);
        self.write(&mut out);
        out
    }

    /// Decodes exactly one encoded signed prekey (no signature check; see [`Self::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut r = Reader::new(bytes);
        let k = Self::read(&mut r)?;
        r.finish().map_err(|_| BundleError::InvalidLength { what: "signed prekey" })?;
        Ok(k)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BundleError> {
        let read = |r: &mut Reader<'_>| -> Result<Self, crate::codec::Truncated> {
            Ok(Self {
                id: r.u32()?,
                created_at: r.u64()?,
                public: r.array()?,
                signature: r.array()?,
            })
        };
        read(r).map_err(|_| BundleError::InvalidLength { what: "signed prekey" })
    }
}

impl std::fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("public", &hex_prefix(&self.public))
            .finish_non_exhaustive()
    }
}

/// An unsigned one-time X25519 prekey (public part).
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimePreKey {
    /// Device-local id.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
}

impl OneTimePreKey {
    /// Appends the fixed 36-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.id);
        out.extend_from_slice(&self.public);
    }

    /// The fixed 36-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ONE_TIME_PREKEY_LEN);
        self.write(&mut out);
        out
    }

    /// Decodes exactly one encoded one-time prekey.
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut r = Reader::new(bytes);
        let k = Self::read(&mut r)?;
        r.finish().map_err(|_| BundleError::InvalidLength { what: "one-time prekey" })?;
        Ok(k)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BundleError> {
        let read = |r: &mut Reader<'_>| -> Result<Self, crate::codec::Truncated> {
            Ok(Self { id: r.u32()?, public: r.array()? })
        };
        read(r).map_err(|_| BundleError::InvalidLength { what: "one-time prekey" })
    }
}

impl std::fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OneTimePreKey({}, {})", self.id, hex_prefix(&self.public))
    }
}

/// Whether a KEM prekey may be used once or is the long-lived fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KemPreKeyKind {
    /// PQXDH's "last-resort" PQSPK: served when no one-time KEM key is left; never deleted on use.
    LastResort,
    /// PQXDH's PQOPK: deleted by the owner after one use.
    OneTime,
}

impl KemPreKeyKind {
    /// The wire byte: 0 for last resort, 1 for one-time.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::LastResort => 0,
            Self::OneTime => 1,
        }
    }

    /// Parses the wire byte.
    pub fn from_byte(b: u8) -> Result<Self, BundleError> {
        match b {
            0 => Ok(Self::LastResort),
            1 => Ok(Self::OneTime),
            _ => Err(BundleError::Malformed { what: "KEM prekey", reason: "unknown kind" }),
        }
    }
}

/// A signed ML-KEM-768 prekey (public part).
#[derive(Clone, PartialEq, Eq)]
pub struct KemPreKey {
    /// Device-local id (its own id space, separate from X25519 prekeys).
    pub id: u32,
    /// Last resort or one-time.
    pub kind: KemPreKeyKind,
    /// The ML-KEM-768 encapsulation key.
    pub public: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
    /// Ed25519 signature by the identity over [`KemPreKey::signed_message`].
    pub signature: [u8; 64],
}

impl KemPreKey {
    /// The bytes the identity signs: `label ‖ id ‖ kind ‖ public`. The kind is signed so a relay
    /// can't present a one-time key as a last-resort one or the reverse.
    pub fn signed_message(
        id: u32,
        kind: KemPreKeyKind,
        public: &[u8; KEM_PUBLIC_KEY_LEN],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(KEM_PREKEY_LABEL.len() + 5 + KEM_PUBLIC_KEY_LEN);
        m.extend_from_slice(KEM_PREKEY_LABEL);
        m.put_u32(id);
        m.push(kind.to_byte());
        m.extend_from_slice(public.as_slice());
        m
    }

    /// Checks the signature under `identity` and that the key passes the FIPS 203
    /// encapsulation-key check.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), BundleError> {
        identity.verify(
            &Self::signed_message(self.id, self.kind, &self.public),
            &self.signature,
            "KEM prekey",
        )?;
        self.encapsulation_key().map(|_| ())
    }

    /// Parses the encapsulation key, applying the FIPS 203 modulus check.
    pub(crate) fn encapsulation_key(&self) -> Result<EncapsulationKey<MlKem768>, BundleError> {
        let key = ml_kem::Key::<EncapsulationKey<MlKem768>>::from(*self.public);
        EncapsulationKey::<MlKem768>::new(&key)
            .map_err(|_| BundleError::InvalidKey { what: "KEM prekey" })
    }

    /// Appends the fixed 1,253-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.id);
        out.push(self.kind.to_byte());
        out.extend_from_slice(self.public.as_slice());
        out.extend_from_slice(&self.signature);
    }

    /// The fixed 1,253-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEM_PREKEY_LEN);
        self.write(&mut out);
        out
    }

    /// Decodes exactly one encoded KEM prekey (no signature check; see [`Self::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut r = Reader::new(bytes);
        let k = Self::read(&mut r)?;
        r.finish().map_err(|_| BundleError::InvalidLength { what: "KEM prekey" })?;
        Ok(k)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BundleError> {
        let len = BundleError::InvalidLength { what: "KEM prekey" };
        let id = r.u32().map_err(|_| len.clone())?;
        let kind = KemPreKeyKind::from_byte(r.u8().map_err(|_| len.clone())?)?;
        let public = Box::new(r.array::<KEM_PUBLIC_KEY_LEN>().map_err(|_| len.clone())?);
        let signature = r.array().map_err(|_| len)?;
        Ok(Self { id, kind, public, signature })
    }
}

impl std::fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemPreKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("public", &hex_prefix(self.public.as_slice()))
            .finish_non_exhaustive()
    }
}
