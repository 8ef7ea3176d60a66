//! Persisted records of the client store, and their keys.
//!
//! Every record is a protobuf message whose field 1 is a version ([`RECORD_VERSION`]); a record
//! from a newer build is refused with `unsupported_version` rather than misread. Values are
//! sealed by the [`Vault`](crate::vault::Vault) before they reach a backend (except the
//! message-id index's, which name keys the store shows anyway: [`id_row`]); keys carry only
//! blinded identifiers, counters and random message ids. The layouts are pinned by the
//! known-answer test below.

use zeroize::{Zeroize, Zeroizing};

use crate::vault::{BLIND_LEN, Vault};

/// The record format this build reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// `Meta` keys.
pub mod meta {
    /// The store header (a sealed check value; proves the store key is right).
    pub const HEADER: &[u8] = b"header";
    /// The [`AccountRecord`](super::AccountRecord).
    pub const ACCOUNT: &[u8] = b"account";
    /// The device's prekey state (hush-prekeys' versioned encoding).
    pub const PREKEYS: &[u8] = b"prekeys";
    /// Our own account's signed device list, as last verified.
    pub const OWN_DEVICES: &[u8] = b"own_devices";
    /// A pending link (a new device waiting for its grant).
    pub const PENDING_LINK: &[u8] = b"pending_link";
    /// Prefix of the [`UploadRecord`](super::UploadRecord)s: `upload/` ‖ blind(message id).
    pub const UPLOADS: &[u8] = b"upload/";
}

/// The device's account.
///
/// It carries two secrets (`account_seed`, `identity`): its `Debug` redacts them and dropping
/// the record wipes them. The client holds the secrets as key types, not in this record: the
/// record is filled in only to be sealed and written ([`AccountRecord::strip_secrets`]).
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct AccountRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The 32-byte account id (the account's Ed25519 key).
    #[prost(bytes = "vec", tag = "2")]
    pub account_id: Vec<u8>,
    /// The account key seed: only on the device that created the account (it signs device lists).
    #[prost(bytes = "vec", tag = "3")]
    pub account_seed: Vec<u8>,
    /// This device's id.
    #[prost(uint32, tag = "4")]
    pub device_id: u32,
    /// This device's registration id.
    #[prost(uint32, tag = "5")]
    pub registration_id: u32,
    /// This device's identity key pair (hush-prekeys' state encoding).
    #[prost(bytes = "vec", tag = "6")]
    pub identity: Vec<u8>,
    /// The Lamport clock of this device.
    #[prost(uint64, tag = "7")]
    pub clock: u64,
    /// When the current signed prekey was made (ms).
    #[prost(uint64, tag = "8")]
    pub signed_prekey_at_ms: u64,
    /// Whether the relay has our current prekeys.
    #[prost(bool, tag = "9")]
    pub prekeys_published: bool,
    /// The next outbox sequence number.
    #[prost(uint64, tag = "10")]
    pub next_outbox: u64,
    /// Whether the relay accepted our device list (registration or link finished).
    #[prost(bool, tag = "11")]
    pub registered: bool,
}

/// Our own sessions with one remote device: the current one first, then older ones still able
/// to decrypt late messages (simultaneous initiation leaves two). The states hold ratchet
/// keys: `Debug` shows only how many there are, and dropping the record wipes them.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct SessionRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Session states (hush-core's versioned encoding), current first.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub states: Vec<Vec<u8>>,
}

impl AccountRecord {
    /// Takes the two secrets out (wiping the record's copies), so that the record can be kept
    /// in memory without them: the seed (empty on a linked device) and the identity state.
    pub fn strip_secrets(&mut self) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
        (
            Zeroizing::new(std::mem::take(&mut self.account_seed)),
            Zeroizing::new(std::mem::take(&mut self.identity)),
        )
    }
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("version", &self.version)
            .field("account_id", &hex::encode(&self.account_id))
            .field("account_seed", &redacted(&self.account_seed))
            .field("device_id", &self.device_id)
            .field("registration_id", &self.registration_id)
            .field("identity", &redacted(&self.identity))
            .field("clock", &self.clock)
            .field("signed_prekey_at_ms", &self.signed_prekey_at_ms)
            .field("prekeys_published", &self.prekeys_published)
            .field("next_outbox", &self.next_outbox)
            .field("registered", &self.registered)
            .finish()
    }
}

impl Drop for AccountRecord {
    fn drop(&mut self) {
        self.account_seed.zeroize();
        self.identity.zeroize();
    }
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("version", &self.version)
            .field("states", &format_args!("<{} redacted>", self.states.len()))
            .finish()
    }
}

