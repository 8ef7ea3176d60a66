//! The account key and the account-signed device list.
//!
//! An account is named by its Ed25519 account key (the 32-byte public key is the account id).
//! The account key signs the list of the account's devices; the relay stores the latest list,
//! uses it to authenticate devices and to check that a send covers every device, and hands it
//! to anyone who asks. Clients verify the signature themselves, so a relay cannot add a device
//! to someone's account.
//!
//! Layout (docs/PROTOCOL.md, "Device list"), all integers big-endian:
//! `version u8 (=1) ‖ account_key [32] ‖ list_version u64 ‖ count u8 ‖ count × (device_id u32 ‖
//! registration_id u32 ‖ signed identity [128]) ‖ signature [64]`; the signature is by the
//! account key over `"Hush_DeviceList_v1" ‖` every preceding byte. Devices are sorted by strictly
//! increasing id, and registration ids are non-zero.
//!
//! Guarantees: a [`DeviceList`] returned by [`DeviceList::decode`] has a valid signature, a
//! canonical encoding and verified device identities.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hush_prekeys::IdentityKey;
use hush_prekeys::identity::SIGNED_IDENTITY_LEN;
use rand_core::CryptoRng;
use thiserror::Error;

/// The device-list format version.
pub const DEVICE_LIST_VERSION: u8 = 1;
/// Domain-separation label of the device-list signature.
pub const DEVICE_LIST_LABEL: &[u8] = b"Hush_DeviceList_v1";
/// The most devices one list can encode (the relay's configured maximum is lower).
pub const MAX_DEVICES_IN_LIST: usize = 255;
const ENTRY_LEN: usize = 4 + 4 + SIGNED_IDENTITY_LEN;
const HEADER_LEN: usize = 1 + 32 + 8 + 1;

/// Why a device list was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeviceListError {
    /// Unknown format version.
    #[error("unsupported device list version {0}")]
    UnsupportedVersion(u8),
    /// Wrong length for the announced device count.
    #[error("invalid device list length")]
    InvalidLength,
    /// Not canonical: empty, unsorted or duplicate ids, or a zero registration id.
    #[error("malformed device list: {0}")]
    Malformed(&'static str),
    /// The account key is not a valid Ed25519 key.
    #[error("invalid account key")]
    InvalidAccountKey,
    /// A device identity failed to decode or its binding signature failed.
    #[error("invalid device identity: {0}")]
    InvalidIdentity(#[from] hush_prekeys::BundleError),
    /// The account signature does not verify.
    #[error("bad signature on device list")]
    BadSignature,
}

impl DeviceListError {
    /// The stable machine code.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            Self::BadSignature => crate::ErrorCode::BadSignature,
            Self::InvalidIdentity(hush_prekeys::BundleError::BadSignature { .. }) => {
                crate::ErrorCode::BadSignature
            }
            _ => crate::ErrorCode::InvalidKey,
        }
    }
}

/// An account's public key; its 32 bytes are the account id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey([u8; 32]);

impl AccountKey {
    /// Wraps and validates 32 bytes as an Ed25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DeviceListError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| DeviceListError::InvalidAccountKey)?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| DeviceListError::InvalidAccountKey)?;
        if key.is_weak() {
            return Err(DeviceListError::InvalidAccountKey);
        }
        Ok(Self(arr))
    }

    /// The account id bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), DeviceListError> {
        let key =
            VerifyingKey::from_bytes(&self.0).map_err(|_| DeviceListError::InvalidAccountKey)?;
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| DeviceListError::BadSignature)
    }
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Account(")?;
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The account's private key. Zeroized on drop (ed25519-dalek's `SigningKey` is
/// `ZeroizeOnDrop`); `Debug` shows only the public key.
pub struct AccountKeyPair {
    signing: SigningKey,
}

impl AccountKeyPair {
    /// Generates a new account key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self { signing: SigningKey::from_bytes(&seed) }
    }

    /// Restores from the 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(seed) }
    }

    /// The 32-byte seed, for encrypted persistence by the client.
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }

    /// The public account key.
    pub fn public(&self) -> AccountKey {
        AccountKey(self.signing.verifying_key().to_bytes())
    }
}

impl std::fmt::Debug for AccountKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKeyPair({:?})", self.public())
    }
}

/// One device of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device id, unique within the account.
    pub device_id: u32,
    /// Random non-zero id chosen when the device was created; a new device reusing an id gets a
    /// new registration id, so senders with old sessions are told they are stale.
    pub registration_id: u32,
    /// The device's identity key.
    pub identity: IdentityKey,
}

/// A verified, account-signed device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The account.
    pub account: AccountKey,
    /// Monotonic version; a relay only accepts a newer list.
    pub version: u64,
    /// The devices, sorted by id.
    pub devices: Vec<DeviceEntry>,
    encoded: Vec<u8>,
}

