//! Per-device mailboxes: the device-set check, durable multi-recipient stores, ack-then-delete,
//! and retention.
//!
//! Guarantees:
//! - A send is all or nothing: every check (device sets, sizes, quotas) runs before the first
//!   write, and the whole send commits in one transaction with the rest of its group-commit batch.
//! - Each payload is stored once, whatever the number of recipients: inside the mailbox entry
//!   when it has one recipient and is small, else in the payload table with a reference count
//!   (in chunks when it is over 16 KiB, so it takes about its size in file, not up to twice),
//!   where the last ack (or expiry) of a reference deletes it.
//! - Each device mailbox numbers its envelopes 1, 2, 3, … without gaps, in commit order.
//! - An envelope leaves a mailbox only by the device's ack, by expiry after the retention
//!   period, or when the device is removed from its account.
//! - Fairness: one sender account may hold at most its share of a device's mailbox
//!   ([`Quotas::sender_envelopes`], [`Quotas::sender_bytes`]; a quarter by default), so one
//!   sender filling a mailbox can't cut the device off from everyone else. A sender's own
//!   account (its other devices' copies) is not held to a share.
//! - The relay-wide count of stored payload bytes (`meta.stored_bytes`, each shared payload
//!   once) is kept in the same transactions as the mailboxes, and a send that would take it
//!   past [`Quotas::max_stored_bytes`] is refused `storage_full`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hush_protocol::wire::{self, DeviceMismatch};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::{RelayError, StoreError};
use crate::store::{
    AccountId, CHUNKED_ABOVE, DEVICES, EXPIRY, INLINE, MAILBOX, MAILBOX_META, MAILBOX_SENDERS,
    META, MailboxEntry, MailboxMeta, PAYLOAD_CHUNKS, PAYLOADS, SenderUsage, StoredPayload,
    decode_payload, encode_chunked_payload, encode_payload, read_devices, read_mailbox_meta,
    stored_bytes, write_chunks,
};

/// One addressed device in a validated send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// Account.
    pub account: AccountId,
    /// Device.
    pub device: u32,
    /// The registration id the sender believes the device has.
    pub registration_id: u32,
    /// Index into the send's payloads.
    pub payload: usize,
}

/// A send whose shape has been validated (ids decode, indexes in range, sizes within limits, no
/// device addressed twice).
#[derive(Debug, Clone)]
pub struct Send {
    /// The authenticated sender.
    pub sender: (AccountId, u32),
    /// Distinct payloads.
    pub payloads: Vec<Vec<u8>>,
    /// Who gets which payload.
    pub recipients: Vec<Recipient>,
}

/// Mailbox quotas and retention.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Most envelopes one device mailbox holds.
    pub max_envelopes: u64,
    /// Most payload bytes one device mailbox holds.
    pub max_bytes: u64,
    /// Most envelopes one sender account may hold in another account's device mailbox.
    pub sender_envelopes: u64,
    /// Most payload bytes one sender account may hold in another account's device mailbox.
    pub sender_bytes: u64,
    /// Most payload bytes stored relay-wide (0: no budget).
    pub max_stored_bytes: u64,
    /// How long an unacked envelope is kept.
    pub retention_ms: u64,
}

impl Quotas {
    /// Mailbox quotas with no per-sender share and no relay-wide budget (benchmarks, tests).
    pub const fn mailbox_only(max_envelopes: u64, max_bytes: u64, retention_ms: u64) -> Self {
        Self {
            max_envelopes,
            max_bytes,
            sender_envelopes: max_envelopes,
            sender_bytes: max_bytes,
            max_stored_bytes: 0,
            retention_ms,
        }
    }
}

impl Send {
    /// Validates the shape of a wire send.
    pub fn from_wire(
        sender: (AccountId, u32),
        req: wire::Send,
        max_payload: usize,
    ) -> Result<Self, RelayError> {
        if req.envelopes.is_empty() {
            return Err(RelayError::BadRequest("a send needs at least one envelope".into()));
        }
        if let Some(p) = req.payloads.iter().find(|p| p.len() > max_payload) {
            return Err(RelayError::TooLarge { len: p.len(), max: max_payload });
        }
        let mut seen = BTreeSet::new();
        let mut used = vec![false; req.payloads.len()];
        let mut recipients = Vec::with_capacity(req.envelopes.len());
        for e in req.envelopes {
            // A plain 32-byte id: whether it names an account is checked against the store.
            let account: AccountId = e.account.as_slice().try_into().map_err(|_| {
                RelayError::BadRequest("envelope account is not a 32-byte account id".into())
            })?;
            let payload = e.payload as usize;
            let Some(slot) = used.get_mut(payload) else {
                return Err(RelayError::BadRequest(format!(
                    "envelope names payload {payload}, which does not exist"
                )));
            };
            *slot = true;
            if (account, e.device_id) == sender {
                return Err(RelayError::BadRequest("a device cannot address itself".into()));
            }
            if !seen.insert((account, e.device_id)) {
                return Err(RelayError::BadRequest(format!(
                    "device {} addressed twice",
                    e.device_id
                )));
            }
            recipients.push(Recipient {
                account,
                device: e.device_id,
                registration_id: e.registration_id,
                payload,
            });
        }
        if used.iter().any(|u| !u) {
            return Err(RelayError::BadRequest(
                "a payload is not addressed by any envelope".into(),
            ));
        }
        Ok(Self { sender, payloads: req.payloads, recipients })
    }

    /// The distinct addressed accounts.
    pub fn accounts(&self) -> BTreeSet<AccountId> {
        self.recipients.iter().map(|r| r.account).collect()
    }
}

