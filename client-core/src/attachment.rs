//! Attachment encryption (docs/PROTOCOL.md §18), sans-I/O: a file of any size encrypted and
//! decrypted as a stream of fixed-size segments, in bounded memory.
//!
//! Each attachment has a fresh random 32-byte key `K`. HKDF-SHA-256 (salt 32 zero bytes, info
//! [`ATTACHMENT_INFO`]) expands it into the segments' ChaCha20-Poly1305 key and a 32-byte key
//! commitment. The blob is
//!
//! ```text
//! version (0x01) ‖ commitment [32] ‖ segment 0 ‖ segment 1 ‖ … ‖ segment n-1
//! segment i = ChaCha20-Poly1305(key, nonce = BE64(i) ‖ 00 00 00 ‖ last, aad = "", plaintext i)
//! ```
//!
//! with plaintext segments of [`SEGMENT_LEN`] bytes except the last (1 to [`SEGMENT_LEN`] bytes;
//! an empty file is one empty last segment), and `last` = 1 only in the last segment's nonce.
//! This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015): a segment moved,
//! dropped, repeated or taken from another blob fails to authenticate at its index, and a blob
//! cut at a segment boundary lacks the segment marked last. The commitment makes a wrong key a
//! distinct, early error and binds the blob to one key (ChaCha20-Poly1305 alone is not
//! key-committing). The message that points at the blob carries `K`, the sizes and the SHA-256
//! of the whole blob ([`Pointer`]).
//!
//! Guarantees:
//! - [`Encryptor`] and [`Decryptor`] hold at most one segment of input, whatever the file's size
//!   and however the caller slices its input (the output is the same for any slicing), plus
//!   about 1 MiB of blob waiting to be hashed on a second core past the first MiB
//!   (`blob_digest`);
//! - [`Decryptor`] hands out a segment's plaintext only once it authenticated, and
//!   [`Decryptor::finish`] succeeds only after every segment, the last one, the size and the
//!   digest all checked: a caller that treats the file as complete only then never shows a
//!   truncated, reordered or tampered file;
//! - keys are zeroized on drop and never appear in `Debug`.

use crate::blob_digest::BlobDigest;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hush_prekeys::kdf::hkdf_sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::message::TAG_LEN;

/// Version byte that opens every attachment blob.
pub const ATTACHMENT_VERSION: u8 = 1;
/// Plaintext bytes per segment (the last may be shorter).
pub const SEGMENT_LEN: usize = 64 * 1024;
/// Ciphertext bytes per full segment.
pub const SEALED_SEGMENT_LEN: usize = SEGMENT_LEN + TAG_LEN;
/// `version ‖ commitment`.
pub const BLOB_HEADER_LEN: usize = 1 + 32;
/// HKDF info of the key expansion.
pub const ATTACHMENT_INFO: &[u8] = b"Hush_Attachment_v1";
/// Attachment key length.
pub const KEY_LEN: usize = 32;

/// Why an attachment could not be decrypted. Codes are stable (PROTOCOL.md §18.4).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AttachmentError {
    /// The blob opens with a version this build does not read.
    #[error("attachment blob version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The key does not match the blob's commitment.
    #[error("the attachment key does not match the blob")]
    WrongKey,
    /// A segment failed to authenticate: changed, moved, or from another blob.
    #[error("attachment segment {0} failed to authenticate")]
    Tampered(u64),
    /// The blob ended before its last segment.
    #[error("the attachment blob is truncated")]
    Truncated,
    /// Bytes follow the last segment, or the blob is longer than the pointer says.
    #[error("the attachment blob is longer than its pointer says")]
    TooLong,
    /// Every segment authenticated but the blob's SHA-256 is not the pointer's.
    #[error("the attachment blob's digest does not match its pointer")]
    DigestMismatch,
    /// The decrypted size is not the pointer's.
    #[error("the attachment's size does not match its pointer")]
    SizeMismatch,
}

