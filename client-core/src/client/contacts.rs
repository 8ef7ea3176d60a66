//! Contacts: adding one by account id (its device list fetched and verified), safety numbers,
//! verification, and accepting an identity change.

use hush_prekeys::{Party, SafetyNumber};
use hush_protocol::DeviceList;

use super::account::parse_account;
use super::core::Tx;
use super::error::ClientError;
use super::handle::Client;
use super::types::{ContactView, Event, TrustState};
use crate::records::{ContactRecord, Trust};

impl Client {
    /// Adds a contact by account id, fetching and verifying its device list from the relay.
    pub async fn add_contact(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<ContactView, ClientError> {
        let id = parse_account(account_id)?;
        if id == self.account_id_bytes().await {
            return Err(ClientError::InvalidArgument("that is our own account".into()));
        }
        let link = self.link().await?;
        let list = super::devices::fetch_device_list(link.as_ref(), &id).await?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        super::devices::apply_device_list(&mut core, &mut tx, &list, Some(name));
        let view = contact_view(core.contacts.get(&id).ok_or(ClientError::UnknownContact)?);
        self.inner.commit_then_emit(tx, core).await?;
        Ok(view)
    }

    /// Every contact.
    pub async fn contacts(&self) -> Vec<ContactView> {
        let core = self.inner.lock_for_app().await;
        let mut v: Vec<ContactView> = core.contacts.values().map(contact_view).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.account_id.cmp(&b.account_id)));
        v
    }

    /// The 60-digit safety number with a contact (grouped in fives). Both sides compute the
    /// same digits from the two account keys, which sign every device's identity.
    pub async fn safety_number(&self, contact: &str) -> Result<String, ClientError> {
        let id = parse_account(contact)?;
        let core = self.inner.lock_for_app().await;
        if !core.contacts.contains_key(&id) {
            return Err(ClientError::UnknownContact);
        }
        let me = core.me();
        let n = SafetyNumber::new(
            Party { stable_id: &me, identity_key: &me },
            Party { stable_id: &id, identity_key: &id },
        );
        Ok(n.grouped())
    }

    /// Marks a contact verified (after comparing safety numbers), or back to unverified.
    pub async fn set_verified(&self, contact: &str, verified: bool) -> Result<(), ClientError> {
        self.set_trust(contact, if verified { Trust::Verified } else { Trust::Unverified }).await
    }

    /// Accepts a verified contact's identity change: the contact becomes unverified and sending
    /// resumes.
    pub async fn accept_identity_change(&self, contact: &str) -> Result<(), ClientError> {
        self.set_trust(contact, Trust::Unverified).await
    }

    pub(crate) async fn set_trust(&self, contact: &str, trust: Trust) -> Result<(), ClientError> {
        let id = parse_account(contact)?;
        let mut core = self.inner.lock_for_app().await;
        let c = core.contacts.get_mut(&id).ok_or(ClientError::UnknownContact)?;
        c.trust = trust as i32;
        let c = c.clone();
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        tx.put_contact(&c);
        tx.events.push(Event::ContactChanged { contact: hex::encode(id) });
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(())
    }
}

pub(crate) fn contact_view(c: &ContactRecord) -> ContactView {
    ContactView {
        account_id: hex::encode(&c.account_id),
        name: c.name.clone(),
        trust: match Trust::try_from(c.trust) {
            Ok(Trust::Verified) => TrustState::Verified,
            Ok(Trust::Changed) => TrustState::Changed,
            _ => TrustState::Unverified,
        },
        devices: DeviceList::decode(&c.device_list)
            .map(|l| l.devices.iter().map(|d| d.device_id).collect())
            .unwrap_or_default(),
    }
}
