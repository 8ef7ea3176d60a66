//! Local history: adding a message (once per id) with its conversation summary, and marking
//! incoming messages seen. Used by sending (our own messages), receiving and the app's calls;
//! and the app's queries of history: a conversation's messages, the conversation list, search.

use super::core::{AccountId, Tx};
use super::error::ClientError;
use super::handle::Client;
use super::types::{ConversationView, Event, MessageView, SearchHit};
use crate::records::{ConversationRecord, MessageRecord, PostingsRecord, Record, Status, keys};
use crate::store::{Scan, Store, Table};

/// Characters of the last message kept as the conversation's preview.
const PREVIEW_CHARS: usize = 100;

/// Adds a message to history (unless its id is already there) and updates the conversation.
/// Returns whether it was new.
pub(crate) async fn store_message(
    tx: &mut Tx<'_>,
    m: MessageRecord,
    unread: bool,
) -> Result<bool, ClientError> {
    if tx.message(&m.id).await?.is_some() {
        return Ok(false);
    }
    let key = tx.message_key(&m.conversation, m.clock, &m.id);
    let c = tx.conversation_mut(&m.conversation).await?;
    if unread {
        c.unread += 1;
    }
    if (m.clock, m.id.as_slice()) > (c.last_clock, c.last_id.as_slice()) {
        c.last_clock = m.clock;
        c.last_id.clone_from(&m.id);
        // In place: a catch-up replaces the preview once per message.
        c.last_preview.clear();
        c.last_preview.extend(m.body.chars().take(PREVIEW_CHARS));
        c.last_at_ms = m.sent_at_ms;
    }
    tx.events.push(Event::MessageReceived { message: MessageView::from_record(&m) });
    tx.put_message(key, m, true);
    Ok(true)
}

/// Marks incoming messages seen: the given ids, or every unread one of the conversation.
/// Returns the ids that changed.
pub(crate) async fn mark_seen(
    tx: &mut Tx<'_>,
    conversation: &AccountId,
    ids: Option<Vec<Vec<u8>>>,
) -> Result<Vec<Vec<u8>>, ClientError> {
    let Some(mut c) = tx.conversation(conversation).await? else { return Ok(Vec::new()) };
    let mut candidates = Vec::new();
    match ids {
        Some(ids) => {
            for id in ids.into_iter().take(10_000) {
                if let Some(found) = tx.message(&id).await? {
                    candidates.push(found);
                }
            }
        }
        None => {
            // Unread messages are the newest incoming ones almost always: scan back until all
            // `unread` are found.
            let prefix = keys::conversation_prefix(tx.vault, conversation);
            let mut scan = Scan::prefix(Table::Messages, &prefix);
            scan.reverse = true;
            let mut left = c.unread;
            for (k, sealed) in tx.store.scan(scan).await? {
                if left == 0 {
                    break;
                }
                let m = <MessageRecord as crate::records::Record>::from_bytes(&tx.vault.open(
                    Table::Messages,
                    &k,
                    &sealed,
                )?)?;
                if !m.outgoing && m.status == Status::Received as i32 {
                    left -= 1;
                    candidates.push((k, m));
                }
            }
        }
    }
    let mut changed = Vec::new();
    for (k, m) in candidates {
        if m.outgoing || m.status != Status::Received as i32 || m.conversation != conversation {
            continue;
        }
        c.unread = c.unread.saturating_sub(1);
        changed.push(m.id.clone());
        tx.set_status(k, m, Status::Seen);
    }
    if !changed.is_empty() {
        tx.put_conversation(c);
    }
    Ok(changed)
}

