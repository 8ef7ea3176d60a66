//! The client's public value types: plain data, owned, FFI-friendly (strings for ids).
//!
//! Account ids are 64 lowercase hex digits (the account's Ed25519 key); message ids are 32 hex
//! digits. A 1:1 conversation is named by the peer's account id.

use crate::records::{MessageKind as RecordKind, MessageRecord, Status};

/// Where an outgoing message is, or the state of an incoming one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum MessageStatus {
    /// Outgoing, stored locally, not yet acked by the relay.
    Pending,
    /// Outgoing, durable on the relay.
    Sent,
    /// Outgoing, stored by a recipient device.
    Delivered,
    /// Outgoing, read by the recipient.
    Read,
    /// Outgoing, not sent and not to be: refused by the relay for good, or given up by the
    /// user ([`Client::cancel_send`](crate::Client::cancel_send)); see `problem`.
    Failed,
    /// Incoming, not yet read.
    Received,
    /// Incoming, read on one of our devices.
    Seen,
}

impl MessageStatus {
    pub(crate) fn from_record(status: i32) -> Self {
        match Status::try_from(status) {
            Ok(Status::Pending) => Self::Pending,
            Ok(Status::Sent) => Self::Sent,
            Ok(Status::Delivered) => Self::Delivered,
            Ok(Status::Read) => Self::Read,
            Ok(Status::Failed) => Self::Failed,
            Ok(Status::Received) => Self::Received,
            Ok(Status::Seen) | Err(_) => Self::Seen,
        }
    }
}

/// Lower-case hex, as `hex::encode` writes it, through a table instead of a `char` iterator:
/// a catch-up builds three of these per message for its events.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice the input, the one length `encode_to_slice` accepts.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct MessageView {
    /// Message id (32 hex digits), the same on every device.
    pub id: String,
    /// The conversation (the peer's account id).
    pub conversation: String,
    /// The author's account id.
    pub sender: String,
    /// The author's device.
    pub sender_device: u32,
    /// Whether one of our devices wrote it.
    pub outgoing: bool,
    /// The text.
    pub body: String,
    /// The logical clock; with the id it orders the conversation identically everywhere.
    pub clock: u64,
    /// The author's wall clock when sending (display only).
    pub sent_at_ms: u64,
    /// Status.
    pub status: MessageStatus,
    /// Outgoing and still pending: why the last attempt did not go through (it is retried);
    /// failed: why. `None` otherwise.
    pub problem: Option<SendProblem>,
    /// A text, or a group event in the timeline (`body` then describes it).
    pub kind: MessageKind,
    /// The file sent with it, if any (`body` is then its caption).
    pub attachment: Option<AttachmentView>,
}

/// What the app shows of an attachment (its key stays inside the SDK).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct AttachmentView {
    /// File name, as the sender gave it.
    pub file_name: String,
    /// MIME type, as the sender gave it.
    pub content_type: String,
    /// File size in bytes.
    pub size: u64,
    /// A small inline preview image; empty if none.
    pub thumbnail: Vec<u8>,
    /// Pixels; 0 if unknown.
    pub width: u32,
    /// Pixels; 0 if unknown.
    pub height: u32,
    /// Milliseconds; 0 if unknown.
    pub duration_ms: u64,
}

/// What a history entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum MessageKind {
    /// A text message.
    Text,
    /// A group change ("… added …"), at the same place in the timeline on every device.
    GroupEvent,
}

/// Why an outgoing message is not sent yet, or will not be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct SendProblem {
    /// The stable code (docs/PROTOCOL.md §14.12, §15.11), e.g. `mailbox_full`, `network`,
    /// `too_large`, `canceled`.
    pub code: String,
    /// A human message.
    pub message: String,
}

impl MessageView {
    pub(crate) fn from_record(r: &MessageRecord) -> Self {
        Self {
            id: to_hex(&r.id),
            conversation: to_hex(&r.conversation),
            sender: to_hex(&r.sender),
            sender_device: r.sender_device,
            outgoing: r.outgoing,
            body: r.body.clone(),
            clock: r.clock,
            sent_at_ms: r.sent_at_ms,
            status: MessageStatus::from_record(r.status),
            problem: (!r.problem_code.is_empty())
                .then(|| SendProblem { code: r.problem_code.clone(), message: r.problem.clone() }),
            kind: match RecordKind::try_from(r.kind) {
                Ok(RecordKind::GroupEvent) => MessageKind::GroupEvent,
                _ => MessageKind::Text,
            },
            attachment: r.attachment.as_ref().map(|a| AttachmentView {
                file_name: a.file_name.clone(),
                content_type: a.content_type.clone(),
                size: a.plaintext_len,
                thumbnail: a.thumbnail.clone(),
                width: a.width,
                height: a.height,
                duration_ms: a.duration_ms,
            }),
        }
    }
}

/// A conversation in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct ConversationView {
    /// The peer's account id, or the group id (names the conversation).
    pub peer: String,
    /// Whether it is a group (then `name` is the group's name).
    pub is_group: bool,
    /// The contact's name, if one was given.
    pub name: String,
    /// Incoming messages not yet read.
    pub unread: u32,
    /// The newest message's text, cut to 100 characters.
    pub last_preview: String,
    /// The newest message's wall clock.
    pub last_at_ms: u64,
}

