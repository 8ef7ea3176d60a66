//! Bundles and their parts: decode (and verify what decodes) never panics.
#![no_main]
use hush_prekeys::codec::Reader;
use hush_prekeys::{IdentityKey, InitialHeader, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = PreKeyBundle::decode(data) {
        assert_eq!(b.encode(), data, "a decoded bundle must re-encode to its input");
        let _ = b.verify();
    }
    let _ = IdentityKey::decode_signed(data);
    let _ = SignedPreKey::decode(data);
    let _ = OneTimePreKey::decode(data);
    let _ = KemPreKey::decode(data);
    let _ = InitialHeader::read(&mut Reader::new(data));
});
