//! One WebSocket connection: a reader that decodes the client's frames into virtual streams
//! (each served by [`Relay::stream`], exactly like a QUIC stream), a writer that owns the
//! socket's sending half, pings and deadlines.
//!
//! Memory: the reader charges every block a message's frame takes to the connection's budget
//! before it is allocated ([`crate::budget`]); the charge travels with the frame to its
//! stream's handler and is given back when the request is answered. When the budget is used
//! up the reader stops reading the socket until it is not. A message must arrive whole within
//! 15 s of its first byte, or the connection is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_protocol::close;
use hush_protocol::frame::{FrameBody, FrameError, PREFIX_LEN};
use hush_protocol::websocket::STREAM_ID_LEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_util::sync::CancellationToken;

use super::frames::{self, Decoder, Event, Violation};
use super::{Socket, WsPeer};
use crate::budget::Held;
use crate::error::RelayError;
use crate::server::{PRE_AUTH_BUFFER, PRE_AUTH_MAX_REQUEST, Relay};
use crate::streams::{FrameRead, FrameWrite, Peer, ReadError};

/// Frames queued for the socket before writers wait.
const OUTBOUND_BUFFER: usize = 256;
/// Frames queued per stream before the reader waits (acks on a subscription).
const INBOUND_BUFFER: usize = 16;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Frames gathered into one socket write at most.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a message may take to arrive, from its first byte (QUIC's request deadline).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a stream's handler receives.
enum Inbound {
    /// A frame, with the memory charged for it.
    Frame(FrameBody, Held),
    /// The client finished the stream.
    Fin,
    /// An unusable frame.
    Bad(FrameError),
}

/// Serves one upgraded connection until it closes. `leftover` is what the client sent after
/// its upgrade request.
pub(super) async fn serve<S: Socket>(
    relay: Arc<Relay>,
    io: S,
    leftover: Vec<u8>,
    ip: IpAddr,
    _slot: crate::limits::ConnectionSlot,
    closing: CancellationToken,
) {
    let (mut rd, wr) = tokio::io::split(io);
    relay.metrics.connections_total.inc();
    relay.metrics.connections("websocket").inc();
    let peer = WsPeer::default();
    // Before authentication a message's frame is refused above 64 KiB as soon as its length
    // prefix arrives, so a connection buffers no more than over QUIC.
    let conn = Arc::new(relay.new_conn(Peer::WebSocket(peer.clone()), ip, PRE_AUTH_BUFFER));
    let (out, outbound) = mpsc::channel::<Vec<u8>>(OUTBOUND_BUFFER);
    let write_deadline = Duration::from_secs(relay.config.idle_timeout_secs.max(1));
    let writer = tokio::spawn(write_loop(wr, outbound, peer.clone(), write_deadline));

    let mut streams: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    let permits = Arc::new(Semaphore::new(relay.config.max_streams_per_connection as usize));
    let mut last_stream = 0u32;
    let idle = Duration::from_secs(relay.config.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval(idle / 3);
    let mut last_seen = Instant::now();
    let auth_deadline = tokio::time::sleep(Duration::from_secs(relay.config.auth_timeout_secs));
    tokio::pin!(auth_deadline);
    let mut armed = true;
    let max_message = relay.config.max_request_bytes + STREAM_ID_LEN + PREFIX_LEN;
    let mut decoder = Decoder::new(max_message);
    // The charge for the message being decoded; it goes with the frame to its handler.
    let mut pending = conn.budget.hold();
    let mut message_since: Option<Instant> = None;
    let mut input = leftover;
    let mut at = 0;
    let reason = 'conn: loop {
        if at < input.len() {
            let started = *message_since.get_or_insert_with(Instant::now);
            let deadline = tokio::time::Instant::from_std(started + MESSAGE_TIMEOUT);
            if let Some(block) = decoder.next_block() {
                let charged = tokio::select! {
                    r = pending.grow(block) => r.is_ok(),
                    () = tokio::time::sleep_until(deadline) => false,
                    () = peer.closed() => break 'conn None,
                    () = closing.cancelled() => break 'conn Some((close::GOING_AWAY, "going_away")),
                };
                if !charged {
                    break Some((close::NORMAL, "message_timeout"));
                }
            }
            let limit = if conn.device.get().is_some() {
                relay.config.max_request_bytes
            } else {
                PRE_AUTH_MAX_REQUEST.min(relay.config.max_request_bytes)
            };
            let (n, event) = match decoder.push(input.get(at..).unwrap_or_default(), limit) {
                Ok(step) => step,
                Err(Violation::Text) => break Some((close::PROTOCOL_VIOLATION, "text_message")),
                Err(Violation::TooBig) => {
                    break Some((close::PROTOCOL_VIOLATION, "message_too_big"));
                }
                Err(Violation::Malformed(why)) => {
                    tracing::debug!(why, "malformed websocket message");
                    break Some((close::PROTOCOL_VIOLATION, "malformed_message"));
                }
            };
            at += n;
            let Some(event) = event else { continue };
            if !decoder.is_mid_message() {
                message_since = None;
            }
            let (id, item) = match event {
                Event::Frame { stream, body } => {
                    let held = std::mem::replace(&mut pending, conn.budget.hold());
                    (stream, Inbound::Frame(body, held))
                }
                Event::Fin { stream } => (stream, Inbound::Fin),
                Event::Bad { stream, error } => {
                    // Whatever was charged for it is given back: its bytes were skipped.
                    pending = conn.budget.hold();
                    (stream, Inbound::Bad(error))
                }
                Event::Ping(payload) => {
                    let pong =
                        frames::server_frame(OpCode::Control(Control::Pong), payload.len(), |o| {
                            o.extend_from_slice(&payload)
                        });
                    let _ = out.try_send(pong);
                    continue;
                }
                Event::Pong => continue,
                Event::Close => break None,
            };
            if let Some(tx) = streams.get(&id) {
                let fin = matches!(item, Inbound::Fin);
                // Budgets bound what can wait here; a handler that stopped reading has closed
                // its queue, so this never waits on a dead stream.
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
            if let Inbound::Bad(error) = item {
                // The stream's first frame is unusable: answered without a handler.
                let e = RelayError::Frame(error);
                relay.metrics.error(e.code());
                refuse(&out, id, &e);
                continue;
            }
            streams.retain(|_, tx| !tx.is_closed());
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                let refusal =
                    RelayError::BadRequest("too many open streams on this connection".into());
                relay.metrics.error(refusal.code());
                refuse(&out, id, &refusal);
                continue;
            };
            let (tx, rx) = mpsc::channel(INBOUND_BUFFER);
            let fin = matches!(item, Inbound::Fin);
            // Cannot fail: the channel is new and empty.
            let _ = tx.try_send(item);
            if !fin {
                streams.insert(id, tx);
            }
            let stream = WsWrite { id, out: out.clone(), slot: Some(permit) };
            let read = WsRead { rx };
            let (relay, conn) = (Arc::clone(&relay), Arc::clone(&conn));
            relay.tracker.clone().spawn(async move { relay.stream(conn, stream, read).await });
            continue;
        }
        tokio::select! {
            read = read_some(&mut rd, &mut input) => match read {
                Some(n) if n > 0 => {
                    at = 0;
                    last_seen = Instant::now();
                }
                _ => break None,
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > idle {
                    break Some((close::NORMAL, "idle_timeout"));
                }
                if message_since.is_some_and(|t| t.elapsed() > MESSAGE_TIMEOUT) {
                    break Some((close::NORMAL, "message_timeout"));
                }
                let _ = out.try_send(frames::server_frame(OpCode::Control(Control::Ping), 0, |_| {}));
            }
            () = &mut auth_deadline, if armed => {
                if conn.device.get().is_some() {
                    armed = false;
                    continue;
                }
                break Some((close::AUTH_TIMEOUT, "auth_timeout"));
            }
            () = peer.closed() => break None,
            () = closing.cancelled() => break Some((close::GOING_AWAY, "going_away")),
        }
    };
    if let Some((code, why)) = reason {
        peer.close(code, why);
    }
    // Ends every stream's inbound queue, so subscriptions see the connection go.
    drop(streams);
    drop(pending);
    peer.close(close::NORMAL, "closed");
    let _ = writer.await;
    relay.connection_ended(&conn);
}

/// Reads what has arrived into `input` (reusing its allocation); `None` when the socket is
/// closed or failed. Cancel-safe: `read_buf` writes nothing unless it completes.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    input: &mut Vec<u8>,
) -> Option<usize> {
    input.clear();
    input.reserve(READ_CHUNK);
    rd.read_buf(input).await.ok()
}

