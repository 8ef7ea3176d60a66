//! The native [`Store`]: one redb file, one redb table per [`Table`].
//!
//! redb commits are durable (fsync) by default; every call runs on tokio's blocking pool so
//! that disk waits never stall the async runtime. redb allows one writer at a time; the client
//! serialises its own commits, so writers never queue for long.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};

use super::memory::bounds;
use super::{Batch, Op, Scan, Store, StoreError, Table};

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A store in a redb file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            other => backend(other),
        })?;
        let tx = db.begin_write().map_err(backend)?;
        for table in Table::ALL {
            tx.open_table(definition(table)).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// An in-memory redb database (for unit tests of the redb code path).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        for table in Table::ALL {
            tx.open_table(definition(table)).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(definition(table)).map_err(backend)?;
            Ok(t.get(key.as_slice()).map_err(backend)?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(definition(table)).map_err(backend)?;
            keys.iter()
                .map(|k| Ok(t.get(k.as_slice()).map_err(backend)?.map(|v| v.value().to_vec())))
                .collect()
        })
        .await
    }

    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        if !scan.end.is_empty() && scan.end <= scan.start {
            return Ok(Vec::new());
        }
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(definition(scan.table)).map_err(backend)?;
            let (lo, hi) = bounds(&scan);
            let lo = as_slice_bound(&lo);
            let hi = as_slice_bound(&hi);
            let range = t.range::<&[u8]>((lo, hi)).map_err(backend)?;
            let limit = if scan.limit == 0 { usize::MAX } else { scan.limit };
            let mut out = Vec::new();
            let mut push = |item: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                    item.map_err(backend)?;
                out.push((k.value().to_vec(), v.value().to_vec()));
                Ok(out.len() < limit)
            };
            if scan.reverse {
                for item in range.rev() {
                    if !push(item)? {
                        break;
                    }
                }
            } else {
                for item in range {
                    if !push(item)? {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            {
                let mut tables = std::collections::HashMap::new();
                for op in batch.ops() {
                    let table = match op {
                        Op::Put(t, ..) | Op::Delete(t, _) => *t,
                    };
                    if let std::collections::hash_map::Entry::Vacant(e) = tables.entry(table) {
                        e.insert(tx.open_table(definition(table)).map_err(backend)?);
                    }
                }
                for op in batch.ops() {
                    match op {
                        Op::Put(t, k, v) => {
                            if let Some(table) = tables.get_mut(t) {
                                table.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
                            }
                        }
                        Op::Delete(t, k) => {
                            if let Some(table) = tables.get_mut(t) {
                                table.remove(k.as_slice()).map_err(backend)?;
                            }
                        }
                    }
                }
            }
            // Dropping `tx` without commit aborts it, so an error above writes nothing.
            tx.commit().map_err(backend)
        })
        .await
    }
}

fn as_slice_bound(b: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<&[u8]> {
    match b {
        std::ops::Bound::Included(v) => std::ops::Bound::Included(v.as_slice()),
        std::ops::Bound::Excluded(v) => std::ops::Bound::Excluded(v.as_slice()),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}
