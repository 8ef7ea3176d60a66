//! Sender keys for groups (docs/PROTOCOL.md §16), sans-I/O: how one device encrypts a group
//! message once for every member device, as Signal and WhatsApp do.
//!
//! Each member device keeps, per group, a sending chain: a 32-byte chain key that ratchets
//! forward with every message (`KDF_CK`, the same as the Double Ratchet's), and an Ed25519
//! signing key. It hands the chain's current state ([`Distribution`]: group, key id, iteration,
//! chain key, signing public key) to every other member device over the pairwise sessions,
//! before its first message and again after every rotation; a rotation is a new key id with a
//! fresh chain and signing key, so a removed member, who holds only the old one, reads nothing
//! sent after it.
//!
//! A group message is `version ‖ group id ‖ key id ‖ iteration ‖ AEAD ciphertext ‖ signature`:
//! ChaCha20-Poly1305 under the iteration's message key (key and nonce expanded by HKDF, the
//! 41-byte header as associated data), and an Ed25519 signature by the sender's signing key
//! over everything before it. Receivers check the signature first, then the AEAD.
//!
//! Guarantees, as for the 1:1 ratchet:
//! - a decryption that fails for any reason leaves the receiver state exactly as it was (new
//!   values are computed into locals and kept only once the message authenticated);
//! - each message key is used once and deleted; chain keys are overwritten as they advance;
//! - at most [`MAX_SKIPPED_KEYS`] skipped keys are kept per sender key (oldest evicted first),
//!   and a message may jump at most [`MAX_FORWARD`] iterations, so no input can force more work
//!   or memory than that;
//! - every secret is zeroized on drop and none appears in `Debug`.

use std::collections::{BTreeMap, VecDeque};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::message::{MAX_PLAINTEXT_LEN, TAG_LEN};
use crate::ratchet::kdf_ck;

/// Version byte of sender-key messages and distributions.
pub const SENDER_KEY_VERSION: u8 = 1;
/// `version ‖ group id [32] ‖ key id u32 ‖ iteration u32`: the AEAD's associated data.
pub const GROUP_HEADER_LEN: usize = 1 + 32 + 4 + 4;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// `version ‖ group id ‖ key id ‖ iteration ‖ chain key [32] ‖ signing public key [32]`.
pub const DISTRIBUTION_LEN: usize = GROUP_HEADER_LEN + 32 + 32;
/// Most iterations one message may jump ahead of the receiver's chain (libsignal's figure).
pub const MAX_FORWARD: u32 = 25_000;
/// Most skipped message keys kept per sender key; the oldest go first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// HKDF info of the message-key expansion.
pub const SENDER_KEY_INFO: &[u8] = b"Hush_SenderKey_MessageKeys";

type Key32 = Zeroizing<[u8; 32]>;

/// Why a sender-key operation failed. Codes are stable (PROTOCOL.md §11).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SenderKeyError {
    /// The bytes are not a well-formed sender-key message or distribution.
    #[error("malformed sender-key message: {0}")]
    Malformed(&'static str),
    /// A version this build does not speak.
    #[error("unsupported sender-key version {0}")]
    UnsupportedVersion(u8),
    /// The message is for another group, or another key id, than the state it was given to.
    #[error("the message belongs to another group or sender key")]
    WrongKey,
    /// The signature does not verify under the sender's signing key.
    #[error("bad signature on a group message")]
    BadSignature,
    /// Already decrypted, or older than the keys still kept.
    #[error("duplicate group message: already received, or its key is no longer kept")]
    Duplicate,
    /// The message jumps further ahead than [`MAX_FORWARD`].
    #[error("group message jumps {jump} iterations; the limit is {limit}")]
    TooFarAhead {
        /// How far ahead.
        jump: u64,
        /// The limit.
        limit: u32,
    },
    /// The AEAD did not authenticate (a correctly signed message never fails here).
    #[error("group message decryption failed")]
    DecryptionFailed,
    /// The plaintext exceeds the protocol limit.
    #[error("group message too large: {0} bytes")]
    TooLarge(usize),
    /// The sending chain reached 2^32 - 1 messages; rotate.
    #[error("sender chain exhausted; rotate the sender key")]
    ChainExhausted,
}

