//! TLS for the QUIC and WebSocket listeners: an operator-supplied certificate, or a self-signed
//! development certificate generated once and kept in the data directory.
//!
//! - **Pins.** Clients of a self-signed relay trust it by pinning the SHA-256 of its public key
//!   (the certificate's SubjectPublicKeyInfo, DER), which the relay prints at startup. A pin
//!   of the key survives a renewal that keeps the key. (Earlier relays printed the SHA-256 of
//!   the whole certificate; clients still accept that form too.)
//! - **Reload.** Both listeners take their certificate from one [`Certificates`] resolver
//!   that is consulted at every handshake, so a renewed certificate is served to new
//!   connections as soon as it is reloaded (on SIGHUP, or when the files change), without a
//!   restart; open connections keep theirs.
//!
//! The private key file is created with mode 0600.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The loaded certificate chain, key and pins.
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf's public key (SubjectPublicKeyInfo, DER): what clients pin.
    pub pin: [u8; 32],
    /// SHA-256 of the leaf certificate's DER (the pin of earlier relays).
    pub cert_sha256: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .field("pin", &hex::encode(self.pin))
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's public key (SubjectPublicKeyInfo, DER).
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| TlsError::Pem(format!("certificate does not parse: {e}")))?;
    Ok(Sha256::digest(ee.subject_public_key_info().as_ref()).into())
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a certificate or key file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file did not parse.
    #[error("cannot parse {0}")]
    Pem(String),
    /// Certificate generation or rustls configuration failed.
    #[error("tls setup: {0}")]
    Setup(String),
}

/// Loads the configured certificate, or loads/creates the self-signed one.
pub fn load_identity(config: &Config) -> Result<Identity, TlsError> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|_| TlsError::Pem(cert.display().to_string()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|_| TlsError::Pem(key.display().to_string()))?;
        let leaf = chain.first().ok_or_else(|| TlsError::Pem("empty certificate chain".into()))?;
        let cert_sha256 = Sha256::digest(leaf.as_ref()).into();
        let pin = spki_sha256(leaf)?;
        return Ok(Identity { chain, key, pin, cert_sha256 });
    }
    self_signed(&config.data_dir.join("tls"))
}

fn self_signed(dir: &Path) -> Result<Identity, TlsError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| TlsError::Io { what, source }
    };
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    if !cert_path.exists() || !key_path.exists() {
        create_private_dir(dir).map_err(io("create tls directory"))?;
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "hush-relay".to_owned(),
        ])
        .map_err(|e| TlsError::Setup(e.to_string()))?;
        // Key first, certificate last, each written to a temporary file, fsynced and renamed: a
        // crash leaves either no certificate (regenerated next start) or a complete pair.
        write_atomic(&key_path, &generated.signing_key.serialize_der())
            .map_err(io("write tls key"))?;
        write_atomic(&cert_path, generated.cert.der()).map_err(io("write tls certificate"))?;
        tracing::info!(path = %cert_path.display(), "generated a self-signed development certificate");
    }
    let cert = CertificateDer::from(std::fs::read(&cert_path).map_err(io("read tls certificate"))?);
    let key = std::fs::read(&key_path).map_err(io("read tls key"))?;
    let cert_sha256 = Sha256::digest(&cert).into();
    let pin = spki_sha256(&cert)?;
    Ok(Identity {
        chain: vec![cert],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        pin,
        cert_sha256,
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `path` with mode 0600 via a fsynced temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The certificate both listeners serve, swapped in place by [`Certificates::reload`].
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    pins: RwLock<([u8; 32], [u8; 32])>,
    /// When the operator's files were last seen changed (for reload on change).
    seen: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl Certificates {
    /// Serves `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(certified(identity)?)),
            pins: RwLock::new((identity.pin, identity.cert_sha256)),
            seen: RwLock::new(None),
        }))
    }

    /// The pin of the certificate served now (SHA-256 of its public key).
    pub fn pin(&self) -> [u8; 32] {
        self.pins.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Loads the configured certificate again and serves it to new connections. A file that
    /// does not parse leaves the current certificate in place.
    pub fn reload(&self, config: &Config) -> Result<Identity, TlsError> {
        let identity = load_identity(config)?;
        let key = certified(&identity)?;
        let old_pin = self.pin();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.pins.write().unwrap_or_else(|p| p.into_inner()) =
            (identity.pin, identity.cert_sha256);
        if identity.pin == old_pin {
            tracing::info!(pin = %hex::encode(identity.pin), "certificate reloaded (same key)");
        } else {
            tracing::warn!(
                pin = %hex::encode(identity.pin),
                old_pin = %hex::encode(old_pin),
                "certificate reloaded with a new key: clients that pin the old key will refuse it"
            );
        }
        Ok(identity)
    }

    /// Reloads if the operator's certificate or key file changed since last seen; a relay on
    /// its self-signed certificate has nothing to watch.
    pub fn reload_if_changed(&self, config: &Config) {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return };
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let (Some(c), Some(k)) = (modified(cert), modified(key)) else { return };
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        match *seen {
            None => *seen = Some((c, k)),
            Some(prev) if prev == (c, k) => {}
            Some(_) => {
                drop(seen);
                match self.reload(config) {
                    // Only a reload that took counts as seen: a half-written file is tried again.
                    Ok(_) => *self.seen.write().unwrap_or_else(|p| p.into_inner()) = Some((c, k)),
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate files changed but do not load")
                    }
                }
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

fn certified(identity: &Identity) -> Result<CertifiedKey, TlsError> {
    let key = rustls::crypto::ring::sign::any_supported_type(&identity.key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(CertifiedKey::new(identity.chain.clone(), key))
}

/// The TLS configuration of the WebSocket listener (TCP): the same certificate, TLS 1.3 and 1.2
/// (browsers behind old middleboxes still negotiate 1.2), ALPN `http/1.1`.
pub fn websocket_tls_config(
    certs: &Arc<Certificates>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(certs) as Arc<dyn rustls::server::ResolvesServerCert>);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The quinn server configuration serving `certs`, with the relay's ALPN and transport limits.
pub fn server_config(
    certs: &Arc<Certificates>,
    config: &Config,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(certs) as Arc<dyn rustls::server::ResolvesServerCert>);
    tls.alpn_protocols = vec![hush_protocol::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(config.max_streams_per_connection.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(std::time::Duration::from_secs(config.idle_timeout_secs))
                .map_err(|e| TlsError::Setup(e.to_string()))?,
        ))
        // Bounded per-connection buffers keep idle connections cheap; requests are at most
        // max_request_bytes, so a window of that size never stalls one.
        .stream_receive_window(quinn::VarInt::from_u32(
            u32::try_from(config.max_request_bytes).unwrap_or(u32::MAX),
        ))
        // Before authentication a connection can send nothing larger than 64 KiB, so its
        // window starts small; it grows to two largest requests once the device has
        // authenticated (`Peer::authenticated`).
        .receive_window(quinn::VarInt::from_u32(
            u32::try_from(crate::server::PRE_AUTH_BUFFER * 2).unwrap_or(u32::MAX),
        ))
        .datagram_receive_buffer_size(None);
    server.transport_config(Arc::new(transport));
    Ok(server)
}
