//! The delivery pipeline: decrypt, apply, commit, then ack.
//!
//! Deliveries are taken in batches (whatever has arrived, up to [`MAX_BATCH`]). Each batch is
//! decrypted and applied in memory, then committed in one store transaction together with the
//! ratchet states, the consumed prekeys and the delivered receipts it owes; only then is it
//! acked, so the relay deletes nothing a crash could lose. A redelivered envelope (acked too
//! late) fails its ratchet's duplicate check, and a repeated message id is dropped, so nothing
//! is shown twice.
//!
//! The relay is not asked anything while the state is locked: a batch whose prekey messages
//! come from devices we can't yet verify has their accounts' device lists fetched first, with
//! the state unlocked ([`prefetch_lists`]); in a pipelined run such a batch waits for the
//! next run rather than being prepared under the lock.

use hush_prekeys::HandshakeError;
use hush_protocol::DeviceList;
use hush_protocol::wire::{Delivery, server_push};

use super::core::{AccountId, Core, MAX_SESSIONS_PER_DEVICE, Overlays, Tx};
use super::error::ClientError;
use super::groups::{Checked, OwedReceipts};
use super::inner::Inner;
use super::types::Event;
use crate::content::{self, Content, content::Body};
use crate::message::{self, Incoming};
use crate::records::{MessageRecord, RECORD_VERSION, Status};
use crate::store::{Batch, Store, Table};
use crate::transport::{Deliveries, Link};
use crate::{Session, SessionError};

/// Most deliveries decrypted and committed together.
pub const MAX_BATCH: usize = 1024;
/// Most batches handled back to back (each one decrypted while its predecessor commits) before
/// the client state is let go for background work (the outbox sending the delivered receipts
/// a catch-up owes). A call from the app doesn't wait for this: the run ends at the next batch
/// once one is waiting.
const MAX_PIPELINE: usize = 32;

/// Reads deliveries until the subscription ends.
///
/// While deliveries keep arriving (a catch-up), batch k+1 is decrypted and applied in memory
/// while batch k's commit runs on the store's thread; batch k is acked and its events emitted
/// only once its commit is done, so the crash-safety argument is unchanged. The client state
/// stays locked for the whole run of batches, so no other writer reads the store between a
/// batch's in-memory changes and its commit.
pub(crate) async fn run(
    inner: &Inner,
    link: &dyn Link,
    mut deliveries: Box<dyn Deliveries>,
) -> Result<(), ClientError> {
    // A batch taken but not prepared, because it needs device lists fetched first, or because
    // the run ended with it taken ahead.
    let mut carried: Option<Vec<server_push::Body>> = None;
    let nothing_fetched = Fetched::new();
    loop {
        let pushes = match carried.take() {
            Some(p) => p,
            None => {
                let Some(first) = deliveries.next().await? else {
                    return Err(ClientError::Network("the relay ended the subscription".into()));
                };
                take_batch(first, deliveries.as_mut()).await?
            }
        };
        // Network I/O happens here, before the state is locked for the batch.
        let fetched = prefetch_lists(inner, link, &pushes).await?;
        let mut core = inner.core.lock().await;
        let mut current = prepare(
            inner,
            link,
            &mut core,
            pushes,
            Overlays::default(),
            &fetched,
            Checked::default(),
        )
        .await?;
        // The batch after the next one, taken early so that its group signatures are checked
        // on a thread of their own while the next batch is prepared and this one commits.
        let mut ahead: Option<Ahead> = None;
        let mut rounds = 1;
        loop {
            let Prepared { batch, after, overlays } = current;
            let more = rounds < MAX_PIPELINE
                && !after.prekeys_used
                && !after.go_away
                && !inner.app_waiting();
            let mut next = match (more, ahead.take()) {
                (true, Some(a)) => Some(a),
                (true, None) => match deliveries.try_next().await? {
                    Some(p) => Some(Ahead::unchecked(take_batch(p, deliveries.as_mut()).await?)),
                    None => None,
                },
                (false, a) => {
                    carried = a.map(Ahead::into_pushes);
                    None
                }
            };
            // A next batch that needs device lists waits for the next run, which fetches them
            // with the state unlocked.
            if next.as_ref().is_some_and(|n| !lists_to_fetch(&core, n.pushes()).is_empty()) {
                carried = next.take().map(Ahead::into_pushes);
            }
            // Not when the next round is the run's last: its check would go to waste.
            if next.is_some()
                && rounds + 1 < MAX_PIPELINE
                && let Some(p) = deliveries.try_next().await?
            {
                ahead = Some(Ahead::start(&core, take_batch(p, deliveries.as_mut()).await?));
            }
            let store = inner.store.as_ref();
            let (committed, next) = match next {
                Some(n) => {
                    let (c, n) = tokio::join!(store.commit(batch), async {
                        let (pushes, checked) = n.finish().await;
                        prepare(inner, link, &mut core, pushes, overlays, &nothing_fetched, checked)
                            .await
                    });
                    (c, Some(n))
                }
                None => (store.commit(batch).await, None),
            };
            if let Err(e) = committed {
                forget_uncommitted(inner, &mut core).await;
                return Err(e.into());
            }
            // Events first: the batch is stored, so the app hears of it even if the ack fails
            // (the relay then delivers it again, and the duplicates are dropped silently).
            inner.events.emit(after.events);
            if after.queued {
                inner.outbox_ready.notify_one();
            }
            if after.caught_up {
                inner.events.emit(vec![Event::CaughtUp]);
            }
            if !after.acks.is_empty() {
                deliveries.ack(after.acks).await?;
            }
            if after.go_away {
                return Ok(());
            }
            match next {
                Some(n) => {
                    current = n?;
                    rounds += 1;
                }
                None => {
                    drop(core);
                    if after.prekeys_used {
                        super::prekeys::maintain(inner, link).await?;
                    }
                    break;
                }
            }
        }
    }
}