/// Owns the socket's sending half. A close request jumps the queue and interrupts a write in
/// progress, and a write that makes no progress for the idle timeout ends the connection: a
/// peer that stopped reading can't keep it (or its tasks) alive.
async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    peer: WsPeer,
    deadline: Duration,
) {
    let close_requested = peer.shared.close_requested.clone();
    loop {
        let next = tokio::select! {
            biased;
            () = close_requested.cancelled() => None,
            m = outbound.recv() => m,
        };
        let Some(mut frame) = next else { break };
        // Frames already queued go out in the same write (a drain queues hundreds).
        while frame.len() < WRITE_BATCH {
            match outbound.try_recv() {
                Ok(more) => frame.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let write = async {
            wr.write_all(&frame).await?;
            wr.flush().await
        };
        let sent = tokio::select! {
            r = tokio::time::timeout(deadline, write) => matches!(r, Ok(Ok(()))),
            () = close_requested.cancelled() => false,
        };
        if !sent {
            break;
        }
    }
    if close_requested.is_cancelled() {
        let frame = peer.close_frame();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            wr.write_all(&frame).await?;
            wr.shutdown().await
        })
        .await;
    }
    peer.shared.closed.cancel();
}

/// Answers a stream with an error without a handler and without waiting: if the outbound
/// queue is full the peer isn't reading, and the answer is dropped.
fn refuse(out: &mpsc::Sender<Vec<u8>>, id: u32, e: &RelayError) {
    let _ = out.try_send(message(id, &e.to_response()));
    let _ = out.try_send(fin(id));
}

