//! Encrypted blobs (attachments; docs/PROTOCOL.md §14.16): uploaded in puts by an
//! authenticated device, stored in chunked rows of the relay's one database, read back by their
//! unguessable id in ranges, expired and swept.
//!
//! The relay holds only ciphertext it can't read: the key, the file name and the type travel in
//! the end-to-end encrypted message that points at the blob.
//!
//! Guarantees:
//! - a put is applied whole or not at all, in the writer's transaction, and answered only once
//!   committed: `committed` in an answer is durable, so an upload cut by a crash (the client's
//!   or the relay's) resumes from what the relay reports, and nothing is ever stored twice;
//! - a put must start at the committed length and may not pass the declared size, so an upload
//!   never holds more than it declared; the declared size counts against the account's daily
//!   upload bytes when the upload is created, and unfinished uploads per device are bounded;
//! - every stored byte counts in `meta.stored_bytes`, the relay-wide budget the mailboxes use
//!   (`max_stored_bytes`), and is given back when the blob is swept;
//! - only complete, unexpired blobs are read; the sweep deletes at most a given number of chunks
//!   per transaction, so a large expired blob never holds up sends for long.

use hush_protocol::wire;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::error::{RelayError, StoreError};
use crate::store::{
    AccountId, BLOB_CHUNKS, BLOB_DAILY, BLOB_EXPIRY, BLOB_UPLOADS, BLOBS, CHUNK_LEN, META, Store,
    stored_bytes, strip_version, versioned,
};

/// A blob id: 32 random bytes.
pub type BlobId = [u8; 32];

/// Every put but the last is a multiple of this (one stored chunk).
pub const PUT_ALIGN: usize = CHUNK_LEN;
/// Most bytes in one put or one read: 64 chunks (1,024,000 bytes); a relay whose request limit
/// is lower takes puts of as many chunks as fit it ([`max_put_for`]).
pub const MAX_PUT: usize = 64 * CHUNK_LEN;
/// Room a put's framing and fields take besides its data.
const PUT_OVERHEAD: usize = 4096;
/// The smallest request limit a relay can take blobs with: one chunk per put.
pub const MIN_REQUEST_FOR_BLOBS: usize = CHUNK_LEN + PUT_OVERHEAD;

/// The largest put a relay with request limit `max_request_bytes` takes: whole chunks, at most
/// [`MAX_PUT`].
pub fn max_put_for(max_request_bytes: usize) -> usize {
    (max_request_bytes.saturating_sub(PUT_OVERHEAD) / CHUNK_LEN).clamp(1, MAX_PUT / CHUNK_LEN)
        * CHUNK_LEN
}

const DAY_MS: u64 = 24 * 3600 * 1000;
/// When a device at its unfinished-upload limit may try again.
const UPLOADS_RETRY_MS: u64 = 60_000;

/// The operator's blob limits.
#[derive(Debug, Clone, Copy)]
pub struct BlobLimits {
    /// Largest blob.
    pub max_blob_bytes: u64,
    /// Bytes an account may declare in uploads per UTC day.
    pub upload_bytes_per_day: u64,
    /// Unfinished uploads per device.
    pub uploads_per_device: u64,
    /// How long an unfinished upload lives after its last put.
    pub upload_ttl_ms: u64,
    /// How long a complete blob lives.
    pub retention_ms: u64,
    /// Relay-wide stored bytes (mailboxes and blobs); 0: no budget.
    pub max_stored_bytes: u64,
    /// Largest put ([`max_put_for`] the request limit).
    pub max_put: usize,
}

/// What the relay keeps about a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlobMeta {
    owner: AccountId,
    device: u32,
    size: u64,
    committed: u64,
    expires_at_ms: u64,
}

impl BlobMeta {
    const LEN: usize = 32 + 4 + 8 + 8 + 8;

