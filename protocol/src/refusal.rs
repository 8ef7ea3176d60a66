//! A relay's refusal of one request, as a client receives it: the typed form of an error
//! response ([`wire::Error`]).
//!
//! Both client transports (QUIC in `hush-net`, WebSocket in the browser) turn an error
//! response into a [`Refusal`], so client code matches [`ErrorCode`] variants, never strings.
//! A code this build does not know is kept as sent (so it can be shown and logged) and is
//! treated as retryable, as docs/PROTOCOL.md asks of clients.

use crate::error::ErrorCode;
use crate::wire;

/// The code of a refusal: one this build knows, or the string as the relay sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// A code listed in [`ErrorCode`].
    Known(ErrorCode),
    /// A code added to the protocol after this build.
    Unrecognised(String),
}

impl RefusalCode {
    /// Parses a code as received on the wire.
    pub fn parse(code: &str) -> Self {
        ErrorCode::parse(code).map_or_else(|| Self::Unrecognised(code.to_owned()), Self::Known)
    }

    /// The code as on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(c) => c.as_str(),
            Self::Unrecognised(s) => s,
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The relay refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("relay refused [{code}]: {message}")]
pub struct Refusal {
    /// The stable code.
    pub code: RefusalCode,
    /// For humans; may change between releases.
    pub message: String,
    /// For `rate_limited` (and other load refusals): how long to wait before retrying.
    pub retry_after_ms: u64,
    /// For `device_mismatch`: one entry per account whose devices did not match.
    pub mismatches: Vec<wire::DeviceMismatch>,
}

impl Refusal {
    /// A refusal with a known code and no details (what a client synthesises for a
    /// condition it detects itself, such as a device that was removed).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: RefusalCode::Known(code),
            message: message.into(),
            retry_after_ms: 0,
            mismatches: Vec::new(),
        }
    }

    /// The known code, or `None` for a code this build does not know.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.code {
            RefusalCode::Known(c) => Some(c),
            RefusalCode::Unrecognised(_) => None,
        }
    }

    /// Whether this refusal carries `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// Whether the same request may succeed later: a retryable known code, or an unknown one.
    pub fn is_retryable(&self) -> bool {
        self.code().is_none_or(ErrorCode::is_retryable)
    }
}

impl From<wire::Error> for Refusal {
    fn from(e: wire::Error) -> Self {
        Self {
            code: RefusalCode::parse(&e.code),
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            mismatches: e.mismatches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        let r = Refusal::from(wire::Error {
            code: "mailbox_full".into(),
            message: "full".into(),
            retry_after_ms: 5,
            mismatches: vec![],
        });
        assert!(r.is(ErrorCode::MailboxFull));
        assert!(r.is_retryable());
        assert_eq!(r.to_string(), "relay refused [mailbox_full]: full");

        let r = Refusal::from(wire::Error { code: "from_the_future".into(), ..Default::default() });
        assert_eq!(r.code(), None);
        assert_eq!(r.code.as_str(), "from_the_future");
        assert!(r.is_retryable(), "unknown codes are retried, as PROTOCOL.md asks");

        assert!(!Refusal::new(ErrorCode::BadSignature, "no").is_retryable());
    }
}
