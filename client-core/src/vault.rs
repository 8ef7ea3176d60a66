//! Encryption at rest for everything the client stores.
//!
//! The app supplies a 32-byte store key (from the platform keystore, WebCrypto or a passphrase
//! KDF of its choice). Two subkeys are derived from it with HKDF-SHA256:
//! - `Hush_Store_Seal_v1`: XChaCha20-Poly1305 over every value, with a random 24-byte nonce and
//!   associated data `"Hush_Store_v1" ‖ table name ‖ 0x00 ‖ key`, so a value moved to another
//!   key or table fails to open (the one exception is the message-id index, whose values are
//!   keys the store shows anyway: see [`crate::records::id_row`]);
//! - `Hush_Store_Blind_v1`: HMAC-SHA256, truncated to 16 bytes, over every identifier that has to
//!   appear in a key (account ids, message ids, search tokens), so the store on disk shows no
//!   contact, conversation or word.
//!
//! A sealed value is `version (0x01) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use hush_prekeys::kdf::hkdf_sha256;
use rand::RngExt;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::store::Table;

/// Version byte of a sealed value.
pub const SEALED_VERSION: u8 = 1;
/// Length of a blinded identifier.
pub const BLIND_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes to seal from which [`Vault::seal_all`] uses a second thread: below it, starting the
/// thread costs more than it saves.
pub const PARALLEL_SEAL_BYTES: usize = 64 * 1024;
/// What one seal's fixed work (the XChaCha20 key setup, the tag) is worth in bytes of value,
/// for splitting a batch into halves of equal work.
const SEAL_SETUP_BYTES: usize = 256;

/// A 32-byte key the app supplies to encrypt its store. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for the app to keep in its keystore. Handle them as the secret they are.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh random key (for tests and demos; apps keep theirs in the platform keystore).
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rng().fill(&mut k);
        Self(k)
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// The sealed value did not open: wrong store key, or the value was changed or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored value failed to decrypt: wrong store key or tampered data")]
pub struct SealError;

/// Seals and opens stored values; blinds identifiers.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Vault {
    seal_key: [u8; 32],
    /// HMAC-SHA256 already keyed with the blinding subkey: a catch-up blinds thousands of ids,
    /// and cloning this state skips hashing the padded key twice per call. It wipes itself on
    /// drop (the `zeroize` features of `hmac` and `sha2`).
    #[zeroize(skip)]
    blinder: Hmac<Sha256>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

/// Calls `f` with the associated data of `key` in `table`:
/// `"Hush_Store_v1" ‖ table name ‖ 0x00 ‖ key`, built on the stack for the usual short keys.
fn with_aad<T>(table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    const PREFIX: &[u8] = b"Hush_Store_v1";
    let name = table.name().as_bytes();
    let len = PREFIX.len() + name.len() + 1 + key.len();
    let mut stack = [0u8; 160];
    let mut heap = Vec::new();
    let buf = match stack.get_mut(..len) {
        Some(b) => b,
        None => {
            heap.resize(len, 0);
            heap.as_mut_slice()
        }
    };
    let (p, rest) = buf.split_at_mut(PREFIX.len());
    p.copy_from_slice(PREFIX);
    let (n, rest) = rest.split_at_mut(name.len());
    n.copy_from_slice(name);
    let (zero, k) = rest.split_at_mut(1);
    zero.fill(0);
    k.copy_from_slice(key);
    f(buf)
}

impl Vault {
    /// Derives the subkeys from the app's store key.
    pub fn new(key: &StoreKey) -> Self {
        let seal: Zeroizing<[u8; 32]> = hkdf_sha256(&[], &key.0, b"Hush_Store_Seal_v1");
        let blind: Zeroizing<[u8; 32]> = hkdf_sha256(&[], &key.0, b"Hush_Store_Blind_v1");
        // HMAC takes keys of any length, so this never fails.
        let blinder = <Hmac<Sha256> as KeyInit>::new_from_slice(&*blind)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        Self { seal_key: *seal, blinder }
    }

    /// Encrypts `value` for `key` in `table`.
    pub fn seal(&self, table: Table, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        // One allocation, encrypted in place: a catch-up seals three values per message.
        let mut out = Vec::with_capacity(1 + NONCE_LEN + value.len() + TAG_LEN);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let body = out.get_mut(1 + NONCE_LEN..).unwrap_or_default();
        // Encryption only fails for plaintexts beyond 256 GiB; values are a few MiB at most.
        let tag = with_aad(table, key, |aad| {
            cipher.encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        })
        .unwrap_or_default();
        out.extend_from_slice(&tag);
        out
    }

