//! Relay frames: splitting a byte stream into frames and decoding every message type never
//! panics, whatever the length prefix says.
#![no_main]
use hush_protocol::frame::{decode, split};
use hush_protocol::wire::{ClientPush, Request, Response, ServerPush};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((body, tail))) = split(rest, 64 * 1024) {
        let _ = decode::<Request>(body);
        let _ = decode::<Response>(body);
        let _ = decode::<ServerPush>(body);
        let _ = decode::<ClientPush>(body);
        if tail.len() == rest.len() {
            break;
        }
        rest = tail;
    }
});
