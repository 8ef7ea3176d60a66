//! The device authentication transcript.
//!
//! After the QUIC handshake the relay hands the client a fresh 32-byte nonce; the device signs
//! `"Hush_DeviceAuth_v1" ‖ nonce ‖ channel_binding ‖ account [32] ‖ device_id u32` with its
//! identity's Ed25519 key. `channel_binding` is 32 bytes of TLS keying material exported from
//! this very connection (label [`crate::AUTH_EXPORTER_LABEL`], empty context), so a signature
//! captured on one connection is useless on any other, even with the same nonce; the nonce is
//! single-use, so a signature cannot be replayed on the same connection either.

/// Domain-separation label of the auth signature.
pub const AUTH_LABEL: &[u8] = b"Hush_DeviceAuth_v1";
/// Length of the relay's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of the exported channel binding.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// The bytes the device signs.
pub fn transcript(
    nonce: &[u8; NONCE_LEN],
    channel_binding: &[u8; CHANNEL_BINDING_LEN],
    account: &[u8; 32],
    device_id: u32,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(AUTH_LABEL.len() + NONCE_LEN + CHANNEL_BINDING_LEN + 36);
    m.extend_from_slice(AUTH_LABEL);
    m.extend_from_slice(nonce);
    m.extend_from_slice(channel_binding);
    m.extend_from_slice(account);
    m.extend_from_slice(&device_id.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_pinned() {
        let t = transcript(&[1; 32], &[2; 32], &[3; 32], 0x0102_0304);
        assert_eq!(t.len(), 18 + 32 + 32 + 32 + 4);
        assert!(t.starts_with(AUTH_LABEL));
        assert_eq!(&t[t.len() - 4..], &[1, 2, 3, 4]);
    }
}
