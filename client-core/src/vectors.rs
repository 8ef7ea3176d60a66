//! Known-answer vectors for the Double Ratchet and the session state format
//! (test-vectors/ratchet.json, test-vectors/session.json), and for sender keys
//! (test-vectors/sender_key.json).
//!
//! Regenerated and compared byte for byte on every test run. Every random input is listed
//! explicitly. Regenerate deliberately with
//! `HUSH_REGENERATE_VECTORS=1 cargo test -p hush-core vectors`.

use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::message::{self, Incoming};
use crate::ratchet::{Ratchet, kdf_ck, kdf_rk};
use crate::session::Session;

fn path(name: &str) -> String {
    format!("{}/../test-vectors/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn check_or_write(name: &str, value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("HUSH_REGENERATE_VECTORS").is_some() {
        std::fs::write(path(name), &text).unwrap();
    }
    let committed = std::fs::read_to_string(path(name)).unwrap_or_default();
    assert!(
        committed == text,
        "{name} differs from what the code produces; if intended, regenerate with \
         HUSH_REGENERATE_VECTORS=1 and bump the relevant version"
    );
}

const AD: [u8; 128] = {
    let mut ad = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        ad[i] = i as u8;
        i += 1;
    }
    ad
};

/// Encrypts one message and records everything a reimplementation needs to check itself.
fn send(
    r: &mut Ratchet,
    secret: Option<[u8; 32]>,
    plaintext: &[u8],
    sender: &str,
) -> (Vec<u8>, Value) {
    let root_before = *r.root_key;
    let mut step = Value::Null;
    if let Some(s) = secret {
        assert!(r.sending.is_none(), "a step secret was given but no step is due");
        let their = r.their_public.unwrap();
        let dh = StaticSecret::from(s).diffie_hellman(&PublicKey::from(their)).to_bytes();
        let (root, ck) = kdf_rk(&root_before, &dh);
        step = json!({
            "new_ratchet_secret": hex::encode(s),
            "new_ratchet_public": hex::encode(PublicKey::from(&StaticSecret::from(s)).to_bytes()),
            "dh_output": hex::encode(dh),
            "root_key_after": hex::encode(*root),
            "chain_key": hex::encode(*ck),
        });
        r.sending_step(Zeroizing::new(s)).unwrap();
    }
    let chain_key = *r.sending.as_ref().unwrap().key;
    let (mk, _) = kdf_ck(&chain_key);
    let okm =
        hush_prekeys::kdf::hkdf_sha256::<44>(&[0; 32], &*mk, crate::ratchet::MESSAGE_KEYS_INFO);
    // No step is due now, so the RNG is never touched.
    let mut never = ChaCha20Rng::from_seed([0; 32]);
    let bytes = r.encrypt(&mut never, plaintext, &AD).unwrap();
    let Incoming::Message(m) = message::decode(&bytes).unwrap() else { unreachable!() };
    let v = json!({
        "sender": sender,
        "sending_step": step,
        "header": { "ratchet_key": hex::encode(m.header.ratchet_key), "pn": m.header.pn, "n": m.header.n },
        "chain_key": hex::encode(chain_key),
        "message_key": hex::encode(*mk),
        "aead_key": hex::encode(&okm[..32]),
        "aead_nonce": hex::encode(&okm[32..]),
        "plaintext": String::from_utf8(plaintext.to_vec()).unwrap(),
        "message": hex::encode(&bytes),
    });
    (bytes, v)
}

fn receive(r: &mut Ratchet, bytes: &[u8], expect: &[u8]) {
    let Incoming::Message(m) = message::decode(bytes).unwrap() else { unreachable!() };
    assert_eq!(r.decrypt(&m, &AD).unwrap(), expect);
}

