//! The QUIC listener: connections, per-connection state, and request dispatch.
//!
//! The dispatcher is shared with the WebSocket listener ([`crate::websocket`]) through the
//! stream traits of [`crate::streams`]. One task per connection accepts request streams; each stream carries one request and one
//! response (a `Subscribe` stream then carries deliveries, see [`crate::delivery`]). Every
//! failure on a stream is answered with a typed error response where the stream still allows
//! it, and otherwise the stream is reset: no request can panic the relay or hang a task (reads
//! have a deadline).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_protocol::wire::{self, Response, request, response};
use hush_protocol::{AccountKey, DeviceList, close};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Challenge};
use crate::budget::{Budget, ConnBudget};
use crate::config::Config;
use crate::error::{RelayError, StoreError};
use crate::health::StorageHealth;
use crate::limits::{ClaimRate, ConnectionRate, Limiters, Rate};
use crate::mailbox::{self, Quotas};
use crate::metrics::Metrics;
use crate::online::Online;
use crate::store::{AccountId, Store};
use crate::streams::{FrameRead, FrameWrite, Peer, ReadError};
use crate::writer::Writer;
use crate::{accounts, blobs, delivery, prekeys};

/// How long a client may take to send a whole request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request frame before authentication. The largest pre-auth request, a `Register` with
/// a 255-device list, is about 35 KB; anything bigger is refused before it is read, so an
/// unauthenticated peer can't make the relay buffer `max_request_bytes` per stream.
pub const PRE_AUTH_MAX_REQUEST: usize = 64 * 1024;
/// What a connection may buffer before it authenticates: two largest pre-auth requests.
pub const PRE_AUTH_BUFFER: usize = 2 * PRE_AUTH_MAX_REQUEST;

/// Everything the connection tasks share.
pub struct Relay {
    /// Configuration.
    pub config: Config,
    /// Database (reads).
    pub store: Store,
    /// Database (writes, group-committed).
    pub writer: Writer,
    /// Online devices.
    pub online: Online,
    /// Rate and connection limits.
    pub limiters: Arc<Limiters>,
    /// Memory for buffered requests.
    pub budget: Arc<Budget>,
    /// Whether storage can take writes.
    pub health: Arc<StorageHealth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Tracks request tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    next_conn_id: AtomicU64,
}

/// Per-connection state.
pub struct Conn {
    /// Relay-local id.
    pub id: u64,
    /// The connection.
    pub peer: Peer,
    /// Source address.
    pub ip: IpAddr,
    /// Set once by a successful `Authenticate`.
    pub device: OnceLock<(AccountId, u32)>,
    /// The registration id the device had when it authenticated: a device replaced under the
    /// same id (new registration id) no longer matches.
    pub registration_id: OnceLock<u32>,
    /// This connection's share of the request memory budget.
    pub budget: Arc<ConnBudget>,
    challenge: Challenge,
    rate: ConnectionRate,
    pub(crate) subscribed: AtomicBool,
}

impl Relay {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        store: Store,
        writer: Writer,
        health: Arc<StorageHealth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limiters = Arc::new(Limiters::new(
            Rate { per_second: config.account_sends_per_second, burst: config.account_send_burst },
            Rate { per_second: config.registrations_per_second, burst: config.registration_burst },
            Rate {
                per_second: config.account_bundles_per_second,
                burst: config.account_bundle_burst,
            },
            ClaimRate {
                burst: config.device_one_time_claim_burst,
                every: Duration::from_secs(config.device_one_time_claim_every_secs),
            },
            config.connections_per_ip,
            config.max_connections,
        ));
        let budget = Budget::new(
            config.max_buffered_bytes,
            config.max_buffered_bytes_per_ip,
            Arc::clone(&metrics),
        );
        Self {
            config,
            store,
            writer,
            online: Online::default(),
            limiters,
            budget,
            health,
            metrics,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// Retention and quota settings for mailbox writes.
    pub fn quotas(&self) -> Quotas {
        let c = &self.config;
        let share =
            |quota: u64| quota.saturating_mul(u64::from(c.mailbox_sender_share_percent)) / 100;
        Quotas {
            max_envelopes: c.mailbox_max_envelopes,
            max_bytes: c.mailbox_max_bytes,
            sender_envelopes: share(c.mailbox_max_envelopes).max(1),
            sender_bytes: share(c.mailbox_max_bytes),
            max_stored_bytes: c.max_stored_bytes,
            retention_ms: c.retention_secs.saturating_mul(1000),
        }
    }

    /// Accepts connections until shutdown; after that, refuses new ones.
    pub async fn accept_loop(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            if self.shutdown.is_cancelled() {
                incoming.refuse();
                continue;
            }
            let relay = Arc::clone(&self);
            tokio::spawn(async move { relay.connection(incoming).await });
        }
    }

