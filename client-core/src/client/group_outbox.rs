//! Sending a group outbox entry: one payload, one envelope per member device.
//!
//! The entry's group message was encrypted once under this device's sender key when it was
//! queued (`groups`). Every device of its recipients must get it: the current members for a
//! message; for a change, the members before and after it (so removed members learn of it):
//! 1. devices that don't hold the key yet get its distribution first, in a pairwise
//!    [`GroupKey`] (all devices of an account that has one such device: the relay wants every
//!    device of an account it is asked to deliver to); one `Send`; once the relay acks, they
//!    hold the key. These envelopes are prepared and stored before the send and resent
//!    verbatim, as in 1:1 (see `outbox`);
//! 2. then the message: **one payload, one envelope per device**, one `Send`, one atomic relay
//!    commit, whatever the group's size.
//!
//! Each device's mailbox keeps the order, so the key arrives before the message. On
//! `device_mismatch` the lists are refreshed, envelopes of removed or reinstalled devices
//! dropped (a removed device makes the next message rotate the key), and new devices get the
//! key.

use std::collections::HashSet;

use hush_protocol::wire::{self, request, response};
use hush_protocol::{ErrorCode, Refusal};

use super::core::{AccountId, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use crate::content::{Content, GroupKey, content::Body};
use crate::group::Id;
use crate::records::{DeviceRef, OutboxRecord, PreparedEnvelope, Record};
use crate::store::Table;
use crate::transport::{Link, TransportError};

/// Most sends one attempt makes (keys in chunks, the message, and device-list refreshes)
/// before the entry is retried later.
const MAX_SENDS: usize = 24;

/// Sends one group entry (see the module docs).
pub(crate) async fn deliver(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    // Each round is one `Send`: the key to the devices that lack it, or the message to all.
    // Every send counts: key sends (a few for a large group), the message, and the rounds a
    // changing device set costs.
    let mut rounds = 0;
    while rounds < MAX_SENDS {
        rounds += 1;
        prepare(inner, link, key, record).await?;
        let keys = !record.prepared.is_empty();
        // The keys go out in sends of whole accounts, each under `KEY_SEND_BYTES` (a first
        // message to a device carries the handshake, about 1.5 KB: a thousand members' worth
        // would pass the relay's request limit).
        let chunk = if keys { key_chunk(&record.prepared) } else { 0 };
        let send = match keys {
            true => wire::Send {
                payloads: record
                    .prepared
                    .iter()
                    .take(chunk)
                    .map(|p| p.ciphertext.clone())
                    .collect(),
                envelopes: record
                    .prepared
                    .iter()
                    .take(chunk)
                    .enumerate()
                    .map(|(i, p)| envelope(p, u32::try_from(i).unwrap_or(u32::MAX)))
                    .collect(),
                ephemeral: false,
            },
            // Nobody else to tell (a group of one device).
            false if record.shared.is_empty() => {
                return super::fanout::finish(inner, key, record).await;
            }
            false => wire::Send {
                payloads: vec![record.group_payload.clone()],
                envelopes: record.shared.iter().map(|s| envelope(s, 0)).collect(),
                ephemeral: false,
            },
        };
        let r = link.request(request::Body::Send(send)).await;
        match r {
            Ok(response::Body::Sent(_)) if keys => keys_sent(inner, key, record, chunk).await?,
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
        "the members' device sets are still changing; retrying shortly",
    )))
}

/// Most ciphertext bytes in one key-distribution send (well under the relay's default request
/// limit of 4 MiB, PROTOCOL.md §14.13).
const KEY_SEND_BYTES: usize = 1 << 20;

/// How many of the first prepared envelopes go in the next key send: whole accounts (the relay
/// wants every device of an account in one send), as many as fit in [`KEY_SEND_BYTES`], and at
/// least one account.
fn key_chunk(prepared: &[PreparedEnvelope]) -> usize {
    let (mut end, mut bytes) = (0, 0);
    for group in prepared.chunk_by(|a, b| a.account == b.account) {
        let add: usize = group.iter().map(|p| p.ciphertext.len() + 64).sum();
        if end > 0 && bytes + add > KEY_SEND_BYTES {
            break;
        }
        bytes += add;
        end += group.len();
    }
    end
}

