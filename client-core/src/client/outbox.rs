//! The outbox: durable outgoing work, fanned out to every device of the peer and every other
//! device of ours.
//!
//! An entry is encrypted once: the ratchet states and the ciphertexts are committed together
//! before anything goes on the wire, and a retry (after a restart or a lost connection) resends
//! those same bytes. So no message key is ever used twice, and a duplicate that does reach a
//! device fails its ratchet's duplicate check and is dropped. On the relay's
//! `device_mismatch`, the device lists are refreshed, envelopes for removed or reinstalled
//! devices dropped, new devices encrypted to, and the send retried, with no error for the user.
//!
//! A send the relay refuses for a reason that may pass (it is unreachable, busy, full or
//! failing, or a recipient's mailbox is full: [`ClientError::is_retryable`]) is never dropped:
//! the message stays pending with the reason on it ([`MessageView::problem`], and an
//! [`Event::SendDelayed`]), and is retried with backoff (1 s doubling to 5 min, or the relay's
//! `retry_after_ms` when longer; at once after a reconnect) until it goes out or the user gives
//! up ([`Client::cancel_send`]). Only a refusal of the request itself (`too_large`,
//! `bad_request`, an unknown account…) fails it. Entries wait per peer: a message held for one
//! peer holds the later ones for that peer, in order, and no others.
//!
//! [`MessageView::problem`]: super::types::MessageView::problem
//! [`Client::cancel_send`]: crate::Client::cancel_send

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hush_protocol::wire::{self, request, response};
use hush_protocol::{ErrorCode, Refusal};

use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use super::types::Event;
use super::types::to_hex;
use crate::records::{OutboxRecord, PreparedEnvelope, Record, Status, keys};
use crate::store::{Scan, Store, Table};
use crate::transport::{Link, TransportError};

/// Most rounds of device-list refresh before a send is retried later.
const MAX_MISMATCH_ROUNDS: usize = 5;
/// First retry of a refused send; doubles per attempt up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Outbox entries read per page of a pass.
const PAGE: usize = 64;

/// Queues a record in the outbox (within the caller's transaction).
pub(crate) fn enqueue(core: &mut Core, tx: &mut Tx<'_>, record: &OutboxRecord) {
    let seq = core.account.next_outbox.max(1);
    core.account.next_outbox = seq + 1;
    tx.put(Table::Outbox, &keys::outbox(seq), &record.to_bytes());
}

/// The queue an entry waits in: its group for group sends, else its peer. A held entry holds
/// the later ones of its queue.
fn queue_of(record: &OutboxRecord) -> &[u8] {
    if record.group_id.is_empty() { &record.peer } else { &record.group_id }
}

/// When an entry that was refused may be tried again.
struct Retry {
    attempts: u32,
    at_ms: u64,
}

/// The wait before attempt `attempts + 1`: doubling from [`RETRY_MIN`], at most
/// [`RETRY_MAX`], and at least what the relay asked for.
fn retry_delay(attempts: u32, retry_after_ms: u64) -> Duration {
    let doubled = RETRY_MIN.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    doubled.min(RETRY_MAX).max(Duration::from_millis(retry_after_ms))
}

