//! The client's typed errors. Every variant has a stable code ([`ClientError::code`]) that the
//! bindings carry to Kotlin, Swift and JavaScript; apps switch on the code.

use hush_protocol::{ErrorCode, Refusal};

use crate::records::RecordError;
use crate::store::StoreError;
use crate::transport::TransportError;
use crate::vault::SealError;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// A text longer than the limit; nothing was sent or stored.
    #[error("text too long: {chars} characters, the limit is {limit}")]
    TextTooLong {
        /// Characters in the text.
        chars: usize,
        /// The limit ([`MAX_TEXT_CHARS`](crate::content::MAX_TEXT_CHARS)).
        limit: usize,
    },
    /// An argument is malformed (an account id that is not 64 hex digits, an empty text…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The conversation or contact is not known.
    #[error("unknown contact")]
    UnknownContact,
    /// A verified contact's identity changed; sending waits until the user accepts the change.
    #[error("the contact's identity changed since it was verified; accept or re-verify it first")]
    IdentityChanged,
    /// The store already holds an account.
    #[error("this store already holds an account")]
    AccountExists,
    /// The store holds no account (create or link one first).
    #[error("this store holds no account")]
    NoAccount,
    /// Only the device holding the account key (the one that created the account) can change
    /// the device list.
    #[error("only the account's primary device can add or remove devices")]
    NotPrimary,
    /// The store key does not open this store.
    #[error("the store key does not open this store")]
    WrongStoreKey,
    /// The store holds data this build cannot read.
    #[error("corrupt or newer store: {0}")]
    CorruptStore(String),
    /// The storage backend failed; nothing of the operation was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relay refused the request.
    #[error(transparent)]
    Relay(Refusal),
    /// The relay is unreachable; the operation can be retried (sends are kept in the outbox).
    /// The message says which address was tried and what happened.
    #[error("network: {0}")]
    Network(String),
    /// The relay presented a certificate this client does not trust: a pin that does not
    /// match, or a WebPKI failure (unknown issuer, wrong name, expired). Retrying will not
    /// help until the pin, the trust roots or the relay's certificate change; the message
    /// names the address and the reason.
    #[error("certificate rejected: {0}")]
    CertificateRejected(String),
    /// The relay or a peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client was shut down.
    #[error("the client is shut down")]
    ShutDown,
    /// A group call was refused: `unknown_group`, `not_a_member`, `not_admin`,
    /// `group_too_large`, `invalid_group_change`… (PROTOCOL.md §17.7).
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// An attachment could not be decrypted: `wrong_key`, `attachment_tampered`,
    /// `attachment_truncated`, `attachment_too_long`, `digest_mismatch` (PROTOCOL.md §18.3).
    #[error(transparent)]
    Attachment(#[from] crate::attachment::AttachmentError),
    /// The app canceled the transfer.
    #[error("the transfer was canceled")]
    Canceled,
}

impl ClientError {
    /// The stable machine code.
    pub fn code(&self) -> &str {
        match self {
            Self::TextTooLong { .. } => "text_too_long",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::UnknownContact => "unknown_contact",
            Self::IdentityChanged => "identity_changed",
            Self::AccountExists => "account_exists",
            Self::NoAccount => "no_account",
            Self::NotPrimary => "not_primary",
            Self::WrongStoreKey => "wrong_store_key",
            Self::CorruptStore(_) => "corrupt_store",
            Self::Store(StoreError::Locked) => "store_locked",
            Self::Store(_) => "storage",
            Self::Relay(r) => r.code.as_str(),
            Self::Network(_) => "network",
            Self::CertificateRejected(_) => "certificate_rejected",
            Self::Protocol(_) => "protocol",
            Self::ShutDown => "shut_down",
            Self::Group(e) => e.code(),
            Self::Attachment(e) => e.code(),
            Self::Canceled => "canceled",
        }
    }
}

impl ClientError {
    /// The human message, without the code (the bindings carry the two apart, so a message
    /// never repeats its code).
    pub fn message(&self) -> String {
        match self {
            Self::Relay(r) => r.message.clone(),
            Self::Network(m)
            | Self::CertificateRejected(m)
            | Self::Protocol(m)
            | Self::InvalidArgument(m)
            | Self::CorruptStore(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The relay's code, typed, if the relay refused (`None` for a code this build does not
    /// know, which callers treat like `internal`).
    pub fn relay_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay(r) => r.code(),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the relay is unreachable or refused it for
    /// a reason of its own (its load, its storage, a mailbox), including codes this build does
    /// not know. A send refused this way stays queued and is retried with backoff.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network(_) | Self::Store(_) => true,
            Self::Relay(r) => r.is_retryable(),
            _ => false,
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Relay(r) => Self::Relay(r),
            TransportError::Disconnected(m) => Self::Network(m),
            TransportError::Certificate(m) => Self::CertificateRejected(m),
            TransportError::Protocol(m) => Self::Protocol(m),
        }
    }
}

impl From<RecordError> for ClientError {
    fn from(e: RecordError) -> Self {
        Self::CorruptStore(e.to_string())
    }
}

impl From<SealError> for ClientError {
    fn from(_: SealError) -> Self {
        Self::CorruptStore("a value failed to decrypt".into())
    }
}
