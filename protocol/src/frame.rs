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

/// The first block a body arriving in pieces is collected into, and the largest: each block
/// after the first is as large as what has arrived so far, within these bounds, so a body
/// holds at most what has arrived plus one block, and a 4 MiB body takes 70 blocks, not
/// thousands.
const MIN_BLOCK: usize = 4 * 1024;
const MAX_BLOCK: usize = 64 * 1024;

/// A frame body, held in the blocks it was collected into ([`FrameCollector`]). Two bodies
/// are equal when their bytes are, however they are split into blocks.
#[derive(Debug, Default, Clone)]
pub struct FrameBody {
    blocks: Vec<Vec<u8>>,
    len: usize,
}

impl FrameBody {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty (a valid frame: the empty message).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes allocated for the body (what a memory budget charges).
    pub fn allocated(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum()
    }

    /// The body as one contiguous vector (copies unless it is one block).
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.blocks.len() == 1 {
            return self.blocks.pop().unwrap_or_default();
        }
        self.blocks.concat()
    }

    /// Decodes the body as message `M`, reading across its blocks without joining them.
    pub fn decode<M: Message + Default>(&self) -> Result<M, FrameError> {
        let reader = BodyReader { blocks: &self.blocks, block: 0, pos: 0, remaining: self.len };
        M::decode(reader).map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

impl PartialEq for FrameBody {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.blocks.iter().flatten().eq(other.blocks.iter().flatten())
    }
}

impl Eq for FrameBody {}

impl From<Vec<u8>> for FrameBody {
    fn from(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        let blocks = if bytes.is_empty() { Vec::new() } else { vec![bytes] };
        Self { blocks, len }
    }
}

/// A [`bytes::Buf`] over a body's blocks. Blocks are never empty, so `chunk` is non-empty
/// whenever bytes remain.
struct BodyReader<'a> {
    blocks: &'a [Vec<u8>],
    block: usize,
    pos: usize,
    remaining: usize,
}

impl bytes::Buf for BodyReader<'_> {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.blocks.get(self.block).and_then(|b| b.get(self.pos..)).unwrap_or_default()
    }

    fn advance(&mut self, mut cnt: usize) {
        cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt > 0 {
            let left = self.blocks.get(self.block).map_or(0, |b| b.len() - self.pos);
            if cnt < left {
                self.pos += cnt;
                return;
            }
            cnt -= left;
            self.block += 1;
            self.pos = 0;
        }
        if self.blocks.get(self.block).is_some_and(|b| self.pos == b.len()) {
            self.block += 1;
            self.pos = 0;
        }
    }
}

/// Collects one frame from a stream that delivers its bytes in pieces of any size. Sans-I/O:
/// the caller reads at most [`FrameCollector::wanted`] bytes, pushes them, and repeats.
///
/// Memory follows what arrives, never what the length prefix announces: the prefix is checked
/// against the limit as soon as it is complete, and the body grows one block at a time
/// ([`FrameCollector::next_block`] says how large the next allocation is, so a caller with a
/// memory budget can charge it first). A peer that announces 4 MiB and sends nothing costs
/// nothing.
#[derive(Debug)]
pub struct FrameCollector {
    limit: usize,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    len: usize,
    body: FrameBody,
}

impl FrameCollector {
    /// A collector for one frame of at most `limit` bytes (capped at [`MAX_FRAME_LEN`]).
    pub fn new(limit: usize) -> Self {
        Self { limit, prefix: [0; PREFIX_LEN], prefix_len: 0, len: 0, body: FrameBody::default() }
    }

    /// How many more bytes the frame needs: the rest of the prefix, or of the body; 0 once
    /// it is complete. Reading no more than this never takes bytes of the next frame.
    pub fn wanted(&self) -> usize {
        if self.prefix_len < PREFIX_LEN {
            PREFIX_LEN - self.prefix_len
        } else {
            self.len - self.body.len
        }
    }

    /// Whether any byte of the frame has arrived (at the end of a stream: a frame cut short
    /// rather than a clean end).
    pub fn is_started(&self) -> bool {
        self.prefix_len > 0
    }

    /// The size of the block the next [`FrameCollector::push`] allocates, if it allocates one.
    pub fn next_block(&self) -> Option<usize> {
        let remaining = self.wanted();
        if self.prefix_len < PREFIX_LEN || remaining == 0 {
            return None;
        }
        if self.body.blocks.last().is_some_and(|b| b.len() < b.capacity()) {
            return None;
        }
        Some(self.body.len.clamp(MIN_BLOCK, MAX_BLOCK).min(remaining))
    }

