//! Rate limits and connection limits, each with a typed error and a documented default
//! (docs/OPERATING.md).
//!
//! - Per-connection request rate and per-account send rate: token buckets (governor's GCRA),
//!   answered with `rate_limited` and the time until the next token (`retry_after_ms`).
//! - Registrations per source IP: a keyed token bucket, so nobody can mint accounts in bulk.
//! - Prekey bundles: per requesting account, each bundle asked for takes a token
//!   (`rate_limited` when none is left); per target device, each one-time key handed out takes
//!   a token, and a bundle asked for when none is left comes without one-time keys (the
//!   signed prekey and the last-resort KEM key still make a session, as when a device's stock
//!   runs out). So one account can no longer drain a device's one-time keys.
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

/// How many one-time keys a device hands out: a burst, then one per `every`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRate {
    /// Bucket size.
    pub burst: u32,
    /// One more token per this long.
    pub every: std::time::Duration,
}

/// Relay-wide keyed limiters.
pub struct Limiters {
    sends: DefaultKeyedRateLimiter<AccountId>,
    registrations: DefaultKeyedRateLimiter<IpAddr>,
    bundles: DefaultKeyedRateLimiter<AccountId>,
    claims: DefaultKeyedRateLimiter<(AccountId, u32)>,
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
        bundles: Rate,
        claims: ClaimRate,
        connections_per_ip: u32,
        max_connections: u32,
    ) -> Self {
        let claim_quota = Quota::with_period(claims.every.max(std::time::Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(claims.burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            sends: DefaultKeyedRateLimiter::keyed(sends.quota()),
            registrations: DefaultKeyedRateLimiter::keyed(registrations.quota()),
            bundles: DefaultKeyedRateLimiter::keyed(bundles.quota()),
            claims: DefaultKeyedRateLimiter::keyed(claim_quota),
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

    /// Takes `n` bundle tokens for the requesting `account` (one per device asked for).
    pub fn check_bundles(&self, account: &AccountId, n: u32) -> Result<(), RelayError> {
        let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        match self.bundles.check_key_n(account, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RelayError::RateLimited {
                scope: "prekey bundles per account",
                retry_after_ms: retry_after(&not_until),
            }),
            // More than the whole burst at once: never admitted; the request must ask for
            // fewer devices.
            Err(_) => Err(RelayError::RateLimited {
                scope: "prekey bundles per account",
                retry_after_ms: 60_000,
            }),
        }
    }

    /// Whether device `device` may hand out a one-time key now (takes the token if so).
    pub fn allow_one_time_claim(&self, device: &(AccountId, u32)) -> bool {
        self.claims.check_key(device).is_ok()
    }

    /// Forgets idle keys (called by the sweeper so the maps don't grow without bound).
    pub fn shrink(&self) {
        self.sends.retain_recent();
        self.registrations.retain_recent();
        self.bundles.retain_recent();
        self.claims.retain_recent();
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
            Rate { per_second: 1, burst: 1 },
            ClaimRate { burst: 1, every: std::time::Duration::from_secs(60) },
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
    fn bundle_and_claim_buckets() {
        let l = Limiters::new(
            Rate { per_second: 1, burst: 1 },
            Rate { per_second: 1, burst: 1 },
            Rate { per_second: 1, burst: 6 },
            ClaimRate { burst: 2, every: std::time::Duration::from_secs(60) },
            2,
            100,
        );
        l.check_bundles(&[1; 32], 6).unwrap();
        assert!(matches!(l.check_bundles(&[1; 32], 1), Err(RelayError::RateLimited { .. })));
        assert!(matches!(l.check_bundles(&[2; 32], 7), Err(RelayError::RateLimited { .. })));
        l.check_bundles(&[2; 32], 1).unwrap();
        let d = ([3; 32], 1);
        assert!(l.allow_one_time_claim(&d) && l.allow_one_time_claim(&d));
        assert!(!l.allow_one_time_claim(&d), "the third claim within a minute is refused");
        assert!(l.allow_one_time_claim(&([3; 32], 2)), "another device has its own bucket");
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
