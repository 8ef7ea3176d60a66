//! Rate limits and connection limits, each with a typed error and a documented default
//! (docs/OPERATING.md).
//!
//! - Per-connection request rate and per-account send rate: token buckets (governor's GCRA),
//!   answered with `rate_limited` and the time until the next token (`retry_after_ms`).
//! - Registrations per source IP: a keyed token bucket, so nobody can mint accounts in bulk.
//! - Connections per source IP and in total: counted on accept and released on close; an
//!   address over its limit is closed with application code `TOO_MANY_CONNECTIONS`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::error::RelayError;
use crate::store::AccountId;

/// A rate: `per_second` tokens per second, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate.
    pub per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Quota {
        let rate = NonZeroU32::new(self.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(rate).allow_burst(burst)
    }
}

fn retry_after(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A per-connection request limiter.
pub struct ConnectionRate(DefaultDirectRateLimiter);

impl ConnectionRate {
    /// A fresh bucket.
    pub fn new(rate: Rate) -> Self {
        Self(DefaultDirectRateLimiter::direct(rate.quota()))
    }

    /// Takes a token or says when to retry.
    pub fn check(&self) -> Result<(), RelayError> {
        self.0.check().map_err(|n| RelayError::RateLimited {
            scope: "requests per connection",
            retry_after_ms: retry_after(&n),
        })
    }
}

/// Relay-wide keyed limiters.
pub struct Limiters {
    sends: DefaultKeyedRateLimiter<AccountId>,
    registrations: DefaultKeyedRateLimiter<IpAddr>,
    /// Open connections per address, and their total (kept alongside so admission is O(1)).
    connections: Mutex<(HashMap<IpAddr, u32>, u32)>,
    per_ip: u32,
    total: u32,
}

impl Limiters {
    /// Builds the limiters.
    pub fn new(
        sends: Rate,
        registrations: Rate,
        connections_per_ip: u32,
        max_connections: u32,
    ) -> Self {
        Self {
            sends: DefaultKeyedRateLimiter::keyed(sends.quota()),
            registrations: DefaultKeyedRateLimiter::keyed(registrations.quota()),
            connections: Mutex::new((HashMap::new(), 0)),
            per_ip: connections_per_ip,
            total: max_connections,
        }
    }

    /// Takes a send token for `account`.
    pub fn check_send(&self, account: &AccountId) -> Result<(), RelayError> {
        self.sends.check_key(account).map_err(|n| RelayError::RateLimited {
            scope: "sends per account",
            retry_after_ms: retry_after(&n),
        })
    }

    /// Takes a registration token for `ip`'s network (see [`network`]).
    pub fn check_registration(&self, ip: IpAddr) -> Result<(), RelayError> {
        self.registrations.check_key(&network(ip)).map_err(|n| RelayError::RateLimited {
            scope: "registrations per address",
            retry_after_ms: retry_after(&n),
        })
    }

    /// Forgets idle keys (called by the sweeper so the maps don't grow without bound).
    pub fn shrink(&self) {
        self.sends.retain_recent();
        self.registrations.retain_recent();
    }

    /// Counts a new connection from `ip`; `None` if a limit is reached. The returned guard
    /// releases the slot when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = network(ip);
        let mut guard = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let (map, total) = &mut *guard;
        let n = map.get(&ip).copied().unwrap_or(0);
        if n >= self.per_ip || *total >= self.total {
            return None;
        }
        map.insert(ip, n + 1);
        *total += 1;
        Some(ConnectionSlot { limiters: Arc::clone(self), ip })
    }
}

/// The key per-address limits count against: the IPv4 address itself, or the IPv6 /64 (one
/// subscriber usually holds a whole /64, so counting single IPv6 addresses would let anyone
/// rotate through them). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// A counted connection; dropping it frees the slot.
pub struct ConnectionSlot {
    limiters: Arc<Limiters>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut guard = self.limiters.connections.lock().unwrap_or_else(|p| p.into_inner());
        let (map, total) = &mut *guard;
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            *total = total.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_counted_and_released() {
        let l = Arc::new(Limiters::new(
            Rate { per_second: 1, burst: 1 },
            Rate { per_second: 1, burst: 1 },
            2,
            100,
        ));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert!(l.admit(ip).is_none());
        drop(a);
        assert!(l.admit(ip).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn buckets_say_when_to_retry() {
        let r = ConnectionRate::new(Rate { per_second: 1, burst: 2 });
        r.check().unwrap();
        r.check().unwrap();
        match r.check() {
            Err(RelayError::RateLimited { retry_after_ms, .. }) => {
                assert!((1..=1000).contains(&retry_after_ms))
            }
            other => panic!("expected rate_limited, got {other:?}"),
        }
    }
}
