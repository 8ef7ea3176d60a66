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
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(PREFIX_LEN + len);
    // Messages built by this crate's users stay far below 4 GiB; the relay and clients check
    // sizes against MAX_FRAME_LEN before sending, so the cast cannot truncate a valid frame.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Request, request};
    use proptest::prelude::*;

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
