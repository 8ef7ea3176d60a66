//! Attachments between real clients (docs/PROTOCOL.md §14.16, §18): a 5 MiB file from a path
//! between two accounts and into a group, with progress, on the in-memory relay and end to end
//! on the real relay binary; a tampered blob gets its typed error and leaves no file behind;
//! bad calls get theirs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use hush_core::{AttachmentMeta, Event, MessageView};
use hush_testkit::{Device, Joinable, MemoryRelay, Relay, on_both_networks};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn meta(name: &str) -> AttachmentMeta {
    AttachmentMeta {
        file_name: name.into(),
        content_type: "application/octet-stream".into(),
        caption: "the file".into(),
        ..Default::default()
    }
}

async fn pair(net: &impl Joinable) -> (Device, Device, String, String) {
    let alice = Device::create("alice", net).await;
    let bob = Device::create("bob", net).await;
    let (a, b) = (alice.id().await, bob.id().await);
    alice.c().add_contact(&b, "Bob").await.unwrap();
    bob.c().add_contact(&a, "Alice").await.unwrap();
    (alice, bob, a, b)
}

on_both_networks!(a_file_goes_from_a_path_to_a_path_with_progress);
async fn a_file_goes_from_a_path_to_a_path_with_progress(net: impl Joinable) {
    let (mut alice, mut bob, a, b) = pair(&net).await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(5 * 1024 * 1024 + 123, 7);
    let src = dir.path().join("report.bin");
    std::fs::write(&src, &bytes).unwrap();

    let id = alice.c().send_attachment_file(&b, &src, meta("report.bin")).await.unwrap();
    // Progress came under the message's id, up to the whole blob.
    let total = alice
        .expect("upload done", |e| match e {
            Event::TransferProgress { message_id, upload: true, done, total }
                if *message_id == id && done == total =>
            {
                Some(*total)
            }
            _ => None,
        })
        .await;
    assert!(total > bytes.len() as u64);

    let page: Vec<MessageView> = bob.wait_history(&a, 1).await;
    let m = &page[0];
    assert_eq!((m.id.as_str(), m.body.as_str()), (id.as_str(), "the file"));
    let view = m.attachment.clone().expect("an attachment");
    assert_eq!((view.file_name.as_str(), view.size), ("report.bin", bytes.len() as u64));

    let dest = dir.path().join("saved.bin");
    bob.c().save_attachment(&id, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!dir.path().join("saved.bin.part").exists());
    bob.expect("download done", |e| match e {
        Event::TransferProgress { upload: false, done, total, .. } if done == total => Some(()),
        _ => None,
    })
    .await;
    // The sender's own copy downloads too (its pointer is in its history).
    assert_eq!(alice.c().download_attachment(&id).await.unwrap(), bytes);
    // Into the app's own sink, piece by piece.
    struct Pieces(Vec<usize>, Vec<u8>);
    #[async_trait::async_trait]
    impl hush_core::AttachmentSink for Pieces {
        async fn write(&mut self, plaintext: &[u8]) -> Result<(), hush_core::ClientError> {
            self.0.push(plaintext.len());
            self.1.extend_from_slice(plaintext);
            Ok(())
        }
    }
    let mut sink = Pieces(Vec::new(), Vec::new());
    bob.c().download_attachment_to(&id, &mut sink).await.unwrap();
    assert_eq!(sink.1, bytes);
    assert!(sink.0.len() > 1, "handed over as it checked, not at the end");
    for mut d in [alice, bob] {
        d.stop().await;
    }
}

on_both_networks!(a_file_in_a_group_reaches_every_member);
async fn a_file_in_a_group_reaches_every_member(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let bob = Device::create("bob", &net).await;
    let carol = Device::create("carol", &net).await;
    let (b, c) = (bob.id().await, carol.id().await);
    let g = alice.c().create_group("G", "", &[b, c]).await.unwrap();
    let bytes = pattern(300_000, 3);
    let id = alice.c().send_attachment(&g, bytes.clone(), meta("photo.jpg")).await.unwrap();
    for d in [&bob, &carol] {
        let until = tokio::time::Instant::now() + hush_testkit::WAIT;
        loop {
            let page = d.c().messages(&g, None, 100).await.unwrap();
            if page.iter().any(|m| m.id == id && m.attachment.is_some()) {
                break;
            }
            assert!(tokio::time::Instant::now() < until, "{} never got the file", d.name);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(d.c().download_attachment(&id).await.unwrap(), bytes);
    }
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}

/// Forwarding a file to another chat sends the same pointer: no second upload, and the new
/// recipient gets the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_file_reuses_the_blob() {
    let net = MemoryRelay::new();
    let (alice, bob, a, b) = pair(&net).await;
    let carol = Device::create("carol", &net).await;
    let c = carol.id().await;
    carol.c().add_contact(&b, "Bob").await.unwrap();
    bob.c().add_contact(&c, "Carol").await.unwrap();
    let bytes = pattern(200_000, 5);
    let id = alice.c().send_attachment(&b, bytes.clone(), meta("a.bin")).await.unwrap();
    bob.wait_history(&a, 1).await;
    let fwd = bob.c().forward_attachment(&id, &c, "look at this").await.unwrap();
    assert_ne!(fwd, id);
    let page = carol.wait_history(&b, 1).await;
    assert_eq!(page[0].body, "look at this");
    assert_eq!(page[0].attachment.as_ref().unwrap().file_name, "a.bin");
    assert_eq!(carol.c().download_attachment(&fwd).await.unwrap(), bytes);
    assert_eq!(net.blob_ids().len(), 1, "one upload");
    let e = bob.c().forward_attachment(&"00".repeat(16), &c, "").await.unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
}

