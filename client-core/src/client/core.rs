//! The client's mutable state and the transaction helper every write goes through.
//!
//! [`Core`] holds the device's secrets and caches (identity, prekeys, sessions, contacts, our
//! own device list). It lives behind one async mutex: every change to it and its store commit
//! happen under that lock, so two tasks never interleave ratchet steps or lose an update.
//! [`Tx`] collects the puts of one operation (with read-your-writes overlays for messages and
//! conversations) and commits them atomically; events are emitted only after the commit.

use std::collections::HashMap;

use crate::Session;
use hush_prekeys::{DevicePrekeys, IdentityKeyPair};
use hush_protocol::{AccountKey, AccountKeyPair, DeviceList};
use zeroize::Zeroizing;

use super::error::ClientError;
use super::group_state::GroupEntry;
use super::types::Event;
use crate::hashing::{Map, map};
use crate::records::{
    AccountRecord, ContactRecord, ConversationRecord, GroupRecord, MessageRecord, PostingsRecord,
    ReceivedKeysRecord, Record, SessionRecord, id_row, keys, meta,
};
use crate::sender_key::ReceivedKey;
use crate::store::{Batch, Scan, Store, Table};
use crate::vault::{BLIND_LEN, Vault};

/// Most sessions kept per remote device (the current one and older ones for late messages).
pub const MAX_SESSIONS_PER_DEVICE: usize = 3;

pub(crate) type AccountId = [u8; 32];

/// The device's state. Each secret is held once, in a type that wipes it on drop and keeps it
/// out of `Debug`: the identity, the account key (primary device only), the prekeys and the
/// sessions. `account` is the stored record without its secrets
/// ([`AccountRecord::strip_secrets`]); [`Tx::put_account`] puts them back to write it.
pub(crate) struct Core {
    pub account: AccountRecord,
    pub account_id: AccountKey,
    pub identity: IdentityKeyPair,
    pub account_key: Option<AccountKeyPair>,
    pub prekeys: DevicePrekeys,
    pub own_list: Option<DeviceList>,
    pub contacts: HashMap<AccountId, ContactRecord>,
    pub sessions: HashMap<(AccountId, u32), Vec<Session>>,
    /// Groups loaded so far (on demand, like sessions).
    pub groups: HashMap<crate::group::Id, GroupEntry>,
    /// Sender keys received, by (group, account, device), newest first; loaded on demand.
    pub received_keys: HashMap<(crate::group::Id, AccountId, u32), Vec<ReceivedKey>>,
    /// Contacts' device lists as decoded and verified, reused while the stored bytes are the
    /// same: a list's decoding checks four or more signatures, and a send to a large group
    /// asks for a thousand lists.
    pub list_cache: std::sync::Mutex<HashMap<AccountId, DeviceList>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("account", &self.account)
            .field("account_id", &self.account_id)
            .field("identity", &self.identity)
            .field("account_key", &self.account_key)
            .field("prekeys", &self.prekeys)
            .field("own_list", &self.own_list)
            .field("contacts", &self.contacts.values().collect::<Vec<_>>())
            .field("sessions", &format_args!("<{} devices>", self.sessions.len()))
            .field("groups", &format_args!("<{} groups>", self.groups.len()))
            .finish()
    }
}