fn ratchet_vector() -> Value {
    let sk = [0x11u8; 32];
    let bob_spk = [0x22u8; 32];
    let alice_r0 = [0x33u8; 32];
    let bob_spk_public = PublicKey::from(&StaticSecret::from(bob_spk)).to_bytes();
    let mut alice = Ratchet::init_initiator(&sk, bob_spk_public, Zeroizing::new(alice_r0));
    let mut bob = Ratchet::init_responder(&sk, Zeroizing::new(bob_spk));
    let init_root = hex::encode(*alice.root_key);
    let init_chain = hex::encode(*alice.sending.as_ref().unwrap().key);

    let mut messages = Vec::new();
    let mut wire = Vec::new();
    let plan: &[(&str, Option<[u8; 32]>)] = &[
        ("alice", None),             // 0
        ("alice", None),             // 1
        ("alice", None),             // 2
        ("bob", Some([0x44; 32])),   // 3: Bob's first sending step
        ("bob", None),               // 4
        ("alice", Some([0x55; 32])), // 5: Alice's step
        ("alice", None),             // 6
        ("alice", None),             // 7
        ("bob", Some([0x66; 32])),   // 8
        ("alice", Some([0x77; 32])), // 9
    ];
    // Delivery schedule: Bob gets 0,1,2; Alice 3,4; Bob 5,7 then 6 (out of order); Alice 8; Bob 9.
    for (i, (who, secret)) in plan.iter().enumerate() {
        let text = format!("message {i} from {who}");
        let (bytes, v) = if *who == "alice" {
            send(&mut alice, *secret, text.as_bytes(), who)
        } else {
            send(&mut bob, *secret, text.as_bytes(), who)
        };
        messages.push(v);
        wire.push((bytes, text));
        let deliver: &[usize] = match i {
            2 => &[0, 1, 2],
            4 => &[3, 4],
            7 => &[5, 7, 6],
            8 => &[8],
            9 => &[9],
            _ => &[],
        };
        for &d in deliver {
            let (bytes, text) = &wire[d];
            let receiver = if plan[d].0 == "alice" { &mut bob } else { &mut alice };
            receive(receiver, bytes, text.as_bytes());
        }
    }
    json!({
        "description": "Ten Double Ratchet messages with four DH ratchet steps and one out-of-order delivery. Starts from an explicit handshake secret, associated data, Bob's signed prekey secret (his first ratchet key) and Alice's first ratchet secret. The receiving half of a step happens when a message with a new ratchet key arrives; the sending half at the sender's next encryption (sending_step).",
        "shared_secret": hex::encode(sk),
        "associated_data": hex::encode(AD),
        "bob_signed_prekey_secret": hex::encode(bob_spk),
        "bob_signed_prekey_public": hex::encode(bob_spk_public),
        "alice_initial_ratchet_secret": hex::encode(alice_r0),
        "alice_initial_root_key": init_root,
        "alice_initial_chain_key": init_chain,
        "delivery_order": [0, 1, 2, 3, 4, 5, 7, 6, 8, 9],
        "out_of_order": "message 7 is delivered before message 6; message 6's key is stored as skipped and used when 6 arrives",
        "messages": messages,
    })
}

/// A full session from a real handshake (seeded), with the state of both sides pinned.
fn session_vector() -> Value {
    let mut rng = ChaCha20Rng::from_seed([0x5E; 32]);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut prekeys = DevicePrekeys::new();
    prekeys.generate_signed_prekey(&mut rng, &bob_id, 1_767_225_600);
    prekeys.generate_one_time_prekeys(&mut rng, 1);
    prekeys.generate_kem_prekeys(&mut rng, &bob_id, KemPreKeyKind::OneTime, 1);
    let bundle = prekeys.bundle(&bob_id, true).unwrap();
    let bundle_bytes = bundle.encode();
    let verified = bundle.verify().unwrap();
    let mut alice = Session::initiate(&mut rng, &alice_id, &verified).unwrap();
    let m0 = alice.encrypt(&mut rng, b"hello bob").unwrap();
    let m1 = alice.encrypt(&mut rng, b"still there?").unwrap();
    let (mut bob, pt) = Session::accept(&bob_id, &mut prekeys, &m1).unwrap();
    assert_eq!(pt, b"still there?");
    let r0 = bob.encrypt(&mut rng, b"hi alice").unwrap();
    assert_eq!(alice.decrypt(&r0).unwrap(), b"hi alice");
    let alice_state = alice.to_bytes();
    let bob_state = bob.to_bytes();
    // After restore, the delayed first message and a new one still decrypt.
    let m2 = alice.encrypt(&mut rng, b"after restore").unwrap();
    let mut bob_restored = Session::from_bytes(&bob_state).unwrap();
    assert_eq!(bob_restored.decrypt(&m0).unwrap(), b"hello bob");
    assert_eq!(bob_restored.decrypt(&m2).unwrap(), b"after restore");
    json!({
        "description": "A complete session from seed 0x5E: Alice's two prekey messages (m1 arrives first and starts Bob's session), Bob's reply, then the serialized session state of both sides (format version 1). m0 (delayed) and m2 must decrypt with Bob's restored state.",
        "alice_identity_state": hex::encode(&*alice_id.to_state_bytes()),
        "bob_identity_state": hex::encode(&*bob_id.to_state_bytes()),
        "bundle": hex::encode(bundle_bytes),
        "m0": hex::encode(&m0),
        "m1": hex::encode(&m1),
        "r0": hex::encode(&r0),
        "alice_state": hex::encode(&*alice_state),
        "bob_state": hex::encode(&*bob_state),
        "bob_prekey_state_after_accept": hex::encode(&*prekeys.to_state_bytes()),
        "m2": hex::encode(&m2),
    })
}

