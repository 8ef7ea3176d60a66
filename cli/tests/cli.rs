//! The `hush` binary against the real relay: two accounts, one message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hush_testkit::Relay;

fn hush(relay: &Relay, dir: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = hush_status(relay, dir, args);
    assert!(code == Some(0), "hush {args:?} failed: {stdout}{stderr}");
    stdout
}

/// Runs `hush`; returns its exit status, stdout and stderr.
fn hush_status(relay: &Relay, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["--dir", dir.to_str().unwrap(), "--relay", &relay.quic.to_string()])
        .args(["--pin", &hex::encode(relay.pin)])
        .args(args)
        .env_remove("HUSH_DIR")
        .env_remove("HUSH_RELAY")
        .env_remove("HUSH_PIN")
        .output()
        .expect("run hush");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr)
}

#[test]
fn two_accounts_exchange_a_message() {
    let relay = Relay::temp();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let alice = hush(&relay, a.path(), &["create"]).trim().to_owned();
    let bob = hush(&relay, b.path(), &["create"]).trim().to_owned();
    assert_eq!(alice.len(), 64, "{alice}");
    assert_eq!(bob.len(), 64, "{bob}");
    assert_ne!(alice, bob);

    let id = hush(&relay, a.path(), &["id"]);
    assert!(id.contains(&format!("account {alice}")) && id.contains("device 1"), "{id}");

    let added = hush(&relay, a.path(), &["add", &bob, "Bob"]);
    assert!(added.contains("added Bob") && added.contains("safety number: "), "{added}");

    let sent = hush(&relay, a.path(), &["send", &bob, "hello", "from", "the", "cli"]);
    assert!(sent.contains('✓'), "{sent}");

    let added = hush(&relay, b.path(), &["add", &alice, "Alice"]);
    assert!(added.contains("added Alice"), "{added}");

    let until = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let h = hush(&relay, b.path(), &["history", &alice]);
        if h.contains("hello from the cli") || Instant::now() > until {
            break h;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(history.contains("them: hello from the cli"), "{history}");

    let mine = hush(&relay, a.path(), &["history", &bob]);
    assert!(mine.contains("me: hello from the cli"), "{mine}");
    let found = hush(&relay, b.path(), &["search", "hello"]);
    assert!(found.contains("hello from the cli"), "{found}");

    // A file, from a path to a path.
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    let src = a.path().join("photo.jpg");
    std::fs::write(&src, &bytes).unwrap();
    let sent = hush(&relay, a.path(), &["send-file", &bob, src.to_str().unwrap(), "a", "photo"]);
    let id = sent.lines().next().unwrap().trim().to_owned();
    assert!(id.len() == 32 && sent.contains('✓'), "{sent}");
    let until = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let h = hush(&relay, b.path(), &["history", &alice]);
        if h.contains("photo.jpg") || Instant::now() > until {
            break h;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        history.contains(&format!("a photo [file photo.jpg (3000000 bytes), id {id}]")),
        "{history}"
    );
    let dest = b.path().join("saved.jpg");
    let saved = hush(&relay, b.path(), &["save", &id, dest.to_str().unwrap()]);
    assert!(saved.contains("saved"), "{saved}");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

/// A send the relay refuses for good exits 1 with the code; one it refuses for now (a full
/// relay) exits 75 with the code and stays queued, and goes out on a later run once there is
/// room. (`send` used to print "✗ failed" and exit 0.)
#[test]
fn a_send_that_does_not_go_out_exits_non_zero_with_its_code() {
    let relay = Relay::temp_with(&[("max-payload-bytes", "2048"), ("max-stored-bytes", "6000")]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = hush(&relay, a.path(), &["create"]).trim().to_owned();
    let bob = hush(&relay, b.path(), &["create"]).trim().to_owned();
    hush(&relay, a.path(), &["add", &bob, "Bob"]);

    let long = "x".repeat(3000);
    let (code, out, err) = hush_status(&relay, a.path(), &["send", &bob, &long]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("✗ failed") && err.contains("[too_large]"), "{out}{err}");

    // Fill the relay's payload budget (Bob is offline), then one more.
    let mid = "y".repeat(500);
    let mut pending = None;
    for _ in 0..12 {
        let (code, out, err) = hush_status(&relay, a.path(), &["send", "--wait", "3", &bob, &mid]);
        if code == Some(75) {
            pending = Some(err);
            break;
        }
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let err = pending.expect("the relay never filled up");
    assert!(err.contains("[storage_full]") && err.contains("stays queued"), "{err}");

    // Bob drains; Alice's next run sends what was queued.
    hush(&relay, b.path(), &["history", &alice]);
    let sent = hush(&relay, a.path(), &["send", &bob, "after"]);
    assert!(sent.contains('✓'), "{sent}");
}

/// Three accounts in a group from the command line: create, send, read, rename, remove.
#[test]
fn a_group_of_three_from_the_command_line() {
    let relay = Relay::temp();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<String> =
        dirs.iter().map(|d| hush(&relay, d.path(), &["create"]).trim().to_owned()).collect();
    let group = hush(&relay, dirs[0].path(), &["group", "create", "Book club", &ids[1], &ids[2]]);
    let group = group.trim().to_owned();
    assert_eq!(group.len(), 64, "{group}");
    let sent = hush(&relay, dirs[0].path(), &["send", &group, "first", "chapter"]);
    assert!(sent.contains('✓'), "{sent}");
    let wait_for = |dir: &Path, args: &[&str], want: &str| {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let out = hush(&relay, dir, args);
            if out.contains(want) || Instant::now() > until {
                assert!(out.contains(want), "{args:?}: {out}");
                return out;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for d in &dirs[1..] {
        wait_for(d.path(), &["history", &group], "first chapter");
    }
    let shown = wait_for(dirs[2].path(), &["group", "show", &group], "Book club");
    assert!(shown.contains(&format!("{} admin", ids[0])), "{shown}");
    let reply = hush(&relay, dirs[1].path(), &["send", &group, "loved", "it"]);
    assert!(reply.contains('✓'), "{reply}");
    wait_for(dirs[2].path(), &["history", &group], "loved it");
    // Not an admin: refused with its code.
    let (code, _, err) = hush_status(&relay, dirs[1].path(), &["group", "rename", &group, "X"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("[not_admin]"), "{err}");
    hush(&relay, dirs[0].path(), &["group", "rename", &group, "Book", "club", "2"]);
    hush(&relay, dirs[0].path(), &["group", "remove", &group, &ids[2]]);
    let listed = wait_for(dirs[2].path(), &["group", "list"], "(not a member)");
    assert!(listed.contains("Book club 2"), "{listed}");
    let history = hush(&relay, dirs[2].path(), &["history", &group]);
    assert!(history.contains("* ") && history.contains("removed"), "{history}");
}
