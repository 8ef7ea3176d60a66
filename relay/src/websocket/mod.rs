//! The WebSocket listener: the relay protocol for browsers and for networks that block UDP.
//!
//! Browsers can't open raw QUIC, so the relay also accepts WebSocket connections, over TLS with
//! the relay's own certificate (or in plain text behind a TLS-terminating proxy, `ws_tls =
//! false`). Each binary message carries one frame of one virtual stream
//! (`hush_protocol::websocket`, docs/PROTOCOL.md §14.15), and every stream is served by the same
//! dispatcher and delivery loop as a QUIC stream ([`crate::streams`]), so the checks, limits and
//! error codes are identical. The parts:
//! - [`handshake`]: the HTTP upgrade (`101`, or a `400` page for anything that is not a Hush
//!   WebSocket client);
//! - [`frames`]: WebSocket frames decoded as they arrive, so memory follows what arrived;
//! - [`connection`]: one connection's reader, writer and virtual streams.
//!
//! What QUIC gives for free is rebuilt here:
//! - stream limits: at most `max_streams_per_connection` streams open at once; one more is
//!   answered `bad_request` on its own stream;
//! - flow control: what a connection has sent but the relay has not answered yet is charged
//!   to the request memory budget ([`crate::budget`]) as it arrives; when the connection's,
//!   its address's or the relay's share is used up, the reader stops reading the socket, and
//!   TCP holds the peer back. A message must arrive whole within 15 s;
//! - connection limits: the per-IP and total slots are taken before the TLS handshake, and a
//!   file descriptor is reserved before `accept`, so the relay never runs out of them;
//! - handshakes: TLS plus the HTTP upgrade must finish within 10 s, at most 16 may be in
//!   progress per address, and when as many are in progress as half the WebSocket
//!   connection limit, a new one pushes out the oldest (which a working client has long
//!   finished), so half-open connections can't lock legitimate clients out;
//! - idle timeout: the relay pings every third of `idle_timeout_secs` and drops a connection
//!   that sent nothing (not even a pong) for `idle_timeout_secs`;
//! - close codes: a relay close uses WebSocket close code 4000 + the QUIC application code.

pub mod connection;
pub mod frames;
pub mod handshake;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hush_protocol::close;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::server::Relay;

/// TLS plus HTTP upgrade deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress from one address at once; more are closed at once.
const HANDSHAKES_PER_IP: usize = 16;
/// WebSocket close codes for relay close codes start here (4000–4999 are for applications).
pub const CLOSE_CODE_BASE: u16 = 4000;

/// A WebSocket connection, as the rest of the relay sees it ([`crate::streams::Peer::WebSocket`]).
#[derive(Clone, Default)]
pub struct WsPeer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    close_reason: Mutex<Option<(u32, &'static str)>>,
    close_requested: CancellationToken,
    closed: CancellationToken,
}

impl WsPeer {
    /// Asks the connection to close with a relay close code (the first request wins).
    pub fn close(&self, code: u32, reason: &'static str) {
        let mut r = self.shared.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((code, reason));
        }
        self.shared.close_requested.cancel();
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// The close frame to send: 4000 + the relay code, and the reason.
    fn close_frame(&self) -> Vec<u8> {
        let (code, reason) = self
            .shared
            .close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or((close::NORMAL, "closed"));
        let code = CLOSE_CODE_BASE.saturating_add(u16::try_from(code).unwrap_or(999));
        frames::close_frame(code, reason)
    }
}

/// A running WebSocket listener.
pub struct Listener {
    /// The bound address.
    pub addr: SocketAddr,
    closing: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Binds `addr`; `tls` is `None` for plain WebSocket behind a TLS-terminating proxy. At
    /// most `max_connections` are open (or handshaking) at once: the file-descriptor budget
    /// ([`crate::fds`]).
    pub async fn bind(
        relay: Arc<Relay>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let closing = CancellationToken::new();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task =
            tokio::spawn(accept_loop(relay, listener, acceptor, max_connections, closing.clone()));
        Ok(Self { addr, closing, task })
    }

    /// Closes every WebSocket connection with `GOING_AWAY` and stops accepting.
    pub async fn close(self) {
        self.closing.cancel();
        let _ = self.task.await;
    }
}

