//! Prekey uploads (verified), counts, and one-time key claims that never hand a key out twice.

use std::collections::HashSet;
use std::sync::Arc;

use hush_prekeys::{KemPreKeyKind, PreKeyBundle, SignedPreKey};
use hush_protocol::ErrorCode;
use hush_protocol::wire;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_verified_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut bob = User::new(1);
    let c = relay.connect().await;
    bob.register(&c).await;
    let conn = bob.login(&relay, 1).await;
    let upload = bob.devices[0].upload(10, 5);
    assert_eq!(upload.one_time_prekeys.len(), 10);
    assert_eq!(upload.kem_prekeys.len(), 5);
    let counts = conn.upload_prekeys(upload.clone()).await.unwrap();
    assert_eq!((counts.one_time, counts.kem_one_time), (10, 5));
    assert!(counts.has_signed_prekey && counts.has_last_resort_kem_prekey);
    assert_eq!(conn.prekey_counts().await.unwrap(), counts);

    // A signed prekey signed by someone else is refused, and nothing of the upload is stored.
    let mallory = User::new(1);
    let mut forged = SignedPreKey::decode(&upload.signed_prekey).unwrap();
    let msg = SignedPreKey::signed_message(forged.id, forged.created_at, &forged.public);
    forged.signature = mallory.device(1).identity.sign(&msg);
    let bad = wire::UploadPrekeys {
        signed_prekey: forged.encode(),
        one_time_prekeys: upload.one_time_prekeys.clone(),
        ..Default::default()
    };
    assert_code(conn.upload_prekeys(bad).await, ErrorCode::BadSignature);
    assert_eq!(conn.prekey_counts().await.unwrap().one_time, 10);

    // Over 100 one-time keys in one upload.
    let many = wire::UploadPrekeys {
        one_time_prekeys: vec![upload.one_time_prekeys[0].clone(); 101],
        ..Default::default()
    };
    assert_code(conn.upload_prekeys(many).await, ErrorCode::TooManyPrekeys);
    let garbage = wire::UploadPrekeys { one_time_prekeys: vec![vec![0; 7]], ..Default::default() };
    assert_code(conn.upload_prekeys(garbage).await, ErrorCode::InvalidKey);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_fetches_never_share_a_one_time_key() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &[("connection-request-burst", "1000"), ("device-one-time-claim-burst", "1000")],
    );
    let mut bob = User::new(1);
    let c = relay.connect().await;
    bob.register(&c).await;
    let bob_conn = bob.login(&relay, 1).await;
    bob_conn.upload_prekeys(bob.devices[0].upload(50, 20)).await.unwrap();

    let alice = Arc::new({
        let mut a = User::new(1);
        a.register(&c).await;
        a
    });
    // 8 connections x 10 fetches = 80 claims racing for 50 one-time and 20 one-time KEM keys.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conn = alice.login(&relay, 1).await;
        let bob_key = bob.key();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                let b = conn.fetch_bundles(&bob_key, &[]).await.unwrap();
                got.push(PreKeyBundle::decode(&b[0].bundle).unwrap().verify().unwrap());
            }
            got
        }));
    }
    let mut otks = Vec::new();
    let mut kems = Vec::new();
    let mut without = 0;
    let mut last_resort = 0;
    for t in tasks {
        for b in t.await.unwrap() {
            match &b.bundle().one_time_prekey {
                Some(k) => otks.push(k.id),
                None => without += 1,
            }
            match b.bundle().kem_prekey.kind {
                KemPreKeyKind::OneTime => kems.push(b.bundle().kem_prekey.id),
                KemPreKeyKind::LastResort => last_resort += 1,
            }
        }
    }
    let unique: HashSet<_> = otks.iter().collect();
    assert_eq!(unique.len(), otks.len(), "a one-time key was handed out twice");
    assert_eq!(otks.len(), 50);
    assert_eq!(without, 30);
    let unique_kem: HashSet<_> = kems.iter().collect();
    assert_eq!(unique_kem.len(), 20);
    assert_eq!(kems.len(), 20);
    assert_eq!(last_resort, 60);
    assert_eq!(bob_conn.prekey_counts().await.unwrap().one_time, 0);
}

/// One account spreading bundle fetches over 8 connections (the attack that drained 2,000
/// keys in 0.9 s) gets at most the device's claim burst of one-time keys; after that its
/// bundles still start sessions (signed prekey and last-resort KEM key) but claim nothing,
/// and past its own bundle burst it is told `rate_limited`.
#[tokio::test(flavor = "multi_thread")]
async fn one_account_cannot_drain_a_devices_one_time_keys() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &[
            ("connection-request-burst", "10000"),
            ("device-one-time-claim-burst", "10"),
            ("account-bundle-burst", "60"),
            ("account-bundles-per-second", "1"),
        ],
    );
    let mut bob = User::new(1);
    let mut mallory = User::new(1);
    let c = relay.connect().await;
    bob.register(&c).await;
    mallory.register(&c).await;
    let b = bob.login(&relay, 1).await;
    b.upload_prekeys(bob.devices[0].upload(100, 50)).await.unwrap();
    let bob_key = bob.key();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conn = mallory.login(&relay, 1).await;
        tasks.push(tokio::spawn(async move {
            let (mut with_key, mut without, mut limited) = (0, 0, 0);
            for _ in 0..10 {
                match conn.fetch_bundles(&bob_key, &[1]).await {
                    Ok(bundles) => {
                        let bundle =
                            hush_prekeys::PreKeyBundle::decode(&bundles[0].bundle).unwrap();
                        if bundle.one_time_prekey.is_some() { with_key += 1 } else { without += 1 }
                    }
                    Err(e) if e.code() == Some(hush_protocol::ErrorCode::RateLimited) => {
                        limited += 1
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (with_key, without, limited)
        }));
    }
    let (mut with_key, mut without, mut limited) = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await.unwrap();
        (with_key, without, limited) = (with_key + a, without + b, limited + c);
    }
    assert_eq!(with_key, 10, "the claim burst, and no more");
    // The requester's burst of 60, plus a token a second while the test runs.
    assert!((60..=63).contains(&(with_key + without)), "{with_key} + {without}");
    assert_eq!(with_key + without + limited, 80);
    let counts = b.prekey_counts().await.unwrap();
    assert_eq!((counts.one_time, counts.kem_one_time), (90, 40));
    relay.wait_for_metric("hush_relay_one_time_claims_limited_total", 50).await;
}
