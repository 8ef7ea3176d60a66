//! A device's private prekeys, and the bookkeeping the responder side of the handshake needs.
//!
//! [`DevicePrekeys`] is sans-I/O state: the caller persists [`DevicePrekeys::to_state_bytes`]
//! after every change (generation, [`DevicePrekeys::commit`], pruning). It guarantees:
//! - a one-time prekey (X25519 or ML-KEM) is consumed at most once: [`DevicePrekeys::commit`]
//!   removes it and fails if it is already gone;
//! - a handshake is accepted at most once: the ephemeral (base) key of every accepted handshake is
//!   remembered under its signed prekey until that prekey is removed (bounded, see
//!   [`MAX_REPLAY_ENTRIES`]);
//! - every secret is zeroized on drop and none appears in `Debug`.

use std::collections::{BTreeMap, HashSet, VecDeque};

use ml_kem::{DecapsulationKey, KeyExport, MlKem768, Seed};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::bundle::PreKeyBundle;
use crate::codec::{Reader, Truncated, Writer};
use crate::error::BundleError;
use crate::identity::IdentityKeyPair;
use crate::prekey::{KEM_PUBLIC_KEY_LEN, KemPreKey, KemPreKeyKind, OneTimePreKey, SignedPreKey};

/// Version byte of the persisted [`DevicePrekeys`] format.
pub const PREKEY_STATE_VERSION: u8 = 1;
/// Remembered handshake base keys per signed prekey. Past this the oldest are forgotten; a replay
/// of a forgotten handshake is still refused if it used a one-time prekey (already consumed).
pub const MAX_REPLAY_ENTRIES: usize = 50_000;

pub(crate) struct SignedRecord {
    pub(crate) public: SignedPreKey,
    pub(crate) secret: Zeroizing<[u8; 32]>,
    pub(crate) seen: ReplaySet,
}

pub(crate) struct OneTimeRecord {
    pub(crate) public: [u8; 32],
    pub(crate) secret: Zeroizing<[u8; 32]>,
}

pub(crate) struct KemRecord {
    pub(crate) kind: KemPreKeyKind,
    /// The FIPS 203 seed `d ‖ z`, the preferred private-key form.
    pub(crate) seed: Zeroizing<[u8; 64]>,
    pub(crate) signature: [u8; 64],
}

impl KemRecord {
    pub(crate) fn decapsulation_key(&self) -> DecapsulationKey<MlKem768> {
        DecapsulationKey::<MlKem768>::from_seed(Seed::from(*self.seed))
    }
}

/// Base keys of accepted handshakes, in acceptance order, with O(1) lookup.
#[derive(Default)]
pub(crate) struct ReplaySet {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl ReplaySet {
    pub(crate) fn contains(&self, key: &[u8; 32]) -> bool {
        self.set.contains(key)
    }