/// A batch taken from the stream before its turn, with its group signatures being checked
/// beside the pipeline ([`super::groups::check_ahead`]).
struct Ahead {
    pushes: std::sync::Arc<Vec<server_push::Body>>,
    checking: Option<tokio::sync::oneshot::Receiver<Checked>>,
}

impl Ahead {
    fn unchecked(pushes: Vec<server_push::Body>) -> Self {
        Self { pushes: std::sync::Arc::new(pushes), checking: None }
    }

    fn start(core: &Core, pushes: Vec<server_push::Body>) -> Self {
        let pushes = std::sync::Arc::new(pushes);
        let checking = super::groups::check_ahead(core, &pushes);
        Self { pushes, checking }
    }

    fn pushes(&self) -> &[server_push::Body] {
        &self.pushes
    }

    /// The batch, and what the thread found valid (nothing, if it failed: the messages are then
    /// checked in the batch, as any other).
    async fn finish(self) -> (Vec<server_push::Body>, Checked) {
        let checked = match self.checking {
            Some(r) => r.await.unwrap_or_default(),
            None => Checked::default(),
        };
        (std::sync::Arc::unwrap_or_clone(self.pushes), checked)
    }

    /// The batch, without waiting for the check (copied if the thread still holds it).
    fn into_pushes(self) -> Vec<server_push::Body> {
        std::sync::Arc::unwrap_or_clone(self.pushes)
    }
}

/// Device lists fetched for a batch before its state lock, by account.
type Fetched = std::collections::HashMap<AccountId, DeviceList>;

/// The accounts whose device lists a batch needs and we don't have: senders of prekey
/// messages (new sessions) naming an identity our copy of their list doesn't hold for that
/// device. Cheap (no I/O); called with the state locked or briefly locked.
fn lists_to_fetch(core: &Core, pushes: &[server_push::Body]) -> Vec<AccountId> {
    let mut want = Vec::new();
    for p in pushes {
        let server_push::Body::Delivery(d) = p else { continue };
        let Ok(sender) = AccountId::try_from(d.sender_account.as_slice()) else { continue };
        let Ok(Incoming::PreKey { header, .. }) = message::decode(&d.payload) else { continue };
        let identity = header.identity.to_bytes();
        let known = core.known_list(&sender).is_some_and(|l| {
            l.device(d.sender_device).is_some_and(|e| e.identity.to_bytes() == identity)
        });
        if !known && !want.contains(&sender) {
            want.push(sender);
        }
    }
    want
}

