//! The relay's embedded database: redb tables, the schema version and record encodings.
//!
//! Every value is a byte string that starts with a record version byte, so a later relay can
//! read (and migrate) what an earlier one wrote; the `meta` table holds the schema version and a
//! relay refuses to open a database written by a newer one. Keys are typed tuples so that range
//! scans (a device's mailbox, a device's prekeys, expiry order) are plain ordered ranges.
//!
//! Writes happen only on the writer thread ([`crate::writer`]); reads open their own read
//! transactions from any thread (redb's MVCC readers never block the writer).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hush_protocol::{AccountKey, DeviceList};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StoreError;

/// Account id.
pub type AccountId = [u8; 32];

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// account → v1 ‖ encoded signed device list.
pub(crate) const ACCOUNTS: TableDefinition<AccountId, &[u8]> = TableDefinition::new("accounts");
/// account → v1 ‖ (device id u32 ‖ registration id u32)*: the device set of the stored list,
/// so the per-send device-set check needs no signature verification.
pub(crate) const DEVICES: TableDefinition<AccountId, &[u8]> = TableDefinition::new("devices");
/// (account, device) → v1 ‖ encoded signed prekey.
pub(crate) const SIGNED_PREKEYS: TableDefinition<(AccountId, u32), &[u8]> =
    TableDefinition::new("signed_prekeys");
/// (account, device, key id) → v1 ‖ encoded one-time prekey.
pub(crate) const ONE_TIME_PREKEYS: TableDefinition<(AccountId, u32, u32), &[u8]> =
    TableDefinition::new("one_time_prekeys");
/// (account, device, key id) → v1 ‖ encoded signed one-time KEM prekey.
pub(crate) const KEM_PREKEYS: TableDefinition<(AccountId, u32, u32), &[u8]> =
    TableDefinition::new("kem_prekeys");
/// (account, device) → v1 ‖ encoded signed last-resort KEM prekey.
pub(crate) const LAST_RESORT_KEM: TableDefinition<(AccountId, u32), &[u8]> =
    TableDefinition::new("last_resort_kem_prekeys");
/// (account, device, seq) → mailbox entry ([`MailboxEntry`]: with its payload inline when it
/// has one recipient, else a reference into [`PAYLOADS`]).
pub(crate) const MAILBOX: TableDefinition<(AccountId, u32, u64), &[u8]> =
    TableDefinition::new("mailbox");
/// (account, device) → mailbox counters.
pub(crate) const MAILBOX_META: TableDefinition<(AccountId, u32), &[u8]> =
    TableDefinition::new("mailbox_meta");
/// payload id → a payload stored apart from its mailbox entries ([`StoredPayload`]): one with
/// several recipients (a group message), shared by every entry that references it, or one
/// longer than [`CHUNKED_ABOVE`], whose bytes are in [`PAYLOAD_CHUNKS`].
pub(crate) const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
/// (payload id, index) → v1 ‖ up to [`CHUNK_LEN`] bytes of a chunked payload.
pub(crate) const PAYLOAD_CHUNKS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("payload_chunks");

/// Payloads longer than this are stored in chunks. redb gives a value that does not fit a page
/// a run of pages rounded up to a power of two, so a 256 KiB payload with its header took
/// 512 KiB of file; in 16,000-byte chunks each takes a little over one 16 KiB page (measured:
/// 2.1× the payload in file size whole, 1.06× in chunks).
pub const CHUNKED_ABOVE: usize = 16 * 1024;
/// The size of a chunk: with its key and the leaf's header it fits one 16 KiB page.
pub const CHUNK_LEN: usize = 16_000;
/// (recipient account, device, sender account) → [`SenderUsage`]: what one sender holds of
/// one device's mailbox, for the per-sender share (a sender's own account is not counted).
pub(crate) const MAILBOX_SENDERS: TableDefinition<(AccountId, u32, AccountId), &[u8]> =
    TableDefinition::new("mailbox_senders");
