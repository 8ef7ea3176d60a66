//! Registration, device lists and device authentication, including every failure.

use hush_protocol::wire::{self, request};
use hush_protocol::{ErrorCode, close};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn register_authenticate_and_fetch_a_verified_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(2);
    let conn = relay.connect().await;
    alice.register(&conn).await;

    // No request but registration before auth.
    assert_code(conn.prekey_counts().await, ErrorCode::NotAuthenticated);
    assert_code(conn.device_list(&alice.key()).await, ErrorCode::NotAuthenticated);

    conn.authenticate(&alice.key(), 1, &alice.device(1).identity).await.unwrap();
    assert_code(
        conn.authenticate(&alice.key(), 1, &alice.device(1).identity).await,
        ErrorCode::AlreadyAuthenticated,
    );
    let list = conn.device_list(&alice.key()).await.unwrap();
    assert_eq!(list.devices.len(), 2);
    assert_eq!(list.version, 1);
    assert_eq!(list.device(2).unwrap().identity, *alice.device(2).identity.public());

    // An old list can't be replayed over a newer one.
    let v2 = alice.next_list();
    conn.register(&v2).await.unwrap();
    let mut stale = User {
        account: hush_protocol::AccountKeyPair::from_seed(&alice.account.seed()),
        devices: vec![],
        version: 0,
    };
    stale.add_device();
    let v1_again = stale.next_list();
    assert_code(conn.register(&v1_again).await, ErrorCode::StaleDeviceList);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let conn = relay.connect().await;
    alice.register(&conn).await;
    let mallory = User::new(1);

    // Wrong key: Mallory signs as Alice's device 1.
    let nonce = conn.challenge().await.unwrap();
    let sig = conn.sign_challenge(&nonce, &alice.key(), 1, &mallory.device(1).identity).unwrap();
    assert_code(conn.authenticate_with(&alice.key(), 1, &sig).await, ErrorCode::BadSignature);

    // Replayed nonce: a correct signature over an already used nonce.
    let good = conn.sign_challenge(&nonce, &alice.key(), 1, &alice.device(1).identity).unwrap();
    assert_code(conn.authenticate_with(&alice.key(), 1, &good).await, ErrorCode::ReplayedNonce);

    // A signature made for one connection is useless on another (channel binding), even with a
    // nonce the second connection did issue.
    let other = relay.connect().await;
    let nonce2 = other.challenge().await.unwrap();
    let sig_for_conn =
        conn.sign_challenge(&nonce2, &alice.key(), 1, &alice.device(1).identity).unwrap();
    assert_code(
        other.authenticate_with(&alice.key(), 1, &sig_for_conn).await,
        ErrorCode::BadSignature,
    );

    // Unknown device and unknown account.
    let n = conn.challenge().await.unwrap();
    let sig = conn.sign_challenge(&n, &alice.key(), 9, &alice.device(1).identity).unwrap();
    assert_code(conn.authenticate_with(&alice.key(), 9, &sig).await, ErrorCode::UnknownDevice);
    let n = conn.challenge().await.unwrap();
    let sig = conn.sign_challenge(&n, &mallory.key(), 1, &mallory.device(1).identity).unwrap();
    assert_code(conn.authenticate_with(&mallory.key(), 1, &sig).await, ErrorCode::UnknownAccount);

    // And the right signature still works after all that.
    conn.authenticate(&alice.key(), 1, &alice.device(1).identity).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_device_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let conn = relay.connect().await;
    let list = alice.next_list();
    let mut forged = list.encoded().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let r = conn.request(request::Body::Register(wire::Register { device_list: forged })).await;
    assert_code(r, ErrorCode::BadSignature);
    let r =
        conn.request(request::Body::Register(wire::Register { device_list: vec![1, 2, 3] })).await;
    assert_code(r, ErrorCode::InvalidKey);
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_device_is_cut_off_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(2);
    let setup = relay.connect().await;
    alice.register(&setup).await;
    let laptop = alice.login(&relay, 2).await;
    let _sub = laptop.subscribe().await.unwrap();

    // Device 1 removes device 2 with a new signed list.
    alice.devices.retain(|d| d.id != 2);
    let phone = alice.login(&relay, 1).await;
    alice.register(&phone).await;

    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(10), laptop.closed()).await.unwrap();
    assert_eq!(closed.close_code(), Some(close::DEVICE_REMOVED));

    // It can't come back with its old key.
    let again = relay.connect().await;
    let n = again.challenge().await.unwrap();
    let old_identity = hush_prekeys::IdentityKeyPair::generate(&mut rand::rng());
    let sig = again.sign_challenge(&n, &alice.key(), 2, &old_identity).unwrap();
    assert_code(again.authenticate_with(&alice.key(), 2, &sig).await, ErrorCode::UnknownDevice);
    assert_eq!(phone.device_list(&alice.key()).await.unwrap().devices.len(), 1);
}
