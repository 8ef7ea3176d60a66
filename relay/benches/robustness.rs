//! Robustness figures (docs/BENCHMARKS.md, "Robustness"): the attacks an outside run made on
//! the relay, replayed against the real binary on loopback, each measured as it hurts.
//!
//! - `memory`: requests that announce large frames and send nothing, or part, before and
//!   after authentication: the relay's RSS before, at its peak, and after the connections go.
//! - `restart`: a relay killed and restarted on its address: how long until a client's old
//!   connection fails (a stateless reset) and a new one is authenticated.
//! - `fds`: 1,024 half-open TCP connections under an open-file limit of 1,024: how long a
//!   WebSocket client then takes to connect, and how often the relay logged about it.
//! - `http`: 500 connections to the operator listener sending half a request: how long they
//!   are held.
//! - `prekeys`: one account fetching a device's bundles from 8 connections for 2 s: how many
//!   one-time keys it claims.
//! - `fairness`: one sender fills a device's mailbox: can another still send to it?
//! - `disk`: 256 MiB of payload into one mailbox from 4 accounts: the database file, after the
//!   drain, and after `hush-relay compact`.
//!
//! `cargo bench -p hush-relay --bench robustness` runs them all at full size against this
//! build's relay; `HUSH_RELAY_BIN=path` runs them against another build (an earlier one, for
//! the "before" figures: every flag used here is one it knows); `HUSH_ROBUSTNESS=memory,disk`
//! picks sections. Under `cargo test` a small smoke pass runs, so the tool can't rot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_protocol::wire::{self, request};
use hush_testkit::attacks::*;
use hush_testkit::protocol::*;
use hush_testkit::relay::*;

const MIB: f64 = 1048576.0;

struct Scale {
    full: bool,
}