/// Checks, for every addressed account, that the envelopes cover exactly its registered
/// devices (minus the sending device itself), with current registration ids. The sending device
/// itself must still be registered: a device removed mid-connection can't keep sending.
pub(crate) fn check_devices(
    devices_table: &impl ReadableTable<AccountId, &'static [u8]>,
    send: &Send,
) -> Result<(), RelayError> {
    check_devices_with(send, |account| read_devices(devices_table, account))
}

fn check_devices_with(
    send: &Send,
    mut lookup: impl FnMut(&AccountId) -> Result<Option<Vec<(u32, u32)>>, StoreError>,
) -> Result<(), RelayError> {
    let own = lookup(&send.sender.0)?.unwrap_or_default();
    if !own.iter().any(|&(id, _)| id == send.sender.1) {
        return Err(RelayError::UnknownDevice(send.sender.1));
    }
    let mut by_account: BTreeMap<AccountId, Vec<&Recipient>> = BTreeMap::new();
    for r in &send.recipients {
        by_account.entry(r.account).or_default().push(r);
    }
    let mut mismatches = Vec::new();
    for (account, addressed) in by_account {
        let devices = lookup(&account)?.ok_or(RelayError::UnknownAccount)?;
        let mut m = DeviceMismatch { account: account.to_vec(), ..Default::default() };
        for &(id, _) in &devices {
            let is_sender = (account, id) == send.sender;
            if !is_sender && !addressed.iter().any(|r| r.device == id) {
                m.missing.push(id);
            }
        }
        for r in addressed {
            match devices.binary_search_by_key(&r.device, |&(id, _)| id) {
                Err(_) => m.extra.push(r.device),
                Ok(i) if devices.get(i).map(|&(_, reg)| reg) != Some(r.registration_id) => {
                    m.stale.push(r.device);
                }
                Ok(_) => {}
            }
        }
        if !(m.missing.is_empty() && m.extra.is_empty() && m.stale.is_empty()) {
            mismatches.push(m);
        }
    }
    if mismatches.is_empty() { Ok(()) } else { Err(RelayError::DeviceMismatch(mismatches)) }
}

/// Stores one send durably (when the surrounding transaction commits). Returns the devices
/// whose mailboxes grew, for wake-ups.
pub fn store(
    txn: &WriteTransaction,
    send: &Send,
    quotas: Quotas,
    now_ms: u64,
) -> Result<Vec<(AccountId, u32)>, RelayError> {
    let mut out = store_batch(txn, &[(send, now_ms)], quotas)?;
    out.pop().unwrap_or_else(|| Err(RelayError::BadRequest("empty batch".into())))
}

/// The outcome of one send in a batch: the devices whose mailboxes grew, or why it was refused.
pub type SendOutcome = Result<Vec<(AccountId, u32)>, RelayError>;

