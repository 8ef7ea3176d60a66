//! Group state and the signed changes that move it (docs/PROTOCOL.md §17), sans-I/O.
//!
//! A group's state (id, epoch, name, description, members with their admin flag) changes only
//! through a [`SignedGroupChange`]: a change body naming the epoch it creates and the hash of the
//! change it builds on, signed by the author device's identity key. Every device validates each
//! change against the state it holds ([`validate`]): the author must be an admin of that state
//! (a member may only leave), and every action must make sense there.
//!
//! **Convergence.** Two admins may change the group at once: both changes name the same parent.
//! The rule every device applies is: *at each epoch, among the valid changes whose parent is the
//! canonical change of the epoch before, the one with the smallest hash is canonical*. The
//! canonical state is therefore a function of the set of changes a device has received, not of
//! their order, so every device that received the same changes holds the same state.
//! [`GroupLog`] applies this incrementally: a change that beats the canonical one at its epoch
//! replaces it and everything built on it (a *reorganization*, reported so the client can undo
//! their timeline entries and re-issue its own beaten actions). Forks are resolved within the
//! last [`LOG_WINDOW`] epochs; a change for an older epoch is refused as `stale_change`.
//!
//! Guarantees: a refused change leaves the log exactly as it was; nothing here panics on any
//! input; sizes are bounded ([`MAX_MEMBERS`], [`MAX_NAME_CHARS`], [`MAX_DESCRIPTION_CHARS`]).

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use sha2::{Digest, Sha256};

/// Most members of a group.
pub const MAX_MEMBERS: usize = 1_000;
/// Longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// Most actions one change may carry (a creation adding every member is the largest).
pub const MAX_ACTIONS: usize = MAX_MEMBERS + 2;
/// Epochs within which a concurrent change can still replace the canonical one.
pub const LOG_WINDOW: usize = 64;
/// Most beaten change hashes remembered (to drop their redeliveries quietly).
pub const MAX_BEATEN: usize = 256;
/// Domain separation of the change signature.
pub const CHANGE_SIGNATURE_CONTEXT: &[u8] = b"Hush_GroupChange_v1";

/// A group id, an account id, a change hash: 32 bytes each.
pub type Id = [u8; 32];

/// Why a group change, or a call on a group, was refused. Codes are stable (PROTOCOL.md §17.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The bytes do not decode, or a field has the wrong length.
    #[error("malformed group change: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the identity the change names.
    #[error("bad signature on a group change")]
    BadSignature,
    /// The change is for another group than the one it was applied to.
    #[error("the change is for another group")]
    UnknownGroup,
    /// The change does not build on a change this device holds (wrong epoch or parent).
    #[error("the change builds on epoch {epoch}, which this device does not hold as canonical")]
    WrongEpoch {
        /// The epoch the change creates.
        epoch: u64,
    },
    /// The change builds on an epoch older than the log keeps.
    #[error("the change is for an epoch older than the last {LOG_WINDOW}")]
    StaleChange,
    /// The author is not a member of the state it builds on.
    #[error("the author is not a member of the group")]
    NotAMember,
    /// The author is a member but not an admin, and did more than leave.
    #[error("only an admin can do that")]
    NotAdmin,
    /// The change would take the group past [`MAX_MEMBERS`].
    #[error("a group has at most {MAX_MEMBERS} members")]
    TooLarge,
    /// An action that makes no sense in the state (adding a member twice, removing a
    /// stranger, demoting the last admin, an empty or oversize name…).
    #[error("invalid group change: {0}")]
    Invalid(&'static str),
}

impl GroupError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_group_change",
            Self::BadSignature => "bad_signature",
            Self::UnknownGroup => "unknown_group",
            Self::WrongEpoch { .. } => "wrong_epoch",
            Self::StaleChange => "stale_change",
            Self::NotAMember => "not_a_member",
            Self::NotAdmin => "not_admin",
            Self::TooLarge => "group_too_large",
            Self::Invalid(_) => "invalid_group_change",
        }
    }
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum ActionKind {
    /// Unknown (refused).
    Unspecified = 0,
    /// Adds `account` as a member.
    Add = 1,
    /// Removes `account` (not the author: see `Leave`).
    Remove = 2,
    /// Makes member `account` an admin.
    Promote = 3,
    /// Makes admin `account` a plain member (not the last admin).
    Demote = 4,
    /// Sets the name to `text`.
    Rename = 5,
    /// Sets the description to `text`.
    Describe = 6,
    /// The author leaves. The only action a non-admin may take.
    Leave = 7,
}

