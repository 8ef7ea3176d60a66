//! The state every part of the client shares: [`Inner`] (the store, the state lock, the
//! connection and the event fan-out), the options and configuration, and the event streams.
//!
//! This module is a leaf of the client's module graph: it imports the records and state types
//! ([`super::core`], [`super::types`], [`super::error`]) and nothing that imports it back.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, watch};

use super::core::{Core, Tx};
use super::error::ClientError;
use super::types::{ConnectionState, Event};
use crate::store::Store;
use crate::transport::{Connector, Link};
use crate::vault::{StoreKey, Vault};

/// Tunables. The defaults suit phones; tests shorten the timers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// One-time prekeys (X25519) uploaded per batch.
    pub prekey_batch: u32,
    /// One-time KEM prekeys uploaded per batch (each is 1.2 KB).
    pub kem_prekey_batch: u32,
    /// Refill when the relay holds fewer one-time prekeys than this.
    pub prekey_refill_below: u32,
    /// Make a new signed prekey this often.
    pub signed_prekey_rotation: Duration,
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a call that needs the relay (adding a contact, linking) waits for a
    /// connection before it fails with what the last attempt met. A certificate the client
    /// does not trust fails it at once.
    pub relay_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            prekey_batch: 100,
            kem_prekey_batch: 20,
            prekey_refill_below: 20,
            signed_prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            relay_wait: Duration::from_secs(10),
        }
    }
}

/// What a client needs: where it stores, the key that encrypts the store, how it reaches the
/// relay.
pub struct ClientConfig {
    /// The store (native: [`RedbStore`](crate::store::RedbStore)).
    pub store: Arc<dyn Store>,
    /// The key that encrypts every stored value (keep it in the platform keystore).
    pub store_key: StoreKey,
    /// How to reach the relay.
    pub connector: Arc<dyn Connector>,
    /// Tunables.
    pub options: ClientOptions,
}

/// Fans events out to every open [`EventStream`]. Events go out as the batches they were
/// emitted in (a catch-up emits one per received message, a thousand at a time): one channel
/// send per batch, not per event, so the sender and a stream being read on another thread do
/// not take turns on the channel a thousand times.
///
/// Events emitted before the first stream opens are kept for it (up to [`EARLY_EVENTS`], the
/// oldest dropped first): the client starts connecting inside `open`, and an app that asks
/// for events right after must not miss the messages its catch-up delivered in between.
pub(crate) struct EventHub {
    pub(crate) listeners: StdMutex<Listeners>,
}

/// Most events kept for the first stream.
pub(crate) const EARLY_EVENTS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Listeners {
    pub(crate) streams: Vec<mpsc::UnboundedSender<Vec<Event>>>,
    /// Until the first stream opens: the batches emitted so far, and how many events they
    /// hold.
    early: Option<(std::collections::VecDeque<Vec<Event>>, usize)>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let early = Some((std::collections::VecDeque::new(), 0));
        Self { listeners: StdMutex::new(Listeners { streams: Vec::new(), early }) }
    }

    pub(crate) fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let Ok(mut listeners) = self.listeners.lock() else { return };
        if let Some((early, count)) = &mut listeners.early {
            *count += events.len();
            early.push_back(events);
            while *count > EARLY_EVENTS {
                let Some(dropped) = early.pop_front() else { break };
                *count -= dropped.len();
            }
            return;
        }
        // The last listener takes the events themselves; only the others get copies.
        let mut events = Some(events);
        let last = listeners.streams.len().saturating_sub(1);
        let mut i = 0;
        listeners.streams.retain(|l| {
            let mine = match i == last {
                true => events.take().unwrap_or_default(),
                false => events.clone().unwrap_or_default(),
            };
            i += 1;
            l.send(mine).is_ok()
        });
    }

    /// A new stream of every event from now on (the first one also gets those emitted before
    /// it).
    pub(crate) fn stream(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut l) = self.listeners.lock() {
            for batch in l.early.take().map(|(e, _)| e).unwrap_or_default() {
                let _ = tx.send(batch);
            }
            l.streams.push(tx);
        }
        EventStream { rx, buffered: std::collections::VecDeque::new() }
    }

    /// Ends every stream (their `next` returns `None` once drained).
    pub(crate) fn close(&self) {
        if let Ok(mut l) = self.listeners.lock() {
            l.streams.clear();
            l.early = None;
        }
    }
}

/// A stream of [`Event`]s; each stream sees every event emitted after it was opened, in order.
pub struct EventStream {
    pub(crate) rx: mpsc::UnboundedReceiver<Vec<Event>>,
    /// The rest of the batch being read.
    pub(crate) buffered: std::collections::VecDeque<Event>,
}

impl EventStream {
    /// The next event; `None` once the client is shut down.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Some(e);
            }
            self.buffered = self.rx.recv().await?.into();
        }
    }

    /// An event already waiting, if any.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Some(e);
            }
            self.buffered = self.rx.try_recv().ok()?.into();
        }
    }
}

pub(crate) struct Inner {
    /// The store, closed for writing by [`crate::Client::shutdown`].
    pub(crate) store: Arc<super::gate::Gate<dyn Store>>,
    pub(crate) vault: Vault,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) options: ClientOptions,
    pub(crate) core: Mutex<Core>,
    /// Calls from the app waiting for `core`: a catch-up lets go at its next batch when
    /// this is non-zero.
    pub(crate) app_waiting: std::sync::atomic::AtomicUsize,
    pub(crate) events: EventHub,
    pub(crate) link: StdMutex<Option<Arc<dyn Link>>>,
    /// Why the last connection attempt failed, until one succeeds.
    pub(crate) failure: StdMutex<Option<ClientError>>,
    pub(crate) outbox_ready: Notify,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Attachment transfers the app canceled (by message id), until they notice.
    pub(crate) canceled: StdMutex<std::collections::HashSet<Vec<u8>>>,
    /// Uploads running now (by message id): one run per upload.
    pub(crate) uploading: StdMutex<std::collections::HashSet<Vec<u8>>>,
    /// Downloads running now (by message id), so a cancel knows whether anyone will see it.
    pub(crate) downloading: StdMutex<std::collections::HashSet<Vec<u8>>>,
}