/// (expires at ms, account, device, seq) → (). The retention sweeper walks this in order.
pub(crate) const EXPIRY: TableDefinition<(u64, AccountId, u32, u64), ()> =
    TableDefinition::new("expiry");

/// blob id → v1 ‖ owner account ‖ owner device u32 ‖ size u64 ‖ committed u64 ‖ expires at
/// ms u64 (all big-endian): an upload, complete once committed = size ([`crate::blobs`]).
pub(crate) const BLOBS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// (blob id, index) → v1 ‖ up to [`CHUNK_LEN`] bytes: chunk `index` covers bytes from
/// `index × CHUNK_LEN`.
pub(crate) const BLOB_CHUNKS: TableDefinition<([u8; 32], u32), &[u8]> =
    TableDefinition::new("blob_chunks");
/// (expires at ms, blob id) → (): the blob sweep walks this in order.
pub(crate) const BLOB_EXPIRY: TableDefinition<(u64, [u8; 32]), ()> =
    TableDefinition::new("blob_expiry");
/// (account, device) → unfinished uploads of that device.
pub(crate) const BLOB_UPLOADS: TableDefinition<(AccountId, u32), u64> =
    TableDefinition::new("blob_uploads");
/// (UTC day number, account) → bytes the account declared in uploads that day.
pub(crate) const BLOB_DAILY: TableDefinition<(u64, AccountId), u64> =
    TableDefinition::new("blob_daily");

/// Version of the table layout this build writes.
///
/// - 1: the first layout.
/// - 2: adds `mailbox_senders` and the `meta` counter `stored_bytes`, both derived from the
///   mailboxes (a version-1 database is migrated when it is opened, in one pass over them),
///   and `payload_chunks` with version-2 payload records (payloads over 16 KiB stored in
///   chunks; version-1 records, whole, still read).
/// - 3: adds the blob tables (`blobs`, `blob_chunks`, `blob_expiry`, `blob_uploads`,
///   `blob_daily`), empty when a version-2 database is opened; blob bytes count in
///   `stored_bytes`.
pub const SCHEMA_VERSION: u64 = 3;
const RECORD_V1: u8 = 1;

/// The open database, shared by readers and the writer thread.
///
/// After an I/O error redb refuses every further transaction until the database is closed
/// and opened again, so the handle can be swapped: [`Store::reopen`] (on the writer thread)
/// takes it out, waits for readers to let go, and opens the file again, which repairs it to
/// its last commit. Meanwhile [`Store::db`] answers `storage_unavailable`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Handle>,
}

/// The redb page cache a relay keeps by default (`db_cache_bytes`).
pub const DEFAULT_CACHE_BYTES: usize = 4 * 1024 * 1024;

struct Handle {
    path: PathBuf,
    cache_bytes: usize,
    db: RwLock<Option<Arc<Database>>>,
}