/// One action of a change.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupAction {
    /// What it does.
    #[prost(enumeration = "ActionKind", tag = "1")]
    pub kind: i32,
    /// The member it is about (32 bytes), for add, remove, promote and demote.
    #[prost(bytes = "vec", tag = "2")]
    pub account: Vec<u8>,
    /// The name or description, for rename and describe.
    #[prost(string, tag = "3")]
    pub text: String,
}

impl GroupAction {
    /// An action about a member.
    pub fn about(kind: ActionKind, account: &Id) -> Self {
        Self { kind: kind as i32, account: account.to_vec(), text: String::new() }
    }

    /// An action setting a text.
    pub fn text(kind: ActionKind, text: &str) -> Self {
        Self { kind: kind as i32, account: Vec::new(), text: text.to_owned() }
    }
}

/// The signed part of a change.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChangeBody {
    /// The group (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub group_id: Vec<u8>,
    /// The epoch this change creates: the parent's plus one; 0 for the creation.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// The hash of the change it builds on (32 bytes; 32 zero bytes for the creation).
    #[prost(bytes = "vec", tag = "3")]
    pub parent: Vec<u8>,
    /// The author's account id.
    #[prost(bytes = "vec", tag = "4")]
    pub author: Vec<u8>,
    /// The author's device.
    #[prost(uint32, tag = "5")]
    pub author_device: u32,
    /// The author's Lamport clock: the change's place in the conversation timeline.
    #[prost(uint64, tag = "6")]
    pub clock: u64,
    /// The author's wall clock (display only).
    #[prost(uint64, tag = "7")]
    pub at_ms: u64,
    /// What it does, applied in order.
    #[prost(message, repeated, tag = "8")]
    pub actions: Vec<GroupAction>,
}

/// A change as it travels: the encoded [`ChangeBody`], the author device's 64-byte identity
/// (Ed25519 ‖ X25519), and an Ed25519 signature by that identity over
/// [`CHANGE_SIGNATURE_CONTEXT`] ‖ `body`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignedGroupChange {
    /// The encoded [`ChangeBody`].
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
    /// The author device's identity (64 bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub identity: Vec<u8>,
    /// The signature (64 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// A change whose signature verified, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// SHA-256 of the encoded body: the change's name, and its tie-break.
    pub hash: Id,
    /// The decoded body.
    pub body: ChangeBody,
    /// The signing identity (64 bytes); the client checks it against the author's device list.
    pub identity: [u8; 64],
    /// The change as received.
    pub signed: SignedGroupChange,
}

impl SignedGroupChange {
    /// Signs `body` with a device's identity (`sign` is the identity key pair's signer).
    pub fn sign(body: &ChangeBody, identity: [u8; 64], sign: impl Fn(&[u8]) -> [u8; 64]) -> Self {
        let body = body.encode_to_vec();
        let signature = sign(&[CHANGE_SIGNATURE_CONTEXT, &body].concat()).to_vec();
        Self { body, identity: identity.to_vec(), signature }
    }

