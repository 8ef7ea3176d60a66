//! What travels inside the ratchet: the encrypted content of every envelope.
//!
//! The relay sees only ciphertext; this is the plaintext a device decrypts. Protobuf (prost),
//! so clients in other languages can speak it; field numbers are part of the protocol
//! (docs/PROTOCOL.md §15). Unknown fields are ignored, and a content whose `version` is newer
//! than [`CONTENT_VERSION`] is still read for the fields this build knows.

use prost::Message as _;

/// The content format this build writes.
pub const CONTENT_VERSION: u32 = 1;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 16;
/// The longest text, in characters (Unicode scalar values), a message may carry.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// One decrypted envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Content {
    /// [`CONTENT_VERSION`] of the writer.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// What it carries.
    #[prost(oneof = "content::Body", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub body: Option<content::Body>,
}

/// The content variants.
#[allow(clippy::module_inception)] // prost's oneof layout: `content::Body`.
pub mod content {
    /// What a content carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        /// A chat message to the recipient.
        #[prost(message, tag = "2")]
        Text(super::Text),
        /// Delivered or read receipts for messages the recipient sent.
        #[prost(message, tag = "3")]
        Receipt(super::Receipt),
        /// A typing indicator (always sent ephemeral).
        #[prost(message, tag = "4")]
        Typing(super::Typing),
        /// To our own other devices: a transcript of a message we sent.
        #[prost(message, tag = "5")]
        SyncSent(super::SyncSent),
        /// To our own other devices: messages we have read.
        #[prost(message, tag = "6")]
        SyncRead(super::SyncRead),
        /// In a group message: a signed change of the group's state.
        #[prost(message, tag = "7")]
        GroupUpdate(super::GroupUpdate),
        /// Pairwise, to one member device: the sender's key for a group, ahead of the group
        /// messages under it.
        #[prost(message, tag = "8")]
        GroupKey(super::GroupKey),
        /// Pairwise, between our own devices: a group's state, or a request for it.
        #[prost(message, tag = "9")]
        GroupSync(super::GroupSync),
    }
}

/// A chat message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    /// Random 16-byte id chosen by the sender; the same on every device.
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// The sender's Lamport clock: conversation order is (clock, id) on every device.
    #[prost(uint64, tag = "2")]
    pub clock: u64,
    /// The text (at most [`MAX_TEXT_CHARS`] characters).
    #[prost(string, tag = "3")]
    pub body: String,
    /// The sender's wall clock, for display only.
    #[prost(uint64, tag = "4")]
    pub sent_at_ms: u64,
    /// A file sent with the message (`body` is then its caption, possibly empty).
    #[prost(message, optional, tag = "5")]
    pub attachment: Option<Attachment>,
}

/// Most bytes of an inline thumbnail.
pub const MAX_THUMBNAIL_BYTES: usize = 64 * 1024;
/// Most bytes of an attachment's file name and of its content type.
pub const MAX_ATTACHMENT_LABEL_BYTES: usize = 255;

/// A pointer to an encrypted blob on the relay (PROTOCOL.md §18.4): everything a recipient
/// needs to fetch, check and decrypt it. Holds the blob's key, so it is never printed.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct Attachment {
    /// The relay's 32-byte blob id.
    #[prost(bytes = "vec", tag = "1")]
    pub blob_id: Vec<u8>,
    /// The 32-byte attachment key (§18.1).
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// The file's size.
    #[prost(uint64, tag = "3")]
    pub plaintext_len: u64,
    /// The blob's size (§18.1: determined by `plaintext_len`).
    #[prost(uint64, tag = "4")]
    pub blob_len: u64,
    /// SHA-256 of the blob.
    #[prost(bytes = "vec", tag = "5")]
    pub digest: Vec<u8>,
    /// MIME type, as the sender gave it.
    #[prost(string, tag = "6")]
    pub content_type: String,
    /// File name, as the sender gave it (no path).
    #[prost(string, tag = "7")]
    pub file_name: String,
    /// A small preview image (JPEG or PNG), inline; empty if none.
    #[prost(bytes = "vec", tag = "8")]
    pub thumbnail: Vec<u8>,
    /// Image or video width in pixels; 0 if unknown.
    #[prost(uint32, tag = "9")]
    pub width: u32,
    /// Image or video height in pixels; 0 if unknown.
    #[prost(uint32, tag = "10")]
    pub height: u32,
    /// Audio or video duration in milliseconds; 0 if unknown.
    #[prost(uint64, tag = "11")]
    pub duration_ms: u64,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("blob_id", &hex::encode(&self.blob_id))
            .field("plaintext_len", &self.plaintext_len)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Attachment {
    /// Whether the pointer is well formed: sizes of ids and keys, a blob size that matches the
    /// file size, and bounded labels and thumbnail.
    pub fn is_valid(&self) -> bool {
        self.blob_id.len() == 32
            && self.key.len() == crate::attachment::KEY_LEN
            && self.digest.len() == 32
            && self.blob_len == crate::attachment::sealed_len(self.plaintext_len)
            && self.file_name.len() <= MAX_ATTACHMENT_LABEL_BYTES
            && self.content_type.len() <= MAX_ATTACHMENT_LABEL_BYTES
            && self.thumbnail.len() <= MAX_THUMBNAIL_BYTES
    }
}

