//! Groups (docs/PROTOCOL.md §17): the app's calls, and what a device does with the group
//! content it receives.
//!
//! - Every change (create, add, remove, leave, promote, demote, rename, describe) is a
//!   [`SignedGroupChange`] by this device, applied to the local log first (so a refused one
//!   returns its typed error and changes nothing), then queued as a group message to every
//!   member device, and to the devices of members it removes (they learn of it).
//! - A group message is encrypted once under this device's sender key when it is queued; the
//!   outbox sends the one payload to every device that holds the key, and to the others a
//!   pairwise [`GroupKey`] carrying the key's distribution with the same message
//!   (`group_outbox`).
//! - After a member or a device leaves, the next message rotates the sender key, so the new
//!   key reaches only the remaining devices.
//! - Received changes are checked against the sender (author device = envelope sender, its
//!   identity = the one its account signed) and against the state; concurrent changes converge
//!   by the log's smallest-hash rule. A change of ours that lost is re-issued (its actions that
//!   still apply) on top of the winner.
//! - Membership changes become timeline entries ([`MessageKind::GroupEvent`]) whose id is the
//!   change hash's first 16 bytes and whose clock is the author's: the same place on every
//!   device. A change that loses a fork leaves the timeline.

use rand::RngExt;

use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::group_state::GroupEntry;
use super::handle::Client;
use super::types::{Event, GroupMemberView, GroupReceipts, GroupView};
use crate::content::{
    self, Content, GroupKey, GroupSync, GroupUpdate, MESSAGE_ID_LEN, content::Body,
};
use crate::group::{
    ActionKind, ChangeBody, GroupAction, GroupError, GroupState, Id, MAX_MEMBERS, Outcome,
    SignedGroupChange, Verified,
};
use crate::message::TYPE_GROUP;
use crate::records::{
    MemberReceipt, MessageKind, MessageRecord, OutboxRecord, RECORD_VERSION, Status,
};
use crate::sender_key::{Distribution, ReceivedKey, SenderKey};
use crate::store::{Scan, Store, Table};

/// Sender keys kept per (group, member device): the current one and the one before, so a
/// message sent just before a rotation still opens.
const RECEIVED_KEYS_KEPT: usize = 2;

/// A conversation id: 64 hex digits (a peer's account id or a group id).
pub(crate) fn parse_conversation(id: &str) -> Result<Id, ClientError> {
    let bytes = hex::decode(id.trim())
        .map_err(|_| ClientError::InvalidArgument("a conversation id is 64 hex digits".into()))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::InvalidArgument("a conversation id is 64 hex digits".into()))
}

/// Delivered receipts owed after a batch: (author account, group id or empty, message ids).
pub(crate) type OwedReceipts = Vec<(AccountId, Vec<u8>, Vec<Vec<u8>>)>;

/// Adds a message id to the receipts owed to `author`.
pub(crate) fn owe_receipt(owed: &mut OwedReceipts, author: AccountId, group: &[u8], id: Vec<u8>) {
    match owed.iter_mut().find(|(a, g, _)| *a == author && g == group) {
        Some((_, _, ids)) => ids.push(id),
        None => owed.push((author, group.to_vec(), vec![id])),
    }
}

impl Client {
    /// Creates a group with this account as its admin and `members` (account ids) in it.
    /// Returns the group id, which also names its conversation.
    pub async fn create_group(
        &self,
        name: &str,
        description: &str,
        members: &[String],
    ) -> Result<String, ClientError> {
        let members = members
            .iter()
            .map(|m| super::account::parse_account(m))
            .collect::<Result<Vec<_>, _>>()?;
        if members.len() + 1 > MAX_MEMBERS {
            return Err(GroupError::TooLarge.into());
        }
        let mut id = [0u8; 32];
        rand::rng().fill(&mut id);
        let mut actions = vec![GroupAction::text(ActionKind::Rename, name)];
        if !description.is_empty() {
            actions.push(GroupAction::text(ActionKind::Describe, description));
        }
        let mut core = self.inner.lock_for_app().await;
        let me = core.me();
        for m in &members {
            if *m != me && !actions.iter().any(|a| a.account == m.as_slice()) {
                actions.push(GroupAction::about(ActionKind::Add, m));
            }
        }
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        issue_change(&mut core, &mut tx, id, actions, true).await?;
        tx.put_touched_groups(&core);
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(hex::encode(id))
    }

    /// Adds members (admins only).
    pub async fn add_group_members(
        &self,
        group: &str,
        members: &[String],
    ) -> Result<(), ClientError> {
        let mut actions = Vec::new();
        for m in members {
            actions.push(GroupAction::about(ActionKind::Add, &super::account::parse_account(m)?));
        }
        self.change_group(group, actions).await
    }

