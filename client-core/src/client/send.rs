//! The outbox: durable outgoing work, fanned out to every device of the peer and every other
//! device of ours.
//!
//! An entry is encrypted once: the ratchet states and the ciphertexts are committed together
//! before anything goes on the wire, and a retry (after a restart or a lost connection) resends
//! those same bytes. So no message key is ever used twice, and a duplicate that does reach a
//! device fails its ratchet's duplicate check and is dropped. On the relay's
//! `device_mismatch`, the device lists are refreshed, envelopes for removed or reinstalled
//! devices dropped, new devices encrypted to, and the send retried, with no error for the user.

use hush_prekeys::PreKeyBundle;
use hush_protocol::wire::{self, request, response};

use super::core::{AccountId, Core, Tx};
use super::{ClientError, Event, Inner, unexpected};
use crate::Session;
use crate::records::{OutboxRecord, PreparedEnvelope, Record, Status, keys};
use crate::store::{Scan, Table};
use crate::transport::{Link, TransportError};

/// Most rounds of device-list refresh before a send is reported failed.
const MAX_MISMATCH_ROUNDS: usize = 5;

/// Queues a record in the outbox (within the caller's transaction).
pub(crate) fn enqueue(core: &mut Core, tx: &mut Tx<'_>, record: &OutboxRecord) {
    let seq = core.account.next_outbox.max(1);
    core.account.next_outbox = seq + 1;
    tx.put(Table::Outbox, &keys::outbox(seq), &record.to_bytes());
}

/// Works through the outbox in order while the link is up.
pub(crate) async fn run(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    loop {
        let rows = inner.store.scan(Scan { limit: 64, ..Scan::prefix(Table::Outbox, b"") }).await?;
        if rows.is_empty() {
            inner.outbox_ready.notified().await;
            continue;
        }
        for (key, sealed) in rows {
            let mut record =
                OutboxRecord::from_bytes(&inner.vault.open(Table::Outbox, &key, &sealed)?)?;
            match deliver(inner, link, Some(&key), &mut record).await {
                Ok(()) => {}
                Err(ClientError::IdentityChanged) => {
                    // Held until the user accepts the change; later entries wait behind it to
                    // keep order. `set_verified`/`accept_identity_change` wake us.
                    inner.outbox_ready.notified().await;
                    break;
                }
                Err(
                    e @ (ClientError::Network(_) | ClientError::Store(_) | ClientError::ShutDown),
                ) => return Err(e),
                // Transient: a rate limit, or a device set still settling (a device linked a
                // moment ago has not uploaded its prekeys yet). Wait and rescan; the entry and
                // everything behind it stay queued in order.
                Err(ClientError::Relay { code, .. })
                    if code == "rate_limited" || code == "device_mismatch" =>
                {
                    crate::runtime::sleep(std::time::Duration::from_millis(1000)).await;
                    break;
                }
                Err(e) => {
                    // Refused for good: report, mark the message failed, move on.
                    fail(inner, &key, &record, &e).await?;
                }
            }
        }
    }
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
    tx.events.push(Event::Error { code: e.code().to_owned(), message: e.to_string() });
    if !record.message_id.is_empty()
        && let Some((k, m)) = tx.message(&record.message_id).await?
    {
        tx.set_status(k, m, Status::Failed);
    }
    let events = tx.commit().await?;
    inner.events.emit(events);
    Ok(())
}

