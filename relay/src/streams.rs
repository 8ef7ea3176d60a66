//! One stream of the relay protocol, whatever carries it: a QUIC bidirectional stream or a
//! virtual stream on a WebSocket connection ([`crate::websocket`]).
//!
//! The request dispatcher ([`crate::server`]) and the delivery loop ([`crate::delivery`]) are
//! written once against [`FrameRead`] and [`FrameWrite`], so both transports get exactly the
//! same checks, limits and error codes. A connection is a [`Peer`].

use std::future::Future;
use std::time::Duration;

use hush_protocol::FrameError;
use hush_protocol::auth::CHANNEL_BINDING_LEN;
use hush_protocol::frame::{FrameBody, FrameCollector};
use prost::Message;

use crate::budget::{Exhausted, Held};
use crate::error::RelayError;
use crate::websocket::WsPeer;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes were not a valid frame: answer with its code.
    Frame(FrameError),
    /// The frame's bytes did not fit the memory budget: answer `rate_limited`.
    Refused(Exhausted),
    /// The stream or connection is gone: nothing can be answered.
    Gone(String),
}

/// The receiving side of a stream.
pub trait FrameRead: Send + 'static {
    /// Reads one frame body of at most `limit` bytes, charging the memory it takes to `held`
    /// as its bytes arrive; `Ok(None)` if the peer finished the stream cleanly before a new
    /// frame began.
    fn read_frame(
        &mut self,
        limit: usize,
        held: &mut Held,
    ) -> impl Future<Output = Result<Option<FrameBody>, ReadError>> + Send;
    /// Consumes an already-arrived end of stream, never waiting (QUIC: saves a STOP_SENDING).
    fn consume_fin(&mut self) {}
    /// Tells the peer to stop sending on this stream.
    fn stop(&mut self);
}

/// The sending side of a stream.
pub trait FrameWrite: Send + 'static {
    /// Writes one message as a frame; false if the stream or connection is gone.
    fn write<M: Message>(&mut self, msg: &M) -> impl Future<Output = bool> + Send;
    /// Writes several messages as consecutive frames, in order; false if the stream or
    /// connection is gone (some of them may have been sent). A transport that can hand them
    /// over in fewer writes does (a mailbox drain sends hundreds at a time).
    fn write_each<M: Message + Sync>(&mut self, msgs: &[M]) -> impl Future<Output = bool> + Send {
        async move {
            for m in msgs {
                if !self.write(m).await {
                    return false;
                }
            }
            true
        }
    }
    /// Finishes the stream after everything written so far.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
    /// Waits, at most `limit`, until the peer has acknowledged everything written and the
    /// finish: closing the connection right after would discard data not yet sent (a GoAway
    /// on shutdown). A transport that sends in order before it closes needs no wait.
    fn delivered(&mut self, limit: Duration) -> impl Future<Output = ()> + Send {
        let _ = limit;
        async {}
    }
}

impl FrameRead for quinn::RecvStream {
    /// Reads exactly one frame, a chunk at a time as it arrives. Each block of the body is
    /// charged before it is allocated; one that does not fit ends the read (the caller stops
    /// the stream, so quinn discards whatever else the peer sends on it).
    async fn read_frame(
        &mut self,
        limit: usize,
        held: &mut Held,
    ) -> Result<Option<FrameBody>, ReadError> {
        let mut frame = FrameCollector::new(limit);
        while frame.wanted() > 0 {
            let chunk = match self.read_chunk(frame.wanted(), true).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(ReadError::Gone(e.to_string())),
            };
            let mut bytes: &[u8] = &chunk.bytes;
            while !bytes.is_empty() {
                if let Some(block) = frame.next_block() {
                    held.try_grow(block).map_err(ReadError::Refused)?;
                }
                let taken = frame.push(bytes).map_err(ReadError::Frame)?;
                // `read_chunk` returned no more than the frame wants, so each push takes
                // something until the chunk is used up.
                if taken == 0 {
                    break;
                }
                bytes = bytes.get(taken..).unwrap_or_default();
            }
        }
        frame.finish().map_err(ReadError::Frame)
    }

    fn consume_fin(&mut self) {
        hush_protocol::quic::consume_fin(self);
    }

    fn stop(&mut self) {
        let _ = quinn::RecvStream::stop(self, 0u32.into());
    }
}

/// Frames gathered into one QUIC stream write: each write takes the connection's lock and may
/// wake its driver, which costs more than copying a few hundred bytes.
const WRITE_CHUNK: usize = 64 * 1024;

impl FrameWrite for quinn::SendStream {
    async fn write<M: Message>(&mut self, msg: &M) -> bool {
        let bytes = hush_protocol::frame::encode(msg);
        self.write_all(&bytes).await.is_ok()
    }

    async fn write_each<M: Message + Sync>(&mut self, msgs: &[M]) -> bool {
        let mut buf = Vec::new();
        for m in msgs {
            hush_protocol::frame::encode_into(m, &mut buf);
            if buf.len() >= WRITE_CHUNK {
                if self.write_all(&buf).await.is_err() {
                    return false;
                }
                buf.clear();
            }
        }
        buf.is_empty() || self.write_all(&buf).await.is_ok()
    }

    async fn finish(&mut self) {
        let _ = quinn::SendStream::finish(self);
    }

    async fn delivered(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stopped()).await;
    }
}

/// One client connection, over QUIC or WebSocket.
#[derive(Clone)]
pub enum Peer {
    /// A QUIC connection.
    Quic(quinn::Connection),
    /// A WebSocket (over TLS) connection.
    WebSocket(WsPeer),
}

impl Peer {
    /// The transport's name in metrics: `quic` or `websocket`.
    pub fn transport(&self) -> &'static str {
        match self {
            Peer::Quic(_) => "quic",
            Peer::WebSocket(_) => "websocket",
        }
    }

    /// Closes the connection with an application close code (docs/PROTOCOL.md §14.11).
    pub fn close(&self, code: u32, reason: &'static str) {
        match self {
            Peer::Quic(c) => c.close(code.into(), reason.as_bytes()),
            Peer::WebSocket(w) => w.close(code, reason),
        }
    }

    /// Resolves once the connection is closed, by either side.
    pub async fn closed(&self) {
        match self {
            Peer::Quic(c) => {
                c.closed().await;
            }
            Peer::WebSocket(w) => w.closed().await,
        }
    }

    /// Opens the connection up once it is authenticated: over QUIC the connection receive
    /// window grows from the pre-auth size to two largest requests (quinn buffers at most
    /// that much for it); WebSocket has no window of its own (its buffer is the budget's).
    pub fn authenticated(&self, max_request_bytes: usize) {
        if let Peer::Quic(c) = self {
            let window = u32::try_from(max_request_bytes.saturating_mul(2)).unwrap_or(u32::MAX);
            c.set_receive_window(quinn::VarInt::from_u32(window));
        }
    }

    /// The channel binding the device's auth signature covers (§14.6).
    pub fn channel_binding(&self) -> Result<[u8; CHANNEL_BINDING_LEN], RelayError> {
        match self {
            Peer::Quic(c) => {
                let mut binding = [0u8; CHANNEL_BINDING_LEN];
                c.export_keying_material(&mut binding, hush_protocol::AUTH_EXPORTER_LABEL, b"")
                    .map_err(|_| RelayError::BadRequest("connection has no exporter".into()))?;
                Ok(binding)
            }
            Peer::WebSocket(_) => Ok(hush_protocol::websocket::channel_binding()),
        }
    }
}