/// A binary message carrying `msg` as a frame of stream `id`.
fn message<M: prost::Message>(id: u32, msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    frames::server_frame(OpCode::Data(Data::Binary), STREAM_ID_LEN + PREFIX_LEN + len, |out| {
        out.extend_from_slice(&id.to_be_bytes());
        // Sizes are checked against MAX_FRAME_LEN before sending (`WsWrite::write`).
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        msg.encode_raw(out);
    })
}

/// The message that finishes stream `id`.
fn fin(id: u32) -> Vec<u8> {
    frames::server_frame(OpCode::Data(Data::Binary), STREAM_ID_LEN, |out| {
        out.extend_from_slice(&id.to_be_bytes())
    })
}

/// The sending half of a virtual stream; holds one of the connection's stream slots until it
/// finishes (released before the FIN goes out, so a client that waits for the FIN may open the
/// next stream at once).
struct WsWrite {
    id: u32,
    out: mpsc::Sender<Vec<u8>>,
    slot: Option<OwnedSemaphorePermit>,
}

impl FrameWrite for WsWrite {
    async fn write<M: prost::Message>(&mut self, msg: &M) -> bool {
        if msg.encoded_len() > hush_protocol::MAX_FRAME_LEN {
            return false;
        }
        self.out.send(message(self.id, msg)).await.is_ok()
    }

    async fn finish(&mut self) {
        self.slot = None;
        let _ = self.out.send(fin(self.id)).await;
    }
}

/// The receiving half of a virtual stream.
struct WsRead {
    rx: mpsc::Receiver<Inbound>,
}

impl FrameRead for WsRead {
    /// The next frame of the stream. Its memory was charged as it arrived; the charge moves
    /// to `held`.
    async fn read_frame(
        &mut self,
        limit: usize,
        held: &mut Held,
    ) -> Result<Option<FrameBody>, ReadError> {
        match self.rx.recv().await {
            None => Err(ReadError::Gone("connection closed".into())),
            Some(Inbound::Fin) => Ok(None),
            Some(Inbound::Bad(e)) => Err(ReadError::Frame(e)),
            Some(Inbound::Frame(body, charge)) => {
                if body.len() > limit {
                    // The connection-wide limit let it through; this stream's is smaller (acks).
                    return Err(ReadError::Frame(FrameError::TooLarge { len: body.len(), limit }));
                }
                // A frame of this connection always reaches a handler of this connection.
                held.absorb(charge)
                    .map_err(|_| ReadError::Gone("a frame of another connection".into()))?;
                Ok(Some(body))
            }
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
