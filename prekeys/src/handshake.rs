//! The hybrid X3DH + ML-KEM handshake, as the PQXDH specification describes it.
//!
//! Initiator (Alice), from Bob's verified bundle:
//! ```text
//! EK_A            fresh X25519 key            (the "base key")
//! (CT, SS)        = ML-KEM-768.Encaps(PQPK_B)  (one-time KEM prekey, else last resort)
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
//! SK  = HKDF-SHA256(salt = 0x00*32, ikm = 0xFF*32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
//!                   info = "Hush_PQXDH_X25519_SHA-256_ML-KEM-768", L = 32)
//! AD  = IK_A ‖ IK_B      (each the 64-byte identity encoding, Ed25519 ‖ X25519)
//! ```
//! Bob recomputes the same from his stored private keys and the [`InitialHeader`], which names
//! the prekeys used. Guarantees:
//! - [`initiate`] only accepts a [`VerifiedBundle`]; every DH output must be contributory;
//! - [`DevicePrekeys::respond`] does not change state, so a handshake whose first message then
//!   fails to decrypt leaves no trace; [`DevicePrekeys::commit`] consumes the one-time keys and
//!   records the base key, refusing a second commit of the same handshake.

use ml_kem::{Ciphertext, Decapsulate, MlKem768};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::bundle::VerifiedBundle;
use crate::codec::{Reader, Writer};
use crate::error::{BundleError, HandshakeError};
use crate::identity::{IDENTITY_KEY_LEN, IdentityKey, IdentityKeyPair};
use crate::kdf::hkdf_sha256;
use crate::prekey::{KEM_CIPHERTEXT_LEN, KemPreKeyKind};
use crate::store::DevicePrekeys;

/// HKDF info for the handshake secret.
pub const PQXDH_INFO: &[u8] = b"Hush_PQXDH_X25519_SHA-256_ML-KEM-768";
/// Length of the associated data: both 64-byte identity encodings.
pub const ASSOCIATED_DATA_LEN: usize = 2 * IDENTITY_KEY_LEN;
const FLAG_ONE_TIME: u8 = 0x01;

/// The 32-byte handshake secret SK. Zeroized on drop, hidden from `Debug`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; 32]);

impl SharedSecret {
    /// The secret bytes, for the Double Ratchet's initial root key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// What the initiator tells the responder about the handshake, carried in front of every
/// message until the responder replies.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialHeader {
    /// The initiator's identity (binding verified when decoded).
    pub identity: IdentityKey,
    /// The initiator's ephemeral X25519 public key EK_A.
    pub base_key: [u8; 32],
    /// Id of the responder's signed prekey used.
    pub signed_prekey_id: u32,
    /// Id of the responder's one-time prekey used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// Id of the responder's KEM prekey used.
    pub kem_prekey_id: u32,
    /// The ML-KEM-768 ciphertext CT.
    pub kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

impl InitialHeader {
    /// Appends the encoding:
    /// `identity(128) ‖ base_key(32) ‖ spk_id(4) ‖ flags(1) ‖ [opk_id(4)] ‖ kem_id(4) ‖ ct(1088)`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.identity.encode_signed());
        out.extend_from_slice(&self.base_key);
        out.put_u32(self.signed_prekey_id);
        match self.one_time_prekey_id {
            Some(id) => {
                out.push(FLAG_ONE_TIME);
                out.put_u32(id);
            }
            None => out.push(0),
        }
        out.put_u32(self.kem_prekey_id);
        out.extend_from_slice(self.kem_ciphertext.as_slice());
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        128 + 32 + 4 + 1 + if self.one_time_prekey_id.is_some() { 4 } else { 0 } + 4 + 1088
    }

    /// Reads one header from `r`, verifying the initiator's identity binding.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, BundleError> {
        let len = BundleError::InvalidLength { what: "initial header" };
        let identity = IdentityKey::read_signed(r)?;
        let base_key = r.array().map_err(|_| len.clone())?;
        let signed_prekey_id = r.u32().map_err(|_| len.clone())?;
        let flags = r.u8().map_err(|_| len.clone())?;
        if flags & !FLAG_ONE_TIME != 0 {
            return Err(BundleError::Malformed {
                what: "initial header",
                reason: "unknown flag bits",
            });
        }
        let one_time_prekey_id =
            if flags & FLAG_ONE_TIME != 0 { Some(r.u32().map_err(|_| len.clone())?) } else { None };
        let kem_prekey_id = r.u32().map_err(|_| len.clone())?;
        let kem_ciphertext = Box::new(r.array::<KEM_CIPHERTEXT_LEN>().map_err(|_| len)?);
        Ok(Self {
            identity,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            kem_ciphertext,
        })
    }
}