impl Inner {
    /// The one way a change becomes visible: commit the transaction, let the state lock go
    /// (pass the guard, or `()` when none is held), then emit the events the transaction
    /// collected. So no event ever describes a state that is not on disk, and no listener runs
    /// while the lock is held. (The delivery pipeline, which commits on the store's thread
    /// while it decrypts the next batch, follows the same order in `inbox::run`.)
    pub(crate) async fn commit_then_emit<Lock>(
        &self,
        tx: Tx<'_>,
        lock: Lock,
    ) -> Result<(), ClientError> {
        let events = tx.commit().await?;
        drop(lock);
        self.events.emit(events);
        Ok(())
    }

    /// Takes the state lock for a call from the app. A catch-up in progress sees the call
    /// waiting and lets go at its next batch boundary, so the call waits for one batch, not
    /// for the whole backlog.
    pub(crate) async fn lock_for_app(&self) -> tokio::sync::MutexGuard<'_, Core> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Counts the call as waiting until it has the lock, or is dropped while waiting.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.app_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.app_waiting);
        self.core.lock().await
    }

    /// Whether a call from the app is waiting for the state lock.
    pub(crate) fn app_waiting(&self) -> bool {
        self.app_waiting.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    pub(crate) fn last_failure(&self) -> Option<ClientError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn set_failure(&self, failure: Option<ClientError>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = failure;
        }
    }

    pub(crate) fn current_link(&self) -> Option<Arc<dyn Link>> {
        self.link.lock().ok().and_then(|l| l.clone())
    }

    /// Sets the connection state. Once the client is shut down it is `Disconnected`, whatever
    /// a task still winding down reports: the flag is read under the state's lock, and
    /// [`Client::shutdown`](super::Client::shutdown) raises the flag before it sets the state,
    /// so a late `Connected` can't land after the shutdown's `Disconnected`.
    pub(crate) fn set_state(&self, s: ConnectionState) {
        let mut new = s;
        let changed = self.state.send_if_modified(|cur| {
            if self.is_shut_down() {
                new = ConnectionState::Disconnected;
            }
            let s = new;
            let changed = *cur != s;
            *cur = s;
            changed
        });
        if changed {
            self.events.emit(vec![Event::ConnectionChanged { state: new }]);
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Maps a relay response of the wrong kind to a protocol error.
pub(crate) fn unexpected(what: &str) -> ClientError {
    ClientError::Protocol(format!("unexpected response, expected {what}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn typing(n: usize) -> Event {
        Event::Typing { conversation: n.to_string(), from: n.to_string(), started: true }
    }

    fn hub_with(streams: usize) -> (EventHub, Vec<EventStream>) {
        let hub = EventHub::new();
        let streams = (0..streams).map(|_| hub.stream()).collect();
        (hub, streams)
    }

    /// Batches go out whole, yet every stream reads single events in emission order, whether
    /// through `next`, `try_next` or both; a dropped stream stops receiving without disturbing
    /// the others.
    #[tokio::test]
    async fn every_stream_reads_every_event_in_order() {
        let (hub, mut streams) = hub_with(3);
        hub.emit(vec![typing(0), typing(1), typing(2)]);
        hub.emit(Vec::new());
        hub.emit(vec![typing(3)]);
        let dropped = streams.pop().unwrap();
        drop(dropped);
        hub.emit(vec![typing(4), typing(5)]);
        assert_eq!(hub.listeners.lock().unwrap().streams.len(), 2);
        let [a, b] = &mut streams[..] else { unreachable!() };
        let mut got_a = Vec::new();
        while let Some(e) = a.try_next() {
            got_a.push(e);
        }
        let mut got_b = vec![b.next().await.unwrap(), b.try_next().unwrap()];
        for _ in 2..6 {
            got_b.push(b.next().await.unwrap());
        }
        let want: Vec<Event> = (0..6).map(typing).collect();
        assert_eq!(got_a, want);
        assert_eq!(got_b, want);
        assert!(a.try_next().is_none() && b.try_next().is_none());
    }

    /// What happens between `Client::open` and the app's first `events()` is not lost: the
    /// first stream gets it (the most recent [`EARLY_EVENTS`] of it), later streams do not.
    #[test]
    fn the_first_stream_gets_the_events_emitted_before_it() {
        let hub = EventHub::new();
        hub.emit(vec![typing(0), typing(1)]);
        for n in 2..EARLY_EVENTS + 2 {
            hub.emit(vec![typing(n)]);
        }
        let mut first = hub.stream();
        let mut second = hub.stream();
        hub.emit(vec![typing(usize::MAX)]);
        let mut got = Vec::new();
        while let Some(e) = first.try_next() {
            got.push(e);
        }
        assert_eq!(got.len(), EARLY_EVENTS + 1, "the oldest batch made room");
        assert_eq!(got[0], typing(2));
        assert_eq!(got.last(), Some(&typing(usize::MAX)));
        assert_eq!(second.try_next(), Some(typing(usize::MAX)));
        assert_eq!(second.try_next(), None);
    }
}