    /// Checks the signature and decodes the body. Does not check the change against any state.
    pub fn verify(&self) -> Result<Verified, GroupError> {
        let identity: [u8; 64] =
            self.identity.as_slice().try_into().map_err(|_| GroupError::Malformed("identity"))?;
        let signature: [u8; 64] =
            self.signature.as_slice().try_into().map_err(|_| GroupError::Malformed("signature"))?;
        let (ed, _) =
            identity.split_first_chunk::<32>().ok_or(GroupError::Malformed("identity"))?;
        let key = VerifyingKey::from_bytes(ed).map_err(|_| GroupError::Malformed("identity"))?;
        key.verify_strict(
            &[CHANGE_SIGNATURE_CONTEXT, &self.body].concat(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| GroupError::BadSignature)?;
        let body = ChangeBody::decode(self.body.as_slice())
            .map_err(|_| GroupError::Malformed("change body"))?;
        if body.group_id.len() != 32 || body.parent.len() != 32 || body.author.len() != 32 {
            return Err(GroupError::Malformed("id length"));
        }
        if body.actions.len() > MAX_ACTIONS {
            return Err(GroupError::TooLarge);
        }
        Ok(Verified {
            hash: Sha256::digest(&self.body).into(),
            body,
            identity,
            signed: self.clone(),
        })
    }
}

/// A group's state at one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// The group id.
    pub id: Id,
    /// How many changes since the creation (0 = as created).
    pub epoch: u64,
    /// Hash of the change that made this state.
    pub head: Id,
    /// Name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// Members, each with whether it is an admin.
    pub members: BTreeMap<Id, bool>,
}

impl GroupState {
    /// Whether `account` is a member.
    pub fn is_member(&self, account: &Id) -> bool {
        self.members.contains_key(account)
    }

    /// Whether `account` is an admin.
    pub fn is_admin(&self, account: &Id) -> bool {
        self.members.get(account).copied().unwrap_or(false)
    }

    /// The wire snapshot of this state.
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            group_id: self.id.to_vec(),
            epoch: self.epoch,
            head: self.head.to_vec(),
            name: self.name.clone(),
            description: self.description.clone(),
            members: self
                .members
                .iter()
                .map(|(a, admin)| GroupMember { account: a.to_vec(), admin: *admin })
                .collect(),
        }
    }

    /// A state from a snapshot (sizes and lengths checked).
    pub fn from_snapshot(s: &GroupSnapshot) -> Result<Self, GroupError> {
        let id = to_id(&s.group_id)?;
        let head = to_id(&s.head)?;
        if s.members.len() > MAX_MEMBERS {
            return Err(GroupError::TooLarge);
        }
        if s.name.chars().count() > MAX_NAME_CHARS
            || s.description.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(GroupError::Invalid("oversize name or description"));
        }
        let mut members = BTreeMap::new();
        for m in &s.members {
            members.insert(to_id(&m.account)?, m.admin);
        }
        Ok(Self {
            id,
            epoch: s.epoch,
            head,
            name: s.name.clone(),
            description: s.description.clone(),
            members,
        })
    }
}

/// A state as it travels (to a new member, or to a newly linked device of a member).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupSnapshot {
    /// Group id.
    #[prost(bytes = "vec", tag = "1")]
    pub group_id: Vec<u8>,
    /// Epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Hash of the change that made it.
    #[prost(bytes = "vec", tag = "3")]
    pub head: Vec<u8>,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Description.
    #[prost(string, tag = "5")]
    pub description: String,
    /// Members in ascending account order.
    #[prost(message, repeated, tag = "6")]
    pub members: Vec<GroupMember>,
}

/// One member in a snapshot.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupMember {
    /// Account id.
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// Admin flag.
    #[prost(bool, tag = "2")]
    pub admin: bool,
}

fn to_id(bytes: &[u8]) -> Result<Id, GroupError> {
    bytes.try_into().map_err(|_| GroupError::Malformed("id length"))
}

/// The state a creation makes: the author as the only admin, the added members, the name and
/// description.
pub fn genesis(change: &Verified) -> Result<GroupState, GroupError> {
    let b = &change.body;
    if b.epoch != 0 || b.parent != [0u8; 32] {
        return Err(GroupError::Invalid("a creation is epoch 0 with no parent"));
    }
    let author = to_id(&b.author)?;
    let empty = GroupState {
        id: to_id(&b.group_id)?,
        epoch: 0,
        head: [0; 32],
        name: String::new(),
        description: String::new(),
        members: BTreeMap::from([(author, true)]),
    };
    let mut state = apply_actions(&empty, &author, &b.actions)?;
    if state.name.is_empty() {
        return Err(GroupError::Invalid("a group needs a name"));
    }
    state.head = change.hash;
    Ok(state)
}

