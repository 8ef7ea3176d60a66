//! Sends, device-set checks, ordered drain, live push, acks and ephemeral envelopes.

use std::time::Duration;

use hush_protocol::ErrorCode;
use hush_protocol::wire::{self, server_push};

use crate::common::*;

async fn setup(relay: &Relay, users: &mut [&mut User]) {
    let c = relay.connect().await;
    for u in users.iter_mut() {
        u.register(&c).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn device_set_mismatch_reports_missing_extra_and_stale() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(2);
    let mut bob = User::new(3);
    setup(&relay, &mut [&mut alice, &mut bob]).await;
    let conn = alice.login(&relay, 1).await;

    // Bob's device 2 missing, a device 7 that does not exist, device 3 with an old registration
    // id; and Alice's own device 2 missing too.
    let mut envelopes = bob.envelopes(None);
    envelopes.retain(|e| e.device_id != 2);
    envelopes.iter_mut().find(|e| e.device_id == 3).unwrap().registration_id = 1;
    envelopes.push(wire::Envelope { device_id: 7, registration_id: 5, ..envelopes[0].clone() });
    let send = wire::Send { payloads: vec![b"x".to_vec()], envelopes, ephemeral: false };
    let err = assert_code(conn.send(send).await, ErrorCode::DeviceMismatch);
    let hush_net::NetError::Relay(hush_protocol::Refusal { mismatches, .. }) = err else {
        unreachable!()
    };
    assert_eq!(mismatches.len(), 1);
    let m = &mismatches[0];
    assert_eq!(m.account, bob.key().as_bytes().to_vec());
    assert_eq!((m.missing.clone(), m.extra.clone(), m.stale.clone()), (vec![2], vec![7], vec![3]));

    // Right for Bob but forgetting Alice's other device.
    let mut envelopes = bob.envelopes(None);
    let mut own = alice.envelopes(Some(1));
    let ok_send = wire::Send {
        payloads: vec![b"x".to_vec()],
        envelopes: envelopes.clone(),
        ephemeral: false,
    };
    // Addressing only Bob is fine: own devices are checked only when the send names our account.
    conn.send(ok_send).await.unwrap();
    own[0].registration_id = 999;
    envelopes.extend(own);
    let send = wire::Send { payloads: vec![b"x".to_vec()], envelopes, ephemeral: false };
    let err = assert_code(conn.send(send).await, ErrorCode::DeviceMismatch);
    let hush_net::NetError::Relay(hush_protocol::Refusal { mismatches, .. }) = err else {
        unreachable!()
    };
    assert_eq!(mismatches[0].account, alice.key().as_bytes().to_vec());
    assert_eq!(mismatches[0].stale, vec![2]);

    // Unknown account.
    let nobody = User::new(1);
    assert_code(conn.send(send_to(&nobody, b"x")).await, ErrorCode::UnknownAccount);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_device_drains_in_order_then_gets_queue_empty_then_live_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let mut bob = User::new(2);
    setup(&relay, &mut [&mut alice, &mut bob]).await;
    let a = alice.login(&relay, 1).await;
    for i in 0..300u32 {
        a.send(send_to(&bob, format!("m{i}").as_bytes())).await.unwrap();
    }
    // Device 1 drains all 300 in order, seqs 1..=300 gap-free, then QueueEmpty.
    let b1 = bob.login(&relay, 1).await;
    let mut sub = b1.subscribe().await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 300);
    for (i, (seq, payload)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(payload, format!("m{i}").as_bytes());
    }
    // Live push after the drain.
    a.send(send_to(&bob, b"live")).await.unwrap();
    let d = next_delivery(&mut sub).await;
    assert_eq!((d.seq, d.payload.as_slice(), d.ephemeral), (301, &b"live"[..], false));
    assert_eq!(d.sender_account, alice.key().as_bytes().to_vec());
    assert_eq!(d.sender_device, 1);

    // Device 2 has its own mailbox with the same 301 envelopes.
    let b2 = bob.login(&relay, 2).await;
    let mut sub2 = b2.subscribe().await.unwrap();
    assert_eq!(drain(&mut sub2).await.len(), 301);
}