/// Whether the user has compared safety numbers with a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum TrustState {
    /// Trusted on first use.
    Unverified,
    /// The user verified the safety number.
    Verified,
    /// The contact's identity changed after verification: sending is refused until the user
    /// accepts the change ([`Client::accept_identity_change`](crate::Client::accept_identity_change)).
    Changed,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct ContactView {
    /// Account id.
    pub account_id: String,
    /// The name the user gave.
    pub name: String,
    /// Verification state.
    pub trust: TrustState,
    /// The contact's device ids, from its verified device list.
    pub devices: Vec<u32>,
}

/// One device of our account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct DeviceView {
    /// Device id.
    pub device_id: u32,
    /// Whether it is this device.
    pub this_device: bool,
    /// Whether it is the primary (device 1 holds the account key).
    pub primary: bool,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct SearchHit {
    /// The conversation (peer account id).
    pub conversation: String,
    /// The matching message.
    pub message: MessageView,
}

/// A group as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct GroupView {
    /// The group id (64 hex digits); names its conversation.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// How many changes the group has had.
    pub epoch: u64,
    /// Members, in ascending account order.
    pub members: Vec<GroupMemberView>,
    /// Whether this account is a member (false once it left or was removed).
    pub am_member: bool,
    /// Whether this account is an admin.
    pub am_admin: bool,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct GroupMemberView {
    /// Account id.
    pub account_id: String,
    /// Whether it is an admin.
    pub admin: bool,
}

/// Receipts of an outgoing group message, per member ("delivered to 5 of 7, read by Alice
/// and Bob").
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct GroupReceipts {
    /// Members other than us now.
    pub members: u32,
    /// Members who have it on a device (read counts as delivered).
    pub delivered_to: Vec<String>,
    /// Members who read it.
    pub read_by: Vec<String>,
}

/// The relay connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum ConnectionState {
    /// Opening a connection or authenticating.
    Connecting,
    /// Authenticated and subscribed; sends flow and deliveries arrive.
    Connected,
    /// No connection; the client retries with backoff.
    Disconnected,
    /// The relay no longer knows this device (it was removed); the client stopped connecting.
    Removed,
}

/// Everything the app hears about, from one stream ([`Client::events`](crate::Client::events)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")
)]
pub enum Event {
    /// A message arrived (or, from another of our devices, a message we sent there).
    MessageReceived {
        /// The message.
        message: MessageView,
    },
    /// An outgoing message's status moved forward, or an incoming one was read.
    StatusChanged {
        /// Conversation.
        conversation: String,
        /// Message id.
        message_id: String,
        /// The new status.
        status: MessageStatus,
    },
    /// An attachment transfer moved on (PROTOCOL.md §18): `done` of `total` blob bytes are on
    /// the relay (upload) or checked and decrypted (download).
    TransferProgress {
        /// The message id (for an upload, the id the message will have).
        message_id: String,
        /// Upload (true) or download.
        upload: bool,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// A peer started or stopped typing.
    Typing {
        /// The conversation: the typist's account id in a 1:1 chat, or the group id.
        conversation: String,
        /// The typist's account id.
        from: String,
        /// Started (true) or stopped.
        started: bool,
    },
    /// A contact was added (also when a stranger first writes) or its devices changed.
    ContactChanged {
        /// Account id.
        contact: String,
    },
    /// A contact's device presented a new identity key.
    IdentityChanged {
        /// Account id.
        contact: String,
        /// The device.
        device_id: u32,
        /// Whether the contact was verified (sending is then held until accepted).
        was_verified: bool,
    },
    /// Our own device list changed (a device was linked or removed).
    DevicesChanged,
    /// A group's state changed (members, admins, name), or a group became known.
    GroupChanged {
        /// The group id.
        group: String,
    },
    /// The connection state changed.
    ConnectionChanged {
        /// The new state.
        state: ConnectionState,
    },
    /// The relay's queue for this device is drained: everything sent while offline is in.
    CaughtUp,
    /// An outgoing message could not go out yet, for a reason that may pass (the relay is
    /// unreachable, busy or full, a recipient's mailbox is full): it stays pending and is
    /// retried in `retry_in_ms`, until it is sent or the user gives up
    /// ([`Client::cancel_send`](crate::Client::cancel_send)).
    SendDelayed {
        /// Conversation.
        conversation: String,
        /// Message id.
        message_id: String,
        /// Why: the stable code.
        code: String,
        /// Why: a human message.
        message: String,
        /// When the next attempt is made, in milliseconds (an earlier reconnect retries at
        /// once).
        retry_in_ms: u64,
    },
    /// Something went wrong in the background (a send refused for good, an undecryptable
    /// envelope). The code is stable.
    Error {
        /// Stable code.
        code: String,
        /// Human message.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn to_hex_writes_what_hex_encode_writes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(super::to_hex(&bytes), hex::encode(&bytes));
        }
    }
}
