//! `hush-relay`: the Hush store-and-forward relay.
//!
//! The relay holds only what it cannot read: account-signed device lists, public prekeys, and
//! encrypted envelopes in per-device mailboxes, in an embedded redb database. It speaks the
//! relay protocol of docs/PROTOCOL.md over QUIC. Its modules are its features:
//!
//! - [`server`]: the QUIC listener, connections and request dispatch;
//! - [`websocket`]: the WebSocket listener for browsers, carrying the same frames
//!   ([`streams`] is what both listeners hand the dispatcher);
//! - [`auth`]: device challenge-response authentication bound to the connection;
//! - [`accounts`]: accounts and signed device lists;
//! - [`prekeys`]: verified prekey uploads and atomic one-time key claims;
//! - [`mailbox`]: device-set checks, durable multi-recipient sends, acks and retention;
//! - [`blobs`]: encrypted attachment blobs: resumable uploads, ranged reads, expiry;
//! - [`delivery`]: ordered drain, queue-empty marker, live and ephemeral pushes;
//! - [`online`]: which devices are connected and subscribed;
//! - [`writer`]: the single database writer with group commit and storage recovery;
//! - [`health`]: whether storage can take writes (disk floor, I/O failures), for `/readyz`;
//! - [`store`]: tables and versioned records;
//! - [`limits`]: rate and connection limits;
//! - [`budget`]: the memory budget for buffered requests (per connection, address, relay);
//! - [`metrics`]: Prometheus metrics and the operator HTTP listener;
//! - [`endpoint`]: the QUIC endpoint's socket buffers and restart-surviving reset keys;
//! - [`fds`]: the open-file limit and the WebSocket connections it allows;
//! - [`config`], [`tls`]: configuration and certificates.

pub mod accounts;
pub mod auth;
pub mod blobs;
pub mod budget;
pub mod config;
pub mod delivery;
pub mod endpoint;
pub mod error;
pub mod fds;
pub mod health;
pub mod limits;
pub mod mailbox;
pub mod metrics;
pub mod online;
pub mod prekeys;
pub mod server;
pub mod store;
pub mod streams;
pub mod tls;
pub mod websocket;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::endpoint::RelaySecret;
use crate::health::StorageHealth;
use crate::metrics::{HttpState, Metrics};
use crate::server::Relay;
use crate::store::Store;
use crate::writer::Writer;

/// What a started relay reports once it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The bound QUIC address.
    pub quic: SocketAddr,
    /// The bound WebSocket address.
    pub ws: SocketAddr,
    /// The bound operator HTTP address.
    pub http: SocketAddr,
    /// SHA-256 of the relay's public key (SubjectPublicKeyInfo), for clients to pin.
    pub pin: [u8; 32],
    /// SHA-256 of the relay's certificate (DER): the pin form of earlier relays.
    pub cert_sha256: [u8; 32],
}

