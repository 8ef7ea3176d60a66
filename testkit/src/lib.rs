//! The Hush test kit: what the relay tests, the end-to-end tests, the benches and the
//! bindings' tests use to start things.
//!
//! - [`relay`]: the real `hush-relay` binary as a child process on loopback (found or built
//!   once per run), with its addresses, pin and operator endpoints;
//! - [`protocol`]: test accounts that speak the relay protocol directly, for the relay's own
//!   tests and benches;
//! - [`attacks`]: what a hostile client does (half-sent frames, half-open connections);
//! - [`client`]: real SDK clients as test devices, on the real relay or on the in-memory one;
//! - [`memory`]: an in-memory relay behind the client's transport traits, for fast client
//!   tests, with fault injection (cut links, lost responses);
//! - [`crash`]: a client store that dies after a chosen number of commits.
//!
//! The `hush-test-relay` binary starts a relay the same way for tests in other languages.

// A test kit fails loudly: a setup step that goes wrong panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod attacks;
pub mod client;
pub mod crash;
pub mod memory;
pub mod protocol;
pub mod relay;

pub use client::{Device, Joinable, Network, WAIT, options};
pub use memory::MemoryRelay;
pub use relay::{Launch, Relay};

/// Runs a client test body (an `async fn name(net: impl Joinable)`) twice: against the
/// in-memory relay (fast, in the inner loop) and against the real relay binary on loopback
/// (end to end), as `name::in_memory` and `name::real_relay`. The calling crate needs tokio.
#[macro_export]
macro_rules! on_both_networks {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_memory() {
                super::$name(&$crate::MemoryRelay::new()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_relay() {
                super::$name(&$crate::Relay::temp()).await;
            }
        }
    };
}