    /// Removes a member (admins only). Every remaining device rotates its sender key before
    /// its next message, so the removed member reads nothing sent after this.
    pub async fn remove_group_member(&self, group: &str, member: &str) -> Result<(), ClientError> {
        let m = super::account::parse_account(member)?;
        self.change_group(group, vec![GroupAction::about(ActionKind::Remove, &m)]).await
    }

    /// Leaves a group. If this account was its last admin, the member with the smallest
    /// account id becomes admin.
    pub async fn leave_group(&self, group: &str) -> Result<(), ClientError> {
        let me = self.inner.lock_for_app().await.me();
        self.change_group(group, vec![GroupAction::about(ActionKind::Leave, &me)]).await
    }

    /// Makes a member an admin (admins only).
    pub async fn promote_group_member(&self, group: &str, member: &str) -> Result<(), ClientError> {
        let m = super::account::parse_account(member)?;
        self.change_group(group, vec![GroupAction::about(ActionKind::Promote, &m)]).await
    }

    /// Makes an admin a plain member (admins only; a group keeps at least one admin).
    pub async fn demote_group_member(&self, group: &str, member: &str) -> Result<(), ClientError> {
        let m = super::account::parse_account(member)?;
        self.change_group(group, vec![GroupAction::about(ActionKind::Demote, &m)]).await
    }

    /// Renames a group (admins only).
    pub async fn rename_group(&self, group: &str, name: &str) -> Result<(), ClientError> {
        self.change_group(group, vec![GroupAction::text(ActionKind::Rename, name)]).await
    }

    /// Sets a group's description (admins only).
    pub async fn set_group_description(
        &self,
        group: &str,
        description: &str,
    ) -> Result<(), ClientError> {
        self.change_group(group, vec![GroupAction::text(ActionKind::Describe, description)]).await
    }

    async fn change_group(
        &self,
        group: &str,
        actions: Vec<GroupAction>,
    ) -> Result<(), ClientError> {
        let id = parse_conversation(group)?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        issue_change(&mut core, &mut tx, id, actions, false).await?;
        tx.put_touched_groups(&core);
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(())
    }

    /// The groups this device knows (including ones this account left), by name.
    pub async fn groups(&self) -> Result<Vec<GroupView>, ClientError> {
        let rows = self.inner.store.scan(Scan::prefix(Table::Groups, b"")).await?;
        let mut core = self.inner.lock_for_app().await;
        let mut out = Vec::new();
        for (k, sealed) in rows {
            let rec = <crate::records::GroupRecord as crate::records::Record>::from_bytes(
                &self.inner.vault.open(Table::Groups, &k, &sealed)?,
            )?;
            let Ok(id) = Id::try_from(rec.group_id.as_slice()) else { continue };
            let me = core.me();
            if let Some(g) =
                core.group_mut(self.inner.store.as_ref(), &self.inner.vault, &id).await?
                && let Some(v) = view(g, &me)
            {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.group_id.cmp(&b.group_id)));
        Ok(out)
    }

    /// One group: its name, members and admins.
    pub async fn group(&self, group: &str) -> Result<GroupView, ClientError> {
        let id = parse_conversation(group)?;
        let mut core = self.inner.lock_for_app().await;
        let me = core.me();
        let g = core
            .group_mut(self.inner.store.as_ref(), &self.inner.vault, &id)
            .await?
            .ok_or(GroupError::UnknownGroup)?;
        view(g, &me).ok_or_else(|| GroupError::UnknownGroup.into())
    }

    /// Per-member receipts of an outgoing group message.
    pub async fn group_receipts(&self, message_id: &str) -> Result<GroupReceipts, ClientError> {
        let id = hex::decode(message_id.trim())
            .map_err(|_| ClientError::InvalidArgument("a message id is 32 hex digits".into()))?;
        let mut core = self.inner.lock_for_app().await;
        let mut tx = Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        let (_, m) = tx
            .message(&id)
            .await?
            .ok_or_else(|| ClientError::InvalidArgument("unknown message".into()))?;
        let gid = Id::try_from(m.conversation.as_slice()).map_err(|_| GroupError::UnknownGroup)?;
        let me = core.me();
        let g = core
            .group_mut(self.inner.store.as_ref(), &self.inner.vault, &gid)
            .await?
            .ok_or(GroupError::UnknownGroup)?;
        let state = g.state().ok_or(GroupError::UnknownGroup)?;
        let others: Vec<&Id> = state.members.keys().filter(|a| **a != me).collect();
        let status_of =
            |a: &Id| m.receipts.iter().find(|r| r.account == a.as_slice()).map_or(0, |r| r.status);
        Ok(GroupReceipts {
            members: u32::try_from(others.len()).unwrap_or(u32::MAX),
            delivered_to: others
                .iter()
                .filter(|a| status_of(a) >= Status::Delivered as i32)
                .map(hex::encode)
                .collect(),
            read_by: others
                .iter()
                .filter(|a| status_of(a) >= Status::Read as i32)
                .map(hex::encode)
                .collect(),
        })
    }
}

