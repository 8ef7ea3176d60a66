//! An in-memory relay behind the client's own transport traits ([`Connector`], [`Link`],
//! [`Deliveries`]), for fast client tests: no process, no sockets, no disk.
//!
//! It keeps what the real relay keeps and checks what the real relay checks where a client's
//! behaviour depends on it (docs/PROTOCOL.md §14): account-signed device lists (newer versions
//! only; removed devices lose their prekeys, mailbox and connections), auth by a signature over
//! a single-use nonce and the link's channel binding, prekey uploads verified against the
//! device identity and claimed once each, sends checked against the addressed accounts' device
//! lists (`device_mismatch` with missing, extra and stale devices), per-device mailboxes
//! delivered in sequence order until acked, `QueueEmpty` after the stored backlog, and
//! ephemeral sends to subscribers only. It leaves out what only the relay binary is about:
//! quotas, rate limits, memory budgets, TLS and durability across its own restarts (the
//! end-to-end tests cover those against the real binary).
//!
//! Faults for crash tests: [`MemoryRelay::sever`] cuts every open link (a network blip),
//! [`MemoryRelay::set_down`] refuses connections until it is brought back up, and
//! [`MemoryRelay::lose_response`] makes the relay carry out a chosen request and then drop the
//! link instead of answering (the response lost on the way back, the case that makes clients
//! resend; [`MemoryRelay::lose_next_send_response`] aims that at the next stored send).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use hush_core::transport::{Connector, Deliveries, Link, TransportError};
use hush_prekeys::{KemPreKey, KemPreKeyKind, OneTimePreKey, PreKeyBundle, SignedPreKey};
use hush_protocol::auth::transcript;
use hush_protocol::wire::{self, request, response, server_push};
use hush_protocol::{AccountKey, DeviceList, ErrorCode, Refusal};
use rand::RngExt;
use tokio::sync::{Notify, mpsc};

type AccountId = [u8; 32];
type DeviceKey = (AccountId, u32);

/// A relay held in memory. Cloning it gives another handle to the same relay.
#[derive(Clone, Default)]
pub struct MemoryRelay {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken whenever a mailbox grows or a link closes.
    changed: Notify,
    /// Requests carried out so far (numbering starts at 1).
    requests: AtomicU64,
}

#[derive(Default)]
struct State {
    accounts: HashMap<AccountId, DeviceList>,
    prekeys: HashMap<DeviceKey, Prekeys>,
    mailboxes: HashMap<DeviceKey, BTreeMap<u64, wire::Delivery>>,
    next_seq: u64,
    /// Live subscriptions' ephemeral channels.
    online: HashMap<DeviceKey, Vec<mpsc::UnboundedSender<wire::Delivery>>>,
    links: Vec<Weak<LinkState>>,
    /// Request numbers whose response is lost (the link drops after carrying them out).
    lose: HashSet<u64>,
    /// Every stored send, for tests that count what reached the relay.
    stored_sends: u64,
    /// Stored sends still to lose their response.
    lose_sends: u32,
    /// Payloads of stored sends whose response was lost, and whether one came again.
    lost_sends: Vec<Vec<Vec<u8>>>,
    resent: bool,
    /// Blobs: owner, declared size, bytes so far.
    blobs: HashMap<[u8; 32], (DeviceKey, u64, Vec<u8>)>,
    /// Refusing connections (the relay is down).
    down: bool,
    /// A copy of every stored delivery, by recipient device (what a relay operator, or an
    /// attacker with its disk, could keep).
    stored: Vec<(DeviceKey, wire::Delivery)>,
}

#[derive(Default)]
struct Prekeys {
    signed: Option<SignedPreKey>,
    one_time: BTreeMap<u32, OneTimePreKey>,
    kem: BTreeMap<u32, KemPreKey>,
    last_resort: Option<KemPreKey>,
}

/// The real relay's put size and alignment (64 chunks of 16,000 bytes).
const BLOB_PUT_ALIGN: u32 = 16_000;
const BLOB_MAX_PUT: u32 = 64 * BLOB_PUT_ALIGN;

