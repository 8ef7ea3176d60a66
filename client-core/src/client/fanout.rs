//! What every send needs before it can encrypt for a set of devices: the accounts' verified
//! device lists, and a session with each device (bundles fetched and checked against the
//! list). Network calls happen without the state lock; sessions start under it.

use hush_prekeys::PreKeyBundle;
use hush_protocol::DeviceList;
use hush_protocol::wire::{self, request, response};

use super::core::{AccountId, Core};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use crate::Session;
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
