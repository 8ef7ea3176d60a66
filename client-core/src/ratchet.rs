//! The Double Ratchet (Signal specification, revision 4), sans-I/O.
//!
//! - `KDF_RK(rk, dh)  = HKDF-SHA256(salt = rk, ikm = dh, info = "Hush_Ratchet_Root")` → 64 bytes:
//!   new root key ‖ new chain key.
//! - `KDF_CK(ck)      = (HMAC-SHA256(ck, 0x01), HMAC-SHA256(ck, 0x02))` → message key, next chain key.
//! - `ENCRYPT(mk, …)` = ChaCha20-Poly1305 with key ‖ nonce = HKDF-SHA256(salt = 0x00*32, ikm = mk,
//!   info = "Hush_Ratchet_MessageKeys") → 44 bytes, and AD = handshake AD ‖ 42-byte header.
//!
//! One deliberate, wire-invisible choice: the sending half of a DH ratchet step runs at the next
//! encryption instead of inside decryption (as vodozemac does). Decryption therefore needs no
//! randomness, and for every honest peer the messages are identical to the specification's.
//!
//! Guarantees:
//! - a decryption that fails for any reason leaves the state exactly as it was: every new value
//!   is computed into locals and committed only after the AEAD tag verified;
//! - message keys are used once and deleted; chain and root keys are overwritten as they advance;
//! - at most [`MAX_SKIPPED_KEYS`] skipped keys are stored (oldest evicted first), and a single
//!   message may skip at most [`MAX_SKIP`] keys in one chain, so no input can force more work or
//!   memory than that;
//! - every secret is zeroized on drop and none appears in `Debug`.

use std::collections::{HashMap, VecDeque};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hmac::{Hmac, Mac};
use hush_prekeys::handshake::ASSOCIATED_DATA_LEN;
use hush_prekeys::kdf::hkdf_sha256;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::SessionError;
use crate::message::{HEADER_LEN, Header, MAX_PLAINTEXT_LEN, Message, TAG_LEN};

/// Most message keys one message may skip within a single chain (libsignal's figure).
pub const MAX_SKIP: u32 = 25_000;
/// Most skipped message keys kept per session (libsignal's figure); the oldest go first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// How many previous remote ratchet keys are remembered to classify late messages as duplicates.
pub const MAX_PREVIOUS_RATCHET_KEYS: usize = 5;
/// HKDF info of `KDF_RK`.
pub const ROOT_INFO: &[u8] = b"Hush_Ratchet_Root";
/// HKDF info of the message-key expansion.
pub const MESSAGE_KEYS_INFO: &[u8] = b"Hush_Ratchet_MessageKeys";

type Key32 = Zeroizing<[u8; 32]>;

/// A symmetric chain: its key and the index of the next message.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) key: Key32,
    pub(crate) n: u32,
}

/// Skipped message keys, keyed by (ratchet key, index), evicted oldest first.
#[derive(Default, Clone)]
pub(crate) struct SkippedKeys {
    keys: HashMap<([u8; 32], u32), Key32>,
    order: VecDeque<([u8; 32], u32)>,
}

impl SkippedKeys {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    fn get(&self, ratchet_key: &[u8; 32], n: u32) -> Option<&Key32> {
        if self.keys.is_empty() {
            return None;
        }
        self.keys.get(&(*ratchet_key, n))
    }

    fn remove(&mut self, ratchet_key: &[u8; 32], n: u32) {
        let id = (*ratchet_key, n);
        if self.keys.remove(&id).is_some()
            && let Some(pos) = self.order.iter().position(|k| *k == id)
        {
            self.order.remove(pos);
        }
    }

    pub(crate) fn insert(&mut self, ratchet_key: [u8; 32], n: u32, mk: Key32) {
        if self.keys.insert((ratchet_key, n), mk).is_none() {
            self.order.push_back((ratchet_key, n));
        }
        while self.order.len() > MAX_SKIPPED_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// Entries oldest first, for serialization.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8; 32], u32, &Key32)> {
        self.order.iter().filter_map(|id| self.keys.get(id).map(|mk| (&id.0, id.1, mk)))
    }
}

