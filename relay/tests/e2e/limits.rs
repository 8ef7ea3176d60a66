//! Every limit, each with its typed error.

use std::time::Duration;

use hush_protocol::wire::{self, request};
use hush_protocol::{ErrorCode, close};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn payload_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("max-payload-bytes", "4096")]);
    let (_alice, bob, a) = pair(&relay, 1).await;
    a.send(send_to(&bob, &[7; 4096])).await.unwrap();
    let e = assert_code(a.send(send_to(&bob, &[7; 4097])).await, ErrorCode::TooLarge);
    assert!(e.to_string().contains("4096"), "message names the limit: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start(dir.path(), &[("max-payload-bytes", "4096"), ("max-request-bytes", "65536")]);
    let (_alice, bob, a) = pair(&relay, 1).await;
    let huge = wire::Send {
        payloads: vec![vec![1; 2048]; 40],
        envelopes: bob.envelopes(None),
        ephemeral: false,
    };
    assert_code(a.send(huge).await, ErrorCode::FrameTooLarge);
    // The connection is still usable.
    a.send(send_to(&bob, b"still fine")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mailbox_depth_and_byte_quotas() {
    let dir = tempfile::tempdir().unwrap();
    // One sender fills the mailbox here: its share is the whole of it.
    let relay = Relay::start(
        dir.path(),
        &[
            ("mailbox-max-envelopes", "10"),
            ("mailbox-max-bytes", "1000"),
            ("mailbox-sender-share-percent", "100"),
        ],
    );
    let (_alice, bob, a) = pair(&relay, 2).await;
    for _ in 0..10 {
        a.send(send_to(&bob, b"x")).await.unwrap();
    }
    let e = assert_code(a.send(send_to(&bob, b"x")).await, ErrorCode::MailboxFull);
    assert!(e.to_string().contains("too many envelopes"));
    // Draining and acking makes room again (for device 1; device 2 is still full, so a send to
    // both still fails as a whole: nothing is half-delivered).
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub).await.into_iter().map(|(s, _)| s).collect();
    sub.ack(seqs).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 10).await;
    assert_code(a.send(send_to(&bob, b"x")).await, ErrorCode::MailboxFull);
    let b2 = bob.login(&relay, 2).await;
    let mut sub2 = b2.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub2).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs.len(), 10, "the refused sends left nothing behind");
    sub2.ack(seqs).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 20).await;

    // Byte quota: 1000 bytes per device mailbox.
    a.send(send_to(&bob, &[0; 600])).await.unwrap();
    let e = assert_code(a.send(send_to(&bob, &[0; 600])).await, ErrorCode::MailboxFull);
    assert!(e.to_string().contains("too many bytes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_expires_unacked_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("retention-secs", "1"), ("sweep-interval-ms", "100")]);
    let (_alice, bob, a) = pair(&relay, 1).await;
    for _ in 0..3 {
        a.send(send_to(&bob, b"old")).await.unwrap();
    }
    // The sweeper runs every 100 ms and deletes envelopes older than 1 s.
    relay.wait_for_metric("hush_relay_envelopes_expired_total", 3).await;
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    assert!(drain(&mut sub).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn per_account_send_rate() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start(dir.path(), &[("account-sends-per-second", "1"), ("account-send-burst", "3")]);
    let (_alice, bob, a) = pair(&relay, 1).await;
    for _ in 0..3 {
        a.send(send_to(&bob, b"x")).await.unwrap();
    }
    let e = assert_code(a.send(send_to(&bob, b"x")).await, ErrorCode::RateLimited);
    let hush_net::NetError::Relay(hush_protocol::Refusal { retry_after_ms, .. }) = e else {
        unreachable!()
    };
    assert!((1..=1000).contains(&retry_after_ms), "retry_after_ms = {retry_after_ms}");
    // The limit is per account: a second connection of the same account is limited too.
    let a2 = _alice.login(&relay, 1).await;
    assert_code(a2.send(send_to(&bob, b"x")).await, ErrorCode::RateLimited);
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 50)).await;
    a.send(send_to(&bob, b"x")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn per_connection_request_rate() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &[("connection-requests-per-second", "1"), ("connection-request-burst", "5")],
    );
    let c = relay.connect().await;
    let mut limited = None;
    for _ in 0..10 {
        if let Err(e) = c.request(request::Body::GetChallenge(wire::GetChallenge {})).await {
            limited = Some(e);
            break;
        }
    }
    let e = assert_code(Err::<(), _>(limited.expect("never limited")), ErrorCode::RateLimited);
    assert!(matches!(
        e,
        hush_net::NetError::Relay(hush_protocol::Refusal { retry_after_ms: 1.., .. })
    ));
    // Another connection has its own bucket.
    relay.connect().await.challenge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start(dir.path(), &[("registrations-per-second", "1"), ("registration-burst", "2")]);
    let c = relay.connect().await;
    User::new(1).register(&c).await;
    User::new(1).register(&c).await;
    let mut third = User::new(1);
    let list = third.next_list();
    assert_code(c.register(&list).await, ErrorCode::RateLimited);
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("max-devices", "3")]);
    let c = relay.connect().await;
    let mut u = User::new(3);
    u.register(&c).await;
    u.add_device();
    let list = u.next_list();
    let e = assert_code(c.register(&list).await, ErrorCode::TooManyDevices);
    assert!(e.to_string().contains('3'));
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_prekeys_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("max-stored-prekeys", "150")]);
    let mut bob = User::new(1);
    bob.register(&relay.connect().await).await;
    let conn = bob.login(&relay, 1).await;
    conn.upload_prekeys(bob.devices[0].upload(100, 0)).await.unwrap();
    assert_code(
        conn.upload_prekeys(bob.devices[0].upload(100, 0)).await,
        ErrorCode::TooManyPrekeys,
    );
    assert_eq!(conn.prekey_counts().await.unwrap().one_time, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("connections-per-ip", "3")]);
    let mut open = Vec::new();
    for _ in 0..3 {
        let c = relay.connect().await;
        c.challenge().await.unwrap();
        open.push(c);
    }
    let fourth = relay.connect().await;
    let closed = tokio::time::timeout(Duration::from_secs(10), fourth.closed()).await.unwrap();
    assert_eq!(closed.close_code(), Some(close::TOO_MANY_CONNECTIONS));
    // Closing one frees its slot.
    open.pop().unwrap().close();
    let mut admitted = false;
    for _ in 0..100 {
        let c = relay.connect().await;
        if c.challenge().await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted);
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_connections_outlive_the_auth_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("auth-timeout-secs", "1")]);
    let mut u = User::new(1);
    u.register(&relay.connect().await).await;
    let c = u.login(&relay, 1).await;
    // Idle past the deadline without opening a stream: the connection must stay open.
    let closed = tokio::time::timeout(Duration::from_millis(2500), c.closed()).await;
    assert!(closed.is_err(), "an authenticated connection was closed: {closed:?}");
    c.prekey_counts().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_connections_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("auth-timeout-secs", "1")]);
    let c = relay.connect().await;
    let closed = tokio::time::timeout(Duration::from_secs(10), c.closed()).await.unwrap();
    assert_eq!(closed.close_code(), Some(close::AUTH_TIMEOUT));
}