/// Stores a group-commit batch of sends in one pass: each table is opened once, and device
/// sets, mailbox counters and the payload counter are read once and written back once, however
/// many sends touch them. Each send is still all or nothing: a send that fails a check changes
/// nothing, and later sends in the batch see exactly the effects of the accepted ones.
///
/// The outer `Err` is a storage error, which must abort the whole transaction.
pub fn store_batch(
    txn: &WriteTransaction,
    sends: &[(&Send, u64)],
    quotas: Quotas,
) -> Result<Vec<SendOutcome>, RelayError> {
    let devices_t = txn.open_table(DEVICES)?;
    let mut meta_t = txn.open_table(MAILBOX_META)?;
    let mut meta_table = txn.open_table(META)?;
    let mut payloads = txn.open_table(PAYLOADS)?;
    let mut mailbox = txn.open_table(MAILBOX)?;
    let mut expiry = txn.open_table(EXPIRY)?;
    let mut senders_t = txn.open_table(MAILBOX_SENDERS)?;
    let mut chunks_t = txn.open_table(PAYLOAD_CHUNKS)?;
    let mut next_payload = meta_table.get("next_payload_id")?.map_or(1, |v| v.value());
    let first_payload = next_payload;
    let first_stored = stored_bytes(&meta_table)?;
    let mut stored = first_stored;
    let mut usages: HashMap<(AccountId, u32, AccountId), SenderUsage> = HashMap::new();
    let mut device_sets: HashMap<AccountId, Option<Vec<(u32, u32)>>> = HashMap::new();
    let mut metas: HashMap<(AccountId, u32), MailboxMeta> = HashMap::new();
    let mut outcomes = Vec::with_capacity(sends.len());
    for &(send, now_ms) in sends {
        let expires_at_ms = now_ms.saturating_add(quotas.retention_ms);
        // Checks, against the batch's view so far; nothing is written unless all pass.
        let checked = check_devices_with(send, |account| {
            if let Some(d) = device_sets.get(account) {
                return Ok(d.clone());
            }
            let d = read_devices(&devices_t, account)?;
            device_sets.insert(*account, d.clone());
            Ok(d)
        });
        if let Err(e) = checked {
            if matches!(e, RelayError::Store(_)) {
                return Err(e);
            }
            outcomes.push(Err(e));
            continue;
        }
        let new_bytes: u64 = send.payloads.iter().map(|p| p.len() as u64).sum();
        if quotas.max_stored_bytes > 0 && stored.saturating_add(new_bytes) > quotas.max_stored_bytes
        {
            outcomes.push(Err(RelayError::Store(StoreError::Full(format!(
                "stored payload is at the relay's budget of {} bytes",
                quotas.max_stored_bytes
            )))));
            continue;
        }
        let mut refused = None;
        let mut planned = Vec::with_capacity(send.recipients.len());
        for r in &send.recipients {
            let key = (r.account, r.device);
            let meta = match metas.get(&key) {
                Some(m) => *m,
                None => {
                    let m = read_mailbox_meta(&meta_t, &r.account, r.device)?;
                    metas.insert(key, m);
                    m
                }
            };
            let len = send.payloads.get(r.payload).map_or(0, Vec::len) as u64;
            if meta.count + 1 > quotas.max_envelopes {
                refused =
                    Some(RelayError::MailboxFull { device: r.device, why: "too many envelopes" });
                break;
            }
            if meta.bytes + len > quotas.max_bytes {
                refused = Some(RelayError::MailboxFull { device: r.device, why: "too many bytes" });
                break;
            }
            if r.account != send.sender.0 {
                let key = (r.account, r.device, send.sender.0);
                let usage = match usages.get(&key) {
                    Some(u) => *u,
                    None => {
                        let u = read_sender_usage(&senders_t, &key)?;
                        usages.insert(key, u);
                        u
                    }
                };
                if usage.count + 1 > quotas.sender_envelopes
                    || usage.bytes + len > quotas.sender_bytes
                {
                    refused = Some(RelayError::MailboxFull {
                        device: r.device,
                        why: "this sender's share of it is used up",
                    });
                    break;
                }
            }
            planned.push(meta);
        }
        if let Some(e) = refused {
            outcomes.push(Err(e));
            continue;
        }
        // All checks passed: only writes from here on.
        let mut refcounts = vec![0u32; send.payloads.len()];
        for r in &send.recipients {
            if let Some(c) = refcounts.get_mut(r.payload) {
                *c += 1;
            }
        }
        let mut ids = Vec::with_capacity(send.payloads.len());
        for (p, &rc) in send.payloads.iter().zip(&refcounts) {
            if p.len() > CHUNKED_ABOVE {
                let chunks = write_chunks(&mut chunks_t, next_payload, p)?;
                let row = encode_chunked_payload(rc, p.len() as u64, chunks);
                payloads.insert(next_payload, row.as_slice())?;
                ids.push(next_payload);
                next_payload += 1;
                continue;
            }
            if rc == 1 {
                ids.push(INLINE);
                continue;
            }
            payloads.insert(next_payload, encode_payload(rc, p).as_slice())?;
            ids.push(next_payload);
            next_payload += 1;
        }
        let mut touched = Vec::with_capacity(send.recipients.len());
        for (r, mut meta) in send.recipients.iter().zip(planned) {
            let payload = send.payloads.get(r.payload).map_or(&[][..], Vec::as_slice);
            let len = payload.len();
            let seq = meta.next_seq.max(1);
            let entry = MailboxEntry {
                payload_id: ids.get(r.payload).copied().unwrap_or(INLINE),
                sender_account: send.sender.0,
                sender_device: send.sender.1,
                server_time_ms: now_ms,
                expires_at_ms,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            };
            mailbox.insert((r.account, r.device, seq), entry.encode(payload).as_slice())?;
            expiry.insert((expires_at_ms, r.account, r.device, seq), ())?;
            meta.next_seq = seq + 1;
            meta.count += 1;
            meta.bytes += len as u64;
            metas.insert((r.account, r.device), meta);
            if r.account != send.sender.0 {
                let usage = usages.entry((r.account, r.device, send.sender.0)).or_default();
                usage.count += 1;
                usage.bytes += len as u64;
            }
            touched.push((r.account, r.device));
        }
        stored += new_bytes;
        outcomes.push(Ok(touched));
    }
    for ((account, device), meta) in &metas {
        meta_t.insert((*account, *device), meta.encode().as_slice())?;
    }
    for (key, usage) in &usages {
        senders_t.insert(key, usage.encode().as_slice())?;
    }
    if next_payload != first_payload {
        meta_table.insert("next_payload_id", next_payload)?;
    }
    if stored != first_stored {
        meta_table.insert("stored_bytes", stored)?;
    }
    Ok(outcomes)
}

fn read_sender_usage(
    table: &impl ReadableTable<(AccountId, u32, AccountId), &'static [u8]>,
    key: &(AccountId, u32, AccountId),
) -> Result<SenderUsage, StoreError> {
    match table.get(key)? {
        Some(v) => SenderUsage::decode(v.value()),
        None => Ok(SenderUsage::default()),
    }
}