/// Reloads the certificate on SIGHUP, and when the operator's files change (checked every
/// `tls_reload_secs`), until shutdown.
async fn reload_certificates(
    certs: Arc<tls::Certificates>,
    config: Config,
    stop: tokio_util::sync::CancellationToken,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let every = Duration::from_secs(config.tls_reload_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = hup => {
                tracing::info!("SIGHUP: reloading the certificate");
                let c = Arc::clone(&certs);
                let cfg = config.clone();
                let r = tokio::task::spawn_blocking(move || c.reload(&cfg).map(|_| ())).await;
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "certificate reload failed; still serving the old one");
                }
            }
            _ = tick.tick(), if config.tls_reload_secs > 0 => {
                let c = Arc::clone(&certs);
                let cfg = config.clone();
                let _ = tokio::task::spawn_blocking(move || c.reload_if_changed(&cfg)).await;
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Database.
    #[error("database: {0}")]
    Store(#[from] error::StoreError),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding a socket or creating the data directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs the relay until `stop` resolves (SIGTERM in the binary), then shuts down gracefully:
/// refuse new connections, tell subscribers to go away, let in-flight requests finish (up to
/// `shutdown_drain_secs`), close every connection with `GOING_AWAY`, and stop the writer.
pub async fn run(
    config: Config,
    on_ready: impl FnOnce(&Ready),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| StartError::Io { what, source }
    };
    std::fs::create_dir_all(&config.data_dir).map_err(io("create data directory"))?;
    let files = fds::raise();
    fds::report(&files, config.max_connections);
    let ws_connections = files.websocket_connections(config.max_connections);
    let store = Store::open_with_cache(&config.data_dir.join("relay.redb"), config.db_cache_bytes)?;
    let identity = tls::load_identity(&config)?;
    let (pin, cert_sha256) = (identity.pin, identity.cert_sha256);
    let certs = tls::Certificates::new(&identity)?;
    drop(identity);
    let ws_tls = if config.ws_tls { Some(tls::websocket_tls_config(&certs)?) } else { None };
    let ws_listen = config.ws_listen;
    let server_config = tls::server_config(&certs, &config)?;
    let secret = RelaySecret::load_or_create(&config.data_dir).map_err(io("relay secret"))?;
    let (socket, _buffers) = endpoint::bind_udp(config.listen, config.udp_buffer_bytes)
        .map_err(io("bind QUIC listener"))?;
    let endpoint = quinn::Endpoint::new(
        secret.endpoint_config(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(io("start QUIC endpoint"))?;
    let quic_addr = endpoint.local_addr().map_err(io("QUIC local address"))?;

    let metrics = Arc::new(Metrics::new());
    let health = StorageHealth::new(config.min_free_disk_bytes, Arc::clone(&metrics));
    let (writer, writer_thread) =
        Writer::start(store.clone(), Arc::clone(&health), Arc::clone(&metrics));
    let monitor_stop = tokio_util::sync::CancellationToken::new();
    let monitor = tokio::spawn(health::monitor(
        Arc::clone(&health),
        config.data_dir.clone(),
        store.clone(),
        writer.clone(),
        Arc::clone(&metrics),
        monitor_stop.clone(),
    ));
    let drain = Duration::from_secs(config.shutdown_drain_secs);
    let http_listen = config.http_listen;
    let relay =
        Arc::new(Relay::new(config, store, writer, Arc::clone(&health), Arc::clone(&metrics)));
    let ready_flag = Arc::new(AtomicBool::new(false));
    let http_stop = tokio_util::sync::CancellationToken::new();
    let (http_addr, http) = metrics::serve_http(
        http_listen,
        HttpState {
            metrics: Arc::clone(&metrics),
            ready: Arc::clone(&ready_flag),
            health: Arc::clone(&health),
        },
        http_stop.clone(),
    )
    .await
    .map_err(io("bind HTTP listener"))?;
    let http_task = tokio::spawn(http);
    let websocket =
        websocket::Listener::bind(Arc::clone(&relay), ws_listen, ws_tls, ws_connections)
            .await
            .map_err(io("bind WebSocket listener"))?;
    let ws_addr = websocket.addr;
    let accept = tokio::spawn(Arc::clone(&relay).accept_loop(endpoint.clone()));
    let sweeper = tokio::spawn(Arc::clone(&relay).sweeper());

    let reloads = tokio::spawn(reload_certificates(
        Arc::clone(&certs),
        relay.config.clone(),
        relay.shutdown.clone(),
    ));

    ready_flag.store(true, Ordering::Release);
    on_ready(&Ready { quic: quic_addr, ws: ws_addr, http: http_addr, pin, cert_sha256 });

    stop.await;
    tracing::info!("shutting down: refusing new connections, draining in-flight requests");
    ready_flag.store(false, Ordering::Release);
    relay.shutdown.cancel();
    relay.tracker.close();
    if tokio::time::timeout(drain, relay.tracker.wait()).await.is_err() {
        tracing::warn!("drain time ran out; closing connections with requests in flight");
    }
    endpoint.close(hush_protocol::close::GOING_AWAY.into(), b"going_away");
    websocket.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    accept.abort();
    let _ = reloads.await;
    let _ = sweeper.await;
    http_stop.cancel();
    monitor_stop.cancel();
    let _ = monitor.await;
    let _ = http_task.await;
    drop(relay);
    // Every request has been answered, so the writer has no job left; wait for it to release the
    // database so the file is closed cleanly.
    let joined = tokio::task::spawn_blocking(move || writer_thread.join());
    if tokio::time::timeout(Duration::from_secs(5), joined).await.is_err() {
        tracing::warn!("store writer did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}