impl AttachmentError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::WrongKey => "wrong_key",
            Self::Tampered(_) => "attachment_tampered",
            Self::Truncated => "attachment_truncated",
            Self::TooLong => "attachment_too_long",
            Self::DigestMismatch => "digest_mismatch",
            Self::SizeMismatch => "size_mismatch",
        }
    }
}

/// An attachment's key. Wiped on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct AttachmentKey([u8; KEY_LEN]);

impl AttachmentKey {
    /// A fresh random key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut k = [0u8; KEY_LEN];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// The key from its bytes (as carried in a pointer).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, for the pointer.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The segments' AEAD and the key commitment.
    fn expand(&self) -> (ChaCha20Poly1305, [u8; 32]) {
        let okm = Zeroizing::new(hkdf_sha256::<64>(&[0u8; 32], &self.0, ATTACHMENT_INFO));
        let (key, commitment) = okm.split_at(32);
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(key);
        let mut c = [0u8; 32];
        c.copy_from_slice(commitment);
        (ChaCha20Poly1305::new(&(*k).into()), c)
    }
}

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(<redacted>)")
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// The blob size for a plaintext size.
pub fn sealed_len(plaintext_len: u64) -> u64 {
    let segments = plaintext_len.div_ceil(SEGMENT_LEN as u64).max(1);
    BLOB_HEADER_LEN as u64 + plaintext_len + segments * TAG_LEN as u64
}

/// The plaintext size of a well-formed blob of `blob_len` bytes, if one has that size.
pub fn plaintext_len(blob_len: u64) -> Option<u64> {
    let body = blob_len.checked_sub(BLOB_HEADER_LEN as u64)?;
    let full = body / SEALED_SEGMENT_LEN as u64;
    let rest = body % SEALED_SEGMENT_LEN as u64;
    match rest {
        // A full last segment, or (body 0) nothing at all, which is malformed.
        0 if full > 0 => Some(full * SEGMENT_LEN as u64),
        r if r >= TAG_LEN as u64 && (r > TAG_LEN as u64 || full == 0) => {
            Some(full * SEGMENT_LEN as u64 + r - TAG_LEN as u64)
        }
        _ => None,
    }
}

/// What an encryption produced, for the pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Plaintext bytes.
    pub plaintext_len: u64,
    /// Blob bytes (header and segments).
    pub blob_len: u64,
    /// SHA-256 of the whole blob.
    pub digest: [u8; 32],
}

/// The blob header: version ‖ key commitment.
fn header(commitment: &[u8; 32]) -> [u8; BLOB_HEADER_LEN] {
    let mut header = [0u8; BLOB_HEADER_LEN];
    header[0] = ATTACHMENT_VERSION;
    header[1..].copy_from_slice(commitment);
    header
}

/// Encrypts a file as a stream: feed it plaintext in pieces of any size, collect the blob's
/// bytes as they are produced.
pub struct Encryptor {
    cipher: ChaCha20Poly1305,
    index: u64,
    /// Plaintext not yet sealed: at most one segment (a full segment waits until more input
    /// shows it is not the last).
    pending: Zeroizing<Vec<u8>>,
    hasher: BlobDigest,
    plaintext_len: u64,
    blob_len: u64,
    /// The plaintext's length, when the caller knows it ([`Encryptor::with_len`]): a whole
    /// segment that ends before it is not the last, so it is sealed straight from the input
    /// instead of waiting (copied) in `pending` for the next input to show that.
    expected: Option<u64>,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Starts a blob under `key`; its header is appended to `out`.
    pub fn new(key: &AttachmentKey, out: &mut Vec<u8>) -> Self {
        let (cipher, commitment) = key.expand();
        let header = header(&commitment);
        out.extend_from_slice(&header);
        let mut hasher = BlobDigest::new();
        hasher.update(&header);
        Self {
            cipher,
            index: 0,
            pending: Zeroizing::new(Vec::with_capacity(SEGMENT_LEN)),
            hasher,
            plaintext_len: 0,
            blob_len: BLOB_HEADER_LEN as u64,
            expected: None,
        }
    }

