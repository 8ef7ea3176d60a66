//! Encrypted blobs against the real relay binary (docs/PROTOCOL.md §14.16): an upload in puts
//! read back in ranges by another account, resumed after a SIGKILL from what the relay reports
//! committed; each bad request gets its typed code; limits; abandoned and expired blobs swept.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use hush_protocol::ErrorCode;
use rand::RngExt;

use crate::common::*;

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    v
}

/// Uploads `bytes` from `from` in puts of `max_put`; returns the id.
async fn upload(c: &hush_net::Connection, bytes: &[u8]) -> Vec<u8> {
    let created = c.blob_create(bytes.len() as u64).await.unwrap();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + created.max_put as usize).min(bytes.len());
        let p = c.blob_put(&created.blob_id, at as u64, bytes[at..end].to_vec()).await.unwrap();
        assert_eq!(p.committed, end as u64);
        at = end;
    }
    created.blob_id
}

/// Waits until the gauge `name` satisfies `ok` (the relay refreshes it every second or so).
async fn wait_gauge(relay: &Relay, name: &str, ok: impl Fn(f64) -> bool) {
    for _ in 0..300 {
        if ok(relay.metric(name).await) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{name} stayed at {}", relay.metric(name).await);
}

async fn download(c: &hush_net::Connection, id: &[u8], piece: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let d = c.blob_get(id, out.len() as u64, piece).await.unwrap();
        assert_eq!(d.offset, out.len() as u64);
        out.extend_from_slice(&d.data);
        if out.len() as u64 == d.size {
            return out;
        }
        assert!(!d.data.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_reads_back_in_ranges_from_another_account() {
    let relay = Relay::temp();
    let (_alice, bob, a) = pair(&relay, 1).await;
    let bytes = random(3 * 1024 * 1024 + 777);
    let id = upload(&a, &bytes).await;
    let status = a.blob_status(&id).await.unwrap();
    assert!(status.complete && status.committed == bytes.len() as u64);

    let b = bob.login(&relay, 1).await;
    assert_eq!(download(&b, &id, 1 << 20).await, bytes);
    // Odd ranges that cross chunk boundaries.
    assert_eq!(download(&b, &id, 12_345).await, bytes);
    let mid = b.blob_get(&id, 1_000_000, 50_000).await.unwrap();
    assert_eq!(mid.data, bytes[1_000_000..1_050_000]);
    assert!(relay.metric("hush_relay_blob_uploads_total").await >= 1.0);
    let n = bytes.len() as f64;
    wait_gauge(&relay, "hush_relay_stored_payload_bytes", |v| v >= n).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_resumes_after_the_relay_is_killed() {
    let mut relay = Relay::temp();
    let (alice, _bob, a) = pair(&relay, 1).await;
    let bytes = random(5 * 1_024_000 + 10);
    let created = a.blob_create(bytes.len() as u64).await.unwrap();
    let put = created.max_put as usize;
    for i in 0..3 {
        a.blob_put(&created.blob_id, (i * put) as u64, bytes[i * put..(i + 1) * put].to_vec())
            .await
            .unwrap();
    }
    relay.restart();
    let a = alice.login(&relay, 1).await;
    let status = a.blob_status(&created.blob_id).await.unwrap();
    assert_eq!(status.committed, 3 * put as u64, "every acked put survived the SIGKILL");
    assert!(!status.complete);
    // Downloads wait for the whole blob.
    assert_code(a.blob_get(&created.blob_id, 0, 100).await, ErrorCode::UnknownBlob);
    let mut at = status.committed as usize;
    while at < bytes.len() {
        let end = (at + put).min(bytes.len());
        a.blob_put(&created.blob_id, at as u64, bytes[at..end].to_vec()).await.unwrap();
        at = end;
    }
    // A last put repeated (its answer lost) is answered with the state, not an error.
    let last = bytes.len() - 10;
    let again = a.blob_put(&created.blob_id, last as u64, bytes[last..].to_vec()).await.unwrap();
    assert!(again.complete);
    relay.restart();
    let a = alice.login(&relay, 1).await;
    assert_eq!(download(&a, &created.blob_id, 700_000).await, bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_blob_requests_get_their_codes_and_write_nothing() {
    let relay = Relay::temp_with(&[
        ("max-blob-bytes", "5000000"),
        ("blob-uploads-per-device", "2"),
        ("blob-upload-bytes-per-day", "8000000"),
    ]);
    let (_alice, bob, a) = pair(&relay, 1).await;
    assert_code(a.blob_create(5_000_001).await, ErrorCode::BlobTooLarge);
    let created = a.blob_create(100_000).await.unwrap();
    let id = created.blob_id.clone();
    // Not at the committed length; misaligned (a put that is not the last must be a multiple
    // of put_align); past the size.
    assert_code(a.blob_put(&id, 16_000, vec![1; 16_000]).await, ErrorCode::BadOffset);
    assert_code(a.blob_put(&id, 0, vec![1; 1000]).await, ErrorCode::BadOffset);
    assert_code(a.blob_put(&id, 0, vec![1; 100_001]).await, ErrorCode::BadOffset);
    assert_eq!(a.blob_status(&id).await.unwrap().committed, 0);
    // Another device can't write it; nobody can read it unfinished; unknown ids are unknown.
    let b = bob.login(&relay, 1).await;
    assert_code(b.blob_put(&id, 0, vec![1; 16_000]).await, ErrorCode::UnknownBlob);
    assert_code(b.blob_get(&id, 0, 10).await, ErrorCode::UnknownBlob);
    assert_code(b.blob_get(&[7; 32], 0, 10).await, ErrorCode::UnknownBlob);
    assert_code(b.blob_status(&[7; 5]).await, ErrorCode::UnknownBlob);
    // Two unfinished uploads per device here.
    a.blob_create(10).await.unwrap();
    let e = assert_code(a.blob_create(10).await, ErrorCode::QuotaExceeded);
    assert!(e.to_string().contains("unfinished"), "{e}");
    // The day's bytes: 8,000,000 declared at most (100,010 used so far).
    let b2 = b.blob_create(4_000_000).await.unwrap();
    assert_code(b.blob_create(4_000_001).await, ErrorCode::QuotaExceeded);
    let _ = b2;
    // Reading past the end.
    let small = upload(&b, &[5; 10]).await;
    assert_code(b.blob_get(&small, 11, 10).await, ErrorCode::BadOffset);
    assert!(b.blob_get(&small, 10, 10).await.unwrap().data.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_and_expired_blobs_are_swept_and_their_bytes_given_back() {
    let relay = Relay::temp_with(&[
        ("blob-upload-ttl-secs", "1"),
        ("retention-secs", "2"),
        ("sweep-interval-ms", "100"),
    ]);
    let (_alice, _bob, a) = pair(&relay, 1).await;
    let done = upload(&a, &random(100_000)).await;
    let abandoned = a.blob_create(64_000).await.unwrap();
    a.blob_put(&abandoned.blob_id, 0, vec![1; 32_000]).await.unwrap();
    wait_gauge(&relay, "hush_relay_stored_payload_bytes", |v| v >= 132_000.0).await;
    relay.wait_for_metric("hush_relay_blobs_expired_total", 2).await;
    assert_code(a.blob_status(&abandoned.blob_id).await, ErrorCode::UnknownBlob);
    assert_code(a.blob_get(&done, 0, 10).await, ErrorCode::UnknownBlob);
    wait_gauge(&relay, "hush_relay_stored_payload_bytes", |v| v == 0.0).await;
    // The abandoned upload no longer counts against the device's unfinished uploads.
    for _ in 0..4 {
        a.blob_create(10).await.unwrap();
    }
}
