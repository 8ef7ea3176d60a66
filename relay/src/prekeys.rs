//! The prekey store: uploads (signatures verified against the device's identity), counts, and
//! the atomic claim that hands each one-time key out at most once.
//!
//! Claims run on the single writer thread inside a write transaction, so two concurrent fetches
//! can never see the same one-time key: the first claim deletes it before the second runs. When
//! one-time X25519 keys run out the bundle goes without one; when one-time KEM keys run out the
//! last-resort KEM key is used (PQXDH's rule).

use hush_prekeys::{
    IdentityKey, KemPreKey, KemPreKeyKind, OneTimePreKey, PreKeyBundle, SignedPreKey,
};
use hush_protocol::wire::{DeviceBundle, PrekeyCounts};
use redb::{ReadableTable, WriteTransaction};

use crate::error::{RelayError, StoreError};
use redb::ReadableDatabase;

use crate::store::{
    ACCOUNTS, AccountId, DEVICES, KEM_PREKEYS, LAST_RESORT_KEM, ONE_TIME_PREKEYS, SIGNED_PREKEYS,
    Store, read_device_list, read_devices, strip_version, versioned,
};

/// A decoded, signature-checked upload.
#[derive(Debug)]
pub struct Upload {
    /// Replaces the current signed prekey.
    pub signed: Option<SignedPreKey>,
    /// Added one-time keys.
    pub one_time: Vec<OneTimePreKey>,
    /// Added one-time KEM keys.
    pub kem: Vec<KemPreKey>,
    /// Replaces the last-resort KEM key.
    pub last_resort: Option<KemPreKey>,
}