fn view(g: &GroupEntry, me: &Id) -> Option<GroupView> {
    let s = g.state()?;
    Some(GroupView {
        group_id: hex::encode(s.id),
        name: s.name.clone(),
        description: s.description.clone(),
        epoch: s.epoch,
        members: s
            .members
            .iter()
            .map(|(a, admin)| GroupMemberView { account_id: hex::encode(a), admin: *admin })
            .collect(),
        am_member: s.is_member(me),
        am_admin: s.is_admin(me),
    })
}

/// Signs a change by this device, applies it to the local log (refused: typed error, nothing
/// changed), records it in the timeline and queues it for every member device (and those of
/// members it removes). `create` makes a new group from it.
pub(crate) async fn issue_change(
    core: &mut Core,
    tx: &mut Tx<'_>,
    group: Id,
    actions: Vec<GroupAction>,
    create: bool,
) -> Result<(), ClientError> {
    let me = core.me();
    let device = core.device_id();
    let before = match create {
        true => None,
        false => {
            let g = core
                .group_mut(tx.store, tx.vault, &group)
                .await?
                .ok_or(GroupError::UnknownGroup)?;
            let state = g.state().ok_or(GroupError::UnknownGroup)?.clone();
            if !state.is_member(&me) {
                return Err(GroupError::NotAMember.into());
            }
            Some(state)
        }
    };
    let clock = core.account.clock + 1;
    let body = ChangeBody {
        group_id: group.to_vec(),
        epoch: before.as_ref().map_or(0, |s| s.epoch + 1),
        parent: before.as_ref().map_or([0; 32], |s| s.head).to_vec(),
        author: me.to_vec(),
        author_device: device,
        clock,
        at_ms: crate::runtime::now_ms(),
        actions,
    };
    let identity = core.identity.public().to_bytes();
    let signed = SignedGroupChange::sign(&body, identity, |m| core.identity.sign(m));
    let v = signed.verify()?;
    let after = match &before {
        None => {
            let s = crate::group::genesis(&v)?;
            core.groups.insert(group, GroupEntry::new(s.clone()));
            s
        }
        Some(_) => {
            let g = core
                .group_mut(tx.store, tx.vault, &group)
                .await?
                .ok_or(GroupError::UnknownGroup)?;
            let log = g.log.as_mut().ok_or(GroupError::UnknownGroup)?;
            log.receive(&v)?;
            log.state().clone()
        }
    };
    core.account.clock = clock;
    let empty = GroupState { members: Default::default(), ..after.clone() };
    let before = before.unwrap_or(empty);
    let removed: Vec<Vec<u8>> =
        before.members.keys().filter(|a| !after.is_member(a)).map(|a| a.to_vec()).collect();
    // New members get the state with the change; on a creation, so do our other devices.
    let added: Vec<Vec<u8>> = after
        .members
        .keys()
        .filter(|a| !before.is_member(a) && (**a != me || create))
        .map(|a| a.to_vec())
        .collect();
    let timeline_id = add_timeline_entry(tx, &v, true).await?;
    // Members it adds have no state yet: the state after it travels with it, once, in the
    // shared payload.
    let snapshot = (!added.is_empty()).then(|| after.snapshot());
    let content = Content::new(Body::GroupUpdate(GroupUpdate { change: Some(signed), snapshot }));
    let g = core.groups.get_mut(&group).ok_or(GroupError::UnknownGroup)?;
    let mut record = encrypt_for_group(g, &content)?;
    // Rotate after this change (which removed members may still read), before the next one.
    if !removed.is_empty() {
        g.rotate = true;
    }
    // Everyone it concerns, fixed now: the members before and after it.
    let mut recipients: Vec<Vec<u8>> = after.members.keys().map(|a| a.to_vec()).collect();
    recipients.extend(removed);
    record.recipients = recipients;
    record.message_id = timeline_id;
    super::outbox::enqueue(core, tx, &record);
    tx.touch_group(group);
    tx.events.push(Event::GroupChanged { group: hex::encode(group) });
    Ok(())
}

/// Sends a text to a group: into history and the outbox in one commit (the caller commits).
pub(crate) async fn queue_group_text(
    core: &mut Core,
    tx: &mut Tx<'_>,
    group: Id,
    text: content::Text,
) -> Result<(), ClientError> {
    let me = core.me();
    let device = core.device_id();
    let g = core.group_mut(tx.store, tx.vault, &group).await?.ok_or(GroupError::UnknownGroup)?;
    if !g.state().ok_or(GroupError::UnknownGroup)?.is_member(&me) {
        return Err(GroupError::NotAMember.into());
    }
    let mut record = encrypt_for_group(g, &Content::new(Body::Text(text.clone())))?;
    record.message_id.clone_from(&text.id);
    let m = MessageRecord {
        version: RECORD_VERSION,
        id: text.id,
        conversation: group.to_vec(),
        sender: me.to_vec(),
        sender_device: device,
        clock: text.clock,
        body: text.body,
        attachment: text.attachment.clone(),
        sent_at_ms: text.sent_at_ms,
        outgoing: true,
        status: Status::Pending as i32,
        ..Default::default()
    };
    super::history::store_message(tx, m, false).await?;
    super::outbox::enqueue(core, tx, &record);
    tx.touch_group(group);
    Ok(())
}

