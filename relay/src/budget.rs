//! The memory budget for what peers make the relay buffer: bytes of requests read but not yet
//! answered, counted per connection, per address (see [`crate::limits::network`]) and in
//! total, each against its own limit.
//!
//! Guarantees:
//! - memory is charged before it is allocated, block by block as a request's bytes arrive
//!   ([`hush_protocol::frame::FrameCollector`]), so a length prefix that announces 4 MiB and
//!   sends nothing costs nothing, and a half-sent body costs what was sent;
//! - a charge holds until its [`Held`] is dropped: after the request is answered, or when its
//!   stream or connection goes, whichever comes first; the per-address entry disappears with
//!   its last byte, so the maps never outgrow the live connections;
//! - a charge that does not fit is refused at once over QUIC (the stream is stopped and
//!   answered `rate_limited`, so quinn drops what it buffered for it) and waited for over
//!   WebSocket, where TCP's flow control holds the peer back meanwhile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::RelayError;
use crate::metrics::Metrics;

/// How long a refused client should wait before retrying (`retry_after_ms`): buffers drain
/// as requests are answered, in milliseconds.
const RETRY_AFTER_MS: u64 = 1000;

/// Which limit a charge did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The connection's own limit.
    Connection,
    /// The source address's limit.
    Address,
    /// The relay-wide limit.
    Relay,
}

impl Exhausted {
    /// What the client is told: `rate_limited`, naming the limit.
    pub fn into_error(self) -> RelayError {
        let scope = match self {
            Self::Connection => "buffered request bytes per connection",
            Self::Address => "buffered request bytes per address",
            Self::Relay => "buffered request bytes in total",
        };
        RelayError::RateLimited { scope, retry_after_ms: RETRY_AFTER_MS }
    }
}

/// The relay-wide budget.
pub struct Budget {
    per_ip: usize,
    total: usize,
    state: Mutex<Totals>,
    freed: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Totals {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl Budget {
    /// A budget of `total` bytes, at most `per_ip` of them for one address.
    pub fn new(total: usize, per_ip: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            per_ip,
            total,
            state: Mutex::new(Totals::default()),
            freed: Notify::new(),
            metrics,
        })
    }