impl Upload {
    /// Decodes and verifies an upload against the uploading device's identity.
    pub fn verify(
        req: &hush_protocol::wire::UploadPrekeys,
        identity: &IdentityKey,
        max_per_upload: usize,
    ) -> Result<Self, RelayError> {
        if req.one_time_prekeys.len() > max_per_upload || req.kem_prekeys.len() > max_per_upload {
            return Err(RelayError::TooManyPrekeys(format!(
                "at most {max_per_upload} of each kind per upload"
            )));
        }
        let signed = if req.signed_prekey.is_empty() {
            None
        } else {
            let k = SignedPreKey::decode(&req.signed_prekey)?;
            k.verify(identity)?;
            Some(k)
        };
        let one_time = req
            .one_time_prekeys
            .iter()
            .map(|b| OneTimePreKey::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        let mut kem = Vec::with_capacity(req.kem_prekeys.len());
        for b in &req.kem_prekeys {
            let k = KemPreKey::decode(b)?;
            k.verify(identity)?;
            if k.kind != KemPreKeyKind::OneTime {
                return Err(RelayError::InvalidKey(
                    "a last-resort KEM key in the one-time list".into(),
                ));
            }
            kem.push(k);
        }
        let last_resort = if req.last_resort_kem_prekey.is_empty() {
            None
        } else {
            let k = KemPreKey::decode(&req.last_resort_kem_prekey)?;
            k.verify(identity)?;
            if k.kind != KemPreKeyKind::LastResort {
                return Err(RelayError::InvalidKey(
                    "the last-resort KEM key is marked one-time".into(),
                ));
            }
            Some(k)
        };
        Ok(Self { signed, one_time, kem, last_resort })
    }
}

/// Stores an upload. Fails with `too_many_prekeys` if the device would hold more than
/// `max_stored` one-time keys of a kind.
pub(crate) fn store_upload(
    txn: &WriteTransaction,
    account: &AccountId,
    (device, registration_id): (u32, u32),
    upload: &Upload,
    max_stored: u64,
) -> Result<PrekeyCounts, RelayError> {
    // The signatures were checked against the device list read before this transaction; make
    // sure that device (same registration) is still the listed one, so keys of a device removed
    // or replaced in between are never stored after its purge.
    let listed = read_devices(&txn.open_table(DEVICES)?, account)?
        .is_some_and(|d| d.contains(&(device, registration_id)));
    if !listed {
        return Err(RelayError::UnknownDevice(device));
    }
    let before = counts(txn, account, device)?;
    if u64::from(before.one_time) + upload.one_time.len() as u64 > max_stored
        || u64::from(before.kem_one_time) + upload.kem.len() as u64 > max_stored
    {
        return Err(RelayError::TooManyPrekeys(format!(
            "a device may store at most {max_stored} one-time keys of each kind"
        )));
    }
    if let Some(k) = &upload.signed {
        txn.open_table(SIGNED_PREKEYS)?
            .insert((*account, device), versioned(&k.encode()).as_slice())?;
    }
    if let Some(k) = &upload.last_resort {
        txn.open_table(LAST_RESORT_KEM)?
            .insert((*account, device), versioned(&k.encode()).as_slice())?;
    }
    {
        let mut t = txn.open_table(ONE_TIME_PREKEYS)?;
        for k in &upload.one_time {
            t.insert((*account, device, k.id), versioned(&k.encode()).as_slice())?;
        }
    }
    {
        let mut t = txn.open_table(KEM_PREKEYS)?;
        for k in &upload.kem {
            t.insert((*account, device, k.id), versioned(&k.encode()).as_slice())?;
        }
    }
    Ok(counts(txn, account, device)?)
}

/// The device's key counts, inside the writer's transaction.
pub(crate) fn counts(
    txn: &WriteTransaction,
    account: &AccountId,
    device: u32,
) -> Result<PrekeyCounts, StoreError> {
    count_in(
        &txn.open_table(ONE_TIME_PREKEYS)?,
        &txn.open_table(KEM_PREKEYS)?,
        &txn.open_table(SIGNED_PREKEYS)?,
        &txn.open_table(LAST_RESORT_KEM)?,
        account,
        device,
    )
}

/// The device's key counts, from a read transaction (no write, no fsync).
pub(crate) fn read_counts(
    store: &Store,
    account: &AccountId,
    device: u32,
) -> Result<PrekeyCounts, StoreError> {
    let txn = store.db()?.begin_read()?;
    count_in(
        &txn.open_table(ONE_TIME_PREKEYS)?,
        &txn.open_table(KEM_PREKEYS)?,
        &txn.open_table(SIGNED_PREKEYS)?,
        &txn.open_table(LAST_RESORT_KEM)?,
        account,
        device,
    )
}

type KeyTable = (AccountId, u32, u32);

fn count_in(
    one_time: &impl ReadableTable<KeyTable, &'static [u8]>,
    kem: &impl ReadableTable<KeyTable, &'static [u8]>,
    signed: &impl ReadableTable<(AccountId, u32), &'static [u8]>,
    last_resort: &impl ReadableTable<(AccountId, u32), &'static [u8]>,
    account: &AccountId,
    device: u32,
) -> Result<PrekeyCounts, StoreError> {
    let count = |t: &dyn Fn() -> Result<usize, StoreError>| -> Result<u32, StoreError> {
        Ok(u32::try_from(t()?).unwrap_or(u32::MAX))
    };
    let range = (*account, device, 0)..=(*account, device, u32::MAX);
    Ok(PrekeyCounts {
        one_time: count(&|| Ok(one_time.range(range.clone())?.count()))?,
        kem_one_time: count(&|| Ok(kem.range(range.clone())?.count()))?,
        has_signed_prekey: signed.get((*account, device))?.is_some(),
        has_last_resort_kem_prekey: last_resort.get((*account, device))?.is_some(),
    })
}

/// Builds one bundle per requested device (every device if `device_ids` is empty), claiming and
/// deleting one one-time key and one one-time KEM key per device when `may_claim(device)`
/// allows it (the per-device claim limit); otherwise the bundle carries the signed prekey and
/// the last-resort KEM key only. Devices that have not uploaded a signed prekey and a KEM key
/// yet are left out.
pub(crate) fn claim_bundles(
    txn: &WriteTransaction,
    account: &AccountId,
    device_ids: &[u32],
    mut may_claim: impl FnMut(u32) -> bool,
) -> Result<Vec<DeviceBundle>, RelayError> {
    let list =
        read_device_list(&txn.open_table(ACCOUNTS)?, account)?.ok_or(RelayError::UnknownAccount)?;
    let wanted: Vec<_> = if device_ids.is_empty() {
        list.devices.iter().collect()
    } else {
        device_ids
            .iter()
            .map(|&id| list.device(id).ok_or(RelayError::UnknownDevice(id)))
            .collect::<Result<_, _>>()?
    };
    let signed_t = txn.open_table(SIGNED_PREKEYS)?;
    let mut otk_t = txn.open_table(ONE_TIME_PREKEYS)?;
    let mut kem_t = txn.open_table(KEM_PREKEYS)?;
    let last_t = txn.open_table(LAST_RESORT_KEM)?;
    let mut out = Vec::with_capacity(wanted.len());
    for entry in wanted {
        let d = entry.device_id;
        let Some(signed) = signed_t.get((*account, d))?.map(|v| v.value().to_vec()) else {
            continue;
        };
        let signed = SignedPreKey::decode(strip_version(&signed, "signed prekey")?)
            .map_err(|_| StoreError::Corrupt("signed prekey"))?;
        let claim = may_claim(d);
        let one_time_kem = if claim { first_key(&kem_t, account, d)? } else { None };
        let kem = match one_time_kem {
            Some((id, bytes)) => {
                kem_t.remove((*account, d, id))?;
                Some(bytes)
            }
            None => last_t.get((*account, d))?.map(|v| v.value().to_vec()),
        };
        let Some(kem) = kem else { continue };
        let kem_prekey = KemPreKey::decode(strip_version(&kem, "kem prekey")?)
            .map_err(|_| StoreError::Corrupt("kem prekey"))?;
        let one_time = if claim { first_key(&otk_t, account, d)? } else { None };
        let one_time_prekey = match one_time {
            Some((id, bytes)) => {
                otk_t.remove((*account, d, id))?;
                Some(
                    OneTimePreKey::decode(strip_version(&bytes, "one-time prekey")?)
                        .map_err(|_| StoreError::Corrupt("one-time prekey"))?,
                )
            }
            None => None,
        };
        let bundle = PreKeyBundle {
            identity: entry.identity.clone(),
            signed_prekey: signed,
            one_time_prekey,
            kem_prekey,
        };
        out.push(DeviceBundle {
            device_id: d,
            registration_id: entry.registration_id,
            bundle: bundle.encode(),
        });
    }
    Ok(out)
}

fn first_key(
    table: &redb::Table<(AccountId, u32, u32), &[u8]>,
    account: &AccountId,
    device: u32,
) -> Result<Option<(u32, Vec<u8>)>, StoreError> {
    let mut range = table.range((*account, device, 0)..=(*account, device, u32::MAX))?;
    match range.next() {
        Some(item) => {
            let (k, v) = item?;
            Ok(Some((k.value().2, v.value().to_vec())))
        }
        None => Ok(None),
    }
}

/// Deletes every prekey of a removed device.
pub(crate) fn purge_device(
    txn: &WriteTransaction,
    account: &AccountId,
    device: u32,
) -> Result<(), StoreError> {
    txn.open_table(SIGNED_PREKEYS)?.remove((*account, device))?;
    txn.open_table(LAST_RESORT_KEM)?.remove((*account, device))?;
    for def in [ONE_TIME_PREKEYS, KEM_PREKEYS] {
        let mut t = txn.open_table(def)?;
        t.retain_in((*account, device, 0)..=(*account, device, u32::MAX), |_, _| false)?;
    }
    Ok(())
}