/// Encrypts a content once under this device's sender key for the group (rotating first if a
/// member or device left), and returns the outbox record that sends it.
fn encrypt_for_group(g: &mut GroupEntry, content: &Content) -> Result<OutboxRecord, ClientError> {
    if g.rotate || g.my_key.is_none() {
        let key_id = rand::rng().random::<u32>();
        g.my_key = Some(SenderKey::generate(&mut rand::rng(), g.id, key_id));
        g.key_holders.clear();
        g.rotate = false;
    }
    let key = g.my_key.as_mut().ok_or(GroupError::UnknownGroup)?;
    let distribution = key.distribution().encode().to_vec();
    let key_id = key.header().key_id;
    let message = key
        .encrypt(&content.to_bytes())
        .map_err(|e| ClientError::Protocol(format!("group encrypt: {e}")))?;
    Ok(OutboxRecord {
        version: RECORD_VERSION,
        group_id: g.id.to_vec(),
        group_payload: [&[crate::message::MESSAGE_VERSION, TYPE_GROUP][..], &message].concat(),
        group_key_id: key_id,
        group_distribution: distribution,
        ..Default::default()
    })
}

/// Adds a change to the timeline; returns the entry's id.
async fn add_timeline_entry(
    tx: &mut Tx<'_>,
    v: &Verified,
    outgoing: bool,
) -> Result<Vec<u8>, ClientError> {
    let id = v.hash.get(..MESSAGE_ID_LEN).unwrap_or_default().to_vec();
    let m = MessageRecord {
        version: RECORD_VERSION,
        id: id.clone(),
        conversation: v.body.group_id.clone(),
        sender: v.body.author.clone(),
        sender_device: v.body.author_device,
        clock: v.body.clock,
        body: describe(&v.body),
        sent_at_ms: v.body.at_ms,
        outgoing,
        status: if outgoing { Status::Pending } else { Status::Seen } as i32,
        kind: MessageKind::GroupEvent as i32,
        ..Default::default()
    };
    super::history::store_message(tx, m, false).await?;
    Ok(id)
}

/// A change in words, with accounts as their first 8 hex digits (apps show names instead,
/// from the members list).
pub(crate) fn describe(b: &ChangeBody) -> String {
    let short = |a: &[u8]| hex::encode(a.get(..4).unwrap_or_default());
    let author = short(&b.author);
    let parts: Vec<String> = b
        .actions
        .iter()
        .map(|a| match ActionKind::try_from(a.kind).unwrap_or(ActionKind::Unspecified) {
            ActionKind::Add => format!("added {}", short(&a.account)),
            ActionKind::Remove => format!("removed {}", short(&a.account)),
            ActionKind::Promote => format!("made {} an admin", short(&a.account)),
            ActionKind::Demote => format!("made {} a member", short(&a.account)),
            ActionKind::Rename if b.epoch == 0 => format!("created the group \"{}\"", a.text),
            ActionKind::Rename => format!("renamed the group \"{}\"", a.text),
            ActionKind::Describe => "changed the description".to_owned(),
            ActionKind::Leave => "left".to_owned(),
            ActionKind::Unspecified => "did something".to_owned(),
        })
        .collect();
    format!("{author} {}", parts.join(", "))
}