impl SenderKeyError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_message",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::WrongKey => "unknown_sender_key",
            Self::BadSignature => "bad_signature",
            Self::Duplicate => "duplicate_message",
            Self::TooFarAhead { .. } => "too_far_ahead",
            Self::DecryptionFailed => "decryption_failed",
            Self::TooLarge(_) => "too_large",
            Self::ChainExhausted => "chain_exhausted",
        }
    }
}

/// The header every group message starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The group.
    pub group_id: [u8; 32],
    /// Which of the sender's keys (a new one per rotation).
    pub key_id: u32,
    /// The chain iteration this message used.
    pub iteration: u32,
}

impl GroupHeader {
    /// The 41-byte encoding.
    pub fn encode(&self) -> [u8; GROUP_HEADER_LEN] {
        let mut out = [0u8; GROUP_HEADER_LEN];
        let (v, rest) = out.split_at_mut(1);
        v.copy_from_slice(&[SENDER_KEY_VERSION]);
        let (g, rest) = rest.split_at_mut(32);
        g.copy_from_slice(&self.group_id);
        let (k, i) = rest.split_at_mut(4);
        k.copy_from_slice(&self.key_id.to_be_bytes());
        i.copy_from_slice(&self.iteration.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), SenderKeyError> {
        let (&version, rest) = bytes.split_first().ok_or(SenderKeyError::Malformed("empty"))?;
        if version != SENDER_KEY_VERSION {
            return Err(SenderKeyError::UnsupportedVersion(version));
        }
        let (group_id, rest) =
            rest.split_first_chunk::<32>().ok_or(SenderKeyError::Malformed("short header"))?;
        let (key_id, rest) =
            rest.split_first_chunk::<4>().ok_or(SenderKeyError::Malformed("short header"))?;
        let (iteration, rest) =
            rest.split_first_chunk::<4>().ok_or(SenderKeyError::Malformed("short header"))?;
        let header = Self {
            group_id: *group_id,
            key_id: u32::from_be_bytes(*key_id),
            iteration: u32::from_be_bytes(*iteration),
        };
        Ok((header, rest))
    }
}

/// What a member device hands its group peers over the pairwise sessions: enough to decrypt
/// its messages from `iteration` on, and to check their signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Group, key id and the first iteration the chain key opens.
    pub header: GroupHeader,
    /// The chain key at `iteration`.
    pub chain_key: Key32,
    /// The sender's signing public key for this key id.
    pub signing_key: [u8; 32],
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("header", &self.header)
            .field("chain_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Distribution {
    /// The 105-byte encoding.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(DISTRIBUTION_LEN));
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(self.chain_key.as_slice());
        out.extend_from_slice(&self.signing_key);
        out
    }

    /// Decodes a distribution (exact length; the signing key must be the canonical encoding of
    /// an Ed25519 point not of small order, [`crate::signatures::signing_key`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, SenderKeyError> {
        let (header, rest) = GroupHeader::decode(bytes)?;
        let (chain_key, signing_key) =
            rest.split_first_chunk::<32>().ok_or(SenderKeyError::Malformed("short"))?;
        let signing_key: [u8; 32] =
            signing_key.try_into().map_err(|_| SenderKeyError::Malformed("length"))?;
        crate::signatures::signing_key(&signing_key)
            .ok_or(SenderKeyError::Malformed("signing key"))?;
        Ok(Self { header, chain_key: Zeroizing::new(*chain_key), signing_key })
    }
}

/// This device's sending chain in one group.
pub struct SenderKey {
    header: GroupHeader,
    chain_key: Key32,
    signing: SigningKey,
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKey").field("header", &self.header).finish_non_exhaustive()
    }
}