    pub(crate) fn insert(&mut self, key: [u8; 32]) {
        if self.set.insert(key) {
            self.order.push_back(key);
            while self.order.len() > MAX_REPLAY_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The private prekeys of one device.
#[derive(Default)]
pub struct DevicePrekeys {
    next_signed_id: u32,
    next_one_time_id: u32,
    next_kem_id: u32,
    /// Oldest first; the last one is current.
    pub(crate) signed: Vec<SignedRecord>,
    pub(crate) one_time: BTreeMap<u32, OneTimeRecord>,
    pub(crate) kem: BTreeMap<u32, KemRecord>,
}

impl DevicePrekeys {
    /// An empty store. Ids start at 1.
    pub fn new() -> Self {
        Self { next_signed_id: 1, next_one_time_id: 1, next_kem_id: 1, ..Self::default() }
    }

    /// Generates a new signed prekey, makes it current and returns its public part for upload.
    /// Older signed prekeys stay usable until [`Self::remove_signed_prekeys_before`], so initial
    /// messages already in flight still work. Draws 32 bytes from `rng`.
    pub fn generate_signed_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
        created_at: u64,
    ) -> SignedPreKey {
        let id = take_id(&mut self.next_signed_id);
        let secret = random_32(rng);
        let public = XPublicKey::from(&StaticSecret::from(*secret)).to_bytes();
        let signature = identity.sign(&SignedPreKey::signed_message(id, created_at, &public));
        let public = SignedPreKey { id, created_at, public, signature };
        self.signed.push(SignedRecord {
            public: public.clone(),
            secret,
            seen: ReplaySet::default(),
        });
        public
    }

    /// The current signed prekey, if one was generated.
    pub fn current_signed_prekey(&self) -> Option<&SignedPreKey> {
        self.signed.last().map(|r| &r.public)
    }

    /// Removes every signed prekey created before `created_at`, except the current one. Their
    /// replay records go with them: an initial message naming a removed prekey is refused.
    pub fn remove_signed_prekeys_before(&mut self, created_at: u64) {
        let current = self.signed.last().map(|r| r.public.id);
        self.signed.retain(|r| Some(r.public.id) == current || r.public.created_at >= created_at);
    }

    /// Generates `count` one-time prekeys and returns their public parts for upload.
    /// Draws 32 bytes per key from `rng`.
    pub fn generate_one_time_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        count: u32,
    ) -> Vec<OneTimePreKey> {
        (0..count)
            .map(|_| {
                let id = take_id(&mut self.next_one_time_id);
                let secret = random_32(rng);
                let public = XPublicKey::from(&StaticSecret::from(*secret)).to_bytes();
                self.one_time.insert(id, OneTimeRecord { public, secret });
                OneTimePreKey { id, public }
            })
            .collect()
    }

    /// How many unused one-time X25519 prekeys this device holds.
    pub fn one_time_prekey_count(&self) -> usize {
        self.one_time.len()
    }

    /// Generates `count` signed ML-KEM-768 prekeys of `kind` and returns their public parts.
    /// Draws 64 bytes (the seed `d ‖ z`) per key from `rng`.
    pub fn generate_kem_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &IdentityKeyPair,
        kind: KemPreKeyKind,
        count: u32,
    ) -> Vec<KemPreKey> {
        (0..count)
            .map(|_| {
                let id = take_id(&mut self.next_kem_id);
                let mut seed = Zeroizing::new([0u8; 64]);
                rng.fill_bytes(seed.as_mut());
                let public = kem_public(&seed);
                let signature = identity.sign(&KemPreKey::signed_message(id, kind, &public));
                self.kem.insert(id, KemRecord { kind, seed, signature });
                KemPreKey { id, kind, public, signature }
            })
            .collect()
    }

    /// How many unused one-time KEM prekeys this device holds.
    pub fn one_time_kem_prekey_count(&self) -> usize {
        self.kem.values().filter(|k| k.kind == KemPreKeyKind::OneTime).count()
    }

    /// Forgets a KEM prekey (for example a rotated-out last-resort key).
    pub fn remove_kem_prekey(&mut self, id: u32) -> bool {
        self.kem.remove(&id).is_some()
    }

    /// Assembles this device's own bundle, as the relay would serve it: the current signed
    /// prekey, the lowest-numbered one-time prekey (if `with_one_time` and any is left), and the
    /// lowest-numbered one-time KEM prekey (if `with_one_time` and any is left) or else the
    /// newest last-resort KEM prekey. Returns `None` if there is no signed or no KEM prekey.
    /// Nothing is consumed: consumption happens when a handshake is committed.
    pub fn bundle(&self, identity: &IdentityKeyPair, with_one_time: bool) -> Option<PreKeyBundle> {
        let signed_prekey = self.current_signed_prekey()?.clone();
        let one_time_prekey = with_one_time
            .then(|| self.one_time.iter().next())
            .flatten()
            .map(|(&id, r)| OneTimePreKey { id, public: r.public });
        let one_time_kem = with_one_time
            .then(|| self.kem.iter().find(|(_, k)| k.kind == KemPreKeyKind::OneTime))
            .flatten();
        let (&id, record) = one_time_kem
            .or_else(|| self.kem.iter().rev().find(|(_, k)| k.kind == KemPreKeyKind::LastResort))?;
        let kem_prekey = KemPreKey {
            id,
            kind: record.kind,
            public: kem_public(&record.seed),
            signature: record.signature,
        };
        Some(PreKeyBundle {
            identity: identity.public().clone(),
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        })
    }