impl Drop for SessionRecord {
    fn drop(&mut self) {
        self.states.zeroize();
    }
}

/// How a secret field shows in `Debug`: whether it is set, never its bytes.
fn redacted(secret: &[u8]) -> &'static str {
    if secret.is_empty() { "<none>" } else { "<redacted>" }
}

/// Verification state of a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Trust {
    /// Trusted on first use, never compared.
    Unverified = 0,
    /// The user compared safety numbers.
    Verified = 1,
    /// A device identity changed after the user verified: sending is refused until accepted.
    Changed = 2,
}

/// A contact.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContactRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The contact's account id.
    #[prost(bytes = "vec", tag = "2")]
    pub account_id: Vec<u8>,
    /// A name the user chose.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Verification state.
    #[prost(enumeration = "Trust", tag = "4")]
    pub trust: i32,
    /// The contact's signed device list, as last verified.
    #[prost(bytes = "vec", tag = "5")]
    pub device_list: Vec<u8>,
}

/// A conversation summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConversationRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The peer's account id.
    #[prost(bytes = "vec", tag = "2")]
    pub peer: Vec<u8>,
    /// Incoming messages not yet read.
    #[prost(uint32, tag = "3")]
    pub unread: u32,
    /// The newest message's (clock, id).
    #[prost(uint64, tag = "4")]
    pub last_clock: u64,
    /// Id of the newest message.
    #[prost(bytes = "vec", tag = "5")]
    pub last_id: Vec<u8>,
    /// The newest message's text, truncated for the list.
    #[prost(string, tag = "6")]
    pub last_preview: String,
    /// Wall clock of the newest message.
    #[prost(uint64, tag = "7")]
    pub last_at_ms: u64,
}

/// Message status (outgoing), in the order it only ever moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Stored locally, not yet acked by the relay.
    Pending = 0,
    /// Acked by the relay (durable there).
    Sent = 1,
    /// A recipient device stored it.
    Delivered = 2,
    /// The recipient read it.
    Read = 3,
    /// Incoming: received.
    Received = 4,
    /// Incoming: read here (or on another of our devices).
    Seen = 5,
    /// Outgoing: refused by the relay for good.
    Failed = 6,
}

/// One message of the history.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The message id.
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// The conversation (peer account id).
    #[prost(bytes = "vec", tag = "3")]
    pub conversation: Vec<u8>,
    /// Who wrote it (account id).
    #[prost(bytes = "vec", tag = "4")]
    pub sender: Vec<u8>,
    /// From which device.
    #[prost(uint32, tag = "5")]
    pub sender_device: u32,
    /// The Lamport clock it was sent with.
    #[prost(uint64, tag = "6")]
    pub clock: u64,
    /// The text.
    #[prost(string, tag = "7")]
    pub body: String,
    /// The sender's wall clock.
    #[prost(uint64, tag = "8")]
    pub sent_at_ms: u64,
    /// Whether we (any of our devices) wrote it.
    #[prost(bool, tag = "9")]
    pub outgoing: bool,
    /// Status.
    #[prost(enumeration = "Status", tag = "10")]
    pub status: i32,
    /// Outgoing, pending or failed: the code of the last refusal (why it is still pending,
    /// or why it failed); empty otherwise.
    #[prost(string, tag = "11")]
    pub problem_code: String,
    /// The message that came with `problem_code`.
    #[prost(string, tag = "12")]
    pub problem: String,
    /// What it is: a text, or a group event in the timeline.
    #[prost(enumeration = "MessageKind", tag = "13")]
    pub kind: i32,
    /// Outgoing to a group: each member's receipt so far (members not listed have none).
    #[prost(message, repeated, tag = "14")]
    pub receipts: Vec<MemberReceipt>,
    /// The file sent with the message, if any (its pointer, with the key).
    #[prost(message, optional, tag = "15")]
    pub attachment: Option<crate::content::Attachment>,
}

/// What a history entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MessageKind {
    /// A text message.
    Text = 0,
    /// A group change in the timeline ("Alice added Bob"); `body` describes it.
    GroupEvent = 1,
}

/// One member's receipt for an outgoing group message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberReceipt {
    /// The member's account id.
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// `Delivered` or `Read`.
    #[prost(enumeration = "Status", tag = "2")]
    pub status: i32,
}