    /// [`Encryptor::new`] for a plaintext of `len` bytes: the same blob, one copy fewer per
    /// segment. The caller must then give exactly `len` bytes (check the count before using
    /// the blob: with more or fewer, [`Sealed::blob_len`] is not [`sealed_len`] of
    /// [`Sealed::plaintext_len`] and receivers refuse the pointer).
    pub fn with_len(key: &AttachmentKey, len: u64, out: &mut Vec<u8>) -> Self {
        Self { expected: Some(len), ..Self::new(key, out) }
    }

    /// Takes more plaintext; appends every segment it completes to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.pending.len() == SEGMENT_LEN {
                // More input follows, so the full segment held is not the last.
                let segment = std::mem::take(&mut *self.pending);
                self.seal(&segment, false, out);
                *self.pending = segment;
                self.pending.clear();
            }
            if self.pending.is_empty()
                && input.len() >= SEGMENT_LEN
                && self.expected.is_some_and(|e| self.plaintext_len + (SEGMENT_LEN as u64) < e)
            {
                let (segment, rest) = input.split_at(SEGMENT_LEN);
                self.seal(segment, false, out);
                self.plaintext_len += SEGMENT_LEN as u64;
                input = rest;
                continue;
            }
            let take = (SEGMENT_LEN - self.pending.len()).min(input.len());
            let (now, rest) = input.split_at(take);
            self.pending.extend_from_slice(now);
            self.plaintext_len += take as u64;
            input = rest;
        }
    }

    /// Seals the last segment into `out` and returns the sizes and digest.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Sealed {
        let segment = std::mem::take(&mut *self.pending);
        self.seal(&segment, true, out);
        *self.pending = segment;
        Sealed {
            plaintext_len: self.plaintext_len,
            blob_len: self.blob_len,
            digest: self.hasher.finish(),
        }
    }

    /// Seals one segment of plaintext onto `out` (copied there, encrypted in place).
    fn seal(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let body = out.get_mut(start..).unwrap_or_default();
        // ChaCha20-Poly1305 fails only past 256 GiB in one call; a segment is 64 KiB.
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.index, last), &[], body.into())
            .unwrap_or_default();
        out.extend_from_slice(&tag);
        let segment = out.get(start..).unwrap_or_default();
        self.hasher.update(segment);
        self.blob_len += segment.len() as u64;
        self.index += 1;
    }
}

/// Decrypts a blob as a stream, checking it against its pointer's sizes and digest: feed it the
/// blob in pieces of any size, collect plaintext segment by segment as each authenticates.
pub struct Decryptor {
    cipher: ChaCha20Poly1305,
    commitment: [u8; 32],
    blob_len: u64,
    /// Blob bytes taken so far.
    seen: u64,
    index: u64,
    /// Blob bytes not yet opened: the header, or at most one sealed segment.
    pending: Vec<u8>,
    hasher: BlobDigest,
    plaintext_len: u64,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("seen", &self.seen)
            .field("blob_len", &self.blob_len)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Starts decrypting a blob of `blob_len` bytes (from its pointer) under `key`.
    pub fn new(key: &AttachmentKey, blob_len: u64) -> Self {
        let (cipher, commitment) = key.expand();
        Self {
            cipher,
            commitment,
            blob_len,
            seen: 0,
            index: 0,
            pending: Vec::with_capacity(BLOB_HEADER_LEN),
            hasher: BlobDigest::new(),
            plaintext_len: 0,
        }
    }

    /// Blob bytes taken so far.
    pub fn position(&self) -> u64 {
        self.seen
    }