fn blob_progress(size: u64, committed: usize) -> wire::BlobProgress {
    wire::BlobProgress {
        size,
        committed: committed as u64,
        complete: committed as u64 == size,
        expires_at_ms: now_ms() + 24 * 3600 * 1000,
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> TransportError {
    TransportError::Relay(Refusal::new(code, message))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl MemoryRelay {
    /// An empty relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector clients use to reach this relay.
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts every open link, as a network outage does; clients reconnect.
    pub fn sever(&self) {
        let links: Vec<_> = self.lock().links.drain(..).filter_map(|l| l.upgrade()).collect();
        for l in links {
            l.close();
        }
        self.shared.changed.notify_waiters();
    }

    /// Takes the relay down (every link cut, connections refused) or brings it back up.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        if down {
            self.sever();
        }
    }

    /// Makes request number `n` (counting every request carried out since the relay was made,
    /// from 1) lose its response: the relay carries it out, then drops the link.
    pub fn lose_response(&self, n: u64) {
        self.lock().lose.insert(n);
    }

    /// Makes the next stored send lose its response (the relay stores it, then drops the
    /// link), so the client sends it again.
    pub fn lose_next_send_response(&self) {
        self.lock().lose_sends += 1;
    }

    /// Whether a send whose response was lost came again (the same payloads).
    pub fn resent_after_lost_response(&self) -> bool {
        self.lock().resent
    }

    /// Requests carried out so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stored (non-ephemeral) sends accepted so far.
    pub fn stored_sends(&self) -> u64 {
        self.lock().stored_sends
    }

    /// Every stored delivery ever addressed to `device` of `account`, acked or not.
    pub fn stored_for(&self, account: [u8; 32], device: u32) -> Vec<wire::Delivery> {
        let st = self.lock();
        st.stored.iter().filter(|(k, _)| *k == (account, device)).map(|(_, d)| d.clone()).collect()
    }

    /// Puts a delivery into a device's mailbox as if the relay had stored it for that device
    /// (a relay handing ciphertext to someone it was not addressed to).
    pub fn inject(&self, account: [u8; 32], device: u32, mut delivery: wire::Delivery) {
        let mut st = self.lock();
        st.next_seq += 1;
        delivery.seq = st.next_seq;
        st.mailboxes.entry((account, device)).or_default().insert(delivery.seq, delivery);
        drop(st);
        self.shared.changed.notify_waiters();
    }

    /// Takes out of a device's mailbox what waits there from `sender`, in order: a relay holding
    /// envelopes back, to hand them over later and out of order with [`Self::inject`].
    pub fn withhold(
        &self,
        account: [u8; 32],
        device: u32,
        sender: [u8; 32],
    ) -> Vec<wire::Delivery> {
        let mut st = self.lock();
        let Some(mailbox) = st.mailboxes.get_mut(&(account, device)) else { return Vec::new() };
        let seqs: Vec<u64> =
            mailbox.iter().filter(|(_, d)| d.sender_account == sender).map(|(s, _)| *s).collect();
        seqs.into_iter().filter_map(|s| mailbox.remove(&s)).collect()
    }

    /// Flips a byte of a stored blob (a relay or disk that corrupts what it holds).
    pub fn tamper_blob(&self, blob_id: &[u8], offset: usize) {
        let mut st = self.lock();
        for (id, (_, _, bytes)) in st.blobs.iter_mut() {
            if id.as_slice() == blob_id
                && let Some(b) = bytes.get_mut(offset)
            {
                *b ^= 1;
            }
        }
    }

    /// The ids of the blobs stored so far.
    pub fn blob_ids(&self) -> Vec<Vec<u8>> {
        self.lock().blobs.keys().map(|k| k.to_vec()).collect()
    }

    /// Envelopes waiting, over every mailbox.
    pub fn waiting(&self) -> usize {
        self.lock().mailboxes.values().map(BTreeMap::len).sum()
    }

    fn handle(
        &self,
        link: &LinkState,
        body: request::Body,
    ) -> Result<response::Body, TransportError> {
        let mut st = self.lock();
        let authed =
            || link.device().ok_or_else(|| refuse(ErrorCode::NotAuthenticated, "auth first"));
        match body {
            request::Body::Register(r) => {
                let list = DeviceList::decode(&r.device_list)
                    .map_err(|e| refuse(e.code(), e.to_string()))?;
                let account = *list.account.as_bytes();
                let mut removed = Vec::new();
                if let Some(old) = st.accounts.get(&account) {
                    if list.version <= old.version {
                        return Err(refuse(ErrorCode::StaleDeviceList, "not newer"));
                    }
                    for d in &old.devices {
                        match list.device(d.device_id) {
                            Some(n)
                                if n.registration_id == d.registration_id
                                    && n.identity == d.identity => {}
                            _ => removed.push(d.device_id),
                        }
                    }
                }
                let version = list.version;
                st.accounts.insert(account, list);
                for device in removed {
                    let key = (account, device);
                    st.prekeys.remove(&key);
                    st.mailboxes.remove(&key);
                    st.online.remove(&key);
                    st.links.retain(|l| match l.upgrade() {
                        Some(l) if l.device() == Some(key) => {
                            l.close();
                            false
                        }
                        Some(_) => true,
                        None => false,
                    });
                }
                Ok(response::Body::Registered(wire::Registered { list_version: version }))
            }
            request::Body::GetChallenge(_) => {
                let mut nonce = [0u8; 32];
                rand::rng().fill(&mut nonce[..]);
                *link.lock().challenge_mut() = Some(nonce);
                Ok(response::Body::Challenge(wire::Challenge { nonce: nonce.to_vec() }))
            }
            request::Body::Authenticate(a) => {
                if link.device().is_some() {
                    return Err(refuse(ErrorCode::AlreadyAuthenticated, "already"));
                }
                let nonce = link
                    .lock()
                    .challenge_mut()
                    .take()
                    .ok_or_else(|| refuse(ErrorCode::ReplayedNonce, "no challenge"))?;
                let account = AccountKey::from_bytes(&a.account)
                    .map_err(|_| refuse(ErrorCode::UnknownAccount, "no such account"))?;
                let list = st
                    .accounts
                    .get(account.as_bytes())
                    .ok_or_else(|| refuse(ErrorCode::UnknownAccount, "no such account"))?;
                let device = list
                    .device(a.device_id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownDevice, "no such device"))?;
                let signature: [u8; 64] = a
                    .signature
                    .as_slice()
                    .try_into()
                    .map_err(|_| refuse(ErrorCode::BadSignature, "length"))?;
                let message = transcript(&nonce, &link.binding, account.as_bytes(), a.device_id);
                device
                    .identity
                    .verify(&message, &signature, "device auth")
                    .map_err(|_| refuse(ErrorCode::BadSignature, "device auth"))?;
                link.lock().device = Some((*account.as_bytes(), a.device_id));
                Ok(response::Body::Authenticated(wire::Authenticated { server_time_ms: now_ms() }))
            }
            request::Body::GetDeviceList(g) => {
                authed()?;
                let list = <[u8; 32]>::try_from(g.account.as_slice())
                    .ok()
                    .and_then(|a| st.accounts.get(&a))
                    .ok_or_else(|| refuse(ErrorCode::UnknownAccount, "no such account"))?;
                Ok(response::Body::DeviceList(wire::DeviceListBody {
                    device_list: list.encoded().to_vec(),
                }))
            }
            request::Body::UploadPrekeys(u) => {
                let key = authed()?;
                let identity = st
                    .accounts
                    .get(&key.0)
                    .and_then(|l| l.device(key.1))
                    .map(|d| d.identity.clone())
                    .ok_or_else(|| refuse(ErrorCode::UnknownDevice, "removed"))?;
                let bad =
                    |e: hush_prekeys::BundleError| refuse(ErrorCode::InvalidKey, e.to_string());
                let mut upload = Prekeys::default();
                if !u.signed_prekey.is_empty() {
                    let k = SignedPreKey::decode(&u.signed_prekey).map_err(bad)?;
                    k.verify(&identity).map_err(bad)?;
                    upload.signed = Some(k);
                }
                if !u.last_resort_kem_prekey.is_empty() {
                    let k = KemPreKey::decode(&u.last_resort_kem_prekey).map_err(bad)?;
                    k.verify(&identity).map_err(bad)?;
                    if k.kind != KemPreKeyKind::LastResort {
                        return Err(refuse(ErrorCode::InvalidKey, "last resort marked one-time"));
                    }
                    upload.last_resort = Some(k);
                }
                for b in &u.one_time_prekeys {
                    let k = OneTimePreKey::decode(b).map_err(bad)?;
                    upload.one_time.insert(k.id, k);
                }
                for b in &u.kem_prekeys {
                    let k = KemPreKey::decode(b).map_err(bad)?;
                    k.verify(&identity).map_err(bad)?;
                    upload.kem.insert(k.id, k);
                }
                let stored = st.prekeys.entry(key).or_default();
                stored.signed = upload.signed.or(stored.signed.take());
                stored.last_resort = upload.last_resort.or(stored.last_resort.take());
                stored.one_time.extend(upload.one_time);
                stored.kem.extend(upload.kem);
                Ok(response::Body::PrekeyCounts(stored.counts()))
            }
            request::Body::GetPrekeyCounts(_) => {
                let key = authed()?;
                let counts = st.prekeys.get(&key).map(Prekeys::counts).unwrap_or_default();
                Ok(response::Body::PrekeyCounts(counts))
            }
            request::Body::FetchBundles(f) => {
                authed()?;
                let account = <[u8; 32]>::try_from(f.account.as_slice())
                    .map_err(|_| refuse(ErrorCode::UnknownAccount, "no such account"))?;
                let list = st
                    .accounts
                    .get(&account)
                    .cloned()
                    .ok_or_else(|| refuse(ErrorCode::UnknownAccount, "no such account"))?;
                let mut wanted: Vec<_> = if f.device_ids.is_empty() {
                    list.devices.iter().collect()
                } else {
                    let found: Option<Vec<_>> =
                        f.device_ids.iter().map(|&id| list.device(id)).collect();
                    found.ok_or_else(|| refuse(ErrorCode::UnknownDevice, "no such device"))?
                };
                wanted.dedup_by_key(|d| d.device_id);
                let mut bundles = Vec::new();
                for entry in wanted {
                    let Some(keys) = st.prekeys.get_mut(&(account, entry.device_id)) else {
                        continue;
                    };
                    let Some(signed) = keys.signed.clone() else { continue };
                    let kem = match keys.kem.pop_first() {
                        Some((_, k)) => k,
                        None => match keys.last_resort.clone() {
                            Some(k) => k,
                            None => continue,
                        },
                    };
                    let one_time = keys.one_time.pop_first().map(|(_, k)| k);
                    let bundle = PreKeyBundle {
                        identity: entry.identity.clone(),
                        signed_prekey: signed,
                        one_time_prekey: one_time,
                        kem_prekey: kem,
                    };
                    bundles.push(wire::DeviceBundle {
                        device_id: entry.device_id,
                        registration_id: entry.registration_id,
                        bundle: bundle.encode(),
                    });
                }
                Ok(response::Body::Bundles(wire::Bundles { bundles }))
            }
            request::Body::Send(s) => {
                let sender = authed()?;
                let (payloads, ephemeral) = (s.payloads.clone(), s.ephemeral);
                st.send(sender, s)?;
                if st.lost_sends.contains(&payloads) {
                    st.resent = true;
                }
                let lose = !ephemeral && st.lose_sends > 0;
                if lose {
                    st.lose_sends -= 1;
                    st.lost_sends.push(payloads);
                }
                drop(st);
                self.shared.changed.notify_waiters();
                if lose {
                    link.close();
                    return Err(gone());
                }
                Ok(response::Body::Sent(wire::Sent { server_time_ms: now_ms() }))
            }
            request::Body::Subscribe(_) => {
                Err(refuse(ErrorCode::BadRequest, "subscribe is its own call"))
            }
            // Blobs as the real relay keeps them (docs/PROTOCOL.md §14.16), without its
            // limits, expiry or chunked storage: uploads in aligned puts, reads once complete.
            request::Body::BlobCreate(b) => {
                let owner = authed()?;
                let mut id = [0u8; 32];
                rand::rng().fill(&mut id[..]);
                st.blobs.insert(id, (owner, b.size, Vec::new()));
                Ok(response::Body::BlobCreated(wire::BlobCreated {
                    blob_id: id.to_vec(),
                    max_put: BLOB_MAX_PUT,
                    put_align: BLOB_PUT_ALIGN,
                    expires_at_ms: now_ms() + 24 * 3600 * 1000,
                }))
            }
            request::Body::BlobPut(p) => {
                let owner = authed()?;
                let unknown = || refuse(ErrorCode::UnknownBlob, "unknown blob");
                let id: [u8; 32] = p.blob_id.as_slice().try_into().map_err(|_| unknown())?;
                let (who, size, bytes) = st.blobs.get_mut(&id).ok_or_else(unknown)?;
                if *who != owner {
                    return Err(unknown());
                }
                let end = p.offset + p.data.len() as u64;
                let complete = bytes.len() as u64 == *size;
                if !(complete && end == *size)
                    && (p.offset != bytes.len() as u64
                        || end > *size
                        || (end < *size && p.data.len() % BLOB_PUT_ALIGN as usize != 0))
                {
                    return Err(refuse(ErrorCode::BadOffset, "bad offset"));
                }
                if !complete {
                    bytes.extend_from_slice(&p.data);
                }
                Ok(response::Body::BlobProgress(blob_progress(*size, bytes.len())))
            }
            request::Body::BlobStatus(b) => {
                authed()?;
                let id: [u8; 32] = b.blob_id.as_slice().try_into().unwrap_or_default();
                let (_, size, bytes) = st
                    .blobs
                    .get(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownBlob, "unknown blob"))?;
                Ok(response::Body::BlobProgress(blob_progress(*size, bytes.len())))
            }
            request::Body::BlobGet(g) => {
                authed()?;
                let id: [u8; 32] = g.blob_id.as_slice().try_into().unwrap_or_default();
                let unknown = || refuse(ErrorCode::UnknownBlob, "unknown blob");
                let (_, size, bytes) = st.blobs.get(&id).ok_or_else(unknown)?;
                if bytes.len() as u64 != *size {
                    return Err(unknown());
                }
                let start = usize::try_from(g.offset).unwrap_or(usize::MAX);
                if start > bytes.len() {
                    return Err(refuse(ErrorCode::BadOffset, "past the end"));
                }
                let len = (g.max_len.min(BLOB_MAX_PUT) as usize).min(bytes.len() - start);
                let data = bytes.get(start..start + len).unwrap_or_default().to_vec();
                Ok(response::Body::BlobData(wire::BlobData { size: *size, offset: g.offset, data }))
            }
        }
    }
}

