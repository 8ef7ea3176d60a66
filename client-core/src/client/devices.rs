//! Device lists: fetching an account's list from the relay (verified against the account key)
//! and taking a verified list into our state, for our own account or a contact's.
//!
//! Identity changes are detected here: a device whose identity key changed loses its sessions,
//! the app gets [`Event::IdentityChanged`], and a verified contact moves to `Changed` (sending
//! to it waits until the user accepts the change).

use hush_protocol::DeviceList;
use hush_protocol::wire::{self, request, response};

use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use super::types::Event;
use crate::records::{ContactRecord, RECORD_VERSION, Trust};
use crate::transport::Link;

/// Fetches an account's device list and verifies its signature and account.
pub(crate) async fn fetch_device_list(
    link: &dyn Link,
    account: &AccountId,
) -> Result<DeviceList, ClientError> {
    let body = request::Body::GetDeviceList(wire::GetDeviceList { account: account.to_vec() });
    match link.request(body).await? {
        response::Body::DeviceList(d) => {
            let list = DeviceList::decode(&d.device_list)
                .map_err(|e| ClientError::Protocol(format!("device list does not verify: {e}")))?;
            if list.account.as_bytes() != account {
                return Err(ClientError::Protocol("device list of another account".into()));
            }
            Ok(list)
        }
        _ => Err(unexpected("DeviceList")),
    }
}

/// Learns about devices linked or removed while we were away.
pub(crate) async fn refresh_own_list(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    let me = inner.core.lock().await.me();
    let list = fetch_device_list(link, &me).await?;
    let mut core = inner.core.lock().await;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    apply_device_list(&mut core, &mut tx, &list, None);
    inner.commit_then_emit(tx, core).await?;
    Ok(())
}

/// Takes a verified device list into our state: our own, or a contact's (creating the contact
/// if new). Newer lists only. A device whose identity key changed has its sessions dropped and
/// is reported; a verified contact moves to `Changed`.
pub(crate) fn apply_device_list(
    core: &mut Core,
    tx: &mut Tx<'_>,
    list: &DeviceList,
    name: Option<&str>,
) {
    let account = *list.account.as_bytes();
    let old = core.known_list(&account);
    let newer = old.as_ref().is_none_or(|o| list.version > o.version);
    let mut changed_identity = Vec::new();
    if newer && let Some(old) = &old {
        for d in &old.devices {
            match list.device(d.device_id) {
                None => {
                    core.sessions.insert((account, d.device_id), Vec::new());
                    tx.put_sessions(core, &account, d.device_id);
                }
                Some(n) if n.identity != d.identity || n.registration_id != d.registration_id => {
                    core.sessions.insert((account, d.device_id), Vec::new());
                    tx.put_sessions(core, &account, d.device_id);
                    if n.identity != d.identity {
                        changed_identity.push(d.device_id);
                    }
                }
                Some(_) => {}
            }
        }
    }
    if account == core.me() {
        if newer {
            core.own_list = Some(list.clone());
            tx.put_own_list(list);
            if old.is_some() {
                tx.events.push(Event::DevicesChanged);
            }
        }
        return;
    }
    let contact = core.contacts.entry(account).or_insert_with(|| ContactRecord {
        version: RECORD_VERSION,
        account_id: account.to_vec(),
        name: String::new(),
        trust: Trust::Unverified as i32,
        device_list: Vec::new(),
    });
    if let Some(n) = name {
        contact.name = n.to_owned();
    }
    if newer {
        contact.device_list = list.encoded().to_vec();
    }
    let contact_id = hex::encode(account);
    for device_id in changed_identity {
        let was_verified = contact.trust == Trust::Verified as i32;
        if was_verified {
            contact.trust = Trust::Changed as i32;
        }
        tx.events.push(Event::IdentityChanged {
            contact: contact_id.clone(),
            device_id,
            was_verified,
        });
    }
    let c = contact.clone();
    tx.put_contact(&c);
    if newer || name.is_some() {
        tx.events.push(Event::ContactChanged { contact: contact_id });
    }
}
