//! `hush-test-relay`, as the Python, Kotlin and browser tests use it: one ready line with
//! working addresses, a relay that answers, and nothing left behind once its input closes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hush_testkit::relay::Ready;

#[tokio::test]
async fn prints_a_ready_line_serves_and_cleans_up_when_its_input_closes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hush-test-relay"))
        .args(["--max-payload-bytes", "2048"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ready = Ready::parse(&line).unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let data = line.split_whitespace().find_map(|w| w.strip_prefix("data=")).unwrap().to_owned();
    assert!(std::path::Path::new(&data).join("tls").exists(), "{data} holds the relay's TLS");

    let ep = hush_net::Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep.connect_pinned(ready.quic, ready.pin).await.expect("the relay answers");
    conn.close();

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(!std::path::Path::new(&data).exists(), "the data directory was removed");
}
