//! Garbage, truncated and oversize frames: a typed error or a clean close, never a panic or a
//! hang; the relay keeps serving everyone else.

use std::time::Duration;

use hush_protocol::ErrorCode;
use hush_protocol::wire::{self, request};
use rand::RngExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[("connection-request-burst", "10000")]);
    let c = relay.connect().await;

    // Not protobuf.
    let mut frame = 5u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xff; 5]);
    assert_code(c.request_raw(&frame).await, ErrorCode::MalformedFrame);
    // Truncated: the prefix promises 100 bytes, the stream ends after 3.
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[1, 2, 3]);
    assert_code(c.request_raw(&frame).await, ErrorCode::MalformedFrame);
    // Half a prefix.
    assert_code(c.request_raw(&[0, 0]).await, ErrorCode::MalformedFrame);
    // Empty stream.
    assert_code(c.request_raw(&[]).await, ErrorCode::MalformedFrame);
    // Oversize prefix: refused before the body is read.
    assert_code(c.request_raw(&u32::MAX.to_be_bytes()).await, ErrorCode::FrameTooLarge);
    // Before authentication, frames over 64 KiB are refused (no large buffers for strangers).
    let big = hush_protocol::frame::encode(&wire::Request {
        body: Some(request::Body::Register(wire::Register { device_list: vec![1; 70_000] })),
    });
    assert_code(c.request_raw(&big).await, ErrorCode::FrameTooLarge);
    // A valid frame with no body.
    assert_code(
        c.request_raw(&hush_protocol::frame::encode(&wire::Request { body: None })).await,
        ErrorCode::BadRequest,
    );
    // Subscribe before auth.
    assert_code(c.subscribe().await.map(|_| ()), ErrorCode::NotAuthenticated);
    // Random bytes with valid length prefixes, many times.
    let mut rng = rand::rng();
    for _ in 0..200 {
        let len = rng.random_range(0..64usize);
        let mut body = vec![0u8; len];
        rng.fill(&mut body[..]);
        let mut frame = (len as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        match c.request_raw(&frame).await {
            Ok(_) => {}
            Err(e) => assert!(e.code().is_some(), "untyped error {e:?}"),
        }
    }
    // Still alive for well-behaved clients.
    let mut u = User::new(1);
    u.register(&relay.connect().await).await;
    u.login(&relay, 1).await.prekey_counts().await.unwrap();
    let (status, _) = relay.http_get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_does_not_hang_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let c = relay.connect().await;
    // Open a stream, send half a frame and never finish it.
    let (mut send, _recv) = c.quic().open_bi().await.unwrap();
    send.write_all(&10u32.to_be_bytes()).await.unwrap();
    // Meanwhile other requests on the same connection are served at once.
    let started = std::time::Instant::now();
    c.challenge().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_ack_stream_ends_only_that_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    let mut bob = User::new(1);
    bob.register(&relay.connect().await).await;
    let b = bob.login(&relay, 1).await;
    let (mut send, mut recv) = b.quic().open_bi().await.unwrap();
    let sub = hush_protocol::frame::encode(&wire::Request {
        body: Some(request::Body::Subscribe(wire::Subscribe {})),
    });
    send.write_all(&sub).await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    // The relay stops reading acks; the connection and relay keep working.
    let _ = tokio::time::timeout(Duration::from_secs(2), recv.read_to_end(1 << 20)).await;
    b.prekey_counts().await.unwrap();
}