impl SenderKey {
    /// A fresh sender key for `group_id` with key id `key_id` (a rotation picks a new one).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, group_id: [u8; 32], key_id: u32) -> Self {
        let mut chain = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(chain.as_mut_slice());
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut_slice());
        Self::from_secrets(group_id, key_id, 0, &chain, &seed)
    }

    /// A sender key from its secrets (stored state, test vectors).
    pub fn from_secrets(
        group_id: [u8; 32],
        key_id: u32,
        iteration: u32,
        chain_key: &[u8; 32],
        signing_seed: &[u8; 32],
    ) -> Self {
        Self {
            header: GroupHeader { group_id, key_id, iteration },
            chain_key: Zeroizing::new(*chain_key),
            signing: SigningKey::from_bytes(signing_seed),
        }
    }

    /// The group, key id and next iteration.
    pub fn header(&self) -> GroupHeader {
        self.header
    }

    /// What to hand the other member devices now (they can read from the next message on).
    pub fn distribution(&self) -> Distribution {
        Distribution {
            header: self.header,
            chain_key: self.chain_key.clone(),
            signing_key: self.signing.verifying_key().to_bytes(),
        }
    }

    /// Encrypts and signs one group message; the chain moves forward.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SenderKeyError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SenderKeyError::TooLarge(plaintext.len()));
        }
        let next_iteration =
            self.header.iteration.checked_add(1).ok_or(SenderKeyError::ChainExhausted)?;
        let (message_key, next_chain) = kdf_ck(&self.chain_key);
        let header = self.header.encode();
        let mut out =
            Vec::with_capacity(GROUP_HEADER_LEN + plaintext.len() + TAG_LEN + SIGNATURE_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        let (cipher, nonce) = aead(&message_key);
        let (_, body) = out.split_at_mut(GROUP_HEADER_LEN);
        // ChaCha20-Poly1305 only fails past 256 GiB of plaintext.
        let tag = cipher
            .encrypt_inout_detached(&nonce, &header, body.into())
            .map_err(|_| SenderKeyError::TooLarge(plaintext.len()))?;
        out.extend_from_slice(&tag);
        let signature = self.signing.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        self.chain_key = next_chain;
        self.header.iteration = next_iteration;
        Ok(out)
    }
}

impl SenderKey {
    /// The persisted state: `0x01 ‖ group header (41) ‖ chain key ‖ signing seed` (105 bytes;
    /// PROTOCOL.md §10.4). Wiped on drop.
    pub fn to_state_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + DISTRIBUTION_LEN));
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(self.chain_key.as_slice());
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// Reads [`SenderKey::to_state_bytes`].
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Self, SenderKeyError> {
        let rest = state_body(bytes)?;
        let (header, rest) = GroupHeader::decode(rest)?;
        let (chain, seed) =
            rest.split_first_chunk::<32>().ok_or(SenderKeyError::Malformed("short state"))?;
        let seed: &[u8; 32] =
            seed.try_into().map_err(|_| SenderKeyError::Malformed("state length"))?;
        Ok(Self::from_secrets(header.group_id, header.key_id, header.iteration, chain, seed))
    }
}

impl ReceivedKey {
    /// The persisted state: `0x01 ‖ group header (41) ‖ chain key ‖ signing public key ‖
    /// count u16 ‖ (iteration u32 ‖ key [32]) × count`, skipped keys oldest first. Wiped on drop.
    pub fn to_state_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 107 + 36 * self.order.len()));
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(self.chain_key.as_slice());
        out.extend_from_slice(self.verifying.as_bytes());
        let count = u16::try_from(self.order.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for i in self.order.iter().take(usize::from(count)) {
            if let Some(k) = self.skipped.get(i) {
                out.extend_from_slice(&i.to_be_bytes());
                out.extend_from_slice(k.as_slice());
            }
        }
        out
    }

    /// Reads [`ReceivedKey::to_state_bytes`].
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Self, SenderKeyError> {
        let short = SenderKeyError::Malformed("short state");
        let rest = state_body(bytes)?;
        let (header, rest) = GroupHeader::decode(rest)?;
        let (chain, rest) = rest.split_first_chunk::<32>().ok_or(short.clone())?;
        let (signing, rest) = rest.split_first_chunk::<32>().ok_or(short.clone())?;
        let (count, mut rest) = rest.split_first_chunk::<2>().ok_or(short.clone())?;
        let count = usize::from(u16::from_be_bytes(*count));
        if count > MAX_SKIPPED_KEYS || rest.len() != count * 36 {
            return Err(SenderKeyError::Malformed("state length"));
        }
        let d = Distribution { header, chain_key: Zeroizing::new(*chain), signing_key: *signing };
        let mut key = Self::new(&d)?;
        while let Some((i, r)) = rest.split_first_chunk::<4>() {
            let (k, r) = r.split_first_chunk::<32>().ok_or(short.clone())?;
            let i = u32::from_be_bytes(*i);
            if key.skipped.insert(i, Zeroizing::new(*k)).is_none() {
                key.order.push_back(i);
            }
            rest = r;
        }
        Ok(key)
    }
}