impl std::fmt::Debug for InitialHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialHeader")
            .field("identity", &self.identity)
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("one_time_prekey_id", &self.one_time_prekey_id)
            .field("kem_prekey_id", &self.kem_prekey_id)
            .finish_non_exhaustive()
    }
}

/// The initiator's result: the secret, the associated data and the header to send.
#[derive(Debug)]
pub struct InitiatorHandshake {
    /// The header to put in front of the first messages.
    pub header: InitialHeader,
    /// SK.
    pub shared_secret: SharedSecret,
    /// AD = IK_A ‖ IK_B.
    pub associated_data: [u8; ASSOCIATED_DATA_LEN],
    /// The responder's signed prekey, which is its first ratchet public key.
    pub their_ratchet_key: [u8; 32],
}

/// Runs the initiator side against a verified bundle. Draws 32 bytes (the ephemeral secret)
/// and then 32 bytes (the ML-KEM encapsulation randomness `m`) from `rng`.
pub fn initiate<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ours: &IdentityKeyPair,
    bundle: &VerifiedBundle,
) -> Result<InitiatorHandshake, HandshakeError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ephemeral.as_mut());
    let mut m = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(m.as_mut());
    initiate_with(ours, bundle, &ephemeral, &m)
}

/// [`initiate`] with its random inputs given explicitly (for test vectors).
pub(crate) fn initiate_with(
    ours: &IdentityKeyPair,
    bundle: &VerifiedBundle,
    ephemeral_secret: &[u8; 32],
    kem_randomness: &[u8; 32],
) -> Result<InitiatorHandshake, HandshakeError> {
    let b = bundle.bundle();
    let ephemeral = StaticSecret::from(*ephemeral_secret);
    let base_key = XPublicKey::from(&ephemeral).to_bytes();
    let (ct, ss) = bundle.kem_key().encapsulate_deterministic(&(*kem_randomness).into());

    let spk = XPublicKey::from(b.signed_prekey.public);
    let dh1 = ours.diffie_hellman(&b.signed_prekey.public);
    let dh2 = ephemeral.diffie_hellman(&XPublicKey::from(b.identity.dh_key()));
    let dh3 = ephemeral.diffie_hellman(&spk);
    let dh4 =
        b.one_time_prekey.as_ref().map(|k| ephemeral.diffie_hellman(&XPublicKey::from(k.public)));
    let mut dhs = vec![dh1, dh2, dh3];
    dhs.extend(dh4);
    let shared_secret = derive_secret(&dhs, ss.as_slice())?;

    let mut kem_ciphertext = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    kem_ciphertext.copy_from_slice(ct.as_slice());
    Ok(InitiatorHandshake {
        header: InitialHeader {
            identity: ours.public().clone(),
            base_key,
            signed_prekey_id: b.signed_prekey.id,
            one_time_prekey_id: b.one_time_prekey.as_ref().map(|k| k.id),
            kem_prekey_id: b.kem_prekey.id,
            kem_ciphertext,
        },
        shared_secret,
        associated_data: associated_data(ours.public(), &b.identity),
        their_ratchet_key: b.signed_prekey.public,
    })
}

/// The responder's result, not yet committed.
#[derive(Debug)]
pub struct ResponderHandshake {
    /// SK.
    pub shared_secret: SharedSecret,
    /// AD = IK_A ‖ IK_B.
    pub associated_data: [u8; ASSOCIATED_DATA_LEN],
    /// The initiator's identity.
    pub their_identity: IdentityKey,
    /// EK_A, which identifies this handshake.
    pub base_key: [u8; 32],
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_id: u32,
    ratchet_secret: RatchetSecret,
}

/// The signed prekey's private half, which becomes the responder's first ratchet key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RatchetSecret([u8; 32]);

impl RatchetSecret {
    /// The X25519 secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for RatchetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RatchetSecret(<redacted>)")
    }
}

impl ResponderHandshake {
    /// The responder's first ratchet key pair's secret (its signed prekey).
    pub fn ratchet_secret(&self) -> &RatchetSecret {
        &self.ratchet_secret
    }
}

