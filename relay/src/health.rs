//! Whether the relay can write, and why not: the storage health that `/readyz`, the writer and
//! the send path consult.
//!
//! Two conditions stop writes, each with its own code:
//! - **failing** (`storage_unavailable`): a commit hit an I/O error (a full or read-only file
//!   system, a failing disk). Every write is refused at once, without touching the database,
//!   except one probe at most every second ([`PROBE_INTERVAL`]) once the disk has room again;
//!   the probe that commits clears the condition;
//! - **full** (`storage_full`): the data volume's free space is below `min_free_disk_bytes`
//!   (checked every second by [`monitor`]). New envelopes are refused, so the floor is never
//!   reached by the relay's own growth; acks, expiry, keys and registrations still go
//!   through, and they free space or take little.
//!
//! Reads go on in both conditions (the writer reopens the database after an I/O error, which
//! is what redb needs to serve reads again).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::metrics::Metrics;

/// Least time between two probes of a failing store.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The relay's storage condition.
pub struct StorageHealth {
    state: Mutex<State>,
    min_free: u64,
    free: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// Why writes are failing, and when the last probe ran.
    failing: Option<(String, Option<Instant>)>,
}

impl StorageHealth {
    /// A healthy store, with a free-space floor of `min_free` bytes.
    pub fn new(min_free: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.storage_writable.set(1);
        Arc::new(Self {
            state: Mutex::new(State::default()),
            min_free,
            free: AtomicU64::new(u64::MAX),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Single assignments under the lock: a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the relay can't take new envelopes now, if it can't: `None` when it can.
    pub fn why_not_ready(&self) -> Option<String> {
        if let Some((why, _)) = &self.lock().failing {
            return Some(format!("storage failing: {why}"));
        }
        self.below_floor().map(|free| {
            format!("disk nearly full: {free} bytes free, the floor is {}", self.min_free)
        })
    }

    fn below_floor(&self) -> Option<u64> {
        let free = self.free.load(Ordering::Acquire);
        (free < self.min_free).then_some(free)
    }

    /// The refusal for any write while storage is failing.
    pub fn refuse_write(&self) -> Option<StoreError> {
        self.lock().failing.as_ref().map(|(why, _)| StoreError::Unavailable(why.clone()))
    }

    /// The refusal for a write that adds envelopes: failing, or below the free-space floor.
    pub fn refuse_growth(&self) -> Option<StoreError> {
        if let Some(e) = self.refuse_write() {
            return Some(e);
        }
        self.below_floor().map(|free| {
            StoreError::Full(format!(
                "{free} bytes free on the data volume, below the operator's floor of {}",
                self.min_free
            ))
        })
    }

    /// Records an I/O failure of a commit.
    pub fn failed(&self, why: &StoreError) {
        let mut s = self.lock();
        if s.failing.is_none() {
            tracing::error!(error = %why, "storage failing: refusing writes until a probe commits");
        }
        s.failing = Some((why.to_string(), Some(Instant::now())));
        self.metrics.storage_writable.set(0);
        self.metrics.storage_failures_total.inc();
    }

    /// Whether a batch may try the database while storage is failing: at most once per
    /// [`PROBE_INTERVAL`], and only with room on the disk. Counts as the probe.
    pub fn may_probe(&self) -> bool {
        let below = self.below_floor().is_some();
        let mut s = self.lock();
        let Some((_, last)) = &mut s.failing else { return true };
        if below || last.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Whether storage is failing.
    pub fn is_failing(&self) -> bool {
        self.lock().failing.is_some()
    }

    /// A commit succeeded.
    pub fn committed(&self) {
        let mut s = self.lock();
        if s.failing.take().is_some() {
            tracing::info!("storage recovered: writes accepted again");
            self.metrics.storage_writable.set(1);
        }
    }

    /// The latest free space of the data volume.
    pub fn set_free(&self, free: u64) {
        let was = self.free.swap(free, Ordering::AcqRel);
        let now_below = free < self.min_free;
        if now_below != (was < self.min_free) {
            if now_below {
                tracing::warn!(
                    free,
                    floor = self.min_free,
                    "disk nearly full: refusing new envelopes until space comes back"
                );
            } else {
                tracing::info!(free, "disk space back above the floor: envelopes accepted again");
            }
        }
        self.metrics.disk_free_bytes.set(i64::try_from(free).unwrap_or(i64::MAX));
    }
}

/// Free bytes of the volume holding `path` (for an unprivileged process).
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Checks the data volume every second, keeps the health and metrics up to date, and asks
/// the writer to probe a failing store, until `stop`.
pub async fn monitor(
    health: Arc<StorageHealth>,
    data_dir: PathBuf,
    store: crate::store::Store,
    writer: crate::writer::Writer,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (dir, db) = (data_dir.clone(), store.clone());
        let sizes = tokio::task::spawn_blocking(move || {
            (free_space(&dir), std::fs::metadata(db.path()).map(|m| m.len()), db.stored_bytes())
        })
        .await;
        if let Ok((free, file, stored)) = sizes {
            if let Ok(stored) = stored {
                metrics.stored_payload_bytes.set(i64::try_from(stored).unwrap_or(i64::MAX));
            }
            match free {
                Ok(free) => health.set_free(free),
                Err(e) => tracing::debug!(error = %e, "cannot read the data volume's free space"),
            }
            if let Ok(len) = file {
                metrics.database_bytes.set(i64::try_from(len).unwrap_or(i64::MAX));
            }
        }
        if health.is_failing() {
            writer.probe().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn conditions_and_their_refusals() {
        let h = StorageHealth::new(1000, Arc::new(Metrics::new()));
        assert!(h.why_not_ready().is_none() && h.refuse_growth().is_none());
        h.set_free(999);
        assert!(matches!(h.refuse_growth(), Some(StoreError::Full(_))));
        assert!(h.refuse_write().is_none(), "below the floor, other writes go on");
        assert!(h.why_not_ready().unwrap().contains("nearly full"));
        h.set_free(5000);
        assert!(h.refuse_growth().is_none());
        h.failed(&StoreError::Db(redb::Error::PreviousIo));
        assert!(matches!(h.refuse_write(), Some(StoreError::Unavailable(_))));
        assert!(!h.may_probe(), "a probe waits a second after the failure");
        h.state.lock().unwrap().failing.as_mut().unwrap().1 = None;
        h.set_free(10);
        assert!(!h.may_probe(), "no probe while the disk is below the floor");
        h.set_free(5000);
        assert!(h.may_probe());
        assert!(!h.may_probe(), "one probe per interval");
        h.committed();
        assert!(h.why_not_ready().is_none() && h.refuse_write().is_none());
    }
}