impl Store {
    /// Opens (or creates) the database at `path`, creating every table and checking the schema
    /// version, with [`DEFAULT_CACHE_BYTES`] of page cache.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with `cache_bytes` of redb page cache: memory the relay may fill with
    /// pages it read or wrote (redb's own default is 1 GiB, which a 100 MiB upload alone would
    /// fill a tenth of); the OS page cache still holds recently used pages beneath it.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Self::open_file(path, cache_bytes)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew { found: v, supported: SCHEMA_VERSION });
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    drop(meta);
                    // Version 2 derived the counters; version 3 only adds (empty) tables.
                    if v < 2 {
                        crate::mailbox::derive_counters(&txn)?;
                    }
                    txn.open_table(META)?.insert("schema_version", SCHEMA_VERSION)?;
                    tracing::info!(from = found, to = SCHEMA_VERSION, "database schema migrated");
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                    meta.insert("next_payload_id", 1)?;
                    meta.insert("stored_bytes", 0)?;
                }
            }
            txn.open_table(ACCOUNTS)?;
            txn.open_table(DEVICES)?;
            txn.open_table(SIGNED_PREKEYS)?;
            txn.open_table(ONE_TIME_PREKEYS)?;
            txn.open_table(KEM_PREKEYS)?;
            txn.open_table(LAST_RESORT_KEM)?;
            txn.open_table(MAILBOX)?;
            txn.open_table(MAILBOX_META)?;
            txn.open_table(MAILBOX_SENDERS)?;
            txn.open_table(PAYLOADS)?;
            txn.open_table(PAYLOAD_CHUNKS)?;
            txn.open_table(EXPIRY)?;
            txn.open_table(BLOBS)?;
            txn.open_table(BLOB_CHUNKS)?;
            txn.open_table(BLOB_EXPIRY)?;
            txn.open_table(BLOB_UPLOADS)?;
            txn.open_table(BLOB_DAILY)?;
        }
        txn.commit()?;
        Ok(Self {
            inner: Arc::new(Handle {
                path: path.to_owned(),
                cache_bytes,
                db: RwLock::new(Some(Arc::new(db))),
            }),
        })
    }

    fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
        Ok(Database::builder().set_cache_size(cache_bytes).create(path)?)
    }

    /// Compacts the database file at `path` offline (a running relay holds its lock, and
    /// this fails with "already open"): redb reuses freed pages but never shrinks its file,
    /// so after a large backlog has drained this gives the space back. Returns the file size
    /// before and after.
    pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = len(path);
        let mut db = Database::open(path)?;
        while db.compact().map_err(|e| StoreError::Db(e.into()))? {}
        drop(db);
        Ok((before, len(path)))
    }

    /// The database, or `storage_unavailable` while it is being reopened (or could not be).
    pub fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner.db.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
            StoreError::Unavailable("the database is being reopened after an I/O error".into())
        })
    }

    /// Closes the database and opens it again (after an I/O error), waiting up to `wait` for
    /// readers to finish with it. The schema was checked when it was first opened; opening
    /// repairs the file to its last commit. Until it succeeds, [`Store::db`] fails.
    pub fn reopen(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        let old = self.inner.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            let until = std::time::Instant::now() + wait;
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // A reader still holding it keeps the file locked: opening then fails with
            // "already open", and the next attempt tries again.
            drop(old);
        }
        let db = Self::open_file(&self.inner.path, self.inner.cache_bytes)?;
        *self.inner.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The stored device list of `account`.
    pub fn device_list(&self, account: &AccountKey) -> Result<Option<DeviceList>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ACCOUNTS)?;
        read_device_list(&table, account.as_bytes())
    }

    /// Up to `limit` mailbox entries of a device with sequence numbers above `after`, in order,
    /// with their payloads.
    pub fn read_mailbox(
        &self,
        account: &AccountId,
        device: u32,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MailboxEntry, Vec<u8>)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mailbox = txn.open_table(MAILBOX)?;
        let payloads = txn.open_table(PAYLOADS)?;
        let chunks = txn.open_table(PAYLOAD_CHUNKS)?;
        let mut out = Vec::new();
        let start = after.saturating_add(1);
        for item in mailbox.range((*account, device, start)..=(*account, device, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let (_, _, seq) = key.value();
            let (entry, inline) = MailboxEntry::decode(value.value())?;
            let bytes = match entry.payload_id {
                INLINE => inline.to_vec(),
                id => {
                    let payload =
                        payloads.get(id)?.ok_or(StoreError::Corrupt("payload reference"))?;
                    read_payload(&chunks, id, &decode_payload(payload.value())?)?
                }
            };
            out.push((seq, entry, bytes));
        }
        Ok(out)
    }

    /// The device-set check of [`crate::mailbox::check_devices`] on a read transaction (for
    /// ephemeral sends, which are never stored).
    pub fn check_devices(
        &self,
        send: &crate::mailbox::Send,
    ) -> Result<(), crate::error::RelayError> {
        let txn = self.db()?.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(DEVICES).map_err(StoreError::from)?;
        crate::mailbox::check_devices(&table, send)
    }

    /// Payload bytes stored relay-wide (each shared payload once).
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        stored_bytes(&txn.open_table(META)?)
    }

    /// Whether `device` is in the account's current device list with `registration_id` (a
    /// device replaced under the same id has a new registration id).
    pub fn has_device(
        &self,
        account: &AccountId,
        device: u32,
        registration_id: u32,
    ) -> Result<bool, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        Ok(read_devices(&table, account)?.is_some_and(|d| d.contains(&(device, registration_id))))
    }
}

