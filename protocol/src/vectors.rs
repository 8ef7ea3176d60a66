//! Known-answer vectors for the relay protocol (test-vectors/relay.json): a signed device list,
//! a device-auth transcript and signature, and example request/response frames.
//!
//! Generated from fixed secrets and checked byte for byte, like the protocol-core vectors.
//! Regenerate deliberately with `HUSH_REGENERATE_VECTORS=1 cargo test -p hush-protocol vectors`.

use hush_prekeys::IdentityKeyPair;
use serde_json::{Value, json};

use crate::auth::transcript;
use crate::wire::{self, Request, Response, request, response};
use crate::{AccountKeyPair, DeviceEntry, DeviceList, ErrorCode, frame};

fn check_or_write(name: &str, value: &Value) {
    let path = format!("{}/../test-vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("HUSH_REGENERATE_VECTORS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == text, "{name} differs from what the code produces");
}

fn device(n: u8) -> (IdentityKeyPair, Value) {
    let ed = [0x10 + n; 32];
    let x = [0x20 + n; 32];
    let id = IdentityKeyPair::from_secrets(&ed, &x);
    let v = json!({
        "ed25519_seed": hex::encode(ed),
        "x25519_secret": hex::encode(x),
        "signed_identity": hex::encode(id.public().encode_signed()),
    });
    (id, v)
}

#[test]
fn relay_vectors() {
    let account_seed = [0x01u8; 32];
    let account = AccountKeyPair::from_seed(&account_seed);
    let (d1, d1_json) = device(1);
    let (d2, d2_json) = device(2);
    let list = DeviceList::sign(
        &account,
        3,
        vec![
            DeviceEntry { device_id: 2, registration_id: 0x2222, identity: d2.public().clone() },
            DeviceEntry { device_id: 1, registration_id: 0x1111, identity: d1.public().clone() },
        ],
    )
    .unwrap();
    // The decoder accepts exactly these bytes.
    assert_eq!(DeviceList::decode(list.encoded()).unwrap(), list);

    let nonce = [0xaa; 32];
    let binding = [0xbb; 32];
    let t = transcript(&nonce, &binding, account.public().as_bytes(), 1);
    let signature = d1.sign(&t);

    let send = Request {
        body: Some(request::Body::Send(wire::Send {
            payloads: vec![b"ciphertext".to_vec()],
            envelopes: vec![wire::Envelope {
                account: account.public().as_bytes().to_vec(),
                device_id: 2,
                registration_id: 0x2222,
                payload: 0,
            }],
            ephemeral: false,
        })),
    };
    let mut mismatch = Response::error(ErrorCode::DeviceMismatch, "envelopes do not match");
    if let Some(response::Body::Error(e)) = &mut mismatch.body {
        e.mismatches.push(wire::DeviceMismatch {
            account: account.public().as_bytes().to_vec(),
            missing: vec![1],
            extra: vec![7],
            stale: vec![2],
        });
    }
    let value = json!({
        "device_list": {
            "account_seed": hex::encode(account_seed),
            "account_key": hex::encode(account.public().as_bytes()),
            "version": 3,
            "devices": [
                {"device_id": 1, "registration_id": 0x1111, "identity": d1_json},
                {"device_id": 2, "registration_id": 0x2222, "identity": d2_json},
            ],
            "encoded": hex::encode(list.encoded()),
        },
        "device_auth": {
            "nonce": hex::encode(nonce),
            "channel_binding": hex::encode(binding),
            "account": hex::encode(account.public().as_bytes()),
            "device_id": 1,
            "transcript": hex::encode(&t),
            "signature_by_device_1": hex::encode(signature),
        },
        "frames": {
            "send_request": hex::encode(frame::encode(&send)),
            "device_mismatch_response": hex::encode(frame::encode(&mismatch)),
        },
    });
    check_or_write("relay.json", &value);
}
