//! Native QUIC transport to a Hush relay.
//!
//! - [`Endpoint`]: one UDP socket that can open many connections (a bench opens thousands).
//! - [`RelayAddress`]: where the relay is, by host name (`relay.example.com:4433`) or address.
//! - [`Trust`]: how its certificate is trusted: WebPKI (the platform's roots, for a
//!   CA-issued certificate), a pin of its public key (a self-signed relay), or both.
//! - [`Connection`]: one connection to the relay; requests as typed calls.
//! - [`Subscription`]: the delivery stream of an authenticated device, with acks.
//!
//! Every relay error arrives as [`NetError::Relay`] with its stable code, so callers switch on
//! [`hush_protocol::ErrorCode`]. This crate holds no keys beyond borrowing the device identity
//! to sign the auth challenge.

mod trust;

use std::net::SocketAddr;
use std::time::Duration;

use hush_prekeys::IdentityKeyPair;
use hush_protocol::auth::{CHANNEL_BINDING_LEN, NONCE_LEN, transcript};
use hush_protocol::quic::{FrameReader, StreamError, read_message, write_message};
use hush_protocol::wire::{self, Request, Response, ServerPush, request, response};
use hush_protocol::{
    AUTH_EXPORTER_LABEL, AccountKey, DeviceList, ErrorCode, FrameError, MAX_FRAME_LEN, Refusal,
    frame,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The relay answered with a typed error.
    #[error(transparent)]
    Relay(#[from] Refusal),
    /// Setting up the client failed (binding a socket, a TLS configuration).
    #[error("{0}")]
    Connect(String),
    /// The relay could not be reached: its name does not resolve, or nothing answered.
    #[error("could not reach the relay at {address}: {reason}")]
    Unreachable {
        /// The address tried (the host as given, and the IP address it resolved to).
        address: String,
        /// What happened.
        reason: String,
    },
    /// The relay answered with a certificate this client does not trust (a pin or WebPKI
    /// mismatch): retrying will not help until the pin, the trust roots or the relay's
    /// certificate change.
    #[error("the relay at {address} presented a certificate that is not trusted: {reason}")]
    Certificate {
        /// The address tried.
        address: String,
        /// Why the certificate was refused.
        reason: String,
    },
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

/// How long [`Endpoint::connect_pinned`] waits for each address to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a relay is: a host name or an IP address, and a port. Parsed from
/// `relay.example.com:4433`, `203.0.113.7:4433` or `[2001:db8::7]:4433`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddress {
    /// Host name, or IP address (without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl RelayAddress {
    /// The address, if the host is an IP literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }

    /// The socket addresses to try: the literal, or what the name resolves to (within
    /// `timeout`).
    pub async fn resolve(&self, timeout: Duration) -> Result<Vec<SocketAddr>, NetError> {
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let unreachable =
            |reason: String| NetError::Unreachable { address: self.to_string(), reason };
        match tokio::time::timeout(
            timeout,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(addrs)) => Ok(addrs.collect()),
            Ok(Err(e)) => Err(unreachable(format!("the name does not resolve: {e}"))),
            Err(_) => Err(unreachable(format!("the name did not resolve within {timeout:?}"))),
        }
    }
}

