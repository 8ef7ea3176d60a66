//! The Hush client: accounts, contacts, multi-device 1:1 messaging, receipts, typing, local
//! history with search, and sync between a user's devices.
//!
//! A [`Client`] owns background tasks that keep a connection to the relay (reconnecting with
//! backoff), drain and decrypt deliveries, and work through a durable outbox. The app calls
//! async methods and listens to one [`Event`] stream. Guarantees:
//! - `send_text` returns once the message is in local history and in the outbox: from then on it
//!   survives a crash and is sent exactly once (envelopes are encrypted once, stored, and resent
//!   verbatim after a restart, so the recipient's ratchet drops any duplicate);
//! - a delivery is acked to the relay only after its effects (history, ratchet state, receipts
//!   to send) are committed locally;
//! - every device of the peer and every other device of ours gets each message; our devices
//!   get a transcript, so all of them show the same conversation in the same order, sorted by
//!   (Lamport clock, message id), both carried inside the encryption;
//! - device lists are verified against the account key; an identity change is surfaced, and
//!   for a verified contact sending is held until the user accepts it.

mod connection;
mod core;
mod devices;
mod error;
mod history;
mod inbox;
mod inner;
mod outbox;
mod prekeys;
mod types;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use hush_prekeys::{DevicePrekeys, IdentityKey, IdentityKeyPair, Party, SafetyNumber};
use hush_protocol::device_list::DeviceEntry;
use hush_protocol::wire::{self, request};
use hush_protocol::{AccountKey, AccountKeyPair, DeviceList, ErrorCode, Refusal};
use rand::RngExt;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use zeroize::Zeroizing;

use self::core::{AccountId, Core, Tx};
pub use self::error::ClientError;
pub use self::inbox::MAX_BATCH;
pub use self::inner::{ClientConfig, ClientOptions, EventStream};
use self::inner::{EventHub, Inner};
pub use self::types::{
    ConnectionState, ContactView, ConversationView, DeviceView, Event, MessageStatus, MessageView,
    SearchHit, SendProblem, TrustState,
};
use crate::content::{self, Content, MAX_TEXT_CHARS, MESSAGE_ID_LEN};
use crate::records::{
    AccountRecord, ContactRecord, ConversationRecord, MessageRecord, OutboxRecord, PostingsRecord,
    RECORD_VERSION, Record, Status, Trust, keys, meta,
};
use crate::store::{Scan, Store, Table};
use crate::transport::Link;
use crate::vault::Vault;

/// A Hush client for one device. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

pub(crate) fn parse_account(id: &str) -> Result<AccountId, ClientError> {
    let bytes = hex::decode(id.trim())
        .map_err(|_| ClientError::InvalidArgument("an account id is 64 hex digits".into()))?;
    let id: AccountId = bytes
        .try_into()
        .map_err(|_| ClientError::InvalidArgument("an account id is 64 hex digits".into()))?;
    AccountKey::from_bytes(&id)
        .map_err(|_| ClientError::InvalidArgument("not a valid account key".into()))?;
    Ok(id)
}

/// Device-list versions are milliseconds since the epoch (or one more than the last, if the
/// clock lags), so a restored primary, which does not know the last version, still signs a
/// newer list than any before.
fn next_list_version(current: u64) -> u64 {
    (current + 1).max(crate::runtime::now_ms())
}

fn random_registration_id() -> u32 {
    let mut rng = rand::rng();
    loop {
        let id: u32 = rng.random::<u32>() & 0x7fff_ffff;
        if id != 0 {
            return id;
        }
    }
}

/// A stored pending link: registration id (u32 BE) ‖ identity state.
fn pending_link(plain: &[u8]) -> Result<(u32, &[u8]), ClientError> {
    let corrupt = || ClientError::CorruptStore("pending link".into());
    let (reg, state) = plain.split_at_checked(4).ok_or_else(corrupt)?;
    Ok((u32::from_be_bytes(reg.try_into().map_err(|_| corrupt())?), state))
}

async fn check_store_key(store: &dyn Store, vault: &Vault) -> Result<bool, ClientError> {
    match store.get(Table::Meta, meta::HEADER).await? {
        None => Ok(false),
        Some(sealed) => {
            vault
                .open(Table::Meta, meta::HEADER, &sealed)
                .map_err(|_| ClientError::WrongStoreKey)?;
            Ok(true)
        }
    }
}

