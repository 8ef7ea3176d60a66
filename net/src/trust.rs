//! How a client trusts the relay's certificate: by the platform's WebPKI roots (a relay with a
//! CA-issued certificate, reached by host name), by a pin of its public key (a self-hosted
//! relay with its self-signed certificate), or both.
//!
//! - **WebPKI** ([`Trust::WebPki`]): the certificate chain must lead to a root the platform
//!   trusts (rustls-platform-verifier: the OS verifier on iOS, macOS and Windows, the system
//!   CA bundle on Linux; on Android the Mozilla roots of `webpki-roots`, since the OS verifier
//!   there needs a JVM handle the bindings do not have), or to one of `extra_roots` (a private
//!   CA), and must name the host. A renewal by the CA keeps working.
//! - **Pin** ([`Trust::Pin`]): the SHA-256 of the certificate's public key (its
//!   SubjectPublicKeyInfo, DER), as `hush-relay` prints it. Chain, name and dates are not
//!   checked; the TLS 1.3 handshake signature still is, so only the key's holder passes. A
//!   renewal that keeps the key keeps working. The SHA-256 of the whole certificate, which
//!   earlier relays printed, is accepted too.
//! - **Both**: WebPKI with `pin` set also requires the pinned key.
//!
//! Every verifier here records why it refused a certificate ([`Verdict`]), so a refused
//! connection is reported as a certificate error with the reason, not as a network failure.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// How to trust the relay.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// The pin of a self-signed relay: SHA-256 of its public key (or, as earlier relays
    /// printed, of its certificate).
    Pin([u8; 32]),
    /// WebPKI: the platform's roots plus `extra_roots`; with `pin`, the key must match too.
    WebPki {
        /// Extra trusted roots, DER (a private CA).
        extra_roots: Vec<CertificateDer<'static>>,
        /// A public-key pin required on top of WebPKI.
        pin: Option<[u8; 32]>,
    },
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Pin(p) => write!(f, "Pin({})", hex(p)),
            Trust::WebPki { extra_roots, pin } => f
                .debug_struct("WebPki")
                .field("extra_roots", &extra_roots.len())
                .field("pin", &pin.as_ref().map(hex))
                .finish(),
        }
    }
}

impl Trust {
    /// WebPKI with the platform's roots only.
    pub fn web_pki() -> Self {
        Self::WebPki { extra_roots: Vec::new(), pin: None }
    }

    /// Parses a pin: 64 hex digits.
    pub fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
        let bytes = decode_hex(pin.trim()).ok_or("a pin is 64 hex digits")?;
        bytes.try_into().map_err(|_| "a pin is 64 hex digits (32 bytes)".to_owned())
    }

    /// Parses PEM certificates (a private CA's roots).
    pub fn parse_roots_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        use rustls::pki_types::pem::PemObject;
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA certificates do not parse: {e}"))?;
        if roots.is_empty() {
            return Err("no certificate in the CA PEM".into());
        }
        Ok(roots)
    }
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Why the last certificate was refused, shared between a verifier and the connect call
/// that used it.
#[derive(Debug, Default, Clone)]
pub struct Verdict(Arc<Mutex<Option<String>>>);

impl Verdict {
    fn refuse(&self, why: String) -> rustls::Error {
        if let Ok(mut v) = self.0.lock() {
            *v = Some(why);
        }
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }

    /// The reason a certificate was refused, if one was.
    pub fn refused(&self) -> Option<String> {
        self.0.lock().ok().and_then(|v| v.clone())
    }
}

/// SHA-256 of a certificate's public key (SubjectPublicKeyInfo, DER).
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(Sha256::digest(ee.subject_public_key_info().as_ref()).into())
}

fn pin_matches(pin: &[u8; 32], cert: &CertificateDer<'_>) -> bool {
    spki_sha256(cert).is_some_and(|k| &k == pin) || Sha256::digest(cert.as_ref()).as_slice() == pin
}

#[derive(Debug)]
struct Verifier {
    web_pki: Option<Arc<dyn ServerCertVerifier>>,
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    verdict: Verdict,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(v) = &self.web_pki
            && let Err(e) = v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            return Err(self.verdict.refuse(format!(
                "the relay's certificate is not trusted for {}: {e}",
                server_name.to_str()
            )));
        }
        if let Some(pin) = &self.pin
            && !pin_matches(pin, end_entity)
        {
            let got = spki_sha256(end_entity).map_or_else(|| "unparsable".to_owned(), |k| hex(&k));
            return Err(self.verdict.refuse(format!(
                "the relay's public key {got} does not match the pin {}",
                hex(pin)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The WebPKI verifier of this platform, with `extra_roots`.
fn platform_verifier(
    extra_roots: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    #[cfg(not(target_os = "android"))]
    {
        let v = rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.iter().cloned(),
            Arc::clone(provider),
        )
        .map_err(|e| format!("cannot load the platform's trust roots: {e}"))?;
        Ok(Arc::new(v))
    }
    #[cfg(target_os = "android")]
    {
        use rustls::client::WebPkiServerVerifier;
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(v)
    }
}

/// A TLS 1.3 client configuration for `trust`, offering `alpn` (`hush/1` for QUIC; `http/1.1`
/// for the relay's WebSocket listener), and the verdict its verifier records.
pub fn tls_config(trust: &Trust, alpn: &[u8]) -> Result<(rustls::ClientConfig, Verdict), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (web_pki, pin) = match trust {
        Trust::Pin(pin) => (None, Some(*pin)),
        Trust::WebPki { extra_roots, pin } => {
            (Some(platform_verifier(extra_roots, &provider)?), *pin)
        }
    };
    let verdict = Verdict::default();
    let verifier =
        Verifier { web_pki, pin, provider: Arc::clone(&provider), verdict: verdict.clone() };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok((tls, verdict))
}

/// A TLS 1.3 client configuration that trusts only the pinned key (or certificate).
pub fn pinned_tls_config(pin: [u8; 32], alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    tls_config(&Trust::Pin(pin), alpn).map(|(c, _)| c)
}

/// A quinn client configuration for `trust`, and its verdict.
pub(crate) fn client_config(trust: &Trust) -> Result<(quinn::ClientConfig, Verdict), String> {
    let (tls, verdict) = tls_config(trust, hush_protocol::ALPN)?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Heartbeats: keep the connection (and the relay's idle timer) alive while the app runs,
    // and notice a relay that died without closing (no packets acked for 15 s) so the client
    // reconnects instead of waiting on a dead path. A relay that was restarted answers the
    // next heartbeat with a stateless reset, so the client notices within 5 s.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(15_000))));
    config.transport_config(Arc::new(transport));
    Ok((config, verdict))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pins_parse_and_debug_shows_no_more_than_the_pin() {
        let pin = Trust::parse_pin(&"ab".repeat(32)).unwrap();
        assert_eq!(pin, [0xab; 32]);
        assert!(Trust::parse_pin("xyz").is_err());
        assert!(Trust::parse_pin(&"ab".repeat(31)).is_err());
        assert!(format!("{:?}", Trust::Pin(pin)).contains(&"ab".repeat(32)));
        assert!(Trust::parse_roots_pem("not pem").is_err());
    }
}