/// Works through the outbox while the link is up: every entry in order per peer, in passes
/// over the whole outbox; between passes it waits for new entries or the next retry.
pub(crate) async fn run(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    // Waits of refused entries, by outbox key. They live as long as the connection: a new
    // connection tries everything at once.
    let mut retries: HashMap<Vec<u8>, Retry> = HashMap::new();
    loop {
        // Peers with an earlier entry not sent in this pass: their later entries wait too.
        let mut held: HashSet<Vec<u8>> = HashSet::new();
        let mut next_retry: Option<u64> = None;
        let mut start = Vec::new();
        let mut seen = 0usize;
        loop {
            let scan =
                Scan { start: start.clone(), limit: PAGE, ..Scan::prefix(Table::Outbox, b"") };
            let rows = inner.store.scan(scan).await?;
            let last_page = rows.len() < PAGE;
            for (key, sealed) in rows {
                seen += 1;
                start.clone_from(&key);
                start.push(0);
                let mut record =
                    OutboxRecord::from_bytes(&inner.vault.open(Table::Outbox, &key, &sealed)?)?;
                if held.contains(queue_of(&record)) {
                    continue;
                }
                let now = crate::runtime::now_ms();
                if let Some(r) = retries.get(&key).filter(|r| r.at_ms > now) {
                    next_retry = Some(next_retry.map_or(r.at_ms, |t| t.min(r.at_ms)));
                    held.insert(queue_of(&record).to_vec());
                    continue;
                }
                match deliver(inner, link, Some(&key), &mut record).await {
                    Ok(()) => {
                        retries.remove(&key);
                    }
                    // Held until the user accepts the change; `set_verified` and
                    // `accept_identity_change` wake the loop.
                    Err(ClientError::IdentityChanged) => {
                        held.insert(queue_of(&record).to_vec());
                    }
                    // The connection is gone or the store failed: this connection's loop ends,
                    // the entry stays, and the next connection tries it again.
                    Err(
                        e @ (ClientError::Network(_)
                        | ClientError::Store(_)
                        | ClientError::ShutDown),
                    ) => {
                        if matches!(e, ClientError::Network(_)) {
                            // Shown on the message until the reconnect sends it.
                            let _ = delayed(inner, &record, &e, Duration::ZERO).await;
                        }
                        return Err(e);
                    }
                    Err(e) if e.is_retryable() => {
                        let r =
                            retries.entry(key.clone()).or_insert(Retry { attempts: 0, at_ms: 0 });
                        r.attempts += 1;
                        let retry_after = match &e {
                            ClientError::Relay(r) => r.retry_after_ms,
                            _ => 0,
                        };
                        let wait = retry_delay(r.attempts, retry_after);
                        r.at_ms =
                            now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                        next_retry = Some(next_retry.map_or(r.at_ms, |t| t.min(r.at_ms)));
                        held.insert(queue_of(&record).to_vec());
                        delayed(inner, &record, &e, wait).await?;
                    }
                    Err(e) => {
                        // Refused for good: report, mark the message failed, move on.
                        retries.remove(&key);
                        fail(inner, &key, &record, &e).await?;
                    }
                }
            }
            if last_page {
                break;
            }
        }
        if seen == 0 {
            retries.clear();
            inner.outbox_ready.notified().await;
            continue;
        }
        match next_retry {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(crate::runtime::now_ms()));
                tokio::select! {
                    _ = crate::runtime::sleep(wait) => {}
                    _ = inner.outbox_ready.notified() => {}
                }
            }
            // Everything left is held for an identity change, or was just sent: wait for
            // news (a permit is kept for a notification that came during the pass).
            None if !held.is_empty() => inner.outbox_ready.notified().await,
            None => {}
        }
    }
}

/// Keeps a refused message pending, with the reason on it and an event for the app.
async fn delayed(
    inner: &Inner,
    record: &OutboxRecord,
    e: &ClientError,
    wait: Duration,
) -> Result<(), ClientError> {
    if record.message_id.is_empty() {
        return Ok(());
    }
    let _core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    let Some((k, mut m)) = tx.message(&record.message_id).await? else { return Ok(()) };
    tx.events.push(Event::SendDelayed {
        conversation: to_hex(&m.conversation),
        message_id: to_hex(&m.id),
        code: e.code().to_owned(),
        message: e.message(),
        retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    });
    // The record is written only when the reason changes (a rate limit can repeat often).
    if m.problem_code != e.code() || m.problem != e.message() {
        m.problem_code = e.code().to_owned();
        m.problem = e.message();
        tx.put_message(k, m, false);
    }
    inner.commit_then_emit(tx, ()).await?;
    Ok(())
}

async fn fail(
    inner: &Inner,
    key: &[u8],
    record: &OutboxRecord,
    e: &ClientError,
) -> Result<(), ClientError> {
    let _core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    tx.batch.delete(Table::Outbox, key.to_vec());
    tx.events.push(Event::Error { code: e.code().to_owned(), message: e.message() });
    if !record.message_id.is_empty()
        && let Some((k, mut m)) = tx.message(&record.message_id).await?
    {
        m.problem_code = e.code().to_owned();
        m.problem = e.message();
        tx.set_status(k, m, Status::Failed);
    }
    inner.commit_then_emit(tx, ()).await?;
    Ok(())
}

