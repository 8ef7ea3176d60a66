//! A client store that "crashes": after a chosen number of commits, every further commit
//! fails and nothing of it is kept, as if the process had died at that point. The data
//! committed before the crash is what a restarted client finds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use hush_core::store::{Batch, MemoryStore, Scan, Store, StoreError, Table};
use tokio::sync::Notify;

/// A [`Store`] over a shared [`MemoryStore`] that dies after a number of commits.
pub struct CrashStore {
    disk: Arc<MemoryStore>,
    /// Commits still allowed; `u64::MAX` for no limit.
    left: AtomicU64,
    dead: AtomicBool,
    died: Arc<Notify>,
}

impl CrashStore {
    /// A store over `disk` that never crashes.
    pub fn new(disk: Arc<MemoryStore>) -> Self {
        Self::crashing_after(disk, u64::MAX)
    }

    /// A store over `disk` whose commit number `commits + 1` (and every later one) fails.
    pub fn crashing_after(disk: Arc<MemoryStore>, commits: u64) -> Self {
        Self {
            disk,
            left: AtomicU64::new(commits),
            dead: AtomicBool::new(false),
            died: Arc::new(Notify::new()),
        }
    }

    /// Whether this store crashes at some point (or has).
    pub fn may_crash(&self) -> bool {
        self.is_dead() || self.left.load(Ordering::SeqCst) != u64::MAX
    }

    /// Whether the crash has happened.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Resolves once the crash has happened.
    pub async fn died(&self) {
        loop {
            let notified = self.died.notified();
            if self.is_dead() {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Store for CrashStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.disk.get(table, key).await
    }

    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.disk.scan(scan).await
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let allowed = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                u64::MAX => Some(n),
                0 => None,
                n => Some(n - 1),
            })
            .is_ok();
        if !allowed {
            if !self.dead.swap(true, Ordering::SeqCst) {
                self.died.notify_waiters();
            }
            return Err(StoreError::Backend("the process crashed (injected)".into()));
        }
        self.disk.commit(batch).await
    }
}
