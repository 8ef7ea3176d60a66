//! The single database writer, with group commit.
//!
//! redb allows one write transaction at a time and each durable commit costs an fsync. The
//! writer thread takes every job queued while the previous commit was running, applies them all
//! in one write transaction and commits once, then answers each job. So under load one fsync
//! covers many sends, and an answer is only ever sent after the commit that made it durable.
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
        let r = match (committed, self.result) {
            // A job that failed its own checks wrote nothing; its error stands either way.
            (_, Some(Err(e))) if !matches!(e, RelayError::Store(_)) => Err(e),
            (true, Some(r)) => r,
            _ => Err(RelayError::Store(StoreError::Corrupt("batch aborted"))),
        };
        let _ = self.reply.send(r);
    }
}

/// Handle to the writer thread. Cloning is cheap; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
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
        self.tx.send(job).await.map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

fn run(store: Store, mut rx: mpsc::Receiver<Box<dyn Job>>, metrics: Arc<Metrics>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let committed = commit_batch(&store, &mut batch);
        metrics.observe_commit(batch.len(), started.elapsed(), committed);
        for job in batch.drain(..) {
            job.finish(committed);
        }
    }
    tracing::debug!("store writer stopped");
}

fn commit_batch(store: &Store, batch: &mut [Box<dyn Job>]) -> bool {
    let txn = match store.db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin write transaction");
            return false;
        }
    };
    let mut fatal = false;
    for job in batch.iter_mut() {
        if fatal {
            break;
        }
        fatal = job.apply(&txn);
    }
    if fatal {
        tracing::error!("storage error inside a batch; aborting the batch");
        if let Err(e) = txn.abort() {
            tracing::error!(error = %e, "abort failed");
        }
        return false;
    }
    match txn.commit() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "commit failed; batch not written");
            false
        }
    }
}
