//! Relay configuration: defaults, then a TOML file, then `HUSH_*` environment variables, then
//! command-line flags (each later source overrides the earlier ones).
//!
//! Every option is one flat key; the same name is the TOML key, the `--kebab-case` flag and the
//! `HUSH_UPPER_CASE` variable. docs/OPERATING.md lists them all with their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Shortest accepted `idle_timeout_secs`: twice the clients' keep-alive interval.
pub const MIN_IDLE_TIMEOUT_SECS: u64 = 10;

/// Log output format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

macro_rules! options {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// The relay's configuration.
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            /// PEM certificate chain; with `tls_key`, replaces the self-signed certificate.
            pub tls_cert: Option<PathBuf>,
            /// PEM private key for `tls_cert`.
            pub tls_key: Option<PathBuf>,
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: $default, )* tls_cert: None, tls_key: None }
            }
        }

        /// Command-line flags and `HUSH_*` variables; each overrides the file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct Overrides {
            $( $(#[doc = $doc])* #[arg(long, env = $env)] pub $name: Option<$ty>, )*
            /// PEM certificate chain (with --tls-key), instead of the self-signed certificate.
            #[arg(long, env = "HUSH_TLS_CERT")]
            pub tls_cert: Option<PathBuf>,
            /// PEM private key for --tls-cert.
            #[arg(long, env = "HUSH_TLS_KEY")]
            pub tls_key: Option<PathBuf>,
        }

        impl Config {
            /// Applies flag and environment overrides.
            pub fn apply(&mut self, o: Overrides) {
                $( if let Some(v) = o.$name { self.$name = v; } )*
                if o.tls_cert.is_some() { self.tls_cert = o.tls_cert; }
                if o.tls_key.is_some() { self.tls_key = o.tls_key; }
            }
        }
    };
}

