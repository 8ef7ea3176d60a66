//! Stable error codes carried in every relay error response.
//!
//! The code is the contract: apps switch on it, and a code never changes meaning once released.
//! The message next to it on the wire is for humans and may change. New codes may be added; a
//! client that does not know a code treats it as [`ErrorCode::Internal`]-like and shows the
//! message.

/// Every error code the relay can send (docs/PROTOCOL.md, "Relay error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A frame or message could not be decoded (truncated frame, bad protobuf). A well-formed
    /// request with no body is `bad_request`.
    MalformedFrame,
    /// A frame is larger than [`crate::MAX_FRAME_LEN`] or the relay's configured request limit.
    FrameTooLarge,
    /// A well-formed request the relay does not accept here (wrong stream, duplicate subscribe).
    BadRequest,
    /// The request needs an authenticated connection.
    NotAuthenticated,
    /// `Authenticate` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// A signature did not verify (auth, device list, prekey).
    BadSignature,
    /// No outstanding challenge: it was never requested, or already used.
    ReplayedNonce,
    /// The account is not registered.
    UnknownAccount,
    /// The device is not in its account's device list.
    UnknownDevice,
    /// A device list whose version is not newer than the stored one.
    StaleDeviceList,
    /// A device list with more devices than the relay allows.
    TooManyDevices,
    /// Key material or a device list that does not decode (`hush-prekeys` / device-list codes
    /// are folded into this one, with the detail in the message).
    InvalidKey,
    /// More one-time prekeys in one upload, or stored, than allowed.
    TooManyPrekeys,
    /// A send whose envelopes do not match the registered devices (missing, extra or stale).
    DeviceMismatch,
    /// An envelope payload is larger than the relay's limit.
    TooLarge,
    /// The recipient's mailbox is over its depth or byte quota.
    MailboxFull,
    /// A rate limit was hit; `retry_after_ms` says when to retry.
    RateLimited,
    /// The relay is shutting down; reconnect later or elsewhere.
    ShuttingDown,
    /// Something went wrong inside the relay (storage). Nothing was written.
    Internal,
    /// The relay's storage is failing (an I/O error); nothing was written. The relay recovers
    /// by itself: retry with backoff.
    StorageUnavailable,
    /// The relay is full: its disk is at the operator's free-space floor, or its stored
    /// payload at its budget. Nothing was written; retry with backoff (space comes back as
    /// devices drain their mailboxes).
    StorageFull,
    /// No such blob, an upload that is not this device's, or one that is not complete yet
    /// (for a read), or expired.
    UnknownBlob,
    /// A blob larger than the relay's limit.
    BlobTooLarge,
    /// A put not at the blob's committed length, misaligned, or past its size: ask
    /// `BlobStatus` and resume from `committed`.
    BadOffset,
    /// The account's upload bytes for the day, or the device's unfinished uploads, are at
    /// their limit; `retry_after_ms` says when to retry.
    QuotaExceeded,
}

impl ErrorCode {
    /// Every code, for documentation tests and exhaustive round trips.
    pub const ALL: [ErrorCode; 25] = [
        Self::MalformedFrame,
        Self::FrameTooLarge,
        Self::BadRequest,
        Self::NotAuthenticated,
        Self::AlreadyAuthenticated,
        Self::BadSignature,
        Self::ReplayedNonce,
        Self::UnknownAccount,
        Self::UnknownDevice,
        Self::StaleDeviceList,
        Self::TooManyDevices,
        Self::InvalidKey,
        Self::TooManyPrekeys,
        Self::DeviceMismatch,
        Self::TooLarge,
        Self::MailboxFull,
        Self::RateLimited,
        Self::ShuttingDown,
        Self::Internal,
        Self::StorageUnavailable,
        Self::StorageFull,
        Self::UnknownBlob,
        Self::BlobTooLarge,
        Self::BadOffset,
        Self::QuotaExceeded,
    ];

    /// The stable machine code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::BadRequest => "bad_request",
            Self::NotAuthenticated => "not_authenticated",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::BadSignature => "bad_signature",
            Self::ReplayedNonce => "replayed_nonce",
            Self::UnknownAccount => "unknown_account",
            Self::UnknownDevice => "unknown_device",
            Self::StaleDeviceList => "stale_device_list",
            Self::TooManyDevices => "too_many_devices",
            Self::InvalidKey => "invalid_key",
            Self::TooManyPrekeys => "too_many_prekeys",
            Self::DeviceMismatch => "device_mismatch",
            Self::TooLarge => "too_large",
            Self::MailboxFull => "mailbox_full",
            Self::RateLimited => "rate_limited",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::StorageUnavailable => "storage_unavailable",
            Self::StorageFull => "storage_full",
            Self::UnknownBlob => "unknown_blob",
            Self::BlobTooLarge => "blob_too_large",
            Self::BadOffset => "bad_offset",
            Self::QuotaExceeded => "quota_exceeded",
        }
    }

    /// Whether the same request may succeed later unchanged: the condition is the relay's
    /// (its load, its storage, a recipient's mailbox), not the request's. A client keeps such
    /// a request and retries it with backoff; any other code refuses the request for good.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::ShuttingDown
                | Self::Internal
                | Self::MailboxFull
                | Self::StorageUnavailable
                | Self::StorageFull
                | Self::DeviceMismatch
                | Self::QuotaExceeded
        )
    }

    /// Parses a code received on the wire; `None` for codes this build does not know.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