/// The Double Ratchet state of one session.
#[derive(Clone)]
pub(crate) struct Ratchet {
    pub(crate) root_key: Key32,
    /// Our current ratchet key pair (DHs).
    pub(crate) our_secret: Key32,
    pub(crate) our_public: [u8; 32],
    /// CKs and Ns; `None` after a receiving step until the next encryption performs the sending
    /// half of the step.
    pub(crate) sending: Option<Chain>,
    /// PN: the length of our previous sending chain.
    pub(crate) previous_sending_n: u32,
    /// DHr.
    pub(crate) their_public: Option<[u8; 32]>,
    /// CKr and Nr.
    pub(crate) receiving: Option<Chain>,
    /// Remote ratchet keys we have moved past, newest last.
    pub(crate) previous_theirs: VecDeque<[u8; 32]>,
    pub(crate) skipped: SkippedKeys,
}

impl Ratchet {
    /// RatchetInitAlice: the initiator knows the responder's signed prekey (its first ratchet
    /// key) and starts with a sending chain.
    pub(crate) fn init_initiator(
        sk: &[u8; 32],
        their_ratchet_key: [u8; 32],
        our_secret: Key32,
    ) -> Self {
        let secret = StaticSecret::from(*our_secret);
        let our_public = PublicKey::from(&secret).to_bytes();
        let dh =
            Zeroizing::new(secret.diffie_hellman(&PublicKey::from(their_ratchet_key)).to_bytes());
        let (root_key, chain_key) = kdf_rk(sk, &dh);
        Self {
            root_key,
            our_secret,
            our_public,
            sending: Some(Chain { key: chain_key, n: 0 }),
            previous_sending_n: 0,
            their_public: Some(their_ratchet_key),
            receiving: None,
            previous_theirs: VecDeque::new(),
            skipped: SkippedKeys::default(),
        }
    }

    /// RatchetInitBob: the responder's first ratchet key pair is its signed prekey.
    pub(crate) fn init_responder(sk: &[u8; 32], our_secret: Key32) -> Self {
        let our_public = PublicKey::from(&StaticSecret::from(*our_secret)).to_bytes();
        Self {
            root_key: Zeroizing::new(*sk),
            our_secret,
            our_public,
            sending: None,
            previous_sending_n: 0,
            their_public: None,
            receiving: None,
            previous_theirs: VecDeque::new(),
            skipped: SkippedKeys::default(),
        }
    }

