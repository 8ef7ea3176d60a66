//! Storage faults and budgets: a disk that fills up (the relay refuses writes with a typed,
//! retryable code, keeps serving reads, says not-ready, and recovers by itself when space
//! comes back), the free-space floor, the relay-wide payload budget, and the per-sender share
//! of a mailbox.
//!
//! The full-disk tests mount a small tmpfs (the suite runs as root in CI); where mounting is
//! not allowed they say so and skip.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hush_protocol::ErrorCode;

use crate::common::*;

/// A tmpfs mounted on a temporary directory for the test's life.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("skipped: cannot mount a tmpfs here (the full-disk tests need root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system until `leave` bytes are free (or none); returns the filler file.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x42u8; 64 * 1024];
        loop {
            let free = hush_relay::health::free_space(self.path()).unwrap();
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n.max(1)]).is_err() || f.sync_all().is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn generous() -> Vec<(&'static str, &'static str)> {
    vec![
        ("account-sends-per-second", "100000"),
        ("account-send-burst", "100000"),
        ("connection-requests-per-second", "100000"),
        ("connection-request-burst", "100000"),
    ]
}

async fn wait_ready(relay: &Relay, ready: bool) -> String {
    for _ in 0..300 {
        let (status, body) = relay.http_get("/readyz").await;
        if (status == 200) == ready {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never became {}", if ready { "ready" } else { "not ready" });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount(24) else { return };
    let mut flags = generous();
    flags.push(("min-free-disk-bytes", "0"));
    let relay = Relay::start(&fs.path().join("data"), &flags);
    let (_alice, bob, a) = pair(&relay, 1).await;
    for i in 0..3u8 {
        a.send(send_to(&bob, &[i; 100])).await.unwrap();
    }

    // The disk fills up (not through the relay): sends are refused, typed and retryable,
    // once redb has used up the free pages in its file.
    let filler = fs.fill(0);
    let mut stored = 3;
    let refusal = loop {
        match a.send(send_to(&bob, &[9; 4096])).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 5000, "the relay never noticed the full disk");
    };
    assert_eq!(refusal.code(), Some(ErrorCode::StorageUnavailable), "{refusal}");
    assert!(ErrorCode::StorageUnavailable.is_retryable());
    let body = wait_ready(&relay, false).await;
    assert!(body.contains("storage failing"), "{body}");
    assert_eq!(relay.metric("hush_relay_storage_writable").await, 0.0);
    assert_code(a.send(send_to(&bob, b"again")).await, ErrorCode::StorageUnavailable);
    assert!(relay.http_get("/healthz").await.0 == 200, "alive, only not ready");

    // Reads go on: Bob authenticates and drains every envelope the relay acked.
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    assert_eq!(drain(&mut sub).await.len(), stored);

    // Space comes back: the relay recovers by itself.
    std::fs::remove_file(filler).unwrap();
    wait_ready(&relay, true).await;
    a.send(send_to(&bob, b"after")).await.unwrap();
    assert_eq!(next_delivery(&mut sub).await.payload, b"after");
    assert_eq!(relay.metric("hush_relay_storage_writable").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn below_the_free_space_floor_new_envelopes_are_refused_and_acks_go_on() {
    let Some(fs) = Tmpfs::mount(48) else { return };
    let mut flags = generous();
    flags.push(("min-free-disk-bytes", "16777216"));
    let relay = Relay::start(&fs.path().join("data"), &flags);
    let (_alice, bob, a) = pair(&relay, 1).await;
    a.send(send_to(&bob, b"before")).await.unwrap();

    let filler = fs.fill(8 << 20);
    let body = wait_ready(&relay, false).await;
    assert!(body.contains("disk nearly full"), "{body}");
    let e = assert_code(a.send(send_to(&bob, b"x")).await, ErrorCode::StorageFull);
    assert!(e.to_string().contains("floor"), "{e}");
    // Acks still go through (they free space).
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 1);
    sub.ack(vec![got[0].0]).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 1).await;

    std::fs::remove_file(filler).unwrap();
    wait_ready(&relay, true).await;
    a.send(send_to(&bob, b"after")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_payload_budget_refuses_storage_full_until_devices_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = generous();
    flags.push(("max-stored-bytes", "3000"));
    let relay = Relay::start(dir.path(), &flags);
    let (_alice, bob, a) = pair(&relay, 1).await;
    a.send(send_to(&bob, &[1; 1000])).await.unwrap();
    a.send(send_to(&bob, &[2; 1000])).await.unwrap();
    let e = assert_code(a.send(send_to(&bob, &[3; 1001])).await, ErrorCode::StorageFull);
    assert!(e.to_string().contains("budget of 3000 bytes"), "{e}");
    a.send(send_to(&bob, &[3; 1000])).await.unwrap();
    assert_code(a.send(send_to(&bob, &[4; 1])).await, ErrorCode::StorageFull);
    // Draining gives the budget back.
    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub).await.into_iter().map(|(s, _)| s).collect();
    sub.ack(seqs).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 3).await;
    a.send(send_to(&bob, &[5; 1000])).await.unwrap();
}

