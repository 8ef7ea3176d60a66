//! The relay's typed errors: one enum for storage, one for everything a request can fail with.
//!
//! Every [`RelayError`] maps to a stable wire [`ErrorCode`] and a human message, and becomes an
//! error [`Response`]. Storage errors are reported to clients as `internal` without detail;
//! the detail goes to the log.

use hush_protocol::wire::{self, Response, response};
use hush_protocol::{ErrorCode, FrameError};
use thiserror::Error;

/// A failure of the embedded database.
#[derive(Debug, Error)]
pub enum StoreError {
    /// redb reported an error (I/O, commit, corruption detected by redb).
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored record does not decode: wrong version byte or length.
    #[error("corrupt {0} record")]
    Corrupt(&'static str),
    /// The database was written by a newer relay.
    #[error("database schema version {found} is newer than this relay's {supported}")]
    SchemaTooNew {
        /// Version in the file.
        found: u64,
        /// Version this build writes.
        supported: u64,
    },
    /// The writer thread is gone (shutdown).
    #[error("store writer stopped")]
    WriterStopped,
    /// Storage is failing (an I/O error, a database being reopened): retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk is at its free-space floor, or stored payload at its budget.
    #[error("storage full: {0}")]
    Full(String),
}

impl StoreError {
    /// Whether this is a failure of the disk or file rather than of the data: redb's I/O
    /// errors, including "a previous I/O error occurred" (the handle must be reopened).
    pub fn is_io(&self) -> bool {
        match self {
            Self::Db(e) => matches!(
                e,
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            ),
            Self::Unavailable(_) => true,
            _ => false,
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
        impl From<$t> for RelayError {
            fn from(e: $t) -> Self {
                Self::Store(StoreError::Db(e.into()))
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why a request failed. Each variant has one wire code.
#[derive(Debug, Error)]
pub enum RelayError {
    /// A frame could not be read or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A well-formed request that is not allowed here.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request needs an authenticated connection.
    #[error("authenticate first")]
    NotAuthenticated,
    /// The connection is already authenticated.
    #[error("connection is already authenticated")]
    AlreadyAuthenticated,
    /// A signature did not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// No outstanding challenge.
    #[error("no outstanding challenge: request one, and use it once")]
    ReplayedNonce,
    /// Unknown account.
    #[error("unknown account")]
    UnknownAccount,
    /// Unknown device.
    #[error("unknown device {0}")]
    UnknownDevice(u32),
    /// Device list not newer than the stored one.
    #[error("device list version {offered} is not newer than the stored version {stored}")]
    StaleDeviceList {
        /// Stored version.
        stored: u64,
        /// Offered version.
        offered: u64,
    },
    /// Too many devices.
    #[error("{count} devices exceed this relay's limit of {max}")]
    TooManyDevices {
        /// Devices in the list.
        count: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Undecodable key material or device list.
    #[error("invalid key material: {0}")]
    InvalidKey(String),
    /// Too many prekeys.
    #[error("too many one-time prekeys: {0}")]
    TooManyPrekeys(String),
    /// Envelopes do not match the registered devices.
    #[error("envelopes do not match the registered devices of {} account(s)", .0.len())]
    DeviceMismatch(Vec<wire::DeviceMismatch>),
    /// A payload is larger than allowed.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A recipient mailbox is over quota.
    #[error("mailbox of device {device} is full ({why})")]
    MailboxFull {
        /// The device whose mailbox is full.
        device: u32,
        /// Depth or bytes.
        why: &'static str,
    },
    /// Rate limited.
    #[error("rate limited ({scope}); retry after {retry_after_ms} ms")]
    RateLimited {
        /// Which limit.
        scope: &'static str,
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Shutting down.
    #[error("relay is shutting down; reconnect later")]
    ShuttingDown,
    /// Storage failure; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such blob here (or not ours to write, not complete to read, or expired).
    #[error("unknown blob")]
    UnknownBlob,
    /// A blob larger than allowed.
    #[error("a blob of {size} bytes exceeds the limit of {max} bytes")]
    BlobTooLarge {
        /// Declared size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// A put not where the upload stands.
    #[error("bad offset: {why}; the blob has {committed} bytes committed")]
    BadOffset {
        /// What is wrong.
        why: &'static str,
        /// Bytes committed.
        committed: u64,
    },
    /// An upload quota is used up.
    #[error("{what}; retry after {retry_after_ms} ms")]
    QuotaExceeded {
        /// Which quota.
        what: &'static str,
        /// When to retry.
        retry_after_ms: u64,
    },
}

impl RelayError {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Frame(e) => e.code(),
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::NotAuthenticated => ErrorCode::NotAuthenticated,
            Self::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            Self::BadSignature(_) => ErrorCode::BadSignature,
            Self::ReplayedNonce => ErrorCode::ReplayedNonce,
            Self::UnknownAccount => ErrorCode::UnknownAccount,
            Self::UnknownDevice(_) => ErrorCode::UnknownDevice,
            Self::StaleDeviceList { .. } => ErrorCode::StaleDeviceList,
            Self::TooManyDevices { .. } => ErrorCode::TooManyDevices,
            Self::InvalidKey(_) => ErrorCode::InvalidKey,
            Self::TooManyPrekeys(_) => ErrorCode::TooManyPrekeys,
            Self::DeviceMismatch(_) => ErrorCode::DeviceMismatch,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::MailboxFull { .. } => ErrorCode::MailboxFull,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Store(StoreError::Unavailable(_)) => ErrorCode::StorageUnavailable,
            Self::Store(StoreError::Full(_)) => ErrorCode::StorageFull,
            Self::Store(_) => ErrorCode::Internal,
            Self::UnknownBlob => ErrorCode::UnknownBlob,
            Self::BlobTooLarge { .. } => ErrorCode::BlobTooLarge,
            Self::BadOffset { .. } => ErrorCode::BadOffset,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
        }
    }

    /// The error response sent to the client. Storage details stay in the log.
    pub fn to_response(&self) -> Response {
        let message = match self {
            Self::Store(StoreError::Unavailable(_)) => {
                "the relay's storage is failing; nothing was written, retry later".to_owned()
            }
            Self::Store(StoreError::Full(why)) => {
                format!("the relay is full ({why}); nothing was written, retry later")
            }
            Self::Store(_) => "internal storage error; nothing was written, retry".to_owned(),
            other => other.to_string(),
        };
        let mut err =
            wire::Error { code: self.code().as_str().to_owned(), message, ..Default::default() };
        match self {
            Self::RateLimited { retry_after_ms, .. }
            | Self::QuotaExceeded { retry_after_ms, .. } => err.retry_after_ms = *retry_after_ms,
            Self::DeviceMismatch(m) => err.mismatches = m.clone(),
            _ => {}
        }
        Response { body: Some(response::Body::Error(err)) }
    }
}

impl From<hush_protocol::DeviceListError> for RelayError {
    fn from(e: hush_protocol::DeviceListError) -> Self {
        match e.code() {
            ErrorCode::BadSignature => Self::BadSignature("device list"),
            _ => Self::InvalidKey(e.to_string()),
        }
    }
}

impl From<hush_prekeys::BundleError> for RelayError {
    fn from(e: hush_prekeys::BundleError) -> Self {
        match e {
            hush_prekeys::BundleError::BadSignature { what } => Self::BadSignature(what),
            other => Self::InvalidKey(other.to_string()),
        }
    }
}
