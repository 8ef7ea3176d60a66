//! The transport trait: how the client reaches a relay.
//!
//! The client speaks the relay protocol (docs/PROTOCOL.md §14) through three small traits, so
//! the same logic runs over QUIC natively ([`QuicConnector`]) and over WebSocket in the browser:
//! - [`Connector`] opens a [`Link`] (one connection);
//! - a [`Link`] carries request/response exchanges and exposes the TLS channel binding the
//!   device signs during auth;
//! - [`Deliveries`] is the subscription stream of pushes, with acks.

use std::sync::Arc;

use async_trait::async_trait;
use hush_protocol::Refusal;
use hush_protocol::wire::{request, response, server_push};

use crate::runtime::{MaybeSend, MaybeSync};

/// Why a transport call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The relay answered with a typed error.
    #[error(transparent)]
    Relay(#[from] Refusal),
    /// No connection, or it broke; retry after reconnecting. The message says which address
    /// was tried and what happened.
    #[error("{0}")]
    Disconnected(String),
    /// The relay presented a certificate this client does not trust (a pin or WebPKI
    /// mismatch); the message names the address and the reason.
    #[error("{0}")]
    Certificate(String),
    /// The relay sent something the protocol does not allow.
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
}

impl TransportError {
    /// The relay's refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Relay(r) => Some(r),
            _ => None,
        }
    }
}

/// Opens connections to one relay.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Connector: MaybeSend + MaybeSync {
    /// Connects (not yet authenticated).
    async fn connect(&self) -> Result<Arc<dyn Link>, TransportError>;
}

/// One connection to the relay.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Link: MaybeSend + MaybeSync {
    /// One request and its response; a relay error becomes [`TransportError::Relay`].
    async fn request(&self, body: request::Body) -> Result<response::Body, TransportError>;
    /// The 32-byte TLS exporter value the auth signature binds to.
    fn channel_binding(&self) -> Result<[u8; 32], TransportError>;
    /// Opens the delivery subscription (after auth).
    async fn subscribe(&self) -> Result<Box<dyn Deliveries>, TransportError>;
    /// Resolves when the connection is gone.
    async fn closed(&self) -> TransportError;
    /// Closes the connection.
    fn close(&self);
}

/// The pushes of one subscription.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub trait Deliveries: MaybeSend {
    /// The next push; `Ok(None)` when the relay ended the subscription.
    async fn next(&mut self) -> Result<Option<server_push::Body>, TransportError>;
    /// The next push if one is already waiting (never blocks for long).
    async fn try_next(&mut self) -> Result<Option<server_push::Body>, TransportError>;
    /// Acks stored envelopes so the relay deletes them.
    async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), TransportError>;
}

#[cfg(feature = "native")]
pub use hush_net::{RelayAddress, Trust};
#[cfg(feature = "native")]
pub use native::QuicConnector;

/// How to trust the relay, from what an app configures as text: a pin (64 hex digits) for a
/// self-signed relay, a private CA's certificates (PEM), both (WebPKI with that CA, and the
/// key pinned too), or neither (WebPKI with the platform's roots).
#[cfg(feature = "native")]
pub fn trust_from(pin: Option<&str>, ca_pem: Option<&str>) -> Result<Trust, crate::ClientError> {
    let bad = |m: String| crate::ClientError::InvalidArgument(m);
    let pin =
        pin.filter(|p| !p.trim().is_empty()).map(Trust::parse_pin).transpose().map_err(bad)?;
    let roots = ca_pem
        .filter(|p| !p.trim().is_empty())
        .map(Trust::parse_roots_pem)
        .transpose()
        .map_err(bad)?;
    Ok(match (pin, roots) {
        (Some(pin), None) => Trust::Pin(pin),
        (pin, roots) => Trust::WebPki { extra_roots: roots.unwrap_or_default(), pin },
    })
}

#[cfg(feature = "native")]
mod native {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use async_trait::async_trait;
    use hush_net::{AckWriter, Connection, Endpoint, NetError, RelayAddress, Subscription, Trust};
    use hush_protocol::AUTH_EXPORTER_LABEL;
    use hush_protocol::wire::{request, response, server_push};

    use super::{Connector, Deliveries, Link, TransportError};

    impl From<NetError> for TransportError {
        fn from(e: NetError) -> Self {
            match e {
                NetError::Relay(r) => Self::Relay(r),
                NetError::Unexpected(m) => Self::Protocol(m.to_string()),
                e @ NetError::Certificate { .. } => Self::Certificate(e.to_string()),
                other => Self::Disconnected(other.to_string()),
            }
        }
    }

    /// How long a QUIC handshake may take before the attempt counts as failed: a relay that
    /// is down never answers (UDP has no refusal), so this is well below the idle timeout and
    /// the backoff loop retries.
    pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

    /// QUIC to a relay at a host name or address, trusted by WebPKI, a key pin, or both.
    pub struct QuicConnector {
        address: RelayAddress,
        trust: Trust,
        /// One UDP socket per address family, made on first use (a name may resolve to
        /// either).
        v4: std::sync::OnceLock<Endpoint>,
        v6: std::sync::OnceLock<Endpoint>,
    }