/// One row of the search index: the messages of one commit that contain one token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostingsRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// `Messages` keys, in the order they were written.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub message_keys: Vec<Vec<u8>>,
}

impl PostingsRecord {
    /// Encodes a record of [`RECORD_VERSION`] over borrowed keys: byte for byte what
    /// [`Record::to_bytes`] gives, without copying every key into an owned record first.
    pub fn encode_keys<'a>(keys: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, uint32};
        let len: usize =
            keys.clone().map(|k| 1 + encoded_len_varint(k.len() as u64) + k.len()).sum();
        let mut buf = Vec::with_capacity(uint32::encoded_len(1, &RECORD_VERSION) + len);
        uint32::encode(1, &RECORD_VERSION, &mut buf);
        for k in keys {
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(k.len() as u64, &mut buf);
            buf.extend_from_slice(k);
        }
        buf
    }
}

/// Outgoing work that survives restarts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The content for the peer (encoded [`Content`](crate::content::Content)); empty if none.
    #[prost(bytes = "vec", tag = "2")]
    pub peer_content: Vec<u8>,
    /// The peer account (empty: only our own devices).
    #[prost(bytes = "vec", tag = "3")]
    pub peer: Vec<u8>,
    /// The content for our own other devices; empty if none.
    #[prost(bytes = "vec", tag = "4")]
    pub own_content: Vec<u8>,
    /// The history message this sends, whose status moves to sent on the relay's ack.
    #[prost(bytes = "vec", tag = "5")]
    pub message_id: Vec<u8>,
    /// Sent ephemeral (typing): never stored by the relay, never retried.
    #[prost(bool, tag = "7")]
    pub ephemeral: bool,
    /// Envelopes already encrypted; resent verbatim after a restart so no ratchet step repeats.
    #[prost(message, repeated, tag = "6")]
    pub prepared: Vec<PreparedEnvelope>,
    /// A group send: the group id (empty for 1:1 work). `peer` is then empty.
    #[prost(bytes = "vec", tag = "8")]
    pub group_id: Vec<u8>,
    /// A group send: the distribution (§16.3) of the key `group_payload` is under, at the
    /// iteration that opens it, for devices that don't hold the key yet.
    #[prost(bytes = "vec", tag = "9")]
    pub group_distribution: Vec<u8>,
    /// A group send: the sender-key message, once encrypted (resent verbatim).
    #[prost(bytes = "vec", tag = "10")]
    pub group_payload: Vec<u8>,
    /// A group send: the key id `group_payload` is under.
    #[prost(uint32, tag = "11")]
    pub group_key_id: u32,
    /// A group send: who gets it. Set for a change: the members before and after it, as they
    /// were when it was made (removed members learn of their removal; a later change doesn't
    /// take anyone out of an earlier one's chain). Empty for a message: the members at the
    /// time it is sent.
    #[prost(bytes = "vec", repeated, tag = "12")]
    pub recipients: Vec<Vec<u8>>,
    /// A group send: devices the relay acked this entry's key to (they hold it even if this
    /// device has rotated since).
    #[prost(message, repeated, tag = "16")]
    pub keyed: Vec<DeviceRef>,
    /// A group send: devices that hold the key and get the shared `group_payload` (worked out
    /// for each attempt; empty as stored).
    #[prost(message, repeated, tag = "14")]
    pub shared: Vec<PreparedEnvelope>,
}

/// An attachment being uploaded: everything needed to go on with it after a restart and then
/// send its message. Written before the first byte goes out, deleted in the transaction that
/// queues the message (or when the user gives up). Holds the attachment key: `Debug` shows
/// none of the pointer's secrets, and drop wipes it (the pointer's own `Drop`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The message the file will be sent as.
    #[prost(bytes = "vec", tag = "2")]
    pub message_id: Vec<u8>,
    /// The conversation (an account id or a group id, hex).
    #[prost(string, tag = "3")]
    pub conversation: String,
    /// The message's text.
    #[prost(string, tag = "4")]
    pub caption: String,
    /// The pointer as far as it is known: key, labels, thumbnail and sizes from the start, the
    /// blob id once the relay made it; digest and blob size come at the end.
    #[prost(message, optional, tag = "5")]
    pub pointer: Option<crate::content::Attachment>,
    /// Where the plaintext is read from; empty for bytes handed over in memory (such an upload
    /// can't go on after a restart: it waits for the user to give up or send again).
    #[prost(string, tag = "6")]
    pub path: String,
    /// The file's modification time when the upload started (ns since the epoch), so a file
    /// changed since is not sent as a mix of two versions.
    #[prost(uint64, tag = "7")]
    pub modified_ns: u64,
    /// The relay's largest put for the blob.
    #[prost(uint32, tag = "8")]
    pub max_put: u32,
    /// Why the upload stopped, if it did (the error's code), for the app to show.
    #[prost(string, tag = "9")]
    pub problem: String,
}

