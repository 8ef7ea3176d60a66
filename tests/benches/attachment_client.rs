//! The SDK's side of a big attachment (docs/BENCHMARKS.md "Attachments"): a file goes from a
//! path to a path between two real clients through the real relay binary, and we measure the
//! time each way and how far this process's RSS (both clients, their stores and runtimes; the
//! relay is its own process) rises above where it was before the transfer (target: under
//! 32 MiB for a 100 MiB file).
//!
//! RSS is sampled from /proc/self/status every 5 ms on a thread of its own. The file is written
//! and hashed in 1 MiB pieces, so the test data never sits in memory whole.
//!
//! `cargo bench -p hush-e2e --bench attachment_client` moves 100 MiB; under `cargo test` a
//! 4 MiB smoke run. `HUSH_ATTACHMENT_MIB` overrides the size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hush_core::AttachmentMeta;
use hush_testkit::{Device, Relay};
use sha2::Digest;

const MIB: u64 = 1024 * 1024;

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples RSS until stopped; reports the highest.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss()));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Self { stop, peak, thread: Some(thread) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed).max(rss())
    }
}

fn write_file(path: &Path, mib: u64) -> [u8; 32] {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = sha2::Sha256::new();
    let mut piece = vec![0u8; MIB as usize];
    for i in 0..mib {
        for (j, b) in piece.iter_mut().enumerate() {
            *b = (j as u64 ^ i.wrapping_mul(2_654_435_761)) as u8;
        }
        f.write_all(&piece).unwrap();
        hash.update(&piece);
    }
    f.flush().unwrap();
    hash.finalize().into()
}

fn hash_file(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap();
    let mut hash = sha2::Sha256::new();
    let mut piece = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut piece).unwrap();
        if n == 0 {
            return hash.finalize().into();
        }
        hash.update(&piece[..n]);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mib = std::env::var("HUSH_ATTACHMENT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100 } else { 4 });
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let relay = Relay::temp();
        let alice = Device::create("alice", &relay).await;
        let bob = Device::create("bob", &relay).await;
        let (a, b) = (alice.id().await, bob.id().await);
        alice.c().add_contact(&b, "Bob").await.unwrap();
        bob.c().add_contact(&a, "Alice").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.bin");
        let want = write_file(&src, mib);
        // A small file first, so both clients' one-time costs (buffers, store pages, the
        // runtime's threads) are in the baseline and the rise is the transfer's own.
        let warm = dir.path().join("warm.bin");
        write_file(&warm, 1);
        let meta = AttachmentMeta { file_name: "big.bin".into(), ..Default::default() };
        let id = alice.c().send_attachment_file(&b, &warm, meta.clone()).await.unwrap();
        bob.wait_history(&a, 1).await;
        bob.c().save_attachment(&id, &dir.path().join("warm.out")).await.unwrap();

        let before = rss();
        let peak = Peak::start();
        let started = Instant::now();
        let id = alice.c().send_attachment_file(&b, &src, meta).await.unwrap();
        let upload = started.elapsed();
        let up_peak = peak.stop();
        bob.wait_history(&a, 2).await;

        let dest = dir.path().join("saved.bin");
        let before_down = rss();
        let peak = Peak::start();
        let started = Instant::now();
        bob.c().save_attachment(&id, &dest).await.unwrap();
        let download = started.elapsed();
        let down_peak = peak.stop();
        assert_eq!(hash_file(&dest), want, "the bytes match");

        let secs = |d: std::time::Duration| d.as_secs_f64();
        let rate = |d: std::time::Duration| mib as f64 / secs(d);
        let rise = |peak: u64, base: u64| peak.saturating_sub(base) as f64 / MIB as f64;
        println!(
            "client attachment, {mib} MiB through the real relay: upload {:.2} s ({:.0} MiB/s), \
             download {:.2} s ({:.0} MiB/s)",
            secs(upload),
            rate(upload),
            secs(download),
            rate(download)
        );
        println!(
            "client RSS rise (both clients, one process): upload +{:.1} MiB, download +{:.1} MiB \
             (target < 32 MiB)",
            rise(up_peak, before),
            rise(down_peak, before_down)
        );
        if full {
            assert!(rise(up_peak, before) < 32.0 && rise(down_peak, before_down) < 32.0);
        }
    });
}