    impl QuicConnector {
        /// A connector for the relay at `address` (`relay.example.com:4433`, `ip:port`),
        /// trusted as `trust` says.
        pub fn new(address: RelayAddress, trust: Trust) -> Self {
            Self { address, trust, v4: std::sync::OnceLock::new(), v6: std::sync::OnceLock::new() }
        }

        /// A connector for a self-signed relay at `addr` whose public key (or certificate)
        /// hashes to `pin`.
        pub fn pinned(addr: SocketAddr, pin: [u8; 32]) -> Self {
            Self::new(RelayAddress::from(addr), Trust::Pin(pin))
        }

        /// The endpoint for an address of this family.
        fn endpoint(&self, ipv6: bool) -> Result<&Endpoint, TransportError> {
            let (cell, bind) = if ipv6 {
                (&self.v6, SocketAddr::from(([0u16; 8], 0)))
            } else {
                (&self.v4, SocketAddr::from(([0, 0, 0, 0], 0)))
            };
            if let Some(e) = cell.get() {
                return Ok(e);
            }
            let e = Endpoint::new(bind)?;
            Ok(cell.get_or_init(|| e))
        }
    }

    #[async_trait]
    impl Connector for QuicConnector {
        async fn connect(&self) -> Result<Arc<dyn Link>, TransportError> {
            let addrs = self.address.resolve(CONNECT_TIMEOUT).await?;
            // IPv6 first when the name has both (the IPv6 socket reaches IPv4 too, mapped).
            let ipv6 = addrs.iter().any(SocketAddr::is_ipv6);
            let conn =
                self.endpoint(ipv6)?.connect(&self.address, &self.trust, CONNECT_TIMEOUT).await?;
            Ok(Arc::new(QuicLink { conn }))
        }
    }

    struct QuicLink {
        conn: Connection,
    }

    #[async_trait]
    impl Link for QuicLink {
        async fn request(&self, body: request::Body) -> Result<response::Body, TransportError> {
            Ok(self.conn.request(body).await?)
        }

        fn channel_binding(&self) -> Result<[u8; 32], TransportError> {
            let mut binding = [0u8; 32];
            self.conn
                .quic()
                .export_keying_material(&mut binding, AUTH_EXPORTER_LABEL, b"")
                .map_err(|_| TransportError::Protocol("no TLS exporter".into()))?;
            Ok(binding)
        }

        async fn subscribe(&self) -> Result<Box<dyn Deliveries>, TransportError> {
            Ok(Box::new(QuicDeliveries::new(self.conn.subscribe().await?)))
        }

        async fn closed(&self) -> TransportError {
            self.conn.closed().await.into()
        }

        fn close(&self) {
            self.conn.close();
        }
    }

    /// A reader task owns the push stream (its reads are not cancel-safe) and forwards
    /// pushes through a channel, so `next` and `try_next` can be cancelled freely. It forwards
    /// them in chunks (whatever has arrived, up to [`CHUNK`]): during a catch-up a
    /// thousand pushes a batch cross the channel in a few sends instead of a thousand, each of
    /// which the reader and the client would take turns on.
    struct QuicDeliveries {
        /// Closed by the reader task at the end of the subscription (after an error, if any).
        chunks: tokio::sync::mpsc::Receiver<Result<Vec<server_push::Body>, TransportError>>,
        /// The rest of the chunk being read. The end only comes after every chunk, so it is
        /// only ever seen with this empty.
        buffered: std::collections::VecDeque<server_push::Body>,
        acks: AckWriter,
    }

    /// Most pushes forwarded together.
    const CHUNK: usize = 128;
    /// Chunks the channel holds: with [`CHUNK`], at most two batches' worth of pushes wait in
    /// memory (the client takes a batch ahead of the one it prepares, to check its group
    /// signatures early), and the rest in QUIC's flow-control window.
    const CHUNKS_BUFFERED: usize = 16;

    impl QuicDeliveries {
        fn new(sub: Subscription) -> Self {
            let (mut reader, acks) = sub.split();
            let (tx, chunks) = tokio::sync::mpsc::channel(CHUNKS_BUFFERED);
            tokio::spawn(async move {
                loop {
                    let first = match reader.next().await {
                        Ok(Some(push)) => push,
                        // The end: dropping the sender closes the channel.
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    };
                    let mut chunk = vec![first];
                    let mut failed = None;
                    while chunk.len() < CHUNK {
                        match reader.next_ready() {
                            Ok(Some(push)) => chunk.push(push),
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    if let Some(e) = failed {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            });
            Self { chunks, buffered: std::collections::VecDeque::new(), acks }
        }
    }

    #[async_trait]
    impl Deliveries for QuicDeliveries {
        async fn next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
            loop {
                if let Some(push) = self.buffered.pop_front() {
                    return Ok(Some(push));
                }
                match self.chunks.recv().await {
                    Some(chunk) => self.buffered.extend(chunk?),
                    None => return Ok(None),
                }
            }
        }

        async fn try_next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
            loop {
                if let Some(push) = self.buffered.pop_front() {
                    return Ok(Some(push));
                }
                match self.chunks.try_recv() {
                    Ok(chunk) => self.buffered.extend(chunk?),
                    Err(_) => return Ok(None),
                }
            }
        }

        async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), TransportError> {
            Ok(self.acks.ack(seqs).await?)
        }
    }
}