/// A group this device belongs to (or belonged to): its canonical log and this device's
/// sender key. Holds the sender key's secrets: `Debug` is redacted, and drop wipes it.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct GroupRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Group id.
    #[prost(bytes = "vec", tag = "2")]
    pub group_id: Vec<u8>,
    /// The state at the start of the log's window (None: a group known only by its id, whose
    /// state a sibling device is asked for).
    #[prost(message, optional, tag = "3")]
    pub base: Option<crate::group::GroupSnapshot>,
    /// Canonical changes after `base`, oldest first.
    #[prost(message, repeated, tag = "4")]
    pub chain: Vec<crate::group::SignedGroupChange>,
    /// Hashes of changes that lost a fork.
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub beaten: Vec<Vec<u8>>,
    /// This device's sender key state (empty: none yet).
    #[prost(bytes = "vec", tag = "6")]
    pub my_key: Vec<u8>,
    /// Devices that hold `my_key` (got its distribution in an acked send).
    #[prost(message, repeated, tag = "7")]
    pub key_holders: Vec<DeviceRef>,
    /// Rotate `my_key` before the next group message (a member or device left).
    #[prost(bool, tag = "8")]
    pub rotate: bool,
}

impl std::fmt::Debug for GroupRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRecord")
            .field("group_id", &hex::encode(&self.group_id))
            .field("chain", &self.chain.len())
            .field("my_key", &redacted(&self.my_key))
            .field("key_holders", &self.key_holders.len())
            .field("rotate", &self.rotate)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupRecord {
    fn drop(&mut self) {
        self.my_key.zeroize();
    }
}

/// A device of an account.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DeviceRef {
    /// Account id.
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// Device id.
    #[prost(uint32, tag = "2")]
    pub device_id: u32,
}

/// The sender keys received from one device for one group (newest first; at most two, so a
/// message sent just before a rotation still opens). States hold chain keys: redacted, wiped.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ReceivedKeysRecord {
    /// [`RECORD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// `ReceivedKey` states (hush-core's versioned encoding), newest first.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub states: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ReceivedKeysRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceivedKeysRecord(<{} redacted>)", self.states.len())
    }
}

impl Drop for ReceivedKeysRecord {
    fn drop(&mut self) {
        self.states.zeroize();
    }
}

/// One encrypted envelope waiting for the relay.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreparedEnvelope {
    /// Recipient account.
    #[prost(bytes = "vec", tag = "1")]
    pub account: Vec<u8>,
    /// Recipient device.
    #[prost(uint32, tag = "2")]
    pub device_id: u32,
    /// Its registration id as we know it.
    #[prost(uint32, tag = "3")]
    pub registration_id: u32,
    /// The ratchet message.
    #[prost(bytes = "vec", tag = "4")]
    pub ciphertext: Vec<u8>,
}

/// A record failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a record of this type.
    #[error("a stored record is corrupt ({0})")]
    Corrupt(&'static str),
    /// Written by a newer build.
    #[error("a stored record has version {0}, newer than this build reads")]
    UnsupportedVersion(u32),
}

/// Values of the `MessageIds` table: where a message id's record is in `Messages`.
///
/// The value is the message's key, `blind(conversation) ‖ clock ‖ id`, which `Messages` shows
/// as a key anyway, so sealing it would hide nothing: it is stored as `0x00 ‖ message key`
/// (format 0, plain), which saves an XChaCha20-Poly1305 seal per message written, a third of
/// the seals of a received message. Integrity does not rest on a tag: a row is believed only if
/// the key it names has a message key's length and ends with the id that was looked up, and
/// the record at that key is sealed for that key. A row someone changed on disk can therefore
/// only point at nothing, which is no more than deleting it, something no sealing prevents.
/// Rows written before format 0 are sealed values (first byte
/// [`SEALED_VERSION`](crate::vault::SEALED_VERSION)) and still open.
pub mod id_row {
    use super::{RecordError, Vault, keys};
    use crate::store::Table;
    use crate::vault::SEALED_VERSION;

    /// Format byte of a plain row.
    pub const PLAIN: u8 = 0;