pub(crate) fn read_device_list(
    table: &impl ReadableTable<AccountId, &'static [u8]>,
    account: &AccountId,
) -> Result<Option<DeviceList>, StoreError> {
    let Some(v) = table.get(account)? else { return Ok(None) };
    let bytes = strip_version(v.value(), "account")?;
    // The list was verified before it was stored; decoding re-verifies, which also catches
    // on-disk corruption.
    DeviceList::decode(bytes).map(Some).map_err(|_| StoreError::Corrupt("account"))
}

/// The (device id, registration id) pairs of an account, sorted by device id.
pub(crate) fn read_devices(
    table: &impl ReadableTable<AccountId, &'static [u8]>,
    account: &AccountId,
) -> Result<Option<Vec<(u32, u32)>>, StoreError> {
    let Some(v) = table.get(account)? else { return Ok(None) };
    let body = strip_version(v.value(), "devices")?;
    if body.len() % 8 != 0 {
        return Err(StoreError::Corrupt("devices"));
    }
    let mut out = Vec::with_capacity(body.len() / 8);
    let mut r = Fields(body);
    while let (Some(id), Some(reg)) = (r.u32(), r.u32()) {
        out.push((id, reg));
    }
    Ok(Some(out))
}

/// Encodes a device set for [`DEVICES`].
pub(crate) fn encode_devices(list: &DeviceList) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + list.devices.len() * 8);
    out.push(RECORD_V1);
    for d in &list.devices {
        out.extend_from_slice(&d.device_id.to_be_bytes());
        out.extend_from_slice(&d.registration_id.to_be_bytes());
    }
    out
}

pub(crate) fn read_mailbox_meta(
    table: &impl ReadableTable<(AccountId, u32), &'static [u8]>,
    account: &AccountId,
    device: u32,
) -> Result<MailboxMeta, StoreError> {
    match table.get((*account, device))? {
        Some(v) => MailboxMeta::decode(v.value()),
        None => Ok(MailboxMeta::default()),
    }
}

/// Prepends the record version.
pub(crate) fn versioned(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(RECORD_V1);
    out.extend_from_slice(bytes);
    out
}

/// Checks and strips the record version.
pub(crate) fn strip_version<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<&'a [u8], StoreError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => Ok(rest),
        _ => Err(StoreError::Corrupt(what)),
    }
}

/// One stored envelope: where its payload is and who sent it.
///
/// Two record versions, each with one meaning, so what an earlier relay wrote reads unchanged:
/// - v1 `0x01 ‖ payload id u64 ‖ sender account (32) ‖ sender device u32 ‖ server time u64 ‖
///   expires at u64 ‖ payload length u32`: the payload is shared by several recipients and
///   lives in [`PAYLOADS`] under its id, with a reference count;
/// - v2 `0x02 ‖ sender account (32) ‖ sender device u32 ‖ server time u64 ‖ expires at u64 ‖
///   payload`: the payload has this one recipient and is stored in the entry itself. That is
///   every 1:1 envelope (each device has its own ciphertext), and it saves a B-tree insert on
///   send, a lookup on delivery and a delete on ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Key into the payload table, or [`INLINE`] when the payload is in the entry itself.
    pub payload_id: u64,
    /// Sender account.
    pub sender_account: AccountId,
    /// Sender device.
    pub sender_device: u32,
    /// When the relay accepted it (ms since the epoch).
    pub server_time_ms: u64,
    /// When the sweeper deletes it if it was never acked.
    pub expires_at_ms: u64,
    /// Payload length (counted against the mailbox byte quota).
    pub len: u32,
}

