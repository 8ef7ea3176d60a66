//! The account and its devices: creating or restoring an account, opening a store, linking
//! a new device (link code, approval, grant), removing one, and publishing our signed device
//! list. Only the primary device (the one holding the account key) changes the list.

use std::sync::{Arc, Mutex as StdMutex};

use hush_prekeys::{DevicePrekeys, IdentityKey, IdentityKeyPair};
use hush_protocol::device_list::DeviceEntry;
use hush_protocol::wire::{self, request};
use hush_protocol::{AccountKey, AccountKeyPair, DeviceList};
use rand::RngExt;
use tokio::sync::{Mutex, Notify, watch};
use zeroize::Zeroizing;

use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::handle::Client;
use super::inner::{ClientConfig, EventHub, Inner};
use super::types::{ConnectionState, DeviceView, Event};
use crate::records::{AccountRecord, RECORD_VERSION, Record, meta};
use crate::store::{Store, Table};
use crate::vault::Vault;

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

    pub(crate) async fn create_with(
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
            store: Arc::new(super::gate::Gate::new(config.store)),
            vault,
            connector: config.connector,
            options: config.options,
            core: Mutex::new(core),
            app_waiting: std::sync::atomic::AtomicUsize::new(0),
            events: EventHub::new(),
            link: StdMutex::new(None),
            failure: StdMutex::new(None),
            outbox_ready: Notify::new(),
            state,
            shutdown,
            canceled: Default::default(),
            uploading: Default::default(),
            downloading: Default::default(),
        });
        crate::runtime::spawn(super::connection::run(Arc::clone(&inner)));
        #[cfg(not(target_arch = "wasm32"))]
        crate::runtime::spawn(super::attachments::resume_uploads(Client {
            inner: Arc::clone(&inner),
        }));
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

    pub(crate) async fn publish_own_list(&self, list: DeviceList) -> Result<(), ClientError> {
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

    pub(crate) async fn ensure_registered(&self) -> Result<(), ClientError> {
        let link = self.link().await?;
        super::connection::ensure_registered(&self.inner, link.as_ref()).await
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
pub(crate) fn next_list_version(current: u64) -> u64 {
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