impl Core {
    /// Loads the device's state from the store: the account record (whose secrets move into
    /// the key types), the prekeys, our own device list and the contacts. Sessions load on
    /// demand ([`Core::sessions_mut`]).
    pub async fn load(store: &dyn Store, vault: &Vault) -> Result<Core, ClientError> {
        let mut account: AccountRecord = load_sealed(store, vault, Table::Meta, meta::ACCOUNT)
            .await?
            .ok_or(ClientError::NoAccount)?;
        // The secrets live on in the key types only (see `Core`).
        let (seed, identity) = account.strip_secrets();
        let identity = IdentityKeyPair::from_state_bytes(&identity)
            .map_err(|e| ClientError::CorruptStore(e.to_string()))?;
        let account_id = AccountKey::from_bytes(&account.account_id)
            .map_err(|e| ClientError::CorruptStore(e.to_string()))?;
        let account_key =
            <&[u8; 32]>::try_from(seed.as_slice()).ok().map(AccountKeyPair::from_seed);
        let prekeys = match store.get(Table::Meta, meta::PREKEYS).await? {
            Some(sealed) => {
                DevicePrekeys::from_state_bytes(&vault.open(Table::Meta, meta::PREKEYS, &sealed)?)
                    .map_err(|e| ClientError::CorruptStore(e.to_string()))?
            }
            None => DevicePrekeys::new(),
        };
        let own_list = match store.get(Table::Meta, meta::OWN_DEVICES).await? {
            Some(sealed) => {
                DeviceList::decode(&vault.open(Table::Meta, meta::OWN_DEVICES, &sealed)?).ok()
            }
            None => None,
        };
        let mut contacts = std::collections::HashMap::new();
        for (k, sealed) in store.scan(Scan::prefix(Table::Contacts, b"")).await? {
            let c = ContactRecord::from_bytes(&vault.open(Table::Contacts, &k, &sealed)?)?;
            if let Ok(id) = AccountId::try_from(c.account_id.as_slice()) {
                contacts.insert(id, c);
            }
        }
        Ok(Core {
            account,
            account_id,
            identity,
            account_key,
            prekeys,
            own_list,
            contacts,
            sessions: std::collections::HashMap::new(),
            groups: std::collections::HashMap::new(),
            received_keys: std::collections::HashMap::new(),
            list_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn me(&self) -> AccountId {
        *self.account_id.as_bytes()
    }

    pub fn device_id(&self) -> u32 {
        self.account.device_id
    }

    /// The verified device list of `account` as we know it.
    pub fn known_list(&self, account: &AccountId) -> Option<DeviceList> {
        if *account == self.me() {
            return self.own_list.clone();
        }
        let c = self.contacts.get(account)?;
        let mut cache = self.list_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = cache.get(account)
            && l.encoded() == c.device_list.as_slice()
        {
            return Some(l.clone());
        }
        let list = DeviceList::decode(&c.device_list).ok()?;
        cache.insert(*account, list.clone());
        Some(list)
    }

    /// Loads a device's sessions into the cache (if stored) and returns them.
    pub async fn sessions_mut(
        &mut self,
        store: &dyn Store,
        vault: &Vault,
        account: &AccountId,
        device: u32,
    ) -> Result<&mut Vec<Session>, ClientError> {
        let key = (*account, device);
        if let std::collections::hash_map::Entry::Vacant(e) = self.sessions.entry(key) {
            let k = keys::session(vault, account, device);
            let mut loaded = Vec::new();
            if let Some(sealed) = store.get(Table::Sessions, &k).await? {
                let rec = SessionRecord::from_bytes(&vault.open(Table::Sessions, &k, &sealed)?)?;
                for state in &rec.states {
                    loaded.push(
                        Session::from_bytes(state)
                            .map_err(|e| ClientError::CorruptStore(e.to_string()))?,
                    );
                }
            }
            e.insert(loaded);
        }
        Ok(self.sessions.entry(key).or_default())
    }
}

impl Core {
    /// Forgets the cached ratchets and sender keys after a failed commit (memory may be ahead
    /// of the store); they reload as stored.
    pub fn forget_cached_secrets(&mut self) {
        self.sessions.clear();
        self.groups.clear();
        self.received_keys.clear();
    }

    /// Loads a group into the cache (if stored) and returns it.
    pub async fn group_mut(
        &mut self,
        store: &dyn Store,
        vault: &Vault,
        id: &crate::group::Id,
    ) -> Result<Option<&mut GroupEntry>, ClientError> {
        if !self.groups.contains_key(id) {
            let k = keys::group(vault, id);
            let Some(sealed) = store.get(Table::Groups, &k).await? else { return Ok(None) };
            let rec = GroupRecord::from_bytes(&vault.open(Table::Groups, &k, &sealed)?)?;
            self.groups.insert(*id, GroupEntry::from_record(&rec)?);
        }
        Ok(self.groups.get_mut(id))
    }

    /// Loads the sender keys received from a device for a group and returns them.
    pub async fn received_keys_mut(
        &mut self,
        store: &dyn Store,
        vault: &Vault,
        (group, account, device): (crate::group::Id, AccountId, u32),
    ) -> Result<&mut Vec<ReceivedKey>, ClientError> {
        let key = (group, account, device);
        if let std::collections::hash_map::Entry::Vacant(e) = self.received_keys.entry(key) {
            let k = keys::received_keys(vault, &group, &account, device);
            let mut loaded = Vec::new();
            if let Some(sealed) = store.get(Table::SenderKeys, &k).await? {
                let rec =
                    ReceivedKeysRecord::from_bytes(&vault.open(Table::SenderKeys, &k, &sealed)?)?;
                for state in &rec.states {
                    match ReceivedKey::from_state_bytes(state) {
                        Ok(k) => loaded.push(k),
                        // A key kept before the signing-key rule of PROTOCOL.md §16.3 refused
                        // small-order and non-canonical keys: it is dropped (its messages then
                        // fail as `unknown_sender_key`), not a reason to stop every delivery.
                        Err(crate::sender_key::SenderKeyError::Malformed("signing key")) => {
                            tracing::warn!(
                                "dropped a stored sender key the signing-key rule refuses"
                            );
                        }
                        Err(e) => return Err(ClientError::CorruptStore(e.to_string())),
                    }
                }
            }
            e.insert(loaded);
        }
        Ok(self.received_keys.entry(key).or_default())
    }
}

/// What a transaction read or wrote of messages and conversations. A transaction that starts
/// while the previous one is still committing takes these over, so it reads its predecessor's
/// writes even before they reach the store.
pub(crate) struct Overlays {
    messages: Map<Vec<u8>, Option<(Vec<u8>, MessageRecord)>>,
    conversations: Map<Vec<u8>, Option<ConversationRecord>>,
}

impl Default for Overlays {
    fn default() -> Self {
        Self { messages: map(), conversations: map() }
    }
}

/// One atomic change to the store, with its events.
pub(crate) struct Tx<'a> {
    pub store: &'a dyn Store,
    pub vault: &'a Vault,
    pub batch: Batch,
    pub events: Vec<Event>,
    messages: Map<Vec<u8>, Option<(Vec<u8>, MessageRecord)>>,
    conversations: Map<Vec<u8>, Option<ConversationRecord>>,
    /// Ids of messages to write at commit, and whether each is new (needs its id row).
    dirty_messages: Map<Vec<u8>, bool>,
    /// Peers whose conversation summary changed.
    dirty_conversations: Vec<Vec<u8>>,
    /// Keys of this transaction's new messages, in the order they were added.
    new_keys: Vec<Vec<u8>>,
    /// Search postings of this transaction's new messages: token → indexes into `new_keys`.
    postings: Map<String, Vec<u32>>,
    /// Blinded message ids computed by lookups, for the id rows of the messages then added
    /// (each blinding is an HMAC; a catch-up would otherwise compute every one twice).
    id_keys: Map<Vec<u8>, [u8; BLIND_LEN]>,
    /// Blinded conversation prefixes, by peer.
    prefixes: Map<Vec<u8>, [u8; BLIND_LEN]>,
    /// Groups changed in memory, to write with [`Tx::put_touched_groups`].
    touched_groups: Vec<crate::group::Id>,
    /// Received sender keys changed in memory, likewise.
    touched_keys: Vec<(crate::group::Id, AccountId, u32)>,
}

impl<'a> Tx<'a> {
    pub fn new(store: &'a dyn Store, vault: &'a Vault) -> Self {
        Self::continuing(store, vault, Overlays::default())
    }

    /// A transaction that sees `overlays` (a predecessor's reads and writes) over the store.
    pub fn continuing(store: &'a dyn Store, vault: &'a Vault, overlays: Overlays) -> Self {
        Self {
            store,
            vault,
            batch: Batch::new(),
            events: Vec::new(),
            messages: overlays.messages,
            conversations: overlays.conversations,
            dirty_messages: map(),
            dirty_conversations: Vec::new(),
            new_keys: Vec::new(),
            postings: map(),
            id_keys: map(),
            prefixes: map(),
            touched_groups: Vec::new(),
            touched_keys: Vec::new(),
        }
    }

    /// Seals and queues a put.
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.put_owned(table, key.to_vec(), value);
    }

    /// [`Tx::put`] for a key the caller already owns.
    fn put_owned(&mut self, table: Table, key: Vec<u8>, value: &[u8]) {
        let sealed = self.vault.seal(table, &key, value);
        self.batch.put(table, key, sealed);
    }

    /// Writes the account record, with the secrets filled in from the key types for the
    /// moment it takes to seal it (the copies are wiped on drop).
    pub fn put_account(&mut self, core: &Core) {
        let mut record = core.account.clone();
        record.account_seed =
            core.account_key.as_ref().map(|k| k.seed().to_vec()).unwrap_or_default();
        record.identity = core.identity.to_state_bytes().to_vec();
        self.put(Table::Meta, meta::ACCOUNT, &Zeroizing::new(record.to_bytes()));
    }

    pub fn put_prekeys(&mut self, core: &Core) {
        self.put(Table::Meta, meta::PREKEYS, &core.prekeys.to_state_bytes());
    }

    pub fn put_own_list(&mut self, list: &DeviceList) {
        self.put(Table::Meta, meta::OWN_DEVICES, list.encoded());
    }

    pub fn put_contact(&mut self, c: &ContactRecord) {
        let k = keys::account_prefix(self.vault, &c.account_id);
        self.put(Table::Contacts, &k, &c.to_bytes());
    }

    /// Persists the cached sessions of one device.
    pub fn put_sessions(&mut self, core: &Core, account: &AccountId, device: u32) {
        let k = keys::session(self.vault, account, device);
        match core.sessions.get(&(*account, device)) {
            Some(list) if !list.is_empty() => {
                let rec = SessionRecord {
                    version: crate::records::RECORD_VERSION,
                    states: list.iter().map(|s| s.to_bytes().to_vec()).collect(),
                };
                self.put(Table::Sessions, &k, &rec.to_bytes());
            }
            _ => self.batch.delete(Table::Sessions, k),
        }
    }

    /// Notes a group changed in memory (written by [`Tx::put_touched_groups`]).
    pub fn touch_group(&mut self, id: crate::group::Id) {
        if !self.touched_groups.contains(&id) {
            self.touched_groups.push(id);
        }
    }

    /// Notes received sender keys changed in memory.
    pub fn touch_received_keys(&mut self, key: (crate::group::Id, AccountId, u32)) {
        if !self.touched_keys.contains(&key) {
            self.touched_keys.push(key);
        }
    }

    /// Writes every group and received key touched so far (once each, however often touched).
    pub fn put_touched_groups(&mut self, core: &Core) {
        for id in std::mem::take(&mut self.touched_groups) {
            self.put_group(core, &id);
        }
        for key in std::mem::take(&mut self.touched_keys) {
            self.put_received_keys(core, key);
        }
    }

    /// Writes a group as cached.
    pub fn put_group(&mut self, core: &Core, id: &crate::group::Id) {
        if let Some(g) = core.groups.get(id) {
            let k = keys::group(self.vault, id);
            self.put(Table::Groups, &k, &Zeroizing::new(g.to_record().to_bytes()));
        }
    }

    /// Writes the cached sender keys received from one device for one group.
    pub fn put_received_keys(&mut self, core: &Core, key: (crate::group::Id, AccountId, u32)) {
        let (group, account, device) = key;
        let k = keys::received_keys(self.vault, &group, &account, device);
        match core.received_keys.get(&key) {
            Some(list) if !list.is_empty() => {
                let rec = ReceivedKeysRecord {
                    version: crate::records::RECORD_VERSION,
                    states: list.iter().map(|s| s.to_state_bytes().to_vec()).collect(),
                };
                self.put(Table::SenderKeys, &k, &Zeroizing::new(rec.to_bytes()));
            }
            _ => self.batch.delete(Table::SenderKeys, k),
        }
    }

    /// Deletes a message from history (a group change that lost a fork leaves the timeline).
    pub async fn delete_message(&mut self, id: &[u8]) -> Result<(), ClientError> {
        if let Some((key, _)) = self.message(id).await? {
            self.batch.delete(Table::Messages, key);
            self.batch.delete(Table::MessageIds, keys::message_id(self.vault, id).to_vec());
            self.dirty_messages.remove(id);
            self.messages.insert(id.to_vec(), None);
        }
        Ok(())
    }

    /// A message by id (this transaction's writes included).
    pub async fn message(
        &mut self,
        id: &[u8],
    ) -> Result<Option<(Vec<u8>, MessageRecord)>, ClientError> {
        if let Some(m) = self.messages.get(id) {
            return Ok(m.clone());
        }
        let idk = keys::message_id(self.vault, id);
        let found = match self.store.get(Table::MessageIds, &idk).await? {
            None => {
                self.id_keys.insert(id.to_vec(), idk);
                None
            }
            Some(row) => {
                let mkey = id_row::decode(self.vault, &idk, id, &row)?;
                match self.store.get(Table::Messages, &mkey).await? {
                    None => None,
                    Some(sealed) => {
                        let plain = self.vault.open(Table::Messages, &mkey, &sealed)?;
                        Some((mkey, MessageRecord::from_bytes(&plain)?))
                    }
                }
            }
        };
        self.messages.insert(id.to_vec(), found.clone());
        Ok(found)
    }

    /// Loads several messages by id into the overlay with two batched reads, so a batch of
    /// deliveries checks for duplicates without one store round trip per message.
    pub async fn prefetch_messages(&mut self, ids: &[Vec<u8>]) -> Result<(), ClientError> {
        let ids: Vec<&Vec<u8>> = ids.iter().filter(|id| !self.messages.contains_key(*id)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.messages.reserve(ids.len());
        self.dirty_messages.reserve(ids.len());
        let blinded: Vec<[u8; BLIND_LEN]> =
            ids.iter().map(|id| keys::message_id(self.vault, id)).collect();
        let found = self
            .store
            .get_many(Table::MessageIds, blinded.iter().map(|b| b.to_vec()).collect())
            .await?;
        let mut wanted = Vec::new();
        for ((id, idk), row) in ids.iter().zip(&blinded).zip(found) {
            match row {
                None => {
                    self.messages.insert((*id).clone(), None);
                    self.id_keys.insert((*id).clone(), *idk);
                }
                Some(row) => {
                    wanted.push(((*id).clone(), id_row::decode(self.vault, idk, id, &row)?));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let values = self
            .store
            .get_many(Table::Messages, wanted.iter().map(|(_, k)| k.clone()).collect())
            .await?;
        for ((id, mkey), sealed) in wanted.into_iter().zip(values) {
            let found = match sealed {
                None => None,
                Some(sealed) => {
                    let plain = self.vault.open(Table::Messages, &mkey, &sealed)?;
                    Some((mkey, MessageRecord::from_bytes(&plain)?))
                }
            };
            self.messages.insert(id, found);
        }
        Ok(())
    }

    /// The key of a message in `conversation` ([`keys::message`]), blinding each conversation
    /// once per transaction.
    pub fn message_key(&mut self, conversation: &[u8], clock: u64, id: &[u8]) -> Vec<u8> {
        let prefix = match self.prefixes.get(conversation) {
            Some(p) => *p,
            None => {
                let p = keys::conversation_prefix(self.vault, conversation);
                self.prefixes.insert(conversation.to_vec(), p);
                p
            }
        };
        keys::message_in(&prefix, clock, id)
    }

    /// Writes a message (new or updated) at commit; new messages are indexed for search.
    /// Writes are deferred so that a message or conversation touched many times in one batch
    /// (a catch-up of hundreds of messages) is sealed and written once.
    pub fn put_message(&mut self, key: Vec<u8>, m: MessageRecord, new: bool) {
        if new {
            // Indexes, not key copies: a message has a dozen tokens, most already present.
            let index = u32::try_from(self.new_keys.len()).unwrap_or(u32::MAX);
            self.new_keys.push(key.clone());
            let postings = &mut self.postings;
            crate::search::for_each_token(&m.body, |token| match postings.get_mut(token) {
                Some(list) => list.push(index),
                None => {
                    postings.insert(token.to_owned(), vec![index]);
                }
            });
        }
        *self.dirty_messages.entry(m.id.clone()).or_default() |= new;
        self.messages.insert(m.id.clone(), Some((key, m)));
    }

    /// Moves a stored message to `status`, with its `StatusChanged` event.
    pub fn set_status(
        &mut self,
        key: Vec<u8>,
        mut m: MessageRecord,
        status: crate::records::Status,
    ) {
        m.status = status as i32;
        self.events.push(Event::StatusChanged {
            conversation: super::types::to_hex(&m.conversation),
            message_id: super::types::to_hex(&m.id),
            status: super::types::MessageStatus::from_record(m.status),
        });
        self.put_message(key, m, false);
    }

    /// A conversation summary (this transaction's writes included).
    pub async fn conversation(
        &mut self,
        peer: &[u8],
    ) -> Result<Option<ConversationRecord>, ClientError> {
        if let Some(c) = self.conversations.get(peer) {
            return Ok(c.clone());
        }
        let k = keys::account_prefix(self.vault, peer);
        let found = match self.store.get(Table::Conversations, &k).await? {
            None => None,
            Some(sealed) => Some(ConversationRecord::from_bytes(&self.vault.open(
                Table::Conversations,
                &k,
                &sealed,
            )?)?),
        };
        self.conversations.insert(peer.to_vec(), found.clone());
        Ok(found)
    }

    /// A conversation summary to change in place (created empty if new); written at commit.
    pub async fn conversation_mut(
        &mut self,
        peer: &[u8],
    ) -> Result<&mut ConversationRecord, ClientError> {
        if !self.conversations.contains_key(peer) {
            self.conversation(peer).await?;
        }
        if !self.dirty_conversations.iter().any(|p| p == peer) {
            self.dirty_conversations.push(peer.to_vec());
        }
        let slot = self.conversations.entry(peer.to_vec()).or_default();
        Ok(slot.get_or_insert_with(|| ConversationRecord {
            version: crate::records::RECORD_VERSION,
            peer: peer.to_vec(),
            ..Default::default()
        }))
    }

    /// Writes a conversation summary at commit.
    pub fn put_conversation(&mut self, c: ConversationRecord) {
        if !self.dirty_conversations.contains(&c.peer) {
            self.dirty_conversations.push(c.peer.clone());
        }
        self.conversations.insert(c.peer.clone(), Some(c));
    }

    /// Commits; on success returns the events to emit.
    pub async fn commit(self) -> Result<Vec<Event>, ClientError> {
        let store = self.store;
        let (batch, events, _) = self.finish();
        store.commit(batch).await?;
        Ok(events)
    }

    /// Seals everything into the batch for the caller to commit, with the events to emit once
    /// it is committed and the overlays a successor transaction continues from.
    pub fn finish(mut self) -> (Batch, Vec<Event>, Overlays) {
        debug_assert!(
            self.touched_groups.is_empty() && self.touched_keys.is_empty(),
            "group state changed in memory but not written"
        );
        self.flush_overlays();
        let overlays = Overlays { messages: self.messages, conversations: self.conversations };
        (self.batch, self.events, overlays)
    }

    /// Seals the deferred message, conversation and search writes into the batch, all in one
    /// [`Vault::seal_all`].
    fn flush_overlays(&mut self) {
        let mut plain = Vec::with_capacity(self.dirty_messages.len() + self.postings.len() + 1);
        for (id, new) in std::mem::take(&mut self.dirty_messages) {
            let Some(Some((key, m))) = self.messages.get(&id) else { continue };
            if new {
                let idk = match self.id_keys.remove(&id) {
                    Some(idk) => idk,
                    None => keys::message_id(self.vault, &id),
                };
                self.batch.put(Table::MessageIds, idk, id_row::encode(key));
            }
            plain.push((Table::Messages, key.clone(), m.to_bytes()));
        }
        for peer in std::mem::take(&mut self.dirty_conversations) {
            let Some(Some(c)) = self.conversations.get(&peer) else { continue };
            let key = keys::account_prefix(self.vault, &peer).to_vec();
            plain.push((Table::Conversations, key, c.to_bytes()));
        }
        // One postings row per token per transaction, keyed by its first message key (new
        // exactly once, so the row key is unique): a batch of n messages writes about as many
        // rows as it has distinct words, not one per word occurrence.
        let new_keys = std::mem::take(&mut self.new_keys);
        let key_of = |i: &u32| new_keys.get(*i as usize).map(Vec::as_slice);
        for (token, indexes) in std::mem::take(&mut self.postings) {
            let Some(first) = indexes.first().and_then(key_of) else { continue };
            let k = keys::search(self.vault, &token, first);
            let value = PostingsRecord::encode_keys(indexes.iter().filter_map(key_of));
            plain.push((Table::SearchIndex, k, value));
        }
        for (table, key, sealed) in self.vault.seal_all(plain) {
            self.batch.put(table, key, sealed);
        }
    }
}

pub(crate) async fn load_sealed<R: Record>(
    store: &dyn Store,
    vault: &Vault,
    table: Table,
    key: &[u8],
) -> Result<Option<R>, ClientError> {
    match store.get(table, key).await? {
        None => Ok(None),
        Some(sealed) => Ok(Some(R::from_bytes(&vault.open(table, key, &sealed)?)?)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use hush_protocol::DeviceEntry;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::records::{RECORD_VERSION, SessionRecord};
    use crate::store::MemoryStore;
    use crate::vault::StoreKey;

    /// Whether `shown` contains any 8 consecutive bytes of `secret`, in the forms `Debug` and
    /// logs print bytes: a decimal list (`[1, 2, …]`), or hex.
    fn shows_any_of(shown: &str, secret: &[u8]) -> bool {
        let lower = shown.to_lowercase();
        secret.windows(8).any(|w| {
            let decimal = w.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
            shown.contains(&decimal) || lower.contains(&hex::encode(w))
        })
    }

    /// Formats every record that holds a secret, and the client state loaded from a store, and
    /// finds none of the secret bytes in the output.
    #[tokio::test]
    async fn no_secret_reaches_debug_output() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let seed = [0x5a_u8; 32];
        let account_key = AccountKeyPair::from_seed(&seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        let identity_state = identity.to_state_bytes();
        let mut prekeys = DevicePrekeys::new();
        prekeys.generate_signed_prekey(&mut rng, &identity, 1);
        prekeys.generate_one_time_prekeys(&mut rng, 4);
        let prekey_state = prekeys.to_state_bytes();

        // A session state, with its root and chain keys.
        let bob = IdentityKeyPair::generate(&mut rng);
        let mut bob_prekeys = DevicePrekeys::new();
        bob_prekeys.generate_signed_prekey(&mut rng, &bob, 1);
        bob_prekeys.generate_kem_prekeys(
            &mut rng,
            &bob,
            hush_prekeys::KemPreKeyKind::LastResort,
            1,
        );
        let bundle = bob_prekeys.bundle(&bob, false).unwrap().verify().unwrap();
        let mut session = Session::initiate(&mut rng, &identity, &bundle).unwrap();
        session.encrypt(&mut rng, b"hello").unwrap();
        let session_state = session.to_bytes();
        let sessions =
            SessionRecord { version: RECORD_VERSION, states: vec![session_state.to_vec()] };

        let account = AccountRecord {
            version: RECORD_VERSION,
            account_id: account_key.public().as_bytes().to_vec(),
            account_seed: seed.to_vec(),
            device_id: 1,
            registration_id: 7,
            identity: identity_state.to_vec(),
            ..Default::default()
        };
        let list = DeviceList::sign(
            &account_key,
            1,
            vec![DeviceEntry {
                device_id: 1,
                registration_id: 7,
                identity: identity.public().clone(),
            }],
        )
        .unwrap();
        let contact = ContactRecord {
            version: RECORD_VERSION,
            account_id: vec![3; 32],
            name: "Carol".into(),
            ..Default::default()
        };

        for (what, shown) in [
            ("AccountRecord", format!("{account:?}")),
            ("SessionRecord", format!("{sessions:?}")),
            ("AccountKeyPair", format!("{account_key:?}")),
            ("IdentityKeyPair", format!("{identity:?}")),
            ("DevicePrekeys", format!("{prekeys:?}")),
        ] {
            for (name, secret) in [
                ("account seed", &seed[..]),
                ("identity", &identity_state[1..]),
                ("session state", &session_state[..]),
                ("prekey state", &prekey_state[..]),
            ] {
                assert!(!shows_any_of(&shown, secret), "{what} shows the {name}: {shown}");
            }
        }

        // The client state, loaded the way `Client::open` loads it.
        let store = MemoryStore::new();
        let vault = Vault::new(&StoreKey::from_bytes([9; 32]));
        let mut tx = Tx::new(&store, &vault);
        tx.put(Table::Meta, meta::ACCOUNT, &account.to_bytes());
        tx.put(Table::Meta, meta::PREKEYS, &prekey_state);
        tx.put_own_list(&list);
        tx.put_contact(&contact);
        tx.commit().await.unwrap();
        let core = Core::load(&store, &vault).await.unwrap();
        assert!(core.account.account_seed.is_empty() && core.account.identity.is_empty());
        let shown = format!("{core:?}");
        assert!(shown.contains("<redacted>") || shown.contains("AccountKeyPair"), "{shown}");
        // (The prekey state also holds public keys, which the device list shows in full, so
        // its bytes are checked against `DevicePrekeys`' own output above, not here.)
        for (name, secret) in [("account seed", &seed[..]), ("identity", &identity_state[1..])] {
            assert!(!shows_any_of(&shown, secret), "the client state shows the {name}: {shown}");
        }

        // Writing the account back puts the secrets into the stored record, and only there.
        let mut tx = Tx::new(&store, &vault);
        tx.put_account(&core);
        tx.commit().await.unwrap();
        let again = Core::load(&store, &vault).await.unwrap();
        assert_eq!(again.account_key.map(|k| *k.seed()), Some(seed));
        assert_eq!(again.identity.to_state_bytes(), identity_state);
    }
}