/// A group message (envelope type 0x03) from `sender`: opens it with the sender's key.
/// Returns the group and the content, or the code of why not (state unchanged).
pub(crate) async fn open_group_message(
    core: &mut Core,
    tx: &mut Tx<'_>,
    sender: (AccountId, u32),
    message: &[u8],
    checked: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Result<(Id, Vec<u8>), crate::sender_key::SenderKeyError>, ClientError> {
    let header = match crate::sender_key::peek_header(message) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let group = header.group_id;
    let keys = core.received_keys_mut(tx.store, tx.vault, (group, sender.0, sender.1)).await?;
    let Some(key) = keys.iter_mut().find(|k| k.header().key_id == header.key_id) else {
        return Ok(Err(crate::sender_key::SenderKeyError::WrongKey));
    };
    let opened = key.decrypt_checked(message, checked);
    if opened.is_ok() {
        tx.touch_received_keys((group, sender.0, sender.1));
    }
    Ok(opened.map(|p| (group, p)))
}

/// Group-message signatures of a delivery batch found valid, by position among the batch's
/// deliveries: the key each one verified under. [`open_group_message`] skips its own check for
/// these when that key is its chain's.
#[derive(Default)]
pub(crate) struct Checked(Vec<Option<ed25519_dalek::VerifyingKey>>);

impl Checked {
    /// The key the delivery at `position` verified under, if it was checked and valid.
    pub(crate) fn get(&self, position: usize) -> Option<&ed25519_dalek::VerifyingKey> {
        self.0.get(position).and_then(Option::as_ref)
    }

    /// Records the checked `(position, key)` pairs whose answer in `valid` (same order) is yes.
    fn record(
        &mut self,
        checked: impl IntoIterator<Item = (usize, ed25519_dalek::VerifyingKey)>,
        valid: impl IntoIterator<Item = bool>,
    ) {
        for ((position, key), valid) in checked.into_iter().zip(valid) {
            if !valid {
                continue;
            }
            if self.0.len() <= position {
                self.0.resize(position + 1, None);
            }
            if let Some(slot) = self.0.get_mut(position) {
                *slot = Some(key);
            }
        }
    }
}

/// Checks up front the signatures of a batch's group messages whose sender keys this device
/// already holds and that `ahead` hasn't checked yet: together (batches per key,
/// [`crate::signatures`]), half of them on a second core where there is one. Returns every
/// valid one, `ahead`'s included; a message left out (a key that comes later in the batch, a
/// bad signature) is checked in [`open_group_message`], one by one, as before.
pub(crate) async fn check_signatures(
    core: &mut Core,
    tx: &mut Tx<'_>,
    batch: &[hush_protocol::wire::Delivery],
    ahead: Checked,
) -> Result<Checked, ClientError> {
    let mut items = Vec::new();
    for (i, d) in batch.iter().enumerate() {
        if ahead.get(i).is_some() {
            continue;
        }
        let Some((slot, key_id, message)) = signed_by(d) else { continue };
        let keys = core.received_keys_mut(tx.store, tx.vault, slot).await?;
        if let Some(k) = keys.iter().find(|k| k.header().key_id == key_id) {
            items.push((i, message, k.verifying_key()));
        }
    }
    let list: Vec<(&[u8], ed25519_dalek::VerifyingKey)> =
        items.iter().map(|(_, m, k)| (*m, *k)).collect();
    let (first, second) = list.split_at(list.len() / 2);
    let (a, b) = crate::runtime::join(
        || crate::sender_key::verify_all(first),
        || crate::sender_key::verify_all(second),
    );
    let mut checked = ahead;
    checked.record(items.into_iter().map(|(i, _, key)| (i, key)), a.into_iter().chain(b));
    Ok(checked)
}

/// Starts checking, on a thread beside the delivery pipeline, the signatures of a batch taken
/// ahead of the one being prepared: those under sender keys already in memory (a key that
/// arrives in an earlier batch, or is still on disk, is left to [`check_signatures`]). Positions
/// count the batch's deliveries only, as [`check_signatures`] does. `None` when there is
/// nothing to check or no thread for it.
pub(crate) fn check_ahead(
    core: &Core,
    pushes: &std::sync::Arc<Vec<hush_protocol::wire::server_push::Body>>,
) -> Option<tokio::sync::oneshot::Receiver<Checked>> {
    let mut items = Vec::new();
    for (i, d) in deliveries(pushes).enumerate() {
        let Some((slot, key_id, _)) = signed_by(d) else { continue };
        let Some(keys) = core.received_keys.get(&slot) else { continue };
        if let Some(k) = keys.iter().find(|k| k.header().key_id == key_id) {
            items.push((i, k.verifying_key()));
        }
    }
    if items.is_empty() {
        return None;
    }
    // The thread shares the batch rather than copying it; it lets go before it answers, so the
    // pipeline gets the batch back whole once it has the answer.
    let pushes = std::sync::Arc::clone(pushes);
    crate::runtime::beside(move || {
        let valid = {
            let messages: Vec<&hush_protocol::wire::Delivery> = deliveries(&pushes).collect();
            let list: Vec<(&[u8], ed25519_dalek::VerifyingKey)> = items
                .iter()
                .filter_map(|(i, key)| {
                    let (_, _, message) = signed_by(messages.get(*i)?)?;
                    Some((message, *key))
                })
                .collect();
            crate::sender_key::verify_all(&list)
        };
        drop(pushes);
        let mut checked = Checked::default();
        checked.record(items, valid);
        checked
    })
}

/// The deliveries among a batch's pushes, in order (the positions [`Checked`] counts).
fn deliveries(
    pushes: &[hush_protocol::wire::server_push::Body],
) -> impl Iterator<Item = &hush_protocol::wire::Delivery> {
    use hush_protocol::wire::server_push::Body;
    pushes.iter().filter_map(|p| match p {
        Body::Delivery(d) => Some(d),
        _ => None,
    })
}

/// Whose sender keys: group, member account, device.
type KeySlot = (Id, AccountId, u32);

/// A delivery's group message: the sender-key slot and key id it names, and its bytes.
fn signed_by(d: &hush_protocol::wire::Delivery) -> Option<(KeySlot, u32, &[u8])> {
    let message = crate::message::group_message(&d.payload)?;
    let sender = AccountId::try_from(d.sender_account.as_slice()).ok()?;
    let header = crate::sender_key::peek_header(message).ok()?;
    Some(((header.group_id, sender, d.sender_device), header.key_id, message))
}

/// A pairwise [`GroupKey`] from `sender`: keeps the key, if the sender may hold one (a member
/// of the state held; anyone for a group this device doesn't know yet, whose state then comes
/// with the change that adds us, or from our own devices, which are asked for it).
pub(crate) async fn receive_group_key(
    core: &mut Core,
    tx: &mut Tx<'_>,
    sender: (AccountId, u32),
    k: &GroupKey,
) -> Result<(), ClientError> {
    let report = |tx: &mut Tx<'_>, code: &str, message: String| {
        tx.events.push(Event::Error { code: code.into(), message });
    };
    let d = match Distribution::decode(&k.distribution) {
        Ok(d) => d,
        Err(e) => {
            report(tx, e.code(), e.to_string());
            return Ok(());
        }
    };
    let group = d.header.group_id;
    match core.group_mut(tx.store, tx.vault, &group).await? {
        Some(g) => {
            if let Some(s) = g.state()
                && !s.is_member(&sender.0)
            {
                report(
                    tx,
                    "not_a_member",
                    "a sender key from a device that is not a member".into(),
                );
                return Ok(());
            }
        }
        None => {
            core.groups.insert(group, GroupEntry::unknown(group));
            tx.touch_group(group);
            request_sync(core, tx, group);
        }
    }
    let slot = (group, sender.0, sender.1);
    let keys = core.received_keys_mut(tx.store, tx.vault, slot).await?;
    if keys.iter().any(|r| r.header().key_id == d.header.key_id) {
        return Ok(());
    }
    match ReceivedKey::new(&d) {
        Ok(fresh) => {
            keys.insert(0, fresh);
            keys.truncate(RECEIVED_KEYS_KEPT);
            tx.touch_received_keys(slot);
        }
        Err(e) => report(tx, e.code(), e.to_string()),
    }
    Ok(())
}

