//! The QUIC endpoint: its UDP socket, sized for bursts, and the keys that let a restarted
//! relay end its predecessor's connections at once.
//!
//! - **Stateless resets.** A client still talking to a relay that was restarted (or killed)
//!   sends packets for a connection the new process does not know. QUIC lets the new process
//!   answer with a stateless reset, which the client accepts only if it carries the token the
//!   old process gave out: so the token key, and the key that makes connection ids
//!   recognisable, must survive restarts. Both are derived from `<data_dir>/relay.secret`, 32
//!   random bytes made on first start (mode 0600). A client then notices a restart at its next
//!   packet, instead of after its idle timeout. Relays behind one address (a cluster) should
//!   share the file.
//! - **Socket buffers.** Hundreds of clients sending at once overflow a default UDP receive
//!   buffer (212 KB on Linux), and each dropped datagram costs a retransmission timeout. The
//!   relay asks for `udp_buffer_bytes` each way; the kernel caps that at
//!   `net.core.rmem_max`/`wmem_max` unless the relay may override it (CAP_NET_ADMIN), and the
//!   relay logs a warning once when it got less.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The relay's persisted secret: what its restart-surviving keys are derived from.
pub struct RelaySecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(..)")
    }
}

impl RelaySecret {
    /// Loads `<data_dir>/relay.secret`, or makes it (atomically, mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("relay.secret");
        if !path.exists() {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::RngExt::fill(&mut rand::rng(), bytes.as_mut_slice());
            crate::tls::write_atomic(&path, bytes.as_ref())?;
            tracing::info!(path = %path.display(), "generated the relay secret");
        }
        let read = Zeroizing::new(std::fs::read(&path)?);
        let bytes: [u8; 32] = read.as_slice().try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not 32 bytes", path.display()),
            )
        })?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(label);
        h.update(self.0.as_ref());
        Zeroizing::new(h.finalize().into())
    }

    /// The quinn endpoint configuration: stateless-reset key and connection-id key derived
    /// from the secret.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let reset = ResetKey(self.derive(b"hush-relay stateless reset key v1"));
        let cid = self.derive(b"hush-relay connection id key v1");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(cid.get(..8).unwrap_or(&[0; 8]));
        let cid_key = u64::from_be_bytes(cid_key);
        let mut config = quinn::EndpointConfig::new(Arc::new(reset));
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                as Box<dyn quinn::ConnectionIdGenerator>
        });
        // Every client of a restarted relay asks for a reset at once; the default 20 ms
        // between two resets would take minutes for thousands of them. A reset is always
        // smaller than the packet that provoked it, so answering them all amplifies nothing.
        config.min_reset_interval(std::time::Duration::from_micros(100));
        config
    }
}

/// HMAC-SHA256 for quinn's stateless reset tokens.
struct ResetKey(Zeroizing<[u8; 32]>);

impl ResetKey {
    fn mac(&self) -> hmac::Hmac<Sha256> {
        // HMAC takes keys of any length.
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| <hmac::Hmac<Sha256> as KeyInit>::new(&Default::default()))
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mut m = self.mac();
        m.update(data);
        let tag = m.finalize().into_bytes();
        let n = signature_out.len().min(tag.len());
        if let (Some(out), Some(tag)) = (signature_out.get_mut(..n), tag.get(..n)) {
            out.copy_from_slice(tag);
        }
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let mut m = self.mac();
        m.update(data);
        m.verify_slice(signature).map_err(|_| quinn::crypto::CryptoError)
    }
}

/// The buffer sizes the socket got, each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// Receive buffer, as the kernel reports it (Linux reports twice what it uses for data).
    pub recv: usize,
    /// Send buffer, likewise.
    pub send: usize,
}

/// Binds the UDP socket with `want` bytes of buffer each way (see the module docs); reports
/// what it got.
pub fn bind_udp(addr: SocketAddr, want: usize) -> std::io::Result<(UdpSocket, Buffers)> {
    use rustix::net::sockopt;
    let socket = UdpSocket::bind(addr)?;
    if want > 0 {
        let _ = sockopt::set_socket_recv_buffer_size(&socket, want);
        let _ = sockopt::set_socket_send_buffer_size(&socket, want);
        // Linux reports the doubled size; less than asked means the system cap applied, which
        // a privileged relay may override.
        if sockopt::socket_recv_buffer_size(&socket).unwrap_or(0) < want {
            let _ = sockopt::set_socket_recv_buffer_size_force(&socket, want);
        }
        if sockopt::socket_send_buffer_size(&socket).unwrap_or(0) < want {
            let _ = sockopt::set_socket_send_buffer_size_force(&socket, want);
        }
    }
    let got = Buffers {
        recv: sockopt::socket_recv_buffer_size(&socket).unwrap_or(0),
        send: sockopt::socket_send_buffer_size(&socket).unwrap_or(0),
    };
    if want > 0 && (got.recv < want || got.send < want) {
        tracing::warn!(
            wanted = want,
            receive = got.recv,
            send = got.send,
            "the UDP socket buffers are smaller than udp_buffer_bytes: bursts from many \
             clients may be dropped; raise net.core.rmem_max and net.core.wmem_max \
             (docs/OPERATING.md)"
        );
    }
    Ok((socket, got))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use quinn::crypto::HmacKey;

    #[test]
    fn the_secret_persists_and_keys_are_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = RelaySecret::load_or_create(dir.path()).unwrap();
        let b = RelaySecret::load_or_create(dir.path()).unwrap();
        let sign = |s: &RelaySecret| {
            let k = ResetKey(s.derive(b"hush-relay stateless reset key v1"));
            let mut out = [0u8; 32];
            k.sign(b"connection id", &mut out);
            k.verify(b"connection id", &out).unwrap();
            out
        };
        assert_eq!(sign(&a), sign(&b));
        assert_eq!(format!("{a:?}"), "RelaySecret(..)");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(sign(&a), sign(&RelaySecret::load_or_create(other.path()).unwrap()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("relay.secret")).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn the_socket_gets_its_buffers_or_says_what_it_got() {
        let (_s, got) = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        assert!(got.recv > 0 && got.send > 0);
    }
}
