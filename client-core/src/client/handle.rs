//! The [`Client`] handle: what the app holds. Its methods are spread over the modules of their
//! domain (account, contacts, messaging, history); this one holds only what all of them use:
//! waiting for a connection, and our account id.

use std::sync::Arc;

use hush_protocol::{ErrorCode, Refusal};

use super::core::AccountId;
use super::error::ClientError;
use super::inner::Inner;
use super::types::ConnectionState;
use crate::transport::Link;

/// A Hush client for one device. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// The current connection, waiting up to `relay_wait` for one. A certificate the client
    /// does not trust fails at once; otherwise, after the wait, the error says what the last
    /// connection attempt met (which address, and what happened).
    pub(crate) async fn link(&self) -> Result<Arc<dyn Link>, ClientError> {
        let mut state = self.inner.state.subscribe();
        let wait = async {
            loop {
                if let Some(l) = self.inner.current_link() {
                    return Ok(l);
                }
                if let Some(e @ ClientError::CertificateRejected(_)) = self.inner.last_failure() {
                    return Err(e);
                }
                if *state.borrow() == ConnectionState::Removed {
                    return Err(ClientError::Relay(Refusal::new(
                        ErrorCode::UnknownDevice,
                        "this device was removed",
                    )));
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::ShutDown);
                }
            }
        };
        let limit = self.inner.options.relay_wait;
        crate::runtime::timeout(limit, wait).await.unwrap_or_else(|| {
            Err(self.inner.last_failure().unwrap_or_else(|| {
                ClientError::Network(format!("not connected to the relay after {limit:?}"))
            }))
        })
    }

    pub(crate) async fn account_id_bytes(&self) -> AccountId {
        self.inner.lock_for_app().await.me()
    }
}