impl DevicePrekeys {
    /// Runs the responder side for `header`. Does not change any state: call
    /// [`Self::commit`] once the first message has decrypted.
    pub fn respond(
        &self,
        ours: &IdentityKeyPair,
        header: &InitialHeader,
    ) -> Result<ResponderHandshake, HandshakeError> {
        let spk = self
            .signed
            .iter()
            .find(|r| r.public.id == header.signed_prekey_id)
            .ok_or(HandshakeError::UnknownSignedPreKey(header.signed_prekey_id))?;
        if spk.seen.contains(&header.base_key) {
            return Err(HandshakeError::Replayed);
        }
        let opk = match header.one_time_prekey_id {
            Some(id) => {
                Some(self.one_time.get(&id).ok_or(HandshakeError::UnknownOneTimePreKey(id))?)
            }
            None => None,
        };
        let kem = self
            .kem
            .get(&header.kem_prekey_id)
            .ok_or(HandshakeError::UnknownKemPreKey(header.kem_prekey_id))?;

        let ct = Ciphertext::<MlKem768>::from(*header.kem_ciphertext);
        let ss = kem.decapsulation_key().decapsulate(&ct);

        let their_identity_dh = XPublicKey::from(header.identity.dh_key());
        let base = XPublicKey::from(header.base_key);
        let spk_secret = StaticSecret::from(*spk.secret);
        let dh1 = spk_secret.diffie_hellman(&their_identity_dh);
        let dh2 = ours.diffie_hellman(&header.base_key);
        let dh3 = spk_secret.diffie_hellman(&base);
        let dh4 = opk.map(|k| StaticSecret::from(*k.secret).diffie_hellman(&base));
        let mut dhs = vec![dh1, dh2, dh3];
        dhs.extend(dh4);
        let shared_secret = derive_secret(&dhs, ss.as_slice())?;

        Ok(ResponderHandshake {
            shared_secret,
            associated_data: associated_data(&header.identity, ours.public()),
            their_identity: header.identity.clone(),
            base_key: header.base_key,
            signed_prekey_id: header.signed_prekey_id,
            one_time_prekey_id: header.one_time_prekey_id,
            kem_prekey_id: header.kem_prekey_id,
            ratchet_secret: RatchetSecret(*spk.secret),
        })
    }

    /// Consumes the one-time keys `accepted` used and remembers its base key. Fails, changing
    /// nothing, if the keys are already gone or the handshake was already committed.
    pub fn commit(&mut self, accepted: &ResponderHandshake) -> Result<(), HandshakeError> {
        let spk_index = self
            .signed
            .iter()
            .position(|r| r.public.id == accepted.signed_prekey_id)
            .ok_or(HandshakeError::UnknownSignedPreKey(accepted.signed_prekey_id))?;
        let seen = self.signed.get(spk_index).map(|r| r.seen.contains(&accepted.base_key));
        if seen != Some(false) {
            return Err(HandshakeError::Replayed);
        }
        if let Some(id) = accepted.one_time_prekey_id
            && !self.one_time.contains_key(&id)
        {
            return Err(HandshakeError::UnknownOneTimePreKey(id));
        }
        let kem_kind = self
            .kem
            .get(&accepted.kem_prekey_id)
            .map(|k| k.kind)
            .ok_or(HandshakeError::UnknownKemPreKey(accepted.kem_prekey_id))?;
        // All checks passed: apply every change.
        if let Some(id) = accepted.one_time_prekey_id {
            self.one_time.remove(&id);
        }
        if kem_kind == KemPreKeyKind::OneTime {
            self.kem.remove(&accepted.kem_prekey_id);
        }
        if let Some(r) = self.signed.get_mut(spk_index) {
            r.seen.insert(accepted.base_key);
        }
        Ok(())
    }
}

/// AD = IK_initiator ‖ IK_responder.
fn associated_data(initiator: &IdentityKey, responder: &IdentityKey) -> [u8; ASSOCIATED_DATA_LEN] {
    let mut ad = [0u8; ASSOCIATED_DATA_LEN];
    let (a, b) = ad.split_at_mut(IDENTITY_KEY_LEN);
    a.copy_from_slice(&initiator.to_bytes());
    b.copy_from_slice(&responder.to_bytes());
    ad
}

/// SK = HKDF(0x00*32, 0xFF*32 ‖ DH1 ‖ … ‖ SS, PQXDH_INFO), refusing low-order DH inputs.
fn derive_secret(
    dhs: &[x25519_dalek::SharedSecret],
    kem_secret: &[u8],
) -> Result<SharedSecret, HandshakeError> {
    if dhs.iter().any(|dh| !dh.was_contributory()) {
        return Err(HandshakeError::NonContributory);
    }
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 2)));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.as_bytes());
    }
    ikm.extend_from_slice(kem_secret);
    Ok(SharedSecret(*hkdf_sha256::<32>(&[0u8; 32], &ikm, PQXDH_INFO)))
}
