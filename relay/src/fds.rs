//! File descriptors: at start the relay raises its soft open-file limit (`RLIMIT_NOFILE`) to
//! the hard limit, and derives from the result how many WebSocket connections it can hold.
//!
//! Every WebSocket connection (and every one still handshaking) holds a descriptor; QUIC
//! connections all share the one UDP socket and hold none. [`RESERVED`] descriptors are kept
//! for everything else: the database, the listening sockets, the operator listener's
//! connections ([`crate::metrics`] caps them at 32), standard streams, the runtime's own, and
//! the data directory reads of TLS reloads and disk checks. The WebSocket listener takes a
//! descriptor permit before each `accept`, so it never runs into `EMFILE`.

/// Descriptors kept for everything but WebSocket connections.
pub const RESERVED: u64 = 128;

/// The open-file limits once raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit before it was raised, if it was.
    pub raised_from: Option<u64>,
}

impl FileLimits {
    /// WebSocket connections the relay can hold: `max_connections`, or what the descriptors
    /// allow once [`RESERVED`] are set aside, whichever is smaller (at least 16).
    pub fn websocket_connections(&self, max_connections: u32) -> usize {
        let by_fds = self.soft.saturating_sub(RESERVED).max(16);
        usize::try_from(by_fds.min(u64::from(max_connections))).unwrap_or(usize::MAX)
    }
}

/// Raises the soft limit to the hard one (failing that, leaves it) and reports both.
pub fn raise() -> FileLimits {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.current.unwrap_or(u64::MAX);
    let hard = before.maximum.unwrap_or(u64::MAX);
    if soft >= hard {
        return FileLimits { soft, hard, raised_from: None };
    }
    match setrlimit(Resource::Nofile, Rlimit { current: before.maximum, maximum: before.maximum }) {
        Ok(()) => FileLimits { soft: hard, hard, raised_from: Some(soft) },
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            FileLimits { soft, hard, raised_from: None }
        }
    }
}

/// Logs what the limits mean for connections: once, at start, and a warning when the
/// descriptors, not `max_connections`, bound the WebSocket connections.
pub fn report(limits: &FileLimits, max_connections: u32) {
    let ws = limits.websocket_connections(max_connections);
    if let Some(from) = limits.raised_from {
        tracing::info!(from, to = limits.soft, "raised the open-file limit to its hard limit");
    }
    if (ws as u64) >= u64::from(max_connections) {
        return;
    }
    if max_connections == crate::config::Config::default().max_connections {
        // The default allows more than any open-file limit: the limit decides, as intended.
        tracing::info!(
            open_files = limits.soft,
            websocket_connections = ws,
            "WebSocket connections are limited by the open-file limit"
        );
    } else {
        tracing::warn!(
            open_files = limits.soft,
            websocket_connections = ws,
            max_connections,
            "the open-file limit allows fewer WebSocket connections than max_connections \
             (QUIC connections are not affected); raise the hard limit (systemd: \
             LimitNOFILE=) to serve more browsers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_connections_follow_the_smaller_limit() {
        let l = FileLimits { soft: 1024, hard: 1024, raised_from: None };
        assert_eq!(l.websocket_connections(200_000), 896);
        assert_eq!(l.websocket_connections(100), 100);
        let tiny = FileLimits { soft: 64, hard: 64, raised_from: None };
        assert_eq!(tiny.websocket_connections(200_000), 16);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let l = raise();
        assert_eq!(l.soft, l.hard);
        assert_eq!(raise().raised_from, None, "a second call has nothing left to raise");
    }
}