/// The `payload_id` of an entry that carries its payload (payload ids start at 1).
pub const INLINE: u64 = 0;
const ENTRY_LEN: usize = 1 + 8 + 32 + 4 + 8 + 8 + 4;
const INLINE_HEADER_LEN: usize = 1 + 32 + 4 + 8 + 8;
const RECORD_V2: u8 = 2;

impl MailboxEntry {
    /// Encodes the entry; `inline` is its payload when `payload_id` is [`INLINE`] (and is
    /// ignored otherwise).
    pub(crate) fn encode(&self, inline: &[u8]) -> Vec<u8> {
        if self.payload_id == INLINE {
            let mut out = Vec::with_capacity(INLINE_HEADER_LEN + inline.len());
            out.push(RECORD_V2);
            out.extend_from_slice(&self.sender_account);
            out.extend_from_slice(&self.sender_device.to_be_bytes());
            out.extend_from_slice(&self.server_time_ms.to_be_bytes());
            out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
            out.extend_from_slice(inline);
            return out;
        }
        let mut out = Vec::with_capacity(ENTRY_LEN);
        out.push(RECORD_V1);
        out.extend_from_slice(&self.payload_id.to_be_bytes());
        out.extend_from_slice(&self.sender_account);
        out.extend_from_slice(&self.sender_device.to_be_bytes());
        out.extend_from_slice(&self.server_time_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Decodes an entry and its inline payload (empty for an entry whose payload is shared).
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), StoreError> {
        let corrupt = || StoreError::Corrupt("mailbox entry");
        let (&version, body) = bytes.split_first().ok_or_else(corrupt)?;
        let mut r = Fields(body);
        match version {
            RECORD_V1 if bytes.len() == ENTRY_LEN => {
                let payload_id = r.u64().filter(|&id| id != INLINE).ok_or_else(corrupt)?;
                let entry = Self {
                    payload_id,
                    sender_account: r.array().ok_or_else(corrupt)?,
                    sender_device: r.u32().ok_or_else(corrupt)?,
                    server_time_ms: r.u64().ok_or_else(corrupt)?,
                    expires_at_ms: r.u64().ok_or_else(corrupt)?,
                    len: r.u32().ok_or_else(corrupt)?,
                };
                Ok((entry, &[]))
            }
            RECORD_V2 => {
                let sender_account = r.array().ok_or_else(corrupt)?;
                let sender_device = r.u32().ok_or_else(corrupt)?;
                let server_time_ms = r.u64().ok_or_else(corrupt)?;
                let expires_at_ms = r.u64().ok_or_else(corrupt)?;
                let payload = r.0;
                let len = u32::try_from(payload.len()).map_err(|_| corrupt())?;
                let entry = Self {
                    payload_id: INLINE,
                    sender_account,
                    sender_device,
                    server_time_ms,
                    expires_at_ms,
                    len,
                };
                Ok((entry, payload))
            }
            _ => Err(corrupt()),
        }
    }
}

/// What one sender holds of one device's mailbox: `v1 ‖ count u64 ‖ bytes u64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderUsage {
    /// Envelopes.
    pub count: u64,
    /// Payload bytes (each envelope counts its payload, as the mailbox quota does).
    pub bytes: u64,
}

impl SenderUsage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(RECORD_V1);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("mailbox sender usage");
        let mut r = Fields(strip_version(bytes, "mailbox sender usage")?);
        let usage =
            Self { count: r.u64().ok_or_else(corrupt)?, bytes: r.u64().ok_or_else(corrupt)? };
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        Ok(usage)
    }
}

/// The relay-wide count of stored payload bytes (`meta.stored_bytes`).
pub(crate) fn stored_bytes(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<u64, StoreError> {
    Ok(meta.get("stored_bytes")?.map_or(0, |v| v.value()))
}

/// Per-device mailbox counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxMeta {
    /// The next sequence number to assign (sequence numbers start at 1).
    pub next_seq: u64,
    /// Envelopes stored.
    pub count: u64,
    /// Payload bytes stored (each envelope counts its payload, even when shared).
    pub bytes: u64,
}

