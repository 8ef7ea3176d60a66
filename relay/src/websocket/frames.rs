//! WebSocket frames from clients (RFC 6455 §5), decoded as their bytes arrive, and frames to
//! clients, encoded. Sans-I/O.
//!
//! Each binary message from a client carries one relay-protocol frame of one virtual stream
//! (`u32(stream_id) ‖ u32(len) ‖ body`, docs/PROTOCOL.md §14.15). The [`Decoder`] unmasks the
//! payload as it arrives and hands it to a [`FrameCollector`], so memory follows what arrived,
//! never what a header or length prefix announces; it allocates at most one block per
//! [`Decoder::push`], the one [`Decoder::next_block`] announced, so the caller can charge a
//! memory budget first. A frame whose length prefix is over the limit, or disagrees with the
//! message's length, becomes a typed error for its stream, and the rest of its message is
//! skipped without being stored.
//!
//! What ends the connection instead ([`Violation`]): a text message, an unmasked frame, reserved
//! bits, a malformed or fragmented control frame, a continuation without a message, a message
//! shorter than a stream id, and a message longer than the largest frame plus its 8 bytes of
//! stream id and prefix.

use std::io::Cursor;

use hush_protocol::frame::{FrameBody, FrameCollector, FrameError, PREFIX_LEN};
use hush_protocol::websocket::STREAM_ID_LEN;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The longest frame header (2 bytes, an 8-byte length, a 4-byte mask).
const MAX_HEADER: usize = 14;
/// Control frames carry at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Body bytes unmasked per push.
const UNMASK_CHUNK: usize = 4096;

/// What a client's bytes amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A binary message holding one whole frame of virtual stream `stream`.
    Frame {
        /// The virtual stream.
        stream: u32,
        /// The frame's body.
        body: FrameBody,
    },
    /// A binary message of exactly a stream id: the client finished `stream`.
    Fin {
        /// The virtual stream.
        stream: u32,
    },
    /// A binary message whose frame is unusable, answered on `stream` with the error's code.
    Bad {
        /// The virtual stream.
        stream: u32,
        /// Why.
        error: FrameError,
    },
    /// A ping, to answer with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The client is closing the connection.
    Close,
}

/// A client broke the WebSocket protocol or the relay's use of it: the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A text message (the relay protocol is binary).
    #[error("text message")]
    Text,
    /// A malformed frame or message.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A message longer than the largest frame allows.
    #[error("message too big")]
    TooBig,
}

struct Frame {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    len: u64,
    done: u64,
}

enum Body {
    /// Bytes of the frame, collected (created at the first byte after the stream id).
    Collecting(Option<FrameCollector>),
    /// The frame is unusable: the rest of the message is skipped.
    Failed(FrameError),
}

struct Message {
    id: [u8; STREAM_ID_LEN],
    id_len: usize,
    size: u64,
    body: Body,
}