#[test]
fn ratchet_vectors_match() {
    check_or_write("ratchet.json", &ratchet_vector());
}

#[test]
fn session_vectors_match() {
    check_or_write("session.json", &session_vector());
}

/// The committed state decodes and re-encodes to itself, and keeps working, independently of
/// how the generator evolves: this is the storage-stability guarantee.
#[test]
fn committed_session_state_still_loads() {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path("session.json")).unwrap()).unwrap();
    let bytes = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    let mut bob = Session::from_bytes(&bytes("bob_state")).unwrap();
    assert_eq!(*bob.to_bytes(), bytes("bob_state"));
    assert_eq!(bob.decrypt(&bytes("m0")).unwrap(), b"hello bob");
    assert_eq!(bob.decrypt(&bytes("m2")).unwrap(), b"after restore");
    let alice = Session::from_bytes(&bytes("alice_state")).unwrap();
    assert_eq!(*alice.to_bytes(), bytes("alice_state"));
    let prekeys = DevicePrekeys::from_state_bytes(&bytes("bob_prekey_state_after_accept")).unwrap();
    assert_eq!(*prekeys.to_state_bytes(), bytes("bob_prekey_state_after_accept"));
}

/// Sender keys (PROTOCOL.md §16): one sender chain from explicit secrets, its distribution,
/// three messages with every intermediate key, delivered to a receiver out of order.
fn sender_key_vector() -> Value {
    use crate::sender_key::{Distribution, ReceivedKey, SENDER_KEY_INFO, SenderKey};
    let group_id = [0x47u8; 32];
    let (key_id, chain_key, signing_seed) = (0x0102_0304u32, [0x11u8; 32], [0x22u8; 32]);
    let mut sender = SenderKey::from_secrets(group_id, key_id, 0, &chain_key, &signing_seed);
    let distribution = sender.distribution();
    let mut messages = Vec::new();
    let mut encoded = Vec::new();
    let mut ck = Zeroizing::new(chain_key);
    for (i, text) in
        ["first to the group", "second", "third, delivered before the second"].iter().enumerate()
    {
        let (mk, next) = kdf_ck(&ck);
        let okm = hush_prekeys::kdf::hkdf_sha256::<44>(&[0; 32], &*mk, SENDER_KEY_INFO);
        let bytes = sender.encrypt(text.as_bytes()).unwrap();
        messages.push(json!({
            "iteration": i,
            "chain_key": hex::encode(*ck),
            "message_key": hex::encode(*mk),
            "aead_key": hex::encode(&okm[..32]),
            "aead_nonce": hex::encode(&okm[32..]),
            "plaintext": text,
            "encoded": hex::encode(&bytes),
        }));
        encoded.push(bytes);
        ck = next;
    }
    let mut receiver =
        ReceivedKey::new(&Distribution::decode(&distribution.encode()).unwrap()).unwrap();
    for i in [0usize, 2, 1] {
        let want = messages[i]["plaintext"].as_str().unwrap().as_bytes();
        assert_eq!(receiver.decrypt(&encoded[i]).unwrap(), want);
    }
    json!({
        "group_id": hex::encode(group_id),
        "key_id": key_id,
        "chain_key": hex::encode(chain_key),
        "signing_seed": hex::encode(signing_seed),
        "signing_public_key": hex::encode(distribution.signing_key),
        "distribution": hex::encode(&*distribution.encode()),
        "messages": messages,
        "delivery_order": [0, 2, 1],
        "signature_rule": signature_rule_cases(&signing_seed),
    })
}

