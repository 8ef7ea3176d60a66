//! Memory an outsider can make the relay hold (docs/BENCHMARKS.md, "Robustness"): requests
//! whose length prefix announces a large frame and whose body never comes, or comes only in
//! part, before and after authentication. The relay holds what arrived, within its per
//! connection, per address and total budgets, and gives it all back when the connections go.
//!
//! Its own test binary, and one test at a time: each pushes hundreds of megabytes through a
//! relay on loopback, which on 2 cores must not compete with the rest of the end-to-end suite
//! (cargo runs test binaries one after another).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::time::Duration;

use hush_protocol::ErrorCode;
use hush_protocol::wire::{Response, response};

use hush_testkit::attacks::half_sent_frames;
use hush_testkit::protocol::User;
use hush_testkit::relay::{Relay, peak_rss, rss_bytes};

/// One test at a time (see the module docs).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1024 * 1024;

/// Waits until the relay's buffered-bytes gauge satisfies `ok`. The relay receives hundreds
/// of megabytes here while the rest of the suite runs on the same 2 cores, so the wait is for
/// progress, not a fixed time: it fails once the gauge has not moved for 20 s (or after
/// 5 minutes in all), and returns as soon as the gauge gets there.
async fn wait_buffered(relay: &Relay, ok: impl Fn(f64) -> bool) -> f64 {
    let start = tokio::time::Instant::now();
    let (mut last, mut moved) = (f64::NAN, start);
    while moved.elapsed() < Duration::from_secs(20) && start.elapsed() < Duration::from_secs(300) {
        let now = relay.metric("hush_relay_buffered_request_bytes").await;
        if ok(now) {
            return now;
        }
        if now != last {
            (last, moved) = (now, tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("buffered bytes never reached the expected value; the gauge stayed at {last}");
}

fn generous() -> Vec<(&'static str, &'static str)> {
    vec![
        ("connection-requests-per-second", "100000"),
        ("connection-request-burst", "100000"),
        ("registrations-per-second", "1000"),
        ("registration-burst", "1000"),
        // Opening thousands of streams on a busy test machine may take longer than the default
        // 30 s a connection may stay unauthenticated.
        ("auth-timeout-secs", "600"),
    ]
}

/// Authenticated: 12 connections × 62 streams each announce a 4 MiB frame. With no body the
/// relay holds nothing (it used to allocate every announced body: 3 GB); with 256 KiB of
/// each body sent, it holds at most its 32 MiB per-address budget and answers the streams
/// over it `rate_limited`; closing the connections gives every byte back.
#[tokio::test(flavor = "multi_thread")]
async fn announced_frames_cost_what_arrived_within_the_budget_after_auth() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &generous());
    let setup = relay.connect().await;
    let mut conns = Vec::new();
    for _ in 0..12 {
        let mut u = User::new(1);
        u.register(&setup).await;
        conns.push(u.login(&relay, 1).await);
    }
    // A relay that has served a large request: glibc then serves the next large allocations
    // from its heap, zero-filled, instead of from untouched fresh pages, so an allocation of
    // an announced body shows in RSS at once (that is how the attack reached 3 GB).
    let big = hush_protocol::frame::encode(&hush_protocol::wire::Request {
        body: Some(hush_protocol::wire::request::Body::Register(hush_protocol::wire::Register {
            device_list: vec![0; 4_190_000],
        })),
    });
    assert!(conns[0].request_raw(&big).await.is_err());
    let before = rss_bytes(relay.pid());
    let mut held = Vec::new();
    for c in &conns {
        held.push(half_sent_frames(c, 62, 4_000_000, 0).await);
    }
    let peak = peak_rss(relay.pid(), Duration::from_secs(1)).await;
    assert!(
        peak.saturating_sub(before) < 64 * MIB,
        "announced but unsent bodies took {} MiB",
        peak.saturating_sub(before) / MIB
    );
    assert_eq!(relay.metric("hush_relay_buffered_request_bytes").await, 0.0);
    drop(held);

    // Part of each body: 12 × 62 × 256 KiB = 186 MiB offered.
    let mut held = Vec::new();
    for c in &conns {
        held.push(half_sent_frames(c, 62, 4 << 20, 256 * 1024).await);
    }
    let buffered = wait_buffered(&relay, |v| v >= 24.0 * MIB as f64).await;
    let peak = peak_rss(relay.pid(), Duration::from_secs(1)).await;
    assert!(buffered <= 32.0 * MIB as f64, "over the per-address budget: {buffered}");
    assert!(
        peak.saturating_sub(before) < 128 * MIB,
        "half-sent bodies took {} MiB",
        peak.saturating_sub(before) / MIB
    );
    // Streams over the budget were answered at once.
    let mut refused = 0;
    for (_, recv) in held.iter_mut().flatten() {
        if let Ok(Ok(Some(body))) = tokio::time::timeout(
            Duration::from_millis(200),
            hush_protocol::quic::read_frame(recv, 1 << 20),
        )
        .await
        {
            let r: Response = body.decode().unwrap();
            let Some(response::Body::Error(e)) = r.body else { panic!("{r:?}") };
            // Streams within the budget wait for the rest of their body, and meet the 15 s
            // request deadline (`bad_request`) if this loop gets to them that late.
            if ErrorCode::parse(&e.code) == Some(ErrorCode::RateLimited) {
                assert!(e.message.contains("buffered request bytes"), "{}", e.message);
                refused += 1;
                if refused >= 10 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "no stream was refused");

    // Everything comes back when the connections go.
    drop(held);
    for c in &conns {
        c.close();
    }
    wait_buffered(&relay, |v| v == 0.0).await;
    // A legitimate request still goes through.
    let mut u = User::new(1);
    u.register(&relay.connect().await).await;
    u.login(&relay, 1).await.prekey_counts().await.unwrap();
}

/// Before authentication: 200 connections × 62 streams announce 64 KiB frames (the pre-auth
/// limit). Without bodies the relay holds nothing; with 32 KiB of each, each connection holds
/// at most its 128 KiB and the address at most its 32 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn announced_frames_before_auth_are_bounded_per_connection_and_address() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &generous());
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(relay.connect().await);
    }
    let before = rss_bytes(relay.pid());
    let mut held = Vec::new();
    for c in &conns {
        held.push(half_sent_frames(c, 62, 64 * 1024, 0).await);
    }
    let peak = peak_rss(relay.pid(), Duration::from_secs(1)).await;
    assert!(
        peak.saturating_sub(before) < 64 * MIB,
        "announced pre-auth bodies took {} MiB",
        peak.saturating_sub(before) / MIB
    );
    drop(held);
    let mut held = Vec::new();
    for c in &conns {
        held.push(half_sent_frames(c, 62, 64 * 1024, 32 * 1024).await);
    }
    // Four streams' 32 KiB fill a connection's 128 KiB; on a busy machine some connections
    // get fewer streams (credit for the dropped ones comes back late), so wait for half of
    // what the streams actually opened can fill, up to 16 MiB.
    let fillable: usize = held.iter().map(|h| h.len().min(4) * 32 * 1024).sum();
    let want = (fillable as f64 / 2.0).min(16.0 * MIB as f64);
    assert!(want >= 4.0 * MIB as f64, "too few streams opened: {fillable} bytes fillable");
    let buffered = wait_buffered(&relay, |v| v >= want).await;
    assert!(buffered <= 32.0 * MIB as f64, "over the per-address budget: {buffered}");
    let peak = peak_rss(relay.pid(), Duration::from_secs(1)).await;
    assert!(
        peak.saturating_sub(before) < 128 * MIB,
        "half-sent pre-auth bodies took {} MiB",
        peak.saturating_sub(before) / MIB
    );
    drop(held);
    for c in &conns {
        c.close();
    }
    wait_buffered(&relay, |v| v == 0.0).await;
}