impl DeviceList {
    /// Signs a list of devices. Sorts them by id; fails if ids repeat, registration ids are zero,
    /// or the list is empty or too long.
    pub fn sign(
        account: &AccountKeyPair,
        version: u64,
        mut devices: Vec<DeviceEntry>,
    ) -> Result<Self, DeviceListError> {
        devices.sort_by_key(|d| d.device_id);
        check_canonical(&devices)?;
        let mut out = Vec::with_capacity(HEADER_LEN + devices.len() * ENTRY_LEN + 64);
        out.push(DEVICE_LIST_VERSION);
        out.extend_from_slice(account.public().as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        // check_canonical bounds the count by MAX_DEVICES_IN_LIST (255).
        out.push(u8::try_from(devices.len()).map_err(|_| DeviceListError::Malformed("too long"))?);
        for d in &devices {
            out.extend_from_slice(&d.device_id.to_be_bytes());
            out.extend_from_slice(&d.registration_id.to_be_bytes());
            out.extend_from_slice(&d.identity.encode_signed());
        }
        let signature = account.signing.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        Ok(Self { account: account.public(), version, devices, encoded: out })
    }

    /// Decodes and verifies an encoded list.
    pub fn decode(bytes: &[u8]) -> Result<Self, DeviceListError> {
        let Some((&format, rest)) = bytes.split_first() else {
            return Err(DeviceListError::InvalidLength);
        };
        if format != DEVICE_LIST_VERSION {
            return Err(DeviceListError::UnsupportedVersion(format));
        }
        let (account, rest) = rest.split_at_checked(32).ok_or(DeviceListError::InvalidLength)?;
        let (version, rest) =
            rest.split_first_chunk::<8>().ok_or(DeviceListError::InvalidLength)?;
        let (&count, mut rest) = rest.split_first().ok_or(DeviceListError::InvalidLength)?;
        if rest.len() != usize::from(count) * ENTRY_LEN + 64 {
            return Err(DeviceListError::InvalidLength);
        }
        let account = AccountKey::from_bytes(account)?;
        let mut devices = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (entry, tail) =
                rest.split_at_checked(ENTRY_LEN).ok_or(DeviceListError::InvalidLength)?;
            rest = tail;
            let (id, entry) =
                entry.split_first_chunk::<4>().ok_or(DeviceListError::InvalidLength)?;
            let (reg, identity) =
                entry.split_first_chunk::<4>().ok_or(DeviceListError::InvalidLength)?;
            devices.push(DeviceEntry {
                device_id: u32::from_be_bytes(*id),
                registration_id: u32::from_be_bytes(*reg),
                identity: IdentityKey::decode_signed(identity)?,
            });
        }
        check_canonical(&devices)?;
        let signature: &[u8; 64] = rest.try_into().map_err(|_| DeviceListError::InvalidLength)?;
        let body_len = bytes.len() - 64;
        account.verify(&signed_message(bytes.get(..body_len).unwrap_or_default()), signature)?;
        Ok(Self {
            account,
            version: u64::from_be_bytes(*version),
            devices,
            encoded: bytes.to_vec(),
        })
    }

    /// The signed encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The device with `device_id`, if listed.
    pub fn device(&self, device_id: u32) -> Option<&DeviceEntry> {
        self.devices
            .binary_search_by_key(&device_id, |d| d.device_id)
            .ok()
            .and_then(|i| self.devices.get(i))
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DEVICE_LIST_LABEL.len() + body.len());
    m.extend_from_slice(DEVICE_LIST_LABEL);
    m.extend_from_slice(body);
    m
}

fn check_canonical(devices: &[DeviceEntry]) -> Result<(), DeviceListError> {
    if devices.is_empty() {
        return Err(DeviceListError::Malformed("no devices"));
    }
    if devices.len() > MAX_DEVICES_IN_LIST {
        return Err(DeviceListError::Malformed("too many devices"));
    }
    if devices.iter().any(|d| d.registration_id == 0) {
        return Err(DeviceListError::Malformed("zero registration id"));
    }
    if devices.windows(2).any(|w| matches!(w, [a, b] if a.device_id >= b.device_id)) {
        return Err(DeviceListError::Malformed("device ids not strictly increasing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_prekeys::IdentityKeyPair;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn list(n: u32) -> (AccountKeyPair, DeviceList) {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let account = AccountKeyPair::generate(&mut rng);
        let devices = (1..=n)
            .map(|i| DeviceEntry {
                device_id: i,
                registration_id: 100 + i,
                identity: IdentityKeyPair::generate(&mut rng).public().clone(),
            })
            .collect();
        let l = DeviceList::sign(&account, 3, devices).unwrap();
        (account, l)
    }

    #[test]
    fn round_trip_and_lookup() {
        let (account, l) = list(3);
        let d = DeviceList::decode(l.encoded()).unwrap();
        assert_eq!(d, l);
        assert_eq!(d.account, account.public());
        assert_eq!(d.version, 3);
        assert_eq!(d.device(2).unwrap().registration_id, 102);
        assert!(d.device(9).is_none());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let (_, l) = list(2);
        let bytes = l.encoded().to_vec();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(DeviceList::decode(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn non_canonical_lists_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let account = AccountKeyPair::generate(&mut rng);
        let id = IdentityKeyPair::generate(&mut rng).public().clone();
        let dup = vec![
            DeviceEntry { device_id: 1, registration_id: 1, identity: id.clone() },
            DeviceEntry { device_id: 1, registration_id: 2, identity: id.clone() },
        ];
        assert!(matches!(DeviceList::sign(&account, 1, dup), Err(DeviceListError::Malformed(_))));
        let zero = vec![DeviceEntry { device_id: 1, registration_id: 0, identity: id }];
        assert!(DeviceList::sign(&account, 1, zero).is_err());
        assert!(DeviceList::sign(&account, 1, vec![]).is_err());
    }

    #[test]
    fn debug_hides_the_account_secret() {
        let (account, _) = list(1);
        let seed = account.seed();
        let dbg = format!("{account:?}");
        assert!(!dbg.contains(&hex::encode(&seed[..8])));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = DeviceList::decode(&bytes);
        }
    }
}