/// Fetches the device lists a batch needs ([`lists_to_fetch`]) with the state unlocked, so a
/// slow relay answer never holds up the app's calls.
async fn prefetch_lists(
    inner: &Inner,
    link: &dyn Link,
    pushes: &[server_push::Body],
) -> Result<Fetched, ClientError> {
    let wanted = lists_to_fetch(&*inner.core.lock().await, pushes);
    let mut fetched = Fetched::new();
    for account in wanted {
        fetched.insert(account, super::devices::fetch_device_list(link, &account).await?);
    }
    Ok(fetched)
}

/// `first` and whatever else has already arrived, up to [`MAX_BATCH`].
async fn take_batch(
    first: server_push::Body,
    deliveries: &mut dyn Deliveries,
) -> Result<Vec<server_push::Body>, ClientError> {
    let mut pushes = vec![first];
    while pushes.len() < MAX_BATCH {
        match deliveries.try_next().await? {
            Some(p) => pushes.push(p),
            None => break,
        }
    }
    Ok(pushes)
}

/// A batch applied in memory, waiting for its commit.
struct Prepared {
    batch: Batch,
    after: AfterCommit,
    overlays: Overlays,
}

/// What to do once a batch is committed.
struct AfterCommit {
    events: Vec<Event>,
    acks: Vec<u64>,
    queued: bool,
    prekeys_used: bool,
    caught_up: bool,
    go_away: bool,
}

/// Decrypts and applies a batch in memory. On an error, memory (ratchets, prekeys) may be
/// ahead of the store, so it is reloaded before returning: the relay will deliver the batch
/// again and it must decrypt again.
async fn prepare(
    inner: &Inner,
    link: &dyn Link,
    core: &mut Core,
    pushes: Vec<server_push::Body>,
    overlays: Overlays,
    fetched: &Fetched,
    checked: Checked,
) -> Result<Prepared, ClientError> {
    let mut batch = Vec::new();
    let (mut caught_up, mut go_away) = (false, false);
    for p in pushes {
        match p {
            server_push::Body::Delivery(d) => batch.push(d),
            server_push::Body::QueueEmpty(_) => caught_up = true,
            server_push::Body::GoAway(_) => go_away = true,
        }
    }
    let tx = Tx::continuing(inner.store.as_ref(), &inner.vault, overlays);
    match apply_batch(inner, link, core, tx, &batch, fetched, checked).await {
        Ok((tx, queued, prekeys_used)) => {
            let (store_batch, events, overlays) = tx.finish();
            let acks = batch.iter().filter(|d| !d.ephemeral).map(|d| d.seq).collect();
            Ok(Prepared {
                batch: store_batch,
                after: AfterCommit { events, acks, queued, prekeys_used, caught_up, go_away },
                overlays,
            })
        }
        Err(e) => {
            forget_uncommitted(inner, core).await;
            Err(e)
        }
    }
}