/// The state `change` makes from `state`, or why it is refused.
pub fn validate(state: &GroupState, change: &Verified) -> Result<GroupState, GroupError> {
    let b = &change.body;
    if b.group_id != state.id {
        return Err(GroupError::UnknownGroup);
    }
    if b.epoch != state.epoch.saturating_add(1) || b.parent != state.head {
        return Err(GroupError::WrongEpoch { epoch: b.epoch });
    }
    let author = to_id(&b.author)?;
    let mut next = apply_actions(state, &author, &b.actions)?;
    next.epoch = b.epoch;
    next.head = change.hash;
    Ok(next)
}

/// Applies actions in order, checking each against the state so far.
fn apply_actions(
    state: &GroupState,
    author: &Id,
    actions: &[GroupAction],
) -> Result<GroupState, GroupError> {
    if !state.is_member(author) {
        return Err(GroupError::NotAMember);
    }
    if actions.is_empty() {
        return Err(GroupError::Invalid("a change with no action"));
    }
    let leave_only =
        actions.len() == 1 && actions.first().is_some_and(|a| a.kind == ActionKind::Leave as i32);
    if !state.is_admin(author) && !leave_only {
        return Err(GroupError::NotAdmin);
    }
    let mut s = state.clone();
    for a in actions {
        let kind = ActionKind::try_from(a.kind).unwrap_or(ActionKind::Unspecified);
        let target = || to_id(&a.account);
        match kind {
            ActionKind::Add => {
                let t = target()?;
                if s.members.insert(t, false).is_some() {
                    return Err(GroupError::Invalid("already a member"));
                }
                if s.members.len() > MAX_MEMBERS {
                    return Err(GroupError::TooLarge);
                }
            }
            ActionKind::Remove => {
                let t = target()?;
                if t == *author {
                    return Err(GroupError::Invalid("an admin leaves, it does not remove itself"));
                }
                if s.members.remove(&t).is_none() {
                    return Err(GroupError::Invalid("not a member"));
                }
            }
            ActionKind::Promote => match s.members.get_mut(&target()?) {
                Some(admin @ false) => *admin = true,
                Some(true) => return Err(GroupError::Invalid("already an admin")),
                None => return Err(GroupError::Invalid("not a member")),
            },
            ActionKind::Demote => {
                match s.members.get_mut(&target()?) {
                    Some(admin @ true) => *admin = false,
                    Some(false) => return Err(GroupError::Invalid("not an admin")),
                    None => return Err(GroupError::Invalid("not a member")),
                }
                if !s.members.values().any(|a| *a) {
                    return Err(GroupError::Invalid("a group keeps at least one admin"));
                }
            }
            ActionKind::Rename => {
                let n = a.text.chars().count();
                if n == 0 || n > MAX_NAME_CHARS {
                    return Err(GroupError::Invalid("a name has 1 to 100 characters"));
                }
                s.name.clone_from(&a.text);
            }
            ActionKind::Describe => {
                if a.text.chars().count() > MAX_DESCRIPTION_CHARS {
                    return Err(GroupError::Invalid("a description has at most 1,000 characters"));
                }
                s.description.clone_from(&a.text);
            }
            ActionKind::Leave => {
                if !a.account.is_empty() && a.account != author {
                    return Err(GroupError::Invalid("only the author can leave"));
                }
                if s.members.remove(author).is_none() {
                    return Err(GroupError::Invalid("not a member"));
                }
                // The last admin leaving promotes the member with the smallest account id.
                if !s.members.values().any(|a| *a)
                    && let Some(first) = s.members.values_mut().next()
                {
                    *first = true;
                }
            }
            ActionKind::Unspecified => return Err(GroupError::Invalid("unknown action")),
        }
    }
    Ok(s)
}