struct Tables<'t> {
    mailbox: Table<'t, (AccountId, u32, u64), &'static [u8]>,
    meta: Table<'t, (AccountId, u32), &'static [u8]>,
    payloads: Table<'t, u64, &'static [u8]>,
    chunks: Table<'t, (u64, u32), &'static [u8]>,
    expiry: Table<'t, (u64, AccountId, u32, u64), ()>,
    senders: Table<'t, (AccountId, u32, AccountId), &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
    /// Payload bytes deleted so far (written to `meta.stored_bytes` by [`Tables::finish`]).
    freed: u64,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            mailbox: txn.open_table(MAILBOX)?,
            meta: txn.open_table(MAILBOX_META)?,
            payloads: txn.open_table(PAYLOADS)?,
            chunks: txn.open_table(PAYLOAD_CHUNKS)?,
            expiry: txn.open_table(EXPIRY)?,
            senders: txn.open_table(MAILBOX_SENDERS)?,
            counters: txn.open_table(META)?,
            freed: 0,
        })
    }

    /// Writes the relay-wide payload count down by what was deleted.
    fn finish(mut self) -> Result<(), StoreError> {
        if self.freed > 0 {
            let stored = stored_bytes(&self.counters)?.saturating_sub(self.freed);
            self.counters.insert("stored_bytes", stored)?;
        }
        Ok(())
    }

    /// Deletes what a removed mailbox entry held besides itself: its expiry index row and its
    /// reference to a shared payload, and its share of the device's counters.
    fn release(
        &mut self,
        account: &AccountId,
        device: u32,
        seq: u64,
        entry: &MailboxEntry,
        meta: &mut MailboxMeta,
    ) -> Result<(), StoreError> {
        self.expiry.remove((entry.expires_at_ms, *account, device, seq))?;
        if entry.payload_id != INLINE {
            // Removed first and put back only when other recipients still hold a reference.
            // (The removed value borrows the table, so the put-back waits until it is dropped.)
            let (lowered, chunks) = match self.payloads.remove(entry.payload_id)? {
                Some(p) => {
                    let stored = decode_payload(p.value())?;
                    let rc = stored.refcount();
                    let chunks = match stored {
                        StoredPayload::Chunked { chunks, .. } if rc <= 1 => chunks,
                        _ => 0,
                    };
                    if rc <= 1 {
                        self.freed += stored.len();
                    }
                    ((rc > 1).then(|| stored.with_refcount(rc - 1)), chunks)
                }
                None => (None, 0),
            };
            if let Some(v) = lowered {
                self.payloads.insert(entry.payload_id, v.as_slice())?;
            }
            for index in 0..chunks {
                self.chunks.remove((entry.payload_id, index))?;
            }
        } else {
            self.freed += u64::from(entry.len);
        }
        meta.count = meta.count.saturating_sub(1);
        meta.bytes = meta.bytes.saturating_sub(u64::from(entry.len));
        Ok(())
    }

    /// Removes envelopes of one device, in key order, reading and writing its counters once.
    /// Unknown seqs are ignored, so acks are idempotent. Returns how many existed.
    fn remove_all(
        &mut self,
        account: &AccountId,
        device: u32,
        seqs: impl IntoIterator<Item = u64>,
    ) -> Result<u64, StoreError> {
        let mut seqs: Vec<u64> = seqs.into_iter().collect();
        seqs.sort_unstable();
        let mut meta = read_mailbox_meta(&self.meta, account, device)?;
        let mut n = 0;
        // What each other account's sender gave back, applied to its usage once.
        let mut given_back: BTreeMap<AccountId, SenderUsage> = BTreeMap::new();
        for seq in seqs {
            let Some(v) = self.mailbox.remove((*account, device, seq))? else { continue };
            let (entry, _) = MailboxEntry::decode(v.value())?;
            drop(v);
            self.release(account, device, seq, &entry, &mut meta)?;
            if entry.sender_account != *account {
                let g = given_back.entry(entry.sender_account).or_default();
                g.count += 1;
                g.bytes += u64::from(entry.len);
            }
            n += 1;
        }
        if n > 0 {
            self.meta.insert((*account, device), meta.encode().as_slice())?;
        }
        for (sender, g) in given_back {
            let key = (*account, device, sender);
            let mut usage = read_sender_usage(&self.senders, &key)?;
            usage.count = usage.count.saturating_sub(g.count);
            usage.bytes = usage.bytes.saturating_sub(g.bytes);
            if usage.count == 0 {
                self.senders.remove(key)?;
            } else {
                self.senders.insert(key, usage.encode().as_slice())?;
            }
        }
        Ok(n)
    }
}

/// Deletes acked envelopes. Returns how many existed.
pub(crate) fn ack(
    txn: &WriteTransaction,
    account: &AccountId,
    device: u32,
    seqs: &[u64],
) -> Result<u64, StoreError> {
    let mut t = Tables::open(txn)?;
    let n = t.remove_all(account, device, seqs.iter().copied())?;
    t.finish()?;
    Ok(n)
}

/// Deletes up to `max` envelopes whose retention ran out. Returns how many were deleted.
pub(crate) fn sweep(txn: &WriteTransaction, now_ms: u64, max: usize) -> Result<u64, StoreError> {
    let mut t = Tables::open(txn)?;
    // Grouped by device, so each device's counters are read and written once.
    let mut due: BTreeMap<(AccountId, u32), Vec<u64>> = BTreeMap::new();
    for item in t.expiry.range(..(now_ms, [0u8; 32], 0, 0))?.take(max) {
        let (k, _) = item?;
        let (_, account, device, seq) = k.value();
        due.entry((account, device)).or_default().push(seq);
    }
    let mut n = 0;
    for ((account, device), seqs) in due {
        n += t.remove_all(&account, device, seqs)?;
    }
    t.finish()?;
    Ok(n)
}

/// Deletes a removed device's whole mailbox (its sequence counter goes too).
pub(crate) fn purge_device(
    txn: &WriteTransaction,
    account: &AccountId,
    device: u32,
) -> Result<(), StoreError> {
    let mut t = Tables::open(txn)?;
    let seqs: Vec<u64> = t
        .mailbox
        .range((*account, device, 0)..=(*account, device, u64::MAX))?
        .map(|item| item.map(|(k, _)| k.value().2))
        .collect::<Result<_, _>>()?;
    t.remove_all(account, device, seqs)?;
    t.meta.remove((*account, device))?;
    t.finish()
}