/// Decrypts and applies deliveries into `tx`; returns it with whether receipts were queued
/// and whether one-time prekeys were used.
async fn apply_batch<'a>(
    inner: &Inner,
    link: &dyn Link,
    core: &mut Core,
    mut tx: Tx<'a>,
    batch: &[Delivery],
    fetched: &Fetched,
    ahead: Checked,
) -> Result<(Tx<'a>, bool, bool), ClientError> {
    let mut prekeys_used = false;
    let mut touched: Vec<(AccountId, u32)> = Vec::new();
    let mut receipts: OwedReceipts = Vec::new();
    let before = core.account.next_outbox;
    let me = core.me();
    let mut decrypted: Decrypted<'_> = Vec::with_capacity(batch.len());
    let checked = super::groups::check_signatures(core, &mut tx, batch, ahead).await?;
    for (i, d) in batch.iter().enumerate() {
        let Ok(sender) = AccountId::try_from(d.sender_account.as_slice()) else { continue };
        if sender == me && d.sender_device == core.device_id() {
            continue;
        }
        if let Some(message) = message::group_message(&d.payload) {
            match super::groups::open_group_message(
                core,
                &mut tx,
                (sender, d.sender_device),
                message,
                checked.get(i),
            )
            .await?
            {
                Ok((group, plain)) => match Content::from_bytes(&plain) {
                    Some(c) => decrypted.push((sender, d, c, Some(group))),
                    None => tx.events.push(Event::Error {
                        code: "malformed_content".into(),
                        message: "a group message that does not decode".into(),
                    }),
                },
                Err(crate::sender_key::SenderKeyError::Duplicate) => {}
                Err(e) => {
                    tracing::debug!(code = e.code(), "dropped a group message");
                    tx.events.push(Event::Error { code: e.code().into(), message: e.to_string() });
                }
            }
            continue;
        }
        let plain = match decrypt(
            inner,
            link,
            core,
            &mut tx,
            fetched,
            (sender, d.sender_device),
            &d.payload,
        )
        .await
        {
            Ok((plain, used)) => {
                prekeys_used |= used;
                if !touched.contains(&(sender, d.sender_device)) {
                    touched.push((sender, d.sender_device));
                }
                plain
            }
            Err(Drop::Duplicate) => continue,
            Err(Drop::Bad(code, message)) => {
                tracing::debug!(code, "dropped an envelope");
                tx.events.push(Event::Error { code: code.into(), message });
                continue;
            }
            Err(Drop::Fatal(e)) => return Err(e),
        };
        let Some(content) = Content::from_bytes(&plain) else {
            tx.events.push(Event::Error {
                code: "malformed_content".into(),
                message: "a peer sent content that does not decode".into(),
            });
            continue;
        };
        // A sender key is taken in at once, in delivery order: a group message under it may
        // follow in this same batch. What came before it is applied first, so a change that
        // removed its sender (earlier in the batch) is in the state the key is checked against.
        if let Some(Body::GroupKey(k)) = &content.body {
            apply_decrypted(core, &mut tx, std::mem::take(&mut decrypted), &mut receipts).await?;
            super::groups::receive_group_key(core, &mut tx, (sender, d.sender_device), k).await?;
            continue;
        }
        decrypted.push((sender, d, content, None));
    }
    apply_decrypted(core, &mut tx, decrypted, &mut receipts).await?;
    for (account, device) in &touched {
        tx.put_sessions(core, account, *device);
    }
    if prekeys_used {
        tx.put_prekeys(core);
    }
    for (account, group, ids) in receipts {
        let kind = content::ReceiptKind::Delivered;
        super::groups::queue_receipt(core, &mut tx, account, group, ids, kind);
    }
    // Receipts, and group work (state requests, re-issued changes) queue outbox entries.
    let queued = core.account.next_outbox != before;
    tx.put_touched_groups(core);
    tx.put_account(core);
    Ok((tx, queued, prekeys_used))
}

/// After a failed commit, memory is ahead of disk: reload what a batch may have changed.
/// Also called when a connection ends, for a batch prepared and never committed.
pub(crate) async fn forget_uncommitted(inner: &Inner, core: &mut Core) {
    core.forget_cached_secrets();
    if let Ok(Some(sealed)) = inner.store.get(Table::Meta, crate::records::meta::PREKEYS).await
        && let Ok(plain) = inner.vault.open(Table::Meta, crate::records::meta::PREKEYS, &sealed)
        && let Ok(p) = hush_prekeys::DevicePrekeys::from_state_bytes(&plain)
    {
        core.prekeys = p;
    }
}