impl Client {
    /// A page of a conversation, in conversation order: the `limit` messages before the
    /// message `before` (or the newest ones).
    pub async fn messages(
        &self,
        conversation: &str,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<MessageView>, ClientError> {
        let peer = super::groups::parse_conversation(conversation)?;
        let v = &self.inner.vault;
        let prefix = keys::conversation_prefix(v, &peer);
        let mut scan = Scan::prefix(Table::Messages, &prefix);
        if let Some(before) = before {
            let id = hex::decode(&before).map_err(|_| {
                ClientError::InvalidArgument("a message id is 32 hex digits".into())
            })?;
            let mut tx = Tx::new(self.inner.store.as_ref(), v);
            let (key, _) = tx
                .message(&id)
                .await?
                .ok_or_else(|| ClientError::InvalidArgument("unknown message".into()))?;
            scan.end = key;
        }
        scan.reverse = true;
        scan.limit = limit.max(1) as usize;
        let mut out = Vec::new();
        for (k, sealed) in self.inner.store.scan(scan).await? {
            let m = MessageRecord::from_bytes(&v.open(Table::Messages, &k, &sealed)?)?;
            out.push(MessageView::from_record(&m));
        }
        out.reverse();
        Ok(out)
    }

    /// Conversations, most recent first, with unread counts.
    pub async fn conversations(&self) -> Result<Vec<ConversationView>, ClientError> {
        let v = &self.inner.vault;
        let mut out = Vec::new();
        let rows = self.inner.store.scan(Scan::prefix(Table::Conversations, b"")).await?;
        let mut core = self.inner.lock_for_app().await;
        for (k, sealed) in rows {
            let c = ConversationRecord::from_bytes(&v.open(Table::Conversations, &k, &sealed)?)?;
            let id = AccountId::try_from(c.peer.as_slice()).unwrap_or_default();
            let group = match core.contacts.get(&id) {
                Some(_) => None,
                None => core
                    .group_mut(self.inner.store.as_ref(), v, &id)
                    .await?
                    .map(|g| g.state().map(|s| s.name.clone()).unwrap_or_default()),
            };
            let is_group = group.is_some();
            let name = match group {
                Some(name) => name,
                None => core.contacts.get(&id).map(|c| c.name.clone()).unwrap_or_default(),
            };
            out.push((
                c.last_clock,
                ConversationView {
                    peer: hex::encode(&c.peer),
                    is_group,
                    name,
                    unread: c.unread,
                    last_preview: c.last_preview,
                    last_at_ms: c.last_at_ms,
                },
            ));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.last_at_ms.cmp(&a.1.last_at_ms)));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    /// Full-text search of local history: messages containing every word of `query`, newest
    /// first (see [`crate::search`] for the tokenization).
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, ClientError> {
        let tokens = crate::search::tokens(query);
        let v = &self.inner.vault;
        let mut sets: Vec<std::collections::BTreeSet<Vec<u8>>> = Vec::new();
        for t in &tokens {
            let prefix = keys::search_prefix(v, t);
            let mut set = std::collections::BTreeSet::new();
            for (k, sealed) in
                self.inner.store.scan(Scan::prefix(Table::SearchIndex, &prefix)).await?
            {
                let row = PostingsRecord::from_bytes(&v.open(Table::SearchIndex, &k, &sealed)?)?;
                set.extend(row.message_keys);
            }
            sets.push(set);
        }
        sets.sort_by_key(|s| s.len());
        let Some((first, rest)) = sets.split_first() else { return Ok(Vec::new()) };
        let mut hits = Vec::new();
        for key in first.iter().filter(|k| rest.iter().all(|s| s.contains(*k))) {
            if let Some(sealed) = self.inner.store.get(Table::Messages, key).await? {
                let m = MessageRecord::from_bytes(&v.open(Table::Messages, key, &sealed)?)?;
                hits.push(SearchHit {
                    conversation: hex::encode(&m.conversation),
                    message: MessageView::from_record(&m),
                });
            }
        }
        hits.sort_by(|a, b| {
            b.message.clock.cmp(&a.message.clock).then(b.message.id.cmp(&a.message.id))
        });
        hits.truncate(limit.max(1) as usize);
        Ok(hits)
    }
}
