//! The single database writer, with group commit and recovery from storage failures.
//!
//! redb allows one write transaction at a time and each durable commit costs an fsync. The
//! writer thread takes every job queued while the previous commit was running, applies them all
//! in one write transaction and commits once, then answers each job. So under load one fsync
//! covers many sends, and an answer is only ever sent after the commit that made it durable.
//!
//! Sends, the hot path, are applied together through [`mailbox::store_batch`], which opens
//! each table once per batch instead of once per send; every other job runs on its own against
//! the transaction, before the sends of its batch.
//!
//! Jobs check before they write (see [`crate::mailbox`]), so a rejected job leaves nothing
//! behind. If any job hits a storage error the whole batch is aborted and every job in it is
//! answered with the batch's failure: nothing is half-written.
//!
//! An I/O error (disk full, read-only or failing file system) leaves redb refusing every
//! transaction until the database is opened again. The writer then marks storage failing
//! ([`crate::health`]: `/readyz` turns 503 and writes are refused `storage_unavailable`
//! without touching the disk), reopens the database at once so reads go on, and lets one
//! batch through as a probe at most every second once the disk has room; the first probe that
//! commits ends the failure. The relay recovers by itself when space comes back.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use redb::WriteTransaction;
use tokio::sync::{mpsc, oneshot};

use crate::error::{RelayError, StoreError};
use crate::health::StorageHealth;
use crate::mailbox::{self, Quotas, SendOutcome};
use crate::metrics::Metrics;
use crate::store::Store;

/// The most jobs folded into one transaction.
pub const MAX_BATCH: usize = 4096;

/// How long a reopen waits for readers to finish with the failed database.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What became of a batch.
enum Fate {
    /// Committed durably.
    Committed,
    /// Not written; every job is answered with this (unless it refused on its own).
    Failed(StoreError),
}

impl Fate {
    /// The failure to answer a job with (a fresh copy per job).
    fn failure(&self) -> Option<RelayError> {
        match self {
            Self::Committed => None,
            Self::Failed(e) if e.is_io() => {
                Some(RelayError::Store(StoreError::Unavailable(e.to_string())))
            }
            Self::Failed(StoreError::Full(why)) => {
                Some(RelayError::Store(StoreError::Full(why.clone())))
            }
            Self::Failed(_) => Some(RelayError::Store(StoreError::Corrupt("batch aborted"))),
        }
    }
}

trait Job: std::marker::Send {
    /// Runs the job inside the batch transaction; returns its storage error (which aborts the
    /// batch), if it hit one.
    fn apply(&mut self, txn: &WriteTransaction) -> Option<StoreError>;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, fate: &Fate);
}

struct TypedJob<R, F> {
    f: Option<F>,
    result: Option<Result<R, RelayError>>,
    reply: oneshot::Sender<Result<R, RelayError>>,
}

impl<R, F> Job for TypedJob<R, F>
where
    R: std::marker::Send,
    F: FnOnce(&WriteTransaction) -> Result<R, RelayError> + std::marker::Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Option<StoreError> {
        let f = self.f.take()?;
        match f(txn) {
            Err(RelayError::Store(e)) => Some(e),
            r => {
                self.result = Some(r);
                None
            }
        }
    }

    fn finish(self: Box<Self>, fate: &Fate) {
        let _ = self.reply.send(settle(fate, self.result));
    }
}

/// A job's answer once its batch's fate is known: its own result if the batch committed; its
/// own refusal either way (a job that failed its checks wrote nothing); otherwise the batch's
/// failure (`storage_unavailable` after an I/O error, `internal` otherwise).
fn settle<R>(fate: &Fate, result: Option<Result<R, RelayError>>) -> Result<R, RelayError> {
    match (fate.failure(), result) {
        (_, Some(Err(e))) if !matches!(e, RelayError::Store(_)) => Err(e),
        (None, Some(r)) => r,
        (Some(failure), _) => Err(failure),
        (None, None) => Err(RelayError::Store(StoreError::Corrupt("job without a result"))),
    }
}

/// A send waiting for the next batch.
struct SendJob {
    send: mailbox::Send,
    quotas: Quotas,
    now_ms: u64,
    reply: oneshot::Sender<SendOutcome>,
}

enum Queued {
    Job(Box<dyn Job>),
    Send(SendJob),
    /// Try an empty commit (while storage is failing, to find out whether it recovered).
    Probe,
}