impl MailboxMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25);
        out.push(RECORD_V1);
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("mailbox meta");
        let body = strip_version(bytes, "mailbox meta")?;
        let mut r = Fields(body);
        let meta = Self {
            next_seq: r.u64().ok_or_else(corrupt)?,
            count: r.u64().ok_or_else(corrupt)?,
            bytes: r.u64().ok_or_else(corrupt)?,
        };
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        Ok(meta)
    }
}

/// A row of [`PAYLOADS`]. Two record versions:
/// - v1 `0x01 ‖ refcount u32 ‖ bytes`: the payload whole;
/// - v2 `0x02 ‖ refcount u32 ‖ length u64 ‖ chunks u32`: the payload in [`PAYLOAD_CHUNKS`]
///   under this id, indexes `0..chunks`, each `0x01 ‖ bytes`, [`CHUNK_LEN`] bytes but the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredPayload<'a> {
    /// v1.
    Whole {
        /// Entries that reference it.
        refcount: u32,
        /// The payload.
        bytes: &'a [u8],
    },
    /// v2.
    Chunked {
        /// Entries that reference it.
        refcount: u32,
        /// Payload length.
        len: u64,
        /// Chunk rows.
        chunks: u32,
    },
}

impl StoredPayload<'_> {
    pub(crate) fn refcount(&self) -> u32 {
        match self {
            Self::Whole { refcount, .. } | Self::Chunked { refcount, .. } => *refcount,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::Whole { bytes, .. } => bytes.len() as u64,
            Self::Chunked { len, .. } => *len,
        }
    }

    /// The same row with another reference count.
    pub(crate) fn with_refcount(&self, refcount: u32) -> Vec<u8> {
        match self {
            Self::Whole { bytes, .. } => encode_payload(refcount, bytes),
            Self::Chunked { len, chunks, .. } => encode_chunked_payload(refcount, *len, *chunks),
        }
    }
}