/// The §16.4 signature rule at its edges, under the vector's signing key: signatures no RFC 8032
/// signer makes, each with whether a receiver must accept it.
fn signature_rule_cases(signing_seed: &[u8; 32]) -> Value {
    use crate::signatures::{testing, verify};
    use ed25519_dalek::{Signer, SigningKey};
    let signer = SigningKey::from_bytes(signing_seed);
    let message = b"signed bytes of a group message";
    let cases = [
        ("rfc8032", signer.sign(message), true),
        ("small_order_component_in_r", testing::torsioned(&signer, message, 1), true),
        ("s_plus_group_order", testing::non_canonical_s(&signer.sign(message)), false),
        ("r_not_canonical", testing::non_canonical_r(&signer, message), false),
    ];
    let out: Vec<Value> = cases
        .iter()
        .map(|(name, signature, valid)| {
            assert_eq!(verify(&signer.verifying_key(), message, signature), *valid, "{name}");
            json!({
                "name": name,
                "signed": hex::encode(message),
                "signature": hex::encode(signature.to_bytes()),
                "valid": valid,
            })
        })
        .collect();
    json!(out)
}

#[test]
fn sender_key_vectors_match() {
    check_or_write("sender_key.json", &sender_key_vector());
}

/// Groups (PROTOCOL.md §17): a creation and a concurrent pair of changes by two admins, signed
/// by identities from explicit seeds; their encodings, hashes, the canonical state (smallest
/// hash wins) and its snapshot; a `GroupKey` content and a group payload as they travel.
fn group_vector() -> Value {
    use crate::content::{Content, GroupKey, GroupUpdate, content::Body};
    use crate::group::{
        ActionKind, ChangeBody, GroupAction, GroupLog, SignedGroupChange, genesis, validate,
    };
    use crate::sender_key::SenderKey;
    use prost::Message as _;

    let alice = IdentityKeyPair::from_secrets(&[0x31; 32], &[0x32; 32]);
    let bob = IdentityKeyPair::from_secrets(&[0x41; 32], &[0x42; 32]);
    let (alice_account, bob_account, carol_account) = ([0xa1u8; 32], [0xb2u8; 32], [0xc3u8; 32]);
    let group_id = [0x47u8; 32];
    let sign = |who: &IdentityKeyPair, body: &ChangeBody| {
        SignedGroupChange::sign(body, who.public().to_bytes(), |m| who.sign(m))
    };
    let create_body = ChangeBody {
        group_id: group_id.to_vec(),
        epoch: 0,
        parent: vec![0; 32],
        author: alice_account.to_vec(),
        author_device: 1,
        clock: 1,
        at_ms: 1_700_000_000_000,
        actions: vec![
            GroupAction::text(ActionKind::Rename, "Vectors"),
            GroupAction::about(ActionKind::Add, &bob_account),
            GroupAction::about(ActionKind::Promote, &bob_account),
        ],
    };
    let create = sign(&alice, &create_body).verify().unwrap();
    let s0 = genesis(&create).unwrap();
    let at = |author: &[u8; 32], clock, actions| ChangeBody {
        group_id: group_id.to_vec(),
        epoch: 1,
        parent: s0.head.to_vec(),
        author: author.to_vec(),
        author_device: 1,
        clock,
        at_ms: 1_700_000_000_100,
        actions,
    };
    let x = sign(
        &alice,
        &at(&alice_account, 2, vec![GroupAction::text(ActionKind::Rename, "By Alice")]),
    )
    .verify()
    .unwrap();
    let y =
        sign(&bob, &at(&bob_account, 2, vec![GroupAction::about(ActionKind::Add, &carol_account)]))
            .verify()
            .unwrap();
    let mut log = GroupLog::new(s0.clone());
    log.receive(&x).unwrap();
    log.receive(&y).unwrap();
    let winner = if x.hash < y.hash { &x } else { &y };
    assert_eq!(log.state(), &validate(&s0, winner).unwrap());
    let change = |v: &crate::group::Verified| {
        json!({
            "body": hex::encode(&v.signed.body),
            "identity": hex::encode(&v.signed.identity),
            "signature": hex::encode(&v.signed.signature),
            "encoded": hex::encode(v.signed.encode_to_vec()),
            "hash": hex::encode(v.hash),
        })
    };
    let mut sender = SenderKey::from_secrets(group_id, 7, 0, &[0x11; 32], &[0x22; 32]);
    let distribution = sender.distribution().encode().to_vec();
    // Bob's change adds Carol: the state after it travels with it.
    let update = Content::new(Body::GroupUpdate(GroupUpdate {
        change: Some(y.signed.clone()),
        snapshot: Some(validate(&s0, &y).unwrap().snapshot()),
    }));
    let message = sender.encrypt(&update.to_bytes()).unwrap();
    let key = Content::new(Body::GroupKey(GroupKey { distribution: distribution.clone() }));
    json!({
        "alice_identity_seeds": { "ed25519": hex::encode([0x31u8; 32]), "x25519": hex::encode([0x32u8; 32]) },
        "bob_identity_seeds": { "ed25519": hex::encode([0x41u8; 32]), "x25519": hex::encode([0x42u8; 32]) },
        "accounts": { "alice": hex::encode(alice_account), "bob": hex::encode(bob_account), "carol": hex::encode(carol_account) },
        "group_id": hex::encode(group_id),
        "creation": change(&create),
        "concurrent": { "by_alice": change(&x), "by_bob": change(&y), "canonical": hex::encode(winner.hash) },
        "state": {
            "epoch": log.state().epoch,
            "head": hex::encode(log.state().head),
            "name": log.state().name,
            "members": log.state().members.iter().map(|(a, admin)| json!({"account": hex::encode(a), "admin": admin})).collect::<Vec<_>>(),
            "snapshot": hex::encode(log.state().snapshot().encode_to_vec()),
        },
        "sender_key": { "key_id": 7, "chain_key": hex::encode([0x11u8; 32]), "signing_seed": hex::encode([0x22u8; 32]) },
        "group_update_content": hex::encode(update.to_bytes()),
        "group_payload": hex::encode([&[1u8, 3][..], &message].concat()),
        "group_key_content": hex::encode(key.to_bytes()),
    })
}