/// Handle to the writer thread. Cloning is cheap; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(
        store: Store,
        health: Arc<StorageHealth>,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let handle = std::thread::Builder::new()
            .name("hush-store-writer".into())
            .spawn(move || run(store, rx, health, metrics))
            // Spawning a thread only fails when the process is out of resources at startup.
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot start the store writer thread");
                std::process::exit(1)
            });
        (Self { tx }, handle)
    }

    /// Runs `f` in the next batch and returns its result once the batch is durably committed.
    pub async fn run<R, F>(&self, f: F) -> Result<R, RelayError>
    where
        R: std::marker::Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, RelayError> + std::marker::Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob { f: Some(f), result: None, reply });
        self.tx.send(Queued::Job(job)).await.map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Asks for an empty commit, to find out whether failing storage has recovered.
    pub async fn probe(&self) {
        let _ = self.tx.try_send(Queued::Probe);
    }

    /// Stores a send in the next batch; returns the devices whose mailboxes grew, once durable.
    pub async fn send(&self, send: mailbox::Send, quotas: Quotas, now_ms: u64) -> SendOutcome {
        let (reply, rx) = oneshot::channel();
        let job = SendJob { send, quotas, now_ms, reply };
        self.tx.send(Queued::Send(job)).await.map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

fn run(
    store: Store,
    mut rx: mpsc::Receiver<Queued>,
    health: Arc<StorageHealth>,
    metrics: Arc<Metrics>,
) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::new();
    let mut sends: Vec<SendJob> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut queued = Some(first);
        let mut n = 0;
        while let Some(q) = queued.take() {
            match q {
                Queued::Job(j) => jobs.push(j),
                Queued::Send(s) => sends.push(s),
                Queued::Probe => {}
            }
            n += 1;
            if n < MAX_BATCH {
                queued = rx.try_recv().ok();
            }
        }
        let started = Instant::now();
        let (fate, outcomes) = if health.may_probe() {
            let (fate, outcomes) = commit_batch(&store, &mut jobs, &sends);
            match &fate {
                Fate::Committed => health.committed(),
                Fate::Failed(e) if e.is_io() => {
                    health.failed(e);
                    // redb refuses everything after an I/O error until it is opened again;
                    // reopening now lets reads go on while writes wait for the next probe.
                    match store.reopen(REOPEN_WAIT) {
                        Ok(()) => tracing::info!("database reopened after an I/O error"),
                        Err(e) => tracing::error!(error = %e, "cannot reopen the database yet"),
                    }
                }
                Fate::Failed(_) => {}
            }
            metrics.observe_commit(n, started.elapsed(), matches!(fate, Fate::Committed));
            (fate, outcomes)
        } else {
            // Failing and not yet due for a probe: refused without touching the disk.
            let why = health.refuse_write().unwrap_or(StoreError::Unavailable("probe".into()));
            (Fate::Failed(why), Vec::new())
        };
        for job in jobs.drain(..) {
            job.finish(&fate);
        }
        let mut outcomes = outcomes.into_iter();
        for job in sends.drain(..) {
            let _ = job.reply.send(settle(&fate, outcomes.next()));
        }
    }
    tracing::debug!("store writer stopped");
}

fn commit_batch(
    store: &Store,
    jobs: &mut [Box<dyn Job>],
    sends: &[SendJob],
) -> (Fate, Vec<SendOutcome>) {
    match write_batch(store, jobs, sends) {
        Ok(outcomes) => (Fate::Committed, outcomes),
        Err(e) => {
            tracing::error!(error = %e, "storage error; the batch was not written");
            (Fate::Failed(e), Vec::new())
        }
    }
}

/// Applies every job and send in one write transaction and commits it; the first storage
/// error aborts the whole batch.
fn write_batch(
    store: &Store,
    jobs: &mut [Box<dyn Job>],
    sends: &[SendJob],
) -> Result<Vec<SendOutcome>, StoreError> {
    let txn = store.db()?.begin_write()?;
    for job in jobs.iter_mut() {
        if let Some(e) = job.apply(&txn) {
            let _ = txn.abort();
            return Err(e);
        }
    }
    let mut outcomes = Vec::new();
    // Quotas are the relay's configuration, the same for every send of a batch.
    if let Some(quotas) = sends.first().map(|s| s.quotas) {
        let batch: Vec<(&mailbox::Send, u64)> = sends.iter().map(|s| (&s.send, s.now_ms)).collect();
        match mailbox::store_batch(&txn, &batch, quotas) {
            Ok(r) => outcomes = r,
            Err(RelayError::Store(e)) => {
                let _ = txn.abort();
                return Err(e);
            }
            Err(e) => {
                let _ = txn.abort();
                return Err(StoreError::Unavailable(format!("unexpected refusal of a batch: {e}")));
            }
        }
    }
    txn.commit()?;
    Ok(outcomes)
}
