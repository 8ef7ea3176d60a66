//! End to end, what a client does when the relay refuses, restarts or can't be trusted: a
//! send refused for a reason that may pass stays pending with its reason until it goes out
//! or the user gives up; reconnects after a relay restart take the shortest wait every time;
//! a certificate that is not trusted is reported at once, with the address tried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_core::transport::QuicConnector;
use hush_core::{ClientOptions, Event, MessageStatus};
use hush_testkit::{Device, Relay, WAIT, options};

async fn message(d: &Device, peer: &str, id: &str) -> hush_core::MessageView {
    let page = d.c().messages(peer, None, 1000).await.unwrap();
    page.into_iter().find(|m| m.id == id).expect("message in history")
}

async fn wait_status(d: &Device, peer: &str, id: &str, want: MessageStatus, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let m = message(d, peer, id).await;
        // Sent means the relay has it; a receipt may already have moved it further.
        let reached = match want {
            MessageStatus::Sent => {
                matches!(
                    m.status,
                    MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
                )
            }
            other => m.status == other,
        };
        if reached {
            return;
        }
        assert!(Instant::now() < until, "{}: status {:?}, want {want:?}", d.name, m.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob's mailbox is full (he is offline): Alice's next message stays pending with
/// `mailbox_full` on it, the one after waits behind it, and both go out, in order, once Bob
/// drains, with no call from the app. It used to be marked failed and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_stays_pending_with_its_reason_until_it_goes_out() {
    let relay = Relay::temp_with(&[
        ("mailbox-max-envelopes", "3"),
        ("mailbox-sender-share-percent", "100"),
    ]);
    let mut alice = Device::create("alice", &relay).await;
    let mut bob = Device::create("bob", &relay).await;
    let (a, b) = (alice.id().await, bob.id().await);
    alice.c().add_contact(&b, "Bob").await.unwrap();
    bob.c().add_contact(&a, "Alice").await.unwrap();
    bob.stop().await;
    for i in 0..3 {
        let id = alice.c().send_text(&b, &format!("fits {i}")).await.unwrap();
        wait_status(&alice, &b, &id, MessageStatus::Sent, WAIT).await;
    }
    let held = alice.c().send_text(&b, "held").await.unwrap();
    let (code, retry) = alice
        .expect("a delay", |e| match e {
            Event::SendDelayed { message_id, code, retry_in_ms, .. } if *message_id == held => {
                Some((code.clone(), *retry_in_ms))
            }
            _ => None,
        })
        .await;
    assert_eq!(code, "mailbox_full");
    assert!(retry >= 1000, "{retry}");
    let behind = alice.c().send_text(&b, "behind").await.unwrap();
    let m = message(&alice, &b, &held).await;
    assert_eq!(m.status, MessageStatus::Pending);
    assert_eq!(m.problem.as_ref().map(|p| p.code.as_str()), Some("mailbox_full"));
    assert_eq!(message(&alice, &b, &behind).await.status, MessageStatus::Pending);

    bob.restart().await;
    wait_status(&alice, &b, &held, MessageStatus::Sent, WAIT).await;
    wait_status(&alice, &b, &behind, MessageStatus::Sent, WAIT).await;
    assert!(message(&alice, &b, &held).await.problem.is_none(), "the reason is cleared once sent");
    let got = bob.wait_history(&a, 5).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["fits 0", "fits 1", "fits 2", "held", "behind"]);
}

/// The user gives up on a message that can't go out: it is marked failed (`canceled`) and
/// leaves the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_send_can_be_given_up() {
    let relay = Relay::temp_with(&[("max-stored-bytes", "1")]);
    let alice = Device::create("alice", &relay).await;
    let mut bob = Device::create("bob", &relay).await;
    let b = bob.id().await;
    alice.c().add_contact(&b, "Bob").await.unwrap();
    bob.stop().await;
    let id = alice.c().send_text(&b, "too much for this relay").await.unwrap();
    let m = loop {
        let m = message(&alice, &b, &id).await;
        if m.problem.is_some() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m.problem.unwrap().code, "storage_full");
    alice.c().cancel_send(&id).await.unwrap();
    let m = message(&alice, &b, &id).await;
    assert_eq!(m.status, MessageStatus::Failed);
    assert_eq!(m.problem.unwrap().code, "canceled");
    alice.c().flush(Duration::from_secs(5)).await.unwrap();
    assert!(alice.c().cancel_send(&id).await.is_err(), "only a pending message can be given up");
}

/// Eight relay restarts in a row: each time a message sent right after the restart is on the
/// relay within 2 s. The old connection is reset at its next packet (the relay's reset key
/// survives restarts) and the reconnect waits the least, since the backoff starts over after
/// every connection that got through (it used to reach 26 s after 8 restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_back_within_2_s_of_every_relay_restart() {
    let mut relay = Relay::temp();
    let mut alice = Device::create("alice", &relay).await;
    let bob = Device::create("bob", &relay).await;
    let b = bob.id().await;
    alice.c().add_contact(&b, "Bob").await.unwrap();
    // The production backoff: 250 ms doubling to 30 s.
    let production = ClientOptions::default();
    let connector = Arc::new(QuicConnector::pinned(relay.quic, relay.pin));
    alice.restart_with(connector, production).await;
    alice.connected().await;
    for round in 0..8 {
        relay.restart();
        let restarted = Instant::now();
        let id = alice.c().send_text(&b, &format!("after restart {round}")).await.unwrap();
        wait_status(&alice, &b, &id, MessageStatus::Sent, Duration::from_secs(2)).await;
        assert!(restarted.elapsed() < Duration::from_secs(2), "round {round}");
    }
}

/// A wrong pin is reported at once as `certificate_rejected`, naming the address and the
/// key the relay presented; a relay that does not answer is reported as `network`, naming
/// the address. (Both used to be "network: not connected to the relay" after 10 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_went_wrong_and_where() {
    let relay = Relay::temp();
    let mut alice = Device::create("alice", &relay).await;
    let bob = Device::create("bob", &relay).await;
    let b = bob.id().await;

    let wrong_pin = Arc::new(QuicConnector::pinned(relay.quic, [7; 32]));
    alice.restart_with(wrong_pin, options()).await;
    let started = Instant::now();
    let e = alice.c().add_contact(&b, "Bob").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(e.code(), "certificate_rejected", "{e}");
    let text = e.message();
    assert!(text.contains(&relay.quic.to_string()), "{text}");
    assert!(text.contains("does not match the pin"), "{text}");
    assert!(!text.contains("certificate_rejected"), "the message does not repeat its code");
    let reported = alice
        .expect("the error event", |e| match e {
            Event::Error { code, .. } if code == "certificate_rejected" => Some(()),
            _ => None,
        })
        .await;
    let () = reported;

    let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = Arc::new(QuicConnector::pinned(nobody, relay.pin));
    let quick = ClientOptions { relay_wait: Duration::from_secs(4), ..options() };
    alice.restart_with(dead, quick).await;
    let e = alice.c().add_contact(&b, "Bob").await.unwrap_err();
    assert_eq!(e.code(), "network", "{e}");
    let text = e.message();
    assert!(text.contains(&nobody.to_string()) && text.contains("no answer"), "{text}");
    assert!(!text.starts_with("network"), "{text}");
}