impl Prekeys {
    fn counts(&self) -> wire::PrekeyCounts {
        wire::PrekeyCounts {
            one_time: u32::try_from(self.one_time.len()).unwrap_or(u32::MAX),
            kem_one_time: u32::try_from(self.kem.len()).unwrap_or(u32::MAX),
            has_signed_prekey: self.signed.is_some(),
            has_last_resort_kem_prekey: self.last_resort.is_some(),
        }
    }
}

impl State {
    /// Checks a send as the relay does, then stores it (or hands it to online subscribers).
    fn send(&mut self, sender: DeviceKey, s: wire::Send) -> Result<(), TransportError> {
        let bad = |m: &str| refuse(ErrorCode::BadRequest, m);
        if s.envelopes.is_empty() {
            return Err(bad("a send needs at least one envelope"));
        }
        let own = self.accounts.get(&sender.0);
        if own.is_none_or(|l| l.device(sender.1).is_none()) {
            return Err(refuse(ErrorCode::UnknownDevice, "the sending device was removed"));
        }
        let mut by_account: BTreeMap<AccountId, Vec<&wire::Envelope>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for e in &s.envelopes {
            let account: AccountId =
                e.account.as_slice().try_into().map_err(|_| bad("account is not 32 bytes"))?;
            if (account, e.device_id) == sender {
                return Err(bad("a device cannot address itself"));
            }
            if !seen.insert((account, e.device_id)) {
                return Err(bad("device addressed twice"));
            }
            if s.payloads.get(e.payload as usize).is_none() {
                return Err(bad("no such payload"));
            }
            by_account.entry(account).or_default().push(e);
        }
        let mut mismatches = Vec::new();
        for (account, addressed) in &by_account {
            let list = self
                .accounts
                .get(account)
                .ok_or_else(|| refuse(ErrorCode::UnknownAccount, "no such account"))?;
            let mut m = wire::DeviceMismatch { account: account.to_vec(), ..Default::default() };
            for d in &list.devices {
                let is_sender = (*account, d.device_id) == sender;
                if !is_sender && !addressed.iter().any(|e| e.device_id == d.device_id) {
                    m.missing.push(d.device_id);
                }
            }
            for e in addressed {
                match list.device(e.device_id) {
                    None => m.extra.push(e.device_id),
                    Some(d) if d.registration_id != e.registration_id => m.stale.push(e.device_id),
                    Some(_) => {}
                }
            }
            if !(m.missing.is_empty() && m.extra.is_empty() && m.stale.is_empty()) {
                mismatches.push(m);
            }
        }
        if !mismatches.is_empty() {
            return Err(TransportError::Relay(Refusal {
                mismatches,
                ..Refusal::new(ErrorCode::DeviceMismatch, "devices changed")
            }));
        }
        let time = now_ms();
        for e in &s.envelopes {
            let Ok(account) = AccountId::try_from(e.account.as_slice()) else { continue };
            let key = (account, e.device_id);
            let payload = s.payloads.get(e.payload as usize).cloned().unwrap_or_default();
            let mut delivery = wire::Delivery {
                seq: 0,
                sender_account: sender.0.to_vec(),
                sender_device: sender.1,
                server_time_ms: time,
                payload,
                ephemeral: s.ephemeral,
            };
            if s.ephemeral {
                if let Some(subs) = self.online.get_mut(&key) {
                    subs.retain(|tx| tx.send(delivery.clone()).is_ok());
                }
            } else {
                self.next_seq += 1;
                delivery.seq = self.next_seq;
                self.stored.push((key, delivery.clone()));
                self.mailboxes.entry(key).or_default().insert(delivery.seq, delivery);
            }
        }
        if !s.ephemeral {
            self.stored_sends += 1;
        }
        Ok(())
    }
}

