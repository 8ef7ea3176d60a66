//! Prometheus metrics (all named `hush_relay_*`) and the operator HTTP listener that serves
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Metrics carry counts, sizes and durations only: never account ids, device ids or payloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Label for error counters: the stable error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code.
    pub code: String,
}

/// Label for connection gauges: the transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `quic` or `websocket`.
    pub transport: &'static str,
}

/// Every relay metric.
pub struct Metrics {
    registry: Registry,
    /// Open connections, by transport (admitted by the connection limits).
    pub connections: Family<TransportLabel, Gauge>,
    /// Authenticated connections.
    pub authenticated: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused (per-IP or global limit).
    pub connections_refused_total: Counter,
    /// Requests answered with an error, by code.
    pub errors_total: Family<CodeLabel, Counter>,
    /// Requests handled.
    pub requests_total: Counter,
    /// Envelopes durably stored.
    pub envelopes_stored_total: Counter,
    /// Envelopes pushed to devices (including redeliveries).
    pub envelopes_delivered_total: Counter,
    /// Envelopes acked and deleted.
    pub envelopes_acked_total: Counter,
    /// Envelopes deleted by the retention sweeper.
    pub envelopes_expired_total: Counter,
    /// Ephemeral envelopes delivered to online devices.
    pub ephemeral_delivered_total: Counter,
    /// Jobs per group commit.
    pub commit_batch_size: Histogram,
    /// Duration of a group commit, including the fsync.
    pub commit_seconds: Histogram,
    /// Group commits that failed.
    pub commit_failures_total: Counter,
    /// Bytes of requests read but not yet answered ([`crate::budget`]).
    pub buffered_bytes: Gauge,
    /// 1 while storage accepts writes, 0 while it is failing ([`crate::health`]).
    pub storage_writable: Gauge,
    /// Commits that failed with an I/O error.
    pub storage_failures_total: Counter,
    /// Free bytes on the data volume.
    pub disk_free_bytes: Gauge,
    /// Size of the database file.
    pub database_bytes: Gauge,
    /// Payload and blob bytes stored (each shared payload once), against `max_stored_bytes`.
    pub stored_payload_bytes: Gauge,
    /// Bundles handed out without one-time keys because the device's claim limit was used up.
    pub one_time_claims_limited_total: Counter,
    /// Blob uploads completed.
    pub blob_uploads_total: Counter,
    /// Blob bytes committed by puts.
    pub blob_upload_bytes_total: Counter,
    /// Blob bytes read by downloads.
    pub blob_download_bytes_total: Counter,
    /// Blobs deleted by the sweep (expired, or unfinished past their upload time).
    pub blobs_expired_total: Counter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hush_relay");
        let m = Self {
            connections: Family::default(),
            authenticated: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused_total: Counter::default(),
            errors_total: Family::default(),
            requests_total: Counter::default(),
            envelopes_stored_total: Counter::default(),
            envelopes_delivered_total: Counter::default(),
            envelopes_acked_total: Counter::default(),
            envelopes_expired_total: Counter::default(),
            ephemeral_delivered_total: Counter::default(),
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            commit_failures_total: Counter::default(),
            buffered_bytes: Gauge::default(),
            storage_writable: Gauge::default(),
            storage_failures_total: Counter::default(),
            disk_free_bytes: Gauge::default(),
            database_bytes: Gauge::default(),
            stored_payload_bytes: Gauge::default(),
            one_time_claims_limited_total: Counter::default(),
            blob_uploads_total: Counter::default(),
            blob_upload_bytes_total: Counter::default(),
            blob_download_bytes_total: Counter::default(),
            blobs_expired_total: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open connections, by transport (quic, websocket)",
            m.connections.clone(),
        );
        registry.register(
            "authenticated_connections",
            "Authenticated connections",
            m.authenticated.clone(),
        );
        registry.register(
            "connections_accepted",
            "QUIC connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused by limits",
            m.connections_refused_total.clone(),
        );
        registry.register(
            "errors",
            "Requests answered with an error, by code",
            m.errors_total.clone(),
        );
        registry.register("requests", "Requests handled", m.requests_total.clone());
        registry.register(
            "envelopes_stored",
            "Envelopes durably stored",
            m.envelopes_stored_total.clone(),
        );
        registry.register(
            "envelopes_delivered",
            "Envelopes pushed to devices",
            m.envelopes_delivered_total.clone(),
        );
        registry.register(
            "envelopes_acked",
            "Envelopes acked and deleted",
            m.envelopes_acked_total.clone(),
        );
        registry.register(
            "envelopes_expired",
            "Envelopes deleted by retention",
            m.envelopes_expired_total.clone(),
        );
        registry.register(
            "ephemeral_delivered",
            "Ephemeral envelopes delivered",
            m.ephemeral_delivered_total.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Jobs per group commit",
            m.commit_batch_size.clone(),
        );
        registry.register(
            "commit_seconds",
            "Group commit duration including fsync",
            m.commit_seconds.clone(),
        );
        registry.register(
            "commit_failures",
            "Group commits that failed",
            m.commit_failures_total.clone(),
        );
        registry.register(
            "buffered_request_bytes",
            "Bytes of requests read but not yet answered",
            m.buffered_bytes.clone(),
        );
        registry.register(
            "storage_writable",
            "1 while storage accepts writes, 0 while it is failing",
            m.storage_writable.clone(),
        );
        registry.register(
            "storage_failures",
            "Commits that failed with an I/O error",
            m.storage_failures_total.clone(),
        );
        registry.register(
            "disk_free_bytes",
            "Free bytes on the data volume",
            m.disk_free_bytes.clone(),
        );
        registry.register("database_bytes", "Size of the database file", m.database_bytes.clone());
        registry.register(
            "stored_payload_bytes",
            "Payload and blob bytes stored, each shared payload once",
            m.stored_payload_bytes.clone(),
        );
        registry.register(
            "one_time_claims_limited",
            "Bundles handed out without one-time keys: the device's claim limit was used up",
            m.one_time_claims_limited_total.clone(),
        );
        registry.register("blob_uploads", "Blob uploads completed", m.blob_uploads_total.clone());
        registry.register(
            "blob_upload_bytes",
            "Blob bytes committed by uploads",
            m.blob_upload_bytes_total.clone(),
        );
        registry.register(
            "blob_download_bytes",
            "Blob bytes read by downloads",
            m.blob_download_bytes_total.clone(),
        );
        registry.register(
            "blobs_expired",
            "Blobs deleted by the sweep (expired or abandoned)",
            m.blobs_expired_total.clone(),
        );
        Self { registry, ..m }
    }

    /// The open-connections gauge of `transport` (`quic` or `websocket`).
    pub fn connections(&self, transport: &'static str) -> Gauge {
        self.connections.get_or_create(&TransportLabel { transport }).clone()
    }

    /// Records one group commit.
    pub fn observe_commit(&self, jobs: usize, took: Duration, committed: bool) {
        self.commit_batch_size.observe(jobs as f64);
        self.commit_seconds.observe(took.as_secs_f64());
        if !committed {
            self.commit_failures_total.inc();
        }
    }

    /// Counts an error response.
    pub fn error(&self, code: hush_protocol::ErrorCode) {
        self.errors_total.get_or_create(&CodeLabel { code: code.as_str().to_owned() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// State shared with the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// True while the relay accepts connections (false before start and during shutdown).
    pub ready: Arc<AtomicBool>,
    /// Whether storage can take writes.
    pub health: Arc<crate::health::StorageHealth>,
}

/// Operator connections served at once; more are closed as they arrive, so the listener
/// can't use up the relay's file descriptors.
const MAX_HTTP_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's headers.
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the operator HTTP listener. Returns the bound address and a future that serves until
/// `stop` is cancelled.
///
/// Each connection serves one request (no keep-alive) whose headers must arrive within 5 s,
/// and at most 32 are open at once: a client that opens connections and sends half a header
/// holds nothing for long, and never more than 32 descriptors.
pub async fn serve_http(
    addr: SocketAddr,
    state: HttpState,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let fut = async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => break,
            };
            let Ok((tcp, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Over the cap the connection is dropped unanswered.
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let stop = stop.clone();
            connections.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HTTP_HEADER_TIMEOUT)
                    .keep_alive(false);
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(HTTP_HEADER_TIMEOUT, conn).await;
                    }
                }
                drop(slot);
            });
        }
        connections.close();
        connections.wait().await;
    };
    Ok((bound, fut))
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.render(),
    )
}

/// Ready while the relay accepts connections and its storage accepts new envelopes; the
/// body says why not.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    match s.health.why_not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
