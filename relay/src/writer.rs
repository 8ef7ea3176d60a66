//! The single database writer, with group commit.
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
//! answered with `internal`: nothing is half-written.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use redb::WriteTransaction;
use tokio::sync::{mpsc, oneshot};

use crate::error::{RelayError, StoreError};
use crate::mailbox::{self, Quotas, SendOutcome};
use crate::metrics::Metrics;
use crate::store::Store;

/// The most jobs folded into one transaction.
pub const MAX_BATCH: usize = 4096;

trait Job: std::marker::Send {
    /// Runs the job inside the batch transaction; returns true on a storage error (which aborts
    /// the batch).
    fn apply(&mut self, txn: &WriteTransaction) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: bool);
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
    fn apply(&mut self, txn: &WriteTransaction) -> bool {
        let Some(f) = self.f.take() else { return false };
        let r = f(txn);
        let fatal = matches!(r, Err(RelayError::Store(_)));
        self.result = Some(r);
        fatal
    }

    fn finish(self: Box<Self>, committed: bool) {
        let _ = self.reply.send(settle(committed, self.result));
    }
}

/// A job's answer once its batch's fate is known: its own result if the batch committed; its
/// own refusal either way (a job that failed its checks wrote nothing); otherwise `internal`.
fn settle<R>(committed: bool, result: Option<Result<R, RelayError>>) -> Result<R, RelayError> {
    match (committed, result) {
        (_, Some(Err(e))) if !matches!(e, RelayError::Store(_)) => Err(e),
        (true, Some(r)) => r,
        _ => Err(RelayError::Store(StoreError::Corrupt("batch aborted"))),
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
}

/// Handle to the writer thread. Cloning is cheap; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let handle = std::thread::Builder::new()
            .name("hush-store-writer".into())
            .spawn(move || run(store, rx, metrics))
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

    /// Stores a send in the next batch; returns the devices whose mailboxes grew, once durable.
    pub async fn send(&self, send: mailbox::Send, quotas: Quotas, now_ms: u64) -> SendOutcome {
        let (reply, rx) = oneshot::channel();
        let job = SendJob { send, quotas, now_ms, reply };
        self.tx.send(Queued::Send(job)).await.map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

fn run(store: Store, mut rx: mpsc::Receiver<Queued>, metrics: Arc<Metrics>) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::new();
    let mut sends: Vec<SendJob> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut queued = Some(first);
        let mut n = 0;
        while let Some(q) = queued.take() {
            match q {
                Queued::Job(j) => jobs.push(j),
                Queued::Send(s) => sends.push(s),
            }
            n += 1;
            if n < MAX_BATCH {
                queued = rx.try_recv().ok();
            }
        }
        let started = Instant::now();
        let (committed, outcomes) = commit_batch(&store, &mut jobs, &sends);
        metrics.observe_commit(n, started.elapsed(), committed);
        for job in jobs.drain(..) {
            job.finish(committed);
        }
        let mut outcomes = outcomes.into_iter();
        for job in sends.drain(..) {
            let _ = job.reply.send(settle(committed, outcomes.next()));
        }
    }
    tracing::debug!("store writer stopped");
}

fn commit_batch(
    store: &Store,
    jobs: &mut [Box<dyn Job>],
    sends: &[SendJob],
) -> (bool, Vec<SendOutcome>) {
    let txn = match store.db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin write transaction");
            return (false, Vec::new());
        }
    };
    let mut fatal = false;
    for job in jobs.iter_mut() {
        if fatal {
            break;
        }
        fatal = job.apply(&txn);
    }
    let mut outcomes = Vec::new();
    if !fatal && !sends.is_empty() {
        // Quotas are the relay's configuration, the same for every send of a batch.
        let quotas = sends.first().map(|s| s.quotas);
        let batch: Vec<(&mailbox::Send, u64)> = sends.iter().map(|s| (&s.send, s.now_ms)).collect();
        match quotas.map(|q| mailbox::store_batch(&txn, &batch, q)) {
            Some(Ok(r)) => outcomes = r,
            Some(Err(e)) => {
                tracing::error!(error = %e, "storage error while storing sends");
                fatal = true;
            }
            None => {}
        }
    }
    if fatal {
        tracing::error!("storage error inside a batch; aborting the batch");
        if let Err(e) = txn.abort() {
            tracing::error!(error = %e, "abort failed");
        }
        return (false, Vec::new());
    }
    match txn.commit() {
        Ok(()) => (true, outcomes),
        Err(e) => {
            tracing::error!(error = %e, "commit failed; batch not written");
            (false, Vec::new())
        }
    }
}
