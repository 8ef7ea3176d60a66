//! Frame I/O over quinn streams (feature `quinn`), used by the relay and the native client.
//!
//! [`read_frame`] checks the length prefix against the caller's limit as soon as it arrives and
//! grows the body as bytes come in ([`frame::FrameCollector`]), so an announced but unsent body
//! costs nothing; it tells a clean end of stream (no bytes) apart from a frame cut short.

use prost::Message;

use crate::frame::{self, FrameBody, FrameCollector, FrameError};

/// Why a frame could not be read from or written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Reads one frame body; `Ok(None)` if the stream ended cleanly before a new frame began.
/// Reads nothing past the frame.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<FrameBody>, StreamError> {
    let mut frame = FrameCollector::new(limit);
    while frame.wanted() > 0 {
        match recv.read_chunk(frame.wanted(), true).await? {
            Some(chunk) => {
                let mut bytes: &[u8] = &chunk.bytes;
                while !bytes.is_empty() {
                    // `read_chunk` returned no more than the frame wants, so each push takes
                    // something until the chunk is used up.
                    let taken = frame.push(bytes)?;
                    if taken == 0 {
                        break;
                    }
                    bytes = bytes.get(taken..).unwrap_or_default();
                }
            }
            None => break,
        }
    }
    Ok(frame.finish()?)
}

/// Most bytes taken from the stream per read by a [`FrameReader`].
const READ_CHUNK: usize = 64 * 1024;

/// Reads the consecutive frames of one long-lived stream (a delivery stream) through a
/// [`frame::Reassembler`]: one stream read per chunk of whatever has arrived, instead of two
/// reads per frame, each of which takes the connection's lock. Not cancel-safe: keep one task
/// awaiting it.
pub struct FrameReader {
    recv: quinn::RecvStream,
    frames: frame::Reassembler,
}

impl FrameReader {
    /// Reads `recv` from here on.
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self { recv, frames: frame::Reassembler::new() }
    }

    /// The next message, decoded; `Ok(None)` if the stream ended cleanly between frames.
    pub async fn next<M: Message + Default>(
        &mut self,
        limit: usize,
    ) -> Result<Option<M>, StreamError> {
        loop {
            if let Some(m) = self.buffered(limit)? {
                return Ok(Some(m));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await? {
                Some(chunk) => self.frames.extend(&chunk.bytes),
                None if self.frames.is_mid_frame() => return Err(FrameError::Truncated.into()),
                None => return Ok(None),
            }
        }
    }

    /// The next message if its whole frame has already arrived; never waits. A reader that
    /// has just awaited [`FrameReader::next`] takes what else is there this way, to hand the
    /// messages on together. A stream read that would have to wait is not waited for (quinn's
    /// reads are cancel-safe, so the one poll of it is simply dropped).
    pub fn next_ready<M: Message + Default>(
        &mut self,
        limit: usize,
    ) -> Result<Option<M>, StreamError> {
        use std::future::Future;
        loop {
            if let Some(m) = self.buffered(limit)? {
                return Ok(Some(m));
            }
            let read = std::pin::pin!(self.recv.read_chunk(READ_CHUNK, true));
            // One poll with a no-op waker: the reader's next `next` registers a real one.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match read.poll(&mut cx) {
                std::task::Poll::Ready(Ok(Some(chunk))) => self.frames.extend(&chunk.bytes),
                // The end of the stream, or nothing more yet: `next` reports the end.
                std::task::Poll::Ready(Ok(None)) | std::task::Poll::Pending => return Ok(None),
                std::task::Poll::Ready(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The next message whose whole frame is already in the reassembly buffer.
    fn buffered<M: Message + Default>(&mut self, limit: usize) -> Result<Option<M>, StreamError> {
        match self.frames.next_frame(limit)? {
            Some(body) => Ok(Some(frame::decode(body)?)),
            None => Ok(None),
        }
    }
}

/// Reads and decodes one message; a clean end of stream is an error here.
pub async fn read_message<M: Message + Default>(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<M, StreamError> {
    let body = read_frame(recv, limit).await?.ok_or(FrameError::Truncated)?;
    Ok(body.decode()?)
}

/// Consumes the end of a request or response stream if it has already arrived, so dropping
/// the stream does not send a STOP_SENDING frame (one fewer frame, often one fewer packet, per
/// request). Never waits: a peer that has not finished yet is simply stopped on drop.
pub fn consume_fin(recv: &mut quinn::RecvStream) {
    use std::future::Future;
    let mut probe = [0u8; 1];
    let read = std::pin::pin!(recv.read(&mut probe));
    // One poll with a no-op waker: no timer, no task wake-up; whatever it returns is fine.
    let _ = read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
}

/// Writes one message as a frame.
pub async fn write_message<M: Message>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), StreamError> {
    send.write_all(&frame::encode(msg)).await?;
    Ok(())
}