    /// The versioned persisted form (docs/PROTOCOL.md, "Persisted state").
    pub fn to_state_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.push(PREKEY_STATE_VERSION);
        out.put_u32(self.next_signed_id);
        out.put_u32(self.next_one_time_id);
        out.put_u32(self.next_kem_id);
        out.put_u32(len_u32(self.signed.len()));
        for r in &self.signed {
            r.public.write(&mut out);
            out.extend_from_slice(r.secret.as_ref());
            out.put_u32(len_u32(r.seen.order.len()));
            for k in &r.seen.order {
                out.extend_from_slice(k);
            }
        }
        out.put_u32(len_u32(self.one_time.len()));
        for (id, r) in &self.one_time {
            out.put_u32(*id);
            out.extend_from_slice(r.secret.as_ref());
        }
        out.put_u32(len_u32(self.kem.len()));
        for (id, r) in &self.kem {
            out.put_u32(*id);
            out.push(r.kind.to_byte());
            out.extend_from_slice(r.seed.as_ref());
            out.extend_from_slice(&r.signature);
        }
        out
    }

    /// Restores state saved by [`Self::to_state_bytes`]. Counts are not trusted for
    /// allocation: every entry must actually be present in the input.
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let what = "prekey state";
        let len = |_: Truncated| BundleError::InvalidLength { what };
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(len)?;
        if version != PREKEY_STATE_VERSION {
            return Err(BundleError::UnsupportedVersion { what, version });
        }
        let mut s = Self {
            next_signed_id: r.u32().map_err(len)?,
            next_one_time_id: r.u32().map_err(len)?,
            next_kem_id: r.u32().map_err(len)?,
            ..Self::default()
        };
        if s.next_signed_id == 0 || s.next_one_time_id == 0 || s.next_kem_id == 0 {
            return Err(BundleError::Malformed { what, reason: "id counter is zero" });
        }
        let duplicate = BundleError::Malformed { what, reason: "duplicate prekey id" };
        for _ in 0..r.u32().map_err(len)? {
            let public = SignedPreKey::read(&mut r)?;
            if s.signed.iter().any(|k| k.public.id == public.id) {
                return Err(duplicate);
            }
            let secret = Zeroizing::new(r.array::<32>().map_err(len)?);
            let mut seen = ReplaySet::default();
            for _ in 0..r.u32().map_err(len)? {
                seen.insert(r.array().map_err(len)?);
            }
            s.signed.push(SignedRecord { public, secret, seen });
        }
        for _ in 0..r.u32().map_err(len)? {
            let id = r.u32().map_err(len)?;
            let secret = Zeroizing::new(r.array::<32>().map_err(len)?);
            let public = XPublicKey::from(&StaticSecret::from(*secret)).to_bytes();
            if s.one_time.insert(id, OneTimeRecord { public, secret }).is_some() {
                return Err(duplicate);
            }
        }
        for _ in 0..r.u32().map_err(len)? {
            let id = r.u32().map_err(len)?;
            let kind = KemPreKeyKind::from_byte(r.u8().map_err(len)?)?;
            let seed = Zeroizing::new(r.array::<64>().map_err(len)?);
            let signature = r.array().map_err(len)?;
            let record = KemRecord { kind, seed, signature };
            if s.kem.insert(id, record).is_some() {
                return Err(duplicate);
            }
        }
        r.finish().map_err(len)?;
        Ok(s)
    }
}

impl std::fmt::Debug for DevicePrekeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePrekeys")
            .field(
                "signed_prekey_ids",
                &self.signed.iter().map(|r| r.public.id).collect::<Vec<_>>(),
            )
            .field("one_time_prekeys", &self.one_time.len())
            .field("kem_prekeys", &self.kem.len())
            .finish_non_exhaustive()
    }
}

/// Returns the next id and advances the counter. Ids wrap after 2^32 - 1; by then the keys that
/// used the low ids are long consumed or rotated out.
fn take_id(next: &mut u32) -> u32 {
    let id = *next;
    *next = next.wrapping_add(1).max(1);
    id
}

fn random_32<R: CryptoRng + ?Sized>(rng: &mut R) -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(s.as_mut());
    s
}

pub(crate) fn kem_public(seed: &[u8; 64]) -> Box<[u8; KEM_PUBLIC_KEY_LEN]> {
    let dk = DecapsulationKey::<MlKem768>::from_seed(Seed::from(*seed));
    Box::new(dk.encapsulation_key().to_bytes().into())
}

/// Collection lengths are written as u32; none of ours can approach that.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
