//! Native QUIC transport to a Hush relay.
//!
//! - [`Endpoint`]: one UDP socket that can open many connections (a bench opens thousands).
//! - [`Connection`]: one connection to the relay, trusting it by a SHA-256 certificate pin or
//!   by the system's usual WebPKI roots supplied by the caller; requests as typed calls.
//! - [`Subscription`]: the delivery stream of an authenticated device, with acks.
//!
//! Every relay error arrives as [`NetError::Relay`] with its stable code, so callers switch on
//! [`hush_protocol::ErrorCode`]. This crate holds no keys beyond borrowing the device identity
//! to sign the auth challenge.

mod pin;

use std::net::SocketAddr;
use std::time::Duration;

use hush_prekeys::IdentityKeyPair;
use hush_protocol::auth::{CHANNEL_BINDING_LEN, NONCE_LEN, transcript};
use hush_protocol::quic::{FrameReader, StreamError, read_message, write_message};
use hush_protocol::wire::{self, Request, Response, ServerPush, request, response};
use hush_protocol::{
    AUTH_EXPORTER_LABEL, AccountKey, DeviceList, ErrorCode, FrameError, MAX_FRAME_LEN, frame,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The relay answered with a typed error.
    #[error("relay error {code}: {message}")]
    Relay {
        /// The stable code as sent (see [`NetError::code`] for the parsed form).
        code: String,
        /// Human message.
        message: String,
        /// For `rate_limited`.
        retry_after_ms: u64,
        /// For `device_mismatch`.
        mismatches: Vec<wire::DeviceMismatch>,
    },
    /// Connecting failed (address, TLS, pin mismatch).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection was closed; carries the relay's close code and reason when it sent one.
    #[error("connection closed: {0}")]
    Closed(#[from] quinn::ConnectionError),
    /// A stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The relay sent something that does not fit the request.
    #[error("unexpected response: {0}")]
    Unexpected(&'static str),
    /// No response within [`REQUEST_TIMEOUT`].
    #[error("no response from the relay within {0:?}")]
    Timeout(Duration),
}

/// How long a request waits for its response before giving up. Keep-alives keep an idle
/// connection open, so without a deadline a relay that never answers would hang the caller.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl NetError {
    /// The relay's error code, if this is a relay error with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }

    /// The application close code, if the relay closed the connection on purpose.
    pub fn close_code(&self) -> Option<u32> {
        let e = match self {
            Self::Closed(e) => e,
            Self::Stream(StreamError::Read(quinn::ReadError::ConnectionLost(e)))
            | Self::Stream(StreamError::Write(quinn::WriteError::ConnectionLost(e))) => e,
            _ => return None,
        };
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                u32::try_from(c.error_code.into_inner()).ok()
            }
            _ => None,
        }
    }
}

impl From<FrameError> for NetError {
    fn from(e: FrameError) -> Self {
        Self::Stream(StreamError::Frame(e))
    }
}

/// A client UDP endpoint.
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
}

impl Endpoint {
    /// Binds a client endpoint on an ephemeral port of `bind` (use `0.0.0.0:0` or `[::]:0`).
    pub fn new(bind: SocketAddr) -> Result<Self, NetError> {
        let inner = quinn::Endpoint::client(bind).map_err(|e| NetError::Connect(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Connects to a relay whose certificate has SHA-256 `pin` (as printed by `hush-relay`).
    pub async fn connect_pinned(
        &self,
        addr: SocketAddr,
        pin: [u8; 32],
    ) -> Result<Connection, NetError> {
        let config = pin::client_config(pin).map_err(NetError::Connect)?;
        let connecting = self
            .inner
            .connect_with(config, addr, "hush-relay")
            .map_err(|e| NetError::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TransportError(t) => NetError::Connect(t.to_string()),
            other => NetError::Closed(other),
        })?;
        Ok(Connection { conn, limit: MAX_FRAME_LEN })
    }

    /// Waits until every connection of this endpoint is closed.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

/// A connection to the relay.
#[derive(Clone)]
pub struct Connection {
    conn: quinn::Connection,
    limit: usize,
}

impl Connection {
    /// Sends one request and returns the response body; a relay error becomes
    /// [`NetError::Relay`].
    pub async fn request(&self, body: request::Body) -> Result<response::Body, NetError> {
        self.exchange(&frame::encode(&Request { body: Some(body) })).await
    }

    /// Writes one request frame and reads the response. The relay may answer early and stop
    /// our sending side (an oversize frame): the answer is still read and returned.
    async fn exchange(&self, bytes: &[u8]) -> Result<response::Body, NetError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange_inner(bytes))
            .await
            .unwrap_or(Err(NetError::Timeout(REQUEST_TIMEOUT)))
    }

    async fn exchange_inner(&self, bytes: &[u8]) -> Result<response::Body, NetError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        match send.write_all(bytes).await {
            Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
            Err(e) => return Err(StreamError::from(e).into()),
        }
        let _ = send.finish();
        let response: Response = read_message(&mut recv, self.limit).await?;
        hush_protocol::quic::consume_fin(&mut recv);
        into_result(response)
    }

