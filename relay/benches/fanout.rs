//! Group fanout benchmark (docs/BENCHMARKS.md "Groups"): one message to a group of 1,000
//! members with 3 devices each, as a client sends it (docs/PROTOCOL.md §17.4): one `Send`, one
//! shared payload, 3,000 envelopes, one atomic relay commit.
//!
//! Measured against the real `hush-relay` binary over QUIC on loopback, sequentially (each send
//! waits for its `Sent`, which comes after the durable commit): time per send, and bytes the
//! relay process wrote to disk per send (`/proc/<pid>/io` `write_bytes`). The floor, measured in
//! the same run on the same disk: a raw redb transaction inserting the same 3,000 mailbox rows
//! (same key type, a value as long as the relay's entry) and the payload once, committed
//! durably; its time and the bytes this process wrote for it. The logical size (payload +
//! 3,000 × row) is reported too.
//!
//! `cargo bench -p hush-relay --bench fanout` runs the full size; under `cargo test` a smoke
//! size (20 members), so the tool can't rot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use hush_protocol::wire;
use hush_testkit::protocol::User;
use hush_testkit::relay::Relay;
use redb::{Database, TableDefinition};

/// A short group text: the §16.4 overhead (41 + 16 + 64) around ~100 bytes, wrapped (§9.3).
const PAYLOAD: usize = 2 + 41 + 100 + 16 + 64;
/// The relay's mailbox entry for a shared payload: payload id, sender account and device,
/// server time, expiry, length, and a version byte.
const ENTRY: usize = 1 + 8 + 32 + 4 + 8 + 8 + 4;

const MAILBOX: TableDefinition<([u8; 32], u32, u64), &[u8]> = TableDefinition::new("mailbox");
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (members, sends) = if full { (1000, 30) } else { (20, 3) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(members, sends));
}

/// Bytes a process has written to its storage layer so far (Linux).
fn write_bytes(pid: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn bench_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fanout");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn run(members: usize, sends: usize) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let relay = Relay::start(
        &dir.path().join("relay"),
        &[
            ("registrations-per-second", "1000000"),
            ("registration-burst", "1000000"),
            ("connection-requests-per-second", "1000000"),
            ("connection-request-burst", "1000000"),
        ],
    );
    let conn = relay.connect().await;
    let mut users: Vec<User> = (0..members).map(|_| User::new(3)).collect();
    for u in &mut users {
        u.register(&conn).await;
    }
    let mut sender = User::new(1);
    sender.register(&conn).await;
    let sender_conn = sender.login(&relay, 1).await;
    let envelopes: Vec<wire::Envelope> = users.iter().flat_map(|u| u.envelopes(None)).collect();
    let send = wire::Send { payloads: vec![vec![7; PAYLOAD]], envelopes, ephemeral: false };
    let envelopes = send.envelopes.len();
    println!(
        "## Group fanout: {members} members × 3 devices = {envelopes} envelopes, one {PAYLOAD}-byte payload\n"
    );

    // Relay: sequential sends, each acked after its durable commit.
    sender_conn.send(send.clone()).await.unwrap();
    let pid = relay.pid().to_string();
    let (w0, t0) = (write_bytes(&pid), Instant::now());
    for _ in 0..sends {
        sender_conn.send(send.clone()).await.unwrap();
    }
    let relay_time = t0.elapsed() / u32::try_from(sends).unwrap();
    let relay_bytes = (write_bytes(&pid) - w0) / sends as u64;

    // Floor: raw redb, the same rows, in this process, on the same disk.
    let keys: Vec<([u8; 32], u32)> = send
        .envelopes
        .iter()
        .map(|e| (e.account.as_slice().try_into().unwrap(), e.device_id))
        .collect();
    let (floor_time, floor_bytes) = tokio::task::spawn_blocking(move || {
        let db = Database::create(dir.path().join("floor.redb")).unwrap();
        let entry = vec![3u8; ENTRY];
        let payload = vec![7u8; PAYLOAD];
        let write = |seq: u64| {
            let txn = db.begin_write().unwrap();
            {
                let mut payloads = txn.open_table(PAYLOADS).unwrap();
                payloads.insert(seq, payload.as_slice()).unwrap();
                let mut mailbox = txn.open_table(MAILBOX).unwrap();
                for (account, device) in &keys {
                    mailbox.insert((*account, *device, seq), entry.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        };
        write(1);
        let (w0, t0) = (write_bytes("self"), Instant::now());
        for seq in 2..2 + sends as u64 {
            write(seq);
        }
        let time = t0.elapsed() / u32::try_from(sends).unwrap();
        (time, (write_bytes("self") - w0) / sends as u64)
    })
    .await
    .unwrap();
    let logical = (PAYLOAD + envelopes * (32 + 4 + 8 + ENTRY)) as u64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| what | per send | relay / raw redb |");
    println!("|---|---|---|");
    println!(
        "| time, send → Sent (durable) | relay {:.1} ms, raw redb {:.1} ms | {:.2}× |",
        ms(relay_time),
        ms(floor_time),
        ms(relay_time) / ms(floor_time)
    );
    println!(
        "| bytes written | relay {} KiB, raw redb {} KiB (logical payload + rows {} KiB) | {:.2}× ({:.2}× logical) |",
        relay_bytes / 1024,
        floor_bytes / 1024,
        logical / 1024,
        relay_bytes as f64 / floor_bytes.max(1) as f64,
        relay_bytes as f64 / logical as f64,
    );
}
