//! Protobuf messages of relay protocol version 1, as prost types.
//!
//! Written with prost's derive macros rather than generated from a `.proto` file, so the build
//! needs no `protoc`; docs/PROTOCOL.md gives the equivalent `.proto` text with the same field
//! numbers, which is what other-language clients compile.
//!
//! Streams: every request is one client-initiated bidirectional stream carrying one
//! [`Request`] frame; the relay answers with one [`Response`] frame and finishes the stream.
//! The exception is [`Subscribe`]: the relay answers with a stream of [`ServerPush`] frames and
//! the client writes [`ClientPush`] frames (acks) on the same stream.
#![allow(missing_docs)] // Field meanings are documented in docs/PROTOCOL.md, field by field.

/// A client request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(oneof = "request::Body", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub body: Option<request::Body>,
}

pub mod request {
    /// The request kinds.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Register(super::Register),
        #[prost(message, tag = "2")]
        GetChallenge(super::GetChallenge),
        #[prost(message, tag = "3")]
        Authenticate(super::Authenticate),
        #[prost(message, tag = "4")]
        GetDeviceList(super::GetDeviceList),
        #[prost(message, tag = "5")]
        UploadPrekeys(super::UploadPrekeys),
        #[prost(message, tag = "6")]
        GetPrekeyCounts(super::GetPrekeyCounts),
        #[prost(message, tag = "7")]
        FetchBundles(super::FetchBundles),
        #[prost(message, tag = "8")]
        Send(super::Send),
        #[prost(message, tag = "9")]
        Subscribe(super::Subscribe),
        #[prost(message, tag = "10")]
        BlobCreate(super::BlobCreate),
        #[prost(message, tag = "11")]
        BlobPut(super::BlobPut),
        #[prost(message, tag = "12")]
        BlobStatus(super::BlobStatus),
        #[prost(message, tag = "13")]
        BlobGet(super::BlobGet),
    }
}

/// Starts an upload of an encrypted blob of `size` bytes (docs/PROTOCOL.md §14.16).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobCreate {
    #[prost(uint64, tag = "1")]
    pub size: u64,
}

/// Appends `data` at `offset` (which must be the blob's committed length) to an upload of ours.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobPut {
    #[prost(bytes = "vec", tag = "1")]
    pub blob_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// How much of a blob is committed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobStatus {
    #[prost(bytes = "vec", tag = "1")]
    pub blob_id: Vec<u8>,
}

/// Reads up to `max_len` bytes of a complete blob from `offset`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobGet {
    #[prost(bytes = "vec", tag = "1")]
    pub blob_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(uint32, tag = "3")]
    pub max_len: u32,
}

