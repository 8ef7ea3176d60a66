//! Device identity keys.
//!
//! A Hush identity is two keys: an Ed25519 key that signs, and an X25519 key that takes part in
//! the handshake's Diffie-Hellman. They are bound by a signature of the Ed25519 key over the
//! X25519 key (label `Hush_IdentityBinding_v1`), so the Ed25519 key is the single root of a
//! device's identity: whoever holds it vouches for the DH key, and nobody can pair someone else's
//! Ed25519 key with their own DH key. We chose this over XEdDSA because both primitives are used
//! exactly as their well-reviewed crates ship them, with no birational-map code of our own.
//!
//! Guarantees: an [`IdentityKey`] value always holds a valid, non-weak Ed25519 key whose binding
//! signature over the X25519 key verified (strictly). Secrets live only in [`IdentityKeyPair`],
//! are zeroized on drop and never appear in `Debug`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::Reader;
use crate::error::BundleError;

/// Domain-separation label for the identity binding signature.
pub const IDENTITY_BINDING_LABEL: &[u8] = b"Hush_IdentityBinding_v1";
/// Length of [`IdentityKey::to_bytes`]: Ed25519 public key ‖ X25519 public key.
pub const IDENTITY_KEY_LEN: usize = 64;
/// Length of [`IdentityKey::encode_signed`]: the identity key ‖ its binding signature.
pub const SIGNED_IDENTITY_LEN: usize = 128;
/// Version byte of the persisted [`IdentityKeyPair`] format.
pub const IDENTITY_STATE_VERSION: u8 = 1;
/// Length of the persisted [`IdentityKeyPair`] format.
pub const IDENTITY_STATE_LEN: usize = 65;

/// A device's public identity: Ed25519 signing key, X25519 DH key, and the binding signature.
#[derive(Clone)]
pub struct IdentityKey {
    signing: VerifyingKey,
    dh: [u8; 32],
    binding: [u8; 64],
}

impl IdentityKey {
    /// The Ed25519 public key (32 bytes). The relay authenticates devices with it.
    pub fn signing_key(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The X25519 public key used in the handshake.
    pub fn dh_key(&self) -> [u8; 32] {
        self.dh
    }

    /// The 64-byte identity encoding `Ed25519 ‖ X25519`, used in the handshake's associated data,
    /// in safety numbers and to compare identities.
    pub fn to_bytes(&self) -> [u8; IDENTITY_KEY_LEN] {
        let mut out = [0u8; IDENTITY_KEY_LEN];
        let (ed, x) = out.split_at_mut(32);
        ed.copy_from_slice(self.signing.as_bytes());
        x.copy_from_slice(&self.dh);
        out
    }

    /// The 128-byte encoding carried in bundles and initial messages:
    /// `Ed25519 ‖ X25519 ‖ binding signature`.
    pub fn encode_signed(&self) -> [u8; SIGNED_IDENTITY_LEN] {
        let mut out = [0u8; SIGNED_IDENTITY_LEN];
        let (id, sig) = out.split_at_mut(IDENTITY_KEY_LEN);
        id.copy_from_slice(&self.to_bytes());
        sig.copy_from_slice(&self.binding);
        out
    }

    /// Decodes and verifies a 128-byte signed identity.
    pub fn decode_signed(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut r = Reader::new(bytes);
        let identity = Self::read_signed(&mut r)?;
        r.finish().map_err(|_| BundleError::InvalidLength { what: "identity key" })?;
        Ok(identity)
    }

    /// Reads a signed identity from `r`, verifying the binding signature.
    pub(crate) fn read_signed(r: &mut Reader<'_>) -> Result<Self, BundleError> {
        let len = BundleError::InvalidLength { what: "identity key" };
        let ed: [u8; 32] = r.array().map_err(|_| len.clone())?;
        let dh: [u8; 32] = r.array().map_err(|_| len.clone())?;
        let binding: [u8; 64] = r.array().map_err(|_| len)?;
        let signing = VerifyingKey::from_bytes(&ed)
            .map_err(|_| BundleError::InvalidKey { what: "identity signing key" })?;
        if signing.is_weak() {
            return Err(BundleError::InvalidKey { what: "identity signing key" });
        }
        let identity = Self { signing, dh, binding };
        identity.verify(&binding_message(&dh), &binding, "identity binding")?;
        Ok(identity)
    }

    /// Verifies an Ed25519 signature by this identity (strict verification: no malleable or
    /// small-order encodings).
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; 64],
        what: &'static str,
    ) -> Result<(), BundleError> {
        let sig = Signature::from_bytes(signature);
        self.signing.verify_strict(message, &sig).map_err(|_| BundleError::BadSignature { what })
    }
}

