//! A pairwise end-to-end session: the handshake, then the Double Ratchet.
//!
//! The initiator creates a [`Session`] from a verified bundle and keeps wrapping its messages
//! in prekey messages (carrying the handshake header) until it has decrypted a reply, so the
//! responder can start the session from whichever of them arrives first. The responder creates
//! its [`Session`] with [`Session::accept`], which consumes its one-time prekeys only after the
//! first message decrypted.
//!
//! Sans-I/O: bytes in, bytes out. The caller persists [`Session::to_bytes`] (and the
//! [`DevicePrekeys`] state after [`Session::accept`]) before acknowledging a message. The state
//! format is versioned and pinned by a known-answer test.

use hush_prekeys::codec::{Reader, Truncated, Writer};
use hush_prekeys::handshake::ASSOCIATED_DATA_LEN;
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, VerifiedBundle, initiate};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::error::SessionError;
use crate::message::{self, Incoming, MAX_PLAINTEXT_LEN, MESSAGE_VERSION, TYPE_PREKEY};
use crate::ratchet::{Chain, MAX_PREVIOUS_RATCHET_KEYS, MAX_SKIPPED_KEYS, Ratchet, SkippedKeys};

/// Version byte of the persisted session format.
pub const SESSION_STATE_VERSION: u8 = 1;

/// Which side of the handshake this session was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started the session from a bundle.
    Initiator,
    /// Accepted a prekey message.
    Responder,
}

/// One end of a pairwise session.
pub struct Session {
    role: Role,
    associated_data: [u8; ASSOCIATED_DATA_LEN],
    /// SHA-256 of the encoded initial header ([`message::handshake_id`]).
    handshake_id: [u8; 32],
    /// The encoded handshake header, kept by the initiator until it hears back.
    pending_header: Option<Vec<u8>>,
    ratchet: Ratchet,
}

