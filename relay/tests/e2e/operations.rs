//! Operator-facing behaviour: health, readiness and metrics endpoints, graceful shutdown,
//! configuration file, and the persisted self-signed certificate.

use std::time::Duration;

use hush_protocol::wire::server_push;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]);
    assert_eq!(relay.http_get("/healthz").await.0, 200);
    assert_eq!(relay.http_get("/readyz").await.0, 200);
    let mut u = User::new(1);
    u.register(&relay.connect().await).await;
    let _c = u.login(&relay, 1).await;
    let (status, body) = relay.http_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "hush_relay_connections{transport=\"quic\"} 1",
        "hush_relay_authenticated_connections ",
        "hush_relay_requests_total",
        "hush_relay_commit_seconds_bucket",
        "hush_relay_envelopes_stored_total",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    assert!(!body.contains(&hex::encode(u.key().as_bytes())), "metrics must not carry account ids");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_tells_clients_to_go_away_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(dir.path(), &[("shutdown-drain-secs", "5")]);
    let mut bob = User::new(1);
    bob.register(&relay.connect().await).await;
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    assert!(drain(&mut sub).await.is_empty());
    let pin = relay.pin;
    let started = std::time::Instant::now();
    let waiter = std::thread::spawn(move || relay.terminate());
    match sub.next_within(Duration::from_secs(10)).await.unwrap() {
        Some(server_push::Body::GoAway(g)) => assert!(g.reason.contains("shutting down")),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert!(waiter.join().unwrap(), "relay exited with an error");
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown exceeded the drain bound");

    // The certificate was persisted: a restart on the same data directory keeps the same pin.
    let again = Relay::start(dir.path(), &[]);
    assert_eq!(again.pin, pin);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "max_devices = 1\nlog_format = \"json\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hush-relay"))
        .args(["config", "--config"])
        .arg(&file)
        .env("HUSH_RETENTION_SECS", "77")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_devices = 1"), "{text}");
    assert!(text.contains("retention_secs = 77"), "{text}");
    assert!(text.contains("log_format = \"json\""), "{text}");
    std::fs::write(&file, "max_devises = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hush-relay"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_devises"));
}