/// What receiving a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It extended the canonical chain.
    Applied,
    /// It beat the canonical change of its epoch: `dropped` (that change and the ones built on
    /// it, oldest first) are no longer canonical.
    Reorganized {
        /// The changes that stopped being canonical.
        dropped: Vec<Verified>,
    },
    /// A competing change with a smaller hash holds its epoch (or it builds on one that lost):
    /// it is not canonical.
    Beaten,
    /// Already held.
    Duplicate,
}

/// A group's canonical history: the state at the start of the window, the canonical changes
/// since (at most [`LOG_WINDOW`]), and the tip state.
#[derive(Debug, Clone)]
pub struct GroupLog {
    base: GroupState,
    chain: Vec<Verified>,
    /// Hashes of changes that lost, newest last.
    beaten: VecDeque<Id>,
    tip: GroupState,
}

impl GroupLog {
    /// A log that starts at a known state (a creation, a snapshot, a stored base).
    pub fn new(base: GroupState) -> Self {
        Self { tip: base.clone(), base, chain: Vec::new(), beaten: VecDeque::new() }
    }

    /// Rebuilds a stored log: the base, then its canonical changes replayed.
    pub fn restore(
        base: GroupState,
        chain: &[SignedGroupChange],
        beaten: &[Vec<u8>],
    ) -> Result<Self, GroupError> {
        let mut log = Self::new(base);
        for c in chain {
            let v = c.verify()?;
            log.tip = validate(&log.tip, &v)?;
            log.chain.push(v);
        }
        log.beaten = beaten.iter().filter_map(|b| to_id(b).ok()).collect();
        Ok(log)
    }

    /// The current state.
    pub fn state(&self) -> &GroupState {
        &self.tip
    }

    /// The state at the start of the window.
    pub fn base(&self) -> &GroupState {
        &self.base
    }

    /// The canonical changes after the base, oldest first.
    pub fn chain(&self) -> &[Verified] {
        &self.chain
    }

    /// Hashes of beaten changes remembered.
    pub fn beaten(&self) -> impl Iterator<Item = &Id> {
        self.beaten.iter()
    }

    /// Receives a verified change: validates it against the canonical state of its parent
    /// epoch and applies the smallest-hash rule. On an error nothing changed.
    pub fn receive(&mut self, change: &Verified) -> Result<Outcome, GroupError> {
        if change.body.group_id != self.tip.id {
            return Err(GroupError::UnknownGroup);
        }
        if self.chain.iter().any(|c| c.hash == change.hash)
            || self.beaten.contains(&change.hash)
            || (change.hash == self.base.head)
        {
            return Ok(Outcome::Duplicate);
        }
        let epoch = change.body.epoch;
        if epoch <= self.base.epoch {
            return Err(GroupError::StaleChange);
        }
        if epoch == self.tip.epoch.saturating_add(1) {
            if change.body.parent != self.tip.head
                && self.beaten.iter().any(|b| change.body.parent == b)
            {
                self.remember_beaten(change.hash);
                return Ok(Outcome::Beaten);
            }
            let next = validate(&self.tip, change)?;
            self.chain.push(change.clone());
            self.tip = next;
            self.trim();
            return Ok(Outcome::Applied);
        }
        if epoch > self.tip.epoch.saturating_add(1) {
            return Err(GroupError::WrongEpoch { epoch });
        }
        // A competitor of the canonical change at `epoch`.
        let index = usize::try_from(epoch - self.base.epoch - 1)
            .map_err(|_| GroupError::WrongEpoch { epoch })?;
        let parent_state = self.state_before(index)?;
        if change.body.parent != parent_state.head {
            // It builds on a change that is not canonical: it lost with its parent.
            self.remember_beaten(change.hash);
            return Ok(Outcome::Beaten);
        }
        let next = validate(&parent_state, change)?;
        let holder = self.chain.get(index).map(|c| c.hash).unwrap_or([0xff; 32]);
        if change.hash >= holder {
            self.remember_beaten(change.hash);
            return Ok(Outcome::Beaten);
        }
        let dropped = self.chain.split_off(index);
        for d in &dropped {
            self.remember_beaten(d.hash);
        }
        self.chain.push(change.clone());
        self.tip = next;
        Ok(Outcome::Reorganized { dropped })
    }

