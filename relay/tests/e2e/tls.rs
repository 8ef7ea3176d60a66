//! A relay with a CA-issued certificate, reached by host name and verified with WebPKI (a test
//! CA made here), or by a pin of its key; the certificate renewed without a restart, on SIGHUP
//! and when its files change.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant};

use hush_net::{Connection, Endpoint, NetError, RelayAddress, Trust};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

use crate::common::*;

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Hush test CA");
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes a certificate for `names` with `key`, signed by the CA, to `dir`.
    fn issue(&self, dir: &Path, names: &[&str], key: &KeyPair, serial: u64) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(serial.into());
        let cert = params.signed_by(key, &self.issuer).unwrap();
        // Key first, certificate last, each replaced whole (as certbot does).
        replace(&dir.join("key.pem"), key.serialize_pem().as_bytes());
        replace(&dir.join("cert.pem"), cert.pem().as_bytes());
    }
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn leaf(c: &Connection) -> CertificateDer<'static> {
    let certs = c.quic().peer_identity().unwrap();
    certs.downcast_ref::<Vec<CertificateDer<'static>>>().unwrap()[0].clone()
}

/// Connects until the relay serves a certificate other than `old` (a reload is asynchronous).
async fn until_renewed(
    ep: &Endpoint,
    addr: &RelayAddress,
    trust: &Trust,
    old: &CertificateDer<'_>,
) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let c = ep.connect(addr, trust, Duration::from_secs(3)).await.unwrap();
        if leaf(&c) != *old {
            return;
        }
        assert!(Instant::now() < until, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_issued_certificate_by_host_name_renewed_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let key = KeyPair::generate().unwrap();
    ca.issue(dir.path(), &["localhost"], &key, 1);
    let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let relay = Relay::start(
        &dir.path().join("data"),
        &[
            ("tls-cert", cert.to_str().unwrap()),
            ("tls-key", key_file.to_str().unwrap()),
            ("tls-reload-secs", "1"),
        ],
    );
    let ep = Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let by_name: RelayAddress = format!("localhost:{}", relay.quic.port()).parse().unwrap();
    let web = Trust::WebPki { extra_roots: vec![ca.root()], pin: None };
    let wait = Duration::from_secs(3);

    let c = ep.connect(&by_name, &web, wait).await.unwrap();
    c.challenge().await.unwrap();
    // The ready line's pin is the key's.
    assert_eq!(hush_net::spki_sha256(&leaf(&c)), Some(relay.pin));

    // Not trusted: a certificate error at once, naming the address and why.
    let certificate_error = |r: Result<Connection, NetError>| match r {
        Err(NetError::Certificate { address, reason }) => (address, reason),
        Err(e) => panic!("expected a certificate error, got {e}"),
        Ok(_) => panic!("expected a certificate error, got a connection"),
    };
    let (address, reason) = certificate_error(ep.connect(&by_name, &Trust::web_pki(), wait).await);
    assert!(address.starts_with("localhost:") && reason.contains("UnknownIssuer"), "{reason}");
    let by_ip = RelayAddress::from(relay.quic);
    let (_, reason) = certificate_error(
        ep.connect(&by_ip, &Trust::WebPki { extra_roots: vec![ca.root()], pin: None }, wait).await,
    );
    assert!(reason.contains("127.0.0.1"), "the certificate names localhost only: {reason}");

    // A pin of the key, alone or on top of WebPKI.
    ep.connect(&by_name, &Trust::Pin(relay.pin), wait).await.unwrap();
    let both = Trust::WebPki { extra_roots: vec![ca.root()], pin: Some(relay.pin) };
    ep.connect(&by_name, &both, wait).await.unwrap();

    // Renewed with the same key, reloaded on SIGHUP: new connections get the new
    // certificate, the key pin still holds, the open connection goes on.
    let first = leaf(&c);
    ca.issue(dir.path(), &["localhost"], &key, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(relay.pid()).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    until_renewed(&ep, &by_name, &web, &first).await;
    ep.connect(&by_name, &both, wait).await.unwrap();
    c.challenge().await.unwrap();

    // Renewed with a new key, picked up from the files alone: WebPKI still trusts it, the old
    // key's pin does not, and says so.
    let second = leaf(&ep.connect(&by_name, &web, wait).await.unwrap());
    let new_key = KeyPair::generate().unwrap();
    ca.issue(dir.path(), &["localhost"], &new_key, 3);
    until_renewed(&ep, &by_name, &web, &second).await;
    let (_, reason) = certificate_error(ep.connect(&by_name, &both, wait).await);
    assert!(reason.contains("does not match the pin"), "{reason}");

    // The WebSocket listener serves the same, renewed certificate.
    let new_pin = hush_net::spki_sha256(&leaf(&ep.connect(&by_name, &web, wait).await.unwrap()));
    let tls = hush_net::pinned_tls_config(new_pin.unwrap(), b"http/1.1").unwrap();
    let tcp = tokio::net::TcpStream::connect(relay.ws).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
}