    /// The row value naming `message_key`.
    pub fn encode(message_key: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + message_key.len());
        v.push(PLAIN);
        v.extend_from_slice(message_key);
        v
    }

    /// The message key named by the row of `id` (stored at `blinded`), checked as above.
    pub fn decode(
        vault: &Vault,
        blinded: &[u8],
        id: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, crate::client::ClientError> {
        let key = match value.split_first() {
            Some((&PLAIN, key)) => key.to_vec(),
            Some((&SEALED_VERSION, _)) => vault.open(Table::MessageIds, blinded, value)?.to_vec(),
            _ => return Err(RecordError::Corrupt("message id row").into()),
        };
        if !keys::is_message_key_of(&key, id) {
            return Err(RecordError::Corrupt("message id row").into());
        }
        Ok(key)
    }
}

/// Records with a version field.
pub trait Record: prost::Message + Default + Sized {
    /// The record's name in errors.
    const NAME: &'static str;
    /// The version field.
    fn version(&self) -> u32;

    /// Decodes and checks the version.
    fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let r = Self::decode(bytes).map_err(|_| RecordError::Corrupt(Self::NAME))?;
        if r.version() > RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(r.version()));
        }
        Ok(r)
    }

    /// Encodes.
    fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

macro_rules! record {
    ($($t:ident),*) => {$(
        impl Record for $t {
            const NAME: &'static str = stringify!($t);
            fn version(&self) -> u32 { self.version }
        }
    )*};
}
record!(
    AccountRecord,
    SessionRecord,
    ContactRecord,
    ConversationRecord,
    MessageRecord,
    OutboxRecord,
    PostingsRecord,
    GroupRecord,
    ReceivedKeysRecord,
    UploadRecord
);

/// Key builders. Identifiers are blinded; order-carrying parts are big-endian.
pub mod keys {
    use super::*;

    /// `Sessions`: blind(account) ‖ device id.
    pub fn session(v: &Vault, account: &[u8], device: u32) -> Vec<u8> {
        [&account_prefix(v, account)[..], &device.to_be_bytes()].concat()
    }

    /// The blinded account prefix (sessions of one account; contacts; conversations).
    pub fn account_prefix(v: &Vault, account: &[u8]) -> [u8; BLIND_LEN] {
        v.blind(b"account", account)
    }

    /// `Messages`: blind(conversation) ‖ clock ‖ message id — the conversation order, the same on
    /// every device because the clock and the id travel inside the message.
    pub fn message(v: &Vault, conversation: &[u8], clock: u64, id: &[u8]) -> Vec<u8> {
        message_in(&conversation_prefix(v, conversation), clock, id)
    }

    /// [`message`] with the conversation's prefix already blinded.
    pub fn message_in(prefix: &[u8; BLIND_LEN], clock: u64, id: &[u8]) -> Vec<u8> {
        [&prefix[..], &clock.to_be_bytes(), id].concat()
    }

    /// Whether `key` has the shape of a [`message`] key for message `id`.
    pub fn is_message_key_of(key: &[u8], id: &[u8]) -> bool {
        key.len() == BLIND_LEN + 8 + id.len() && key.ends_with(id)
    }

    /// The prefix of a conversation's messages.
    pub fn conversation_prefix(v: &Vault, conversation: &[u8]) -> [u8; BLIND_LEN] {
        v.blind(b"conversation", conversation)
    }

    /// `MessageIds`: blind(message id).
    pub fn message_id(v: &Vault, id: &[u8]) -> [u8; BLIND_LEN] {
        v.blind(b"message_id", id)
    }

    /// `SearchIndex`: blind(token) ‖ the first message key of the postings row (sealed
    /// [`PostingsRecord`] values; one row per token per commit).
    pub fn search(v: &Vault, token: &str, first_message_key: &[u8]) -> Vec<u8> {
        [&search_prefix(v, token)[..], first_message_key].concat()
    }

    /// The prefix of one token's postings.
    pub fn search_prefix(v: &Vault, token: &str) -> [u8; BLIND_LEN] {
        v.blind(b"token", token.as_bytes())
    }

    /// A group's row in `Groups`.
    pub fn group(v: &Vault, group: &[u8]) -> [u8; BLIND_LEN] {
        v.blind(b"group", group)
    }

    /// The sender keys received from one device for one group, in `SenderKeys`.
    pub fn received_keys(v: &Vault, group_id: &[u8], account: &[u8], device: u32) -> Vec<u8> {
        [&group(v, group_id)[..], &account_prefix(v, account), &device.to_be_bytes()].concat()
    }

