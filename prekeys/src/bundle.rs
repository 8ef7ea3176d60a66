//! Prekey bundles: everything an initiator needs to start a session with one device.
//!
//! A [`PreKeyBundle`] is untrusted input (it comes from the relay). The only way to obtain a
//! [`VerifiedBundle`], which the handshake requires, is [`PreKeyBundle::verify`]: it checks the
//! identity binding, the signed prekey's and KEM prekey's signatures and the KEM key itself.
//! Verification uses public data only, so the relay can run it on uploads too.

use ml_kem::{EncapsulationKey, MlKem768};

use crate::codec::Reader;
use crate::error::BundleError;
use crate::identity::{IdentityKey, SIGNED_IDENTITY_LEN};
use crate::prekey::{
    KEM_PREKEY_LEN, KemPreKey, ONE_TIME_PREKEY_LEN, OneTimePreKey, SIGNED_PREKEY_LEN, SignedPreKey,
};

/// Version byte of the bundle encoding.
pub const BUNDLE_VERSION: u8 = 1;
const FLAG_ONE_TIME: u8 = 0x01;
/// Encoded bundle length without a one-time prekey.
pub const BUNDLE_LEN_WITHOUT_ONE_TIME: usize =
    1 + SIGNED_IDENTITY_LEN + SIGNED_PREKEY_LEN + 1 + KEM_PREKEY_LEN;
/// Encoded bundle length with a one-time prekey.
pub const BUNDLE_LEN_WITH_ONE_TIME: usize = BUNDLE_LEN_WITHOUT_ONE_TIME + ONE_TIME_PREKEY_LEN;

/// A device's public prekey bundle, as fetched: not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The device's identity (binding already checked when decoded).
    pub identity: IdentityKey,
    /// The current signed prekey.
    pub signed_prekey: SignedPreKey,
    /// One one-time prekey, if the relay had any left.
    pub one_time_prekey: Option<OneTimePreKey>,
    /// A one-time KEM prekey, or the last-resort one.
    pub kem_prekey: KemPreKey,
}

impl PreKeyBundle {
    /// The versioned encoding (docs/PROTOCOL.md, "Prekey bundle").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUNDLE_LEN_WITH_ONE_TIME);
        out.push(BUNDLE_VERSION);
        out.extend_from_slice(&self.identity.encode_signed());
        self.signed_prekey.write(&mut out);
        match &self.one_time_prekey {
            Some(k) => {
                out.push(FLAG_ONE_TIME);
                k.write(&mut out);
            }
            None => out.push(0),
        }
        self.kem_prekey.write(&mut out);
        out
    }

    /// Decodes a bundle. Rejects unknown versions, wrong lengths, unknown flags and a bad
    /// identity binding; the prekey signatures are checked by [`Self::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() != BUNDLE_LEN_WITHOUT_ONE_TIME && bytes.len() != BUNDLE_LEN_WITH_ONE_TIME {
            // Check the version first so a future, longer format reports the right error.
            return match bytes.first() {
                Some(&v) if v != BUNDLE_VERSION => {
                    Err(BundleError::UnsupportedVersion { what: "bundle", version: v })
                }
                _ => Err(BundleError::InvalidLength { what: "bundle" }),
            };
        }
        let mut r = Reader::new(bytes);
        let len = BundleError::InvalidLength { what: "bundle" };
        let version = r.u8().map_err(|_| len.clone())?;
        if version != BUNDLE_VERSION {
            return Err(BundleError::UnsupportedVersion { what: "bundle", version });
        }
        let identity = IdentityKey::read_signed(&mut r)?;
        let signed_prekey = SignedPreKey::read(&mut r)?;
        let flags = r.u8().map_err(|_| len.clone())?;
        if flags & !FLAG_ONE_TIME != 0 {
            return Err(BundleError::Malformed { what: "bundle", reason: "unknown flag bits" });
        }
        let has_one_time = flags & FLAG_ONE_TIME != 0;
        let expected =
            if has_one_time { BUNDLE_LEN_WITH_ONE_TIME } else { BUNDLE_LEN_WITHOUT_ONE_TIME };
        if bytes.len() != expected {
            return Err(len);
        }
        let one_time_prekey = if has_one_time { Some(OneTimePreKey::read(&mut r)?) } else { None };
        let kem_prekey = KemPreKey::read(&mut r)?;
        r.finish().map_err(|_| len)?;
        Ok(Self { identity, signed_prekey, one_time_prekey, kem_prekey })
    }

    /// Verifies every signature and key in the bundle.
    pub fn verify(self) -> Result<VerifiedBundle, BundleError> {
        self.signed_prekey.verify(&self.identity)?;
        self.kem_prekey.verify(&self.identity)?;
        let kem_key = self.kem_prekey.encapsulation_key()?;
        Ok(VerifiedBundle { bundle: self, kem_key })
    }
}

/// A bundle whose signatures and keys have been checked. Only [`PreKeyBundle::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    bundle: PreKeyBundle,
    kem_key: EncapsulationKey<MlKem768>,
}

impl VerifiedBundle {
    /// The verified bundle's contents.
    pub fn bundle(&self) -> &PreKeyBundle {
        &self.bundle
    }

    /// The peer's identity.
    pub fn identity(&self) -> &IdentityKey {
        &self.bundle.identity
    }

    pub(crate) fn kem_key(&self) -> &EncapsulationKey<MlKem768> {
        &self.kem_key
    }
}