    /// Takes bytes from the front of `bytes`: the rest of the prefix, or body bytes up to the
    /// end of the current block (allocating the block [`FrameCollector::next_block`]
    /// announced, and no other). Returns how many it took; call again with the rest. Fails as
    /// soon as the prefix announces more than the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        if self.prefix_len < PREFIX_LEN {
            let n = (PREFIX_LEN - self.prefix_len).min(bytes.len());
            if let (Some(dst), Some(src)) =
                (self.prefix.get_mut(self.prefix_len..self.prefix_len + n), bytes.get(..n))
            {
                dst.copy_from_slice(src);
            }
            self.prefix_len += n;
            if self.prefix_len == PREFIX_LEN {
                self.len = body_len(self.prefix, self.limit)?;
            }
            return Ok(n);
        }
        let wanted = self.wanted();
        if bytes.is_empty() || wanted == 0 {
            return Ok(0);
        }
        if let Some(size) = self.next_block() {
            self.body.blocks.push(Vec::with_capacity(size));
        }
        let Some(block) = self.body.blocks.last_mut() else { return Ok(0) };
        let n = (block.capacity() - block.len()).min(bytes.len()).min(wanted);
        block.extend_from_slice(bytes.get(..n).unwrap_or_default());
        self.body.len += n;
        Ok(n)
    }

    /// The bytes allocated so far.
    pub fn allocated(&self) -> usize {
        self.body.allocated()
    }

    /// The body once the frame is complete; `Ok(None)` if nothing of it arrived (a clean end
    /// of stream between frames), [`FrameError::Truncated`] if it stopped partway.
    pub fn finish(self) -> Result<Option<FrameBody>, FrameError> {
        if !self.is_started() {
            return Ok(None);
        }
        if self.wanted() > 0 {
            return Err(FrameError::Truncated);
        }
        Ok(Some(self.body))
    }
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

    proptest! {
        /// A frame fed in pieces of any size comes out whole, takes nothing of what follows
        /// it, and never holds more than what has arrived plus one block.
        #[test]
        fn collector_takes_exactly_one_frame_whatever_the_pieces(
            body in proptest::collection::vec(any::<u8>(), 0..200_000),
            after in proptest::collection::vec(any::<u8>(), 0..8),
            cuts in proptest::collection::vec(1usize..70_000, 1..20),
        ) {
            let mut stream = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
            stream.extend_from_slice(&body);
            stream.extend_from_slice(&after);
            let mut c = FrameCollector::new(MAX_FRAME_LEN);
            let (mut pos, mut i) = (0, 0);
            while c.wanted() > 0 {
                let n = cuts[i % cuts.len()].min(stream.len() - pos);
                let took = c.push(&stream[pos..pos + n]).unwrap();
                prop_assert!(took <= n);
                pos += took;
                i += 1;
                let arrived = pos.saturating_sub(PREFIX_LEN);
                prop_assert!(c.allocated() <= arrived + MAX_BLOCK.min(arrived.max(MIN_BLOCK)));
            }
            prop_assert_eq!(pos, PREFIX_LEN + body.len());
            let got = c.finish().unwrap().unwrap();
            prop_assert_eq!(got.len(), body.len());
            prop_assert_eq!(got.into_vec(), body);
        }

        /// Decoding across blocks gives what decoding the joined bytes gives.
        #[test]
        fn a_body_in_blocks_decodes_like_its_bytes(
            payload in proptest::collection::vec(any::<u8>(), 0..150_000),
        ) {
            let req = Request {
                body: Some(request::Body::Register(crate::wire::Register { device_list: payload })),
            };
            let bytes = encode(&req);
            let mut c = FrameCollector::new(MAX_FRAME_LEN);
            for mut piece in bytes.chunks(1000) {
                while !piece.is_empty() {
                    let n = c.push(piece).unwrap();
                    piece = &piece[n..];
                }
            }
            let body = c.finish().unwrap().unwrap();
            prop_assert_eq!(body.decode::<Request>().unwrap(), req);
        }
    }

    #[test]
    fn collector_refuses_an_oversize_prefix_and_allocates_nothing_for_a_silent_body() {
        let mut c = FrameCollector::new(1000);
        assert_eq!(
            c.push(&1001u32.to_be_bytes()),
            Err(FrameError::TooLarge { len: 1001, limit: 1000 })
        );
        let mut c = FrameCollector::new(MAX_FRAME_LEN);
        assert_eq!(c.push(&(4u32 << 20).to_be_bytes()), Ok(4));
        assert_eq!(c.allocated(), 0, "an announced body costs nothing until it arrives");
        assert_eq!(c.next_block(), Some(MIN_BLOCK));
        c.push(&[1]).unwrap();
        assert_eq!(c.allocated(), MIN_BLOCK);
        assert_eq!(c.finish(), Err(FrameError::Truncated));
        assert_eq!(FrameCollector::new(10).finish(), Ok(None));
        let mut empty = FrameCollector::new(10);
        empty.push(&[0, 0, 0, 0]).unwrap();
        assert_eq!(empty.wanted(), 0);
        assert_eq!(
            empty.finish().unwrap().unwrap().decode::<Request>().unwrap(),
            Request::default()
        );
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
