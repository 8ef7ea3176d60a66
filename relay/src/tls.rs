//! TLS for the QUIC and WebSocket listeners: an operator-supplied certificate, or a self-signed development
//! certificate generated once and kept in the data directory.
//!
//! Clients of a self-signed relay trust it by pinning the SHA-256 of its certificate (DER),
//! which the relay prints at startup. The private key file is created with mode 0600.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The loaded certificate chain, key and pin.
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate's DER.
    pub pin: [u8; 32],
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
        let pin = Sha256::digest(leaf.as_ref()).into();
        return Ok(Identity { chain, key, pin });
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
    let cert = std::fs::read(&cert_path).map_err(io("read tls certificate"))?;
    let key = std::fs::read(&key_path).map_err(io("read tls key"))?;
    let pin = Sha256::digest(&cert).into();
    Ok(Identity {
        chain: vec![CertificateDer::from(cert)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        pin,
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

/// The TLS configuration of the WebSocket listener (TCP): the same certificate, TLS 1.3 and 1.2
/// (browsers behind old middleboxes still negotiate 1.2), ALPN `http/1.1`.
pub fn websocket_tls_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The quinn server configuration for `identity`, with the relay's ALPN and transport limits.
pub fn server_config(identity: Identity, config: &Config) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
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