/// Receipt kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ReceiptKind {
    /// Unknown (ignored).
    Unspecified = 0,
    /// Stored on a recipient device.
    Delivered = 1,
    /// Shown to the recipient.
    Read = 2,
}

/// Receipts for one or more messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    /// Delivered or read.
    #[prost(enumeration = "ReceiptKind", tag = "1")]
    pub kind: i32,
    /// The ids of the messages.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub ids: Vec<Vec<u8>>,
    /// For messages of a group: the group id (empty in 1:1).
    #[prost(bytes = "vec", tag = "3")]
    pub group_id: Vec<u8>,
}

/// A group change, inside a group message (PROTOCOL.md §17).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupUpdate {
    /// The signed change.
    #[prost(message, optional, tag = "1")]
    pub change: Option<crate::group::SignedGroupChange>,
    /// The state right after the change, when it adds members (they have none yet).
    #[prost(message, optional, tag = "2")]
    pub snapshot: Option<crate::group::GroupSnapshot>,
}

/// Pairwise, to one member device: the sender's key for a group (PROTOCOL.md §17.4). The group
/// messages under it follow as shared payloads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupKey {
    /// The 105-byte distribution (§16.3) of the sender's current key, at the iteration of the
    /// next message.
    #[prost(bytes = "vec", tag = "1")]
    pub distribution: Vec<u8>,
}

/// Between our own devices: a group's current state (a new device learns its groups so), or a
/// request for it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupSync {
    /// The group.
    #[prost(bytes = "vec", tag = "1")]
    pub group_id: Vec<u8>,
    /// The state; absent in a request.
    #[prost(message, optional, tag = "2")]
    pub snapshot: Option<crate::group::GroupSnapshot>,
}

/// A typing indicator.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Typing {
    /// True when typing starts, false when it stops.
    #[prost(bool, tag = "1")]
    pub started: bool,
}

/// A sent-message transcript for our own devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncSent {
    /// The conversation: the peer's 32-byte account id.
    #[prost(bytes = "vec", tag = "1")]
    pub conversation: Vec<u8>,
    /// The message as the peer received it.
    #[prost(message, optional, tag = "2")]
    pub text: Option<Text>,
}

/// Read state for our own devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncRead {
    /// The conversation: the peer's 32-byte account id.
    #[prost(bytes = "vec", tag = "1")]
    pub conversation: Vec<u8>,
    /// The messages now read.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub ids: Vec<Vec<u8>>,
}

impl Text {
    /// Whether a receiver accepts it (§15.1): a 16-byte id and a non-empty text of at most
    /// [`MAX_TEXT_CHARS`] characters.
    pub fn is_valid(&self) -> bool {
        // A text has at most as many characters as bytes, so most need no count.
        self.id.len() == MESSAGE_ID_LEN
            && (!self.body.is_empty() || self.attachment.is_some())
            && self.attachment.as_ref().is_none_or(Attachment::is_valid)
            && (self.body.len() <= MAX_TEXT_CHARS || self.body.chars().count() <= MAX_TEXT_CHARS)
    }
}

impl Content {
    /// Wraps a body at the current version.
    pub fn new(body: content::Body) -> Self {
        Self { version: CONTENT_VERSION, body: Some(body) }
    }

    /// Encodes to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes bytes; `None` if they are not a content.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::decode(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_attachment_pointer_never_prints_its_key() {
        let mut a = Attachment::default();
        a.blob_id = vec![1; 32];
        a.key = vec![0xab; 32];
        a.plaintext_len = 5;
        a.blob_len = crate::attachment::sealed_len(5);
        a.digest = vec![2; 32];
        assert!(a.is_valid());
        let text = format!("{a:?}");
        assert!(!text.contains("abab") && !text.contains("171, 171"), "{text}");
        #[cfg(feature = "client")]
        {
            let record =
                crate::records::MessageRecord { attachment: Some(a.clone()), ..Default::default() };
            let text = format!("{record:?}");
            assert!(!text.contains("abab") && !text.contains("171, 171"), "{text}");
        }
        // A blob size that doesn't match the file size is refused.
        let mut wrong = a.clone();
        wrong.blob_len = 99;
        assert!(!wrong.is_valid());
    }

    #[test]
    fn known_answer() {
        let c = Content::new(content::Body::Text(Text {
            id: vec![1; 16],
            clock: 7,
            body: "hé".into(),
            sent_at_ms: 1,
            attachment: None,
        }));
        // Pins the wire encoding (docs/PROTOCOL.md §15).
        assert_eq!(
            hex::encode(c.to_bytes()),
            concat!(
                "0801121b0a10",
                "01010101010101010101010101010101",
                "1007",
                "1a0368c3a9",
                "2001"
            )
        );
        assert_eq!(Content::from_bytes(&c.to_bytes()).unwrap(), c);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Content::from_bytes(&bytes);
        }
    }
}