/// Applies the content of a group message from `sender`.
pub(crate) async fn apply_group_content(
    core: &mut Core,
    tx: &mut Tx<'_>,
    group: Id,
    sender: (AccountId, u32),
    content: Content,
    owed: &mut OwedReceipts,
) -> Result<(), ClientError> {
    let me = core.me();
    let from_me = sender.0 == me;
    match content.body {
        Some(Body::Text(t)) => {
            let known = core.group_mut(tx.store, tx.vault, &group).await?;
            if let Some(s) = known.as_ref().and_then(|g| g.state())
                && !s.is_member(&sender.0)
            {
                tx.events.push(Event::Error {
                    code: "not_a_member".into(),
                    message: "a group message from someone who is not a member".into(),
                });
                return Ok(());
            }
            if !t.is_valid() {
                tx.events.push(Event::Error {
                    code: "malformed_content".into(),
                    message: "a message with a bad id or an oversize text".into(),
                });
                return Ok(());
            }
            core.account.clock = core.account.clock.max(t.clock);
            let m = MessageRecord {
                version: RECORD_VERSION,
                id: t.id,
                conversation: group.to_vec(),
                sender: sender.0.to_vec(),
                sender_device: sender.1,
                clock: t.clock,
                body: t.body,
                attachment: t.attachment,
                sent_at_ms: t.sent_at_ms,
                outgoing: from_me,
                status: if from_me { Status::Sent } else { Status::Received } as i32,
                ..Default::default()
            };
            let id = m.id.clone();
            if super::history::store_message(tx, m, !from_me).await? && !from_me {
                owe_receipt(owed, sender.0, &group, id);
            }
        }
        Some(Body::Typing(t)) if !from_me => {
            let known = core.group_mut(tx.store, tx.vault, &group).await?;
            let event = match known.as_ref().and_then(|g| g.state()) {
                Some(s) if s.is_member(&sender.0) => Event::Typing {
                    conversation: hex::encode(group),
                    from: hex::encode(sender.0),
                    started: t.started,
                },
                _ => Event::Error {
                    code: "not_a_member".into(),
                    message: "a typing indicator from someone who is not a member".into(),
                },
            };
            tx.events.push(event);
        }
        Some(Body::GroupUpdate(u)) => {
            let Some(signed) = u.change else { return Ok(()) };
            if let Err(e) = receive_change(core, tx, group, sender, &signed, u.snapshot).await? {
                tx.events.push(Event::Error { code: e.code().into(), message: e.to_string() });
            }
        }
        // Other kinds (from newer clients) are ignored.
        _ => {}
    }
    Ok(())
}