pub(crate) fn encode_payload(refcount: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.push(RECORD_V1);
    out.extend_from_slice(&refcount.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub(crate) fn encode_chunked_payload(refcount: u32, len: u64, chunks: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(RECORD_V2);
    out.extend_from_slice(&refcount.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&chunks.to_be_bytes());
    out
}

pub(crate) fn decode_payload(bytes: &[u8]) -> Result<StoredPayload<'_>, StoreError> {
    let corrupt = || StoreError::Corrupt("payload");
    let (&version, body) = bytes.split_first().ok_or_else(corrupt)?;
    let mut r = Fields(body);
    let refcount = r.u32().ok_or_else(corrupt)?;
    match version {
        RECORD_V1 => Ok(StoredPayload::Whole { refcount, bytes: r.0 }),
        RECORD_V2 => {
            let len = r.u64().ok_or_else(corrupt)?;
            let chunks = r.u32().ok_or_else(corrupt)?;
            if !r.0.is_empty() {
                return Err(corrupt());
            }
            Ok(StoredPayload::Chunked { refcount, len, chunks })
        }
        _ => Err(corrupt()),
    }
}

/// Writes `bytes` as the chunks of payload `id`; returns how many.
pub(crate) fn write_chunks(
    table: &mut redb::Table<'_, (u64, u32), &'static [u8]>,
    id: u64,
    bytes: &[u8],
) -> Result<u32, StoreError> {
    let mut n = 0u32;
    for chunk in bytes.chunks(CHUNK_LEN) {
        table.insert((id, n), versioned(chunk).as_slice())?;
        n += 1;
    }
    Ok(n)
}

/// The bytes of a stored payload, joining its chunks if it has them.
pub(crate) fn read_payload(
    chunks: &impl ReadableTable<(u64, u32), &'static [u8]>,
    id: u64,
    stored: &StoredPayload<'_>,
) -> Result<Vec<u8>, StoreError> {
    match stored {
        StoredPayload::Whole { bytes, .. } => Ok(bytes.to_vec()),
        StoredPayload::Chunked { len, chunks: n, .. } => {
            let mut out = Vec::with_capacity(usize::try_from(*len).unwrap_or(0));
            for item in chunks.range((id, 0)..(id, *n))? {
                let (_, v) = item?;
                out.extend_from_slice(strip_version(v.value(), "payload chunk")?);
            }
            if out.len() as u64 != *len {
                return Err(StoreError::Corrupt("payload chunks"));
            }
            Ok(out)
        }
    }
}

/// A tiny big-endian field reader for fixed records.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer test: the on-disk encodings are pinned, so an upgrade can't silently change
    /// what an earlier relay wrote.
    #[test]
    fn record_encodings_are_pinned() {
        let e = MailboxEntry {
            payload_id: 0x0102,
            sender_account: [0xaa; 32],
            sender_device: 7,
            server_time_ms: 0x10,
            expires_at_ms: 0x20,
            len: 5,
        };
        let bytes = e.encode(b"ignored");
        let mut expected = vec![1, 0, 0, 0, 0, 0, 0, 1, 2];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 5]);
        assert_eq!(bytes, expected);
        assert_eq!(MailboxEntry::decode(&bytes).unwrap(), (e.clone(), &[][..]));

        let inline = MailboxEntry { payload_id: INLINE, len: 2, ..e };
        let bytes = inline.encode(b"xy");
        let mut expected = vec![2];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x20, b'x', b'y']);
        assert_eq!(bytes, expected);
        assert_eq!(MailboxEntry::decode(&bytes).unwrap(), (inline, &b"xy"[..]));

        let m = MailboxMeta { next_seq: 3, count: 2, bytes: 9 };
        assert_eq!(
            m.encode(),
            [&[1u8][..], &3u64.to_be_bytes(), &2u64.to_be_bytes(), &9u64.to_be_bytes()].concat()
        );
        assert_eq!(MailboxMeta::decode(&m.encode()).unwrap(), m);
        assert_eq!(encode_payload(2, b"xy"), vec![1, 0, 0, 0, 2, b'x', b'y']);
        let chunked = encode_chunked_payload(3, 20_000, 2);
        assert_eq!(
            chunked,
            [&[2u8][..], &3u32.to_be_bytes(), &20_000u64.to_be_bytes(), &2u32.to_be_bytes()]
                .concat()
        );
        assert_eq!(
            decode_payload(&chunked).unwrap(),
            StoredPayload::Chunked { refcount: 3, len: 20_000, chunks: 2 }
        );
        let u = SenderUsage { count: 3, bytes: 9 };
        assert_eq!(u.encode(), [&[1u8][..], &3u64.to_be_bytes(), &9u64.to_be_bytes()].concat());
        assert_eq!(SenderUsage::decode(&u.encode()).unwrap(), u);
    }

    #[test]
    fn unknown_record_versions_are_corrupt_not_panics() {
        assert!(MailboxEntry::decode(&[3; ENTRY_LEN]).is_err());
        assert!(MailboxEntry::decode(&[2; INLINE_HEADER_LEN - 1]).is_err());
        // A v1 entry names a shared payload; the inline id there is corruption.
        let mut v1 = vec![1u8; ENTRY_LEN];
        v1[1..9].fill(0);
        assert!(MailboxEntry::decode(&v1).is_err());
        assert!(MailboxMeta::decode(&[]).is_err());
        assert!(decode_payload(&[1, 0]).is_err());
        assert!(decode_payload(&[2, 0, 0, 0, 1, 0]).is_err());
        assert!(decode_payload(&[3, 0, 0, 0, 1]).is_err());
        assert!(SenderUsage::decode(&[1, 0, 0]).is_err());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.redb");
        let store = Store::open(&path).unwrap();
        {
            let txn = store.db().unwrap().begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", SCHEMA_VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        assert!(matches!(Store::open(&path), Err(StoreError::SchemaTooNew { .. })));
    }
}