    /// RatchetEncrypt. Draws 32 bytes from `rng` only when a sending step is due.
    pub(crate) fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
        ad: &[u8; ASSOCIATED_DATA_LEN],
    ) -> Result<Vec<u8>, SessionError> {
        if self.sending.is_none() {
            if self.their_public.is_none() {
                return Err(SessionError::NotReady);
            }
            let mut secret = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(secret.as_mut());
            self.sending_step(secret)?;
        }
        let chain = self.sending.as_mut().ok_or(SessionError::NotReady)?;
        if chain.n == u32::MAX {
            return Err(SessionError::ChainExhausted);
        }
        let (mk, next) = kdf_ck(&chain.key);
        let header =
            Header { ratchet_key: self.our_public, pn: self.previous_sending_n, n: chain.n };
        let out = seal(&mk, ad, &header.encode(), plaintext)?;
        chain.key = next;
        chain.n += 1;
        Ok(out)
    }

    /// The sending half of a DH ratchet step, with the new secret given.
    pub(crate) fn sending_step(&mut self, secret: Key32) -> Result<(), SessionError> {
        let their = self.their_public.ok_or(SessionError::NotReady)?;
        let s = StaticSecret::from(*secret);
        let our_public = PublicKey::from(&s).to_bytes();
        let dh = Zeroizing::new(s.diffie_hellman(&PublicKey::from(their)).to_bytes());
        let (root_key, chain_key) = kdf_rk(&self.root_key, &dh);
        self.root_key = root_key;
        self.our_secret = secret;
        self.our_public = our_public;
        self.sending = Some(Chain { key: chain_key, n: 0 });
        Ok(())
    }

    /// RatchetDecrypt. On any error the state is unchanged.
    pub(crate) fn decrypt(
        &mut self,
        msg: &Message<'_>,
        ad: &[u8; ASSOCIATED_DATA_LEN],
    ) -> Result<Vec<u8>, SessionError> {
        let h = msg.header;
        // 1. A key we skipped earlier.
        if let Some(mk) = self.skipped.get(&h.ratchet_key, h.n) {
            let plaintext = open(mk, ad, msg.header_bytes, msg.ciphertext)?;
            self.skipped.remove(&h.ratchet_key, h.n);
            return Ok(plaintext);
        }
        // 2. The current receiving chain.
        if self.their_public == Some(h.ratchet_key) {
            let chain = self.receiving.as_ref().ok_or(SessionError::DecryptionFailed)?;
            if h.n < chain.n {
                return Err(SessionError::Duplicate);
            }
            check_skip(chain.n, h.n)?;
            let next_n = next_index(h.n)?;
            let mut skipped = Vec::new();
            let (mk, next) = advance(&chain.key, chain.n, h.n, h.ratchet_key, &mut skipped);
            let plaintext = open(&mk, ad, msg.header_bytes, msg.ciphertext)?;
            for (key, n, mk) in skipped {
                self.skipped.insert(key, n, mk);
            }
            self.receiving = Some(Chain { key: next, n: next_n });
            return Ok(plaintext);
        }
        // 3. A chain we already moved past: its keys are in the skipped store or gone.
        if self.previous_theirs.contains(&h.ratchet_key) {
            return Err(SessionError::Duplicate);
        }
        // 4. A new remote ratchet key: the receiving half of a DH ratchet step.
        let mut skipped = Vec::new();
        if let (Some(their), Some(chain)) = (self.their_public, self.receiving.as_ref()) {
            if h.pn < chain.n {
                // The peer claims its previous chain was shorter than what we already received.
                return Err(SessionError::DecryptionFailed);
            }
            check_skip(chain.n, h.pn)?;
            // Keys left over in the old chain, up to its announced length.
            skip_keys(&chain.key, chain.n, h.pn, their, &mut skipped);
        }
        check_skip(0, h.n)?;
        let next_n = next_index(h.n)?;
        let dh = Zeroizing::new(
            StaticSecret::from(*self.our_secret)
                .diffie_hellman(&PublicKey::from(h.ratchet_key))
                .to_bytes(),
        );
        let (root_key, chain_key) = kdf_rk(&self.root_key, &dh);
        let (mk, next) = advance(&chain_key, 0, h.n, h.ratchet_key, &mut skipped);
        let plaintext = open(&mk, ad, msg.header_bytes, msg.ciphertext)?;

        // Commit.
        if let Some(old) = self.their_public.replace(h.ratchet_key) {
            self.previous_theirs.push_back(old);
            while self.previous_theirs.len() > MAX_PREVIOUS_RATCHET_KEYS {
                self.previous_theirs.pop_front();
            }
        }
        for (key, n, mk) in skipped {
            self.skipped.insert(key, n, mk);
        }
        self.root_key = root_key;
        self.receiving = Some(Chain { key: next, n: next_n });
        if let Some(sending) = self.sending.take() {
            self.previous_sending_n = sending.n;
        }
        Ok(plaintext)
    }
}

impl std::fmt::Debug for Ratchet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ratchet")
            .field("sending_n", &self.sending.as_ref().map(|c| c.n))
            .field("receiving_n", &self.receiving.as_ref().map(|c| c.n))
            .field("previous_sending_n", &self.previous_sending_n)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// Only the newest `MAX_SKIPPED_KEYS` keys of a skip can survive eviction, so older ones are
/// derived (to advance the chain) but not kept.
const fn skip_store_window() -> u32 {
    MAX_SKIPPED_KEYS as u32
}

fn check_skip(from: u32, until: u32) -> Result<(), SessionError> {
    let skip = until.saturating_sub(from);
    if skip > MAX_SKIP {
        return Err(SessionError::TooFarAhead { skip: u64::from(skip), limit: MAX_SKIP });
    }
    Ok(())
}

/// A sender never uses index 2^32 - 1 (see `encrypt`), so a header claiming it is malformed.
fn next_index(n: u32) -> Result<u32, SessionError> {
    n.checked_add(1).ok_or(SessionError::Malformed("message index out of range"))
}

/// Steps `ck` (at index `from`) to index `until`, collecting the skipped keys worth keeping, and
/// returns the chain key at `until`.
fn skip_keys(
    ck: &Key32,
    from: u32,
    until: u32,
    ratchet_key: [u8; 32],
    skipped: &mut Vec<([u8; 32], u32, Key32)>,
) -> Key32 {
    let mut ck = ck.clone();
    for n in from..until {
        let (mk, next) = kdf_ck(&ck);
        if until - n <= skip_store_window() {
            skipped.push((ratchet_key, n, mk));
        }
        ck = next;
    }
    ck
}