    /// Sends raw bytes as a request stream and returns the decoded response (for tests of
    /// malformed input).
    pub async fn request_raw(&self, bytes: &[u8]) -> Result<response::Body, NetError> {
        self.exchange(bytes).await
    }

    /// Registers an account or replaces its device list.
    pub async fn register(&self, list: &DeviceList) -> Result<u64, NetError> {
        let body = request::Body::Register(wire::Register { device_list: list.encoded().to_vec() });
        match self.request(body).await? {
            response::Body::Registered(r) => Ok(r.list_version),
            _ => Err(NetError::Unexpected("expected Registered")),
        }
    }

    /// Fetches a fresh challenge nonce.
    pub async fn challenge(&self) -> Result<[u8; NONCE_LEN], NetError> {
        match self.request(request::Body::GetChallenge(wire::GetChallenge {})).await? {
            response::Body::Challenge(c) => {
                c.nonce.as_slice().try_into().map_err(|_| NetError::Unexpected("nonce length"))
            }
            _ => Err(NetError::Unexpected("expected Challenge")),
        }
    }

    /// The signature a device makes over `nonce` on this connection.
    pub fn sign_challenge(
        &self,
        nonce: &[u8; NONCE_LEN],
        account: &AccountKey,
        device_id: u32,
        identity: &IdentityKeyPair,
    ) -> Result<[u8; 64], NetError> {
        let mut binding = [0u8; CHANNEL_BINDING_LEN];
        self.conn
            .export_keying_material(&mut binding, AUTH_EXPORTER_LABEL, b"")
            .map_err(|_| NetError::Unexpected("no TLS exporter"))?;
        Ok(identity.sign(&transcript(nonce, &binding, account.as_bytes(), device_id)))
    }

    /// Sends an `Authenticate` with a given signature.
    pub async fn authenticate_with(
        &self,
        account: &AccountKey,
        device_id: u32,
        signature: &[u8; 64],
    ) -> Result<(), NetError> {
        let body = request::Body::Authenticate(wire::Authenticate {
            account: account.as_bytes().to_vec(),
            device_id,
            signature: signature.to_vec(),
        });
        match self.request(body).await? {
            response::Body::Authenticated(_) => Ok(()),
            _ => Err(NetError::Unexpected("expected Authenticated")),
        }
    }

    /// Challenge, sign and authenticate as a device.
    pub async fn authenticate(
        &self,
        account: &AccountKey,
        device_id: u32,
        identity: &IdentityKeyPair,
    ) -> Result<(), NetError> {
        let nonce = self.challenge().await?;
        let sig = self.sign_challenge(&nonce, account, device_id, identity)?;
        self.authenticate_with(account, device_id, &sig).await
    }

    /// Fetches and verifies an account's device list.
    pub async fn device_list(&self, account: &AccountKey) -> Result<DeviceList, NetError> {
        let body = request::Body::GetDeviceList(wire::GetDeviceList {
            account: account.as_bytes().to_vec(),
        });
        match self.request(body).await? {
            response::Body::DeviceList(d) => {
                let list = DeviceList::decode(&d.device_list)
                    .map_err(|_| NetError::Unexpected("device list does not verify"))?;
                if list.account != *account {
                    return Err(NetError::Unexpected("device list of another account"));
                }
                Ok(list)
            }
            _ => Err(NetError::Unexpected("expected DeviceList")),
        }
    }

    /// Uploads prekeys; returns the counts after the upload.
    pub async fn upload_prekeys(
        &self,
        upload: wire::UploadPrekeys,
    ) -> Result<wire::PrekeyCounts, NetError> {
        match self.request(request::Body::UploadPrekeys(upload)).await? {
            response::Body::PrekeyCounts(c) => Ok(c),
            _ => Err(NetError::Unexpected("expected PrekeyCounts")),
        }
    }

    /// The device's prekey counts.
    pub async fn prekey_counts(&self) -> Result<wire::PrekeyCounts, NetError> {
        match self.request(request::Body::GetPrekeyCounts(wire::GetPrekeyCounts {})).await? {
            response::Body::PrekeyCounts(c) => Ok(c),
            _ => Err(NetError::Unexpected("expected PrekeyCounts")),
        }
    }

