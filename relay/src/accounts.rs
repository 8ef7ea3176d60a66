//! Accounts and their account-signed device lists.
//!
//! Registration creates an account from its first signed device list; later lists replace it
//! only if their version is higher (so a captured old list can't be replayed to re-add a removed
//! device). A device that disappears from the list, or whose registration id changes, is purged:
//! its prekeys and mailbox are deleted in the same transaction, and the caller cuts its open
//! connections.

use hush_protocol::DeviceList;
use redb::WriteTransaction;

use crate::error::RelayError;
use crate::store::{ACCOUNTS, DEVICES, encode_devices, read_device_list, versioned};
use crate::{mailbox, prekeys};

/// What a registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// The stored list version.
    pub version: u64,
    /// Devices that were removed or replaced (their connections must be closed).
    pub removed: Vec<u32>,
}

/// Stores a verified device list (creating the account if needed).
pub fn register(
    txn: &WriteTransaction,
    list: &DeviceList,
    max_devices: usize,
) -> Result<RegisterOutcome, RelayError> {
    if list.devices.len() > max_devices {
        return Err(RelayError::TooManyDevices { count: list.devices.len(), max: max_devices });
    }
    let account = *list.account.as_bytes();
    let mut table = txn.open_table(ACCOUNTS)?;
    let old = read_device_list(&table, &account)?;
    let mut removed = Vec::new();
    if let Some(old) = &old {
        if list.version <= old.version {
            return Err(RelayError::StaleDeviceList { stored: old.version, offered: list.version });
        }
        for d in &old.devices {
            match list.device(d.device_id) {
                Some(n) if n.registration_id == d.registration_id && n.identity == d.identity => {}
                _ => removed.push(d.device_id),
            }
        }
    }
    // Checks are done; from here on only writes.
    table.insert(account, versioned(list.encoded()).as_slice())?;
    drop(table);
    txn.open_table(DEVICES)?.insert(account, encode_devices(list).as_slice())?;
    for &device in &removed {
        prekeys::purge_device(txn, &account, device)?;
        mailbox::purge_device(txn, &account, device)?;
    }
    Ok(RegisterOutcome { version: list.version, removed })
}
