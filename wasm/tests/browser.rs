//! wasm-bindgen tests in headless Chromium (scripts/test-web.sh runs them through
//! wasm-bindgen-test-runner and chromedriver): the IndexedDB store against the same conformance
//! suite as the native store, persistence across a reopen, the cryptography on wasm32, and the
//! JavaScript-facing error shape.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use hush_core::Session;
use hush_core::browser::{IndexedDbStore, WebSocketConnector};
use hush_core::store::{Batch, MemoryStore, Store, StoreError, Table, conformance};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn unique(name: &str) -> String {
    format!("{name}-{}", hex::encode(hush_core::StoreKey::random().expose_bytes()))
}

#[wasm_bindgen_test]
async fn indexeddb_store_passes_the_store_conformance_suite() {
    let store = IndexedDbStore::open(&unique("conformance")).await.unwrap();
    conformance::run(&store).await.unwrap();
}

#[wasm_bindgen_test]
async fn memory_store_passes_the_same_suite_on_wasm32() {
    conformance::run(&MemoryStore::new()).await.unwrap();
}

#[wasm_bindgen_test]
async fn indexeddb_keeps_committed_data_across_a_reopen() {
    let name = unique("reopen");
    {
        let store = IndexedDbStore::open(&name).await.unwrap();
        let mut b = Batch::new();
        b.put(Table::Messages, b"k1".to_vec(), b"v1".to_vec());
        b.put(Table::Outbox, vec![0xff, 0], vec![1, 2, 3]);
        store.commit(b).await.unwrap();
    }
    let store = IndexedDbStore::open(&name).await.unwrap();
    assert_eq!(store.get(Table::Messages, b"k1").await.unwrap(), Some(b"v1".to_vec()));
    assert_eq!(store.get(Table::Outbox, &[0xff, 0]).await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(store.get(Table::Meta, b"k1").await.unwrap(), None);
}

#[wasm_bindgen_test]
async fn a_store_is_held_by_one_tab_at_a_time() {
    let name = unique("locked");
    let first = IndexedDbStore::open(&name).await.unwrap();
    assert_eq!(IndexedDbStore::open(&name).await.unwrap_err(), StoreError::Locked);
    drop(first);
    let again = IndexedDbStore::open(&name).await.unwrap();
    assert_eq!(again.get(Table::Meta, b"x").await.unwrap(), None);
}

#[wasm_bindgen_test]
fn the_handshake_and_ratchet_run_on_wasm32() {
    let mut rng = rand::rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let mut prekeys = DevicePrekeys::new();
    prekeys.generate_signed_prekey(&mut rng, &bob, 1_700_000_000);
    prekeys.generate_one_time_prekeys(&mut rng, 1);
    prekeys.generate_kem_prekeys(&mut rng, &bob, KemPreKeyKind::OneTime, 1);
    let bundle = prekeys.bundle(&bob, true).unwrap().verify().unwrap();
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = a.encrypt(&mut rng, "héllo from wasm".as_bytes()).unwrap();
    let (mut b, plain) = Session::accept(&bob, &mut prekeys, &first).unwrap();
    assert_eq!(plain, "héllo from wasm".as_bytes());
    let reply = b.encrypt(&mut rng, b"hi").unwrap();
    assert_eq!(a.decrypt(&reply).unwrap(), b"hi");
    assert_eq!(b.decrypt(&first).unwrap_err().code(), "duplicate_message");
}

#[wasm_bindgen_test]
fn a_relay_url_must_be_a_websocket_url() {
    assert!(WebSocketConnector::new("https://relay.example").is_err());
    assert!(WebSocketConnector::new("wss://relay.example:4443").is_ok());
}

fn code_of(err: JsValue) -> String {
    let name = js_sys::Reflect::get(&err, &"name".into()).unwrap().as_string().unwrap();
    assert_eq!(name, "HushError");
    js_sys::Reflect::get(&err, &"code".into()).unwrap().as_string().unwrap()
}

#[wasm_bindgen_test]
async fn bad_setups_reject_with_a_typed_hush_error() {
    assert_eq!(hush_wasm::generate_store_key().len(), 32);
    let setup = js_sys::Object::new();
    let err = hush_wasm::open_account(setup.clone().into()).await.err().unwrap();
    assert_eq!(code_of(err), "invalid_argument");

    let set = |k: &str, v: JsValue| js_sys::Reflect::set(&setup, &k.into(), &v).unwrap();
    set("database", unique("setup").into());
    set("storeKey", js_sys::Uint8Array::from(&[0u8; 31][..]).into());
    set("relayUrl", "wss://127.0.0.1:1".into());
    let err = hush_wasm::open_account(setup.clone().into()).await.err().unwrap();
    assert_eq!(code_of(err), "invalid_argument");

    // A well-formed setup on an empty database: there is no account to open.
    set("storeKey", js_sys::Uint8Array::from(&[7u8; 32][..]).into());
    let err = hush_wasm::open_account(setup.into()).await.err().unwrap();
    assert_eq!(code_of(err), "no_account");
}
