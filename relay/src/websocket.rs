//! The WebSocket listener: the relay protocol for browsers and for networks that block UDP.
//!
//! Browsers can't open raw QUIC, so the relay also accepts WebSocket connections, over TLS with
//! the relay's own certificate (or in plain text behind a TLS-terminating proxy, `ws_tls =
//! false`). Each binary message carries one frame of one virtual stream
//! (`hush_protocol::websocket`, docs/PROTOCOL.md §14.15), and every stream is served by the same
//! dispatcher and delivery loop as a QUIC stream ([`crate::streams`]), so the checks, limits and
//! error codes are identical. What QUIC gives for free is rebuilt here:
//! - stream limits: at most `max_streams_per_connection` streams open at once; one more is
//!   answered `bad_request` on its own stream;
//! - flow control: a per-connection window of twice `max_request_bytes` of received but
//!   unhandled bytes (the reader waits when it is used up), and before authentication nothing
//!   larger than the 64 KiB pre-auth limit is queued at all;
//! - connection limits: the per-IP and total slots are taken before the TLS handshake;
//! - idle timeout: the relay pings every third of `idle_timeout_secs` and drops a connection
//!   that sent nothing (not even a pong) for `idle_timeout_secs`;
//! - close codes: a relay close uses WebSocket close code 4000 + the QUIC application code.
//!
//! The TLS and WebSocket handshakes together must finish within 10 s, so a slow peer can't hold
//! a connection slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hush_protocol::close;
use hush_protocol::frame::PREFIX_LEN;
use hush_protocol::websocket::{self as ws, WsMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::error::RelayError;
use crate::server::{PRE_AUTH_MAX_REQUEST, Relay};
use crate::streams::{FrameRead, FrameWrite, Peer, ReadError};

/// TLS plus WebSocket handshake deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the socket before writers wait.
const OUTBOUND_BUFFER: usize = 256;
/// Messages queued per inbound stream before the reader waits (acks on a subscription).
const INBOUND_BUFFER: usize = 16;
/// WebSocket close codes for relay close codes start here (4000–4999 are for applications).
pub const CLOSE_CODE_BASE: u16 = 4000;

/// A WebSocket connection, as the rest of the relay sees it ([`Peer::WebSocket`]).
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

    fn close_frame(&self) -> CloseFrame {
        let (code, reason) = self
            .shared
            .close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or((close::NORMAL, "closed"));
        let code = CLOSE_CODE_BASE.saturating_add(u16::try_from(code).unwrap_or(999));
        CloseFrame { code: CloseCode::from(code), reason: reason.into() }
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
    /// Binds `addr`; `tls` is `None` for plain WebSocket behind a TLS-terminating proxy.
    pub async fn bind(
        relay: Arc<Relay>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let closing = CancellationToken::new();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(relay, listener, acceptor, closing.clone()));
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
    closing: CancellationToken,
) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => {
                    if relay.shutdown.is_cancelled() {
                        continue;
                    }
                    let relay = Arc::clone(&relay);
                    let (tls, closing) = (tls.clone(), closing.clone());
                    connections.spawn(async move {
                        connection(relay, tcp, from.ip(), tls, closing).await;
                    });
                }
                // Out of file descriptors, say: back off briefly instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "websocket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = closing.cancelled() => break,
        }
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}

async fn connection(
    relay: Arc<Relay>,
    tcp: TcpStream,
    ip: IpAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    closing: CancellationToken,
) {
    // The slot is taken before the handshake, so connections still handshaking count too and
    // a flood of half-open TLS connections can't exhaust file descriptors. Over the limit,
    // the TCP connection is closed at once, before any TLS.
    let Some(slot) = relay.limiters.admit(ip) else {
        relay.metrics.connections_refused_total.inc();
        return;
    };
    let _ = tcp.set_nodelay(true);
    let limit = relay.config.max_request_bytes.min(hush_protocol::MAX_FRAME_LEN);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit + ws::STREAM_ID_LEN + hush_protocol::frame::PREFIX_LEN))
        .max_frame_size(Some(limit + ws::STREAM_ID_LEN + hush_protocol::frame::PREFIX_LEN));
    let handshake = async {
        match tls {
            Some(acceptor) => {
                let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                let ws = tokio_tungstenite::accept_hdr_async_with_config(
                    tls,
                    choose_subprotocol,
                    Some(config),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>(Either::Tls(ws))
            }
            None => {
                let ws = tokio_tungstenite::accept_hdr_async_with_config(
                    tcp,
                    choose_subprotocol,
                    Some(config),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(Either::Plain(ws))
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(Either::Tls(ws))) => serve(relay, ws, ip, slot, closing).await,
        Ok(Ok(Either::Plain(ws))) => serve(relay, ws, ip, slot, closing).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "websocket handshake failed"),
        Err(_) => tracing::debug!("websocket handshake timed out"),
    }
}

enum Either<A, B> {
    Tls(A),
    Plain(B),
}

/// Accepts only clients that offer the `hush.v1` subprotocol, and echoes it (browsers fail a
/// connection whose server ignores the subprotocol they asked for).
#[allow(clippy::result_large_err)] // The signature is tungstenite's callback type.
fn choose_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == ws::SUBPROTOCOL);
    if !offered {
        let mut err = ErrorResponse::new(Some(format!(
            "the Hush relay needs the WebSocket subprotocol {}",
            ws::SUBPROTOCOL
        )));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(ws::SUBPROTOCOL));
    Ok(resp)
}

