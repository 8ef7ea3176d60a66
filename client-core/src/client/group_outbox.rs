//! Sending a group outbox entry: one payload, one envelope per member device.
//!
//! The entry's group message was encrypted once under this device's sender key when it was
//! queued (`groups`). Here every current member device (and every device of the accounts the
//! entry names besides, such as members a change removes) gets an envelope: devices known to
//! hold the key reference the shared payload; the others get a pairwise [`GroupKey`] carrying
//! the key's distribution with the same message, so they can read it and every later one. All
//! of it is one `Send`, one atomic relay commit. Once the relay acks, those devices count as
//! key holders. Envelopes are prepared and stored before the send and resent verbatim, as for
//! 1:1 (see `outbox`). On `device_mismatch` the lists are refreshed, envelopes of removed or
//! reinstalled devices dropped (a removed device makes the next message rotate the key), and
//! new devices get the key.

use hush_protocol::wire::{self, request, response};
use hush_protocol::{ErrorCode, Refusal};

use super::core::{AccountId, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use crate::content::{Content, GroupKey, content::Body};
use crate::group::Id;
use crate::records::{DeviceRef, OutboxRecord, PreparedEnvelope, Record, Status};
use crate::store::Table;
use crate::transport::{Link, TransportError};

/// Most rounds of device-list refresh before the entry is retried later.
const MAX_MISMATCH_ROUNDS: usize = 5;

/// Sends one group entry (see the module docs).
pub(crate) async fn deliver(
    inner: &Inner,
    link: &dyn Link,
    key: Option<&[u8]>,
    record: &mut OutboxRecord,
) -> Result<(), ClientError> {
    for _ in 0..MAX_MISMATCH_ROUNDS {
        prepare(inner, link, key, record).await?;
        let mut send = wire::Send { payloads: Vec::new(), envelopes: Vec::new(), ephemeral: false };
        if !record.shared.is_empty() {
            send.payloads.push(record.group_payload.clone());
            for s in &record.shared {
                send.envelopes.push(envelope(s, 0));
            }
        }
        for p in &record.prepared {
            let index = u32::try_from(send.payloads.len()).unwrap_or(u32::MAX);
            send.payloads.push(p.ciphertext.clone());
            send.envelopes.push(envelope(p, index));
        }
        if send.envelopes.is_empty() {
            // Nobody else to tell (a group of one device).
            return finish(inner, key, record).await;
        }
        match link.request(request::Body::Send(send)).await {
            Ok(response::Body::Sent(_)) => return finish(inner, key, record).await,
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
        let mut accounts: Vec<AccountId> = state.members.keys().copied().collect();
        for a in &record.extra_accounts {
            if let Ok(a) = AccountId::try_from(a.as_slice())
                && !accounts.contains(&a)
            {
                accounts.push(a);
            }
        }
        // Our own other devices get every group message too (after we leave, the change).
        if !accounts.contains(&me) {
            accounts.push(me);
        }
        (me, my_device, accounts)
    };

    let fetched = super::fanout::fetch_unknown_lists(inner, link, &accounts).await?;
    let mut wanted = Vec::new();
    {
        let core = inner.core.lock().await;
        let holds = |a: &AccountId, d: u32| {
            core.groups.get(&group).is_some_and(|g| {
                g.my_key.as_ref().is_some_and(|k| k.header().key_id == record.group_key_id)
                    && g.holds_key(a, d)
            })
        };
        for account in &accounts {
            let list = core
                .known_list(account)
                .or_else(|| fetched.iter().find(|l| l.account.as_bytes() == account).cloned());
            let Some(list) = list else { continue };
            let devices = list
                .devices
                .iter()
                .map(|d| d.device_id)
                .filter(|d| {
                    let this_device = *account == me && *d == my_device;
                    let shared =
                        holds(account, *d) && !record.snapshot_for.iter().any(|a| a == account);
                    !(this_device || shared || addressed(record, account, *d))
                })
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
    let message = crate::message::group_message(&record.group_payload).unwrap_or_default().to_vec();
    let mut touched = Vec::new();
    for account in &accounts {
        let Some(list) = core.known_list(account) else { continue };
        let keep = |p: &PreparedEnvelope| {
            p.account.as_slice() != account.as_slice() || list.device(p.device_id).is_some()
        };
        record.prepared.retain(keep);
        record.shared.retain(keep);
        for d in &list.devices {
            if (*account == me && d.device_id == my_device)
                || addressed(record, account, d.device_id)
            {
                continue;
            }
            // Members this change adds get the state with it, pairwise, even if they hold
            // the key (from a change that lost a fork).
            let holder = !record.snapshot_for.iter().any(|a| a == account)
                && core.groups.get(&group).is_some_and(|g| {
                    g.my_key.as_ref().is_some_and(|k| k.header().key_id == record.group_key_id)
                        && g.holds_key(account, d.device_id)
                });
            if holder {
                record.shared.push(PreparedEnvelope {
                    account: account.to_vec(),
                    device_id: d.device_id,
                    registration_id: d.registration_id,
                    ciphertext: Vec::new(),
                });
                continue;
            }
            let content = Content::new(Body::GroupKey(GroupKey {
                distribution: record.group_distribution.clone(),
                message: message.clone(),
                snapshot: record
                    .snapshot_for
                    .iter()
                    .any(|a| a == account)
                    .then(|| record.snapshot.clone())
                    .flatten(),
            }));
            let sessions =
                core.sessions_mut(inner.store.as_ref(), &inner.vault, account, d.device_id).await?;
            let Some(session) = sessions.first_mut() else {
                // No bundle for it (the relay had none): the relay's mismatch check will tell.
                continue;
            };
            let ciphertext = session
                .encrypt(&mut rand::rng(), &content.to_bytes())
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

/// Whether the entry already has an envelope for `device` of `account`.
fn addressed(record: &OutboxRecord, account: &AccountId, device: u32) -> bool {
    record
        .prepared
        .iter()
        .chain(&record.shared)
        .any(|p| p.account.as_slice() == account.as_slice() && p.device_id == device)
}

/// The relay has the send: the devices that got the key now hold it; the entry leaves the
/// outbox and its message is sent.
async fn finish(
    inner: &Inner,
    key: Option<&[u8]>,
    record: &OutboxRecord,
) -> Result<(), ClientError> {
    let group = group_of(record)?;
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    if let Some(g) = core.group_mut(inner.store.as_ref(), &inner.vault, &group).await?
        && g.my_key.as_ref().is_some_and(|k| k.header().key_id == record.group_key_id)
    {
        for p in &record.prepared {
            if !g.holds_key(&p.account, p.device_id) {
                g.key_holders
                    .push(DeviceRef { account: p.account.clone(), device_id: p.device_id });
            }
        }
        tx.touch_group(group);
    }
    if let Some(key) = key {
        tx.batch.delete(Table::Outbox, key.to_vec());
    }
    if !record.message_id.is_empty()
        && let Some((k, mut m)) = tx.message(&record.message_id).await?
        && (m.status < Status::Sent as i32 || m.status == Status::Failed as i32)
    {
        m.problem_code.clear();
        m.problem.clear();
        tx.set_status(k, m, Status::Sent);
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
    let mut lists = Vec::new();
    for m in mismatches {
        let account: AccountId = m
            .account
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("mismatch account".into()))?;
        lists.push((account, super::devices::fetch_device_list(link, &account).await?, m.clone()));
    }
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    for (account, list, m) in &lists {
        super::devices::apply_device_list(&mut core, &mut tx, list, None);
        for device in m.stale.iter().chain(&m.extra) {
            core.sessions.insert((*account, *device), Vec::new());
            tx.put_sessions(&core, account, *device);
        }
        let gone = |p: &PreparedEnvelope| {
            p.account.as_slice() == account.as_slice()
                && (m.stale.contains(&p.device_id) || m.extra.contains(&p.device_id))
        };
        record.prepared.retain(|p| !gone(p));
        record.shared.retain(|p| !gone(p));
        if let Some(g) = core.group_mut(inner.store.as_ref(), &inner.vault, &group).await? {
            g.key_holders.retain(|d| {
                d.account.as_slice() != account.as_slice()
                    || !(m.stale.contains(&d.device_id) || m.extra.contains(&d.device_id))
            });
            g.rotate |= !m.extra.is_empty();
            tx.touch_group(group);
        }
    }
    if let Some(key) = key {
        tx.put(Table::Outbox, key, &record.to_bytes());
    }
    tx.put_touched_groups(&core);
    inner.commit_then_emit(tx, core).await
}
