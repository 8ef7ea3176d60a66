//! The store as the client's tasks see it: closed for writing once the client shuts down.
//!
//! [`Client::shutdown`](crate::Client::shutdown) closes the gate and waits for the commits in
//! flight to finish; every later commit fails. So once it returns, nothing the client still
//! had in hand (a delivery being applied, an outbox entry being sent) reaches the store, and a
//! new client opened on the same store (an app restarting, a test reopening a memory store)
//! is the only writer. A task whose commit is refused stops as it would on any storage error:
//! the relay keeps unacked deliveries, and the outbox entry is still there.

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::store::{Batch, Scan, Store, StoreError, Table};

/// A store whose commits stop at [`Gate::close`].
pub(crate) struct Gate<S: ?Sized> {
    /// `true` while open; commits hold a read guard for their duration.
    open: RwLock<bool>,
    store: std::sync::Arc<S>,
}

impl<S: Store + ?Sized> Gate<S> {
    pub(crate) fn new(store: std::sync::Arc<S>) -> Self {
        Self { open: RwLock::new(true), store }
    }

    /// Refuses every later commit, once the commits in flight have finished.
    pub(crate) async fn close(&self) {
        *self.open.write().await = false;
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<S: Store + ?Sized> Store for Gate<S> {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(table, key).await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.store.get_many(table, keys).await
    }

    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.store.scan(scan).await
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let open = self.open.read().await;
        if !*open {
            return Err(StoreError::Backend("the client has shut down".into()));
        }
        self.store.commit(batch).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn commits_stop_at_close_and_reads_go_on() {
        let gate = Gate::new(std::sync::Arc::new(MemoryStore::new()));
        let mut b = Batch::new();
        b.put(Table::Meta, b"k".to_vec(), b"v".to_vec());
        gate.commit(b.clone()).await.unwrap();
        gate.close().await;
        assert!(gate.commit(b).await.is_err());
        assert_eq!(gate.get(Table::Meta, b"k").await.unwrap(), Some(b"v".to_vec()));
    }
}
