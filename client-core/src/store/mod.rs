//! The client's storage trait: a small ordered key-value store with atomic batches.
//!
//! Everything the client persists (its account, sessions, contacts, history, outbox and search
//! index) goes through [`Store`]. Backends only see opaque keys and values: the client encrypts
//! every value (but the message-id index's, which are keys the store shows anyway) and blinds
//! every identifier in a key before it reaches them (see [`crate::vault`]). A backend
//! guarantees:
//! - [`Store::commit`] is atomic and durable: after it returns `Ok`, every put and delete of
//!   the batch survives a crash; after an error, none of them happened;
//! - [`Store::scan`] returns keys in byte order (or reverse byte order) within `[start, end)`.
//!
//! Every backend runs the same conformance suite ([`conformance`]). The native backend is
//! [`RedbStore`]; [`MemoryStore`] is for tests and ephemeral clients, and the browser backend
//! (IndexedDB) implements the same trait.

pub mod conformance;
mod memory;
#[cfg(feature = "native")]
mod redb;

#[cfg(feature = "native")]
pub use self::redb::RedbStore;
pub use memory::MemoryStore;

use async_trait::async_trait;
use thiserror::Error;

/// The tables of the client store. Each is an independent ordered key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Singletons: the store header, the account, the device's prekeys.
    Meta,
    /// Ratchet sessions, by remote (account, device).
    Sessions,
    /// Contacts and their verified device lists.
    Contacts,
    /// Conversation summaries (last message, unread count).
    Conversations,
    /// Messages, ordered per conversation by (clock, sender, device, id).
    Messages,
    /// Message id → its key in `Messages`, for duplicate detection and status updates.
    MessageIds,
    /// Outgoing work that must survive a restart, in queue order.
    Outbox,
    /// The search index: (blinded token, message key) → nothing.
    SearchIndex,
    /// Groups: their canonical change log and this device's sender key, by blinded group id.
    Groups,
    /// Sender keys received, by (blinded group, blinded account, device).
    SenderKeys,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 10] = [
        Table::Meta,
        Table::Sessions,
        Table::Contacts,
        Table::Conversations,
        Table::Messages,
        Table::MessageIds,
        Table::Outbox,
        Table::SearchIndex,
        Table::Groups,
        Table::SenderKeys,
    ];

    /// The table's stable name (backends use it as the table or object-store name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Sessions => "sessions",
            Table::Contacts => "contacts",
            Table::Conversations => "conversations",
            Table::Messages => "messages",
            Table::MessageIds => "message_ids",
            Table::Outbox => "outbox",
            Table::SearchIndex => "search_index",
            Table::Groups => "groups",
            Table::SenderKeys => "sender_keys",
        }
    }
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace a value.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove a key (absent keys are fine).
    Delete(Table, Vec<u8>),
}

/// A set of changes committed atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(table, key.into(), value.into()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(table, key.into()));
    }

    /// Whether the batch has no changes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Appends another batch's changes after this one's.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// The changes, in order (later changes to the same key win).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Takes the changes out.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

/// A key range scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The table.
    pub table: Table,
    /// First key included.
    pub start: Vec<u8>,
    /// First key excluded.
    pub end: Vec<u8>,
    /// Newest (largest) keys first.
    pub reverse: bool,
    /// At most this many entries (0 means no limit).
    pub limit: usize,
}

impl Scan {
    /// Every key starting with `prefix`, ascending.
    pub fn prefix(table: Table, prefix: &[u8]) -> Self {
        Self { table, start: prefix.to_vec(), end: prefix_end(prefix), reverse: false, limit: 0 }
    }
}

/// The smallest key greater than every key starting with `prefix` (empty: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Why a storage call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend failed (I/O, a full disk, a corrupt file). Nothing of the batch was written.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The store is locked by another process.
    #[error("the store is in use by another process")]
    Locked,
}

/// An ordered, durable key-value store (see the module docs for the guarantees).
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Store: crate::runtime::MaybeSend + crate::runtime::MaybeSync {
    /// Reads one value.
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads several values of one table (in one read transaction where the backend can).
    async fn get_many(
        &self,
        table: Table,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(table, &k).await?);
        }
        Ok(out)
    }
    /// Reads a key range (an empty `end` means no upper bound).
    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Applies a batch atomically and durably.
    async fn commit(&self, batch: Batch) -> Result<(), StoreError>;
}