/// Decodes the frames of one client connection.
pub struct Decoder {
    head: [u8; MAX_HEADER],
    head_len: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    control: Vec<u8>,
    max_message: u64,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            head: [0; MAX_HEADER],
            head_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            max_message: max_message as u64,
        }
    }

    /// Whether a message (or a frame, or a header) has begun and not ended.
    pub fn is_mid_message(&self) -> bool {
        self.head_len > 0 || self.frame.is_some() || self.message.is_some()
    }

    /// The size of the block the next [`Decoder::push`] allocates, if it allocates one.
    pub fn next_block(&self) -> Option<usize> {
        match (&self.frame, &self.message) {
            (Some(f), Some(m)) if matches!(f.opcode, OpCode::Data(_)) && f.done < f.len => {
                match &m.body {
                    Body::Collecting(Some(c)) if m.id_len == STREAM_ID_LEN => c.next_block(),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Takes bytes from the front of `bytes`; returns how many it took and the event they
    /// completed, if any. Call again with the rest. `limit` is the largest frame body a
    /// message started now may carry (the connection's pre- or post-auth limit).
    pub fn push(
        &mut self,
        bytes: &[u8],
        limit: usize,
    ) -> Result<(usize, Option<Event>), Violation> {
        if bytes.is_empty() {
            return Ok((0, None));
        }
        let Some(frame) = self.frame.as_mut() else { return self.header(bytes) };
        let n = usize::try_from(frame.len - frame.done).unwrap_or(usize::MAX).min(bytes.len());
        let bytes = bytes.get(..n).unwrap_or_default();
        let taken = match frame.opcode {
            OpCode::Control(_) => {
                let start = frame.done;
                self.control.extend(bytes.iter().enumerate().map(|(i, b)| {
                    b ^ frame.mask.get(((start + i as u64) % 4) as usize).copied().unwrap_or(0)
                }));
                frame.done += n as u64;
                n
            }
            OpCode::Data(_) => {
                let Some(m) = self.message.as_mut() else {
                    return Err(Violation::Malformed("data outside a message"));
                };
                let taken = message_bytes(m, frame, bytes, limit);
                frame.done += taken as u64;
                m.size += taken as u64;
                taken
            }
        };
        let ended = self.frame.as_ref().is_some_and(|f| f.done == f.len);
        Ok((taken, if ended { self.end_frame()? } else { None }))
    }

    /// Takes header bytes; on a complete header, checks it and starts the frame.
    fn header(&mut self, bytes: &[u8]) -> Result<(usize, Option<Event>), Violation> {
        let before = self.head_len;
        let n = (MAX_HEADER - before).min(bytes.len());
        if let (Some(dst), Some(src)) = (self.head.get_mut(before..before + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.head_len += n;
        let mut cursor = Cursor::new(self.head.get(..self.head_len).unwrap_or_default());
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|_| Violation::Malformed("invalid frame header"))?;
        let Some((header, len)) = parsed else { return Ok((n, None)) };
        // Bytes past the header stay with the caller: they are the payload.
        let used = usize::try_from(cursor.position()).unwrap_or(MAX_HEADER);
        let taken = used.saturating_sub(before);
        self.head_len = 0;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::Malformed("reserved bits set"));
        }
        let Some(mask) = header.mask else {
            return Err(Violation::Malformed("unmasked client frame"));
        };
        match header.opcode {
            OpCode::Data(Data::Text) => return Err(Violation::Text),
            OpCode::Data(Data::Binary) => {
                if self.message.is_some() {
                    return Err(Violation::Malformed("a new message inside a fragmented one"));
                }
                self.message = Some(Message {
                    id: [0; STREAM_ID_LEN],
                    id_len: 0,
                    size: 0,
                    body: Body::Collecting(None),
                });
            }
            OpCode::Data(Data::Continue) => {
                if self.message.is_none() {
                    return Err(Violation::Malformed("a continuation without a message"));
                }
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(Violation::Malformed("reserved opcode"));
            }
            OpCode::Control(_) => {
                if !header.is_final || len > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::Malformed("fragmented or oversize control frame"));
                }
                self.control.clear();
            }
        }
        if let (OpCode::Data(_), Some(m)) = (header.opcode, &self.message)
            && m.size.saturating_add(len) > self.max_message
        {
            return Err(Violation::TooBig);
        }
        self.frame =
            Some(Frame { opcode: header.opcode, fin: header.is_final, mask, len, done: 0 });
        let event = if len == 0 { self.end_frame()? } else { None };
        Ok((taken, event))
    }

    /// A frame's payload is complete: a control frame is an event; the last frame of a
    /// message completes it.
    fn end_frame(&mut self) -> Result<Option<Event>, Violation> {
        let Some(frame) = self.frame.take() else { return Ok(None) };
        match frame.opcode {
            OpCode::Control(Control::Ping) => {
                Ok(Some(Event::Ping(std::mem::take(&mut self.control))))
            }
            OpCode::Control(Control::Pong) => Ok(Some(Event::Pong)),
            OpCode::Control(_) => Ok(Some(Event::Close)),
            OpCode::Data(_) if !frame.fin => Ok(None),
            OpCode::Data(_) => {
                let Some(m) = self.message.take() else { return Ok(None) };
                if m.id_len < STREAM_ID_LEN {
                    return Err(Violation::Malformed("a message shorter than a stream id"));
                }
                let stream = u32::from_be_bytes(m.id);
                Ok(Some(match m.body {
                    Body::Collecting(None) => Event::Fin { stream },
                    Body::Collecting(Some(c)) => match c.finish() {
                        Ok(Some(body)) => Event::Frame { stream, body },
                        Ok(None) | Err(_) => Event::Bad { stream, error: FrameError::Truncated },
                    },
                    Body::Failed(error) => Event::Bad { stream, error },
                }))
            }
        }
    }
}

