//! The relay protocol over WebSocket: the same frames as over QUIC, with streams multiplexed
//! on one WebSocket connection (docs/PROTOCOL.md §14.15).
//!
//! Browsers can't open raw QUIC, and UDP is often blocked, so the relay also listens for
//! WebSocket over TLS. A WebSocket connection is one ordered byte-message pipe, so each binary
//! message names the virtual stream it belongs to:
//!
//! ```text
//! message = u32(stream_id) ‖ frame     // frame exactly as in §14.3: u32(len) ‖ body
//! fin     = u32(stream_id)             // 4 bytes: the sender finished that stream
//! ```
//!
//! This module is sans-I/O: it encodes and decodes messages and checks them; the relay
//! (tokio-tungstenite) and the browser client (web-sys) move the bytes.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::frame::{self, FrameError, PREFIX_LEN};

/// WebSocket subprotocol a client offers (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "hush.v1";

/// Length of the stream id prefix.
pub const STREAM_ID_LEN: usize = 4;

/// The channel binding a device signs on a WebSocket connection (§14.6, §14.15).
///
/// Browsers expose no TLS exporter, so a WebSocket connection can't bind the signature to its
/// TLS session. It binds to this constant instead, which still separates WebSocket auth
/// transcripts from QUIC ones; replay is prevented by the nonce, which is single-use and valid
/// only on the connection that issued it.
pub fn channel_binding() -> [u8; 32] {
    Sha256::digest(b"Hush_WebSocketChannelBinding_v1").into()
}

/// One decoded WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage<'a> {
    /// A frame body on a stream.
    Frame {
        /// The virtual stream.
        stream: u32,
        /// The frame's body (one protobuf message), length already checked.
        body: &'a [u8],
    },
    /// The sender finished the stream.
    Fin {
        /// The virtual stream.
        stream: u32,
    },
}

/// Encodes a message as a WebSocket binary message on `stream`.
pub fn encode<M: Message>(stream: u32, msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(STREAM_ID_LEN + PREFIX_LEN + len);
    out.extend_from_slice(&stream.to_be_bytes());
    // See `frame::encode`: sizes are checked against MAX_FRAME_LEN before sending.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut out);
    out
}

/// The message that finishes `stream`.
pub fn fin(stream: u32) -> Vec<u8> {
    stream.to_be_bytes().to_vec()
}

/// Decodes one WebSocket binary message, checking the frame length against `limit`.
///
/// - fewer than 4 bytes, or a frame whose length prefix disagrees with the message length:
///   [`FrameError::Truncated`] (`malformed_frame`);
/// - a length prefix above `limit`: [`FrameError::TooLarge`] (`frame_too_large`).
pub fn decode(message: &[u8], limit: usize) -> Result<WsMessage<'_>, FrameError> {
    let (id, rest) = message.split_first_chunk::<STREAM_ID_LEN>().ok_or(FrameError::Truncated)?;
    let stream = u32::from_be_bytes(*id);
    if rest.is_empty() {
        return Ok(WsMessage::Fin { stream });
    }
    let (prefix, body) = rest.split_first_chunk::<PREFIX_LEN>().ok_or(FrameError::Truncated)?;
    let len = frame::body_len(*prefix, limit)?;
    if body.len() != len {
        return Err(FrameError::Truncated);
    }
    Ok(WsMessage::Frame { stream, body })
}

/// The stream id of a message too broken to decode, if it has one (to answer on it).
pub fn stream_of(message: &[u8]) -> Option<u32> {
    message.split_first_chunk::<STREAM_ID_LEN>().map(|(id, _)| u32::from_be_bytes(*id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;
    use crate::wire::{GetChallenge, Request, request};

    #[test]
    fn round_trip_and_fin() {
        let req = Request { body: Some(request::Body::GetChallenge(GetChallenge {})) };
        let m = encode(7, &req);
        assert_eq!(m, [0, 0, 0, 7, 0, 0, 0, 2, 0x12, 0]);
        let WsMessage::Frame { stream, body } = decode(&m, 1024).unwrap() else { panic!() };
        assert_eq!(stream, 7);
        assert_eq!(frame::decode::<Request>(body).unwrap(), req);
        assert_eq!(decode(&fin(9), 1024).unwrap(), WsMessage::Fin { stream: 9 });
        // The example of docs/PROTOCOL.md §14.15.
        assert_eq!(encode(1, &req), [0, 0, 0, 1, 0, 0, 0, 2, 0x12, 0]);
        assert_eq!(fin(1), [0, 0, 0, 1]);
    }

    #[test]
    fn typed_errors() {
        assert_eq!(decode(&[0, 0, 1], 10), Err(FrameError::Truncated));
        assert_eq!(decode(&[0, 0, 0, 1, 0, 0], 10), Err(FrameError::Truncated));
        assert_eq!(decode(&[0, 0, 0, 1, 0, 0, 0, 3, 1], 10), Err(FrameError::Truncated));
        assert_eq!(
            decode(&[0, 0, 0, 1, 0, 0, 0, 11], 10),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
        assert_eq!(stream_of(&[0, 0, 0, 5, 9]), Some(5));
        assert_ne!(channel_binding(), [0u8; 32]);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), limit in 0usize..64) {
            if let Ok(WsMessage::Frame { body, .. }) = decode(&bytes, limit) {
                prop_assert!(body.len() <= limit);
                prop_assert_eq!(body.len() + 8, bytes.len());
            }
        }
    }
}
