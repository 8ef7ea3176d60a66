//! Stored prekey and identity state: restore never panics.
#![no_main]
use hush_prekeys::{DevicePrekeys, IdentityKeyPair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = DevicePrekeys::from_state_bytes(data) {
        let _ = p.to_state_bytes();
    }
    let _ = IdentityKeyPair::from_state_bytes(data);
});