/// Checks and applies a received change. The outer error is a storage failure; the inner one
/// is why the change was refused (nothing changed).
async fn receive_change(
    core: &mut Core,
    tx: &mut Tx<'_>,
    group: Id,
    sender: (AccountId, u32),
    signed: &SignedGroupChange,
    snapshot: Option<crate::group::GroupSnapshot>,
) -> Result<Result<(), GroupError>, ClientError> {
    let v = match signed.verify() {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    // The author is the device that sent it, with the identity its account signed.
    let signed_identity =
        core.known_list(&sender.0).and_then(|l| l.device(sender.1).map(|d| d.identity.to_bytes()));
    if v.body.group_id != group
        || v.body.author != sender.0
        || v.body.author_device != sender.1
        || signed_identity != Some(v.identity)
    {
        return Ok(Err(GroupError::BadSignature));
    }
    // Lamport: whatever this device writes next sorts after the change.
    core.account.clock = core.account.clock.max(v.body.clock);
    let me = core.me();
    let my_device = core.device_id();
    let entry = core.group_mut(tx.store, tx.vault, &group).await?;
    let known = entry.as_ref().is_some_and(|g| g.log.is_some());
    let refused = match entry.and_then(|g| g.log.as_mut()) {
        Some(log) if snapshot.is_some() => log.clone().receive(&v).err(),
        _ => None,
    };
    // Our state can't take it but it comes with a snapshot (a change that adds us, built on a
    // fork we were added on and that lost): take the snapshot, as when we first joined.
    let readopt = matches!(refused, Some(GroupError::WrongEpoch { .. }));
    if !known || readopt {
        // Unknown state: adopt the snapshot the author sent with the change that adds us.
        let Some(state) = snapshot.as_ref().and_then(|s| GroupState::from_snapshot(s).ok()) else {
            return Ok(Err(GroupError::UnknownGroup));
        };
        if state.id != group || state.head != v.hash || !state.is_member(&me) {
            return Ok(Err(GroupError::UnknownGroup));
        }
        let keep = core.groups.remove(&group);
        let mut g = GroupEntry::new(state);
        if let Some(old) = keep {
            g.my_key = old.my_key;
            g.key_holders = old.key_holders;
            g.rotate = true;
        }
        core.groups.insert(group, g);
        add_timeline_entry(tx, &v, false).await?;
        tx.touch_group(group);
        tx.events.push(Event::GroupChanged { group: hex::encode(group) });
        return Ok(Ok(()));
    }
    let Some(log) = core.groups.get_mut(&group).and_then(|g| g.log.as_mut()) else {
        return Ok(Err(GroupError::UnknownGroup));
    };
    let before = log.state().clone();
    let outcome = match log.receive(&v) {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let after = log.state().clone();
    let mut rebase = Vec::new();
    match &outcome {
        Outcome::Duplicate => return Ok(Ok(())),
        Outcome::Beaten => {
            if v.body.author == me && v.body.author_device == my_device {
                rebase.push(v.clone());
            }
        }
        Outcome::Applied => {
            add_timeline_entry(tx, &v, v.body.author == me).await?;
        }
        Outcome::Reorganized { dropped } => {
            for d in dropped {
                tx.delete_message(d.hash.get(..MESSAGE_ID_LEN).unwrap_or_default()).await?;
                if d.body.author == me && d.body.author_device == my_device {
                    rebase.push(d.clone());
                }
            }
            add_timeline_entry(tx, &v, v.body.author == me).await?;
        }
    }
    if let Some(g) = core.groups.get_mut(&group) {
        let lost_member = before.members.keys().any(|a| !after.is_member(a));
        if lost_member || matches!(outcome, Outcome::Reorganized { .. }) {
            g.rotate = true;
        }
    }
    tx.touch_group(group);
    tx.events.push(Event::GroupChanged { group: hex::encode(group) });
    // Our change lost to a concurrent one: do again what still applies, on top of the winner.
    for lost in rebase {
        let Some(state) = core.groups.get(&group).and_then(|g| g.state()).cloned() else { break };
        let mut still = Vec::new();
        let mut s = state.clone();
        for a in lost.body.actions.clone() {
            let probe = Verified {
                hash: [0; 32],
                body: ChangeBody {
                    epoch: s.epoch + 1,
                    parent: s.head.to_vec(),
                    actions: vec![a.clone()],
                    ..lost.body.clone()
                },
                identity: lost.identity,
                signed: SignedGroupChange::default(),
            };
            if let Ok(next) = crate::group::validate(&s, &probe) {
                s = GroupState { epoch: s.epoch, head: s.head, ..next };
                still.push(a);
            }
        }
        if !still.is_empty() {
            issue_change(core, tx, group, still, false).await?;
        }
    }
    Ok(Ok(()))
}

/// A group message's receipt from a member: records it per member, and moves the message to
/// delivered / read once every current member has.
pub(crate) async fn apply_group_receipt(
    core: &mut Core,
    tx: &mut Tx<'_>,
    sender: AccountId,
    r: &content::Receipt,
    status: Status,
) -> Result<(), ClientError> {
    let Ok(group) = Id::try_from(r.group_id.as_slice()) else { return Ok(()) };
    let me = core.me();
    let Some(state) =
        core.group_mut(tx.store, tx.vault, &group).await?.and_then(|g| g.state().cloned())
    else {
        return Ok(());
    };
    if !state.is_member(&sender) {
        return Ok(());
    }
    for id in r.ids.iter().take(10_000) {
        let Some((key, mut m)) = tx.message(id).await? else { continue };
        if !m.outgoing || m.conversation != group || m.status == Status::Failed as i32 {
            continue;
        }
        match m.receipts.iter_mut().find(|x| x.account == sender) {
            Some(x) if x.status >= status as i32 => continue,
            Some(x) => x.status = status as i32,
            None => {
                m.receipts.push(MemberReceipt { account: sender.to_vec(), status: status as i32 })
            }
        }
        let least = state
            .members
            .keys()
            .filter(|a| **a != me)
            .map(|a| m.receipts.iter().find(|x| x.account == a).map_or(0, |x| x.status))
            .min()
            .unwrap_or(0);
        if least > m.status && least >= Status::Delivered as i32 {
            let to = Status::try_from(least).unwrap_or(Status::Delivered);
            tx.set_status(key, m, to);
        } else {
            tx.put_message(key, m, false);
        }
    }
    Ok(())
}

/// A [`GroupSync`] from another of our devices: answer a request with the state, or adopt a
/// state for a group this device doesn't know yet.
pub(crate) async fn apply_group_sync(
    core: &mut Core,
    tx: &mut Tx<'_>,
    s: GroupSync,
) -> Result<(), ClientError> {
    let Ok(group) = Id::try_from(s.group_id.as_slice()) else { return Ok(()) };
    let known = core.group_mut(tx.store, tx.vault, &group).await?;
    let state = known.as_ref().and_then(|g| g.state().cloned());
    match (s.snapshot, state) {
        (None, Some(state)) => {
            let content = Content::new(Body::GroupSync(GroupSync {
                group_id: group.to_vec(),
                snapshot: Some(state.snapshot()),
            }));
            let record = OutboxRecord {
                version: RECORD_VERSION,
                own_content: content.to_bytes(),
                ..Default::default()
            };
            super::outbox::enqueue(core, tx, &record);
        }
        (Some(snapshot), None) => {
            let Ok(state) = GroupState::from_snapshot(&snapshot) else { return Ok(()) };
            if state.id != group {
                return Ok(());
            }
            let keep = core.groups.remove(&group);
            let mut g = GroupEntry::new(state);
            if let Some(old) = keep {
                g.my_key = old.my_key;
            }
            core.groups.insert(group, g);
            tx.touch_group(group);
            tx.events.push(Event::GroupChanged { group: hex::encode(group) });
        }
        _ => {}
    }
    Ok(())
}

/// Asks our own other devices for a group's state.
fn request_sync(core: &mut Core, tx: &mut Tx<'_>, group: Id) {
    let content =
        Content::new(Body::GroupSync(GroupSync { group_id: group.to_vec(), snapshot: None }));
    let record = OutboxRecord {
        version: RECORD_VERSION,
        own_content: content.to_bytes(),
        ..Default::default()
    };
    super::outbox::enqueue(core, tx, &record);
}

/// Read receipts for group messages: one per author account, with the group id.
pub(crate) async fn read_receipts(
    core: &mut Core,
    tx: &mut Tx<'_>,
    group: Id,
    ids: &[Vec<u8>],
) -> Result<(), ClientError> {
    let mut by_author: OwedReceipts = Vec::new();
    for id in ids {
        if let Some((_, m)) = tx.message(id).await?
            && let Ok(author) = AccountId::try_from(m.sender.as_slice())
        {
            owe_receipt(&mut by_author, author, &group, id.clone());
        }
    }
    for (author, g, ids) in by_author {
        queue_receipt(core, tx, author, g, ids, content::ReceiptKind::Read);
    }
    Ok(())
}

/// Queues a receipt to an author account (all its devices).
pub(crate) fn queue_receipt(
    core: &mut Core,
    tx: &mut Tx<'_>,
    author: AccountId,
    group: Vec<u8>,
    ids: Vec<Vec<u8>>,
    kind: content::ReceiptKind,
) {
    let record = OutboxRecord {
        version: RECORD_VERSION,
        peer_content: Content::new(Body::Receipt(content::Receipt {
            kind: kind as i32,
            ids,
            group_id: group,
        }))
        .to_bytes(),
        peer: author.to_vec(),
        ..Default::default()
    };
    super::outbox::enqueue(core, tx, &record);
}

/// Whether `conversation` is a group this device knows.
pub(crate) async fn is_group(
    core: &mut Core,
    store: &dyn Store,
    vault: &crate::vault::Vault,
    conversation: &Id,
) -> Result<bool, ClientError> {
    Ok(core.group_mut(store, vault, conversation).await?.is_some())
}