    /// The budget of one new connection from `ip` (already reduced to its network), with
    /// `limit` bytes of its own.
    pub fn connection(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            budget: Arc::clone(self),
            ip,
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged right now, relay-wide.
    pub fn used(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        // Every update is a pair of additions or subtractions done together: a panic between
        // them is impossible, so a poisoned lock still holds consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's share of the budget.
pub struct ConnBudget {
    budget: Arc<Budget>,
    ip: IpAddr,
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl ConnBudget {
    /// Changes the connection's own limit (raised when it authenticates).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// An empty charge, to grow as bytes arrive.
    pub fn hold(self: &Arc<Self>) -> Held {
        Held { conn: Arc::clone(self), bytes: 0 }
    }

    /// Bytes this connection holds.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self, n: usize) -> Result<(), Exhausted> {
        let b = &self.budget;
        let mut t = b.lock();
        // The connection's count only changes under the same lock, so this check is exact.
        let used = self.used.load(Ordering::Acquire);
        if used.saturating_add(n) > self.limit.load(Ordering::Acquire) {
            return Err(Exhausted::Connection);
        }
        let at_ip = t.by_ip.get(&self.ip).copied().unwrap_or(0);
        if at_ip.saturating_add(n) > b.per_ip {
            return Err(Exhausted::Address);
        }
        if t.total.saturating_add(n) > b.total {
            return Err(Exhausted::Relay);
        }
        t.total += n;
        t.by_ip.insert(self.ip, at_ip + n);
        self.used.store(used + n, Ordering::Release);
        b.metrics.buffered_bytes.set(i64::try_from(t.total).unwrap_or(i64::MAX));
        Ok(())
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let b = &self.budget;
        {
            let mut t = b.lock();
            t.total = t.total.saturating_sub(n);
            if let Some(at_ip) = t.by_ip.get_mut(&self.ip) {
                *at_ip = at_ip.saturating_sub(n);
                if *at_ip == 0 {
                    t.by_ip.remove(&self.ip);
                }
            }
            let used = self.used.load(Ordering::Acquire);
            self.used.store(used.saturating_sub(n), Ordering::Release);
            b.metrics.buffered_bytes.set(i64::try_from(t.total).unwrap_or(i64::MAX));
        }
        b.freed.notify_waiters();
    }
}

/// Bytes charged to a connection's budget; given back when dropped.
pub struct Held {
    conn: Arc<ConnBudget>,
    bytes: usize,
}

impl Held {
    /// Charges `n` more bytes, or says which limit they do not fit.
    pub fn try_grow(&mut self, n: usize) -> Result<(), Exhausted> {
        self.conn.take(n)?;
        self.bytes += n;
        Ok(())
    }

    /// Charges `n` more bytes, waiting until they fit (cancel-safe: nothing is charged unless
    /// it returns). A charge larger than the connection's own limit can never fit and is
    /// refused at once.
    pub async fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        let conn = Arc::clone(&self.conn);
        loop {
            // Registered before the attempt, so a release between the attempt and the wait is
            // not missed.
            let freed = conn.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_grow(n) {
                Ok(()) => return Ok(()),
                Err(Exhausted::Connection) if n > self.conn.limit.load(Ordering::Acquire) => {
                    return Err(Exhausted::Connection);
                }
                Err(_) => freed.await,
            }
        }
    }

    /// Moves `n` of these bytes (or all it has, if fewer) into a new charge of their own.
    pub fn split(&mut self, n: usize) -> Held {
        let n = n.min(self.bytes);
        self.bytes -= n;
        Held { conn: Arc::clone(&self.conn), bytes: n }
    }

    /// Takes over another charge of the same connection (a frame's, as it reaches the
    /// request it belongs to); hands it back untouched if it is another connection's.
    pub fn absorb(&mut self, mut other: Held) -> Result<(), Held> {
        if !Arc::ptr_eq(&self.conn, &other.conn) {
            return Err(other);
        }
        self.bytes += std::mem::take(&mut other.bytes);
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.conn.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn each_level_refuses_what_does_not_fit_and_drops_give_back() {
        let b = Budget::new(1000, 600, Arc::new(Metrics::new()));
        let c1 = b.connection(ip(1), 400);
        let c2 = b.connection(ip(1), 400);
        let c3 = b.connection(ip(2), 1000);
        let mut h1 = c1.hold();
        h1.try_grow(400).unwrap();
        assert_eq!(h1.try_grow(1), Err(Exhausted::Connection));
        let mut h2 = c2.hold();
        assert_eq!(h2.try_grow(300), Err(Exhausted::Address));
        h2.try_grow(200).unwrap();
        let mut h3 = c3.hold();
        assert_eq!(h3.try_grow(500), Err(Exhausted::Relay));
        h3.try_grow(400).unwrap();
        assert_eq!(b.used(), 1000);
        let part = h3.split(150);
        assert_eq!((part.bytes(), h3.bytes()), (150, 250));
        drop(h1);
        drop(part);
        assert_eq!(b.used(), 450);
        assert_eq!(c1.used(), 0);
        drop((h2, h3));
        assert_eq!(b.used(), 0);
        assert!(b.lock().by_ip.is_empty(), "addresses are forgotten with their last byte");
    }

    #[tokio::test]
    async fn a_waiting_charge_proceeds_when_bytes_are_given_back() {
        let b = Budget::new(100, 100, Arc::new(Metrics::new()));
        let c = b.connection(ip(1), 100);
        let mut first = c.hold();
        first.try_grow(80).unwrap();
        let c2 = Arc::clone(&c);
        let waiter = tokio::spawn(async move {
            let mut h = c2.hold();
            h.grow(50).await.unwrap();
            h.bytes()
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap(), 50);
        let mut too_big = c.hold();
        assert_eq!(too_big.grow(101).await, Err(Exhausted::Connection));
    }
}