fn envelope(p: &PreparedEnvelope, payload: u32) -> wire::Envelope {
    wire::Envelope {
        account: p.account.clone(),
        device_id: p.device_id,
        registration_id: p.registration_id,
        payload,
    }
}

fn group_of(record: &OutboxRecord) -> Result<Id, ClientError> {
    record
        .group_id
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::CorruptStore("outbox group id".into()))
}

/// Makes sure every device the entry goes to has an envelope: shared for key holders, a
/// pairwise `GroupKey` for the others. Commits the new sessions with the record.
async fn prepare(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    let group = group_of(record)?;
    let (me, my_device, accounts) = {
        let mut core = inner.core.lock().await;
        let me = core.me();
        let my_device = core.device_id();
        let g = core
            .group_mut(inner.store.as_ref(), &inner.vault, &group)
            .await?
            .ok_or(crate::group::GroupError::UnknownGroup)?;
        let state = g.state().ok_or(crate::group::GroupError::UnknownGroup)?;
        let mut accounts: Vec<AccountId> = match record.recipients.is_empty() {
            true => state.members.keys().copied().collect(),
            false => record
                .recipients
                .iter()
                .filter_map(|a| AccountId::try_from(a.as_slice()).ok())
                .collect(),
        };
        // Our own other devices get every group message too (after we leave, the change).
        if !accounts.contains(&me) {
            accounts.push(me);
        }
        (me, my_device, accounts)
    };

    let fetched = super::fanout::fetch_unknown_lists(inner, link, &accounts).await?;
    // Who holds the key this entry is under, and who already has an envelope: sets, since a
    // large group asks for thousands.
    let holders: HashSet<(Vec<u8>, u32)> = {
        let core = inner.core.lock().await;
        let mut h: HashSet<(Vec<u8>, u32)> = core
            .groups
            .get(&group)
            .filter(|g| g.my_key.as_ref().is_some_and(|k| k.header().key_id == record.group_key_id))
            .map(|g| g.key_holders.iter().map(|d| (d.account.clone(), d.device_id)).collect())
            .unwrap_or_default();
        h.extend(record.keyed.iter().map(|d| (d.account.clone(), d.device_id)));
        h
    };
    // Shared envelopes carry no ciphertext: they are worked out afresh on every attempt, from
    // the holders and the current lists, and never stored (a large group's list of them would
    // be rewritten with every message).
    record.shared.clear();
    let mut addressed: HashSet<(Vec<u8>, u32)> =
        record.prepared.iter().map(|p| (p.account.clone(), p.device_id)).collect();
    let holds = |a: &AccountId, d: u32| holders.contains(&(a.to_vec(), d));
    let mut wanted = Vec::new();
    {
        let core = inner.core.lock().await;
        for account in &accounts {
            let list = core
                .known_list(account)
                .or_else(|| fetched.iter().find(|l| l.account.as_bytes() == account).cloned());
            let Some(list) = list else { continue };
            // Sessions are needed with the devices of accounts that will get the key.
            let others: Vec<u32> = list
                .devices
                .iter()
                .map(|d| d.device_id)
                .filter(|d| !(*account == me && *d == my_device))
                .collect();
            if others.iter().all(|d| holds(account, *d)) {
                continue;
            }
            let devices = others
                .into_iter()
                .filter(|d| !addressed.contains(&(account.to_vec(), *d)))
                .collect();
            wanted.push((*account, devices));
        }
    }
    let bundles = super::fanout::fetch_bundles(inner, link, wanted).await?;

    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    for l in &fetched {
        super::devices::apply_device_list(&mut core, &mut tx, l, None);
    }
    super::fanout::start_sessions(inner, &mut core, &bundles).await?;
    let mut touched = Vec::new();
    let lists: Vec<(AccountId, hush_protocol::DeviceList)> =
        accounts.iter().filter_map(|a| core.known_list(a).map(|l| (*a, l))).collect();
    // Envelopes prepared for devices that have since left their account's list are dropped.
    let current: HashSet<(Vec<u8>, u32)> = lists
        .iter()
        .flat_map(|(a, l)| l.devices.iter().map(|d| (a.to_vec(), d.device_id)))
        .collect();
    let listed: HashSet<&[u8]> = lists.iter().map(|(a, _)| a.as_slice()).collect();
    let before = record.prepared.len();
    record.prepared.retain(|p| {
        !listed.contains(p.account.as_slice())
            || current.contains(&(p.account.clone(), p.device_id))
    });
    let dropped = record.prepared.len() != before;
    let content =
        Content::new(Body::GroupKey(GroupKey { distribution: record.group_distribution.clone() }))
            .to_bytes();
    for (account, list) in &lists {
        let devices: Vec<_> =
            list.devices.iter().filter(|d| !(*account == me && d.device_id == my_device)).collect();
        // The relay takes a send only if it addresses every device of each account it names,
        // so an account with one device lacking the key gets the key on all of them.
        let needs_key = devices.iter().any(|d| !holds(account, d.device_id));
        for d in devices {
            record.shared.push(PreparedEnvelope {
                account: account.to_vec(),
                device_id: d.device_id,
                registration_id: d.registration_id,
                ciphertext: Vec::new(),
            });
            if !needs_key || !addressed.insert((account.to_vec(), d.device_id)) {
                continue;
            }
            let sessions =
                core.sessions_mut(inner.store.as_ref(), &inner.vault, account, d.device_id).await?;
            let Some(session) = sessions.first_mut() else {
                // No bundle for it (the relay had none): the relay's mismatch check will tell.
                addressed.remove(&(account.to_vec(), d.device_id));
                continue;
            };
            let ciphertext = session
                .encrypt(&mut rand::rng(), &content)
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
    // Whole accounts together, for the key sends (`key_chunk`).
    record.prepared.sort_by(|a, b| a.account.cmp(&b.account));
    for (account, device) in &touched {
        tx.put_sessions(&core, account, *device);
    }
    if let Some(key) = key
        && (dropped || !touched.is_empty())
    {
        let shared = std::mem::take(&mut record.shared);
        tx.put(Table::Outbox, key, &record.to_bytes());
        record.shared = shared;
    }
    match tx.commit().await {
        Ok(events) => {
            drop(core);
            inner.events.emit(events);
            Ok(())
        }
        Err(e) => {
            core.forget_cached_secrets();
            Err(e)
        }
    }
}

/// The relay has the key's distribution for the devices that lacked it: they hold it now,
/// and the entry goes on with the message itself.
async fn keys_sent(
    inner: &Inner,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
    sent: usize,
) -> Result<(), ClientError> {
    let group = group_of(record)?;
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    let sent_to: Vec<DeviceRef> = record
        .prepared
        .iter()
        .take(sent)
        .map(|p| DeviceRef { account: p.account.clone(), device_id: p.device_id })
        .collect();
    if let Some(g) = core.group_mut(inner.store.as_ref(), &inner.vault, &group).await?
        && g.my_key.as_ref().is_some_and(|k| k.header().key_id == record.group_key_id)
    {
        let mut held: HashSet<(Vec<u8>, u32)> =
            g.key_holders.iter().map(|d| (d.account.clone(), d.device_id)).collect();
        for d in &sent_to {
            if held.insert((d.account.clone(), d.device_id)) {
                g.key_holders.push(d.clone());
            }
        }
        tx.touch_group(group);
    }
    // This entry's key, whether or not it is still the current one.
    record.keyed.extend(sent_to);
    record.prepared.drain(..sent.min(record.prepared.len()));
    record.shared.clear();
    if let Some(key) = key {
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    tx.put_touched_groups(&core);
    inner.commit_then_emit(tx, core).await
}

/// Handles the relay's device mismatch for a group entry: refreshed lists; envelopes, sessions
/// and key holding dropped for devices that are gone or were reinstalled; a removed device
/// makes the next message rotate.
async fn reconcile(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
    mismatches: &[wire::DeviceMismatch],
) -> Result<(), ClientError> {
    let group = group_of(record)?;
    let lists = super::fanout::fetch_mismatched(link, mismatches).await?;
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    super::fanout::apply_mismatched(&mut core, &mut tx, &lists);
    for (_, _, m) in &lists {
        let gone = |account: &[u8], device| super::fanout::is_gone(m, account, device);
        record.prepared.retain(|p| !gone(&p.account, p.device_id));
        record.shared.retain(|p| !gone(&p.account, p.device_id));
        record.keyed.retain(|d| !gone(&d.account, d.device_id));
        if let Some(g) = core.group_mut(inner.store.as_ref(), &inner.vault, &group).await? {
            g.key_holders.retain(|d| !gone(&d.account, d.device_id));
            g.rotate |= !m.extra.is_empty();
            tx.touch_group(group);
        }
    }
    if let Some(key) = key {
        record.shared.clear();
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    tx.put_touched_groups(&core);
    inner.commit_then_emit(tx, core).await
}

/// Sends a typing indicator to a group: ephemeral (the relay hands it to devices online at that
/// moment and stores nothing), one payload under this device's sender key, one envelope per
/// device of each member whose every device already holds the key.
///
/// A typing indicator is not worth a key distribution: members who don't hold our current key
/// yet (newly added, a new device, or a rotation due after someone left) get none until our
/// next message has handed it to them. A device-list change the relay reports drops this one
/// indicator the same way. The advanced sender chain is committed before the ciphertext leaves,
/// so a crash can't make the chain repeat a step.
pub(crate) async fn send_typing(
    inner: &Inner,
    link: &dyn Link,
    group: Id,
    started: bool,
) -> Result<(), ClientError> {
    use crate::group::GroupError;
    let mut core = inner.lock_for_app().await;
    let (store, vault) = (inner.store.as_ref(), &inner.vault);
    let me = core.me();
    let (members, holders) = {
        let g = core.group_mut(store, vault, &group).await?.ok_or(GroupError::UnknownGroup)?;
        let state = g.state().ok_or(GroupError::UnknownGroup)?;
        if !state.is_member(&me) {
            return Err(GroupError::NotAMember.into());
        }
        if g.rotate || g.my_key.is_none() {
            return Ok(());
        }
        let members: Vec<AccountId> = state.members.keys().copied().filter(|a| *a != me).collect();
        let holders: HashSet<(Vec<u8>, u32)> =
            g.key_holders.iter().map(|d| (d.account.clone(), d.device_id)).collect();
        (members, holders)
    };
    let mut envelopes = Vec::new();
    for account in &members {
        let Some(list) = core.known_list(account) else { continue };
        if list.devices.iter().all(|d| holders.contains(&(account.to_vec(), d.device_id))) {
            envelopes.extend(list.devices.iter().map(|d| wire::Envelope {
                account: account.to_vec(),
                device_id: d.device_id,
                registration_id: d.registration_id,
                payload: 0,
            }));
        }
    }
    if envelopes.is_empty() {
        return Ok(());
    }
    let content = Content::new(Body::Typing(crate::content::Typing { started })).to_bytes();
    let g = core.group_mut(store, vault, &group).await?.ok_or(GroupError::UnknownGroup)?;
    let key = g.my_key.as_mut().ok_or(GroupError::UnknownGroup)?;
    let message =
        key.encrypt(&content).map_err(|e| ClientError::Protocol(format!("group encrypt: {e}")))?;
    let payload =
        [&[crate::message::MESSAGE_VERSION, crate::message::TYPE_GROUP][..], &message].concat();
    let mut tx = Tx::new(store, vault);
    tx.touch_group(group);
    tx.put_touched_groups(&core);
    inner.commit_then_emit(tx, core).await?;
    let send = wire::Send { payloads: vec![payload], envelopes, ephemeral: true };
    match link.request(request::Body::Send(send)).await {
        Ok(response::Body::Sent(_)) => Ok(()),
        Ok(_) => Err(unexpected("Sent")),
        Err(TransportError::Relay(r)) if r.is(ErrorCode::DeviceMismatch) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