enum Drop {
    /// Already received: ack and forget.
    Duplicate,
    /// Undecryptable or untrusted: ack, report, forget.
    Bad(&'static str, String),
    /// Storage or network failure: stop, do not ack.
    Fatal(ClientError),
}

impl From<ClientError> for Drop {
    fn from(e: ClientError) -> Self {
        Self::Fatal(e)
    }
}

async fn decrypt(
    inner: &Inner,
    link: &dyn Link,
    core: &mut Core,
    tx: &mut Tx<'_>,
    fetched: &Fetched,
    (sender, device): (AccountId, u32),
    payload: &[u8],
) -> Result<(Vec<u8>, bool), Drop> {
    let incoming =
        message::decode(payload).map_err(|e| Drop::Bad("malformed_envelope", e.to_string()))?;
    let sessions = core.sessions_mut(inner.store.as_ref(), &inner.vault, &sender, device).await?;
    if let Incoming::PreKey { .. } = incoming {
        let id = incoming.handshake_id();
        if let Some(pos) = sessions.iter().position(|s| Some(s.handshake_id()) == id) {
            return decrypt_with(sessions, pos, payload).map(|p| (p, false));
        }
        let Core { identity, prekeys, .. } = &mut *core;
        let (session, plain) = match Session::accept(identity, prekeys, payload) {
            Ok(ok) => ok,
            Err(SessionError::Duplicate | SessionError::Handshake(HandshakeError::Replayed)) => {
                return Err(Drop::Duplicate);
            }
            Err(e) => return Err(Drop::Bad("undecryptable", e.to_string())),
        };
        check_sender(link, core, tx, fetched, sender, device, &session.remote_identity()).await?;
        let sessions =
            core.sessions_mut(inner.store.as_ref(), &inner.vault, &sender, device).await?;
        sessions.insert(0, session);
        sessions.truncate(MAX_SESSIONS_PER_DEVICE);
        return Ok((plain, true));
    }
    let mut last = None;
    for pos in 0..sessions.len() {
        match decrypt_with(sessions, pos, payload) {
            Ok(p) => return Ok((p, false)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Drop::Bad("no_session", "a message from a device we have no session with".into())
    }))
}

/// Decrypts with the session at `pos`; on success it becomes the current session.
fn decrypt_with(sessions: &mut Vec<Session>, pos: usize, payload: &[u8]) -> Result<Vec<u8>, Drop> {
    let Some(s) = sessions.get_mut(pos) else { return Err(Drop::Bad("no_session", String::new())) };
    match s.decrypt(payload) {
        Ok(p) => {
            let s = sessions.remove(pos);
            sessions.insert(0, s);
            Ok(p)
        }
        Err(SessionError::Duplicate) => Err(Drop::Duplicate),
        Err(e) => Err(Drop::Bad("undecryptable", e.to_string())),
    }
}

/// A new session's peer identity must be the one the sender's account signed for that device.
async fn check_sender(
    link: &dyn Link,
    core: &mut Core,
    tx: &mut Tx<'_>,
    fetched: &Fetched,
    sender: AccountId,
    device: u32,
    identity: &[u8; 64],
) -> Result<(), Drop> {
    let matches =
        |l: &DeviceList| l.device(device).is_some_and(|d| d.identity.to_bytes() == *identity);
    if core.known_list(&sender).is_some_and(|l| matches(&l)) {
        return Ok(());
    }
    let fresh = match fetched.get(&sender) {
        Some(l) => l.clone(),
        // Only if the lists changed between the fetch and the lock (a list another call
        // applied meanwhile): fetch again rather than drop a message from a real device.
        None => super::devices::fetch_device_list(link, &sender).await?,
    };
    super::devices::apply_device_list(core, tx, &fresh, None);
    if matches(&fresh) {
        Ok(())
    } else {
        Err(Drop::Bad(
            "untrusted_sender",
            "a session from an identity its account did not sign".into(),
        ))
    }
}

/// Applies one decrypted content.
/// Decrypted contents of a batch (sender, delivery, content, group if a group message).
type Decrypted<'a> = Vec<(AccountId, &'a Delivery, Content, Option<crate::group::Id>)>;

/// Applies decrypted contents in delivery order, with the duplicate checks for all of them in
/// two reads.
async fn apply_decrypted(
    core: &mut Core,
    tx: &mut Tx<'_>,
    decrypted: Decrypted<'_>,
    receipts: &mut OwedReceipts,
) -> Result<(), ClientError> {
    if decrypted.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Vec<u8>> = Vec::with_capacity(decrypted.len());
    for (_, _, c, _) in &decrypted {
        match &c.body {
            Some(Body::Text(t)) => ids.push(t.id.clone()),
            Some(Body::SyncSent(s)) => ids.extend(s.text.iter().map(|t| t.id.clone())),
            Some(Body::Receipt(r)) => ids.extend(r.ids.iter().take(10_000).cloned()),
            _ => {}
        }
    }
    tx.prefetch_messages(&ids).await?;
    for (sender, d, content, group) in decrypted {
        match group {
            Some(g) => {
                let from = (sender, d.sender_device);
                super::groups::apply_group_content(core, tx, g, from, content, receipts).await?
            }
            None => apply(core, tx, sender, d, content, receipts).await?,
        }
    }
    Ok(())
}

