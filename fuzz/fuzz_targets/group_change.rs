//! Group changes: decoding and verifying a change, a snapshot or a sender-key state never
//! panics, and a refused change leaves the log as it was.
#![no_main]
use hush_core::group::{GroupLog, GroupSnapshot, GroupState, SignedGroupChange};
use hush_core::sender_key::{ReceivedKey, SenderKey};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let _ = SenderKey::from_state_bytes(data);
    let _ = ReceivedKey::from_state_bytes(data);
    if let Ok(s) = GroupSnapshot::decode(data) {
        let _ = GroupState::from_snapshot(&s);
    }
    let state = GroupState {
        id: [7; 32],
        epoch: 3,
        head: [1; 32],
        name: "g".into(),
        description: String::new(),
        members: BTreeMap::from([([2; 32], true)]),
    };
    let mut log = GroupLog::new(state.clone());
    if let Ok(c) = SignedGroupChange::decode(data)
        && let Ok(v) = c.verify()
        && log.receive(&v).is_err()
    {
        assert_eq!(log.state(), &state, "a refused change moved the state");
    }
});