/// Sends one outbox record (or an ephemeral one, `key == None`), preparing envelopes as needed.
pub(crate) async fn deliver(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    for _ in 0..MAX_MISMATCH_ROUNDS {
        prepare(inner, link, key, record).await?;
        if record.prepared.is_empty() {
            return finish(inner, key, record).await;
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
            Ok(response::Body::Sent(_)) => return finish(inner, key, record).await,
            Ok(_) => return Err(unexpected("Sent")),
            Err(TransportError::Relay { code, mismatches, .. }) if code == "device_mismatch" => {
                reconcile(inner, link, key, record, &mismatches).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClientError::Relay {
        code: "device_mismatch".into(),
        message: "the recipients' device set is still changing; retrying shortly".into(),
    })
}

/// Removes a sent record and moves its message to `Sent`.
async fn finish(
    inner: &Inner,
    key: Option<&[u8]>,
    record: &OutboxRecord,
) -> Result<(), ClientError> {
    let Some(key) = key else { return Ok(()) };
    let _core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    tx.batch.delete(Table::Outbox, key.to_vec());
    if !record.message_id.is_empty()
        && let Some((k, m)) = tx.message(&record.message_id).await?
        && m.status < Status::Sent as i32
    {
        tx.set_status(k, m, Status::Sent);
    }
    let events = tx.commit().await?;
    inner.events.emit(events);
    Ok(())
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
    let mut lists = Vec::new();
    for m in mismatches {
        let account: AccountId = m
            .account
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("mismatch account".into()))?;
        lists.push((
            account,
            super::connection::fetch_device_list(link, &account).await?,
            m.clone(),
        ));
    }
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    for (account, list, m) in &lists {
        super::receive::apply_device_list(&mut core, &mut tx, list, None);
        for device in m.stale.iter().chain(&m.extra) {
            core.sessions.insert((*account, *device), Vec::new());
            tx.put_sessions(&core, account, *device);
        }
        record.prepared.retain(|p| {
            p.account.as_slice() != account.as_slice()
                || !(m.stale.contains(&p.device_id) || m.extra.contains(&p.device_id))
        });
    }
    if let Some(key) = key {
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    let events = tx.commit().await?;
    drop(core);
    inner.events.emit(events);
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
    let mut fetched_lists = Vec::new();
    let mut bundles: Vec<(AccountId, wire::DeviceBundle)> = Vec::new();
    for (account, _) in &targets {
        let known = inner.core.lock().await.known_list(account);
        let list = match known {
            Some(l) => l,
            None => {
                let l = super::connection::fetch_device_list(link, account).await?;
                fetched_lists.push(l.clone());
                l
            }
        };
        let mut need = Vec::new();
        for d in &list.devices {
            if *account == me && d.device_id == my_device {
                continue;
            }
            if record
                .prepared
                .iter()
                .any(|p| p.account.as_slice() == account.as_slice() && p.device_id == d.device_id)
            {
                continue;
            }
            let mut core = inner.core.lock().await;
            if core
                .sessions_mut(inner.store.as_ref(), &inner.vault, account, d.device_id)
                .await?
                .is_empty()
            {
                need.push(d.device_id);
            }
        }
        if !need.is_empty() {
            let body = request::Body::FetchBundles(wire::FetchBundles {
                account: account.to_vec(),
                device_ids: need,
            });
            match link.request(body).await? {
                response::Body::Bundles(b) => {
                    bundles.extend(b.bundles.into_iter().map(|b| (*account, b)))
                }
                _ => return Err(unexpected("Bundles")),
            }
        }
    }

    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    for l in &fetched_lists {
        super::receive::apply_device_list(&mut core, &mut tx, l, None);
    }
    if let Some(peer) = targets.first().map(|t| t.0).filter(|p| *p != me)
        && core
            .contacts
            .get(&peer)
            .is_some_and(|c| c.trust == crate::records::Trust::Changed as i32)
    {
        let events = tx.commit().await?;
        drop(core);
        inner.events.emit(events);
        return Err(ClientError::IdentityChanged);
    }
    for (account, b) in &bundles {
        let Some(list) = core.known_list(account) else { continue };
        let Some(entry) = list.device(b.device_id) else { continue };
        let verified = PreKeyBundle::decode(&b.bundle)
            .and_then(|pb| pb.verify())
            .map_err(|e| ClientError::Protocol(format!("bundle: {e}")))?;
        // The bundle must be the device the account signed for, not one the relay made up.
        if verified.identity() != &entry.identity {
            return Err(ClientError::Protocol(
                "a bundle's identity is not in the signed device list".into(),
            ));
        }
        let session = Session::initiate(&mut rand::rng(), &core.identity, &verified)
            .map_err(|e| ClientError::Protocol(format!("handshake: {e}")))?;
        let sessions =
            core.sessions_mut(inner.store.as_ref(), &inner.vault, account, b.device_id).await?;
        if sessions.is_empty() {
            sessions.insert(0, session);
        }
    }
    let mut touched = Vec::new();
    for (account, content) in &targets {
        let Some(list) = core.known_list(account) else { continue };
        record.prepared.retain(|p| {
            p.account.as_slice() != account.as_slice() || list.device(p.device_id).is_some()
        });
        for d in &list.devices {
            if *account == me && d.device_id == my_device {
                continue;
            }
            if record
                .prepared
                .iter()
                .any(|p| p.account.as_slice() == account.as_slice() && p.device_id == d.device_id)
            {
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
            core.sessions.clear();
            return Err(e);
        }
    };
    drop(core);
    inner.events.emit(events);
    Ok(())
}
