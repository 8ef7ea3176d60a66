//! A group as this device holds it in memory: the canonical log ([`GroupLog`]), this device's
//! sender key and who holds it; and its conversion from and to the stored [`GroupRecord`].
//!
//! A group whose state is not known yet (a newly linked device got a message for it before its
//! own devices sent the state) has no log: its messages are shown, but nothing can be sent to
//! it until the state arrives.

use crate::group::{GroupLog, GroupState, Id};
use crate::records::{DeviceRef, GroupRecord, RECORD_VERSION};
use crate::sender_key::SenderKey;

use super::error::ClientError;

/// One group.
pub(crate) struct GroupEntry {
    pub id: Id,
    pub log: Option<GroupLog>,
    pub my_key: Option<SenderKey>,
    pub key_holders: Vec<DeviceRef>,
    pub rotate: bool,
}

impl GroupEntry {
    /// A group known from a state (created here, or a snapshot adopted).
    pub fn new(state: GroupState) -> Self {
        Self {
            id: state.id,
            log: Some(GroupLog::new(state)),
            my_key: None,
            key_holders: Vec::new(),
            rotate: false,
        }
    }

    /// A group known only by id (see the module docs).
    pub fn unknown(id: Id) -> Self {
        Self { id, log: None, my_key: None, key_holders: Vec::new(), rotate: false }
    }

    /// The current state, if known.
    pub fn state(&self) -> Option<&GroupState> {
        self.log.as_ref().map(GroupLog::state)
    }

    pub fn from_record(r: &GroupRecord) -> Result<Self, ClientError> {
        let corrupt = |what: &str| ClientError::CorruptStore(format!("group record: {what}"));
        let id: Id = r.group_id.as_slice().try_into().map_err(|_| corrupt("id"))?;
        let log = match &r.base {
            Some(base) => {
                let base = GroupState::from_snapshot(base).map_err(|e| corrupt(&e.to_string()))?;
                Some(
                    GroupLog::restore(base, &r.chain, &r.beaten)
                        .map_err(|e| corrupt(&e.to_string()))?,
                )
            }
            None => None,
        };
        let my_key = match r.my_key.is_empty() {
            true => None,
            false => {
                Some(SenderKey::from_state_bytes(&r.my_key).map_err(|e| corrupt(&e.to_string()))?)
            }
        };
        Ok(Self { id, log, my_key, key_holders: r.key_holders.clone(), rotate: r.rotate })
    }

    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            version: RECORD_VERSION,
            group_id: self.id.to_vec(),
            base: self.log.as_ref().map(|l| l.base().snapshot()),
            chain: self
                .log
                .as_ref()
                .map(|l| l.chain().iter().map(|c| c.signed.clone()).collect())
                .unwrap_or_default(),
            beaten: self
                .log
                .as_ref()
                .map(|l| l.beaten().map(|b| b.to_vec()).collect())
                .unwrap_or_default(),
            my_key: self.my_key.as_ref().map(|k| k.to_state_bytes().to_vec()).unwrap_or_default(),
            key_holders: self.key_holders.clone(),
            rotate: self.rotate,
        }
    }
}