impl Client {
    /// Creates an account on the relay: the account key, this first (primary) device, its
    /// prekeys. Needs the relay reachable; the store must be empty.
    pub async fn create_account(config: ClientConfig) -> Result<Client, ClientError> {
        let account_key = AccountKeyPair::generate(&mut rand::rng());
        Self::create_with(config, account_key).await
    }

    /// Re-creates the primary device of an existing account from its account key (exported
    /// with [`Client::export_account_key`]), as after losing the phone. The new device has a
    /// new identity, so contacts are told it changed; other devices of the account are
    /// unlinked, and history does not come back.
    pub async fn restore_account(
        config: ClientConfig,
        account_key: &str,
    ) -> Result<Client, ClientError> {
        let bad = || ClientError::InvalidArgument("an account key is 64 hex digits".into());
        let seed: [u8; 32] =
            hex::decode(account_key.trim()).map_err(|_| bad())?.try_into().map_err(|_| bad())?;
        Self::create_with(config, AccountKeyPair::from_seed(&seed)).await
    }

    /// The account key (64 hex digits), for a recovery backup. Primary device only. Whoever
    /// holds it controls the account's device list: show it only behind the user's consent.
    pub async fn export_account_key(&self) -> Result<String, ClientError> {
        let core = self.inner.lock_for_app().await;
        let key = core.account_key.as_ref().ok_or(ClientError::NotPrimary)?;
        Ok(hex::encode(*key.seed()))
    }

