//! The connection loop: connect, authenticate, then (in one round trip, on three streams)
//! subscribe, refresh our device list and check the prekey stock; then run the delivery and
//! outbox loops until the connection breaks; reconnect with exponential backoff and jitter.
//!
//! Heartbeats are QUIC keep-alives (every 5 s, hush-net), so a dead path is noticed by the
//! transport's 15 s idle timeout and surfaces here as a closed link.

use std::sync::Arc;
use std::time::Duration;

use hush_protocol::ErrorCode;
use hush_protocol::auth::transcript;
use hush_protocol::wire::{self, request, response};
use rand::RngExt;

use super::core::Tx;
use super::error::ClientError;
use super::inner::{Inner, unexpected};
use super::types::{ConnectionState, Event};
use crate::transport::{Link, TransportError};

/// Reconnect delays: exponential with full jitter between half and all of the current delay,
/// from `min` doubling to `max`, and back to `min` once a connection got through.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The wait before the next attempt (with jitter), doubling the one after it.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A connection got through: the next failure waits the least again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut backoff = Backoff::new(inner.options.reconnect_min, inner.options.reconnect_max);
    while !inner.is_shut_down() {
        inner.set_state(ConnectionState::Connecting);
        let outcome = tokio::select! {
            r = session(&inner) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        if let Ok(mut l) = inner.link.lock()
            && let Some(link) = l.take()
        {
            link.close();
        }
        // Read before the state changes below: a session that got as far as `Connected`
        // resets the backoff, so a relay restart costs the least wait, however many came
        // before it.
        let got_through = matches!(*inner.state.borrow(), ConnectionState::Connected);
        if got_through {
            backoff.reset();
            inner.set_failure(None);
        }
        match outcome {
            Err(ClientError::Relay(r))
                if matches!(
                    r.code(),
                    Some(ErrorCode::UnknownDevice | ErrorCode::UnknownAccount)
                ) =>
            {
                inner.set_state(ConnectionState::Removed);
                inner.events.emit(vec![Event::Error {
                    code: "device_removed".into(),
                    message:
                        "the relay no longer knows this device; it was removed from the account"
                            .into(),
                }]);
                return;
            }
            Ok(()) => {}
            Err(e) => {
                if !got_through {
                    // Reported once per kind of failure, not on every retry.
                    let new = inner.last_failure().is_none_or(|f| f.code() != e.code());
                    if new && !matches!(e, ClientError::Network(_)) {
                        tracing::warn!(code = e.code(), "cannot connect to the relay");
                        inner.events.emit(vec![Event::Error {
                            code: e.code().to_owned(),
                            message: e.message(),
                        }]);
                    }
                    inner.set_failure(Some(e));
                } else if !matches!(e, ClientError::Network(_)) {
                    tracing::warn!(code = e.code(), "connection ended with an error");
                    inner.events.emit(vec![Event::Error {
                        code: e.code().to_owned(),
                        message: e.message(),
                    }]);
                }
            }
        }
        inner.set_state(ConnectionState::Disconnected);
        if inner.is_shut_down() {
            break;
        }
        let wait = backoff.next_wait();
        tokio::select! {
            _ = crate::runtime::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    inner.set_state(ConnectionState::Disconnected);
}

/// One connection's life. Returns when it ends.
async fn session(inner: &Arc<Inner>) -> Result<(), ClientError> {
    let link = inner.connector.connect().await?;
    ensure_registered(inner, link.as_ref()).await?;
    authenticate(inner, link.as_ref()).await?;
    // The relay starts sending the mailbox as soon as it has the subscription, so that is asked
    // for together with our device list and the prekey counts, each on its own stream: after
    // authenticating, a reconnect usually waits one round trip before handling its first
    // message instead of three (on a phone's 100 ms link, two tenths of a second sooner; an
    // upload of prekeys adds one). Deliveries wait in QUIC's window and the reader's channel
    // until the list and the prekeys are up to date.
    let (list, prekeys, deliveries) = tokio::join!(
        super::devices::refresh_own_list(inner, link.as_ref()),
        super::prekeys::maintain(inner, link.as_ref()),
        link.subscribe()
    );
    list?;
    prekeys?;
    let deliveries = deliveries?;
    if let Ok(mut l) = inner.link.lock() {
        *l = Some(Arc::clone(&link));
    }
    inner.set_state(ConnectionState::Connected);
    inner.outbox_ready.notify_one();
    let ended = tokio::select! {
        r = super::inbox::run(inner, link.as_ref(), deliveries) => r,
        r = super::outbox::run(inner, link.as_ref()) => r,
        e = link.closed() => Err(e.into()),
    };
    // However the connection ended, the receive pipeline may have left a batch decrypted in
    // memory and not committed (an error or the end of the stream between the two, or this
    // select dropping it mid-batch). Its ratchets would then take the relay's redelivery of
    // that batch for duplicates, and drop it; so memory goes back to what the store holds
    // before anything else uses it.
    super::inbox::forget_uncommitted(inner, &mut *inner.core.lock().await).await;
    ended
}

/// Registers the account's device list if the relay has not accepted it yet (account creation
/// interrupted before the relay answered).
pub(crate) async fn ensure_registered(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    // The request goes out with the state unlocked; registering twice is harmless (the relay
    // answers `stale_device_list` for the same list), so no lock needs to span it.
    let list = {
        let core = inner.core.lock().await;
        if core.account.registered {
            return Ok(());
        }
        core.own_list.clone().ok_or(ClientError::NoAccount)?
    };
    match link
        .request(request::Body::Register(wire::Register { device_list: list.encoded().to_vec() }))
        .await
    {
        Ok(_) => {}
        // Registered before a crash: the relay keeps the (same) list.
        Err(TransportError::Relay(r)) if r.is(ErrorCode::StaleDeviceList) => {}
        Err(e) => return Err(e.into()),
    }
    let mut core = inner.core.lock().await;
    core.account.registered = true;
    let mut tx = Tx::new(inner.store.as_ref(), &inner.vault);
    tx.put_account(&core);
    inner.commit_then_emit(tx, core).await
}

async fn authenticate(inner: &Inner, link: &dyn Link) -> Result<(), ClientError> {
    let nonce = match link.request(request::Body::GetChallenge(wire::GetChallenge {})).await? {
        response::Body::Challenge(c) => c.nonce,
        _ => return Err(unexpected("Challenge")),
    };
    let nonce: [u8; 32] = nonce.try_into().map_err(|_| unexpected("a 32-byte nonce"))?;
    let binding = link.channel_binding()?;
    let (account, device_id, signature) = {
        let core = inner.core.lock().await;
        let sig = core.identity.sign(&transcript(
            &nonce,
            &binding,
            core.account_id.as_bytes(),
            core.device_id(),
        ));
        (core.me(), core.device_id(), sig)
    };
    match link
        .request(request::Body::Authenticate(wire::Authenticate {
            account: account.to_vec(),
            device_id,
            signature: signature.to_vec(),
        }))
        .await?
    {
        response::Body::Authenticated(_) => Ok(()),
        _ => Err(unexpected("Authenticated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets_after_a_connection() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        for (w, full) in waits.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            assert!(*w >= Duration::from_millis(full / 2) && *w <= Duration::from_millis(full));
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
