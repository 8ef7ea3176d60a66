//! Who is connected right now: authenticated connections per device, and the one delivery
//! subscription per device that live pushes and ephemeral envelopes go to.
//!
//! Guarantees: a wake-up for a device never gets lost (tokio's `Notify` keeps a permit when no
//! task is waiting); ephemeral envelopes go only to a device subscribed at that moment and are
//! dropped, never queued, if its buffer is full; a removed device's connections are closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hush_protocol::wire::Delivery;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::store::AccountId;
use crate::streams::Peer;

/// Ephemeral envelopes buffered per subscription before new ones are dropped.
const EPHEMERAL_BUFFER: usize = 64;

type DeviceKey = (AccountId, u32);

struct Subscriber {
    conn_id: u64,
    wake: Arc<Notify>,
    ephemeral: mpsc::Sender<Delivery>,
    replaced: CancellationToken,
}

/// A live subscription's receiving ends.
pub struct Subscription {
    /// Notified when the mailbox grew.
    pub wake: Arc<Notify>,
    /// Ephemeral envelopes for this device.
    pub ephemeral: mpsc::Receiver<Delivery>,
    /// Cancelled when a newer connection of the same device subscribes.
    pub replaced: CancellationToken,
}

/// The registry.
#[derive(Default)]
pub struct Online {
    connections: Mutex<HashMap<DeviceKey, Vec<(u64, Peer)>>>,
    subscribers: Mutex<HashMap<DeviceKey, Subscriber>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (single inserts and
    // removes), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Online {
    /// Records an authenticated connection of a device.
    pub fn connected(&self, key: DeviceKey, conn_id: u64, conn: Peer) {
        lock(&self.connections).entry(key).or_default().push((conn_id, conn));
    }

    /// Forgets a closed connection (and its subscription).
    pub fn disconnected(&self, key: DeviceKey, conn_id: u64) {
        {
            let mut map = lock(&self.connections);
            if let Some(v) = map.get_mut(&key) {
                v.retain(|(id, _)| *id != conn_id);
                if v.is_empty() {
                    map.remove(&key);
                }
            }
        }
        self.unsubscribe(key, conn_id);
    }

    /// Makes `conn_id` the device's delivery subscription, replacing any older one.
    pub fn subscribe(&self, key: DeviceKey, conn_id: u64) -> Subscription {
        let wake = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(EPHEMERAL_BUFFER);
        let replaced = CancellationToken::new();
        let old = lock(&self.subscribers).insert(
            key,
            Subscriber {
                conn_id,
                wake: Arc::clone(&wake),
                ephemeral: tx,
                replaced: replaced.clone(),
            },
        );
        if let Some(old) = old {
            old.replaced.cancel();
        }
        Subscription { wake, ephemeral: rx, replaced }
    }

    /// Ends a subscription if it is still the device's current one.
    pub fn unsubscribe(&self, key: DeviceKey, conn_id: u64) {
        let mut map = lock(&self.subscribers);
        if map.get(&key).is_some_and(|s| s.conn_id == conn_id) {
            map.remove(&key);
        }
    }

    /// Wakes the device's subscription, if any, to read its mailbox.
    pub fn wake(&self, key: &DeviceKey) {
        if let Some(s) = lock(&self.subscribers).get(key) {
            s.wake.notify_one();
        }
    }

    /// Hands an ephemeral envelope to the device if it is subscribed now; false if it was not
    /// delivered (offline, or its buffer is full).
    pub fn push_ephemeral(&self, key: &DeviceKey, delivery: Delivery) -> bool {
        match lock(&self.subscribers).get(key) {
            Some(s) => s.ephemeral.try_send(delivery).is_ok(),
            None => false,
        }
    }

    /// Closes every connection of a removed device.
    pub fn cut(&self, key: &DeviceKey) {
        let conns = lock(&self.connections).remove(key).unwrap_or_default();
        lock(&self.subscribers).remove(key);
        for (_, conn) in conns {
            conn.close(hush_protocol::close::DEVICE_REMOVED, "device_removed");
        }
    }
}