async fn accept_loop(
    relay: Arc<Relay>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    closing: CancellationToken,
) {
    let connections = tokio_util::task::TaskTracker::new();
    // One permit per file descriptor a connection may use, taken before `accept`: at the
    // limit, new connections wait in the kernel's backlog instead of failing with EMFILE.
    let fds = Arc::new(Semaphore::new(max_connections.max(1)));
    let handshakes = Arc::new(Handshakes::new((max_connections / 2).max(16)));
    let mut warned_full: Option<Instant> = None;
    let mut accept_errors = LogOnce::default();
    loop {
        let permit = match Arc::clone(&fds).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        limit = max_connections,
                        "WebSocket connection limit reached (set by max_connections and the \
                         open-file limit); new connections wait until others close"
                    );
                    warned_full = Some(Instant::now());
                }
                tokio::select! {
                    p = Arc::clone(&fds).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = closing.cancelled() => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => {
                    if relay.shutdown.is_cancelled() {
                        continue;
                    }
                    let relay = Arc::clone(&relay);
                    let (tls, closing) = (tls.clone(), closing.clone());
                    let handshakes = Arc::clone(&handshakes);
                    connections.spawn(async move {
                        admit(relay, tcp, from.ip(), tls, handshakes, closing).await;
                        drop(permit);
                    });
                }
                // The permits keep the relay's own descriptors in bounds, but another process
                // sharing the limit, or a kernel limit, can still refuse one: back off, and say
                // so once a minute rather than on every attempt.
                Err(e) => {
                    accept_errors.warn(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = closing.cancelled() => break,
        }
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}

/// A warning logged at most once a minute, with how many times it happened meanwhile.
#[derive(Default)]
struct LogOnce {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogOnce {
    fn warn(&mut self, e: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, repeated = self.suppressed, "websocket accept failed");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Takes the connection slots, then runs the TLS handshake and HTTP upgrade within their
/// deadline, then serves the connection.
async fn admit(
    relay: Arc<Relay>,
    tcp: TcpStream,
    ip: IpAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshakes: Arc<Handshakes>,
    closing: CancellationToken,
) {
    // The slot is taken before the handshake, so connections still handshaking count too.
    // Over the limit, the TCP connection is closed at once, before any TLS.
    let Some(slot) = relay.limiters.admit(ip) else {
        relay.metrics.connections_refused_total.inc();
        return;
    };
    let Some(handshake) = handshakes.begin(crate::limits::network(ip)) else {
        relay.metrics.connections_refused_total.inc();
        return;
    };
    let _ = tcp.set_nodelay(true);
    let opened = async {
        match tls {
            Some(acceptor) => {
                let mut io = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                let leftover = handshake::upgrade(&mut io).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((Either::Tls(Box::new(io)), leftover))
            }
            None => {
                let mut io = tcp;
                let leftover = handshake::upgrade(&mut io).await.map_err(|e| e.to_string())?;
                Ok((Either::Plain(io), leftover))
            }
        }
    };
    let opened = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, opened) => r,
        () = handshake.evicted.cancelled() => {
            tracing::debug!("websocket handshake pushed out by newer ones");
            return;
        }
    };
    drop(handshake);
    match opened {
        Ok(Ok((Either::Tls(io), leftover))) => {
            connection::serve(relay, *io, leftover, ip, slot, closing).await;
        }
        Ok(Ok((Either::Plain(io), leftover))) => {
            connection::serve(relay, io, leftover, ip, slot, closing).await;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "websocket handshake failed"),
        Err(_) => tracing::debug!("websocket handshake timed out"),
    }
}

enum Either<A, B> {
    Tls(A),
    Plain(B),
}

/// Handshakes in progress: per address, and in order of age.
struct Handshakes {
    max: usize,
    state: Mutex<HandshakeState>,
}

#[derive(Default)]
struct HandshakeState {
    next: u64,
    per_ip: HashMap<IpAddr, usize>,
    order: VecDeque<(u64, CancellationToken)>,
}

/// One handshake in progress; dropping it ends its count.
struct Handshake {
    id: u64,
    ip: IpAddr,
    evicted: CancellationToken,
    all: Arc<Handshakes>,
}

impl Handshakes {
    fn new(max: usize) -> Self {
        Self { max, state: Mutex::new(HandshakeState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandshakeState> {
        // Updates are single inserts and removals: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new handshake from `ip`; `None` if the address has too many in progress. At
    /// the total limit, the oldest handshake is told to give up.
    fn begin(self: &Arc<Self>, ip: IpAddr) -> Option<Handshake> {
        let mut s = self.lock();
        let n = s.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= HANDSHAKES_PER_IP {
            return None;
        }
        if s.order.len() >= self.max
            && let Some((_, oldest)) = s.order.pop_front()
        {
            oldest.cancel();
        }
        s.next += 1;
        let id = s.next;
        let evicted = CancellationToken::new();
        s.order.push_back((id, evicted.clone()));
        s.per_ip.insert(ip, n + 1);
        Some(Handshake { id, ip, evicted, all: Arc::clone(self) })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut s = self.all.lock();
        s.order.retain(|(id, _)| *id != self.id);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What [`connection::serve`] needs of a socket.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Socket for S {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn handshakes_are_capped_per_address_and_the_oldest_gives_way() {
        let h = Arc::new(Handshakes::new(3));
        let a = IpAddr::from([10, 0, 0, 1]);
        let mut from_a: Vec<Handshake> =
            (0..HANDSHAKES_PER_IP).filter_map(|_| h.begin(a)).collect();
        assert_eq!(from_a.len(), HANDSHAKES_PER_IP);
        // Only 3 in total: the first ones were pushed out as later ones began.
        let live = from_a.iter().filter(|x| !x.evicted.is_cancelled()).count();
        assert_eq!(live, 3);
        assert!(h.begin(a).is_none(), "16 per address, evicted or not, until they end");
        from_a.clear();
        let b = h.begin(IpAddr::from([10, 0, 0, 2])).unwrap();
        assert!(!b.evicted.is_cancelled());
        drop(b);
        assert!(h.lock().per_ip.is_empty() && h.lock().order.is_empty());
    }
}