/// Version byte of the persisted sender-key states.
const STATE_VERSION: u8 = 1;

fn state_body(bytes: &[u8]) -> Result<&[u8], SenderKeyError> {
    match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => Ok(rest),
        Some((&v, _)) => Err(SenderKeyError::UnsupportedVersion(v)),
        None => Err(SenderKeyError::Malformed("empty state")),
    }
}

/// ChaCha20-Poly1305 and its nonce for one message key.
fn aead(message_key: &[u8; 32]) -> (ChaCha20Poly1305, Nonce) {
    crate::ratchet::aead_for(message_key, SENDER_KEY_INFO)
}

/// A group message's signed part and its signature.
pub fn split_signature(message: &[u8]) -> Result<(&[u8], Signature), SenderKeyError> {
    let split =
        message.len().checked_sub(SIGNATURE_LEN).ok_or(SenderKeyError::Malformed("length"))?;
    let (signed, signature) = message.split_at(split);
    let signature =
        Signature::from_slice(signature).map_err(|_| SenderKeyError::Malformed("signature"))?;
    Ok((signed, signature))
}

/// Checks the signatures of many group messages, each under its key: whether each is valid,
/// by the one rule of [`crate::signatures`], in batches per key.
pub fn verify_all(items: &[(&[u8], VerifyingKey)]) -> Vec<bool> {
    let mut valid = vec![false; items.len()];
    let mut well_formed = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (i, (message, key)) in items.iter().enumerate() {
        if let Ok((signed, signature)) = split_signature(message) {
            well_formed.push((signed, signature, *key));
            positions.push(i);
        }
    }
    for (i, ok) in positions.into_iter().zip(crate::signatures::verify_all(&well_formed)) {
        if let Some(v) = valid.get_mut(i) {
            *v = ok;
        }
    }
    valid
}

/// The group header of a group message, read without any key (to find the sender key it
/// needs).
pub fn peek_header(message: &[u8]) -> Result<GroupHeader, SenderKeyError> {
    if message.len() < GROUP_HEADER_LEN + TAG_LEN + SIGNATURE_LEN {
        return Err(SenderKeyError::Malformed("too short"));
    }
    GroupHeader::decode(message).map(|(h, _)| h)
}

/// Another member device's sending chain, as this device received it.
pub struct ReceivedKey {
    header: GroupHeader,
    chain_key: Key32,
    verifying: VerifyingKey,
    /// Keys of iterations skipped over, kept for late messages; oldest first.
    skipped: BTreeMap<u32, Key32>,
    order: VecDeque<u32>,
}

impl std::fmt::Debug for ReceivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedKey")
            .field("header", &self.header)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

impl ReceivedKey {
    /// The chain a distribution opens.
    pub fn new(d: &Distribution) -> Result<Self, SenderKeyError> {
        let verifying = crate::signatures::signing_key(&d.signing_key)
            .ok_or(SenderKeyError::Malformed("signing key"))?;
        Ok(Self {
            header: d.header,
            chain_key: d.chain_key.clone(),
            verifying,
            skipped: BTreeMap::new(),
            order: VecDeque::new(),
        })
    }