    /// Takes more of the blob; appends the plaintext of every segment that authenticates to
    /// `out`. After an error the decryptor is spent: the caller discards what it wrote.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if self.seen + input.len() as u64 > self.blob_len {
            return Err(AttachmentError::TooLong);
        }
        while !input.is_empty() {
            let want = self.next_len() - self.pending.len();
            let take = want.min(input.len());
            let (now, rest) = input.split_at(take);
            self.pending.extend_from_slice(now);
            self.seen += take as u64;
            input = rest;
            if self.pending.len() == self.next_len() {
                self.open(out)?;
            }
        }
        Ok(())
    }

    /// Takes back one whole plaintext segment that an earlier run already checked (a download
    /// resumed after a restart from the plaintext it kept): seals it again under the key, which
    /// gives the same bytes the blob holds there (the construction is deterministic), so the
    /// position and the running digest move on as if they had been downloaded again. Only a
    /// segment that is not the blob's last one can be taken back this way; the header is
    /// rebuilt from the key. Returns `false`, changing nothing, when `segment` is not a full
    /// segment or the next one is the last (download that one).
    ///
    /// Nothing here checks that the plaintext is what the blob holds: if it is not, the
    /// digest at [`Decryptor::finish`] does not match and the whole download is refused.
    pub fn replay(&mut self, segment: &[u8]) -> bool {
        if !self.pending.is_empty() || segment.len() != SEGMENT_LEN {
            return false;
        }
        let start = if self.seen == 0 { BLOB_HEADER_LEN as u64 } else { self.seen };
        if start + SEALED_SEGMENT_LEN as u64 >= self.blob_len {
            return false;
        }
        if self.seen == 0 {
            self.hasher.update(&header(&self.commitment));
        }
        let mut sealed = Zeroizing::new(segment.to_vec());
        // As in `Encryptor::seal`: one call seals 64 KiB, far under ChaCha20-Poly1305's bound.
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.index, false), &[], sealed.as_mut_slice().into())
            .unwrap_or_default();
        self.hasher.update(&sealed);
        self.hasher.update(&tag);
        self.seen = start + SEALED_SEGMENT_LEN as u64;
        self.plaintext_len += SEGMENT_LEN as u64;
        self.index += 1;
        true
    }

    /// Checks that the whole blob arrived and matches `digest`; returns the plaintext size.
    pub fn finish(self, digest: &[u8; 32]) -> Result<u64, AttachmentError> {
        // Short of the pointer's size, or no segment at all (a pointer whose size is the
        // header's): the last segment never came.
        if self.seen < self.blob_len || !self.pending.is_empty() || self.index == 0 {
            return Err(AttachmentError::Truncated);
        }
        let got = self.hasher.finish();
        if !bool::from(got.ct_eq(digest)) {
            return Err(AttachmentError::DigestMismatch);
        }
        Ok(self.plaintext_len)
    }

    /// Bytes the unit being collected (header or segment) has in all.
    fn next_len(&self) -> usize {
        let start = self.seen - self.pending.len() as u64;
        if start == 0 {
            return BLOB_HEADER_LEN;
        }
        let left = self.blob_len.saturating_sub(start);
        usize::try_from(left.min(SEALED_SEGMENT_LEN as u64)).unwrap_or(SEALED_SEGMENT_LEN)
    }

    fn open(&mut self, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let start = self.seen - self.pending.len() as u64;
        self.hasher.update(&self.pending);
        if start == 0 {
            let version = self.pending.first().copied().unwrap_or_default();
            if version != ATTACHMENT_VERSION {
                return Err(AttachmentError::UnsupportedVersion(version));
            }
            if !bool::from(self.pending.get(1..).unwrap_or_default().ct_eq(&self.commitment)) {
                return Err(AttachmentError::WrongKey);
            }
            self.pending.clear();
            if self.blob_len < (BLOB_HEADER_LEN + TAG_LEN) as u64 {
                return Err(AttachmentError::Truncated);
            }
            return Ok(());
        }
        let last = self.seen == self.blob_len;
        if self.pending.len() < TAG_LEN {
            return Err(AttachmentError::Truncated);
        }
        let split = self.pending.len() - TAG_LEN;
        let (body, tag) = self.pending.split_at_mut(split);
        let tag = Tag::try_from(&*tag).map_err(|_| AttachmentError::Truncated)?;
        let opened = self.cipher.decrypt_inout_detached(
            &nonce(self.index, last),
            &[],
            (&mut *body).into(),
            &tag,
        );
        if opened.is_err() {
            // At the blob's end, a segment that opens as not-last means the blob was cut at a
            // segment boundary.
            let cut = last
                && self
                    .cipher
                    .clone()
                    .decrypt_inout_detached(&nonce(self.index, false), &[], body.into(), &tag)
                    .is_ok();
            return Err(if cut {
                AttachmentError::Truncated
            } else {
                AttachmentError::Tampered(self.index)
            });
        }
        out.extend_from_slice(body);
        self.plaintext_len += body.len() as u64;
        self.index += 1;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn key(b: u8) -> AttachmentKey {
        AttachmentKey::from_bytes([b; KEY_LEN])
    }

    /// Encrypts `plain` fed in pieces of the given sizes (cycled).
    fn seal(k: &AttachmentKey, plain: &[u8], pieces: &[usize]) -> (Vec<u8>, Sealed) {
        seal_with(k, plain, pieces, false)
    }

    /// [`seal`], told the length up front ([`Encryptor::with_len`]) if `sized`.
    fn seal_with(
        k: &AttachmentKey,
        plain: &[u8],
        pieces: &[usize],
        sized: bool,
    ) -> (Vec<u8>, Sealed) {
        let mut out = Vec::new();
        let mut e = if sized {
            Encryptor::with_len(k, plain.len() as u64, &mut out)
        } else {
            Encryptor::new(k, &mut out)
        };
        let (mut at, mut i) = (0, 0);
        while at < plain.len() {
            let n = pieces.get(i % pieces.len().max(1)).copied().unwrap_or(plain.len()).max(1);
            let end = (at + n).min(plain.len());
            e.update(&plain[at..end], &mut out);
            at = end;
            i += 1;
        }
        let sealed = e.finish(&mut out);
        (out, sealed)
    }

    fn open(
        k: &AttachmentKey,
        blob: &[u8],
        blob_len: u64,
        digest: &[u8; 32],
        pieces: &[usize],
    ) -> Result<Vec<u8>, AttachmentError> {
        let mut d = Decryptor::new(k, blob_len);
        let mut out = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < blob.len() {
            let n = pieces.get(i % pieces.len().max(1)).copied().unwrap_or(blob.len()).max(1);
            let end = (at + n).min(blob.len());
            d.update(&blob[at..end], &mut out)?;
            at = end;
            i += 1;
        }
        let n = d.finish(digest)?;
        assert_eq!(n, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn sizes_round_trip_and_match_the_formulas() {
        for len in [0, 1, SEGMENT_LEN - 1, SEGMENT_LEN, SEGMENT_LEN + 1, 3 * SEGMENT_LEN + 5] {
            let plain = pattern(len);
            let (blob, s) = seal(&key(1), &plain, &[len.max(1)]);
            assert_eq!(s.blob_len, blob.len() as u64);
            assert_eq!(s.blob_len, sealed_len(len as u64), "{len}");
            assert_eq!(plaintext_len(s.blob_len), Some(len as u64), "{len}");
            assert_eq!(s.plaintext_len, len as u64);
            let digest: [u8; 32] = Sha256::digest(&blob).into();
            assert_eq!(s.digest, digest);
            assert_eq!(open(&key(1), &blob, s.blob_len, &s.digest, &[7919]).unwrap(), plain);
        }
        // No well-formed blob has these sizes.
        for bad in [0, 32, 33, 33 + 15, 33 + SEALED_SEGMENT_LEN as u64 + 16] {
            assert_eq!(plaintext_len(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_bad_blob_gets_its_error() {
        let plain = pattern(2 * SEGMENT_LEN + 100);
        let (blob, s) = seal(&key(1), &plain, &[4096]);
        let all = |b: &[u8], len: u64| open(&key(1), b, len, &s.digest, &[1 << 20]);

        assert_eq!(
            open(&key(2), &blob, s.blob_len, &s.digest, &[99]),
            Err(AttachmentError::WrongKey)
        );
        let mut tampered = blob.clone();
        tampered[BLOB_HEADER_LEN + SEALED_SEGMENT_LEN + 10] ^= 1;
        assert_eq!(all(&tampered, s.blob_len), Err(AttachmentError::Tampered(1)));
        let mut version = blob.clone();
        version[0] = 9;
        assert_eq!(all(&version, s.blob_len), Err(AttachmentError::UnsupportedVersion(9)));
        // Cut anywhere: short of the pointer's size.
        for cut in [0, 10, BLOB_HEADER_LEN, BLOB_HEADER_LEN + SEALED_SEGMENT_LEN, blob.len() - 1] {
            assert_eq!(all(&blob[..cut], s.blob_len), Err(AttachmentError::Truncated), "{cut}");
        }
        // Cut at a segment boundary, with a pointer that claims that size.
        let cut = BLOB_HEADER_LEN + 2 * SEALED_SEGMENT_LEN;
        let digest: [u8; 32] = Sha256::digest(&blob[..cut]).into();
        assert_eq!(
            open(&key(1), &blob[..cut], cut as u64, &digest, &[1 << 20]),
            Err(AttachmentError::Truncated)
        );
        // Two segments swapped.
        let mut swapped = blob[..BLOB_HEADER_LEN].to_vec();
        let seg =
            |i: usize| &blob[BLOB_HEADER_LEN + i * SEALED_SEGMENT_LEN..][..SEALED_SEGMENT_LEN];
        swapped.extend_from_slice(seg(1));
        swapped.extend_from_slice(seg(0));
        swapped.extend_from_slice(&blob[BLOB_HEADER_LEN + 2 * SEALED_SEGMENT_LEN..]);
        assert_eq!(all(&swapped, s.blob_len), Err(AttachmentError::Tampered(0)));
        // Longer than the pointer says.
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(all(&long, s.blob_len), Err(AttachmentError::TooLong));
        // Every segment fine, but the pointer's digest is another.
        assert_eq!(
            open(&key(1), &blob, s.blob_len, &[0; 32], &[1 << 20]),
            Err(AttachmentError::DigestMismatch)
        );
    }

    #[test]
    fn a_sized_encryptor_makes_the_same_blob_at_segment_boundaries() {
        for len in [0, 1, SEGMENT_LEN - 1, SEGMENT_LEN, SEGMENT_LEN + 1, 2 * SEGMENT_LEN, 40 << 14]
        {
            let plain = pattern(len);
            for pieces in [&[SEGMENT_LEN][..], &[2 * SEGMENT_LEN], &[7, SEGMENT_LEN]] {
                assert_eq!(
                    seal_with(&key(5), &plain, pieces, true),
                    seal(&key(5), &plain, pieces),
                    "{len} bytes in pieces of {pieces:?}"
                );
            }
        }
    }

    #[test]
    fn a_replayed_prefix_resumes_to_the_same_digest() {
        let k = key(7);
        let plain = pattern(5 * SEGMENT_LEN + 100);
        let (blob, sealed) = seal(&k, &plain, &[SEGMENT_LEN]);
        for kept in 0..=5 {
            let mut d = Decryptor::new(&k, sealed.blob_len);
            let mut replayed = 0;
            for seg in plain.chunks(SEGMENT_LEN).take(kept) {
                if !d.replay(seg) {
                    break;
                }
                replayed += 1;
            }
            assert_eq!(replayed, kept, "every full segment but the last replays");
            let mut out = Vec::new();
            d.update(&blob[d.position() as usize..], &mut out).unwrap();
            assert_eq!(out, plain[kept * SEGMENT_LEN..]);
            assert_eq!(d.finish(&sealed.digest).unwrap(), plain.len() as u64);
        }
        // A file of whole segments: the last (full) one is marked last, so it is downloaded.
        let plain = pattern(2 * SEGMENT_LEN);
        let (_, sealed) = seal(&k, &plain, &[SEGMENT_LEN]);
        let mut d = Decryptor::new(&k, sealed.blob_len);
        assert!(d.replay(&plain[..SEGMENT_LEN]));
        assert!(!d.replay(&plain[SEGMENT_LEN..]));
        assert!(!d.replay(&plain[..10]), "only whole segments");
        // Plaintext that is not the blob's: refused at the end, never handed out as complete.
        let plain = pattern(3 * SEGMENT_LEN);
        let (blob, sealed) = seal(&k, &plain, &[SEGMENT_LEN]);
        let mut d = Decryptor::new(&k, sealed.blob_len);
        assert!(d.replay(&vec![0u8; SEGMENT_LEN]));
        let mut out = Vec::new();
        d.update(&blob[d.position() as usize..], &mut out).unwrap();
        assert!(matches!(d.finish(&sealed.digest), Err(AttachmentError::DigestMismatch)));
    }

    #[test]
    fn no_key_in_debug() {
        let k = key(0xab);
        let mut out = Vec::new();
        let e = Encryptor::new(&k, &mut out);
        let d = Decryptor::new(&k, 100);
        let text = format!("{k:?} {e:?} {d:?}");
        assert!(!text.contains("ab") && !text.contains("171"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any slicing of the input gives the same blob, and any slicing of the blob opens it.
        #[test]
        fn any_slicing_gives_the_same_blob(
            len in 0usize..(3 * SEGMENT_LEN + 10),
            enc in proptest::collection::vec(1usize..100_000, 1..6),
            dec in proptest::collection::vec(1usize..100_000, 1..6),
        ) {
            let plain = pattern(len);
            let (whole, s) = seal(&key(3), &plain, &[len.max(1)]);
            let (sliced, s2) = seal(&key(3), &plain, &enc);
            prop_assert_eq!(&whole, &sliced);
            prop_assert_eq!(&s, &s2);
            // Told the length, the encryptor makes the same blob.
            let (sized, s3) = seal_with(&key(3), &plain, &enc, true);
            prop_assert_eq!(&whole, &sized);
            prop_assert_eq!(&s, &s3);
            prop_assert_eq!(open(&key(3), &sliced, s.blob_len, &s.digest, &dec).unwrap(), plain);
        }

        /// Truncating, dropping, repeating or reordering segments never opens.
        #[test]
        fn rearranged_segments_never_open(
            segments in 1usize..5,
            extra in 1usize..SEGMENT_LEN,
            order in proptest::collection::vec(0usize..5, 0..7),
        ) {
            let plain = pattern((segments - 1) * SEGMENT_LEN + extra);
            let (blob, s) = seal(&key(4), &plain, &[SEGMENT_LEN]);
            let body = &blob[BLOB_HEADER_LEN..];
            let parts: Vec<&[u8]> = body.chunks(SEALED_SEGMENT_LEN).collect();
            let order: Vec<usize> = order.into_iter().filter(|i| *i < parts.len()).collect();
            prop_assume!(order != (0..parts.len()).collect::<Vec<_>>());
            let mut other = blob[..BLOB_HEADER_LEN].to_vec();
            for i in &order {
                other.extend_from_slice(parts[*i]);
            }
            let digest: [u8; 32] = Sha256::digest(&other).into();
            // Even with a pointer that matches the rearranged blob's size and digest.
            let r = open(&key(4), &other, other.len() as u64, &digest, &[SEGMENT_LEN]);
            prop_assert!(r.is_err(), "{:?}", order);
            let r = open(&key(4), &other, s.blob_len, &s.digest, &[SEGMENT_LEN]);
            prop_assert!(r.is_err());
        }
    }
}