options! {
    /// QUIC (UDP) listen address.
    listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 4433)), "HUSH_LISTEN";
    /// WebSocket listen address (TCP): the relay protocol for browsers and UDP-blocked networks.
    ws_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 4443)), "HUSH_WS_LISTEN";
    /// Serve WebSocket over TLS with the relay's certificate; `false` serves plain WebSocket,
    /// only for a TLS-terminating reverse proxy in front or a loopback-only development relay.
    ws_tls: bool = true, "HUSH_WS_TLS";
    /// UDP socket buffer asked for, each way, in bytes (the kernel caps it at
    /// net.core.rmem_max / wmem_max unless the relay has CAP_NET_ADMIN); 0 keeps the default.
    udp_buffer_bytes: usize = 8 * 1024 * 1024, "HUSH_UDP_BUFFER_BYTES";
    /// Operator HTTP listen address (/metrics, /healthz, /readyz).
    http_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9433)), "HUSH_HTTP_LISTEN";
    /// Data directory: the database and the generated certificate live here.
    data_dir: PathBuf = default_data_dir(), "HUSH_DATA_DIR";
    /// Log format.
    log_format: LogFormat = LogFormat::Text, "HUSH_LOG_FORMAT";
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `hush_relay=debug`.
    log_level: String = "info".to_owned(), "HUSH_LOG_LEVEL";
    /// Most devices per account (Signal's limit is 6).
    max_devices: usize = 6, "HUSH_MAX_DEVICES";
    /// Largest envelope payload, in bytes.
    max_payload_bytes: usize = 256 * 1024, "HUSH_MAX_PAYLOAD_BYTES";
    /// Largest request frame, in bytes (at most 4 MiB).
    max_request_bytes: usize = 4 * 1024 * 1024, "HUSH_MAX_REQUEST_BYTES";
    /// Most envelopes waiting in one device mailbox.
    mailbox_max_envelopes: u64 = 50_000, "HUSH_MAILBOX_MAX_ENVELOPES";
    /// Most payload bytes waiting in one device mailbox.
    mailbox_max_bytes: u64 = 256 * 1024 * 1024, "HUSH_MAILBOX_MAX_BYTES";
    /// Most payload bytes stored relay-wide (each shared payload counted once); 0: no budget
    /// beyond `min_free_disk_bytes`.
    max_stored_bytes: u64 = 0, "HUSH_MAX_STORED_BYTES";
    /// Free space kept on the data volume: below it, new envelopes are refused `storage_full`.
    min_free_disk_bytes: u64 = 256 * 1024 * 1024, "HUSH_MIN_FREE_DISK_BYTES";
    /// The share of a device mailbox's envelope and byte quotas one sender account may hold
    /// (its own account's devices are exempt), in percent.
    mailbox_sender_share_percent: u8 = 25, "HUSH_MAILBOX_SENDER_SHARE_PERCENT";
    /// How long an envelope nobody acked is kept, in seconds (30 days).
    retention_secs: u64 = 30 * 24 * 3600, "HUSH_RETENTION_SECS";
    /// redb page cache, in bytes: memory the database may hold on to (the OS page cache is
    /// beneath it).
    db_cache_bytes: usize = crate::store::DEFAULT_CACHE_BYTES, "HUSH_DB_CACHE_BYTES";
    /// Largest attachment blob, in bytes (101 MiB: a 100 MiB file and its encryption, which
    /// adds 16 bytes per 64 KiB).
    max_blob_bytes: u64 = 101 * 1024 * 1024, "HUSH_MAX_BLOB_BYTES";
    /// Blob bytes one account may upload per UTC day (declared sizes; 2 GiB).
    blob_upload_bytes_per_day: u64 = 2 * 1024 * 1024 * 1024, "HUSH_BLOB_UPLOAD_BYTES_PER_DAY";
    /// Unfinished blob uploads per device at once.
    blob_uploads_per_device: u64 = 4, "HUSH_BLOB_UPLOADS_PER_DEVICE";
    /// How long an unfinished upload is kept after its last put, in seconds (1 day).
    blob_upload_ttl_secs: u64 = 24 * 3600, "HUSH_BLOB_UPLOAD_TTL_SECS";
    /// How often the retention sweeper runs, in milliseconds.
    sweep_interval_ms: u64 = 60_000, "HUSH_SWEEP_INTERVAL_MS";
    /// Most one-time prekeys (of each kind) per upload.
    max_prekeys_per_upload: usize = 100, "HUSH_MAX_PREKEYS_PER_UPLOAD";
    /// Most one-time prekeys (of each kind) stored per device.
    max_stored_prekeys: u64 = 1_000, "HUSH_MAX_STORED_PREKEYS";
    /// Prekey bundles an account may fetch per second (sustained), one per device asked for.
    account_bundles_per_second: u32 = 10, "HUSH_ACCOUNT_BUNDLES_PER_SECOND";
    /// Bundle burst per account (enough to start sessions with a 1,000-member group).
    account_bundle_burst: u32 = 6000, "HUSH_ACCOUNT_BUNDLE_BURST";
    /// One-time keys a device hands out in a burst; past it, bundles come without one.
    device_one_time_claim_burst: u32 = 50, "HUSH_DEVICE_ONE_TIME_CLAIM_BURST";
    /// Seconds per one-time key a device hands out once its burst is used (sustained rate).
    device_one_time_claim_every_secs: u64 = 60, "HUSH_DEVICE_ONE_TIME_CLAIM_EVERY_SECS";
    /// Sends per second per account (sustained); a multi-recipient send counts once.
    account_sends_per_second: u32 = 50, "HUSH_ACCOUNT_SENDS_PER_SECOND";
    /// Send burst per account.
    account_send_burst: u32 = 500, "HUSH_ACCOUNT_SEND_BURST";
    /// Requests per second per connection (sustained).
    connection_requests_per_second: u32 = 100, "HUSH_CONNECTION_REQUESTS_PER_SECOND";
    /// Request burst per connection.
    connection_request_burst: u32 = 300, "HUSH_CONNECTION_REQUEST_BURST";
    /// Registrations (device-list uploads) per second per source IP (sustained).
    registrations_per_second: u32 = 1, "HUSH_REGISTRATIONS_PER_SECOND";
    /// Registration burst per source IP.
    registration_burst: u32 = 20, "HUSH_REGISTRATION_BURST";
    /// Most simultaneous connections from one IP address.
    connections_per_ip: u32 = 256, "HUSH_CONNECTIONS_PER_IP";
    /// Most simultaneous connections in total.
    max_connections: u32 = 200_000, "HUSH_MAX_CONNECTIONS";
    /// Seconds a connection may stay unauthenticated (registration only) before it is closed.
    auth_timeout_secs: u64 = 30, "HUSH_AUTH_TIMEOUT_SECS";
    /// Seconds of silence before a connection is dropped (clients send keep-alives).
    idle_timeout_secs: u64 = 60, "HUSH_IDLE_TIMEOUT_SECS";
    /// Concurrent request streams per connection.
    max_streams_per_connection: u32 = 64, "HUSH_MAX_STREAMS_PER_CONNECTION";
    /// Most bytes of requests the relay buffers (read but not yet answered), in total.
    max_buffered_bytes: usize = 256 * 1024 * 1024, "HUSH_MAX_BUFFERED_BYTES";
    /// Most bytes of requests the relay buffers for one source address (IPv4, or IPv6 /64).
    max_buffered_bytes_per_ip: usize = 32 * 1024 * 1024, "HUSH_MAX_BUFFERED_BYTES_PER_IP";
    /// Seconds between checks of `tls_cert`/`tls_key` for a renewed certificate (reloaded
    /// without a restart; SIGHUP reloads at once); 0 disables the checks.
    tls_reload_secs: u64 = 60, "HUSH_TLS_RELOAD_SECS";
    /// Seconds to let in-flight requests finish on SIGTERM before closing connections.
    shutdown_drain_secs: u64 = 10, "HUSH_SHUTDOWN_DRAIN_SECS";
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Path::new(&home).join(".local/share/hush-relay"),
        _ => PathBuf::from("hush-relay-data"),
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `file` (if given) over the defaults, then applies `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.into(), source })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })?
            }
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.max_request_bytes > hush_protocol::MAX_FRAME_LEN {
            return bad("max_request_bytes cannot exceed 4194304 (the protocol's frame limit)");
        }
        if self.max_payload_bytes.saturating_add(1024) > self.max_request_bytes {
            return bad("max_payload_bytes must be at least 1 KiB below max_request_bytes");
        }
        if self.max_devices == 0
            || self.max_devices > hush_protocol::device_list::MAX_DEVICES_IN_LIST
        {
            return bad("max_devices must be between 1 and 255");
        }
        if self.max_request_bytes < crate::blobs::MIN_REQUEST_FOR_BLOBS {
            return bad("max_request_bytes must be at least 20096 (one blob put of 16,000 bytes)");
        }
        if self.blob_upload_ttl_secs == 0 {
            return bad("blob_upload_ttl_secs must be positive");
        }
        if self.retention_secs == 0 || self.sweep_interval_ms == 0 {
            return bad("retention_secs and sweep_interval_ms must be positive");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        // One largest request (plus its WebSocket framing) must fit an address's share, and
        // an address's share must fit the total.
        if self.max_buffered_bytes_per_ip < self.max_request_bytes + 64 * 1024
            || self.max_buffered_bytes < self.max_buffered_bytes_per_ip
        {
            return bad(
                "max_buffered_bytes_per_ip must be at least max_request_bytes + 65536, and \
                 max_buffered_bytes at least max_buffered_bytes_per_ip",
            );
        }
        if self.mailbox_sender_share_percent == 0 || self.mailbox_sender_share_percent > 100 {
            return bad("mailbox_sender_share_percent must be between 1 and 100");
        }
        if self.max_streams_per_connection == 0 {
            return bad("max_streams_per_connection must be positive");
        }
        // Clients keep an idle connection open with a QUIC keep-alive every 5 s (hush-net) and a
        // browser's WebSocket answers pings sent every third of the timeout; shorter timeouts
        // would cut idle phones off between keep-alives and make them reconnect all day.
        if self.idle_timeout_secs < MIN_IDLE_TIMEOUT_SECS {
            return bad(&format!(
                "idle_timeout_secs must be at least {MIN_IDLE_TIMEOUT_SECS} (clients send a \
                 keep-alive every 5 s)"
            ));
        }
        let rates = [
            self.account_sends_per_second,
            self.account_send_burst,
            self.account_bundles_per_second,
            self.account_bundle_burst,
            self.device_one_time_claim_burst,
            u32::from(self.device_one_time_claim_every_secs > 0),
            self.connection_requests_per_second,
            self.connection_request_burst,
            self.registrations_per_second,
            self.registration_burst,
        ];
        if self.auth_timeout_secs == 0
            || self.connections_per_ip == 0
            || self.max_connections == 0
            || rates.contains(&0)
        {
            return bad("timeouts, connection limits, rates and bursts must be positive");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad("log_level is not a valid filter (e.g. `info` or `hush_relay=debug`)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "max_devices = 3\nlog_format = \"json\"\nretention_secs = 60\n")
            .unwrap();
        let o = Overrides { max_devices: Some(4), ..Default::default() };
        let c = Config::load(Some(&path), o).unwrap();
        assert_eq!(c.max_devices, 4);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.retention_secs, 60);
        assert_eq!(c.mailbox_max_envelopes, Config::default().mailbox_max_envelopes);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "max_devises = 3\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), Overrides::default()),
            Err(ConfigError::Parse { .. })
        ));
        let o = Overrides { max_request_bytes: Some(64 << 20), ..Default::default() };
        assert!(matches!(Config::load(None, o), Err(ConfigError::Invalid(_))));
        let o = Overrides { idle_timeout_secs: Some(9), ..Default::default() };
        let e = Config::load(None, o).unwrap_err();
        assert!(e.to_string().contains("idle_timeout_secs must be at least 10"), "{e}");
        let o = Overrides { idle_timeout_secs: Some(10), ..Default::default() };
        assert_eq!(Config::load(None, o).unwrap().idle_timeout_secs, 10);
    }
}