/// Gives up on an outgoing message that is still pending: its outbox entry is removed and the
/// message marked failed (`canceled`). If an attempt is on the wire at that moment and the
/// relay accepts it, the message is shown sent after all.
pub(crate) async fn cancel(inner: &Inner, message_id: &[u8]) -> Result<(), ClientError> {
    let _core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    let (k, mut m) = tx
        .message(message_id)
        .await?
        .ok_or_else(|| ClientError::InvalidArgument("unknown message".into()))?;
    if !m.outgoing || m.status != Status::Pending as i32 {
        return Err(ClientError::InvalidArgument("the message is not pending".into()));
    }
    for (key, sealed) in inner.store.scan(Scan::prefix(Table::Outbox, b"")).await? {
        let record = OutboxRecord::from_bytes(&inner.vault.open(Table::Outbox, &key, &sealed)?)?;
        if record.message_id == message_id {
            tx.batch.delete(Table::Outbox, key);
        }
    }
    m.problem_code = "canceled".into();
    m.problem = "the user gave up sending it".into();
    tx.set_status(k, m, Status::Failed);
    inner.commit_then_emit(tx, ()).await?;
    Ok(())
}

/// Sends one outbox record (or an ephemeral one, `key == None`), preparing envelopes as needed.
pub(crate) async fn deliver(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    if !record.group_id.is_empty() {
        return super::group_outbox::deliver(inner, link, key, record).await;
    }
    let mut refreshed = false;
    for _ in 0..MAX_MISMATCH_ROUNDS {
        prepare(inner, link, key, record).await?;
        if record.prepared.is_empty() && record.peer.is_empty() && !refreshed {
            // Only for our own devices, and we know of none: the relay checks nothing when
            // nothing is sent, so make sure of the list first (a device linked a moment ago).
            refreshed = true;
            super::devices::refresh_own_list(inner, link).await?;
            continue;
        }
        if record.prepared.is_empty() {
            return super::fanout::finish(inner, key, record).await;
        }
        let mut send =
            wire::Send { payloads: Vec::new(), envelopes: Vec::new(), ephemeral: record.ephemeral };
        for (i, p) in record.prepared.iter().enumerate() {
            send.payloads.push(p.ciphertext.clone());
            send.envelopes.push(wire::Envelope {
                account: p.account.clone(),
                device_id: p.device_id,
                registration_id: p.registration_id,
                payload: u32::try_from(i).unwrap_or(u32::MAX),
            });
        }
        match link.request(request::Body::Send(send)).await {
            Ok(response::Body::Sent(_)) => return super::fanout::finish(inner, key, record).await,
            Ok(_) => return Err(unexpected("Sent")),
            Err(TransportError::Relay(r)) if r.is(ErrorCode::DeviceMismatch) => {
                reconcile(inner, link, key, record, &r.mismatches).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClientError::Relay(Refusal::new(
        ErrorCode::DeviceMismatch,
        "the recipients' device set is still changing; retrying shortly",
    )))
}

/// Handles the relay's device mismatch: refresh the lists, drop envelopes for devices that are
/// gone or were reinstalled (and their sessions), so `prepare` encrypts to the current set.
async fn reconcile(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
    mismatches: &[wire::DeviceMismatch],
) -> Result<(), ClientError> {
    let lists = super::fanout::fetch_mismatched(link, mismatches).await?;
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    super::fanout::apply_mismatched(&mut core, &mut tx, &lists);
    for (_, _, m) in &lists {
        record.prepared.retain(|p| !super::fanout::is_gone(m, &p.account, p.device_id));
    }
    if let Some(key) = key {
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    inner.commit_then_emit(tx, core).await?;
    Ok(())
}

/// Makes sure `record.prepared` holds one envelope for every current device of each target
/// account: fetches device lists and bundles it lacks, starts sessions, encrypts, and commits
/// the ratchet states with the record.
async fn prepare(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    let (me, my_device) = {
        let core = inner.core.lock().await;
        (core.me(), core.device_id())
    };
    let mut targets: Vec<(AccountId, &[u8])> = Vec::new();
    if !record.peer.is_empty() && !record.peer_content.is_empty() {
        let peer: AccountId = record
            .peer
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::CorruptStore("outbox peer".into()))?;
        targets.push((peer, &record.peer_content));
    }
    if !record.own_content.is_empty() {
        targets.push((me, &record.own_content));
    }

    // Network first, without the lock: lists we lack and bundles for devices with no session.
    let accounts: Vec<AccountId> = targets.iter().map(|t| t.0).collect();
    let fetched_lists = super::fanout::fetch_unknown_lists(inner, link, &accounts).await?;
    let mut wanted = Vec::new();
    for (account, _) in &targets {
        let known = inner.core.lock().await.known_list(account);
        let list = match known {
            Some(l) => l,
            None => match fetched_lists.iter().find(|l| l.account.as_bytes() == account) {
                Some(l) => l.clone(),
                None => continue,
            },
        };
        let devices = list
            .devices
            .iter()
            .map(|d| d.device_id)
            .filter(|d| needs_envelope(record, (me, my_device), account, *d))
            .collect();
        wanted.push((*account, devices));
    }
    let bundles = super::fanout::fetch_bundles(inner, link, wanted).await?;

    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    for l in &fetched_lists {
        super::devices::apply_device_list(&mut core, &mut tx, l, None);
    }
    if let Some(peer) = targets.first().map(|t| t.0).filter(|p| *p != me)
        && core
            .contacts
            .get(&peer)
            .is_some_and(|c| c.trust == crate::records::Trust::Changed as i32)
    {
        inner.commit_then_emit(tx, core).await?;
        return Err(ClientError::IdentityChanged);
    }
    super::fanout::start_sessions(inner, &mut core, &bundles).await?;
    let mut touched = Vec::new();
    for (account, content) in &targets {
        let Some(list) = core.known_list(account) else { continue };
        record.prepared.retain(|p| {
            p.account.as_slice() != account.as_slice() || list.device(p.device_id).is_some()
        });
        for d in &list.devices {
            if !needs_envelope(record, (me, my_device), account, d.device_id) {
                continue;
            }
            let sessions =
                core.sessions_mut(inner.store.as_ref(), &inner.vault, account, d.device_id).await?;
            let Some(session) = sessions.first_mut() else {
                // No bundle for it (the relay had none): the relay's mismatch check will tell.
                continue;
            };
            let ciphertext = session
                .encrypt(&mut rand::rng(), content)
                .map_err(|e| ClientError::Protocol(format!("encrypt: {e}")))?;
            record.prepared.push(PreparedEnvelope {
                account: account.to_vec(),
                device_id: d.device_id,
                registration_id: d.registration_id,
                ciphertext,
            });
            touched.push((*account, d.device_id));
        }
    }
    for (account, device) in &touched {
        tx.put_sessions(&core, account, *device);
    }
    if let Some(key) = key {
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    let events = match tx.commit().await {
        Ok(ev) => ev,
        Err(e) => {
            // Memory is ahead of disk: forget cached sessions so they reload as stored.
            core.forget_cached_secrets();
            return Err(e);
        }
    };
    drop(core);
    inner.events.emit(events);
    Ok(())
}

/// Whether `device` of `account` still needs an envelope of `record`: not this device
/// itself, and not one already prepared.
fn needs_envelope(
    record: &OutboxRecord,
    (me, my_device): (AccountId, u32),
    account: &AccountId,
    device: u32,
) -> bool {
    let this_device = *account == me && device == my_device;
    let prepared = record
        .prepared
        .iter()
        .any(|p| p.account.as_slice() == account.as_slice() && p.device_id == device);
    !this_device && !prepared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_honour_the_relays_wait() {
        assert_eq!(retry_delay(1, 0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0), Duration::from_secs(2));
        assert_eq!(retry_delay(5, 0), Duration::from_secs(16));
        assert_eq!(retry_delay(30, 0), RETRY_MAX);
        assert_eq!(retry_delay(1, 7_500), Duration::from_millis(7_500));
    }
}