async fn apply(
    core: &mut Core,
    tx: &mut Tx<'_>,
    sender: AccountId,
    d: &Delivery,
    content: Content,
    receipts: &mut OwedReceipts,
) -> Result<(), ClientError> {
    let me = core.me();
    let from_me = sender == me;
    match content.body {
        Some(Body::Text(t)) if !from_me => {
            if !t.is_valid() {
                tx.events.push(Event::Error {
                    code: "malformed_content".into(),
                    message: "a message with a bad id or an oversize text".into(),
                });
                return Ok(());
            }
            core.account.clock = core.account.clock.max(t.clock);
            let record = MessageRecord {
                version: RECORD_VERSION,
                id: t.id,
                conversation: sender.to_vec(),
                sender: sender.to_vec(),
                sender_device: d.sender_device,
                clock: t.clock,
                body: t.body,
                attachment: t.attachment,
                sent_at_ms: t.sent_at_ms,
                outgoing: false,
                status: Status::Received as i32,
                problem_code: String::new(),
                problem: String::new(),
                ..Default::default()
            };
            let id = record.id.clone();
            if super::history::store_message(tx, record, true).await? {
                super::groups::owe_receipt(receipts, sender, &[], id);
            }
        }
        Some(Body::SyncSent(s)) if from_me => {
            let (Some(t), Ok(conversation)) =
                (s.text, AccountId::try_from(s.conversation.as_slice()))
            else {
                return Ok(());
            };
            if !t.is_valid() {
                return Ok(());
            }
            core.account.clock = core.account.clock.max(t.clock);
            let record = MessageRecord {
                version: RECORD_VERSION,
                id: t.id,
                conversation: conversation.to_vec(),
                sender: me.to_vec(),
                sender_device: d.sender_device,
                clock: t.clock,
                body: t.body,
                attachment: t.attachment,
                sent_at_ms: t.sent_at_ms,
                outgoing: true,
                status: Status::Sent as i32,
                problem_code: String::new(),
                problem: String::new(),
                ..Default::default()
            };
            super::history::store_message(tx, record, false).await?;
        }
        Some(Body::Receipt(r)) if !from_me => {
            let status = match content::ReceiptKind::try_from(r.kind) {
                Ok(content::ReceiptKind::Delivered) => Status::Delivered,
                Ok(content::ReceiptKind::Read) => Status::Read,
                _ => return Ok(()),
            };
            if !r.group_id.is_empty() {
                return super::groups::apply_group_receipt(core, tx, sender, &r, status).await;
            }
            for id in r.ids.iter().take(10_000) {
                let Some((key, m)) = tx.message(id).await? else { continue };
                // Only the conversation's peer can acknowledge our messages in it.
                if !m.outgoing
                    || m.conversation != sender
                    || m.status >= status as i32
                    || m.status == Status::Failed as i32
                {
                    continue;
                }
                tx.set_status(key, m, status);
            }
        }
        Some(Body::SyncRead(s)) if from_me => {
            if let Ok(conversation) = AccountId::try_from(s.conversation.as_slice()) {
                super::history::mark_seen(tx, &conversation, Some(s.ids)).await?;
            }
        }
        Some(Body::GroupSync(s)) if from_me => {
            super::groups::apply_group_sync(core, tx, s).await?;
        }
        Some(Body::Typing(t)) if !from_me => {
            let from = hex::encode(sender);
            tx.events.push(Event::Typing { conversation: from.clone(), from, started: t.started });
        }
        // Anything else (unknown kinds from newer clients, or a kind from the wrong party) is
        // ignored: the envelope was authentic, just not for us to act on.
        _ => {}
    }
    Ok(())
}