/// Takes payload bytes of a binary message: the stream id, then the frame (unmasked into the
/// collector, one push at a most), or skips them once the frame is known to be unusable.
fn message_bytes(m: &mut Message, frame: &Frame, bytes: &[u8], limit: usize) -> usize {
    let mask_at =
        |i: usize| frame.mask.get(((frame.done + i as u64) % 4) as usize).copied().unwrap_or(0);
    if m.id_len < STREAM_ID_LEN {
        let n = (STREAM_ID_LEN - m.id_len).min(bytes.len());
        for (i, b) in bytes.iter().take(n).enumerate() {
            if let Some(slot) = m.id.get_mut(m.id_len + i) {
                *slot = b ^ mask_at(i);
            }
        }
        m.id_len += n;
        return n;
    }
    let collector = match &mut m.body {
        Body::Failed(_) => return bytes.len(),
        Body::Collecting(c) => c.get_or_insert_with(|| FrameCollector::new(limit)),
    };
    if collector.wanted() == 0 {
        // More bytes than the length prefix announced.
        m.body = Body::Failed(FrameError::Truncated);
        return bytes.len();
    }
    let mut plain = [0u8; UNMASK_CHUNK];
    let n = bytes.len().min(UNMASK_CHUNK);
    for (i, (dst, b)) in plain.iter_mut().zip(bytes).take(n).enumerate() {
        *dst = b ^ mask_at(i);
    }
    match collector.push(plain.get(..n).unwrap_or_default()) {
        Ok(taken) => taken,
        Err(e) => {
            m.body = Body::Failed(e);
            bytes.len()
        }
    }
}

/// The largest overhead a message adds to the frame it carries: stream id and prefix, and the
/// longest WebSocket header.
pub const MESSAGE_OVERHEAD: usize = STREAM_ID_LEN + PREFIX_LEN + MAX_HEADER;

/// A frame from the relay (unmasked, final) with `payload_len` bytes of payload, the header
/// written and `fill` adding the payload.
pub fn server_frame(
    opcode: OpCode,
    payload_len: usize,
    fill: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let header = FrameHeader { is_final: true, opcode, mask: None, ..FrameHeader::default() };
    let mut out = Vec::with_capacity(MAX_HEADER + payload_len);
    // Writing into a vector cannot fail.
    let _ = header.format(payload_len as u64, &mut out);
    fill(&mut out);
    out
}