impl Scale {
    fn n(&self, full: usize, smoke: usize) -> usize {
        if self.full { full } else { smoke }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = Scale { full };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let sections = std::env::var("HUSH_ROBUSTNESS").unwrap_or_default();
    let on = |s: &str| sections.is_empty() || sections.split(',').any(|x| x.trim() == s);
    println!(
        "## hush-relay robustness ({} mode, {})\n",
        if full { "full" } else { "smoke" },
        relay_binary().display()
    );
    rt.block_on(async {
        if on("memory") {
            memory(&scale).await;
        }
        if on("restart") {
            restart(&scale).await;
        }
        if on("fds") {
            fds(&scale).await;
        }
        if on("http") {
            http(&scale).await;
        }
        if on("prekeys") {
            prekeys(&scale).await;
        }
        if on("fairness") {
            fairness(&scale).await;
        }
        if on("disk") {
            disk(&scale).await;
        }
    });
}

fn dir() -> tempfile::TempDir {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness");
    std::fs::create_dir_all(&d).unwrap();
    tempfile::tempdir_in(d).unwrap()
}

fn generous() -> Vec<(&'static str, &'static str)> {
    vec![
        ("connection-requests-per-second", "100000"),
        ("connection-request-burst", "100000"),
        ("registrations-per-second", "100000"),
        ("registration-burst", "100000"),
        ("account-sends-per-second", "100000"),
        ("account-send-burst", "100000"),
        ("auth-timeout-secs", "600"),
    ]
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

async fn memory(scale: &Scale) {
    println!("### Memory: announced frames, bodies never or partly sent\n");
    println!(
        "| attack | RSS before | peak, no body | peak, part of each body | after the connections close |"
    );
    println!("|---|---|---|---|---|");
    // Before authentication: 200 connections × 62 streams × 64 KiB frames.
    {
        let d = dir();
        let relay = Relay::start(d.path(), &generous());
        let n = scale.n(200, 10);
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(relay.connect().await);
        }
        let before = rss_bytes(relay.pid());
        let mut held = Vec::new();
        for c in &conns {
            held.push(half_sent_frames(c, 62, 64 * 1024, 0).await);
        }
        let empty = peak_rss(relay.pid(), Duration::from_secs(2)).await;
        drop(held);
        let mut held = Vec::new();
        for c in &conns {
            held.push(half_sent_frames(c, 62, 64 * 1024, 32 * 1024).await);
        }
        let part = peak_rss(relay.pid(), Duration::from_secs(2)).await;
        drop(held);
        for c in &conns {
            c.close();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_bytes(relay.pid());
        println!(
            "| before auth: {n} connections × 62 streams × 64 KiB frames (part: 32 KiB each) | {} | {} | {} | {} |",
            mib(before),
            mib(empty),
            mib(part),
            mib(after)
        );
    }
    // After authentication: 12 connections × 62 streams × 4 MB frames, on a relay that has
    // already served a 4 MB request.
    {
        let d = dir();
        let relay = Relay::start(d.path(), &generous());
        let setup = relay.connect().await;
        let mut conns = Vec::new();
        for _ in 0..scale.n(12, 2) {
            let mut u = User::new(1);
            u.register(&setup).await;
            conns.push(u.login(&relay, 1).await);
        }
        let big = hush_protocol::frame::encode(&wire::Request {
            body: Some(request::Body::Register(wire::Register { device_list: vec![0; 4_190_000] })),
        });
        let _ = conns[0].request_raw(&big).await;
        let before = rss_bytes(relay.pid());
        let mut held = Vec::new();
        for c in &conns {
            held.push(half_sent_frames(c, 62, 4_000_000, 0).await);
        }
        let empty = peak_rss(relay.pid(), Duration::from_secs(2)).await;
        drop(held);
        let mut held = Vec::new();
        for c in &conns {
            held.push(half_sent_frames(c, 62, 4_000_000, 256 * 1024).await);
        }
        let part = peak_rss(relay.pid(), Duration::from_secs(2)).await;
        drop(held);
        for c in &conns {
            c.close();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_bytes(relay.pid());
        println!(
            "| after auth: {} connections × 62 streams × 4 MB frames (part: 256 KiB each) | {} | {} | {} | {} |",
            conns.len(),
            mib(before),
            mib(empty),
            mib(part),
            mib(after)
        );
    }
    println!();
}

async fn restart(scale: &Scale) {
    println!("### Relay restart (SIGKILL, same address)\n");
    println!("| round | old connection fails after | new connection authenticated after |");
    println!("|---|---|---|");
    let d = dir();
    let mut relay = Relay::start(d.path(), &[]);
    let mut bob = User::new(1);
    bob.register(&relay.connect().await).await;
    for round in 1..=scale.n(3, 1) {
        let b = bob.login(&relay, 1).await;
        relay.restart();
        let restarted = Instant::now();
        let failed = tokio::time::timeout(Duration::from_secs(30), b.prekey_counts()).await;
        let failed_after = restarted.elapsed();
        assert!(matches!(failed, Ok(Err(_))), "the old connection still answered");
        bob.login(&relay, 1).await.prekey_counts().await.unwrap();
        println!(
            "| {round} | {:.2} s | {:.2} s |",
            failed_after.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
    }
    println!();
}

async fn fds(scale: &Scale) {
    println!("### File descriptors: half-open WebSocket connections, open-file limit 1,024\n");
    let d = dir();
    let log = d.path().join("relay.log");
    let relay = Relay::launch(
        &d.path().join("data"),
        &[("ws-tls", "false")],
        Launch { nofile: Some(1024), log: Some(log.clone()) },
    );
    let held = half_open(relay.ws, scale.n(1024, 64)).await;
    let started = Instant::now();
    let ok = websocket_handshake(relay.ws, Duration::from_secs(30)).await;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = text.matches("websocket accept failed").count();
    println!(
        "| half-open connections | a client's WebSocket handshake | relay log lines (of them accept failures) |"
    );
    println!("|---|---|---|");
    println!(
        "| {} | {} | {} ({warnings}) |\n",
        held.len(),
        if ok { format!("{:.2} s", took.as_secs_f64()) } else { "failed after 30 s".into() },
        text.lines().count()
    );
}

async fn http(scale: &Scale) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    println!("### Operator listener: half-sent request heads\n");
    let d = dir();
    let relay = Relay::start(d.path(), &[]);
    let n = scale.n(500, 20);
    let mut slow = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = tokio::net::TcpStream::connect(relay.http).await {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
            slow.push(s);
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut s in slow {
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("| connections | all closed by the relay after |");
    println!("|---|---|");
    let took = started.elapsed();
    let closed = if took >= Duration::from_secs(60) {
        "still held at 60 s".to_owned()
    } else {
        format!("{:.1} s", took.as_secs_f64())
    };
    println!("| {n} | {closed} |\n");
}

async fn prekeys(scale: &Scale) {
    println!("### Prekeys: one account drains a device\n");
    let d = dir();
    let relay = Relay::start(d.path(), &generous());
    let mut bob = User::new(1);
    let mut mallory = User::new(1);
    let c = relay.connect().await;
    bob.register(&c).await;
    mallory.register(&c).await;
    let b = bob.login(&relay, 1).await;
    for _ in 0..scale.n(10, 1) {
        b.upload_prekeys(bob.devices[0].upload(100, 100)).await.unwrap();
    }
    let stock = b.prekey_counts().await.unwrap();
    let key = bob.key();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conn = mallory.login(&relay, 1).await;
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(2);
            let mut refused = 0;
            while Instant::now() < end {
                if conn.fetch_bundles(&key, &[1]).await.is_err() {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let left = b.prekey_counts().await.unwrap();
    println!(
        "| one-time keys before | claimed in {:.1} s (X25519 + KEM) | requests refused `rate_limited` |",
        started.elapsed().as_secs_f64()
    );
    println!("|---|---|---|");
    println!(
        "| {} + {} | {} + {} | {refused} |\n",
        stock.one_time,
        stock.kem_one_time,
        stock.one_time - left.one_time,
        stock.kem_one_time - left.kem_one_time
    );
}

async fn fairness(_scale: &Scale) {
    println!("### Mailbox fairness: one sender fills a device's mailbox (1,000 envelopes)\n");
    let d = dir();
    let mut flags = generous();
    flags.push(("mailbox-max-envelopes", "1000"));
    let relay = Relay::start(d.path(), &flags);
    let (mut mallory, mut carol, mut bob) = (User::new(1), User::new(1), User::new(1));
    let c = relay.connect().await;
    for u in [&mut mallory, &mut carol, &mut bob] {
        u.register(&c).await;
    }
    let m = mallory.login(&relay, 1).await;
    let mut stored = 0;
    let refusal = loop {
        match m.send(send_to(&bob, b"spam")).await {
            Ok(_) => stored += 1,
            Err(e) => break e.to_string(),
        }
    };
    let carol_conn = carol.login(&relay, 1).await;
    let carol_result = match carol_conn.send(send_to(&bob, b"hi")).await {
        Ok(_) => "sent".to_owned(),
        Err(e) => format!("refused: {}", e.code().map_or("?".into(), |c| c.to_string())),
    };
    println!("| the sender stored | then it was told | another sender's message |");
    println!("|---|---|---|");
    println!("| {stored} | {refusal} | {carol_result} |\n");
}

async fn disk(scale: &Scale) {
    println!("### Disk: 256 MiB of payload into one mailbox from 4 accounts\n");
    let d = dir();
    let mut relay = Relay::start(d.path(), &generous());
    let (mut bob, c) = (User::new(1), relay.connect().await);
    bob.register(&c).await;
    let per = scale.n(1024, 4);
    // The largest payload the relay takes by default, as in the attack run.
    let payload = vec![0x5a; 256 * 1024];
    let started = Instant::now();
    let mut tasks = Vec::new();
    let bob_arc = Arc::new(send_to(&bob, &payload));
    for _ in 0..4 {
        let mut u = User::new(1);
        u.register(&c).await;
        let conn = u.login(&relay, 1).await;
        let send = Arc::clone(&bob_arc);
        tasks.push(tokio::spawn(async move {
            let mut stored = 0u64;
            for _ in 0..per / 4 {
                if conn.send((*send).clone()).await.is_ok() {
                    stored += 1;
                }
            }
            stored
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    let fill = started.elapsed();
    let db = d.path().join("relay.redb");
    let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let full = len(&db);
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub).await.into_iter().map(|(s, _)| s).collect();
    let n = seqs.len() as u64;
    for chunk in seqs.chunks(256) {
        sub.ack(chunk.to_vec()).await.unwrap();
    }
    relay.wait_for_metric("hush_relay_envelopes_acked_total", n).await;
    let drained = len(&db);
    let stopped = relay.terminate();
    assert!(stopped);
    let started = Instant::now();
    let out = std::process::Command::new(relay_binary())
        .args(["compact", "--data-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let compacted = if out.status.success() {
        format!("{} MiB in {:.2} s", len(&db) >> 20, started.elapsed().as_secs_f64())
    } else {
        "no compact command".into()
    };
    let payload_mib = stored as f64 * payload.len() as f64 / MIB;
    println!(
        "| payload stored | filled in | database file | after draining and acking | after `hush-relay compact` |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {payload_mib:.0} MiB ({stored} × 256 KiB) | {:.1} s | {} MiB ({:.2}×) | {} MiB | {compacted} |\n",
        fill.as_secs_f64(),
        full >> 20,
        full as f64 / MIB / payload_mib.max(1.0),
        drained >> 20
    );
}