/// A relay (or its disk) that changes a stored blob: the download fails with
/// `attachment_tampered` and leaves no file at the destination, not even a partial one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_is_refused_and_leaves_no_file() {
    let net = MemoryRelay::new();
    let (alice, bob, a, b) = pair(&net).await;
    let bytes = pattern(1_000_000, 1);
    let id = alice.c().send_attachment(&b, bytes, meta("x.bin")).await.unwrap();
    bob.wait_history(&a, 1).await;
    let blob = net.blob_ids().pop().unwrap();
    net.tamper_blob(&blob, 700_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.bin");
    let e = bob.c().save_attachment(&id, &dest).await.unwrap_err();
    assert_eq!(e.code(), "attachment_tampered");
    assert!(!dest.exists() && !dir.path().join("x.bin.part").exists());
    assert_eq!(bob.c().download_attachment(&id).await.unwrap_err().code(), "attachment_tampered");
}

/// Bad calls: a message without an attachment, an unknown message, an oversize name; nothing
/// is sent for a refused upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attachment_calls_get_typed_errors() {
    let net = MemoryRelay::new();
    let (alice, bob, a, b) = pair(&net).await;
    let text = alice.c().send_text(&b, "plain").await.unwrap();
    bob.wait_history(&a, 1).await;
    let code = |r: Result<Vec<u8>, hush_core::ClientError>| r.unwrap_err().code().to_owned();
    assert_eq!(code(bob.c().download_attachment(&text).await), "invalid_argument");
    assert_eq!(code(bob.c().download_attachment(&"00".repeat(16)).await), "invalid_argument");
    assert_eq!(code(bob.c().download_attachment("zz").await), "invalid_argument");
    let long = AttachmentMeta { file_name: "n".repeat(256), ..meta("") };
    let e = alice.c().send_attachment(&b, vec![1; 10], long).await.unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
    assert_eq!(bob.c().messages(&a, None, 10).await.unwrap().len(), 1, "nothing more sent");
}

/// 100 MiB from a path to a path through the real relay binary, which is SIGKILLed (and
/// restarted on the same data and addresses) in the middle of the upload and again in the
/// middle of the download: both go on from what the relay committed / what was checked, and
/// the bytes match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_file_survives_relay_kills_mid_upload_and_mid_download() {
    use sha2::Digest;
    let mut relay = Relay::temp();
    let (mut alice, mut bob, a, b) = pair(&relay).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    let bytes = pattern(100 * 1024 * 1024, 9);
    std::fs::write(&src, &bytes).unwrap();
    let want = sha2::Sha256::digest(&bytes);
    drop(bytes);

    let client = alice.c().clone();
    let (to, path) = (b.clone(), src.clone());
    let upload =
        tokio::spawn(async move { client.send_attachment_file(&to, &path, meta("big.bin")).await });
    alice
        .expect("a third uploaded", |e| match e {
            Event::TransferProgress { upload: true, done, total, .. } if done * 3 > *total => {
                Some(())
            }
            _ => None,
        })
        .await;
    relay.restart();
    let id = upload.await.unwrap().unwrap();
    bob.wait_history(&a, 1).await;

    let client = bob.c().clone();
    let dest = dir.path().join("saved.bin");
    let (mid, path) = (id.clone(), dest.clone());
    let download = tokio::spawn(async move { client.save_attachment(&mid, &path).await });
    bob.expect("a third downloaded", |e| match e {
        Event::TransferProgress { upload: false, done, total, .. } if done * 3 > *total => Some(()),
        _ => None,
    })
    .await;
    relay.restart();
    download.await.unwrap().unwrap();
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(got.len(), 100 * 1024 * 1024);
    assert_eq!(sha2::Sha256::digest(&got), want);
}