/// The native client reads a drain as chunks: one awaited push, then every push that has
/// already arrived (`PushReader::next_ready`, which never waits). Payloads from a few bytes to
/// 100 KB put frame boundaries everywhere relative to QUIC's stream reads; every envelope must
/// still come out once, whole, in order, with `QueueEmpty` after the last.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_read_in_chunks_gives_every_envelope_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let mut bob = User::new(1);
    setup(&relay, &mut [&mut alice, &mut bob]).await;
    let a = alice.login(&relay, 1).await;
    let payload = |i: usize| vec![(i % 251) as u8; [3, 700, 100_000, 1, 64 * 1024 + 5][i % 5]];
    for i in 0..200 {
        a.send(send_to(&bob, &payload(i))).await.unwrap();
    }
    let b = bob.login(&relay, 1).await;
    let (mut reader, _acks) = b.subscribe().await.unwrap().split();
    let (mut got, mut chunks, mut chunked) = (Vec::new(), 0, 0);
    let mut take = |push: Option<server_push::Body>| match push {
        Some(server_push::Body::Delivery(d)) => {
            got.push((d.seq, d.payload));
            false
        }
        Some(server_push::Body::QueueEmpty(q)) => {
            assert_eq!(q.last_seq, 200);
            true
        }
        other => panic!("unexpected push {other:?}"),
    };
    'drain: loop {
        let first = tokio::time::timeout(Duration::from_secs(30), reader.next()).await;
        if take(first.expect("a push in time").unwrap()) {
            break;
        }
        chunks += 1;
        while let Some(push) = reader.next_ready().unwrap() {
            chunked += 1;
            if take(Some(push)) {
                break 'drain;
            }
        }
    }
    assert_eq!(got.len(), 200);
    for (i, (seq, p)) in got.iter().enumerate() {
        assert_eq!((*seq, p.len()), (i as u64 + 1, payload(i).len()));
        assert_eq!(*p, payload(i));
    }
    // The chunked path was taken: some pushes came without an await of their own.
    assert!(chunked > 0 && chunks < 200, "{chunks} awaited, {chunked} ready");
    // Nothing more is ready, and the stream is still open for live pushes.
    assert!(reader.next_ready().unwrap().is_none());
    a.send(send_to(&bob, b"live")).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(30), reader.next()).await.unwrap();
    let Some(server_push::Body::Delivery(d)) = live.unwrap() else { panic!("expected a delivery") };
    assert_eq!((d.seq, d.payload.as_slice()), (201, &b"live"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn envelopes_are_deleted_only_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let mut bob = User::new(1);
    setup(&relay, &mut [&mut alice, &mut bob]).await;
    let a = alice.login(&relay, 1).await;
    for i in 0..5u8 {
        a.send(send_to(&bob, &[i])).await.unwrap();
    }
    // First session: receive all five, ack only 1 and 3, disconnect.
    {
        let b = bob.login(&relay, 1).await;
        let mut sub = b.subscribe().await.unwrap();
        assert_eq!(drain(&mut sub).await.len(), 5);
        sub.ack(vec![1, 3]).await.unwrap();
        // The ack is processed before the relay answers anything sent after it on another stream;
        // wait for it by polling the metric instead of sleeping.
        relay.wait_for_metric("hush_relay_envelopes_acked_total", 2).await;
        b.close();
    }
    // Second session: exactly the unacked ones, in order.
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4, 5]);
    sub.ack(vec![2, 4, 5, 4, 999]).await.unwrap(); // duplicates and unknown seqs are harmless
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 5).await;
    b.close();
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    assert!(drain(&mut sub).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_envelopes_reach_online_devices_and_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(1);
    let mut bob = User::new(2);
    setup(&relay, &mut [&mut alice, &mut bob]).await;
    let a = alice.login(&relay, 1).await;
    let b1 = bob.login(&relay, 1).await;
    let mut sub1 = b1.subscribe().await.unwrap();
    assert!(drain(&mut sub1).await.is_empty());

    let mut typing = send_to(&bob, b"typing");
    typing.ephemeral = true;
    a.send(typing.clone()).await.unwrap();
    let d = next_delivery(&mut sub1).await;
    assert!(d.ephemeral);
    assert_eq!((d.seq, d.payload.as_slice()), (0, &b"typing"[..]));

    // Bob's device 2 was offline: it never sees it, and device 1 has nothing stored either.
    let b2 = bob.login(&relay, 2).await;
    let mut sub2 = b2.subscribe().await.unwrap();
    assert!(drain(&mut sub2).await.is_empty());
    b1.close();
    let b1 = bob.login(&relay, 1).await;
    let mut sub1 = b1.subscribe().await.unwrap();
    assert!(drain(&mut sub1).await.is_empty());

    // Ephemeral sends are still checked against the device set.
    let mut partial = typing;
    partial.envelopes.truncate(1);
    assert_code(a.send(partial).await, ErrorCode::DeviceMismatch);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_recipient_send_stores_each_payload_once_and_fans_out() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut alice = User::new(2);
    let mut bob = User::new(2);
    let mut carol = User::new(1);
    setup(&relay, &mut [&mut alice, &mut bob, &mut carol]).await;
    let a = alice.login(&relay, 1).await;
    // One group payload for everyone, plus a per-device payload for Alice's other device.
    let mut envelopes = bob.envelopes(None);
    envelopes.extend(carol.envelopes(None));
    let mut own = alice.envelopes(Some(1));
    own[0].payload = 1;
    envelopes.extend(own);
    let send = wire::Send {
        payloads: vec![b"group".to_vec(), b"sync".to_vec()],
        envelopes,
        ephemeral: false,
    };
    a.send(send).await.unwrap();
    let mut acked = 0;
    for (user, id, want) in
        [(&bob, 1, "group"), (&bob, 2, "group"), (&carol, 1, "group"), (&alice, 2, "sync")]
    {
        let c = user.login(&relay, id).await;
        let mut sub = c.subscribe().await.unwrap();
        let got = drain(&mut sub).await;
        assert_eq!(got, vec![(1, want.as_bytes().to_vec())]);
        // Each ack drops one reference to the shared payload; the devices after it still read
        // it, and the last ack deletes it.
        sub.ack(vec![1]).await.unwrap();
        acked += 1;
        relay.wait_for_metric("hush_relay_envelopes_acked_total", acked).await;
    }
    for (user, id) in [(&bob, 1), (&carol, 1)] {
        let c = user.login(&relay, id).await;
        assert!(drain(&mut c.subscribe().await.unwrap()).await.is_empty());
    }
    // A device can't address itself, or the same device twice, or a payload that isn't there.
    let mut me = alice.envelopes(None);
    me.retain(|e| e.device_id == 1);
    let bad = wire::Send { payloads: vec![b"x".to_vec()], envelopes: me, ephemeral: false };
    assert_code(a.send(bad).await, ErrorCode::BadRequest);
    let mut twice = bob.envelopes(None);
    twice.push(twice[0].clone());
    assert_code(
        a.send(wire::Send { payloads: vec![b"x".to_vec()], envelopes: twice, ephemeral: false })
            .await,
        ErrorCode::BadRequest,
    );
    let mut dangling = bob.envelopes(None);
    dangling[0].payload = 5;
    assert_code(
        a.send(wire::Send { payloads: vec![b"x".to_vec()], envelopes: dangling, ephemeral: false })
            .await,
        ErrorCode::BadRequest,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_connection_of_the_same_device_takes_over_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut bob = User::new(1);
    setup(&relay, &mut [&mut bob]).await;
    let old = bob.login(&relay, 1).await;
    let mut old_sub = old.subscribe().await.unwrap();
    assert!(drain(&mut old_sub).await.is_empty());
    let new = bob.login(&relay, 1).await;
    let mut new_sub = new.subscribe().await.unwrap();
    assert!(drain(&mut new_sub).await.is_empty());
    match old_sub.next_within(Duration::from_secs(10)).await.unwrap() {
        Some(server_push::Body::GoAway(g)) => assert!(g.reason.contains("replaced")),
        other => panic!("expected GoAway, got {other:?}"),
    }
}

/// The largest group send (docs/PROTOCOL.md §17.8): 1,000 members with 6 devices each, one
/// shared payload, 6,000 envelopes. It fits the default request limits, is one commit (every
/// device gets it, each mailbox one envelope), and the payload is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_to_the_largest_group_fits_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &[
            ("registrations-per-second", "100000"),
            ("registration-burst", "100000"),
            ("connection-requests-per-second", "100000"),
            ("connection-request-burst", "100000"),
        ],
    );
    let c = relay.connect().await;
    let mut members: Vec<User> = (0..1000).map(|_| User::new(6)).collect();
    for u in &mut members {
        u.register(&c).await;
    }
    let mut alice = User::new(1);
    alice.register(&c).await;
    let conn = alice.login(&relay, 1).await;
    let envelopes: Vec<wire::Envelope> = members.iter().flat_map(|u| u.envelopes(None)).collect();
    assert_eq!(envelopes.len(), 6000);
    let payload = vec![9u8; 1024];
    const STORED: &str = "hush_relay_stored_payload_bytes";
    let stored_before = relay.metric(STORED).await;
    let send = wire::Send { payloads: vec![payload.clone()], envelopes, ephemeral: false };
    conn.send(send).await.unwrap();
    relay.wait_for_metric(STORED, (stored_before as u64) + 1024).await;
    let stored = relay.metric(STORED).await - stored_before;
    assert_eq!(stored, 1024.0, "the payload is stored once");
    for (u, d) in [(&members[0], 1), (&members[499], 6), (&members[999], 3)] {
        let dc = u.login(&relay, d).await;
        let mut sub = dc.subscribe().await.unwrap();
        let got = drain(&mut sub).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, payload);
    }
}
