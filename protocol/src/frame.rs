//! Length-prefixed framing for every QUIC stream of the relay protocol.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one protobuf message.
//! The length is checked against a limit before anything is allocated, so a hostile length
//! prefix costs nothing. This module is sans-I/O: the relay and clients read the 4-byte prefix
//! and the body from their streams and call [`body_len`] and [`decode`].

use prost::Message;
use thiserror::Error;

use crate::ErrorCode;

/// The largest frame any peer may send or accept, whatever its configuration: 4 MiB.
/// Operators may configure a smaller request limit; nothing larger is ever valid.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Length of the frame prefix.
pub const PREFIX_LEN: usize = 4;

/// Why a frame was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The body is not a valid protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::Truncated | Self::Malformed(_) => ErrorCode::MalformedFrame,
        }
    }
}

/// Encodes `msg` as one frame.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + msg.encoded_len());
    encode_into(msg, &mut out);
    out
}

/// Appends `msg` as one frame to `out`, so several frames can go out in one stream write.
pub fn encode_into<M: Message>(msg: &M, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    out.reserve(PREFIX_LEN + len);
    // Messages built by this crate's users stay far below 4 GiB; the relay and clients check
    // sizes against MAX_FRAME_LEN before sending, so the cast cannot truncate a valid frame.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(out);
}

/// Checks a length prefix against `limit` (itself capped at [`MAX_FRAME_LEN`]).
pub fn body_len(prefix: [u8; PREFIX_LEN], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    let limit = limit.min(MAX_FRAME_LEN);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Decodes a frame body as message `M`.
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    M::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A frame body and the bytes after it.
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Splits one complete frame off the front of `buf`: `Ok(None)` if more bytes are needed.
/// Used by tests and by byte-stream transports (WebSocket) that deliver frames in pieces.
pub fn split(buf: &[u8], limit: usize) -> Result<Option<Split<'_>>, FrameError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*prefix, limit)?;
    if rest.len() < len {
        return Ok(None);
    }
    Ok(Some(rest.split_at(len)))
}

/// Reassembles the frames of one long-lived byte stream that arrives in chunks of any size
/// (a delivery stream read a chunk at a time). Sans-I/O: the caller feeds what it read and
/// takes whole frames out. A length prefix is checked against the limit as soon as it is
/// buffered, so the buffer holds at most one frame of at most the limit plus the last chunk.
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
    /// Where the bytes not yet taken start in `buf`.
    start: usize,
}

impl Reassembler {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        // Taken frames are dropped only here, so taking many frames out of one chunk moves
        // the remainder once.
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's body: `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError> {
        let unread = self.buf.get(self.start..).unwrap_or_default();
        let Some((body, rest)) = split(unread, limit)? else { return Ok(None) };
        let end = self.buf.len() - rest.len();
        let begin = end - body.len();
        self.start = end;
        Ok(self.buf.get(begin..end))
    }

    /// Whether bytes of an unfinished frame are buffered (at the end of the stream: a frame
    /// cut short).
    pub fn is_mid_frame(&self) -> bool {
        self.start < self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Request, request};
    use proptest::prelude::*;

    proptest! {
        /// Frames cut into chunks anywhere come out whole and in order; a cut-short tail is
        /// reported as mid-frame.
        #[test]
        fn reassembler_yields_the_frames_whatever_the_chunks(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in proptest::collection::vec(1usize..200, 1..50),
            truncate in 0usize..4,
        ) {
            let mut stream = Vec::new();
            let mut ends = vec![0];
            for b in &bodies {
                stream.extend_from_slice(&u32::try_from(b.len()).unwrap().to_be_bytes());
                stream.extend_from_slice(b);
                ends.push(stream.len());
            }
            stream.truncate(stream.len() - truncate.min(stream.len()));
            // The frames wholly inside what is left, and whether a piece of the next one is.
            let whole = ends.iter().filter(|e| **e <= stream.len()).count() - 1;
            let cut_short = !ends.contains(&stream.len());
            let mut r = Reassembler::new();
            let mut out = Vec::new();
            let (mut pos, mut i) = (0, 0);
            while pos < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - pos);
                r.extend(&stream[pos..pos + n]);
                pos += n;
                i += 1;
                while let Some(body) = r.next_frame(MAX_FRAME_LEN).unwrap() {
                    out.push(body.to_vec());
                }
            }
            prop_assert_eq!(r.is_mid_frame(), cut_short);
            prop_assert_eq!(&out[..], &bodies[..whole]);
        }
    }

    #[test]
    fn reassembler_refuses_an_oversize_prefix_before_its_body_arrives() {
        let mut r = Reassembler::new();
        r.extend(&1001u32.to_be_bytes());
        assert_eq!(r.next_frame(1000), Err(FrameError::TooLarge { len: 1001, limit: 1000 }));
    }

    #[test]
    fn round_trip() {
        let req = Request { body: Some(request::Body::GetChallenge(Default::default())) };
        let bytes = encode(&req);
        let (body, rest) = split(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
        assert!(rest.is_empty());
        assert_eq!(decode::<Request>(body).unwrap(), req);
    }

    #[test]
    fn oversize_prefix_is_refused_before_allocation() {
        let prefix = (u32::MAX).to_be_bytes();
        assert_eq!(body_len(prefix, 1 << 30).unwrap_err().code(), ErrorCode::FrameTooLarge);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((body, _))) = split(&bytes, 1024) {
                let _ = decode::<Request>(body);
                let _ = decode::<crate::wire::Response>(body);
                let _ = decode::<crate::wire::ServerPush>(body);
                let _ = decode::<crate::wire::ClientPush>(body);
            }
            let _ = decode::<Request>(&bytes);
        }
    }
}
