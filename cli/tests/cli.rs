//! The `hush` binary against the real relay: two accounts, one message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hush_e2e::Relay;

fn hush(relay: &Relay, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["--dir", dir.to_str().unwrap(), "--relay", &relay.addr.to_string()])
        .args(["--pin", &hex::encode(relay.pin)])
        .args(args)
        .env_remove("HUSH_DIR")
        .env_remove("HUSH_RELAY")
        .env_remove("HUSH_PIN")
        .output()
        .expect("run hush");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hush {args:?} failed: {stdout}{stderr}");
    stdout
}

#[test]
fn two_accounts_exchange_a_message() {
    let relay = Relay::start();
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
}
