//! Blob transfer benchmark (docs/BENCHMARKS.md "Attachment transfers"): 100 MiB uploaded to the
//! real `hush-relay` binary over QUIC on loopback in puts (each answered after its durable
//! commit), then downloaded in ranges, as a client does (docs/PROTOCOL.md §14.16).
//!
//! The floor, measured in the same run on the same disk: (a) a bare quinn stream copy of the
//! same bytes with the relay's TLS and transport configuration (a server in this process that
//! reads the stream to its end, or writes it), plus (b) the relay's durable write of them: a raw
//! redb database taking the same 16,000-byte rows, committed every 1,024,000 bytes as the puts
//! are (for the download: reading those rows back). Upload / floor and download / floor are
//! the ratios (target 2×). Also the relay's RSS growth over the transfer (target < 32 MiB).
//!
//! `cargo bench -p hush-relay --bench transfer` moves 100 MiB; under `cargo test` 4 MiB.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hush_relay::config::Config;
use hush_testkit::protocol::User;
use hush_testkit::relay::{Relay, rss_bytes};
use redb::{Database, ReadableDatabase, TableDefinition};

const CHUNK: usize = 16_000;
const PUT: usize = 64 * CHUNK;
/// Download ranges asked for at once (as the SDK does, `client/attachments.rs`).
const IN_FLIGHT: usize = 4;
const ROWS: TableDefinition<([u8; 32], u32), &[u8]> = TableDefinition::new("blob_chunks");

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let size: usize = if bench { 100 * 1024 * 1024 } else { 4 * 1024 * 1024 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(size));
}

async fn run(size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(7919) % 251) as u8).collect();
    let relay = Relay::temp();
    let mut alice = User::new(1);
    let c = relay.connect().await;
    alice.register(&c).await;
    let a = alice.login(&relay, 1).await;
    let pid = relay.pid();

    // Relay upload, sampling its RSS meanwhile.
    let rss_before = rss_bytes(pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t = Instant::now();
    let created = a.blob_create(size as u64).await.unwrap();
    let put = created.max_put as usize;
    for (i, piece) in data.chunks(put).enumerate() {
        a.blob_put(&created.blob_id, (i * put) as u64, piece.to_vec()).await.unwrap();
    }
    let upload = t.elapsed();
    // Downloaded as the SDK does: `IN_FLIGHT` ranges asked for at once, taken in order.
    let t = Instant::now();
    let mut got = Vec::with_capacity(size);
    let mut asked = 0usize;
    let mut waiting = std::collections::VecDeque::new();
    while got.len() < size {
        while waiting.len() < IN_FLIGHT && asked < size {
            let (conn, blob) = (a.clone(), created.blob_id.clone());
            let at = asked as u64;
            waiting
                .push_back(tokio::spawn(async move { conn.blob_get(&blob, at, PUT as u32).await }));
            asked += PUT;
        }
        let d = waiting.pop_front().unwrap().await.unwrap().unwrap();
        assert_eq!(d.offset, got.len() as u64);
        got.extend_from_slice(&d.data);
    }
    let download = t.elapsed();
    sampler.abort();
    assert!(got == data, "the downloaded bytes differ");
    drop(got);
    let rss_growth = peak.load(Ordering::Relaxed).saturating_sub(rss_before);

    // Floor (a): a bare quinn stream copy each way.
    let (copy_up, copy_down) = quinn_copy(&data).await;
    // Floor (b): the relay's durable write of the same rows, and reading them back.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("floor.redb")).unwrap();
    let id = [7u8; 32];
    let t = Instant::now();
    for (p, piece) in data.chunks(PUT).enumerate() {
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(ROWS).unwrap();
            for (k, chunk) in piece.chunks(CHUNK).enumerate() {
                let mut v = Vec::with_capacity(1 + chunk.len());
                v.push(1);
                v.extend_from_slice(chunk);
                rows.insert((id, (p * 64 + k) as u32), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let write = t.elapsed();
    let t = Instant::now();
    let txn = db.begin_read().unwrap();
    let rows = txn.open_table(ROWS).unwrap();
    let mut read = 0usize;
    for item in rows.range((id, 0)..=(id, u32::MAX)).unwrap() {
        read += item.unwrap().1.value().len() - 1;
    }
    assert_eq!(read, size);
    let read_time = t.elapsed();

    let mib = size as f64 / (1024.0 * 1024.0);
    let rate = |d: Duration| mib / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let up_floor = copy_up + write;
    let down_floor = copy_down + read_time;
    println!("blob transfer of {mib:.0} MiB over loopback (release relay):");
    println!("| | relay | floor: quinn copy + redb | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| upload | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} + {:.0}) | {:.2} |",
        ms(upload),
        rate(upload),
        ms(up_floor),
        ms(copy_up),
        ms(write),
        upload.as_secs_f64() / up_floor.as_secs_f64()
    );
    println!(
        "| download | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} + {:.0}) | {:.2} |",
        ms(download),
        rate(download),
        ms(down_floor),
        ms(copy_down),
        ms(read_time),
        download.as_secs_f64() / down_floor.as_secs_f64()
    );
    println!("relay RSS: {:.1} MiB before, grew {:.1} MiB at peak", mb(rss_before), mb(rss_growth));
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// A quinn server in this process with the relay's TLS and transport configuration: one
/// connection, a stream the client writes to (read to its end) and one it reads from.
async fn quinn_copy(data: &[u8]) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
    let identity = hush_relay::tls::load_identity(&config).unwrap();
    let pin = identity.pin;
    let certs = hush_relay::tls::Certificates::new(&identity).unwrap();
    let server = hush_relay::tls::server_config(&certs, &config).unwrap();
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let len = data.len();
    let served = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        // Upload: read everything, then say so.
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut n = 0;
        while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
            n += chunk.bytes.len();
        }
        send.write_all(&(n as u64).to_be_bytes()).await.unwrap();
        send.finish().unwrap();
        // Download: write the same amount.
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let _ = recv.read_to_end(16).await;
        let block = vec![5u8; PUT];
        let mut left = len;
        while left > 0 {
            let k = left.min(PUT);
            send.write_all(&block[..k]).await.unwrap();
            left -= k;
        }
        send.finish().unwrap();
        conn.closed().await;
    });
    let client = hush_net::Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = client.connect_pinned(addr, pin).await.unwrap();
    let quic = conn.quic();
    let t = Instant::now();
    let (mut send, mut recv) = quic.open_bi().await.unwrap();
    for piece in data.chunks(PUT) {
        send.write_all(piece).await.unwrap();
    }
    send.finish().unwrap();
    let echoed = recv.read_to_end(16).await.unwrap();
    assert_eq!(u64::from_be_bytes(echoed.try_into().unwrap()), len as u64);
    let up = t.elapsed();
    let t = Instant::now();
    let (mut send, mut recv) = quic.open_bi().await.unwrap();
    send.write_all(b"go").await.unwrap();
    send.finish().unwrap();
    let mut n = 0;
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
        n += chunk.bytes.len();
    }
    assert_eq!(n, len);
    let down = t.elapsed();
    conn.close();
    let _ = served.await;
    (up, down)
}
