//! What 1:1 and group sends share: before encrypting, the accounts' verified device lists and a
//! session with each device (bundles fetched and checked against the list); on the relay's
//! `device_mismatch`, the refreshed lists with the sessions of gone devices dropped; once the
//! relay has the send, the entry out of the outbox and its message sent. Network calls happen
//! without the state lock; sessions start under it.

use hush_prekeys::PreKeyBundle;
use hush_protocol::DeviceList;
use hush_protocol::wire::{self, request, response};

use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use crate::Session;
use crate::records::{OutboxRecord, Status};
use crate::store::Table;
use crate::transport::Link;

/// Fetches the device lists of the `accounts` this device doesn't know yet (state unlocked).
/// The caller applies them under the lock.
pub(crate) async fn fetch_unknown_lists(
    inner: &Inner,
    link: &dyn Link,
    accounts: &[AccountId],
) -> Result<Vec<DeviceList>, ClientError> {
    let mut fetched = Vec::new();
    for account in accounts {
        if inner.core.lock().await.known_list(account).is_none() {
            fetched.push(super::devices::fetch_device_list(link, account).await?);
        }
    }
    Ok(fetched)
}

/// Fetches bundles of the devices in `wanted` that have no session yet (state unlocked).
pub(crate) async fn fetch_bundles(
    inner: &Inner,
    link: &dyn Link,
    wanted: Vec<(AccountId, Vec<u32>)>,
) -> Result<Vec<(AccountId, wire::DeviceBundle)>, ClientError> {
    let mut bundles = Vec::new();
    for (account, devices) in wanted {
        let mut need = Vec::new();
        for device in devices {
            let mut core = inner.core.lock().await;
            if core
                .sessions_mut(inner.store.as_ref(), &inner.vault, &account, device)
                .await?
                .is_empty()
            {
                need.push(device);
            }
        }
        if need.is_empty() {
            continue;
        }
        let body = request::Body::FetchBundles(wire::FetchBundles {
            account: account.to_vec(),
            device_ids: need,
        });
        match link.request(body).await? {
            response::Body::Bundles(b) => {
                bundles.extend(b.bundles.into_iter().map(|b| (account, b)))
            }
            _ => return Err(unexpected("Bundles")),
        }
    }
    Ok(bundles)
}

/// Starts a session with each bundle's device that still has none. A bundle must be the
/// device its account signed for (same identity as in the verified list), not one the relay
/// made up.
pub(crate) async fn start_sessions(
    inner: &Inner,
    core: &mut Core,
    bundles: &[(AccountId, wire::DeviceBundle)],
) -> Result<(), ClientError> {
    for (account, b) in bundles {
        let Some(list) = core.known_list(account) else { continue };
        let Some(entry) = list.device(b.device_id) else { continue };
        let verified = PreKeyBundle::decode(&b.bundle)
            .and_then(|pb| pb.verify())
            .map_err(|e| ClientError::Protocol(format!("bundle: {e}")))?;
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
    Ok(())
}

/// The accounts a `device_mismatch` names, with their lists fetched again (state unlocked).
pub(crate) async fn fetch_mismatched(
    link: &dyn Link,
    mismatches: &[wire::DeviceMismatch],
) -> Result<Vec<(AccountId, DeviceList, wire::DeviceMismatch)>, ClientError> {
    let mut lists = Vec::new();
    for m in mismatches {
        let account: AccountId = m
            .account
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("mismatch account".into()))?;
        lists.push((account, super::devices::fetch_device_list(link, &account).await?, m.clone()));
    }
    Ok(lists)
}

/// Takes the refreshed lists in, and drops the sessions of devices that are gone (`extra`) or
/// were reinstalled (`stale`): new ones start from fresh bundles.
pub(crate) fn apply_mismatched(
    core: &mut Core,
    tx: &mut Tx<'_>,
    lists: &[(AccountId, DeviceList, wire::DeviceMismatch)],
) {
    for (account, list, m) in lists {
        super::devices::apply_device_list(core, tx, list, None);
        for device in m.stale.iter().chain(&m.extra) {
            core.sessions.insert((*account, *device), Vec::new());
            tx.put_sessions(core, account, *device);
        }
    }
}

/// Whether `device` of `account` is one a mismatch says is gone or reinstalled.
pub(crate) fn is_gone(m: &wire::DeviceMismatch, account: &[u8], device: u32) -> bool {
    m.account.as_slice() == account && (m.stale.contains(&device) || m.extra.contains(&device))
}

/// Removes a sent entry from the outbox and moves its message to `Sent`: even if the user gave
/// up on it while this attempt was on the wire (`cancel` marked it failed), the relay has it.
pub(crate) async fn finish(
    inner: &Inner,
    key: Option<&[u8]>,
    record: &OutboxRecord,
) -> Result<(), ClientError> {
    let Some(key) = key else { return Ok(()) };
    let _core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    tx.batch.delete(Table::Outbox, key.to_vec());
    if !record.message_id.is_empty()
        && let Some((k, mut m)) = tx.message(&record.message_id).await?
        && (m.status < Status::Sent as i32 || m.status == Status::Failed as i32)
    {
        m.problem_code.clear();
        m.problem.clear();
        tx.set_status(k, m, Status::Sent);
    }
    inner.commit_then_emit(tx, ()).await
}
