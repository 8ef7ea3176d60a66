//! An in-memory [`Store`]: for tests and for clients that must leave no trace on disk.
//! Commits are atomic (one lock) but, by design, not durable.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Batch, Op, Scan, Store, StoreError, Table};

type Tables = HashMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A store held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.tables.lock().map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

/// Range bounds of a scan over byte keys (an empty end is unbounded).
pub(crate) fn bounds(scan: &Scan) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let end =
        if scan.end.is_empty() { Bound::Unbounded } else { Bound::Excluded(scan.end.clone()) };
    (Bound::Included(scan.start.clone()), end)
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl Store for MemoryStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(&table).and_then(|t| t.get(key).cloned()))
    }

    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        if !scan.end.is_empty() && scan.end <= scan.start {
            return Ok(Vec::new());
        }
        let tables = self.lock()?;
        let Some(table) = tables.get(&scan.table) else { return Ok(Vec::new()) };
        let limit = if scan.limit == 0 { usize::MAX } else { scan.limit };
        let range = table.range(bounds(&scan));
        let out = if scan.reverse {
            range.rev().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            range.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Ok(out)
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        for op in batch.into_ops() {
            match op {
                Op::Put(t, k, v) => {
                    tables.entry(t).or_default().insert(k, v);
                }
                Op::Delete(t, k) => {
                    if let Some(table) = tables.get_mut(&t) {
                        table.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }
}