    /// State for a new connection from `ip`, which may buffer `buffer` bytes of requests
    /// until it authenticates.
    pub(crate) fn new_conn(&self, peer: Peer, ip: IpAddr, buffer: usize) -> Conn {
        Conn {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            peer,
            ip,
            budget: self.budget.connection(crate::limits::network(ip), buffer),
            device: OnceLock::new(),
            registration_id: OnceLock::new(),
            challenge: Challenge::default(),
            rate: ConnectionRate::new(Rate {
                per_second: self.config.connection_requests_per_second,
                burst: self.config.connection_request_burst,
            }),
            subscribed: AtomicBool::new(false),
        }
    }

    /// Forgets a connection that has ended.
    pub(crate) fn connection_ended(&self, conn: &Conn) {
        if let Some(&key) = conn.device.get() {
            self.online.disconnected(key, conn.id);
            self.metrics.authenticated.dec();
        }
        self.metrics.connections(conn.peer.transport()).dec();
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let ip = incoming.remote_address().ip();
        let slot = self.limiters.admit(ip);
        let quic = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "handshake failed");
                return;
            }
        };
        let Some(_slot) = slot else {
            self.metrics.connections_refused_total.inc();
            quic.close(close::TOO_MANY_CONNECTIONS.into(), b"too_many_connections");
            return;
        };
        self.metrics.connections_total.inc();
        self.metrics.connections("quic").inc();
        let conn = Arc::new(self.new_conn(Peer::Quic(quic.clone()), ip, PRE_AUTH_BUFFER));
        let auth_deadline = tokio::time::sleep(Duration::from_secs(self.config.auth_timeout_secs));
        tokio::pin!(auth_deadline);
        // `select!` evaluates a branch's guard only when it starts waiting, and authentication
        // completes on another task meanwhile: so the deadline branch itself checks, and
        // disarms once the connection is authenticated.
        let mut armed = true;
        loop {
            tokio::select! {
                stream = quic.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        let relay = Arc::clone(&self);
                        let conn = Arc::clone(&conn);
                        self.tracker.spawn(async move { relay.stream(conn, send, recv).await });
                    }
                    Err(_) => break,
                },
                () = &mut auth_deadline, if armed => {
                    if conn.device.get().is_some() {
                        armed = false;
                        continue;
                    }
                    quic.close(close::AUTH_TIMEOUT.into(), b"auth_timeout");
                    break;
                }
            }
        }
        self.connection_ended(&conn);
    }

    /// Serves one stream: reads its request, answers it (or, for `Subscribe`, serves
    /// deliveries on it until it ends).
    pub(crate) async fn stream<W: FrameWrite, R: FrameRead>(
        self: Arc<Self>,
        conn: Arc<Conn>,
        mut send: W,
        mut recv: R,
    ) {
        let limit = if conn.device.get().is_some() {
            self.config.max_request_bytes
        } else {
            PRE_AUTH_MAX_REQUEST.min(self.config.max_request_bytes)
        };
        // The request's memory stays charged until it is answered (its decoded form holds as
        // much as its frame did).
        let mut held = conn.budget.hold();
        let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, recv.read_frame(limit, &mut held));
        let request = match read.await {
            Ok(Ok(Some(body))) => body.decode::<wire::Request>().map_err(RelayError::from),
            Ok(Ok(None)) => Err(RelayError::Frame(hush_protocol::FrameError::Truncated)),
            Ok(Err(ReadError::Frame(e))) => Err(RelayError::Frame(e)),
            Ok(Err(ReadError::Refused(scope))) => Err(scope.into_error()),
            Ok(Err(ReadError::Gone(e))) => {
                tracing::debug!(error = %e, "request stream failed");
                return;
            }
            Err(_) => Err(RelayError::BadRequest("request not received in time".into())),
        };
        self.metrics.requests_total.inc();
        if !matches!(request, Ok(wire::Request { body: Some(request::Body::Subscribe(_)) })) {
            recv.consume_fin();
        }
        let body = match request {
            Ok(wire::Request { body: Some(body) }) => body,
            Ok(wire::Request { body: None }) => {
                return self
                    .reply(&mut send, Err(RelayError::BadRequest("empty request".into())))
                    .await;
            }
            Err(e) => {
                // The client may still be sending an oversize body: stop it, then answer.
                recv.stop();
                return self.reply(&mut send, Err(e)).await;
            }
        };
        if let request::Body::Subscribe(_) = body {
            drop(held);
            let result = self.check_subscribe(&conn);
            match result {
                Ok(key) => delivery::serve(self, conn, key, send, recv).await,
                Err(e) => self.reply(&mut send, Err(e)).await,
            }
            return;
        }
        let result = self.dispatch(&conn, body).await;
        self.reply(&mut send, result).await;
    }

    async fn reply<W: FrameWrite>(&self, send: &mut W, result: Result<response::Body, RelayError>) {
        let response = match result {
            Ok(body) => Response { body: Some(body) },
            Err(e) => {
                self.metrics.error(e.code());
                // A full or failing store is reported once, by the storage health; here only
                // the unexpected storage errors are.
                if let RelayError::Store(inner) = &e
                    && !matches!(inner, StoreError::Full(_) | StoreError::Unavailable(_))
                {
                    tracing::error!(error = %inner, "storage error");
                } else {
                    tracing::debug!(code = %e.code(), "request refused");
                }
                e.to_response()
            }
        };
        if send.write(&response).await {
            send.finish().await;
        }
    }

    fn check_subscribe(&self, conn: &Conn) -> Result<(AccountId, u32), RelayError> {
        if self.shutdown.is_cancelled() {
            return Err(RelayError::ShuttingDown);
        }
        conn.rate.check()?;
        let key = *conn.device.get().ok_or(RelayError::NotAuthenticated)?;
        if conn.subscribed.swap(true, Ordering::AcqRel) {
            return Err(RelayError::BadRequest("this connection is already subscribed".into()));
        }
        Ok(key)
    }

    async fn dispatch(
        &self,
        conn: &Conn,
        body: request::Body,
    ) -> Result<response::Body, RelayError> {
        if self.shutdown.is_cancelled() {
            return Err(RelayError::ShuttingDown);
        }
        conn.rate.check()?;
        match body {
            request::Body::Register(r) => self.register(conn, r).await,
            request::Body::GetChallenge(_) => Ok(response::Body::Challenge(wire::Challenge {
                nonce: conn.challenge.issue().to_vec(),
            })),
            request::Body::Authenticate(a) => {
                if conn.device.get().is_some() {
                    return Err(RelayError::AlreadyAuthenticated);
                }
                let verified = auth::verify(&conn.challenge, &conn.peer, &self.store, &a);
                let (key, registration_id) = verified?;
                if conn.device.set(key).is_err() {
                    return Err(RelayError::AlreadyAuthenticated);
                }
                let _ = conn.registration_id.set(registration_id);
                // Two largest requests, as QUIC's connection window once authenticated.
                conn.budget.set_limit(self.config.max_request_bytes.saturating_mul(2));
                conn.peer.authenticated(self.config.max_request_bytes);
                self.online.connected(key, conn.id, conn.peer.clone());
                self.metrics.authenticated.inc();
                // A removal that committed between the check above and the registration just
                // made would have missed this connection: look again now that it is visible.
                if !self.store.has_device(&key.0, key.1, registration_id)? {
                    self.online.cut(&key);
                    return Err(RelayError::UnknownDevice(key.1));
                }
                Ok(response::Body::Authenticated(wire::Authenticated { server_time_ms: now_ms() }))
            }
            request::Body::GetDeviceList(g) => {
                authed(conn)?;
                let account =
                    AccountKey::from_bytes(&g.account).map_err(|_| RelayError::UnknownAccount)?;
                let list = self.store.device_list(&account)?.ok_or(RelayError::UnknownAccount)?;
                Ok(response::Body::DeviceList(wire::DeviceListBody {
                    device_list: list.encoded().to_vec(),
                }))
            }
            request::Body::UploadPrekeys(u) => {
                let (account, device) = authed(conn)?;
                let key =
                    AccountKey::from_bytes(&account).map_err(|_| RelayError::UnknownAccount)?;
                let list = self.store.device_list(&key)?.ok_or(RelayError::UnknownAccount)?;
                let entry = list.device(device).ok_or(RelayError::UnknownDevice(device))?;
                let upload = prekeys::Upload::verify(
                    &u,
                    &entry.identity,
                    self.config.max_prekeys_per_upload,
                )?;
                let max = self.config.max_stored_prekeys;
                let registration_id = entry.registration_id;
                let counts = self
                    .writer
                    .run(move |txn| {
                        prekeys::store_upload(
                            txn,
                            &account,
                            (device, registration_id),
                            &upload,
                            max,
                        )
                    })
                    .await?;
                Ok(response::Body::PrekeyCounts(counts))
            }
            request::Body::GetPrekeyCounts(_) => {
                let (account, device) = authed(conn)?;
                Ok(response::Body::PrekeyCounts(prekeys::read_counts(
                    &self.store,
                    &account,
                    device,
                )?))
            }
            request::Body::FetchBundles(f) => {
                let (requester, _) = authed(conn)?;
                let account = *AccountKey::from_bytes(&f.account)
                    .map_err(|_| RelayError::UnknownAccount)?
                    .as_bytes();
                // A device named twice would claim two of its one-time keys for one bundle.
                let mut ids = f.device_ids;
                ids.sort_unstable();
                ids.dedup();
                // Every device counts; "all devices" counts as the most an account may have.
                let asked = if ids.is_empty() { self.config.max_devices } else { ids.len() };
                self.limiters
                    .check_bundles(&requester, u32::try_from(asked).unwrap_or(u32::MAX))?;
                let limiters = Arc::clone(&self.limiters);
                let metrics = Arc::clone(&self.metrics);
                let bundles = self
                    .writer
                    .run(move |txn| {
                        prekeys::claim_bundles(txn, &account, &ids, |device| {
                            let allowed = limiters.allow_one_time_claim(&(account, device));
                            if !allowed {
                                metrics.one_time_claims_limited_total.inc();
                            }
                            allowed
                        })
                    })
                    .await?;
                Ok(response::Body::Bundles(wire::Bundles { bundles }))
            }
            request::Body::Send(s) => self.send(conn, s).await,
            request::Body::BlobCreate(b) => self.blob_create(conn, b).await,
            request::Body::BlobPut(b) => self.blob_put(conn, b).await,
            request::Body::BlobStatus(b) => {
                authed(conn)?;
                let id = blobs::parse_id(&b.blob_id)?;
                Ok(response::Body::BlobProgress(self.store.blob_status(id, now_ms())?))
            }
            request::Body::BlobGet(b) => {
                authed(conn)?;
                let id = blobs::parse_id(&b.blob_id)?;
                let data = self.store.blob_read(id, b.offset, b.max_len, now_ms())?;
                self.metrics.blob_download_bytes_total.inc_by(data.data.len() as u64);
                Ok(response::Body::BlobData(data))
            }
            request::Body::Subscribe(_) => {
                Err(RelayError::BadRequest("subscribe is handled on its own stream".into()))
            }
        }
    }

    async fn register(&self, conn: &Conn, r: wire::Register) -> Result<response::Body, RelayError> {
        self.limiters.check_registration(conn.ip)?;
        let list = DeviceList::decode(&r.device_list)?;
        let max = self.config.max_devices;
        let account = *list.account.as_bytes();
        let outcome = self.writer.run(move |txn| accounts::register(txn, &list, max)).await?;
        for device in &outcome.removed {
            self.online.cut(&(account, *device));
        }
        if !outcome.removed.is_empty() {
            tracing::info!(removed = outcome.removed.len(), "devices removed from an account");
        }
        Ok(response::Body::Registered(wire::Registered { list_version: outcome.version }))
    }

    /// The operator's blob limits.
    pub fn blob_limits(&self) -> blobs::BlobLimits {
        let c = &self.config;
        blobs::BlobLimits {
            max_blob_bytes: c.max_blob_bytes,
            upload_bytes_per_day: c.blob_upload_bytes_per_day,
            uploads_per_device: c.blob_uploads_per_device,
            upload_ttl_ms: c.blob_upload_ttl_secs.saturating_mul(1000),
            retention_ms: c.retention_secs.saturating_mul(1000),
            max_stored_bytes: c.max_stored_bytes,
            max_put: blobs::max_put_for(c.max_request_bytes),
        }
    }

    async fn blob_create(
        &self,
        conn: &Conn,
        b: wire::BlobCreate,
    ) -> Result<response::Body, RelayError> {
        let owner = authed(conn)?;
        if let Some(e) = self.health.refuse_growth() {
            return Err(e.into());
        }
        let mut id = [0u8; 32];
        rand::RngExt::fill(&mut rand::rng(), &mut id[..]);
        let limits = self.blob_limits();
        let now = now_ms();
        let expires_at_ms =
            self.writer.run(move |txn| blobs::create(txn, owner, id, b.size, now, &limits)).await?;
        Ok(response::Body::BlobCreated(wire::BlobCreated {
            blob_id: id.to_vec(),
            max_put: u32::try_from(limits.max_put).unwrap_or(u32::MAX),
            put_align: blobs::PUT_ALIGN as u32,
            expires_at_ms,
        }))
    }

    async fn blob_put(&self, conn: &Conn, b: wire::BlobPut) -> Result<response::Body, RelayError> {
        let owner = authed(conn)?;
        let id = blobs::parse_id(&b.blob_id)?;
        if let Some(e) = self.health.refuse_growth() {
            return Err(e.into());
        }
        let limits = self.blob_limits();
        let now = now_ms();
        let len = b.data.len() as u64;
        let progress = self
            .writer
            .run(move |txn| blobs::put(txn, owner, id, b.offset, &b.data, now, &limits))
            .await?;
        self.metrics.blob_upload_bytes_total.inc_by(len);
        if progress.complete && progress.committed == b.offset + len && len > 0 {
            self.metrics.blob_uploads_total.inc();
        }
        Ok(response::Body::BlobProgress(progress))
    }

    async fn send(&self, conn: &Conn, s: wire::Send) -> Result<response::Body, RelayError> {
        let sender = authed(conn)?;
        self.limiters.check_send(&sender.0)?;
        let ephemeral = s.ephemeral;
        let send = mailbox::Send::from_wire(sender, s, self.config.max_payload_bytes)?;
        let now = now_ms();
        if ephemeral {
            self.store.check_devices(&send)?;
            for r in &send.recipients {
                let delivery = wire::Delivery {
                    seq: 0,
                    sender_account: sender.0.to_vec(),
                    sender_device: sender.1,
                    server_time_ms: now,
                    payload: send.payloads.get(r.payload).cloned().unwrap_or_default(),
                    ephemeral: true,
                };
                if self.online.push_ephemeral(&(r.account, r.device), delivery) {
                    self.metrics.ephemeral_delivered_total.inc();
                }
            }
            return Ok(response::Body::Sent(wire::Sent { server_time_ms: now }));
        }
        // Refused before it is queued: a full disk or failing storage takes no new envelopes.
        if let Some(e) = self.health.refuse_growth() {
            return Err(e.into());
        }
        let quotas = self.quotas();
        let touched = self.writer.send(send, quotas, now).await?;
        self.metrics.envelopes_stored_total.inc_by(touched.len() as u64);
        for key in &touched {
            self.online.wake(key);
        }
        Ok(response::Body::Sent(wire::Sent { server_time_ms: now }))
    }

    /// Runs the retention sweeper until shutdown.
    pub async fn sweeper(self: Arc<Self>) {
        const PER_BATCH: usize = 10_000;
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            loop {
                let now = now_ms();
                match self.writer.run(move |txn| Ok(mailbox::sweep(txn, now, PER_BATCH)?)).await {
                    Ok(n) => {
                        self.metrics.envelopes_expired_total.inc_by(n);
                        if n > 0 {
                            tracing::info!(expired = n, "retention sweep");
                        }
                        if n < PER_BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention sweep failed");
                        break;
                    }
                }
            }
            self.sweep_blobs().await;
            self.limiters.shrink();
        }
    }

    /// Deletes expired and abandoned blobs, a bounded number of chunks per transaction (about
    /// 16 MB), so sends queued behind a sweep wait for one small commit at most.
    async fn sweep_blobs(&self) {
        const CHUNKS_PER_BATCH: usize = 1024;
        loop {
            let now = now_ms();
            match self.writer.run(move |txn| Ok(blobs::sweep(txn, now, CHUNKS_PER_BATCH)?)).await {
                Ok(swept) => {
                    self.metrics.blobs_expired_total.inc_by(swept.blobs);
                    if swept.blobs > 0 {
                        tracing::info!(blobs = swept.blobs, bytes = swept.bytes, "blob sweep");
                    }
                    if swept.chunks < CHUNKS_PER_BATCH {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "blob sweep failed");
                    return;
                }
            }
        }
    }
}

fn authed(conn: &Conn) -> Result<(AccountId, u32), RelayError> {
    conn.device.get().copied().ok_or(RelayError::NotAuthenticated)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
