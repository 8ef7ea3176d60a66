//! Sender keys: decoding a distribution and decrypting a group message never panic, and a
//! refused message leaves the receiver able to read the next real one.
#![no_main]
use hush_core::sender_key::{Distribution, ReceivedKey, SenderKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Distribution::decode(data);
    let mut sender = SenderKey::from_secrets([7; 32], 1, 0, &[1; 32], &[2; 32]);
    let mut receiver = ReceivedKey::new(&sender.distribution()).unwrap();
    if receiver.decrypt(data).is_err() {
        assert_eq!(receiver.header().iteration, 0, "a refused message moved the chain");
    }
    let next = sender.encrypt(b"real").unwrap();
    if receiver.header().iteration == 0 {
        assert_eq!(receiver.decrypt(&next).unwrap(), b"real");
    }
});
