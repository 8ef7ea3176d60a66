//! Device authentication: a per-connection challenge and its signature check.
//!
//! The relay issues a random 32-byte nonce on request; the device signs the transcript of
//! [`hush_protocol::auth`] (nonce, this connection's TLS exporter value, account, device id)
//! with its identity key (over WebSocket, a constant binding: see `hush_protocol::websocket`). The nonce is taken out of the connection state before the signature
//! is checked, so each nonce is usable exactly once, successful or not.

use std::sync::Mutex;

use hush_protocol::AccountKey;
use hush_protocol::auth::{CHANNEL_BINDING_LEN, NONCE_LEN, transcript};
use hush_protocol::wire::Authenticate;
use rand::RngExt;

use crate::error::RelayError;
use crate::store::{AccountId, Store};
use crate::streams::Peer;

/// A connection's outstanding challenge.
#[derive(Default)]
pub struct Challenge(Mutex<Option<[u8; NONCE_LEN]>>);

impl Challenge {
    /// Issues a fresh nonce (replacing any unused one).
    pub fn issue(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce[..]);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce);
        nonce
    }

    fn take(&self) -> Option<[u8; NONCE_LEN]> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Checks an `Authenticate` request; returns the authenticated device and the registration id
/// it was verified under.
pub fn verify(
    challenge: &Challenge,
    conn: &Peer,
    store: &Store,
    req: &Authenticate,
) -> Result<((AccountId, u32), u32), RelayError> {
    let nonce = challenge.take().ok_or(RelayError::ReplayedNonce)?;
    let account = AccountKey::from_bytes(&req.account).map_err(|_| RelayError::UnknownAccount)?;
    let list = store.device_list(&account)?.ok_or(RelayError::UnknownAccount)?;
    let device = list.device(req.device_id).ok_or(RelayError::UnknownDevice(req.device_id))?;
    let binding: [u8; CHANNEL_BINDING_LEN] = conn.channel_binding()?;
    let signature: [u8; 64] =
        req.signature.as_slice().try_into().map_err(|_| RelayError::BadSignature("device auth"))?;
    let message = transcript(&nonce, &binding, account.as_bytes(), req.device_id);
    device.identity.verify(&message, &signature, "device auth")?;
    Ok(((*account.as_bytes(), req.device_id), device.registration_id))
}