/// A close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    server_frame(OpCode::Control(Control::Close), 2 + reason.len(), |out| {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    /// A client frame as a browser writes it.
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let header =
            FrameHeader { is_final: fin, opcode, mask: Some(mask), ..FrameHeader::default() };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn binary(payload: &[u8]) -> Vec<u8> {
        client_frame(OpCode::Data(Data::Binary), true, payload, [1, 2, 3, 4])
    }

    fn message(stream: u32, body: &[u8]) -> Vec<u8> {
        let mut p = stream.to_be_bytes().to_vec();
        p.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    /// Feeds `bytes` in pieces of `piece` bytes; returns the events, or the violation.
    fn feed(
        d: &mut Decoder,
        bytes: &[u8],
        piece: usize,
        limit: usize,
    ) -> Result<Vec<Event>, Violation> {
        let mut events = Vec::new();
        for mut chunk in bytes.chunks(piece.max(1)) {
            while !chunk.is_empty() {
                let (n, e) = d.push(chunk, limit)?;
                events.extend(e);
                chunk = &chunk[n..];
            }
        }
        Ok(events)
    }

    #[test]
    fn frames_fins_pings_and_typed_errors() {
        let mut d = Decoder::new(1 << 20);
        let mut wire = binary(&message(7, b"hello"));
        wire.extend(binary(&9u32.to_be_bytes()));
        wire.extend(client_frame(OpCode::Control(Control::Ping), true, b"p", [9, 9, 9, 9]));
        // A prefix over the pre-auth limit: typed error on its stream, body never stored.
        wire.extend(binary(&message(11, &[0; 100])));
        // A prefix that disagrees with the message length.
        let mut long = message(13, b"ab");
        long.push(0);
        wire.extend(binary(&long));
        wire.extend(client_frame(OpCode::Control(Control::Close), true, &[3, 232], [0; 4]));
        let events = feed(&mut d, &wire, 3, 50).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Frame { stream: 7, body: b"hello".to_vec().into() },
                Event::Fin { stream: 9 },
                Event::Ping(b"p".to_vec()),
                Event::Bad { stream: 11, error: FrameError::TooLarge { len: 100, limit: 50 } },
                Event::Bad { stream: 13, error: FrameError::Truncated },
                Event::Close,
            ]
        );
    }

    #[test]
    fn fragmented_messages_and_interleaved_control_frames() {
        let payload = message(3, &[5; 300]);
        let mut wire = client_frame(OpCode::Data(Data::Binary), false, &payload[..100], [7; 4]);
        wire.extend(client_frame(OpCode::Control(Control::Pong), true, b"", [1; 4]));
        wire.extend(client_frame(OpCode::Data(Data::Continue), false, &payload[100..200], [8; 4]));
        wire.extend(client_frame(OpCode::Data(Data::Continue), true, &payload[200..], [9; 4]));
        let mut d = Decoder::new(1 << 20);
        let events = feed(&mut d, &wire, 1000, 1000).unwrap();
        assert_eq!(
            events,
            vec![Event::Pong, Event::Frame { stream: 3, body: vec![5; 300].into() }]
        );
    }

    #[test]
    fn protocol_violations_end_the_connection() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (client_frame(OpCode::Data(Data::Text), true, b"hi", [1; 4]), Violation::Text),
            (
                {
                    let mut f = binary(b"abcd");
                    f[1] &= 0x7f; // no mask bit
                    f.truncate(2);
                    f.extend_from_slice(b"abcd");
                    f
                },
                Violation::Malformed("unmasked client frame"),
            ),
            (binary(&[1, 2]), Violation::Malformed("a message shorter than a stream id")),
            (
                client_frame(OpCode::Data(Data::Continue), true, b"x", [1; 4]),
                Violation::Malformed("a continuation without a message"),
            ),
            (
                client_frame(OpCode::Control(Control::Ping), false, b"", [1; 4]),
                Violation::Malformed("fragmented or oversize control frame"),
            ),
            (binary(&[0; 200]), Violation::TooBig),
        ];
        for (wire, want) in cases {
            let mut d = Decoder::new(100);
            assert_eq!(feed(&mut d, &wire, 5, 1000), Err(want));
        }
    }

    #[test]
    fn an_announced_but_unsent_message_costs_nothing() {
        // A header for a 4 MiB message and a stream id, and a frame prefix for 4 MiB: no body.
        let mut d = Decoder::new(5 << 20);
        let mut head = Vec::new();
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Binary),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        header.format(4 << 20, &mut head).unwrap();
        head.extend_from_slice(&1u32.to_be_bytes());
        head.extend_from_slice(&(4u32 << 20).to_be_bytes());
        assert!(feed(&mut d, &head, 1, 8 << 20).unwrap().is_empty());
        assert_eq!(d.next_block(), Some(4096), "nothing allocated until body bytes arrive");
    }

    proptest! {
        /// Any bytes: events or a violation, never a panic, and no push allocates more than
        /// the block announced before it.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut d = Decoder::new(300);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                match d.push(rest, 100) {
                    Ok((0, None)) => break,
                    Ok((n, _)) => rest = &rest[n..],
                    Err(_) => break,
                }
            }
        }

        /// Valid messages cut anywhere come out whole and in order.
        #[test]
        fn messages_survive_any_cutting(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6),
            piece in 1usize..5000,
        ) {
            let mut wire = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                wire.extend(binary(&message(i as u32 + 1, b)));
            }
            let mut d = Decoder::new(1 << 20);
            let events = feed(&mut d, &wire, piece, 1 << 20).unwrap();
            let want: Vec<Event> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| Event::Frame { stream: i as u32 + 1, body: b.clone().into() })
                .collect();
            prop_assert_eq!(events, want);
        }
    }
}