async fn serve<S>(
    relay: Arc<Relay>,
    socket: tokio_tungstenite::WebSocketStream<S>,
    ip: IpAddr,
    _slot: crate::limits::ConnectionSlot,
    closing: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    relay.metrics.connections_total.inc();
    relay.metrics.connections.inc();
    let peer = WsPeer::default();
    let conn = Arc::new(relay.new_conn(Peer::WebSocket(peer.clone()), ip));
    let (out, mut outbound) = mpsc::channel::<Message>(OUTBOUND_BUFFER);

    // The writer owns the socket's sending half. A close request jumps the queue and interrupts
    // a send in progress, and a send that makes no progress for the idle timeout ends the
    // connection: a peer that stopped reading can't keep it (or its tasks) alive.
    let writer_peer = peer.clone();
    let write_deadline = Duration::from_secs(relay.config.idle_timeout_secs.max(1));
    let writer = tokio::spawn(async move {
        let close_requested = writer_peer.shared.close_requested.clone();
        loop {
            let next = tokio::select! {
                biased;
                () = close_requested.cancelled() => None,
                m = outbound.recv() => m,
            };
            let Some(message) = next else { break };
            let sent = tokio::select! {
                r = tokio::time::timeout(write_deadline, sink.send(message)) => matches!(r, Ok(Ok(()))),
                () = close_requested.cancelled() => false,
            };
            if !sent {
                break;
            }
        }
        if close_requested.is_cancelled() {
            let frame = writer_peer.close_frame();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
        writer_peer.shared.closed.cancel();
    });

    let mut streams: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    let permits = Arc::new(Semaphore::new(relay.config.max_streams_per_connection as usize));
    // Flow control, as QUIC's connection receive window (twice the request limit): bytes
    // received but not yet taken by their stream's handler. The reader waits when it is used
    // up, so a peer can't make the relay queue more than this per connection.
    let window =
        u32::try_from(relay.config.max_request_bytes.saturating_mul(2)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(window as usize));
    let mut last_stream = 0u32;
    let idle = Duration::from_secs(relay.config.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval(idle / 3);
    let mut last_seen = Instant::now();
    let auth_deadline = tokio::time::sleep(Duration::from_secs(relay.config.auth_timeout_secs));
    tokio::pin!(auth_deadline);
    let mut armed = true;
    loop {
        tokio::select! {
            m = source.next() => {
                let bytes = match m {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Text(_))) => {
                        peer.close(close::PROTOCOL_VIOLATION, "text_message");
                        break;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {
                        last_seen = Instant::now();
                        continue;
                    }
                };
                last_seen = Instant::now();
                let Some(id) = ws::stream_of(&bytes) else {
                    peer.close(close::PROTOCOL_VIOLATION, "malformed_message");
                    break;
                };
                // Before authentication only small requests are read (as on QUIC): anything
                // bigger is refused here, without being queued for a handler.
                if conn.device.get().is_none()
                    && bytes.len() > PRE_AUTH_MAX_REQUEST + ws::STREAM_ID_LEN + PREFIX_LEN
                {
                    let len = bytes.len() - ws::STREAM_ID_LEN - PREFIX_LEN;
                    streams.remove(&id);
                    last_stream = last_stream.max(id);
                    let e = RelayError::Frame(hush_protocol::FrameError::TooLarge {
                        len,
                        limit: PRE_AUTH_MAX_REQUEST,
                    });
                    relay.metrics.error(e.code());
                    refuse(&out, id, &e);
                    continue;
                }
                let cost = u32::try_from(bytes.len()).unwrap_or(u32::MAX).min(window);
                let credit = tokio::select! {
                    c = Arc::clone(&budget).acquire_many_owned(cost) => c.ok(),
                    () = peer.closed() => None,
                    () = closing.cancelled() => None,
                };
                let Some(credit) = credit else {
                    peer.close(close::GOING_AWAY, "going_away");
                    break;
                };
                let item = Inbound { bytes: bytes.to_vec(), _credit: credit };
                if let Some(tx) = streams.get(&id) {
                    let fin = item.bytes.len() == ws::STREAM_ID_LEN;
                    // The window above bounds what can wait here; a handler that stopped
                    // reading has closed its queue, so this never waits on a dead stream.
                    let delivered = tokio::select! {
                        r = tx.send(item) => r.is_ok(),
                        () = peer.closed() => false,
                    };
                    if fin || !delivered {
                        // A finished stream, or one whose handler stopped reading.
                        streams.remove(&id);
                    }
                    continue;
                }
                if id <= last_stream {
                    // Data for a stream that already ended (QUIC: after STOP_SENDING): ignored.
                    continue;
                }
                last_stream = id;
                streams.retain(|_, tx| !tx.is_closed());
                let mut stream = WsWrite { id, out: out.clone(), slot: None };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    let refusal = RelayError::BadRequest(
                        "too many open streams on this connection".into(),
                    );
                    relay.metrics.error(refusal.code());
                    refuse(&out, id, &refusal);
                    continue;
                };
                let (tx, rx) = mpsc::channel(INBOUND_BUFFER);
                let fin = item.bytes.len() == ws::STREAM_ID_LEN;
                // Cannot fail: the channel is new and empty.
                let _ = tx.try_send(item);
                if !fin {
                    streams.insert(id, tx);
                }
                stream.slot = Some(permit);
                let read = WsRead { rx };
                let (relay, conn) = (Arc::clone(&relay), Arc::clone(&conn));
                relay.tracker.clone().spawn(async move { relay.stream(conn, stream, read).await });
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > idle {
                    peer.close(close::NORMAL, "idle_timeout");
                    break;
                }
                let _ = out.try_send(Message::Ping(Default::default()));
            }
            () = &mut auth_deadline, if armed => {
                if conn.device.get().is_some() {
                    armed = false;
                    continue;
                }
                peer.close(close::AUTH_TIMEOUT, "auth_timeout");
                break;
            }
            () = peer.closed() => break,
            () = closing.cancelled() => {
                peer.close(close::GOING_AWAY, "going_away");
                break;
            }
        }
    }
    // Ends every stream's inbound queue, so subscriptions see the connection go.
    drop(streams);
    peer.close(close::NORMAL, "closed");
    let _ = writer.await;
    relay.connection_ended(&conn);
}

