//! Wire encoding of session messages.
//!
//! ```text
//! Message       = version(1)=0x01 ‖ type(1)=0x01 ‖ ratchet_key(32) ‖ pn(u32) ‖ n(u32) ‖ ciphertext
//! PreKeyMessage = version(1)=0x01 ‖ type(1)=0x02 ‖ InitialHeader ‖ Message
//! GroupMessage  = version(1)=0x01 ‖ type(1)=0x03 ‖ sender-key message (crate::sender_key)
//! ```
//! The first 42 bytes of a `Message` are its header; the AEAD authenticates them together with
//! the session's associated data. Decoding never panics and rejects oversize input before
//! looking further.

use hush_prekeys::InitialHeader;
use hush_prekeys::codec::Reader;
use sha2::{Digest, Sha256};

use crate::error::SessionError;

/// Message format version.
pub const MESSAGE_VERSION: u8 = 1;
/// Type byte of a [`Message`].
pub const TYPE_MESSAGE: u8 = 1;
/// Type byte of a prekey message.
pub const TYPE_PREKEY: u8 = 2;
/// Type byte of a group message: `0x01 ‖ 0x03 ‖ sender-key message` (PROTOCOL.md §16.4, §17).
pub const TYPE_GROUP: u8 = 3;

/// If `payload` is a group message, the sender-key message inside it.
pub fn group_message(payload: &[u8]) -> Option<&[u8]> {
    match payload {
        [MESSAGE_VERSION, TYPE_GROUP, rest @ ..] => Some(rest),
        _ => None,
    }
}
/// Length of a message header: version, type, ratchet key, PN, N.
pub const HEADER_LEN: usize = 1 + 1 + 32 + 4 + 4;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext a message may carry (1 MiB). Attachments travel as blobs, not messages.
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;
/// Largest encoded message accepted: a prekey message around the largest plaintext.
pub const MAX_MESSAGE_LEN: usize = 2 + 1261 + HEADER_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

/// A decoded ratchet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; 32],
    /// Length of the sender's previous sending chain.
    pub pn: u32,
    /// Index of this message in the sender's current sending chain.
    pub n: u32,
}

impl Header {
    /// The 42 header bytes, as authenticated.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (vt, rest) = out.split_at_mut(2);
        vt.copy_from_slice(&[MESSAGE_VERSION, TYPE_MESSAGE]);
        let (key, rest) = rest.split_at_mut(32);
        key.copy_from_slice(&self.ratchet_key);
        let (pn, n) = rest.split_at_mut(4);
        pn.copy_from_slice(&self.pn.to_be_bytes());
        n.copy_from_slice(&self.n.to_be_bytes());
        out
    }
}

/// A decoded normal message, borrowing the input.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The parsed header.
    pub header: Header,
    /// The header's 42 bytes exactly as received.
    pub header_bytes: &'a [u8],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: &'a [u8],
}

/// A decoded message of either type.
#[derive(Debug, Clone)]
pub enum Incoming<'a> {
    /// A message on an established session.
    Message(Message<'a>),
    /// A message that also carries the handshake.
    PreKey {
        /// The handshake header.
        header: Box<InitialHeader>,
        /// The handshake header's bytes exactly as received.
        header_bytes: &'a [u8],
        /// The embedded message.
        message: Message<'a>,
    },
}

impl Incoming<'_> {
    /// For a prekey message, the id of the session it starts (see [`handshake_id`]).
    pub fn handshake_id(&self) -> Option<[u8; 32]> {
        match self {
            Self::Message(_) => None,
            Self::PreKey { header_bytes, .. } => Some(handshake_id(header_bytes)),
        }
    }
}

/// A session's id: SHA-256 of its encoded initial header. Both sides compute it, and a repeated
/// prekey message only reaches a session if its header matches byte for byte.
pub fn handshake_id(initial_header: &[u8]) -> [u8; 32] {
    Sha256::digest(initial_header).into()
}

/// Decodes a message of either type.
pub fn decode(bytes: &[u8]) -> Result<Incoming<'_>, SessionError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(SessionError::TooLarge { len: bytes.len(), limit: MAX_MESSAGE_LEN });
    }
    let mut r = Reader::new(bytes);
    let (version, kind) = read_version_type(&mut r)?;
    match kind {
        TYPE_MESSAGE => read_message(bytes, version, kind, r).map(Incoming::Message),
        TYPE_PREKEY => {
            let before = r.remaining();
            let header = Box::new(InitialHeader::read(&mut r)?);
            let header_len = before - r.remaining();
            let header_bytes =
                bytes.get(2..2 + header_len).ok_or(SessionError::Malformed("truncated message"))?;
            let inner = r.rest();
            let mut ir = Reader::new(inner);
            let (v, k) = read_version_type(&mut ir)?;
            if k != TYPE_MESSAGE {
                return Err(SessionError::Malformed("prekey message must embed a message"));
            }
            let message = read_message(inner, v, k, ir)?;
            Ok(Incoming::PreKey { header, header_bytes, message })
        }
        _ => Err(SessionError::Malformed("unknown message type")),
    }
}

fn read_version_type(r: &mut Reader<'_>) -> Result<(u8, u8), SessionError> {
    let version = r.u8().map_err(|_| SessionError::Malformed("empty message"))?;
    if version != MESSAGE_VERSION {
        return Err(SessionError::UnsupportedVersion(version));
    }
    let kind = r.u8().map_err(|_| SessionError::Malformed("truncated message"))?;
    Ok((version, kind))
}

fn read_message<'a>(
    whole: &'a [u8],
    _version: u8,
    _kind: u8,
    mut r: Reader<'a>,
) -> Result<Message<'a>, SessionError> {
    let short = |_| SessionError::Malformed("truncated message");
    let ratchet_key = r.array().map_err(short)?;
    let pn = r.u32().map_err(short)?;
    let n = r.u32().map_err(short)?;
    let ciphertext = r.rest();
    if ciphertext.len() < TAG_LEN {
        return Err(SessionError::Malformed("truncated message"));
    }
    let header_bytes =
        whole.get(..HEADER_LEN).ok_or(SessionError::Malformed("truncated message"))?;
    Ok(Message { header: Header { ratchet_key, pn, n }, header_bytes, ciphertext })
}