impl std::str::FromStr for RelayAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad =
            || format!("{s:?} is not a relay address (host:port, e.g. relay.example.com:4433)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(bad()),
            // An IPv6 address must be bracketed, so a port can follow it.
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for RelayAddress {
    fn from(a: SocketAddr) -> Self {
        Self { host: a.ip().to_string(), port: a.port() }
    }
}

/// How long a request waits for its response before giving up. Keep-alives keep an idle
/// connection open, so without a deadline a relay that never answers would hang the caller.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl NetError {
    /// The relay's error code, if this is a relay error with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay(r) => r.code(),
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

    /// Connects to a relay whose public key (or certificate) has SHA-256 `pin`, as printed by
    /// `hush-relay`.
    pub async fn connect_pinned(
        &self,
        addr: SocketAddr,
        pin: [u8; 32],
    ) -> Result<Connection, NetError> {
        self.connect(&RelayAddress::from(addr), &Trust::Pin(pin), CONNECT_TIMEOUT).await
    }

    /// Connects to the relay at `address`, trusting its certificate as `trust` says. A host
    /// name is resolved now, and each of its addresses of this endpoint's family is tried in
    /// turn, each for up to `timeout` (a relay that is down never answers: UDP has no
    /// refusal). A certificate that is not trusted ends the attempt at once.
    pub async fn connect(
        &self,
        address: &RelayAddress,
        trust: &Trust,
        timeout: Duration,
    ) -> Result<Connection, NetError> {
        let local = self.inner.local_addr().map_err(|e| NetError::Connect(e.to_string()))?;
        let addrs: Vec<SocketAddr> = address
            .resolve(timeout)
            .await?
            .into_iter()
            // An IPv6 socket reaches IPv4 addresses too (mapped); an IPv4 socket only those.
            .filter(|a| local.is_ipv6() || a.is_ipv4())
            .collect();
        let server_name = match (trust, address.ip()) {
            // A pin ignores the name; a self-signed certificate names `hush-relay`.
            (Trust::Pin(_), Some(_)) => "hush-relay".to_owned(),
            _ => address.host.clone(),
        };
        let mut last = NetError::Unreachable {
            address: address.to_string(),
            reason: "it resolved to no address this client can reach".into(),
        };
        for addr in addrs {
            let tried = if address.ip().is_some() {
                address.to_string()
            } else {
                format!("{address} ({addr})")
            };
            let (config, verdict) = trust::client_config(trust).map_err(NetError::Connect)?;
            let connecting = self
                .inner
                .connect_with(config, addr, &server_name)
                .map_err(|e| NetError::Connect(format!("{tried}: {e}")))?;
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(conn)) => return Ok(Connection { conn, limit: MAX_FRAME_LEN }),
                Ok(Err(e)) => {
                    if let Some(reason) = verdict.refused() {
                        return Err(NetError::Certificate { address: tried, reason });
                    }
                    last = match e {
                        quinn::ConnectionError::TransportError(t) => {
                            NetError::Unreachable { address: tried, reason: t.to_string() }
                        }
                        other => NetError::Closed(other),
                    };
                }
                Err(_) => {
                    last = NetError::Unreachable {
                        address: tried,
                        reason: format!("no answer within {timeout:?}"),
                    };
                }
            }
        }
        Err(last)
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

    /// Starts a blob upload of `size` bytes (docs/PROTOCOL.md §14.16).
    pub async fn blob_create(&self, size: u64) -> Result<wire::BlobCreated, NetError> {
        match self.request(request::Body::BlobCreate(wire::BlobCreate { size })).await? {
            response::Body::BlobCreated(c) => Ok(c),
            _ => Err(NetError::Unexpected("expected BlobCreated")),
        }
    }

    /// Appends `data` at `offset` to one of our uploads; answers once it is durable.
    pub async fn blob_put(
        &self,
        blob_id: &[u8],
        offset: u64,
        data: Vec<u8>,
    ) -> Result<wire::BlobProgress, NetError> {
        let put = wire::BlobPut { blob_id: blob_id.to_vec(), offset, data };
        match self.request(request::Body::BlobPut(put)).await? {
            response::Body::BlobProgress(p) => Ok(p),
            _ => Err(NetError::Unexpected("expected BlobProgress")),
        }
    }

    /// How much of a blob is committed.
    pub async fn blob_status(&self, blob_id: &[u8]) -> Result<wire::BlobProgress, NetError> {
        let status = wire::BlobStatus { blob_id: blob_id.to_vec() };
        match self.request(request::Body::BlobStatus(status)).await? {
            response::Body::BlobProgress(p) => Ok(p),
            _ => Err(NetError::Unexpected("expected BlobProgress")),
        }
    }

    /// Reads up to `max_len` bytes of a complete blob from `offset`.
    pub async fn blob_get(
        &self,
        blob_id: &[u8],
        offset: u64,
        max_len: u32,
    ) -> Result<wire::BlobData, NetError> {
        let get = wire::BlobGet { blob_id: blob_id.to_vec(), offset, max_len };
        match self.request(request::Body::BlobGet(get)).await? {
            response::Body::BlobData(d) => Ok(d),
            _ => Err(NetError::Unexpected("expected BlobData")),
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
        Some(response::Body::Error(e)) => Err(NetError::Relay(e.into())),
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
pub use trust::{Trust, Verdict, pinned_tls_config, spki_sha256, tls_config};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relay_addresses_parse_and_print() {
        let a: RelayAddress = "relay.example.com:4433".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port, a.ip()), ("relay.example.com", 4433, None));
        let b: RelayAddress = "[2001:db8::7]:443".parse().unwrap();
        assert_eq!(b.to_string(), "[2001:db8::7]:443");
        assert!(b.ip().is_some());
        assert_eq!(
            "203.0.113.7:4433".parse::<RelayAddress>().unwrap().to_string(),
            "203.0.113.7:4433"
        );
        for bad in
            ["relay.example.com", ":4433", "host:0", "host:99999", "2001:db8::7:443", "[x]:1"]
        {
            assert!(bad.parse::<RelayAddress>().is_err(), "{bad}");
        }
    }
}