/// Steps to index `until` and returns its message key and the chain key after it.
fn advance(
    ck: &Key32,
    from: u32,
    until: u32,
    ratchet_key: [u8; 32],
    skipped: &mut Vec<([u8; 32], u32, Key32)>,
) -> (Key32, Key32) {
    kdf_ck(&skip_keys(ck, from, until, ratchet_key, skipped))
}

/// KDF_RK: HKDF-SHA256 keyed by the root key.
pub(crate) fn kdf_rk(root_key: &[u8; 32], dh: &[u8; 32]) -> (Key32, Key32) {
    let okm = hkdf_sha256::<64>(root_key, dh, ROOT_INFO);
    split_64(&okm)
}

/// KDF_CK: HMAC-SHA256 of the chain key over 0x01 (message key) and 0x02 (next chain key).
pub(crate) fn kdf_ck(chain_key: &[u8; 32]) -> (Key32, Key32) {
    #[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
    let mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(chain_key).expect("HMAC takes any key length");
    let mk = Zeroizing::new(mac.clone().chain_update([0x01]).finalize().into_bytes().into());
    let next = Zeroizing::new(mac.chain_update([0x02]).finalize().into_bytes().into());
    (mk, next)
}

fn split_64(okm: &[u8; 64]) -> (Key32, Key32) {
    let mut a = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    let (l, r) = okm.split_at(32);
    a.copy_from_slice(l);
    b.copy_from_slice(r);
    (a, b)
}

/// Expands a message key into the AEAD key and nonce (HKDF with `info`: the 1:1 ratchet's
/// or the sender keys').
pub(crate) fn aead_for(mk: &[u8; 32], info: &[u8]) -> (ChaCha20Poly1305, Nonce) {
    let okm = hkdf_sha256::<44>(&[0u8; 32], mk, info);
    let (key, nonce) = okm.split_at(32);
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(key);
    let mut n = [0u8; 12];
    n.copy_from_slice(nonce);
    (ChaCha20Poly1305::new(&(*k).into()), n.into())
}

fn full_ad(
    ad: &[u8; ASSOCIATED_DATA_LEN],
    header: &[u8],
) -> [u8; ASSOCIATED_DATA_LEN + HEADER_LEN] {
    let mut out = [0u8; ASSOCIATED_DATA_LEN + HEADER_LEN];
    let (a, h) = out.split_at_mut(ASSOCIATED_DATA_LEN);
    a.copy_from_slice(ad);
    // `header` is exactly HEADER_LEN bytes: it comes from `Header::encode` or the decoder.
    h.iter_mut().zip(header).for_each(|(d, s)| *d = *s);
    out
}

/// Encrypts into `header ‖ ciphertext ‖ tag`.
fn seal(
    mk: &[u8; 32],
    ad: &[u8; ASSOCIATED_DATA_LEN],
    header: &[u8; HEADER_LEN],
    pt: &[u8],
) -> Result<Vec<u8>, SessionError> {
    let (cipher, nonce) = aead_for(mk, MESSAGE_KEYS_INFO);
    let mut out = Vec::with_capacity(HEADER_LEN + pt.len() + TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(pt);
    let (_, body) = out.split_at_mut(HEADER_LEN);
    // ChaCha20-Poly1305 only fails past 256 GiB of plaintext.
    let tag = cipher
        .encrypt_inout_detached(&nonce, &full_ad(ad, header), body.into())
        .map_err(|_| SessionError::TooLarge { len: pt.len(), limit: MAX_PLAINTEXT_LEN })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Verifies and decrypts `ciphertext ‖ tag`.
fn open(
    mk: &[u8; 32],
    ad: &[u8; ASSOCIATED_DATA_LEN],
    header: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>, SessionError> {
    let split = ct.len().checked_sub(TAG_LEN).ok_or(SessionError::DecryptionFailed)?;
    if split > MAX_PLAINTEXT_LEN {
        return Err(SessionError::TooLarge { len: split, limit: MAX_PLAINTEXT_LEN });
    }
    let (body, tag) = ct.split_at(split);
    let tag = Tag::try_from(tag).map_err(|_| SessionError::DecryptionFailed)?;
    let (cipher, nonce) = aead_for(mk, MESSAGE_KEYS_INFO);
    let mut out = body.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, &full_ad(ad, header), out.as_mut_slice().into(), &tag)
        .map_err(|_| SessionError::DecryptionFailed)?;
    Ok(out)
}
