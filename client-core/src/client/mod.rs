//! The Hush client: accounts, contacts, multi-device 1:1 messaging, receipts, typing, local
//! history with search, and sync between a user's devices.
//!
//! A [`Client`] owns background tasks that keep a connection to the relay (reconnecting with
//! backoff), drain and decrypt deliveries, and work through a durable outbox. The app calls
//! async methods and listens to one [`Event`] stream. Guarantees:
//! - `send_text` returns once the message is in local history and in the outbox: from then on it
//!   survives a crash and is sent exactly once (envelopes are encrypted once, stored, and resent
//!   verbatim after a restart, so the recipient's ratchet drops any duplicate);
//! - a delivery is acked to the relay only after its effects (history, ratchet state, receipts
//!   to send) are committed locally;
//! - every device of the peer and every other device of ours gets each message; our devices
//!   get a transcript, so all of them show the same conversation in the same order, sorted by
//!   (Lamport clock, message id), both carried inside the encryption;
//! - device lists are verified against the account key; an identity change is surfaced, and
//!   for a verified contact sending is held until the user accepts it.

mod account;
mod attachments;
mod connection;
mod contacts;
mod core;
mod devices;
mod error;
mod fanout;
mod gate;
mod group_outbox;
mod group_state;
mod groups;
mod handle;
mod history;
mod inbox;
mod inner;
mod messaging;
mod outbox;
mod prekeys;
mod types;

use std::time::Duration;

pub use self::attachments::{AttachmentMeta, AttachmentSink, AttachmentSource, PendingUpload};
pub use self::error::ClientError;
pub use self::handle::Client;
pub use self::inbox::MAX_BATCH;
pub use self::inner::{ClientConfig, ClientOptions, EventStream};
pub use self::types::{
    AttachmentView, ConnectionState, ContactView, ConversationView, DeviceView, Event,
    GroupMemberView, GroupReceipts, GroupView, MessageKind, MessageStatus, MessageView, SearchHit,
    SendProblem, TrustState,
};
use crate::store::{Scan, Store, Table};

impl Client {
    /// A stream of every event from now on. The first stream opened also gets the events
    /// emitted since [`Client::open`] (the latest 10,000), so an app that connects its
    /// listener right after opening misses nothing the catch-up delivered in between.
    pub fn events(&self) -> EventStream {
        self.inner.events.stream()
    }

    /// The connection state now.
    pub fn connection_state(&self) -> ConnectionState {
        *self.inner.state.borrow()
    }

    /// Waits until the outbox is empty (everything sent was acked by the relay), up to `wait`.
    pub async fn flush(&self, wait: Duration) -> Result<(), ClientError> {
        // A timer rather than a wall-clock deadline, so a clock change can't cut the wait short
        // or stretch it (the browser target has no `Instant`, but it has timers).
        let outbox =
            |limit| self.inner.store.scan(Scan { limit, ..Scan::prefix(Table::Outbox, b"") });
        let emptied = crate::runtime::timeout(wait, async {
            while !outbox(1).await?.is_empty() {
                crate::runtime::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, ClientError>(())
        })
        .await;
        match emptied {
            Some(done) => done,
            None => Err(ClientError::Network(format!(
                "{} outgoing items still queued",
                outbox(0).await?.len()
            ))),
        }
    }

    /// Stops the background tasks and closes the connection. Pending sends stay in the outbox
    /// for the next [`Client::open`].
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        // Said now, not when the connection task next runs: the caller may look right after.
        self.inner.set_state(ConnectionState::Disconnected);
        if let Some(l) = self.inner.current_link() {
            l.close();
        }
        // From here on nothing more is written: a task that had work in hand finds the store
        // closed, and a client opened next on the same store is its only writer.
        self.inner.store.close().await;
        // Wait until the connection task has let go of the core (it holds it while committing).
        let _core = self.inner.lock_for_app().await;
        self.inner.events.close();
    }
}