    /// Seals many values at once: `(table, key, value)` in, `(table, key, sealed)` out, in the
    /// same order. A catch-up seals hundreds of kilobytes per batch (its history rows and search
    /// postings) while the previous batch commits, and that commit usually ends first, leaving a
    /// core idle. So above [`PARALLEL_SEAL_BYTES`], about half of the bytes are sealed beside the
    /// rest ([`crate::runtime::join`]: on a second thread where the device has a second core
    /// and one can be started; in the browser, one after the other).
    pub fn seal_all(
        &self,
        items: Vec<(Table, Vec<u8>, Vec<u8>)>,
    ) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let seal = |part: &[(Table, Vec<u8>, Vec<u8>)]| -> Vec<Vec<u8>> {
            part.iter().map(|(t, k, v)| self.seal(*t, k, v)).collect()
        };
        let cost = |v: &Vec<u8>| v.len() + SEAL_SETUP_BYTES;
        let total: usize = items.iter().map(|(_, _, v)| cost(v)).sum();
        let sealed = if total >= PARALLEL_SEAL_BYTES {
            // Split where the first part holds about half of the bytes.
            let mut acc = 0;
            let at = items
                .iter()
                .position(|(_, _, v)| {
                    acc += cost(v);
                    acc >= total / 2
                })
                .map_or(items.len(), |i| i + 1);
            let (first, second) = items.split_at(at);
            let (mut out, rest) = crate::runtime::join(|| seal(first), || seal(second));
            out.extend(rest);
            out
        } else {
            seal(&items)
        };
        items.into_iter().zip(sealed).map(|((t, k, _), s)| (t, k, s)).collect()
    }

    /// Decrypts a value sealed for `key` in `table`.
    pub fn open(
        &self,
        table: Table,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        // version ‖ nonce ‖ ciphertext ‖ tag; anything shorter than the fixed parts is refused.
        let (&version, rest) = sealed.split_first().ok_or(SealError)?;
        let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or(SealError)?;
        let (ct, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(SealError)?;
        if version != SEALED_VERSION {
            return Err(SealError);
        }
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        let mut out = Zeroizing::new(ct.to_vec());
        with_aad(table, key, |aad| {
            cipher.decrypt_inout_detached(
                &XNonce::from(*nonce),
                aad,
                out.as_mut_slice().into(),
                &Tag::from(*tag),
            )
        })
        .map_err(|_| SealError)?;
        Ok(out)
    }

    /// A keyed 16-byte digest of `data` in `domain`, stable for this store key.
    pub fn blind(&self, domain: &[u8], data: &[u8]) -> [u8; BLIND_LEN] {
        let mut mac = self.blinder.clone();
        mac.update(&(domain.len() as u32).to_be_bytes());
        mac.update(domain);
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(full.get(..BLIND_LEN).unwrap_or(&[0u8; BLIND_LEN]));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let v = Vault::new(&StoreKey::from_bytes([7; 32]));
        let sealed = v.seal(Table::Messages, b"k1", b"hello");
        assert_eq!(v.open(Table::Messages, b"k1", &sealed).unwrap().as_slice(), b"hello");
        assert_eq!(v.open(Table::Messages, b"k2", &sealed), Err(SealError));
        assert_eq!(v.open(Table::Contacts, b"k1", &sealed), Err(SealError));
        let other = Vault::new(&StoreKey::from_bytes([8; 32]));
        assert_eq!(other.open(Table::Messages, b"k1", &sealed), Err(SealError));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(v.open(Table::Messages, b"k1", &tampered), Err(SealError));
        assert_eq!(v.open(Table::Messages, b"k1", &sealed[..10]), Err(SealError));
        // The shortest valid value is the fixed parts alone; every prefix of it is refused.
        let empty = v.seal(Table::Messages, b"k1", b"");
        assert_eq!(empty.len(), 1 + NONCE_LEN + TAG_LEN);
        assert!(v.open(Table::Messages, b"k1", &empty).unwrap().is_empty());
        for n in 0..empty.len() {
            assert_eq!(v.open(Table::Messages, b"k1", &empty[..n]), Err(SealError));
        }
        let mut versioned = sealed.clone();
        versioned[0] = SEALED_VERSION.wrapping_add(1);
        assert_eq!(v.open(Table::Messages, b"k1", &versioned), Err(SealError));
    }

    /// The format in the module docs, computed here with the crates' plain APIs: the in-place
    /// sealing and the cached HMAC state must give exactly what they describe. Keys long enough
    /// to spill the stack AAD buffer are covered too.
    #[test]
    fn matches_the_documented_format() {
        use chacha20poly1305::aead::{Aead, Payload};
        let store_key = StoreKey::from_bytes([5; 32]);
        let v = Vault::new(&store_key);
        let seal_key: Zeroizing<[u8; 32]> = hkdf_sha256(&[], &[5; 32], b"Hush_Store_Seal_v1");
        let blind_key: Zeroizing<[u8; 32]> = hkdf_sha256(&[], &[5; 32], b"Hush_Store_Blind_v1");
        let cipher = XChaCha20Poly1305::new(&(*seal_key).into());
        for key in [b"k".to_vec(), vec![0xee; 300]] {
            let mut aad = b"Hush_Store_v1messages\0".to_vec();
            aad.extend_from_slice(&key);
            let nonce = [3u8; NONCE_LEN];
            let ct =
                cipher.encrypt(&XNonce::from(nonce), Payload { msg: b"value", aad: &aad }).unwrap();
            let reference = [&[SEALED_VERSION][..], &nonce, &ct].concat();
            assert_eq!(v.open(Table::Messages, &key, &reference).unwrap().as_slice(), b"value");
            let ours = v.seal(Table::Messages, &key, b"value");
            let (n, body) = ours.get(1..).unwrap().split_at(NONCE_LEN);
            let opened = cipher
                .decrypt(
                    &XNonce::from(<[u8; NONCE_LEN]>::try_from(n).unwrap()),
                    Payload { msg: body, aad: &aad },
                )
                .unwrap();
            assert_eq!(opened, b"value");
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&*blind_key).unwrap();
        mac.update(&2u32.to_be_bytes());
        mac.update(b"id");
        mac.update(b"data");
        let full = mac.finalize().into_bytes();
        assert_eq!(v.blind(b"id", b"data").as_slice(), &full[..BLIND_LEN]);
    }

    /// Both paths of `seal_all` (one thread below the threshold, two above it, split unevenly
    /// by value size) give every row back in order, each opening under its own key and table.
    #[test]
    fn seal_all_keeps_the_order_and_every_row_opens() {
        let v = Vault::new(&StoreKey::from_bytes([7; 32]));
        for (count, big_every) in [(3usize, 0usize), (2_000, 0), (300, 7)] {
            let items: Vec<(Table, Vec<u8>, Vec<u8>)> = (0..count)
                .map(|i| {
                    let table = if i % 2 == 0 { Table::Messages } else { Table::SearchIndex };
                    let len = if big_every > 0 && i % big_every == 0 { 40_000 } else { 60 };
                    (table, (i as u32).to_be_bytes().to_vec(), vec![(i % 251) as u8; len])
                })
                .collect();
            let total: usize = items.iter().map(|(_, _, v)| v.len() + SEAL_SETUP_BYTES).sum();
            assert_eq!(total >= PARALLEL_SEAL_BYTES, count > 3, "both paths are covered");
            let sealed = v.seal_all(items.clone());
            assert_eq!(sealed.len(), items.len());
            for ((t, k, plain), (st, sk, s)) in items.iter().zip(&sealed) {
                assert_eq!((t, k), (st, sk));
                assert_eq!(v.open(*t, k, s).unwrap().as_slice(), plain.as_slice());
            }
        }
    }

    #[test]
    fn blinding_is_keyed_and_domain_separated() {
        let v = Vault::new(&StoreKey::from_bytes([7; 32]));
        let w = Vault::new(&StoreKey::from_bytes([9; 32]));
        assert_eq!(v.blind(b"a", b"x"), v.blind(b"a", b"x"));
        assert_ne!(v.blind(b"a", b"x"), v.blind(b"b", b"x"));
        assert_ne!(v.blind(b"a", b"x"), w.blind(b"a", b"x"));
    }

    #[test]
    fn debug_hides_keys() {
        let k = StoreKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "StoreKey(..)");
        assert_eq!(format!("{:?}", Vault::new(&k)), "Vault(..)");
    }
}