/// One link's state.
struct LinkState {
    binding: [u8; 32],
    inner: Mutex<LinkInner>,
    closed: AtomicBool,
    closed_notify: Notify,
}

#[derive(Default)]
struct LinkInner {
    challenge: Option<[u8; 32]>,
    device: Option<DeviceKey>,
}

impl LinkInner {
    fn challenge_mut(&mut self) -> &mut Option<[u8; 32]> {
        &mut self.challenge
    }
}

impl LinkState {
    fn lock(&self) -> MutexGuard<'_, LinkInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn device(&self) -> Option<DeviceKey> {
        self.lock().device
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closed_notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

fn gone() -> TransportError {
    TransportError::Disconnected("the in-memory link was cut".into())
}

/// A connection to a [`MemoryRelay`].
struct MemoryLink {
    relay: MemoryRelay,
    state: Arc<LinkState>,
}

#[async_trait]
impl Connector for MemoryRelay {
    async fn connect(&self) -> Result<Arc<dyn Link>, TransportError> {
        let mut binding = [0u8; 32];
        rand::rng().fill(&mut binding[..]);
        let state = Arc::new(LinkState {
            binding,
            inner: Mutex::default(),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
        });
        let mut st = self.lock();
        if st.down {
            return Err(TransportError::Disconnected("the in-memory relay is down".into()));
        }
        st.links.retain(|l| l.strong_count() > 0);
        st.links.push(Arc::downgrade(&state));
        drop(st);
        Ok(Arc::new(MemoryLink { relay: self.clone(), state }))
    }
}

#[async_trait]
impl Link for MemoryLink {
    async fn request(&self, body: request::Body) -> Result<response::Body, TransportError> {
        if self.state.is_closed() {
            return Err(gone());
        }
        // A real network interleaves: let other tasks run between requests.
        tokio::task::yield_now().await;
        let n = self.relay.shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = self.relay.handle(&self.state, body);
        if self.relay.lock().lose.remove(&n) {
            self.state.close();
            self.relay.shared.changed.notify_waiters();
            return Err(gone());
        }
        answer
    }