    /// The canonical state before chain entry `index` (replayed from the base).
    fn state_before(&self, index: usize) -> Result<GroupState, GroupError> {
        let mut s = self.base.clone();
        for c in self.chain.iter().take(index) {
            s = validate(&s, c)?;
        }
        Ok(s)
    }

    fn remember_beaten(&mut self, hash: Id) {
        if !self.beaten.contains(&hash) {
            self.beaten.push_back(hash);
        }
        while self.beaten.len() > MAX_BEATEN {
            self.beaten.pop_front();
        }
    }

    /// Folds the oldest changes into the base once the window is full.
    fn trim(&mut self) {
        while self.chain.len() > LOG_WINDOW {
            let oldest = self.chain.remove(0);
            if let Ok(s) = validate(&self.base, &oldest) {
                self.base = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    /// A test admin device: account id = its Ed25519 key, identity = key ‖ zeros.
    struct Dev {
        key: SigningKey,
    }

    impl Dev {
        fn new(seed: u8) -> Self {
            Self { key: SigningKey::from_bytes(&[seed; 32]) }
        }
        fn id(&self) -> Id {
            self.key.verifying_key().to_bytes()
        }
        fn change(&self, parent: &GroupState, clock: u64, actions: Vec<GroupAction>) -> Verified {
            self.change_at(parent.id, parent.epoch + 1, parent.head, clock, actions)
        }
        fn change_at(
            &self,
            group: Id,
            epoch: u64,
            parent: Id,
            clock: u64,
            actions: Vec<GroupAction>,
        ) -> Verified {
            let body = ChangeBody {
                group_id: group.to_vec(),
                epoch,
                parent: parent.to_vec(),
                author: self.id().to_vec(),
                author_device: 1,
                clock,
                at_ms: 0,
                actions,
            };
            let mut identity = [0u8; 64];
            identity[..32].copy_from_slice(&self.id());
            SignedGroupChange::sign(&body, identity, |m| self.key.sign(m).to_bytes())
                .verify()
                .unwrap()
        }
    }

    fn create(admin: &Dev, members: &[Id]) -> (Verified, GroupState) {
        let mut actions = vec![GroupAction::text(ActionKind::Rename, "g")];
        actions.extend(members.iter().map(|m| GroupAction::about(ActionKind::Add, m)));
        let c = admin.change_at([9; 32], 0, [0; 32], 1, actions);
        let s = genesis(&c).unwrap();
        (c, s)
    }

    #[test]
    fn admins_change_members_leave() {
        let (a, b, c) = (Dev::new(1), Dev::new(2), Dev::new(3));
        let (_, s0) = create(&a, &[b.id()]);
        assert!(s0.is_admin(&a.id()) && s0.is_member(&b.id()) && !s0.is_admin(&b.id()));
        // A member who is not an admin can't add.
        let bad = b.change(&s0, 2, vec![GroupAction::about(ActionKind::Add, &c.id())]);
        assert_eq!(validate(&s0, &bad), Err(GroupError::NotAdmin));
        // A stranger can't even leave.
        let bad = c.change(&s0, 2, vec![GroupAction::about(ActionKind::Leave, &c.id())]);
        assert_eq!(validate(&s0, &bad), Err(GroupError::NotAMember));
        let add = a.change(&s0, 2, vec![GroupAction::about(ActionKind::Add, &c.id())]);
        let s1 = validate(&s0, &add).unwrap();
        // Replaying it on the new state is the wrong epoch.
        assert_eq!(validate(&s1, &add), Err(GroupError::WrongEpoch { epoch: 1 }));
        // The last admin leaving promotes the smallest remaining account.
        let leave = a.change(&s1, 3, vec![GroupAction::about(ActionKind::Leave, &a.id())]);
        let s2 = validate(&s1, &leave).unwrap();
        let smallest = *s2.members.keys().next().unwrap();
        assert!(s2.is_admin(&smallest) && !s2.is_member(&a.id()));
        // Demoting the last admin is refused.
        let d = Dev::new(if smallest == b.id() { 2 } else { 3 });
        let demote = d.change(&s2, 4, vec![GroupAction::about(ActionKind::Demote, &d.id())]);
        assert_eq!(validate(&s2, &demote).unwrap_err().code(), "invalid_group_change");
    }

    #[test]
    fn forged_and_tampered_changes_are_refused() {
        let a = Dev::new(1);
        let (c, s0) = create(&a, &[]);
        let mut signed = c.signed.clone();
        signed.body[3] ^= 1;
        assert_eq!(signed.verify(), Err(GroupError::BadSignature));
        assert!(SignedGroupChange::default().verify().is_err());
        let mut log = GroupLog::new(s0.clone());
        let other =
            a.change_at([8; 32], 1, s0.head, 2, vec![GroupAction::text(ActionKind::Rename, "x")]);
        assert_eq!(log.receive(&other), Err(GroupError::UnknownGroup));
        let ahead =
            a.change_at(s0.id, 5, s0.head, 2, vec![GroupAction::text(ActionKind::Rename, "x")]);
        assert_eq!(log.receive(&ahead), Err(GroupError::WrongEpoch { epoch: 5 }));
        assert_eq!(log.state(), &s0);
    }

    #[test]
    fn too_many_members_is_refused() {
        let a = Dev::new(1);
        let members: Vec<Id> = (0..MAX_MEMBERS as u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id[31] = 1;
                id
            })
            .collect();
        let mut actions = vec![GroupAction::text(ActionKind::Rename, "g")];
        actions.extend(members.iter().map(|m| GroupAction::about(ActionKind::Add, m)));
        let c = a.change_at([9; 32], 0, [0; 32], 1, actions);
        assert_eq!(genesis(&c), Err(GroupError::TooLarge));
    }

    #[test]
    fn two_admins_at_once_converge_in_either_order() {
        let (a, b, c) = (Dev::new(1), Dev::new(2), Dev::new(3));
        let (_, mut s0) = create(&a, &[b.id()]);
        s0.members.insert(b.id(), true);
        let x = a.change(&s0, 2, vec![GroupAction::about(ActionKind::Add, &c.id())]);
        let y = b.change(&s0, 2, vec![GroupAction::text(ActionKind::Rename, "other")]);
        let (first, second) = if x.hash < y.hash { (&y, &x) } else { (&x, &y) };
        let mut one = GroupLog::new(s0.clone());
        assert_eq!(one.receive(first), Ok(Outcome::Applied));
        // The smaller hash replaces the first one applied.
        assert_eq!(one.receive(second), Ok(Outcome::Reorganized { dropped: vec![first.clone()] }));
        let mut two = GroupLog::new(s0.clone());
        assert_eq!(two.receive(second), Ok(Outcome::Applied));
        assert_eq!(two.receive(first), Ok(Outcome::Beaten));
        assert_eq!(one.state(), two.state());
        assert_eq!(one.state().head, second.hash);
        // A change built on the loser is beaten too, on both.
        let loser_state = validate(&s0, first).unwrap();
        let on_loser =
            a.change(&loser_state, 3, vec![GroupAction::text(ActionKind::Describe, "d")]);
        assert_eq!(one.receive(&on_loser), Ok(Outcome::Beaten));
        assert_eq!(two.receive(&on_loser), Ok(Outcome::Beaten));
        assert_eq!(one.receive(second), Ok(Outcome::Duplicate));
    }

    /// The model: the canonical state is computed from the set of changes alone, by walking
    /// from the creation and taking, at each epoch, the smallest-hash valid child.
    fn model(genesis_state: &GroupState, changes: &[Verified]) -> GroupState {
        let mut s = genesis_state.clone();
        loop {
            let best = changes
                .iter()
                .filter(|c| c.body.parent == s.head && c.body.epoch == s.epoch + 1)
                .filter_map(|c| validate(&s, c).ok().map(|n| (c.hash, n)))
                .min_by_key(|(h, _)| *h);
            match best {
                Some((_, n)) => s = n,
                None => return s,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Admin `who` (0..3) writes a change on top of its replica's state.
        Change { who: usize, action: u8, target: u8 },
        /// Replica `to` receives the next undelivered change (by index modulo the count).
        Deliver { to: usize, pick: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, 0..6u8, 0..6u8).prop_map(|(who, action, target)| Step::Change {
                who,
                action,
                target
            }),
            (0..3usize, any::<usize>()).prop_map(|(to, pick)| Step::Deliver { to, pick }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Three admins change a group concurrently, each on its own replica; changes reach the
        /// replicas in any order that respects causality (a change after the one it builds on,
        /// as the relay's per-device mailbox order gives). Once everything is delivered, every
        /// replica holds the model's state.
        #[test]
        fn concurrent_changes_converge_to_the_model(steps in proptest::collection::vec(step(), 1..60)) {
            let devs: Vec<Dev> = (1..=6).map(Dev::new).collect();
            let mut actions = vec![GroupAction::text(ActionKind::Rename, "g")];
            for d in &devs[1..3] {
                actions.push(GroupAction::about(ActionKind::Add, &d.id()));
            }
            let c0 = devs[0].change_at([9; 32], 0, [0; 32], 1, actions);
            let mut s0 = genesis(&c0).unwrap();
            for d in &devs[1..3] {
                s0.members.insert(d.id(), true);
            }
            let mut replicas: Vec<GroupLog> = (0..3).map(|_| GroupLog::new(s0.clone())).collect();
            // All changes made, and which each replica has received (in order).
            let mut made: Vec<Verified> = Vec::new();
            let mut received: Vec<Vec<bool>> = vec![Vec::new(); 3];
            let mut clock = 1;
            let deliver = |replicas: &mut Vec<GroupLog>, received: &mut Vec<Vec<bool>>, made: &Vec<Verified>, to: usize, i: usize| {
                received[to][i] = true;
                let _ = replicas[to].receive(&made[i]);
            };
            for s in steps {
                match s {
                    Step::Change { who, action, target } => {
                        let state = replicas[who].state().clone();
                        let t = devs[usize::from(target)].id();
                        let a = match action {
                            0 => GroupAction::about(ActionKind::Add, &t),
                            1 => GroupAction::about(ActionKind::Remove, &t),
                            2 => GroupAction::about(ActionKind::Promote, &t),
                            3 => GroupAction::about(ActionKind::Demote, &t),
                            4 => GroupAction::text(ActionKind::Rename, &format!("n{target}")),
                            _ => GroupAction::about(ActionKind::Leave, &devs[who].id()),
                        };
                        clock += 1;
                        let c = devs[who].change(&state, clock, vec![a]);
                        if validate(&state, &c).is_err() {
                            continue;
                        }
                        made.push(c);
                        for r in received.iter_mut() {
                            r.push(false);
                        }
                        // The author applies its own change at once.
                        let i = made.len() - 1;
                        deliver(&mut replicas, &mut received, &made, who, i);
                    }
                    Step::Deliver { to, pick } => {
                        // Causal: only a change whose parent this replica already has (or that
                        // builds on the creation).
                        let ready: Vec<usize> = (0..made.len())
                            .filter(|&i| !received[to][i])
                            .filter(|&i| made[i].body.parent == s0.head.to_vec()
                                || made.iter().enumerate().any(|(j, p)| received[to][j] && p.hash.to_vec() == made[i].body.parent))
                            .collect();
                        if ready.is_empty() {
                            continue;
                        }
                        deliver(&mut replicas, &mut received, &made, to, ready[pick % ready.len()]);
                    }
                }
            }
            // Deliver the rest in causal order.
            for to in 0..3 {
                loop {
                    let next = (0..made.len()).find(|&i| !received[to][i]
                        && (made[i].body.parent == s0.head.to_vec()
                            || made.iter().enumerate().any(|(j, p)| received[to][j] && p.hash.to_vec() == made[i].body.parent)));
                    match next {
                        Some(i) => deliver(&mut replicas, &mut received, &made, to, i),
                        None => break,
                    }
                }
            }
            let expected = model(&s0, &made);
            for r in &replicas {
                prop_assert_eq!(r.state(), &expected);
            }
        }
    }
}
