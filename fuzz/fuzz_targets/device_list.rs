//! Signed device lists: decode (which verifies) never panics, and what decodes is canonical.
#![no_main]
use hush_protocol::DeviceList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = DeviceList::decode(data) {
        assert_eq!(list.encoded(), data);
        assert!(list.devices.windows(2).all(|w| w[0].device_id < w[1].device_id));
    }
});