    /// Group, key id and the next iteration expected.
    pub fn header(&self) -> GroupHeader {
        self.header
    }

    /// The key this chain's messages are signed with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying
    }

    /// Checks the signature, then decrypts. On any error the state is unchanged.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, SenderKeyError> {
        self.decrypt_checked(message, None)
    }

    /// [`Self::decrypt`], except that the signature check is skipped when `checked` is this
    /// chain's signing key: the caller already verified this very message under it (with
    /// [`verify_all`], for a whole batch at once).
    pub fn decrypt_checked(
        &mut self,
        message: &[u8],
        checked: Option<&VerifyingKey>,
    ) -> Result<Vec<u8>, SenderKeyError> {
        let header = peek_header(message)?;
        if header.group_id != self.header.group_id || header.key_id != self.header.key_id {
            return Err(SenderKeyError::WrongKey);
        }
        let (signed, signature) = split_signature(message)?;
        if checked != Some(&self.verifying)
            && !crate::signatures::verify(&self.verifying, signed, &signature)
        {
            return Err(SenderKeyError::BadSignature);
        }
        let ciphertext = signed.get(GROUP_HEADER_LEN..).unwrap_or_default();

        // Find the message key without changing anything yet.
        let n = header.iteration;
        let mut new_skipped: Vec<(u32, Key32)> = Vec::new();
        let (message_key, next_chain) = if n < self.header.iteration {
            let key = self.skipped.get(&n).ok_or(SenderKeyError::Duplicate)?;
            (key.clone(), None)
        } else {
            let jump = u64::from(n - self.header.iteration);
            if jump > u64::from(MAX_FORWARD) {
                return Err(SenderKeyError::TooFarAhead { jump, limit: MAX_FORWARD });
            }
            let mut chain = self.chain_key.clone();
            for i in self.header.iteration..n {
                let (mk, next) = kdf_ck(&chain);
                // Only the newest keys could be kept anyway: don't compute into what would be
                // evicted at once.
                if n - i <= MAX_SKIPPED_KEYS as u32 {
                    new_skipped.push((i, mk));
                }
                chain = next;
            }
            let (mk, next) = kdf_ck(&chain);
            (mk, Some(next))
        };

        let split =
            ciphertext.len().checked_sub(TAG_LEN).ok_or(SenderKeyError::Malformed("short"))?;
        if split > MAX_PLAINTEXT_LEN {
            return Err(SenderKeyError::TooLarge(split));
        }
        let (body, tag) = ciphertext.split_at(split);
        let tag = Tag::try_from(tag).map_err(|_| SenderKeyError::DecryptionFailed)?;
        let mut plaintext = body.to_vec();
        let (cipher, nonce) = aead(&message_key);
        cipher
            .decrypt_inout_detached(&nonce, &header.encode(), plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| SenderKeyError::DecryptionFailed)?;

        // Authenticated: commit.
        match next_chain {
            None => {
                self.skipped.remove(&n);
                self.order.retain(|&i| i != n);
            }
            Some(next) => {
                for (i, mk) in new_skipped {
                    self.skipped.insert(i, mk);
                    self.order.push_back(i);
                }
                while self.order.len() > MAX_SKIPPED_KEYS {
                    if let Some(old) = self.order.pop_front() {
                        self.skipped.remove(&old);
                    }
                }
                self.chain_key = next;
                self.header.iteration = n.saturating_add(1);
            }
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::Strategy;
    use rand::SeedableRng;

    fn pair(seed: u64) -> (SenderKey, ReceivedKey) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let s = SenderKey::generate(&mut rng, [7; 32], 1);
        let r =
            ReceivedKey::new(&Distribution::decode(&s.distribution().encode()).unwrap()).unwrap();
        (s, r)
    }

    #[test]
    fn batch_checks_find_exactly_the_bad_signatures() {
        let (mut s1, r1) = pair(1);
        let (mut s2, r2) = pair(2);
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut keys = Vec::new();
        for i in 0..150 {
            let (s, r) = if i % 3 == 0 { (&mut s2, &r2) } else { (&mut s1, &r1) };
            messages.push(s.encrypt(format!("m{i}").as_bytes()).unwrap());
            keys.push(r.verifying_key());
        }
        let items = |m: &[Vec<u8>]| -> Vec<(Vec<u8>, VerifyingKey)> {
            m.iter().cloned().zip(keys.iter().copied()).collect()
        };
        let check = |list: &[(Vec<u8>, VerifyingKey)]| {
            verify_all(&list.iter().map(|(m, k)| (m.as_slice(), *k)).collect::<Vec<_>>())
        };
        assert!(check(&items(&messages)).iter().all(|v| *v));
        // A flipped byte, a message under the wrong key, one too short to hold a signature.
        let mut bad = items(&messages);
        bad[5].0[50] ^= 1;
        bad[70].1 = r2.verifying_key();
        bad[140].0.truncate(10);
        let valid = check(&bad);
        let wrong: Vec<usize> = (0..150).filter(|i| !valid[*i]).collect();
        assert_eq!(wrong, [5, 70, 140]);
        // A message checked under another key than the chain's is checked again, and refused.
        let (_, mut r) = pair(1);
        let mut forged = messages[1].clone();
        forged[50] ^= 1;
        let other = r2.verifying_key();
        assert_eq!(r.decrypt_checked(&forged, Some(&other)), Err(SenderKeyError::BadSignature));
        assert_eq!(r.decrypt_checked(&messages[1], Some(&keys[1])).unwrap(), b"m1");
    }

    #[test]
    fn a_stored_key_the_signing_key_rule_refuses_fails_with_its_own_error() {
        // The client drops such a stored key (client/core.rs) by this exact error.
        let (_, r) = pair(3);
        let mut state = r.to_state_bytes().to_vec();
        let at = 1 + GROUP_HEADER_LEN + 32;
        let weak = curve25519_dalek::constants::EIGHT_TORSION[1].compress().to_bytes();
        state[at..at + 32].copy_from_slice(&weak);
        assert_eq!(
            ReceivedKey::from_state_bytes(&state).unwrap_err(),
            SenderKeyError::Malformed("signing key")
        );
    }

    #[test]
    fn states_round_trip_with_skipped_keys() {
        let (mut s, mut r) = pair(9);
        let msgs: Vec<_> = (0..5).map(|i| s.encrypt(&[i]).unwrap()).collect();
        r.decrypt(&msgs[3]).unwrap();
        let mut s2 = SenderKey::from_state_bytes(&s.to_state_bytes()).unwrap();
        let mut r2 = ReceivedKey::from_state_bytes(&r.to_state_bytes()).unwrap();
        assert_eq!(r2.decrypt(&msgs[1]).unwrap(), vec![1]);
        assert_eq!(r2.decrypt(&msgs[3]), Err(SenderKeyError::Duplicate));
        assert_eq!(r2.decrypt(&s2.encrypt(b"next").unwrap()).unwrap(), b"next");
        assert!(ReceivedKey::from_state_bytes(&[2]).is_err());
        assert!(SenderKey::from_state_bytes(&[1, 1]).is_err());
    }

    #[test]
    fn in_order_out_of_order_duplicates_and_tampering() {
        let (mut s, mut r) = pair(1);
        let m: Vec<Vec<u8>> =
            (0..5).map(|i| s.encrypt(format!("m{i}").as_bytes()).unwrap()).collect();
        assert_eq!(r.decrypt(&m[0]).unwrap(), b"m0");
        assert_eq!(r.decrypt(&m[3]).unwrap(), b"m3");
        assert_eq!(r.decrypt(&m[1]).unwrap(), b"m1");
        assert_eq!(r.decrypt(&m[1]).unwrap_err(), SenderKeyError::Duplicate);
        assert_eq!(r.decrypt(&m[3]).unwrap_err(), SenderKeyError::Duplicate);
        let mut bad = m[4].clone();
        bad[GROUP_HEADER_LEN] ^= 1;
        assert_eq!(r.decrypt(&bad).unwrap_err(), SenderKeyError::BadSignature);
        assert_eq!(r.decrypt(&m[2]).unwrap(), b"m2");
        assert_eq!(r.decrypt(&m[4]).unwrap(), b"m4");
    }

    #[test]
    fn another_key_or_group_is_refused_without_state_change() {
        let (mut s, mut r) = pair(2);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let mut rotated = SenderKey::generate(&mut rng, [7; 32], 2);
        let later = rotated.encrypt(b"after the rotation").unwrap();
        assert_eq!(r.decrypt(&later).unwrap_err(), SenderKeyError::WrongKey);
        // A forged message under the right ids but another signing key.
        let mut forger = SenderKey::from_secrets([7; 32], 1, 0, &[0; 32], &[1; 32]);
        assert_eq!(
            r.decrypt(&forger.encrypt(b"x").unwrap()).unwrap_err(),
            SenderKeyError::BadSignature
        );
        assert_eq!(r.header().iteration, 0);
        assert_eq!(r.decrypt(&s.encrypt(b"ok").unwrap()).unwrap(), b"ok");
    }

    #[test]
    fn jumps_are_bounded() {
        let (_, mut r) = pair(3);
        let mut far = SenderKey::from_secrets([7; 32], 1, MAX_FORWARD + 1, &[0; 32], &[1; 32]);
        let m = far.encrypt(b"far").unwrap();
        assert!(matches!(
            r.decrypt(&m),
            Err(SenderKeyError::BadSignature | SenderKeyError::TooFarAhead { .. })
        ));
        // With the right signer: too far ahead, checked before any key is derived.
        let (mut s, mut r) = pair(4);
        let d = s.distribution();
        let mut ahead = SenderKey {
            header: GroupHeader { iteration: MAX_FORWARD + 1, ..d.header },
            chain_key: d.chain_key.clone(),
            signing: SigningKey::from_bytes(&s.signing.to_bytes()),
        };
        assert!(matches!(
            r.decrypt(&ahead.encrypt(b"x").unwrap()),
            Err(SenderKeyError::TooFarAhead { .. })
        ));
        assert_eq!(r.decrypt(&s.encrypt(b"y").unwrap()).unwrap(), b"y");
    }

    #[test]
    fn no_secret_in_debug() {
        let (s, r) = pair(5);
        let d = s.distribution();
        let secret = hex::encode(d.chain_key.as_slice());
        for text in [format!("{s:?}"), format!("{r:?}"), format!("{d:?}")] {
            assert!(!text.contains(&secret), "{text}");
            assert!(!text.contains(&format!("{:?}", d.chain_key.as_slice())), "{text}");
        }
    }

    proptest::proptest! {
        /// Any delivery order decrypts every message exactly once; the repeats are refused.
        #[test]
        fn any_order_decrypts_each_message_once(order in proptest::sample::subsequence((0..12usize).collect::<Vec<_>>(), 12).prop_shuffle(), repeat in 0..12usize) {
            let (mut s, mut r) = pair(6);
            let m: Vec<Vec<u8>> = (0..12).map(|i| s.encrypt(&[i as u8; 3]).unwrap()).collect();
            for &i in &order {
                proptest::prop_assert_eq!(r.decrypt(&m[i]).unwrap(), vec![i as u8; 3]);
            }
            proptest::prop_assert_eq!(r.decrypt(&m[repeat]).unwrap_err(), SenderKeyError::Duplicate);
        }

        /// Arbitrary bytes never panic the decoders, and a refused message changes nothing.
        #[test]
        fn garbage_is_refused_without_state_change(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Distribution::decode(&bytes);
            let (mut s, mut r) = pair(7);
            proptest::prop_assert!(r.decrypt(&bytes).is_err());
            proptest::prop_assert_eq!(r.decrypt(&s.encrypt(b"still fine").unwrap()).unwrap(), b"still fine".to_vec());
        }
    }
}
