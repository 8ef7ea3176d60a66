//! The app's calls on a conversation: sending a text (into history and the outbox in one
//! commit), cancelling a pending send, marking read, typing indicators.

use rand::RngExt;

use super::account::parse_account;
use super::core::{AccountId, Core, Tx};
use super::error::ClientError;
use super::handle::Client;
use crate::content::{self, Content, MAX_TEXT_CHARS, MESSAGE_ID_LEN};
use crate::records::{MessageRecord, OutboxRecord, RECORD_VERSION, Status, Trust};

impl Client {
    /// Sends a text. Returns the message id once the message is in history and in the durable
    /// outbox; delivery happens in the background (watch [`Event::StatusChanged`]).
    pub async fn send_text(&self, conversation: &str, text: &str) -> Result<String, ClientError> {
        if text.is_empty() {
            return Err(ClientError::InvalidArgument("the text is empty".into()));
        }
        let mut id = [0u8; MESSAGE_ID_LEN];
        rand::rng().fill(&mut id);
        self.send_message(conversation, id, text, None).await
    }

    /// Queues a message (a text, or a caption with an attachment already uploaded) under `id`:
    /// stored as pending and sent by the outbox, as [`Self::send_text`] describes.
    pub(crate) async fn send_message(
        &self,
        conversation: &str,
        id: [u8; MESSAGE_ID_LEN],
        text: &str,
        attachment: Option<content::Attachment>,
    ) -> Result<String, ClientError> {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ClientError::TextTooLong { chars, limit: MAX_TEXT_CHARS });
        }
        let peer = super::groups::parse_conversation(conversation)?;
        let mut core = self.inner.lock_for_app().await;
        let (store, vault) = (self.inner.store.as_ref(), &self.inner.vault);
        let group = super::groups::is_group(&mut core, store, vault, &peer).await?;
        if !group {
            parse_account(conversation)?;
            let contact = core.contacts.get(&peer).ok_or(ClientError::UnknownContact)?;
            if contact.trust == Trust::Changed as i32 {
                return Err(ClientError::IdentityChanged);
            }
        }
        core.account.clock += 1;
        let mut tx = Tx::new(store, vault);
        if attachment.is_some() {
            // The upload this message's file came from (if any) is done once it is queued.
            tx.batch.delete(crate::store::Table::Meta, crate::records::keys::upload(vault, &id));
        }
        let text = content::Text {
            id: id.to_vec(),
            clock: core.account.clock,
            body: text.to_owned(),
            sent_at_ms: crate::runtime::now_ms(),
            attachment,
        };
        if group {
            super::groups::queue_group_text(&mut core, &mut tx, peer, text).await?;
            tx.put_touched_groups(&core);
        } else {
            queue_text(&mut core, &mut tx, peer, text).await?;
        }
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(hex::encode(id))
    }

    /// Gives up on an outgoing message that is still pending (a relay that stays full, a
    /// recipient whose mailbox stays full…): it is taken out of the outbox and marked
    /// [`MessageStatus::Failed`] with the problem `canceled`. If an attempt is on the wire at
    /// that moment and the relay accepts it, the message ends up sent after all.
    pub async fn cancel_send(&self, message_id: &str) -> Result<(), ClientError> {
        let id = hex::decode(message_id.trim())
            .map_err(|_| ClientError::InvalidArgument("a message id is 32 hex digits".into()))?;
        super::outbox::cancel(&self.inner, &id).await
    }

    /// Marks every incoming message of a conversation read: sends read receipts to the peer and
    /// tells our other devices, so their unread counts clear too.
    pub async fn mark_read(&self, conversation: &str) -> Result<(), ClientError> {
        let peer = super::groups::parse_conversation(conversation)?;
        let mut core = self.inner.lock_for_app().await;
        let (store, vault) = (self.inner.store.as_ref(), &self.inner.vault);
        let group = super::groups::is_group(&mut core, store, vault, &peer).await?;
        let mut tx = Tx::new(store, vault);
        let ids = super::history::mark_seen(&mut tx, &peer, None).await?;
        if ids.is_empty() {
            return Ok(());
        }
        let own = Content::new(content::content::Body::SyncRead(content::SyncRead {
            conversation: peer.to_vec(),
            ids: ids.clone(),
        }))
        .to_bytes();
        let outbox = match group {
            // Receipts go to each author; our devices get one SyncRead.
            true => {
                super::groups::read_receipts(&mut core, &mut tx, peer, &ids).await?;
                OutboxRecord { version: RECORD_VERSION, own_content: own, ..Default::default() }
            }
            false => OutboxRecord {
                version: RECORD_VERSION,
                peer_content: Content::new(content::content::Body::Receipt(content::Receipt {
                    kind: content::ReceiptKind::Read as i32,
                    ids,
                    group_id: Vec::new(),
                }))
                .to_bytes(),
                peer: peer.to_vec(),
                own_content: own,
                ..Default::default()
            },
        };
        super::outbox::enqueue(&mut core, &mut tx, &outbox);
        tx.put_account(&core);
        self.inner.commit_then_emit(tx, core).await?;
        self.inner.outbox_ready.notify_one();
        Ok(())
    }

    /// Tells the conversation's online devices that we started or stopped typing: the peer's in
    /// a 1:1 chat; in a group, the members' (those that hold our current sender key: see
    /// `group_outbox::send_typing`). Ephemeral: never stored by the relay; dropped if we are
    /// offline.
    pub async fn set_typing(&self, conversation: &str, started: bool) -> Result<(), ClientError> {
        let link = || {
            self.inner.current_link().ok_or_else(|| {
                self.inner
                    .last_failure()
                    .unwrap_or_else(|| ClientError::Network("not connected to the relay".into()))
            })
        };
        if let Ok(id) = super::groups::parse_conversation(conversation) {
            let mut core = self.inner.lock_for_app().await;
            let (store, vault) = (self.inner.store.as_ref(), &self.inner.vault);
            if super::groups::is_group(&mut core, store, vault, &id).await? {
                drop(core);
                let link = link()?;
                return super::group_outbox::send_typing(&self.inner, link.as_ref(), id, started)
                    .await;
            }
        }
        let peer = parse_account(conversation)?;
        if !self.inner.lock_for_app().await.contacts.contains_key(&peer) {
            return Err(ClientError::UnknownContact);
        }
        let link = link()?;
        let mut record = OutboxRecord {
            version: RECORD_VERSION,
            peer_content: Content::new(content::content::Body::Typing(content::Typing { started }))
                .to_bytes(),
            peer: peer.to_vec(),
            ephemeral: true,
            ..Default::default()
        };
        super::outbox::deliver(&self.inner, link.as_ref(), None, &mut record).await
    }
}