/// Creates an account, or replaces its device list with a newer signed one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Register {
    /// The encoded, account-signed device list (docs/PROTOCOL.md, "Device list").
    #[prost(bytes = "vec", tag = "1")]
    pub device_list: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetChallenge {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Authenticate {
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub device_id: u32,
    /// Ed25519 signature by the device identity over the auth transcript.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetDeviceList {
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadPrekeys {
    /// An encoded signed prekey (empty: keep the current one).
    #[prost(bytes = "vec", tag = "1")]
    pub signed_prekey: Vec<u8>,
    /// Encoded one-time X25519 prekeys (the relay's per-upload limit, 100 by default).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub one_time_prekeys: Vec<Vec<u8>>,
    /// Encoded signed one-time KEM prekeys (the relay's per-upload limit, 100 by default).
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub kem_prekeys: Vec<Vec<u8>>,
    /// An encoded signed last-resort KEM prekey (empty: keep the current one).
    #[prost(bytes = "vec", tag = "4")]
    pub last_resort_kem_prekey: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPrekeyCounts {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchBundles {
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// Only these devices; empty means every device of the account.
    #[prost(uint32, repeated, tag = "2")]
    pub device_ids: Vec<u32>,
}

/// One send: payloads stored once, addressed to any number of devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Send {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub payloads: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "2")]
    pub envelopes: Vec<Envelope>,
    /// Deliver only to devices online now; never store (typing indicators).
    #[prost(bool, tag = "3")]
    pub ephemeral: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub device_id: u32,
    /// The registration id the sender believes the device has (stale-device detection).
    #[prost(uint32, tag = "3")]
    pub registration_id: u32,
    /// Index into `Send.payloads`.
    #[prost(uint32, tag = "4")]
    pub payload: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {}

/// The relay's answer to a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(oneof = "response::Body", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15")]
    pub body: Option<response::Body>,
}

pub mod response {
    /// The response kinds; `Error` may answer any request.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Registered(super::Registered),
        #[prost(message, tag = "2")]
        Challenge(super::Challenge),
        #[prost(message, tag = "3")]
        Authenticated(super::Authenticated),
        #[prost(message, tag = "4")]
        DeviceList(super::DeviceListBody),
        #[prost(message, tag = "5")]
        PrekeyCounts(super::PrekeyCounts),
        #[prost(message, tag = "6")]
        Bundles(super::Bundles),
        #[prost(message, tag = "7")]
        Sent(super::Sent),
        #[prost(message, tag = "8")]
        Subscribed(super::Subscribed),
        #[prost(message, tag = "9")]
        BlobCreated(super::BlobCreated),
        #[prost(message, tag = "10")]
        BlobProgress(super::BlobProgress),
        #[prost(message, tag = "11")]
        BlobData(super::BlobData),
        #[prost(message, tag = "15")]
        Error(super::Error),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Registered {
    #[prost(uint64, tag = "1")]
    pub list_version: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Challenge {
    #[prost(bytes = "vec", tag = "1")]
    pub nonce: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Authenticated {
    #[prost(uint64, tag = "1")]
    pub server_time_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceListBody {
    #[prost(bytes = "vec", tag = "1")]
    pub device_list: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PrekeyCounts {
    #[prost(uint32, tag = "1")]
    pub one_time: u32,
    #[prost(uint32, tag = "2")]
    pub kem_one_time: u32,
    #[prost(bool, tag = "3")]
    pub has_signed_prekey: bool,
    #[prost(bool, tag = "4")]
    pub has_last_resort_kem_prekey: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bundles {
    #[prost(message, repeated, tag = "1")]
    pub bundles: Vec<DeviceBundle>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceBundle {
    #[prost(uint32, tag = "1")]
    pub device_id: u32,
    #[prost(uint32, tag = "2")]
    pub registration_id: u32,
    /// A `hush-prekeys` bundle encoding (docs/PROTOCOL.md, "Prekey bundle").
    #[prost(bytes = "vec", tag = "3")]
    pub bundle: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sent {
    #[prost(uint64, tag = "1")]
    pub server_time_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribed {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobCreated {
    /// 32 random bytes: the blob's name, unguessable.
    #[prost(bytes = "vec", tag = "1")]
    pub blob_id: Vec<u8>,
    /// Most `data` bytes one `BlobPut` may carry; every put but the last is a multiple of
    /// `put_align`.
    #[prost(uint32, tag = "2")]
    pub max_put: u32,
    #[prost(uint32, tag = "3")]
    pub put_align: u32,
    /// When the upload is dropped unless a put comes first (each put moves it on).
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobProgress {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    /// Bytes committed durably, from the start.
    #[prost(uint64, tag = "2")]
    pub committed: u64,
    #[prost(bool, tag = "3")]
    pub complete: bool,
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobData {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// An error answer: a stable code, a human message and code-specific details.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
    /// For `rate_limited`: how long to wait before retrying.
    #[prost(uint64, tag = "3")]
    pub retry_after_ms: u64,
    /// For `device_mismatch`: one entry per account whose devices did not match.
    #[prost(message, repeated, tag = "4")]
    pub mismatches: Vec<DeviceMismatch>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceMismatch {
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// Registered devices the send did not address.
    #[prost(uint32, repeated, tag = "2")]
    pub missing: Vec<u32>,
    /// Addressed devices that are not registered.
    #[prost(uint32, repeated, tag = "3")]
    pub extra: Vec<u32>,
    /// Addressed devices whose registration id is not the current one.
    #[prost(uint32, repeated, tag = "4")]
    pub stale: Vec<u32>,
}

/// What the relay writes on a subscription stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerPush {
    #[prost(oneof = "server_push::Body", tags = "1, 2, 3")]
    pub body: Option<server_push::Body>,
}

pub mod server_push {
    /// Push kinds.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Delivery(super::Delivery),
        #[prost(message, tag = "2")]
        QueueEmpty(super::QueueEmpty),
        #[prost(message, tag = "3")]
        GoAway(super::GoAway),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Delivery {
    /// Mailbox sequence number (0 for ephemeral deliveries, which are never acked).
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub sender_account: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub sender_device: u32,
    #[prost(uint64, tag = "4")]
    pub server_time_ms: u64,
    #[prost(bytes = "vec", tag = "5")]
    pub payload: Vec<u8>,
    #[prost(bool, tag = "6")]
    pub ephemeral: bool,
}

/// Everything stored for this device up to now has been delivered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueueEmpty {
    /// The highest sequence number delivered on this subscription (0 if none).
    #[prost(uint64, tag = "1")]
    pub last_seq: u64,
}

/// The relay is shutting down: finish in-flight work and reconnect elsewhere or later.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GoAway {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(uint64, tag = "2")]
    pub reconnect_after_ms: u64,
}

/// What the client writes on a subscription stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientPush {
    /// Sequence numbers the device has stored durably; the relay deletes them.
    #[prost(uint64, repeated, tag = "1")]
    pub acks: Vec<u64>,
}

impl Response {
    /// Builds an error response.
    pub fn error(code: crate::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: Some(response::Body::Error(Error {
                code: code.as_str().to_owned(),
                message: message.into(),
                ..Default::default()
            })),
        }
    }
}
