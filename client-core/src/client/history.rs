//! Local history: adding a message (once per id) with its conversation summary, and marking
//! incoming messages seen. Used by sending (our own messages), receiving and the app's calls.

use super::core::{AccountId, Tx};
use super::error::ClientError;
use super::types::{Event, MessageView};
use crate::records::{MessageRecord, Status, keys};
use crate::store::{Scan, Table};

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