    async fn create_with(
        config: ClientConfig,
        account_key: AccountKeyPair,
    ) -> Result<Client, ClientError> {
        let vault = Vault::new(&config.store_key);
        if check_store_key(config.store.as_ref(), &vault).await? {
            return Err(ClientError::AccountExists);
        }
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let account = AccountRecord {
            version: RECORD_VERSION,
            account_id: account_key.public().as_bytes().to_vec(),
            account_seed: account_key.seed().to_vec(),
            device_id: 1,
            registration_id: random_registration_id(),
            identity: identity.to_state_bytes().to_vec(),
            clock: 0,
            signed_prekey_at_ms: 0,
            prekeys_published: false,
            next_outbox: 1,
            registered: false,
        };
        let list = DeviceList::sign(
            &account_key,
            next_list_version(0),
            vec![DeviceEntry {
                device_id: 1,
                registration_id: account.registration_id,
                identity: identity.public().clone(),
            }],
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut tx = Tx::new(config.store.as_ref(), &vault);
        tx.put(Table::Meta, meta::HEADER, b"hush-store-v1");
        tx.put(Table::Meta, meta::ACCOUNT, &Zeroizing::new(account.to_bytes()));
        tx.put(Table::Meta, meta::PREKEYS, &DevicePrekeys::new().to_state_bytes());
        tx.put_own_list(&list);
        tx.commit().await?;
        let client = Self::open(config).await?;
        // Register now so the caller learns at once if the relay refuses; the connection loop
        // would retry it otherwise.
        client.ensure_registered().await?;
        Ok(client)
    }

    /// Opens the account in the store and starts connecting.
    pub async fn open(config: ClientConfig) -> Result<Client, ClientError> {
        let vault = Vault::new(&config.store_key);
        let store = config.store.as_ref();
        if !check_store_key(store, &vault).await? {
            return Err(ClientError::NoAccount);
        }
        let core = Core::load(store, &vault).await?;
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store: config.store,
            vault,
            connector: config.connector,
            options: config.options,
            core: Mutex::new(core),
            app_waiting: std::sync::atomic::AtomicUsize::new(0),
            events: EventHub { listeners: StdMutex::new(Vec::new()) },
            link: StdMutex::new(None),
            failure: StdMutex::new(None),
            outbox_ready: Notify::new(),
            state,
            shutdown,
        });
        crate::runtime::spawn(connection::run(Arc::clone(&inner)));
        Ok(Client { inner })
    }

    /// Step 1 of linking a new device to an existing account, on the new device: makes its
    /// identity and returns a link code for the primary device to approve
    /// ([`Client::approve_link`]). Calling it again returns the same code.
    pub async fn begin_link(config: &ClientConfig) -> Result<String, ClientError> {
        let vault = Vault::new(&config.store_key);
        let store = config.store.as_ref();
        if check_store_key(store, &vault).await?
            && store.get(Table::Meta, meta::ACCOUNT).await?.is_some()
        {
            return Err(ClientError::AccountExists);
        }
        let identity = match store.get(Table::Meta, meta::PENDING_LINK).await? {
            Some(sealed) => {
                let plain = vault.open(Table::Meta, meta::PENDING_LINK, &sealed)?;
                let (reg, state) = pending_link(&plain)?;
                let identity = IdentityKeyPair::from_state_bytes(state)
                    .map_err(|e| ClientError::CorruptStore(e.to_string()))?;
                (reg, identity)
            }
            None => {
                let identity = IdentityKeyPair::generate(&mut rand::rng());
                let reg = random_registration_id();
                let mut value = reg.to_be_bytes().to_vec();
                value.extend_from_slice(&identity.to_state_bytes());
                let mut tx = Tx::new(store, &vault);
                tx.put(Table::Meta, meta::HEADER, b"hush-store-v1");
                tx.put(Table::Meta, meta::PENDING_LINK, &value);
                tx.commit().await?;
                (reg, identity)
            }
        };
        let mut code = identity.1.public().encode_signed().to_vec();
        code.extend_from_slice(&identity.0.to_be_bytes());
        Ok(hex::encode(code))
    }

    /// Step 3 of linking, on the new device: takes the grant from [`Client::approve_link`] and
    /// opens the linked account. History from before the link stays on the other devices.
    pub async fn finish_link(config: ClientConfig, grant: &str) -> Result<Client, ClientError> {
        let vault = Vault::new(&config.store_key);
        let store = config.store.as_ref();
        let bad = || ClientError::InvalidArgument("not a link grant".into());
        let grant = hex::decode(grant.trim()).map_err(|_| bad())?;
        let (account_id, device) = grant.split_at_checked(32).ok_or_else(bad)?;
        let device_id = u32::from_be_bytes(device.try_into().map_err(|_| bad())?);
        let account_key = AccountKey::from_bytes(account_id).map_err(|_| bad())?;
        check_store_key(store, &vault).await?;
        let sealed =
            store.get(Table::Meta, meta::PENDING_LINK).await?.ok_or(ClientError::NoAccount)?;
        let plain = vault.open(Table::Meta, meta::PENDING_LINK, &sealed)?;
        let (registration_id, state) = pending_link(&plain)?;
        let account = AccountRecord {
            version: RECORD_VERSION,
            account_id: account_key.as_bytes().to_vec(),
            account_seed: Vec::new(),
            device_id,
            registration_id,
            identity: state.to_vec(),
            clock: 0,
            signed_prekey_at_ms: 0,
            prekeys_published: false,
            next_outbox: 1,
            registered: true,
        };
        let mut tx = Tx::new(store, &vault);
        tx.put(Table::Meta, meta::ACCOUNT, &Zeroizing::new(account.to_bytes()));
        tx.put(Table::Meta, meta::PREKEYS, &DevicePrekeys::new().to_state_bytes());
        tx.batch.delete(Table::Meta, meta::PENDING_LINK.to_vec());
        tx.commit().await?;
        Self::open(config).await
    }

    /// Step 2 of linking, on the primary device: adds the device of `link_code` to the signed
    /// device list and returns the grant to give back to it.
    pub async fn approve_link(&self, link_code: &str) -> Result<String, ClientError> {
        let bad = || ClientError::InvalidArgument("not a link code".into());
        let code = hex::decode(link_code.trim()).map_err(|_| bad())?;
        let (identity, reg) = code.split_at_checked(128).ok_or_else(bad)?;
        let identity = IdentityKey::decode_signed(identity).map_err(|_| bad())?;
        let registration_id = u32::from_be_bytes(reg.try_into().map_err(|_| bad())?);
        if registration_id == 0 {
            return Err(bad());
        }
        let (list, device_id) = {
            let core = self.inner.lock_for_app().await;
            let key = core.account_key.as_ref().ok_or(ClientError::NotPrimary)?;
            let current = core.own_list.clone().ok_or(ClientError::NotPrimary)?;
            if let Some(d) = current.devices.iter().find(|d| d.identity == identity) {
                let mut grant = core.account_id.as_bytes().to_vec();
                grant.extend_from_slice(&d.device_id.to_be_bytes());
                return Ok(hex::encode(grant));
            }
            let device_id = current.devices.iter().map(|d| d.device_id).max().unwrap_or(0) + 1;
            let mut devices = current.devices.clone();
            devices.push(DeviceEntry { device_id, registration_id, identity });
            let list = DeviceList::sign(key, next_list_version(current.version), devices)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
            (list, device_id)
        };
        self.publish_own_list(list).await?;
        let mut grant = self.account_id_bytes().await.to_vec();
        grant.extend_from_slice(&device_id.to_be_bytes());
        Ok(hex::encode(grant))
    }

    /// Removes one of our devices (primary only). Its connection is cut by the relay, its
    /// mailbox purged, and our devices and contacts stop encrypting to it.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), ClientError> {
        let list = {
            let core = self.inner.lock_for_app().await;
            let key = core.account_key.as_ref().ok_or(ClientError::NotPrimary)?;
            if device_id == core.device_id() {
                return Err(ClientError::InvalidArgument("a device cannot remove itself".into()));
            }
            let current = core.own_list.clone().ok_or(ClientError::NotPrimary)?;
            if current.device(device_id).is_none() {
                return Err(ClientError::InvalidArgument(format!("no device {device_id}")));
            }
            let devices =
                current.devices.iter().filter(|d| d.device_id != device_id).cloned().collect();
            DeviceList::sign(key, next_list_version(current.version), devices)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?
        };
        self.publish_own_list(list).await
    }

    async fn publish_own_list(&self, list: DeviceList) -> Result<(), ClientError> {
        let link = self.link().await?;
        link.request(request::Body::Register(wire::Register {
            device_list: list.encoded().to_vec(),
        }))
        .await?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        tx.put_own_list(&list);
        let me = core.me();
        core.sessions.retain(|(a, d), _| *a != me || list.device(*d).is_some());
        core.own_list = Some(list);
        tx.events.push(Event::DevicesChanged);
        self.inner.commit_then_emit(tx, core).await?;
        Ok(())
    }

    async fn ensure_registered(&self) -> Result<(), ClientError> {
        let link = self.link().await?;
        connection::ensure_registered(&self.inner, link.as_ref()).await
    }

    /// The current connection, waiting up to `relay_wait` for one. A certificate the client
    /// does not trust fails at once; otherwise, after the wait, the error says what the last
    /// connection attempt met (which address, and what happened).
    async fn link(&self) -> Result<Arc<dyn Link>, ClientError> {
        let mut state = self.inner.state.subscribe();
        let wait = async {
            loop {
                if let Some(l) = self.inner.current_link() {
                    return Ok(l);
                }
                if let Some(e @ ClientError::CertificateRejected(_)) = self.inner.last_failure() {
                    return Err(e);
                }
                if *state.borrow() == ConnectionState::Removed {
                    return Err(ClientError::Relay(Refusal::new(
                        ErrorCode::UnknownDevice,
                        "this device was removed",
                    )));
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::ShutDown);
                }
            }
        };
        let limit = self.inner.options.relay_wait;
        crate::runtime::timeout(limit, wait).await.unwrap_or_else(|| {
            Err(self.inner.last_failure().unwrap_or_else(|| {
                ClientError::Network(format!("not connected to the relay after {limit:?}"))
            }))
        })
    }

    async fn account_id_bytes(&self) -> AccountId {
        self.inner.lock_for_app().await.me()
    }

    /// Our account id (64 hex digits): what contacts add.
    pub async fn account_id(&self) -> String {
        hex::encode(self.account_id_bytes().await)
    }

    /// This device's id within the account.
    pub async fn device_id(&self) -> u32 {
        self.inner.lock_for_app().await.device_id()
    }

    /// Our account's devices, from its signed device list.
    pub async fn devices(&self) -> Vec<DeviceView> {
        let core = self.inner.lock_for_app().await;
        let me = core.device_id();
        core.own_list
            .as_ref()
            .map(|l| {
                l.devices
                    .iter()
                    .map(|d| DeviceView {
                        device_id: d.device_id,
                        this_device: d.device_id == me,
                        primary: d.device_id == 1,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A stream of every event from now on.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut l) = self.inner.events.listeners.lock() {
            l.push(tx);
        }
        EventStream { rx, buffered: std::collections::VecDeque::new() }
    }

    /// The connection state now.
    pub fn connection_state(&self) -> ConnectionState {
        *self.inner.state.borrow()
    }

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
        let list = devices::fetch_device_list(link.as_ref(), &id).await?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        devices::apply_device_list(&mut core, &mut tx, &list, Some(name));
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

    async fn set_trust(&self, contact: &str, trust: Trust) -> Result<(), ClientError> {
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

    /// Sends a text. Returns the message id once the message is in history and in the durable
    /// outbox; delivery happens in the background (watch [`Event::StatusChanged`]).
    pub async fn send_text(&self, conversation: &str, text: &str) -> Result<String, ClientError> {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ClientError::TextTooLong { chars, limit: MAX_TEXT_CHARS });
        }
        if text.is_empty() {
            return Err(ClientError::InvalidArgument("the text is empty".into()));
        }
        let peer = parse_account(conversation)?;
        let mut id = [0u8; MESSAGE_ID_LEN];
        rand::rng().fill(&mut id);
        let mut core = self.inner.lock_for_app().await;
        let contact = core.contacts.get(&peer).ok_or(ClientError::UnknownContact)?;
        if contact.trust == Trust::Changed as i32 {
            return Err(ClientError::IdentityChanged);
        }
        core.account.clock += 1;
        let text = content::Text {
            id: id.to_vec(),
            clock: core.account.clock,
            body: text.to_owned(),
            sent_at_ms: crate::runtime::now_ms(),
        };
        let me = core.me();
        let record = MessageRecord {
            version: RECORD_VERSION,
            id: id.to_vec(),
            conversation: peer.to_vec(),
            sender: me.to_vec(),
            sender_device: core.device_id(),
            clock: text.clock,
            body: text.body.clone(),
            sent_at_ms: text.sent_at_ms,
            outgoing: true,
            status: Status::Pending as i32,
            problem_code: String::new(),
            problem: String::new(),
        };
        let outbox = OutboxRecord {
            version: RECORD_VERSION,
            peer_content: Content::new(content::content::Body::Text(text.clone())).to_bytes(),
            peer: peer.to_vec(),
            own_content: Content::new(content::content::Body::SyncSent(content::SyncSent {
                conversation: peer.to_vec(),
                text: Some(text),
            }))
            .to_bytes(),
            message_id: id.to_vec(),
            prepared: Vec::new(),
            ephemeral: false,
        };
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        history::store_message(&mut tx, record, false).await?;
        outbox::enqueue(&mut core, &mut tx, &outbox);
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(hex::encode(id))
    }

    /// Gives up on an outgoing message that is still pending (a relay that stays full, a
    /// recipient whose mailbox stays full…): it is taken out of the outbox and marked
    /// [`MessageStatus::Failed`] with the problem `canceled`. If an attempt is on the wire at
    /// that moment and the relay accepts it, the message ends up sent after all.
    pub async fn cancel_send(&self, message_id: &str) -> Result<(), ClientError> {
        let id = hex::decode(message_id.trim())
            .map_err(|_| ClientError::InvalidArgument("a message id is 32 hex digits".into()))?;
        outbox::cancel(&self.inner, &id).await
    }

    /// Marks every incoming message of a conversation read: sends read receipts to the peer and
    /// tells our other devices, so their unread counts clear too.
    pub async fn mark_read(&self, conversation: &str) -> Result<(), ClientError> {
        let peer = parse_account(conversation)?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        let ids = history::mark_seen(&mut tx, &peer, None).await?;
        if ids.is_empty() {
            return Ok(());
        }
        let outbox = OutboxRecord {
            version: RECORD_VERSION,
            peer_content: Content::new(content::content::Body::Receipt(content::Receipt {
                kind: content::ReceiptKind::Read as i32,
                ids: ids.clone(),
            }))
            .to_bytes(),
            peer: peer.to_vec(),
            own_content: Content::new(content::content::Body::SyncRead(content::SyncRead {
                conversation: peer.to_vec(),
                ids,
            }))
            .to_bytes(),
            message_id: Vec::new(),
            prepared: Vec::new(),
            ephemeral: false,
        };
        outbox::enqueue(&mut core, &mut tx, &outbox);
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(())
    }

    /// Tells the peer's online devices that we started or stopped typing. Ephemeral: never
    /// stored by the relay; dropped if we are offline.
    pub async fn set_typing(&self, conversation: &str, started: bool) -> Result<(), ClientError> {
        let peer = parse_account(conversation)?;
        if !self.inner.lock_for_app().await.contacts.contains_key(&peer) {
            return Err(ClientError::UnknownContact);
        }
        let link = self.inner.current_link().ok_or_else(|| {
            self.inner
                .last_failure()
                .unwrap_or_else(|| ClientError::Network("not connected to the relay".into()))
        })?;
        let mut record = OutboxRecord {
            version: RECORD_VERSION,
            peer_content: Content::new(content::content::Body::Typing(content::Typing { started }))
                .to_bytes(),
            peer: peer.to_vec(),
            own_content: Vec::new(),
            message_id: Vec::new(),
            prepared: Vec::new(),
            ephemeral: true,
        };
        outbox::deliver(&self.inner, link.as_ref(), None, &mut record).await
    }

    /// A page of a conversation, in conversation order: the `limit` messages before the
    /// message `before` (or the newest ones).
    pub async fn messages(
        &self,
        conversation: &str,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<MessageView>, ClientError> {
        let peer = parse_account(conversation)?;
        let v = &self.inner.vault;
        let prefix = keys::conversation_prefix(v, &peer);
        let mut scan = Scan::prefix(Table::Messages, &prefix);
        if let Some(before) = before {
            let id = hex::decode(&before).map_err(|_| {
                ClientError::InvalidArgument("a message id is 32 hex digits".into())
            })?;
            let mut tx = Tx::new(self.inner.store.as_ref(), v);
            let (key, _) = tx
                .message(&id)
                .await?
                .ok_or_else(|| ClientError::InvalidArgument("unknown message".into()))?;
            scan.end = key;
        }
        scan.reverse = true;
        scan.limit = limit.max(1) as usize;
        let mut out = Vec::new();
        for (k, sealed) in self.inner.store.scan(scan).await? {
            let m = MessageRecord::from_bytes(&v.open(Table::Messages, &k, &sealed)?)?;
            out.push(MessageView::from_record(&m));
        }
        out.reverse();
        Ok(out)
    }

    /// Conversations, most recent first, with unread counts.
    pub async fn conversations(&self) -> Result<Vec<ConversationView>, ClientError> {
        let v = &self.inner.vault;
        let mut out = Vec::new();
        let rows = self.inner.store.scan(Scan::prefix(Table::Conversations, b"")).await?;
        let core = self.inner.lock_for_app().await;
        for (k, sealed) in rows {
            let c = ConversationRecord::from_bytes(&v.open(Table::Conversations, &k, &sealed)?)?;
            let name = AccountId::try_from(c.peer.as_slice())
                .ok()
                .and_then(|id| core.contacts.get(&id))
                .map(|c| c.name.clone())
                .unwrap_or_default();
            out.push((
                c.last_clock,
                ConversationView {
                    peer: hex::encode(&c.peer),
                    name,
                    unread: c.unread,
                    last_preview: c.last_preview,
                    last_at_ms: c.last_at_ms,
                },
            ));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.last_at_ms.cmp(&a.1.last_at_ms)));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    /// Full-text search of local history: messages containing every word of `query`, newest
    /// first (see [`crate::search`] for the tokenization).
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, ClientError> {
        let tokens = crate::search::tokens(query);
        let v = &self.inner.vault;
        let mut sets: Vec<std::collections::BTreeSet<Vec<u8>>> = Vec::new();
        for t in &tokens {
            let prefix = keys::search_prefix(v, t);
            let mut set = std::collections::BTreeSet::new();
            for (k, sealed) in
                self.inner.store.scan(Scan::prefix(Table::SearchIndex, &prefix)).await?
            {
                let row = PostingsRecord::from_bytes(&v.open(Table::SearchIndex, &k, &sealed)?)?;
                set.extend(row.message_keys);
            }
            sets.push(set);
        }
        sets.sort_by_key(|s| s.len());
        let Some((first, rest)) = sets.split_first() else { return Ok(Vec::new()) };
        let mut hits = Vec::new();
        for key in first.iter().filter(|k| rest.iter().all(|s| s.contains(*k))) {
            if let Some(sealed) = self.inner.store.get(Table::Messages, key).await? {
                let m = MessageRecord::from_bytes(&v.open(Table::Messages, key, &sealed)?)?;
                hits.push(SearchHit {
                    conversation: hex::encode(&m.conversation),
                    message: MessageView::from_record(&m),
                });
            }
        }
        hits.sort_by(|a, b| {
            b.message.clock.cmp(&a.message.clock).then(b.message.id.cmp(&a.message.id))
        });
        hits.truncate(limit.max(1) as usize);
        Ok(hits)
    }

    /// Waits until the outbox is empty (everything sent was acked by the relay), up to `wait`.
    pub async fn flush(&self, wait: Duration) -> Result<(), ClientError> {
        // A timer rather than a wall-clock deadline, so a clock change can't cut the wait short
        // or stretch it (the browser target has no `Instant`, but it has timers).
        let outbox =
            |limit| self.inner.store.scan(Scan { limit, ..Scan::prefix(Table::Outbox, b"") });
        let emptied = crate::runtime::timeout(wait, async {
            while !outbox(1).await?.is_empty() {
                crate::runtime::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, ClientError>(())
        })
        .await;
        match emptied {
            Some(done) => done,
            None => Err(ClientError::Network(format!(
                "{} outgoing items still queued",
                outbox(0).await?.len()
            ))),
        }
    }

    /// Stops the background tasks and closes the connection. Pending sends stay in the outbox
    /// for the next [`Client::open`].
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        if let Some(l) = self.inner.current_link() {
            l.close();
        }
        // Wait until the connection task has let go of the core (it holds it while committing).
        let _core = self.inner.lock_for_app().await;
        if let Ok(mut l) = self.inner.events.listeners.lock() {
            l.clear();
        }
    }
}

fn contact_view(c: &ContactRecord) -> ContactView {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn typing(n: usize) -> Event {
        Event::Typing { conversation: n.to_string(), started: true }
    }

    fn hub_with(streams: usize) -> (EventHub, Vec<EventStream>) {
        let hub = EventHub { listeners: StdMutex::new(Vec::new()) };
        let streams = (0..streams)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                hub.listeners.lock().unwrap().push(tx);
                EventStream { rx, buffered: std::collections::VecDeque::new() }
            })
            .collect();
        (hub, streams)
    }

    /// Batches go out whole, yet every stream reads single events in emission order, whether
    /// through `next`, `try_next` or both; a dropped stream stops receiving without disturbing
    /// the others.
    #[tokio::test]
    async fn every_stream_reads_every_event_in_order() {
        let (hub, mut streams) = hub_with(3);
        hub.emit(vec![typing(0), typing(1), typing(2)]);
        hub.emit(Vec::new());
        hub.emit(vec![typing(3)]);
        let dropped = streams.pop().unwrap();
        drop(dropped);
        hub.emit(vec![typing(4), typing(5)]);
        assert_eq!(hub.listeners.lock().unwrap().len(), 2);
        let [a, b] = &mut streams[..] else { unreachable!() };
        let mut got_a = Vec::new();
        while let Some(e) = a.try_next() {
            got_a.push(e);
        }
        let mut got_b = vec![b.next().await.unwrap(), b.try_next().unwrap()];
        for _ in 2..6 {
            got_b.push(b.next().await.unwrap());
        }
        let want: Vec<Event> = (0..6).map(typing).collect();
        assert_eq!(got_a, want);
        assert_eq!(got_b, want);
        assert!(a.try_next().is_none() && b.try_next().is_none());
    }
}