    fn complete(&self) -> bool {
        self.committed == self.size
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.extend_from_slice(&self.owner);
        b.extend_from_slice(&self.device.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.committed.to_be_bytes());
        b.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        versioned(&b)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let b = strip_version(bytes, "blob")?;
        if b.len() != Self::LEN {
            return Err(StoreError::Corrupt("blob"));
        }
        let u64_at = |at: usize| {
            b.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("blob"))
        };
        Ok(Self {
            owner: b
                .get(..32)
                .and_then(|s| s.try_into().ok())
                .ok_or(StoreError::Corrupt("blob"))?,
            device: b
                .get(32..36)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or(StoreError::Corrupt("blob"))?,
            size: u64_at(36)?,
            committed: u64_at(44)?,
            expires_at_ms: u64_at(52)?,
        })
    }

    fn progress(&self) -> wire::BlobProgress {
        wire::BlobProgress {
            size: self.size,
            committed: self.committed,
            complete: self.complete(),
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A blob that exists and has not expired (`unknown_blob` otherwise: the sweep may not have
/// deleted an expired one yet).
fn live(
    blobs: &impl ReadableTable<BlobId, &'static [u8]>,
    id: BlobId,
    now_ms: u64,
) -> Result<BlobMeta, RelayError> {
    let meta = match blobs.get(id).map_err(StoreError::from)? {
        Some(v) => BlobMeta::decode(v.value())?,
        None => return Err(RelayError::UnknownBlob),
    };
    if meta.expires_at_ms <= now_ms {
        return Err(RelayError::UnknownBlob);
    }
    Ok(meta)
}

/// A blob id from the wire.
pub fn parse_id(bytes: &[u8]) -> Result<BlobId, RelayError> {
    bytes.try_into().map_err(|_| RelayError::UnknownBlob)
}

fn add_stored(txn: &WriteTransaction, delta: i128) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let now = i128::from(stored_bytes(&meta)?);
    let new = u64::try_from((now + delta).max(0)).unwrap_or(u64::MAX);
    meta.insert("stored_bytes", new)?;
    Ok(())
}

/// Starts an upload of `size` bytes by `owner`'s `device` under `id`.
pub fn create(
    txn: &WriteTransaction,
    owner: (AccountId, u32),
    id: BlobId,
    size: u64,
    now_ms: u64,
    limits: &BlobLimits,
) -> Result<u64, RelayError> {
    if size > limits.max_blob_bytes {
        return Err(RelayError::BlobTooLarge { size, max: limits.max_blob_bytes });
    }
    let mut uploads = txn.open_table(BLOB_UPLOADS).map_err(StoreError::from)?;
    let open = uploads.get(owner).map_err(StoreError::from)?.map_or(0, |v| v.value());
    if open >= limits.uploads_per_device {
        return Err(RelayError::QuotaExceeded {
            what: "this device has as many unfinished uploads as the relay allows",
            retry_after_ms: UPLOADS_RETRY_MS,
        });
    }
    let day = now_ms / DAY_MS;
    let mut daily = txn.open_table(BLOB_DAILY).map_err(StoreError::from)?;
    let used = daily.get((day, owner.0)).map_err(StoreError::from)?.map_or(0, |v| v.value());
    if used.saturating_add(size) > limits.upload_bytes_per_day {
        return Err(RelayError::QuotaExceeded {
            what: "the account's upload bytes for today are used up",
            retry_after_ms: (day + 1) * DAY_MS - now_ms,
        });
    }
    let mut blobs = txn.open_table(BLOBS).map_err(StoreError::from)?;
    if blobs.get(id).map_err(StoreError::from)?.is_some() {
        // 256 random bits never collide; a repeat is the caller's bug.
        return Err(StoreError::Corrupt("blob id reused").into());
    }
    let expires_at_ms = now_ms.saturating_add(limits.upload_ttl_ms);
    let meta = BlobMeta { owner: owner.0, device: owner.1, size, committed: 0, expires_at_ms };
    blobs.insert(id, meta.encode().as_slice()).map_err(StoreError::from)?;
    txn.open_table(BLOB_EXPIRY)
        .map_err(StoreError::from)?
        .insert((expires_at_ms, id), ())
        .map_err(StoreError::from)?;
    uploads.insert(owner, open + 1).map_err(StoreError::from)?;
    daily.insert((day, owner.0), used + size).map_err(StoreError::from)?;
    Ok(expires_at_ms)
}

/// Appends `data` at `offset` to `owner`'s upload `id`.
pub fn put(
    txn: &WriteTransaction,
    owner: (AccountId, u32),
    id: BlobId,
    offset: u64,
    data: &[u8],
    now_ms: u64,
    limits: &BlobLimits,
) -> Result<wire::BlobProgress, RelayError> {
    let mut blobs = txn.open_table(BLOBS).map_err(StoreError::from)?;
    let mut meta = live(&blobs, id, now_ms)?;
    if (meta.owner, meta.device) != owner {
        return Err(RelayError::UnknownBlob);
    }
    let committed = meta.committed;
    if meta.complete() {
        // A put repeated after its answer was lost: the blob is whole, say so.
        return match offset.checked_add(data.len() as u64) == Some(meta.size) {
            true => Ok(meta.progress()),
            false => Err(RelayError::BadOffset { why: "the blob is complete", committed }),
        };
    }
    if offset != committed {
        return Err(RelayError::BadOffset {
            why: "a put starts at the committed length",
            committed,
        });
    }
    if data.len() > limits.max_put {
        return Err(RelayError::TooLarge { len: data.len(), max: limits.max_put });
    }
    let end = offset + data.len() as u64;
    if end > meta.size {
        return Err(RelayError::BadOffset { why: "the put passes the blob's size", committed });
    }
    if end < meta.size && (data.is_empty() || !data.len().is_multiple_of(PUT_ALIGN)) {
        return Err(RelayError::BadOffset {
            why: "every put but the last is a non-empty multiple of put_align",
            committed,
        });
    }
    let stored = stored_bytes(&txn.open_table(META).map_err(StoreError::from)?)?;
    if limits.max_stored_bytes > 0
        && stored.saturating_add(data.len() as u64) > limits.max_stored_bytes
    {
        return Err(StoreError::Full("the relay's stored-bytes budget".into()).into());
    }
    let first =
        u32::try_from(offset / CHUNK_LEN as u64).map_err(|_| StoreError::Corrupt("blob offset"))?;
    let mut chunks = txn.open_table(BLOB_CHUNKS).map_err(StoreError::from)?;
    for (k, chunk) in (first..).zip(data.chunks(CHUNK_LEN)) {
        chunks.insert((id, k), versioned(chunk).as_slice()).map_err(StoreError::from)?;
    }
    add_stored(txn, i128::from(data.len() as u64))?;
    let mut expiry = txn.open_table(BLOB_EXPIRY).map_err(StoreError::from)?;
    expiry.remove((meta.expires_at_ms, id)).map_err(StoreError::from)?;
    meta.committed = end;
    meta.expires_at_ms = match meta.complete() {
        true => now_ms.saturating_add(limits.retention_ms),
        false => now_ms.saturating_add(limits.upload_ttl_ms),
    };
    expiry.insert((meta.expires_at_ms, id), ()).map_err(StoreError::from)?;
    if meta.complete() {
        finish_upload(txn, owner)?;
    }
    blobs.insert(id, meta.encode().as_slice()).map_err(StoreError::from)?;
    Ok(meta.progress())
}

/// One unfinished upload fewer for `owner`.
fn finish_upload(txn: &WriteTransaction, owner: (AccountId, u32)) -> Result<(), StoreError> {
    let mut uploads = txn.open_table(BLOB_UPLOADS)?;
    let open = uploads.get(owner)?.map_or(0, |v| v.value());
    match open {
        0 | 1 => uploads.remove(owner)?,
        n => uploads.insert(owner, n - 1)?,
    };
    Ok(())
}

impl Store {
    /// How far a blob's upload is (anyone holding the id may ask).
    pub fn blob_status(&self, id: BlobId, now_ms: u64) -> Result<wire::BlobProgress, RelayError> {
        let txn = self.db()?.begin_read().map_err(StoreError::from)?;
        let blobs = txn.open_table(BLOBS).map_err(StoreError::from)?;
        Ok(live(&blobs, id, now_ms)?.progress())
    }

    /// Up to `max_len` bytes (at most [`MAX_PUT`]) of a complete blob from `offset`.
    pub fn blob_read(
        &self,
        id: BlobId,
        offset: u64,
        max_len: u32,
        now_ms: u64,
    ) -> Result<wire::BlobData, RelayError> {
        let txn = self.db()?.begin_read().map_err(StoreError::from)?;
        let blobs = txn.open_table(BLOBS).map_err(StoreError::from)?;
        let meta = live(&blobs, id, now_ms)?;
        if !meta.complete() {
            return Err(RelayError::UnknownBlob);
        }
        if offset > meta.size {
            return Err(RelayError::BadOffset { why: "past the blob's end", committed: meta.size });
        }
        let want = (meta.size - offset).min(u64::from(max_len)).min(MAX_PUT as u64);
        let want = usize::try_from(want).unwrap_or(MAX_PUT);
        let chunks = txn.open_table(BLOB_CHUNKS).map_err(StoreError::from)?;
        let first = u32::try_from(offset / CHUNK_LEN as u64)
            .map_err(|_| StoreError::Corrupt("blob offset"))?;
        let mut skip = usize::try_from(offset % CHUNK_LEN as u64).unwrap_or(0);
        let mut data = Vec::with_capacity(want);
        for item in chunks.range((id, first)..=(id, u32::MAX)).map_err(StoreError::from)? {
            if data.len() >= want {
                break;
            }
            let (_, v) = item.map_err(StoreError::from)?;
            let bytes = strip_version(v.value(), "blob chunk")?;
            let bytes = bytes.get(skip..).unwrap_or_default();
            skip = 0;
            let take = (want - data.len()).min(bytes.len());
            data.extend_from_slice(bytes.get(..take).unwrap_or_default());
        }
        if data.len() != want {
            return Err(StoreError::Corrupt("blob chunks missing").into());
        }
        Ok(wire::BlobData { size: meta.size, offset, data })
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Blobs removed whole.
    pub blobs: u64,
    /// Bytes given back.
    pub bytes: u64,
    /// Chunks deleted.
    pub chunks: usize,
}

/// Deletes expired blobs (complete ones past retention, unfinished ones past their upload
/// time), at most `max_chunks` chunks in this transaction: a blob cut short keeps its expiry
/// row and the next sweep goes on with it. Also forgets daily upload counts of past days.
pub fn sweep(txn: &WriteTransaction, now_ms: u64, max_chunks: usize) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    let mut expiry = txn.open_table(BLOB_EXPIRY)?;
    let due: Vec<(u64, BlobId)> = expiry
        .range(..(now_ms, [0u8; 32]))?
        .take(max_chunks.max(1))
        .map(|item| item.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    let mut blobs = txn.open_table(BLOBS)?;
    let mut chunks = txn.open_table(BLOB_CHUNKS)?;
    for (at, id) in due {
        let budget = max_chunks.saturating_sub(swept.chunks);
        if budget == 0 {
            break;
        }
        let keys: Vec<(BlobId, u32)> = chunks
            .range((id, 0)..=(id, u32::MAX))?
            .take(budget + 1)
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        let whole = keys.len() <= budget;
        for key in keys.into_iter().take(budget) {
            if let Some(v) = chunks.remove(key)? {
                swept.bytes += strip_version(v.value(), "blob chunk")?.len() as u64;
            }
            swept.chunks += 1;
        }
        if whole {
            expiry.remove((at, id))?;
            if let Some(v) = blobs.remove(id)? {
                let meta = BlobMeta::decode(v.value())?;
                if !meta.complete() {
                    finish_upload(txn, (meta.owner, meta.device))?;
                }
            }
            swept.blobs += 1;
        }
    }
    drop((expiry, blobs, chunks));
    add_stored(txn, -i128::from(swept.bytes))?;
    // Daily counts before yesterday serve no quota any more.
    let today = now_ms / DAY_MS;
    let mut daily = txn.open_table(BLOB_DAILY)?;
    let old: Vec<(u64, AccountId)> = daily
        .range(..(today.saturating_sub(1), [0u8; 32]))?
        .take(max_chunks.max(1))
        .map(|item| item.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for key in old {
        daily.remove(key)?;
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn puts_are_whole_chunks_that_fit_the_request_limit() {
        assert_eq!(max_put_for(4 * 1024 * 1024), MAX_PUT);
        assert_eq!(max_put_for(65_536), 3 * CHUNK_LEN);
        assert_eq!(max_put_for(MIN_REQUEST_FOR_BLOBS), CHUNK_LEN);
    }

    #[test]
    fn blob_records_round_trip_and_refuse_garbage() {
        let m = BlobMeta {
            owner: [3; 32],
            device: 7,
            size: 1 << 40,
            committed: 12_345,
            expires_at_ms: 99,
        };
        assert_eq!(BlobMeta::decode(&m.encode()).unwrap(), m);
        assert!(BlobMeta::decode(&m.encode()[..20]).is_err());
        assert!(BlobMeta::decode(&[]).is_err());
    }
}
