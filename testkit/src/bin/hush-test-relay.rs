//! Starts the relay the test kit's way for tests written in other languages (the Python,
//! Kotlin and browser tests): on loopback, on a fresh temporary data directory, with any extra
//! `--flag value` pairs given. It prints one line,
//! `hush-relay ready quic=… ws=… http=… pin=… data=…`, and keeps the relay running until its
//! standard input closes (the test closed it, or the test process died), then stops the relay
//! and deletes the directory.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pairs: Vec<(&str, &str)> = args
        .chunks(2)
        .filter_map(|p| match p {
            [flag, value] => Some((flag.trim_start_matches('-'), value.as_str())),
            _ => None,
        })
        .collect();
    if pairs.len() * 2 != args.len() {
        eprintln!("usage: hush-test-relay [--flag value]...");
        std::process::exit(2);
    }
    let relay = hush_testkit::Relay::temp_with(&pairs);
    let line = format!(
        "hush-relay ready quic={} ws={} http={} pin={} data={}\n",
        relay.quic,
        relay.ws,
        relay.http,
        hex::encode(relay.pin),
        relay.data_dir().display()
    );
    let mut out = std::io::stdout();
    if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
        return;
    }
    // Until EOF (or an error, which means the same: nobody is there any more).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(relay);
}