    /// Claims bundles of an account's devices (all if `device_ids` is empty).
    pub async fn fetch_bundles(
        &self,
        account: &AccountKey,
        device_ids: &[u32],
    ) -> Result<Vec<wire::DeviceBundle>, NetError> {
        let body = request::Body::FetchBundles(wire::FetchBundles {
            account: account.as_bytes().to_vec(),
            device_ids: device_ids.to_vec(),
        });
        match self.request(body).await? {
            response::Body::Bundles(b) => Ok(b.bundles),
            _ => Err(NetError::Unexpected("expected Bundles")),
        }
    }

    /// Sends envelopes; returns the relay's acceptance time once it is durable.
    pub async fn send(&self, send: wire::Send) -> Result<u64, NetError> {
        match self.request(request::Body::Send(send)).await? {
            response::Body::Sent(s) => Ok(s.server_time_ms),
            _ => Err(NetError::Unexpected("expected Sent")),
        }
    }

    /// Opens the delivery subscription.
    pub async fn subscribe(&self) -> Result<Subscription, NetError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        write_message(
            &mut send,
            &Request { body: Some(request::Body::Subscribe(wire::Subscribe {})) },
        )
        .await?;
        let response: Response = read_message(&mut recv, self.limit).await?;
        match into_result(response)? {
            response::Body::Subscribed(_) => Ok(Subscription {
                reader: PushReader { frames: FrameReader::new(recv), limit: self.limit },
                acks: AckWriter { send },
            }),
            _ => Err(NetError::Unexpected("expected Subscribed")),
        }
    }

    /// Resolves when the connection closes, with the reason.
    pub async fn closed(&self) -> NetError {
        NetError::Closed(self.conn.closed().await)
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(hush_protocol::close::NORMAL.into(), b"bye");
    }

    /// The underlying QUIC connection (for tests that need to misbehave on purpose).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }
}

fn into_result(response: Response) -> Result<response::Body, NetError> {
    match response.body {
        Some(response::Body::Error(e)) => Err(NetError::Relay {
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            mismatches: e.mismatches,
        }),
        Some(body) => Ok(body),
        None => Err(NetError::Unexpected("empty response")),
    }
}

/// A device's delivery stream.
pub struct Subscription {
    reader: PushReader,
    acks: AckWriter,
}

impl Subscription {
    /// The next push; `Ok(None)` when the relay ended the stream.
    pub async fn next(&mut self) -> Result<Option<wire::server_push::Body>, NetError> {
        self.reader.next().await
    }

    /// The next push, or `None` if nothing arrives within `wait`.
    pub async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<wire::server_push::Body>, NetError> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Acks stored envelopes so the relay deletes them.
    pub async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), NetError> {
        self.acks.ack(seqs).await
    }

    /// Splits into a push reader and an ack writer, so a reader task can own the (not
    /// cancel-safe) reads while acks go out from elsewhere.
    pub fn split(self) -> (PushReader, AckWriter) {
        (self.reader, self.acks)
    }
}

/// The reading half of a [`Subscription`].
pub struct PushReader {
    frames: FrameReader,
    limit: usize,
}

impl PushReader {
    /// The next push; `Ok(None)` when the relay ended the stream. Not cancel-safe: a read
    /// dropped midway loses the frame, so keep one reader task awaiting it.
    pub async fn next(&mut self) -> Result<Option<wire::server_push::Body>, NetError> {
        match self.frames.next::<ServerPush>(self.limit).await? {
            Some(push) => push.body.map(Some).ok_or(NetError::Unexpected("empty push")),
            None => Ok(None),
        }
    }

    /// The next push if it has already arrived; never waits.
    pub fn next_ready(&mut self) -> Result<Option<wire::server_push::Body>, NetError> {
        match self.frames.next_ready::<ServerPush>(self.limit)? {
            Some(push) => push.body.map(Some).ok_or(NetError::Unexpected("empty push")),
            None => Ok(None),
        }
    }
}

/// The acking half of a [`Subscription`].
pub struct AckWriter {
    send: quinn::SendStream,
}

impl AckWriter {
    /// Acks stored envelopes so the relay deletes them.
    pub async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), NetError> {
        write_message(&mut self.send, &wire::ClientPush { acks: seqs }).await?;
        Ok(())
    }
}

/// Re-exported for callers that build requests by hand.
pub use hush_protocol::wire as protocol;
pub use pin::pinned_tls_config;