/// One sender filling a device's mailbox only fills its own share of it: other senders, and
/// the device's own account, still get through.
#[tokio::test(flavor = "multi_thread")]
async fn one_sender_cannot_shut_a_mailbox_to_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = generous();
    flags.extend([("mailbox-max-envelopes", "8"), ("mailbox-sender-share-percent", "25")]);
    let relay = Relay::start(dir.path(), &flags);
    let mut mallory = User::new(1);
    let mut carol = User::new(1);
    let mut bob = User::new(2);
    let c = relay.connect().await;
    for u in [&mut mallory, &mut carol, &mut bob] {
        u.register(&c).await;
    }
    let m = mallory.login(&relay, 1).await;
    m.send(send_to(&bob, b"1")).await.unwrap();
    m.send(send_to(&bob, b"2")).await.unwrap();
    let e = assert_code(m.send(send_to(&bob, b"3")).await, ErrorCode::MailboxFull);
    assert!(e.to_string().contains("share"), "{e}");
    // A second account of Mallory's has its own share, but no more than that.
    let carol_conn = carol.login(&relay, 1).await;
    carol_conn.send(send_to(&bob, b"hi bob")).await.unwrap();
    // Bob's own devices sync to each other without a share.
    let b1 = bob.login(&relay, 1).await;
    for i in 0..5u8 {
        let own = hush_protocol::wire::Send {
            payloads: vec![vec![i]],
            envelopes: bob.envelopes(Some(1)),
            ephemeral: false,
        };
        b1.send(own).await.unwrap();
    }
    // Draining gives Mallory's share back.
    let b2 = bob.login(&relay, 2).await;
    let mut sub = b2.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs.len(), 8);
    sub.ack(seqs).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 8).await;
    let mut sub1 = b1.subscribe().await.unwrap();
    let seqs: Vec<u64> = drain(&mut sub1).await.into_iter().map(|(s, _)| s).collect();
    sub1.ack(seqs).await.unwrap();
    relay.wait_for_metric("hush_relay_envelopes_acked_total", 11).await;
    m.send(send_to(&bob, b"3")).await.unwrap();
}

/// A disk that fills up during a blob upload: the put is refused with a typed, retryable code,
/// what was acked stays, a complete blob keeps downloading, and the upload resumes once space
/// comes back.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_during_an_upload_refuses_puts_serves_downloads_and_resumes() {
    let Some(fs) = Tmpfs::mount(24) else { return };
    let mut flags = generous();
    flags.push(("min-free-disk-bytes", "0"));
    let relay = Relay::start(&fs.path().join("data"), &flags);
    let (_alice, bob, a) = pair(&relay, 1).await;
    let small: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let done = a.blob_create(small.len() as u64).await.unwrap();
    a.blob_put(&done.blob_id, 0, small.clone()).await.unwrap();

    let big = a.blob_create(40_000_000).await.unwrap();
    let put = big.max_put as usize;
    a.blob_put(&big.blob_id, 0, vec![1; put]).await.unwrap();
    let filler = fs.fill(0);
    let mut committed = put as u64;
    let refusal = loop {
        match a.blob_put(&big.blob_id, committed, vec![2; put]).await {
            Ok(p) => committed = p.committed,
            Err(e) => break e,
        }
        assert!(committed < 40_000_000, "the relay never noticed the full disk");
    };
    let code = refusal.code().unwrap();
    assert!(matches!(code, ErrorCode::StorageUnavailable | ErrorCode::StorageFull), "{refusal}");
    assert!(code.is_retryable());
    // Reads go on, from another device too.
    let b = bob.login(&relay, 1).await;
    assert_eq!(b.blob_get(&done.blob_id, 0, 1 << 20).await.unwrap().data, small);

    std::fs::remove_file(filler).unwrap();
    wait_ready(&relay, true).await;
    let status = a.blob_status(&big.blob_id).await.unwrap();
    assert_eq!(status.committed, committed, "every acked put is there, nothing more");
    let p = a.blob_put(&big.blob_id, committed, vec![3; put]).await.unwrap();
    assert_eq!(p.committed, committed + put as u64);
}