impl PartialEq for IdentityKey {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}
impl Eq for IdentityKey {}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", hex_prefix(&self.to_bytes()))
    }
}

/// A device's private identity. Zeroized on drop; `Debug` shows only the public key.
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh: StaticSecret,
    public: IdentityKey,
}

impl IdentityKeyPair {
    /// Generates a fresh identity. Draws 32 bytes (the Ed25519 seed) and then 32 bytes (the
    /// X25519 secret) from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut ed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ed.as_mut());
        let mut x = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(x.as_mut());
        Self::from_secrets(&ed, &x)
    }

    /// Rebuilds an identity from its Ed25519 seed and X25519 secret.
    pub fn from_secrets(ed25519_seed: &[u8; 32], x25519_secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(ed25519_seed);
        let dh = StaticSecret::from(*x25519_secret);
        let dh_public = XPublicKey::from(&dh).to_bytes();
        let binding = signing.sign(&binding_message(&dh_public)).to_bytes();
        let public = IdentityKey { signing: signing.verifying_key(), dh: dh_public, binding };
        Self { signing, dh, public }
    }

    /// The public identity.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    /// Signs `message` with the Ed25519 identity key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// X25519 with the identity DH key.
    pub(crate) fn diffie_hellman(&self, their_public: &[u8; 32]) -> x25519_dalek::SharedSecret {
        self.dh.diffie_hellman(&XPublicKey::from(*their_public))
    }

    /// The versioned 65-byte persisted form: `0x01 ‖ Ed25519 seed ‖ X25519 secret`.
    pub fn to_state_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(IDENTITY_STATE_LEN));
        out.push(IDENTITY_STATE_VERSION);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out
    }

    /// Restores an identity saved by [`IdentityKeyPair::to_state_bytes`].
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut r = Reader::new(bytes);
        let len = BundleError::InvalidLength { what: "identity state" };
        let version = r.u8().map_err(|_| len.clone())?;
        if version != IDENTITY_STATE_VERSION {
            return Err(BundleError::UnsupportedVersion { what: "identity state", version });
        }
        let ed = Zeroizing::new(r.array::<32>().map_err(|_| len.clone())?);
        let x = Zeroizing::new(r.array::<32>().map_err(|_| len.clone())?);
        r.finish().map_err(|_| len)?;
        Ok(Self::from_secrets(&ed, &x))
    }
}

impl std::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

fn binding_message(dh_public: &[u8; 32]) -> Vec<u8> {
    [IDENTITY_BINDING_LABEL, dh_public.as_slice()].concat()
}

/// The first bytes of a public value as hex, for `Debug` output that identifies without dumping.
pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>() + "…"
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn signed_identity_round_trips_and_rejects_tampering() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let enc = id.public().encode_signed();
        assert_eq!(IdentityKey::decode_signed(&enc).unwrap(), *id.public());
        for i in 0..enc.len() {
            let mut bad = enc;
            bad[i] ^= 0x01;
            assert!(IdentityKey::decode_signed(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert_eq!(IdentityKey::decode_signed(&enc[..127]).unwrap_err().code(), "invalid_length");
    }

    #[test]
    fn state_round_trips() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let restored = IdentityKeyPair::from_state_bytes(&id.to_state_bytes()).unwrap();
        assert_eq!(restored.public(), id.public());
        let mut bad = id.to_state_bytes().to_vec();
        bad[0] = 9;
        assert_eq!(
            IdentityKeyPair::from_state_bytes(&bad).unwrap_err().code(),
            "unsupported_version"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let id = IdentityKeyPair::generate(&mut rng);
        let dbg = format!("{id:?}");
        let state = id.to_state_bytes();
        let ed_hex = hex::encode(&state[1..33]);
        let x_hex = hex::encode(&state[33..65]);
        assert!(!dbg.contains(&ed_hex[..12]) && !dbg.contains(&x_hex[..12]));
        assert!(!dbg.contains(&format!("{:?}", &state[1..33])));
    }
}
