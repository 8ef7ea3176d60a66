//! End-to-end tests of hush-relay: the real binary on loopback, real redb on disk, real QUIC
//! clients.

mod common;

mod accounts;
mod blobs;
mod delivery;
mod durability;
mod limits;
mod operations;
mod prekeys;
mod robustness;
mod storage;
mod tls;
mod websocket;