/// A received message waiting for its stream's handler, holding its share of the window.
struct Inbound {
    bytes: Vec<u8>,
    _credit: OwnedSemaphorePermit,
}

/// Answers a stream with an error without a handler and without waiting: if the outbound
/// queue is full the peer isn't reading, and the answer is dropped.
fn refuse(out: &mpsc::Sender<Message>, id: u32, e: &RelayError) {
    let _ = out.try_send(Message::Binary(ws::encode(id, &e.to_response()).into()));
    let _ = out.try_send(Message::Binary(ws::fin(id).into()));
}

/// The sending half of a virtual stream; holds one of the connection's stream slots until it
/// finishes (released before the FIN goes out, so a client that waits for the FIN may open the
/// next stream at once).
struct WsWrite {
    id: u32,
    out: mpsc::Sender<Message>,
    slot: Option<OwnedSemaphorePermit>,
}

impl FrameWrite for WsWrite {
    async fn write<M: prost::Message>(&mut self, msg: &M) -> bool {
        if msg.encoded_len() > hush_protocol::MAX_FRAME_LEN {
            return false;
        }
        let bytes = ws::encode(self.id, msg);
        self.out.send(Message::Binary(bytes.into())).await.is_ok()
    }

    async fn finish(&mut self) {
        self.slot = None;
        let _ = self.out.send(Message::Binary(ws::fin(self.id).into())).await;
    }
}

/// The receiving half of a virtual stream.
struct WsRead {
    rx: mpsc::Receiver<Inbound>,
}

impl FrameRead for WsRead {
    async fn read_frame(&mut self, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(Inbound { bytes: message, .. }) = self.rx.recv().await else {
            return Err(ReadError::Gone("connection closed".into()));
        };
        match ws::decode(&message, limit) {
            Ok(WsMessage::Frame { body, .. }) => Ok(Some(body.to_vec())),
            Ok(WsMessage::Fin { .. }) => Ok(None),
            Err(e) => Err(ReadError::Frame(e)),
        }
    }

    /// A request stream reads one frame: from then on nothing more is queued for it (QUIC
    /// stops the stream on drop to the same effect).
    fn consume_fin(&mut self) {
        self.rx.close();
    }

    fn stop(&mut self) {
        self.rx.close();
    }
}