#[test]
fn group_vectors_match() {
    check_or_write("group.json", &group_vector());
}

/// Attachments (PROTOCOL.md §18): a key, its expansion, and three files (empty, 5 bytes, and
/// two segments plus one byte of a fixed pattern) with their blob sizes and digests; the two
/// small blobs in full, the large one's header and segment tags.
fn attachment_vector() -> Value {
    use crate::attachment::{
        ATTACHMENT_INFO, AttachmentKey, BLOB_HEADER_LEN, Encryptor, SEALED_SEGMENT_LEN, SEGMENT_LEN,
    };
    let key_bytes = [0x5au8; 32];
    let key = AttachmentKey::from_bytes(key_bytes);
    let okm = hush_prekeys::kdf::hkdf_sha256::<64>(&[0; 32], &key_bytes, ATTACHMENT_INFO);
    let mut files = Vec::new();
    for (name, plain) in [
        ("empty", Vec::new()),
        ("hello", b"hello".to_vec()),
        ("two segments and a byte", (0..2 * SEGMENT_LEN + 1).map(|i| (i % 251) as u8).collect()),
    ] {
        let mut blob = Vec::new();
        let mut e = Encryptor::new(&key, &mut blob);
        e.update(&plain, &mut blob);
        let sealed = e.finish(&mut blob);
        let mut v = json!({
            "name": name,
            "plaintext_len": sealed.plaintext_len,
            "blob_len": sealed.blob_len,
            "digest": hex::encode(sealed.digest),
        });
        if plain.len() < 64 {
            v["plaintext"] = json!(hex::encode(&plain));
            v["blob"] = json!(hex::encode(&blob));
        } else {
            v["plaintext"] = json!("byte i = i mod 251");
            v["header"] = json!(hex::encode(&blob[..BLOB_HEADER_LEN]));
            let tags: Vec<String> = blob[BLOB_HEADER_LEN..]
                .chunks(SEALED_SEGMENT_LEN)
                .map(|s| hex::encode(&s[s.len() - 16..]))
                .collect();
            v["segment_tags"] = json!(tags);
        }
        files.push(v);
    }
    json!({
        "key": hex::encode(key_bytes),
        "segment_key": hex::encode(&okm[..32]),
        "commitment": hex::encode(&okm[32..]),
        "segment_len": SEGMENT_LEN,
        "files": files,
    })
}

#[test]
fn attachment_vectors_match() {
    check_or_write("attachment.json", &attachment_vector());
}
