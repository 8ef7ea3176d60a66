//! Hash maps for data from peers, fast and keyed from the CSPRNG.
//!
//! Applying a batch of deliveries hashes a dozen search tokens and several message ids per
//! message; with std's SipHash the whole catch-up ran about 10% slower (docs/BENCHMARKS.md).
//! foldhash is much cheaper, but its own default seed comes from address-space randomisation
//! and the clock, which the browser build has neither of. The keys here come from peers
//! (message ids, words of their messages), so their seeds come from the operating system's
//! randomness instead (`crypto.getRandomValues` in the browser): a peer cannot aim collisions
//! at a seed it cannot learn.

use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use rand::RngExt;

/// A hash map keyed from the CSPRNG.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, SeedableRandomState>;
/// A hash set keyed from the CSPRNG.
pub(crate) type Set<T> = std::collections::HashSet<T, SeedableRandomState>;

/// A fresh hasher state: a per-process shared seed and a per-map seed, both random.
pub(crate) fn keyed() -> SeedableRandomState {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let mut rng = rand::rng();
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(rng.random()));
    SeedableRandomState::with_seed(rng.random(), shared)
}

/// An empty [`Map`].
pub(crate) fn map<K, V>() -> Map<K, V> {
    Map::with_hasher(keyed())
}

/// An empty [`Set`].
pub(crate) fn set<T>() -> Set<T> {
    Set::with_hasher(keyed())
}