    /// `Meta`: an upload in progress, `upload/` ‖ blind(message id).
    pub fn upload(v: &Vault, message_id: &[u8]) -> Vec<u8> {
        [meta::UPLOADS, &v.blind(b"upload", message_id)[..]].concat()
    }

    /// `Outbox`: queue position.
    pub fn outbox(seq: u64) -> [u8; 8] {
        seq.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answers() {
        let m = MessageRecord {
            version: 1,
            id: vec![2; 16],
            conversation: vec![3; 32],
            sender: vec![4; 32],
            sender_device: 1,
            clock: 9,
            body: "hi".into(),
            sent_at_ms: 5,
            outgoing: true,
            status: Status::Sent as i32,
            problem_code: String::new(),
            problem: String::new(),
            ..Default::default()
        };
        let expected = format!(
            "0801{}{}{}{}{}{}{}{}{}",
            format_args!("1210{}", "02".repeat(16)),
            format_args!("1a20{}", "03".repeat(32)),
            format_args!("2220{}", "04".repeat(32)),
            "2801",
            "3009",
            "3a026869",
            "4005",
            "4801",
            "5001"
        );
        assert_eq!(hex::encode(m.to_bytes()), expected);
        assert_eq!(MessageRecord::from_bytes(&m.to_bytes()).unwrap(), m);
        let newer = MessageRecord { version: 2, ..m };
        assert_eq!(
            MessageRecord::from_bytes(&newer.to_bytes()),
            Err(RecordError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn message_keys_from_a_blinded_prefix_are_the_same_keys() {
        let v = Vault::new(&crate::vault::StoreKey::from_bytes([7; 32]));
        let (conversation, id) = ([3u8; 32], [2u8; 16]);
        let key = keys::message(&v, &conversation, 9, &id);
        assert_eq!(keys::message_in(&keys::conversation_prefix(&v, &conversation), 9, &id), key);
        assert_eq!(key.len(), crate::vault::BLIND_LEN + 8 + 16);
        assert_eq!(&key[crate::vault::BLIND_LEN..][..8], &9u64.to_be_bytes());
    }

    #[test]
    fn id_rows_are_plain_checked_and_read_the_sealed_ones_written_before() {
        use crate::store::Table;
        let v = Vault::new(&crate::vault::StoreKey::from_bytes([7; 32]));
        let (id, other) = ([2u8; 16], [5u8; 16]);
        let key = keys::message(&v, &[3u8; 32], 9, &id);
        let blinded = keys::message_id(&v, &id);
        let row = id_row::encode(&key);
        assert_eq!(row[0], id_row::PLAIN);
        assert_eq!(&row[1..], key.as_slice());
        assert_eq!(id_row::decode(&v, &blinded, &id, &row).unwrap(), key);
        // A row written by an earlier build: the key sealed for the row.
        let sealed = v.seal(Table::MessageIds, &blinded, &key);
        assert_eq!(id_row::decode(&v, &blinded, &id, &sealed).unwrap(), key);
        // Rows that name another message's key, or no key, or are of no known format.
        let elsewhere = keys::message(&v, &[3u8; 32], 9, &other);
        for bad in [
            id_row::encode(&elsewhere),
            id_row::encode(&key[1..]),
            id_row::encode(&[key.as_slice(), &[0]].concat()),
            vec![],
            [&[9u8][..], &key].concat(),
            v.seal(Table::MessageIds, &keys::message_id(&v, &other), &key),
        ] {
            let e = id_row::decode(&v, &blinded, &id, &bad).unwrap_err();
            assert_eq!(e.code(), "corrupt_store", "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn postings_encode_keys_matches_prost(keys in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let owned = PostingsRecord { version: RECORD_VERSION, message_keys: keys.clone() };
            prop_assert_eq!(
                PostingsRecord::encode_keys(keys.iter().map(Vec::as_slice)),
                owned.to_bytes()
            );
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = AccountRecord::from_bytes(&bytes);
            let _ = SessionRecord::from_bytes(&bytes);
            let _ = ContactRecord::from_bytes(&bytes);
            let _ = ConversationRecord::from_bytes(&bytes);
            let _ = MessageRecord::from_bytes(&bytes);
            let _ = OutboxRecord::from_bytes(&bytes);
            let _ = PostingsRecord::from_bytes(&bytes);
            let v = Vault::new(&crate::vault::StoreKey::from_bytes([7; 32]));
            let _ = id_row::decode(&v, &[1; 16], &[2; 16], &bytes);
        }
    }
}