/// A 1:1 text into history and the outbox (fanned out to the peer's devices and, as a
/// transcript, to our other devices), within the caller's transaction.
async fn queue_text(
    core: &mut Core,
    tx: &mut Tx<'_>,
    peer: AccountId,
    text: content::Text,
) -> Result<(), ClientError> {
    let me = core.me();
    let record = MessageRecord {
        version: RECORD_VERSION,
        id: text.id.clone(),
        conversation: peer.to_vec(),
        sender: me.to_vec(),
        sender_device: core.device_id(),
        clock: text.clock,
        body: text.body.clone(),
        attachment: text.attachment.clone(),
        sent_at_ms: text.sent_at_ms,
        outgoing: true,
        status: Status::Pending as i32,
        problem_code: String::new(),
        problem: String::new(),
        ..Default::default()
    };
    let outbox = OutboxRecord {
        version: RECORD_VERSION,
        peer_content: Content::new(content::content::Body::Text(text.clone())).to_bytes(),
        peer: peer.to_vec(),
        own_content: Content::new(content::content::Body::SyncSent(content::SyncSent {
            conversation: peer.to_vec(),
            text: Some(text),
        }))
        .to_bytes(),
        message_id: record.id.clone(),
        ..Default::default()
    };
    super::history::store_message(tx, record, false).await?;
    super::outbox::enqueue(core, tx, &outbox);
    Ok(())
}