/// The app is stopped (as if killed) in the middle of an upload and, after the message went,
/// in the middle of a download, through the real relay binary: the upload goes on by itself
/// when the app opens again, from what the relay committed, and saving the file again goes on
/// from the `.part` the stopped download kept; the bytes match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_a_download_go_on_after_the_app_restarts() {
    use sha2::Digest;
    let relay = Relay::temp();
    let (mut alice, mut bob, a, b) = pair(&relay).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("video.bin");
    let bytes = pattern(24 * 1024 * 1024 + 77, 3);
    std::fs::write(&src, &bytes).unwrap();
    let want = sha2::Sha256::digest(&bytes);
    drop(bytes);

    let client = alice.c().clone();
    let (to, path) = (b.clone(), src.clone());
    let upload =
        tokio::spawn(
            async move { client.send_attachment_file(&to, &path, meta("video.bin")).await },
        );
    let (id, stopped_at) = alice
        .expect("a tenth uploaded", |e| match e {
            Event::TransferProgress { message_id, upload: true, done, total }
                if done * 10 > *total && done < total =>
            {
                Some((message_id.clone(), *done))
            }
            _ => None,
        })
        .await;
    alice.stop().await;
    let stopped = upload.await.unwrap();
    assert!(stopped.is_err(), "a stopped app's upload call ends: {stopped:?}");
    // Nothing was sent, and the upload is remembered.
    assert!(bob.c().messages(&a, None, 10).await.unwrap().is_empty());

    alice.restart().await;
    // It goes on from what the relay holds, not from the start.
    let resumed_from = alice
        .expect("the upload goes on", |e| match e {
            Event::TransferProgress { message_id, upload: true, done, .. } if *message_id == id => {
                Some(*done)
            }
            _ => None,
        })
        .await;
    assert!(resumed_from >= stopped_at, "resumed at {resumed_from}, had {stopped_at}");
    let got = bob.wait_history(&a, 1).await;
    assert_eq!(got[0].id, id, "the message has the id the upload was given");
    assert_eq!(got[0].attachment.as_ref().unwrap().file_name, "video.bin");
    assert!(alice.c().pending_uploads().await.unwrap().is_empty());

    let client = bob.c().clone();
    let dest = dir.path().join("saved.bin");
    let (mid, path) = (id.clone(), dest.clone());
    let download = tokio::spawn(async move { client.save_attachment(&mid, &path).await });
    let stopped_at = bob
        .expect("a tenth downloaded", |e| match e {
            Event::TransferProgress { upload: false, done, total, .. }
                if done * 10 > *total && done < total =>
            {
                Some(*done)
            }
            _ => None,
        })
        .await;
    bob.stop().await;
    assert!(download.await.unwrap().is_err());
    assert!(!dest.exists(), "no file that looks complete");
    let mut part = dest.clone().into_os_string();
    part.push(".part");
    assert!(std::path::Path::new(&part).exists(), "the checked part is kept");

    bob.restart().await;
    bob.connected().await;
    let client = bob.c().clone();
    let (mid, path) = (id.clone(), dest.clone());
    let download = tokio::spawn(async move { client.save_attachment(&mid, &path).await });
    let resumed_from = bob
        .expect("the download goes on", |e| match e {
            Event::TransferProgress { upload: false, done, .. } => Some(*done),
            _ => None,
        })
        .await;
    // Whole segments of what was checked are taken back (up to one segment is fetched again).
    assert!(
        resumed_from > 0 && resumed_from + 2 * 65_552 >= stopped_at,
        "resumed at {resumed_from}, had {stopped_at}"
    );
    download.await.unwrap().unwrap();
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(sha2::Sha256::digest(&got), want);
    assert!(!std::path::Path::new(&part).exists());
}

/// An upload of bytes (or of the app's stream) can't go on after a restart: it is listed as
/// stopped, not resumable, until the user gives it up; nothing is sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_bytes_stopped_by_a_restart_waits_to_be_given_up() {
    let net = MemoryRelay::new();
    let (mut alice, bob, a, b) = pair(&net).await;
    let client = alice.c().clone();
    let to = b.clone();
    let id = client.new_message_id();
    let mut m = meta("notes.bin");
    m.message_id = Some(id.clone());
    let upload =
        tokio::spawn(
            async move { client.send_attachment(&to, pattern(20 * 1024 * 1024, 1), m).await },
        );
    alice
        .expect("some uploaded", |e| match e {
            Event::TransferProgress { upload: true, done, total, .. } if done < total => Some(()),
            _ => None,
        })
        .await;
    let listed = alice.c().pending_uploads().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].running && !listed[0].resumable);
    assert_eq!(
        (listed[0].message_id.as_str(), listed[0].file_name.as_str()),
        (id.as_str(), "notes.bin")
    );
    alice.stop().await;
    assert!(upload.await.unwrap().is_err());

    alice.restart().await;
    alice.connected().await;
    let listed = alice.c().pending_uploads().await.unwrap();
    assert_eq!(listed.len(), 1, "remembered across the restart");
    assert!(!listed[0].running && !listed[0].resumable);
    assert_eq!(listed[0].conversation, b);
    assert_eq!(listed[0].size, 20 * 1024 * 1024);
    alice.c().cancel_transfer(&id).await.unwrap();
    assert!(alice.c().pending_uploads().await.unwrap().is_empty());
    assert!(bob.c().messages(&a, None, 10).await.unwrap().is_empty());
}