/// Derives `mailbox_senders` and `meta.stored_bytes` from the mailboxes (the migration of a
/// schema-1 database, which had neither).
pub(crate) fn derive_counters(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mailbox = txn.open_table(MAILBOX)?;
    let payloads = txn.open_table(PAYLOADS)?;
    let mut usages: BTreeMap<(AccountId, u32, AccountId), SenderUsage> = BTreeMap::new();
    let mut stored = 0u64;
    for item in mailbox.iter()? {
        let (k, v) = item?;
        let (account, device, _) = k.value();
        let (entry, _) = MailboxEntry::decode(v.value())?;
        if entry.payload_id == INLINE {
            stored += u64::from(entry.len);
        }
        if entry.sender_account != account {
            let u = usages.entry((account, device, entry.sender_account)).or_default();
            u.count += 1;
            u.bytes += u64::from(entry.len);
        }
    }
    for item in payloads.iter()? {
        let (_, v) = item?;
        stored += decode_payload(v.value())?.len();
    }
    let mut senders = txn.open_table(MAILBOX_SENDERS)?;
    senders.retain(|_, _| false)?;
    for (key, usage) in &usages {
        senders.insert(key, usage.encode().as_slice())?;
    }
    txn.open_table(META)?.insert("stored_bytes", stored)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_protocol::wire;
    use proptest::prelude::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    const A: AccountId = [1; 32];
    const B: AccountId = [2; 32];
    const QUOTAS: Quotas = Quotas::mailbox_only(100, 1 << 20, 1_000);

    /// A store where A has device 1 and B has devices 1 and 2.
    fn store() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("relay.redb")).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut devices = txn.open_table(DEVICES).unwrap();
            devices
                .insert(
                    A,
                    [&[1u8][..], &1u32.to_be_bytes(), &7u32.to_be_bytes()].concat().as_slice(),
                )
                .unwrap();
            let b = [
                &[1u8][..],
                &1u32.to_be_bytes(),
                &7u32.to_be_bytes(),
                &2u32.to_be_bytes(),
                &7u32.to_be_bytes(),
            ]
            .concat();
            devices.insert(B, b.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        (dir, store)
    }

    fn send_to_b(payloads: &[&[u8]], which: [usize; 2]) -> Send {
        let recipients = (1..=2)
            .zip(which)
            .map(|(device, payload)| Recipient { account: B, device, registration_id: 7, payload })
            .collect();
        Send { sender: (A, 1), payloads: payloads.iter().map(|p| p.to_vec()).collect(), recipients }
    }

    fn write<R>(store: &crate::store::Store, f: impl FnOnce(&WriteTransaction) -> R) -> R {
        let txn = store.db().unwrap().begin_write().unwrap();
        let r = f(&txn);
        txn.commit().unwrap();
        r
    }

    fn rows(store: &crate::store::Store) -> (u64, u64, u64) {
        let txn = store.db().unwrap().begin_read().unwrap();
        (
            txn.open_table(MAILBOX).unwrap().len().unwrap(),
            txn.open_table(PAYLOADS).unwrap().len().unwrap(),
            txn.open_table(EXPIRY).unwrap().len().unwrap(),
        )
    }

    /// One-recipient payloads live in their mailbox entry and shared ones in the payload table
    /// (v1 entries, as earlier relays wrote every entry), and acks of either kind delete exactly
    /// what they name, with the counters following.
    #[test]
    fn inline_and_shared_payloads_store_deliver_and_ack() {
        let (_dir, store) = store();
        // seq 1: shared by both of B's devices; seqs 2..=11: one ciphertext per device.
        let mut sends = vec![send_to_b(&[b"group"], [0, 0])];
        sends.extend(
            (0..10).map(|i| send_to_b(&[format!("to 1 #{i}").as_bytes(), b"to 2"], [0, 1])),
        );
        let batch: Vec<(&Send, u64)> = sends.iter().map(|s| (s, 5)).collect();
        let out = write(&store, |txn| store_batch(txn, &batch, QUOTAS).unwrap());
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(rows(&store), (22, 1, 22), "one payload row, for the shared payload only");

        let drained = store.read_mailbox(&B, 1, 0, 100).unwrap();
        let bodies: Vec<&[u8]> = drained.iter().map(|(_, _, p)| p.as_slice()).collect();
        assert_eq!(bodies[0], b"group");
        assert_eq!(bodies[1], b"to 1 #0");
        assert_eq!(bodies[10], b"to 1 #9");
        assert_eq!(
            drained.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>()
        );
        assert_eq!(drained[1].1.len, 7);

        // The shared payload keeps one reference; a repeated or unknown seq counts nothing.
        assert_eq!(write(&store, |txn| ack(txn, &B, 1, &[11, 1, 1, 99]).unwrap()), 2);
        assert_eq!(rows(&store), (20, 1, 20));
        // Out of order.
        assert_eq!(write(&store, |txn| ack(txn, &B, 1, &[2, 3, 5, 4, 6, 7, 8, 9, 10]).unwrap()), 9);
        assert!(store.read_mailbox(&B, 1, 0, 100).unwrap().is_empty());
        // B's second device still reads the shared payload, then its ack deletes it.
        assert_eq!(store.read_mailbox(&B, 2, 0, 1).unwrap()[0].2, b"group");
        assert_eq!(
            write(&store, |txn| ack(txn, &B, 2, &(1..=11).collect::<Vec<_>>()).unwrap()),
            11
        );
        assert_eq!(rows(&store), (0, 0, 0));
        let txn = store.db().unwrap().begin_read().unwrap();
        let meta = txn.open_table(MAILBOX_META).unwrap();
        for device in [1, 2] {
            let m = read_mailbox_meta(&meta, &B, device).unwrap();
            assert_eq!((m.count, m.bytes, m.next_seq), (0, 0, 12));
        }
    }

    /// Payloads over 16 KiB, one recipient's or shared, are stored in chunks, read back whole,
    /// and leave no chunk behind once every reference is acked.
    #[test]
    fn large_payloads_are_stored_in_chunks_and_deleted_with_their_last_reference() {
        let (_dir, store) = store();
        let own: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let shared: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let sends = [send_to_b(&[&own, b"small"], [0, 1]), send_to_b(&[&shared], [0, 0])];
        let batch: Vec<(&Send, u64)> = sends.iter().map(|s| (s, 5)).collect();
        write(&store, |txn| store_batch(txn, &batch, QUOTAS).unwrap());
        let chunk_rows = |store: &crate::store::Store| {
            let txn = store.db().unwrap().begin_read().unwrap();
            txn.open_table(PAYLOAD_CHUNKS).unwrap().len().unwrap()
        };
        assert_eq!(chunk_rows(&store), 7 + 3, "100,000 bytes in 7 chunks, 40,000 in 3");
        let d1 = store.read_mailbox(&B, 1, 0, 10).unwrap();
        assert_eq!((d1[0].2.as_slice(), d1[1].2.as_slice()), (own.as_slice(), shared.as_slice()));
        assert_eq!(store.read_mailbox(&B, 2, 0, 10).unwrap()[1].2, shared);
        assert_eq!(store.stored_bytes().unwrap(), 100_000 + 5 + 40_000);
        assert_eq!(write(&store, |txn| ack(txn, &B, 1, &[1, 2]).unwrap()), 2);
        assert_eq!(chunk_rows(&store), 3, "the shared payload is still referenced");
        assert_eq!(write(&store, |txn| ack(txn, &B, 2, &[1, 2]).unwrap()), 2);
        assert_eq!((chunk_rows(&store), rows(&store)), (0, (0, 0, 0)));
        assert_eq!(store.stored_bytes().unwrap(), 0);
    }

    /// The sweeper deletes expired envelopes of both kinds, and only those.
    #[test]
    fn sweep_deletes_expired_inline_and_shared_envelopes() {
        let (_dir, store) = store();
        let old = [send_to_b(&[b"group"], [0, 0]), send_to_b(&[b"a", b"b"], [0, 1])];
        let new = send_to_b(&[b"c", b"d"], [0, 1]);
        let batch: Vec<(&Send, u64)> = old.iter().map(|s| (s, 0)).chain([(&new, 10_000)]).collect();
        write(&store, |txn| store_batch(txn, &batch, QUOTAS).unwrap());
        assert_eq!(write(&store, |txn| sweep(txn, 5_000, 100).unwrap()), 4);
        assert_eq!(rows(&store), (2, 0, 2));
        assert_eq!(store.read_mailbox(&B, 2, 0, 10).unwrap()[0].2, b"d");
    }

    /// A sender account holds at most its share of another account's device mailbox, while
    /// other senders (and the recipient's own account) still get through; acks give the share
    /// back; the relay-wide payload budget refuses `storage_full`.
    #[test]
    fn sender_shares_and_the_stored_payload_budget() {
        let (_dir, store) = store();
        let quotas = Quotas {
            sender_envelopes: 2,
            sender_bytes: 1000,
            max_stored_bytes: 40,
            ..Quotas::mailbox_only(10, 1 << 20, 1_000)
        };
        // From A to both of B's devices (one shared payload), or from B's device 2 to its 1.
        let from = |sender: (AccountId, u32), body: &[u8]| Send {
            sender,
            payloads: vec![body.to_vec()],
            recipients: (1..=2)
                .filter(|d| (B, *d) != sender)
                .map(|device| Recipient { account: B, device, registration_id: 7, payload: 0 })
                .collect(),
        };
        let sends =
            [from((A, 1), b"a1"), from((A, 1), b"a2"), from((A, 1), b"a3"), from((B, 2), b"own")];
        let batch: Vec<(&Send, u64)> = sends.iter().map(|s| (s, 1)).collect();
        let out = write(&store, |txn| store_batch(txn, &batch, quotas).unwrap());
        assert!(out[0].is_ok() && out[1].is_ok());
        let e = out[2].as_ref().unwrap_err();
        assert_eq!(e.code(), hush_protocol::ErrorCode::MailboxFull);
        assert!(e.to_string().contains("sender's share"), "{e}");
        assert!(out[3].is_ok(), "the recipient's own account is held to no share");
        // Acks give A's share back.
        assert_eq!(write(&store, |txn| ack(txn, &B, 1, &[1]).unwrap()), 1);
        assert_eq!(write(&store, |txn| ack(txn, &B, 2, &[1]).unwrap()), 1);
        let out = write(&store, |txn| store_batch(txn, &[(&sends[2], 2)], quotas).unwrap());
        assert!(out[0].is_ok());
        // Stored: a2 (a1 was acked by both devices) + own + a3 = 7 bytes; 40 is the budget.
        let big = from((B, 2), &[0; 34]);
        let out = write(&store, |txn| store_batch(txn, &[(&big, 3)], quotas).unwrap());
        assert_eq!(out[0].as_ref().unwrap_err().code(), hush_protocol::ErrorCode::StorageFull);
    }

    /// A schema-1 database (no sender usage, no stored-bytes count) gets both derived from its
    /// mailboxes when it is opened, equal to what the sends themselves had counted.
    #[test]
    fn opening_a_schema_1_database_derives_the_counters() {
        let (dir, store) = store();
        let sends = [send_to_b(&[b"group"], [0, 0]), send_to_b(&[b"x", b"yy"], [0, 1])];
        let batch: Vec<(&Send, u64)> = sends.iter().map(|s| (s, 1)).collect();
        write(&store, |txn| store_batch(txn, &batch, QUOTAS).unwrap());
        let snapshot = |store: &crate::store::Store| {
            let txn = store.db().unwrap().begin_read().unwrap();
            let senders = txn.open_table(MAILBOX_SENDERS).unwrap();
            let rows: Vec<(u32, SenderUsage)> = senders
                .iter()
                .unwrap()
                .map(|i| {
                    let (k, v) = i.unwrap();
                    (k.value().1, SenderUsage::decode(v.value()).unwrap())
                })
                .collect();
            (rows, stored_bytes(&txn.open_table(META).unwrap()).unwrap())
        };
        let before = snapshot(&store);
        assert_eq!(before.1, 5 + 1 + 2);
        write(&store, |txn| {
            txn.open_table(MAILBOX_SENDERS).unwrap().retain(|_, _| false).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove("stored_bytes").unwrap();
            meta.insert("schema_version", 1).unwrap();
        });
        drop(store);
        let store = crate::store::Store::open(&dir.path().join("relay.redb")).unwrap();
        assert_eq!(snapshot(&store), before);
    }

    /// One step of the mailbox model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// A group-commit batch of sends to both of B's devices: each is one payload shared by
        /// both (stored once, counted) or one payload per device (stored inline).
        Store(Vec<(bool, Vec<u8>, Vec<u8>)>),
        Ack(u32, Vec<u64>),
        Sweep(usize),
        Purge(u32),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let body = || proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            4 => proptest::collection::vec((any::<bool>(), body(), body()), 1..5).prop_map(Op::Store),
            3 => (1u32..=2, proptest::collection::vec(0u64..24, 0..6)).prop_map(|(d, s)| Op::Ack(d, s)),
            1 => (0usize..8).prop_map(Op::Sweep),
            1 => (1u32..=2).prop_map(Op::Purge),
            2 => (0u64..800).prop_map(Op::Wait),
        ]
    }

    /// A modelled envelope: payload, expiry, and the shared payload it references, if any.
    type ModelEntry = (Vec<u8>, u64, Option<u64>);

    /// What B's two mailboxes must hold: per device, seq → envelope.
    #[derive(Default)]
    struct Model {
        boxes: [BTreeMap<u64, ModelEntry>; 2],
        next_seq: [u64; 2],
        shared_refs: BTreeMap<u64, u32>,
        next_shared: u64,
    }

    impl Model {
        fn drop_entry(&mut self, device: usize, seq: u64) -> bool {
            let Some((_, _, shared)) = self.boxes[device].remove(&seq) else { return false };
            if let Some(id) = shared
                && let Some(rc) = self.shared_refs.get_mut(&id)
            {
                *rc -= 1;
                if *rc == 0 {
                    self.shared_refs.remove(&id);
                }
            }
            true
        }
    }

    const MODEL_QUOTAS: Quotas = Quotas::mailbox_only(6, 150, 1_000);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random batches of inline and shared sends, acks (repeated, unknown, out of order),
        /// sweeps with small limits and device purges, against a model: after every step each
        /// mailbox holds exactly the model's envelopes, its counters match them, quota refusals
        /// come exactly where the model says, and no payload or expiry row outlives its last
        /// reference.
        #[test]
        fn mailboxes_match_a_model_under_any_schedule(ops in proptest::collection::vec(op(), 1..40)) {
            let (_dir, store) = store();
            let mut model = Model { next_seq: [1, 1], ..Model::default() };
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Store(shapes) => {
                        let sends: Vec<Send> = shapes
                            .iter()
                            .map(|(shared, p1, p2)| {
                                if *shared { send_to_b(&[p1], [0, 0]) } else { send_to_b(&[p1, p2], [0, 1]) }
                            })
                            .collect();
                        let batch: Vec<(&Send, u64)> = sends.iter().map(|s| (s, now)).collect();
                        let got = write(&store, |txn| store_batch(txn, &batch, MODEL_QUOTAS).unwrap());
                        for ((shared, p1, p2), outcome) in shapes.iter().zip(got) {
                            let bodies = [p1, if *shared { p1 } else { p2 }];
                            let fits = (0..2).all(|d| {
                                let bytes: usize = model.boxes[d].values().map(|e| e.0.len()).sum();
                                (model.boxes[d].len() as u64) < MODEL_QUOTAS.max_envelopes
                                    && (bytes + bodies[d].len()) as u64 <= MODEL_QUOTAS.max_bytes
                            });
                            prop_assert_eq!(outcome.is_ok(), fits, "quota decision");
                            if !fits {
                                prop_assert_eq!(outcome.unwrap_err().code(), hush_protocol::ErrorCode::MailboxFull);
                                continue;
                            }
                            let id = shared.then(|| {
                                model.next_shared += 1;
                                model.shared_refs.insert(model.next_shared, 2);
                                model.next_shared
                            });
                            for (d, body) in bodies.iter().enumerate() {
                                let seq = model.next_seq[d];
                                model.next_seq[d] += 1;
                                model.boxes[d].insert(seq, ((*body).clone(), now + 1_000, id));
                            }
                        }
                    }
                    Op::Ack(device, seqs) => {
                        let n = write(&store, |txn| ack(txn, &B, device, &seqs).unwrap());
                        let mut expected = 0;
                        for seq in seqs {
                            expected += u64::from(model.drop_entry(device as usize - 1, seq));
                        }
                        prop_assert_eq!(n, expected);
                    }
                    Op::Sweep(max) => {
                        let n = write(&store, |txn| sweep(txn, now, max).unwrap());
                        // Expiry index order: expiry time, then device, then seq.
                        let mut due: Vec<(u64, usize, u64)> = (0..2)
                            .flat_map(|d| model.boxes[d].iter().map(move |(s, e)| (e.1, d, *s)))
                            .filter(|(exp, _, _)| *exp < now)
                            .collect();
                        due.sort_unstable();
                        due.truncate(max);
                        for (_, d, seq) in &due {
                            model.drop_entry(*d, *seq);
                        }
                        prop_assert_eq!(n, due.len() as u64);
                    }
                    Op::Purge(device) => {
                        write(&store, |txn| purge_device(txn, &B, device).unwrap());
                        let d = device as usize - 1;
                        let seqs: Vec<u64> = model.boxes[d].keys().copied().collect();
                        for seq in seqs {
                            model.drop_entry(d, seq);
                        }
                        model.next_seq[d] = 1;
                    }
                    Op::Wait(ms) => now += ms,
                }
                // The store matches the model, row for row.
                let txn = store.db().unwrap().begin_read().unwrap();
                let meta_t = txn.open_table(MAILBOX_META).unwrap();
                for d in 0..2 {
                    let device = d as u32 + 1;
                    let got: Vec<(u64, Vec<u8>, u64)> = store
                        .read_mailbox(&B, device, 0, 1_000)
                        .unwrap()
                        .into_iter()
                        .map(|(seq, entry, body)| (seq, body, entry.expires_at_ms))
                        .collect();
                    let want: Vec<(u64, Vec<u8>, u64)> =
                        model.boxes[d].iter().map(|(s, e)| (*s, e.0.clone(), e.1)).collect();
                    prop_assert_eq!(&got, &want);
                    let meta = read_mailbox_meta(&meta_t, &B, device).unwrap();
                    prop_assert_eq!(meta.count, want.len() as u64);
                    prop_assert_eq!(meta.bytes, want.iter().map(|e| e.1.len() as u64).sum::<u64>());
                    prop_assert_eq!(meta.next_seq.max(1), model.next_seq[d]);
                    // Every envelope is A's: its usage row follows the mailbox exactly.
                    let senders = txn.open_table(MAILBOX_SENDERS).unwrap();
                    let usage = read_sender_usage(&senders, &(B, device, A)).unwrap();
                    prop_assert_eq!((usage.count, usage.bytes), (meta.count, meta.bytes));
                }
                // Stored bytes: inline payloads per envelope, shared ones once.
                let inline: u64 = model.boxes.iter().flat_map(|b| b.values())
                    .filter(|e| e.2.is_none()).map(|e| e.0.len() as u64).sum();
                let shared: u64 = model.boxes.iter().flat_map(|b| b.values())
                    .filter_map(|e| e.2.map(|id| (id, e.0.len() as u64)))
                    .collect::<BTreeMap<u64, u64>>().values().sum();
                let counters = txn.open_table(META).unwrap();
                prop_assert_eq!(stored_bytes(&counters).unwrap(), inline + shared);
                let entries = (model.boxes[0].len() + model.boxes[1].len()) as u64;
                prop_assert_eq!(rows(&store), (entries, model.shared_refs.len() as u64, entries));
                let payloads = txn.open_table(PAYLOADS).unwrap();
                let mut refs: Vec<u32> = Vec::new();
                for item in payloads.iter().unwrap() {
                    let (_, v) = item.unwrap();
                    refs.push(decode_payload(v.value()).unwrap().refcount());
                }
                refs.sort_unstable();
                let mut want_refs: Vec<u32> = model.shared_refs.values().copied().collect();
                want_refs.sort_unstable();
                prop_assert_eq!(refs, want_refs, "shared payload reference counts");
            }
        }
    }

    fn envelope() -> impl Strategy<Value = wire::Envelope> {
        (
            prop_oneof![
                Just(vec![1u8; 32]),
                Just(vec![2u8; 32]),
                proptest::collection::vec(any::<u8>(), 0..40)
            ],
            0u32..4,
            any::<u32>(),
            0u32..4,
        )
            .prop_map(|(account, device_id, registration_id, payload)| wire::Envelope {
                account,
                device_id,
                registration_id,
                payload,
            })
    }

    proptest! {
        /// Any wire send is either refused with a typed error or validated into a shape whose
        /// indexes are all in range and whose recipients are distinct.
        #[test]
        fn send_validation_never_panics(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
            envelopes in proptest::collection::vec(envelope(), 0..8),
        ) {
            let req = wire::Send { payloads, envelopes, ephemeral: false };
            match Send::from_wire(([1; 32], 0), req, 32) {
                Ok(s) => {
                    let mut seen = BTreeSet::new();
                    for r in &s.recipients {
                        prop_assert!(r.payload < s.payloads.len());
                        prop_assert!(seen.insert((r.account, r.device)));
                        prop_assert!((r.account, r.device) != s.sender);
                    }
                    prop_assert!(s.payloads.iter().all(|p| p.len() <= 32));
                }
                Err(e) => prop_assert!(matches!(
                    e.code(),
                    hush_protocol::ErrorCode::BadRequest | hush_protocol::ErrorCode::TooLarge
                )),
            }
        }

        /// Stored records never panic on arbitrary bytes (a corrupt disk is an error).
        #[test]
        fn record_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = MailboxEntry::decode(&bytes);
            let _ = MailboxMeta::decode(&bytes);
            let _ = decode_payload(&bytes);
        }
    }
}
