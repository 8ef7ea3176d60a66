//! Delivery to a subscribed device: the ordered drain, the "queue empty" marker, live pushes,
//! ephemeral envelopes and acks.
//!
//! On `Subscribe` the relay answers `Subscribed`, then sends every stored envelope in sequence
//! order, then `QueueEmpty`; after that each newly committed envelope is pushed as soon as its
//! commit wakes the subscription. Envelopes stay stored until the device acks them on the same
//! stream, so a device that disconnects before acking gets them again, in the same order, on
//! its next subscription. On shutdown, or when a newer connection of the same device
//! subscribes, the relay sends `GoAway` and ends the stream.

use std::sync::Arc;

use hush_protocol::wire::{self, Response, ServerPush, response, server_push};

use crate::server::{Conn, Relay};
use crate::store::AccountId;
use crate::streams::{FrameRead, FrameWrite};

/// Envelopes read from the database per round.
const READ_BATCH: usize = 256;
/// Longest a subscription waits for the device to acknowledge its GoAway before ending.
const GO_AWAY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest ack frame accepted (an ack of 100k sequence numbers).
const MAX_ACK_FRAME: usize = 1024 * 1024;

/// Serves one subscription until the device goes away, is replaced, or the relay shuts down.
pub(crate) async fn serve<W: FrameWrite, R: FrameRead>(
    relay: Arc<Relay>,
    conn: Arc<Conn>,
    key: (AccountId, u32),
    mut send: W,
    recv: R,
) {
    let mut sub = relay.online.subscribe(key, conn.id);
    let ok = Response { body: Some(response::Body::Subscribed(wire::Subscribed {})) };
    if !send.write(&ok).await {
        relay.online.unsubscribe(key, conn.id);
        conn.subscribed.store(false, std::sync::atomic::Ordering::Release);
        return;
    }
    let acks = tokio::spawn(read_acks(Arc::clone(&relay), Arc::clone(&conn), key, recv));
    let mut last_sent = 0u64;
    let mut drained = false;
    let end_reason = loop {
        // Checked before every read, not only when idle, so a replaced subscription stops
        // delivering at once even in the middle of a long drain.
        if sub.replaced.is_cancelled() {
            break Some("replaced by a newer connection of this device");
        }
        if relay.shutdown.is_cancelled() {
            break Some("relay shutting down");
        }
        let store = relay.store.clone();
        let after = last_sent;
        let batch = tokio::task::spawn_blocking(move || {
            store.read_mailbox(&key.0, key.1, after, READ_BATCH)
        })
        .await;
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "mailbox read failed");
                break Some("relay storage error; resubscribe");
            }
            Err(_) => break None,
        };
        let full = batch.len() >= READ_BATCH;
        if let Some((seq, _, _)) = batch.last() {
            let last = *seq;
            let count = batch.len() as u64;
            let pushes: Vec<ServerPush> = batch
                .into_iter()
                .map(|(seq, entry, payload)| ServerPush {
                    body: Some(server_push::Body::Delivery(wire::Delivery {
                        seq,
                        sender_account: entry.sender_account.to_vec(),
                        sender_device: entry.sender_device,
                        server_time_ms: entry.server_time_ms,
                        payload,
                        ephemeral: false,
                    })),
                })
                .collect();
            if !send.write_each(&pushes).await {
                break None;
            }
            relay.metrics.envelopes_delivered_total.inc_by(count);
            last_sent = last;
        }
        if full {
            continue;
        }
        if !drained {
            drained = true;
            let empty = ServerPush {
                body: Some(server_push::Body::QueueEmpty(wire::QueueEmpty { last_seq: last_sent })),
            };
            if !send.write(&empty).await {
                break None;
            }
        }
        tokio::select! {
            () = sub.wake.notified() => {}
            Some(d) = sub.ephemeral.recv() => {
                let push = ServerPush { body: Some(server_push::Body::Delivery(d)) };
                if !send.write(&push).await {
                    break None;
                }
            }
            () = sub.replaced.cancelled() => break Some("replaced by a newer connection of this device"),
            () = relay.shutdown.cancelled() => break Some("relay shutting down"),
            () = conn.peer.closed() => break None,
        }
    };
    if let Some(reason) = end_reason {
        let go = ServerPush {
            body: Some(server_push::Body::GoAway(wire::GoAway {
                reason: reason.to_owned(),
                reconnect_after_ms: 1000,
            })),
        };
        if send.write(&go).await {
            send.finish().await;
            // On shutdown the relay closes every connection as soon as its subscriptions end,
            // and a close drops stream data not yet sent: make sure the GoAway got there.
            // This task is tracked, so the wait also counts against the drain time.
            send.delivered(GO_AWAY_WAIT).await;
        }
    }
    acks.abort();
    relay.online.unsubscribe(key, conn.id);
    // The connection may subscribe again (after a GoAway for a storage error, say).
    conn.subscribed.store(false, std::sync::atomic::Ordering::Release);
}

async fn read_acks<R: FrameRead>(
    relay: Arc<Relay>,
    conn: Arc<Conn>,
    key: (AccountId, u32),
    mut recv: R,
) {
    loop {
        // Charged until the ack is applied.
        let mut held = conn.budget.hold();
        let body = match recv.read_frame(MAX_ACK_FRAME, &mut held).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = ?e, "ack stream ended");
                recv.stop();
                return;
            }
        };
        let Ok(push) = body.decode::<wire::ClientPush>() else {
            recv.stop();
            return;
        };
        drop(body);
        if push.acks.is_empty() {
            continue;
        }
        let seqs = push.acks;
        match relay.writer.run(move |txn| Ok(crate::mailbox::ack(txn, &key.0, key.1, &seqs)?)).await
        {
            Ok(n) => {
                relay.metrics.envelopes_acked_total.inc_by(n);
            }
            Err(e) => {
                tracing::error!(error = %e, "ack failed");
            }
        }
    }
}
