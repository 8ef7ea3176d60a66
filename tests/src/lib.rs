//! The client's behaviour tests (`tests/`): real `hush_core::Client`s chatting through the
//! in-memory relay (fast, and where crashes are injected) and through the real `hush-relay`
//! binary on loopback (end to end). The harness is the test kit (`hush-testkit`); this crate
//! holds only tests and the catch-up bench.