impl Session {
    /// Starts a session with the owner of `bundle`. Draws 32 + 32 bytes for the handshake and 32
    /// for the first ratchet key from `rng`.
    pub fn initiate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        ours: &IdentityKeyPair,
        bundle: &VerifiedBundle,
    ) -> Result<Self, SessionError> {
        let hs = initiate(rng, ours, bundle)?;
        let mut ratchet_secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ratchet_secret.as_mut());
        let ratchet = Ratchet::init_initiator(
            hs.shared_secret.as_bytes(),
            hs.their_ratchet_key,
            ratchet_secret,
        );
        let mut header = Vec::with_capacity(hs.header.encoded_len());
        hs.header.write(&mut header);
        Ok(Self {
            role: Role::Initiator,
            associated_data: hs.associated_data,
            handshake_id: message::handshake_id(&header),
            pending_header: Some(header),
            ratchet,
        })
    }

    /// Accepts a prekey message: runs the responder handshake, decrypts the embedded message and
    /// only then consumes the one-time prekeys in `prekeys`. On error nothing changes.
    pub fn accept(
        ours: &IdentityKeyPair,
        prekeys: &mut DevicePrekeys,
        message: &[u8],
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let Incoming::PreKey { header, header_bytes, message } = message::decode(message)? else {
            return Err(SessionError::Malformed("expected a prekey message"));
        };
        let hs = prekeys.respond(ours, &header)?;
        let mut ratchet = Ratchet::init_responder(
            hs.shared_secret.as_bytes(),
            Zeroizing::new(*hs.ratchet_secret().as_bytes()),
        );
        let plaintext = ratchet.decrypt(&message, &hs.associated_data)?;
        prekeys.commit(&hs)?;
        let session = Self {
            role: Role::Responder,
            associated_data: hs.associated_data,
            handshake_id: message::handshake_id(header_bytes),
            pending_header: None,
            ratchet,
        };
        Ok((session, plaintext))
    }

    /// Encrypts `plaintext` (at most 1 MiB). Until the initiator has received a reply, the
    /// result is a prekey message.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SessionError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SessionError::TooLarge { len: plaintext.len(), limit: MAX_PLAINTEXT_LEN });
        }
        let inner = self.ratchet.encrypt(rng, plaintext, &self.associated_data)?;
        Ok(match &self.pending_header {
            None => inner,
            Some(header) => {
                let mut out = Vec::with_capacity(2 + header.len() + inner.len());
                out.extend_from_slice(&[MESSAGE_VERSION, TYPE_PREKEY]);
                out.extend_from_slice(header);
                out.extend_from_slice(&inner);
                out
            }
        })
    }

    /// Decrypts a message (or a repeated prekey message of this same handshake). On error the
    /// session is unchanged.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, SessionError> {
        let message = match message::decode(message)? {
            Incoming::Message(m) => m,
            Incoming::PreKey { header_bytes, message, .. } => {
                if message::handshake_id(header_bytes) != self.handshake_id {
                    return Err(SessionError::SessionMismatch);
                }
                message
            }
        };
        let plaintext = self.ratchet.decrypt(&message, &self.associated_data)?;
        // Hearing from the peer proves it has the session: stop sending the handshake.
        self.pending_header = None;
        Ok(plaintext)
    }

    /// Which side of the handshake this session was.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session's id: SHA-256 of its initial header. A prekey message whose
    /// [`Incoming::handshake_id`](crate::message::Incoming::handshake_id) equals it belongs here.
    pub fn handshake_id(&self) -> [u8; 32] {
        self.handshake_id
    }

    /// The peer's 64-byte identity encoding (Ed25519 ‖ X25519), as bound into the session.
    pub fn remote_identity(&self) -> [u8; 64] {
        let (initiator, responder) = self.associated_data.split_at(64);
        let remote = match self.role {
            Role::Initiator => responder,
            Role::Responder => initiator,
        };
        let mut out = [0u8; 64];
        out.copy_from_slice(remote);
        out
    }

    /// The associated data bound into every message: initiator identity ‖ responder identity.
    pub fn associated_data(&self) -> &[u8; ASSOCIATED_DATA_LEN] {
        &self.associated_data
    }

    /// Whether outgoing messages still carry the handshake header.
    pub fn is_pending(&self) -> bool {
        self.pending_header.is_some()
    }

    /// Number of skipped message keys currently stored.
    pub fn skipped_key_count(&self) -> usize {
        self.ratchet.skipped.len()
    }

    /// The versioned persisted form (docs/PROTOCOL.md, "Session state"). Contains secrets:
    /// store it encrypted; the buffer is zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let r = &self.ratchet;
        let mut out = Zeroizing::new(Vec::with_capacity(
            512 + r.skipped.len() * 68 + self.pending_header.as_ref().map_or(0, Vec::len),
        ));
        out.push(SESSION_STATE_VERSION);
        out.push(match self.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        out.extend_from_slice(&self.associated_data);
        out.extend_from_slice(&self.handshake_id);
        match &self.pending_header {
            Some(h) => {
                out.push(1);
                out.put_u32(u32::try_from(h.len()).unwrap_or(u32::MAX));
                out.extend_from_slice(h);
            }
            None => out.push(0),
        }
        out.extend_from_slice(r.root_key.as_ref());
        out.extend_from_slice(r.our_secret.as_ref());
        out.extend_from_slice(&r.our_public);
        write_chain(&mut out, r.sending.as_ref());
        out.put_u32(r.previous_sending_n);
        match &r.their_public {
            Some(k) => {
                out.push(1);
                out.extend_from_slice(k);
            }
            None => out.push(0),
        }
        write_chain(&mut out, r.receiving.as_ref());
        out.push(u8::try_from(r.previous_theirs.len()).unwrap_or(u8::MAX));
        for k in &r.previous_theirs {
            out.extend_from_slice(k);
        }
        out.put_u32(u32::try_from(r.skipped.len()).unwrap_or(u32::MAX));
        for (key, n, mk) in r.skipped.iter() {
            out.extend_from_slice(key);
            out.put_u32(n);
            out.extend_from_slice(mk.as_ref());
        }
        out
    }

    /// Restores a session saved by [`Session::to_bytes`]. Rejects unknown versions, truncated
    /// or trailing bytes, bad flags and counts above the protocol bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let t = |_: Truncated| SessionError::CorruptState("truncated");
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(t)?;
        if version != SESSION_STATE_VERSION {
            return Err(SessionError::UnsupportedStateVersion(version));
        }
        let role = match r.u8().map_err(t)? {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return Err(SessionError::CorruptState("unknown role")),
        };
        let associated_data = r.array().map_err(t)?;
        let handshake_id = r.array().map_err(t)?;
        let pending_header = if read_flag(&mut r)? {
            let len = r.u32().map_err(t)? as usize;
            Some(r.take(len).map_err(t)?.to_vec())
        } else {
            None
        };
        let root_key = Zeroizing::new(r.array().map_err(t)?);
        let our_secret = Zeroizing::new(r.array().map_err(t)?);
        let our_public = r.array().map_err(t)?;
        let sending = read_chain(&mut r)?;
        let previous_sending_n = r.u32().map_err(t)?;
        let their_public = if read_flag(&mut r)? { Some(r.array().map_err(t)?) } else { None };
        let receiving = read_chain(&mut r)?;
        let previous_count = usize::from(r.u8().map_err(t)?);
        if previous_count > MAX_PREVIOUS_RATCHET_KEYS {
            return Err(SessionError::CorruptState("too many previous ratchet keys"));
        }
        let previous_theirs =
            (0..previous_count).map(|_| r.array().map_err(t)).collect::<Result<_, _>>()?;
        let skipped_count = r.u32().map_err(t)? as usize;
        if skipped_count > MAX_SKIPPED_KEYS {
            return Err(SessionError::CorruptState("too many skipped keys"));
        }
        let mut skipped = SkippedKeys::default();
        for _ in 0..skipped_count {
            let key = r.array().map_err(t)?;
            let n = r.u32().map_err(t)?;
            skipped.insert(key, n, Zeroizing::new(r.array().map_err(t)?));
        }
        r.finish().map_err(|_| SessionError::CorruptState("trailing bytes"))?;
        Ok(Self {
            role,
            associated_data,
            handshake_id,
            pending_header,
            ratchet: Ratchet {
                root_key,
                our_secret,
                our_public,
                sending,
                previous_sending_n,
                their_public,
                receiving,
                previous_theirs,
                skipped,
            },
        })
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("pending", &self.is_pending())
            .field("ratchet", &self.ratchet)
            .finish_non_exhaustive()
    }
}

fn write_chain(out: &mut Vec<u8>, chain: Option<&Chain>) {
    match chain {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(c.key.as_ref());
            out.put_u32(c.n);
        }
        None => out.push(0),
    }
}

fn read_flag(r: &mut Reader<'_>) -> Result<bool, SessionError> {
    match r.u8() {
        Ok(0) => Ok(false),
        Ok(1) => Ok(true),
        Ok(_) => Err(SessionError::CorruptState("bad flag byte")),
        Err(_) => Err(SessionError::CorruptState("truncated")),
    }
}

fn read_chain(r: &mut Reader<'_>) -> Result<Option<Chain>, SessionError> {
    if !read_flag(r)? {
        return Ok(None);
    }
    let t = |_: Truncated| SessionError::CorruptState("truncated");
    let key = Zeroizing::new(r.array().map_err(t)?);
    let n = r.u32().map_err(t)?;
    Ok(Some(Chain { key, n }))
}