    fn channel_binding(&self) -> Result<[u8; 32], TransportError> {
        Ok(self.state.binding)
    }

    async fn subscribe(&self) -> Result<Box<dyn Deliveries>, TransportError> {
        let device =
            self.state.device().ok_or_else(|| refuse(ErrorCode::NotAuthenticated, "auth first"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.relay.lock().online.entry(device).or_default().push(tx);
        Ok(Box::new(MemoryDeliveries {
            relay: self.relay.clone(),
            link: Arc::clone(&self.state),
            device,
            cursor: 0,
            caught_up: false,
            ephemeral: rx,
        }))
    }

    async fn closed(&self) -> TransportError {
        loop {
            let notified = self.state.closed_notify.notified();
            if self.state.is_closed() {
                return gone();
            }
            notified.await;
        }
    }

    fn close(&self) {
        self.state.close();
        self.relay.shared.changed.notify_waiters();
    }
}

/// A subscription: the stored backlog in sequence order, `QueueEmpty`, then live pushes.
struct MemoryDeliveries {
    relay: MemoryRelay,
    link: Arc<LinkState>,
    device: DeviceKey,
    /// The highest sequence number handed out on this subscription.
    cursor: u64,
    caught_up: bool,
    ephemeral: mpsc::UnboundedReceiver<wire::Delivery>,
}

impl MemoryDeliveries {
    fn ready(&mut self) -> Result<Option<server_push::Body>, TransportError> {
        if self.link.is_closed() {
            return Err(gone());
        }
        if let Ok(d) = self.ephemeral.try_recv() {
            return Ok(Some(server_push::Body::Delivery(d)));
        }
        let st = self.relay.lock();
        let next = st
            .mailboxes
            .get(&self.device)
            .and_then(|m| m.range(self.cursor + 1..).next().map(|(_, d)| d.clone()));
        drop(st);
        if let Some(d) = next {
            self.cursor = d.seq;
            return Ok(Some(server_push::Body::Delivery(d)));
        }
        if !self.caught_up {
            self.caught_up = true;
            let last_seq = self.cursor;
            return Ok(Some(server_push::Body::QueueEmpty(wire::QueueEmpty { last_seq })));
        }
        Ok(None)
    }
}

#[async_trait]
impl Deliveries for MemoryDeliveries {
    async fn next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
        loop {
            // Both wake-ups are registered before looking, so none is missed in between.
            let (shared, link) = (Arc::clone(&self.relay.shared), Arc::clone(&self.link));
            let changed = shared.changed.notified();
            let closed = link.closed_notify.notified();
            tokio::pin!(changed, closed);
            changed.as_mut().enable();
            closed.as_mut().enable();
            if let Some(push) = self.ready()? {
                return Ok(Some(push));
            }
            tokio::select! {
                () = changed => {}
                () = closed => {}
                d = self.ephemeral.recv() => {
                    if let Some(d) = d {
                        return Ok(Some(server_push::Body::Delivery(d)));
                    }
                }
            }
        }
    }

    async fn try_next(&mut self) -> Result<Option<server_push::Body>, TransportError> {
        self.ready()
    }

    async fn ack(&mut self, seqs: Vec<u64>) -> Result<(), TransportError> {
        if self.link.is_closed() {
            return Err(gone());
        }
        let mut st = self.relay.lock();
        if let Some(mailbox) = st.mailboxes.get_mut(&self.device) {
            for seq in seqs {
                mailbox.remove(&seq);
            }
        }
        Ok(())
    }
}
