//! Harness for the end-to-end tests: the real `hush-relay` binary on loopback (on a fixed port,
//! so it can be killed and restarted under clients that keep reconnecting), and real
//! [`hush_core::Client`]s, each with its own redb store in its own directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hush_core::store::RedbStore;
use hush_core::transport::QuicConnector;
use hush_core::{Client, ClientConfig, ClientOptions, Event, EventStream, StoreKey};

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(60);

/// The relay binary: built by `cargo test --workspace` (the relay has integration tests, so
/// cargo builds its binary); built here when this crate's tests run alone.
fn relay_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let bin = target.join(profile).join("hush-relay");
    // Benchmarks (release) always rebuild, which is a no-op when it is fresh: a stale relay
    // binary would measure old code. Test runs build it as part of `cargo test`.
    if !bin.exists() || profile == "release" {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "hush-relay", "--bin", "hush-relay"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build").success(), "building hush-relay failed");
    }
    bin
}

/// A running relay process on a fixed loopback port.
pub struct Relay {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pin: [u8; 32],
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Relay {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[(&str, &str)]) -> Self {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut relay = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pin: [0; 32],
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()]).collect(),
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let mut child = Command::new(relay_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", &self.addr.to_string(), "--http-listen", "127.0.0.1:0"])
            .args(["--ws-listen", "127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .args(&self.extra)
            .env_remove("HUSH_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hush-relay");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(WAIT).expect("relay did not become ready");
        assert!(line.starts_with("hush-relay ready"), "unexpected first line {line:?}");
        let pin = line.split_whitespace().find_map(|w| w.strip_prefix("pin=")).unwrap();
        self.pin = hex::decode(pin).unwrap().try_into().unwrap();
        self.child = Some(child);
    }

    /// The relay process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new process on the same data directory and port (same pin).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, and wait for the graceful shutdown to finish: the database is closed cleanly,
    /// so its directory can be copied.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            assert!(c.wait().unwrap().success(), "relay did not shut down cleanly");
        }
    }

    /// A stopped relay starts again on the same data directory and port (same pin).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the relay is running");
        self.spawn();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One device: its store directory, store key and running client.
pub struct Device {
    pub name: &'static str,
    pub dir: tempfile::TempDir,
    key: [u8; 32],
    relay: (SocketAddr, [u8; 32]),
    client: Option<Client>,
    pub events: EventStream,
}

pub fn options() -> ClientOptions {
    ClientOptions {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

fn config(dir: &Path, key: [u8; 32], relay: (SocketAddr, [u8; 32])) -> ClientConfig {
    ClientConfig {
        store: Arc::new(RedbStore::open(&dir.join("hush.redb")).unwrap()),
        store_key: StoreKey::from_bytes(key),
        connector: Arc::new(QuicConnector::pinned(relay.0, relay.1)),
        options: options(),
    }
}

impl Device {
    /// A new account's first device.
    pub async fn create(name: &'static str, relay: &Relay) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ name.len() as u8);
        let r = (relay.addr, relay.pin);
        let client = Client::create_account(config(dir.path(), key, r)).await.unwrap();
        let events = client.events();
        let d = Self { name, dir, key, relay: r, client: Some(client), events };
        d.connected().await;
        d
    }

    /// The primary device of an existing account, restored from its account key.
    pub async fn restore(name: &'static str, relay: &Relay, account_key: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = [0x77; 32];
        let r = (relay.addr, relay.pin);
        let client =
            Client::restore_account(config(dir.path(), key, r), account_key).await.unwrap();
        let events = client.events();
        let d = Self { name, dir, key, relay: r, client: Some(client), events };
        d.connected().await;
        d
    }

    /// A new device linked to `primary`'s account.
    pub async fn link(name: &'static str, primary: &Device) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = [0x5a; 32];
        let r = primary.relay;
        let code = {
            let cfg = config(dir.path(), key, r);
            let code = Client::begin_link(&cfg).await.unwrap();
            drop(cfg);
            code
        };
        let grant = primary.c().approve_link(&code).await.unwrap();
        let client = Client::finish_link(config(dir.path(), key, r), &grant).await.unwrap();
        let events = client.events();
        let d = Self { name, dir, key, relay: r, client: Some(client), events };
        d.connected().await;
        d
    }

    /// The running client.
    pub fn c(&self) -> &Client {
        self.client.as_ref().expect("client is stopped")
    }

    /// Stops the client (as if the app process ended).
    pub async fn stop(&mut self) {
        if let Some(c) = self.client.take() {
            c.shutdown().await;
        }
    }

    /// Opens this device's store once the stopped client has let go of it: redb releases the
    /// file lock when the last handle drops, and background tasks drop theirs a moment after
    /// the client stops.
    pub async fn reopen_store(&self) -> RedbStore {
        let mut tries = 0;
        loop {
            match RedbStore::open(&self.dir.path().join("hush.redb")) {
                Ok(s) => return s,
                Err(_) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen store: {e}"),
            }
        }
    }

    /// Opens the same store again, as a restarted app process would.
    pub async fn restart(&mut self) {
        let connector = Arc::new(QuicConnector::pinned(self.relay.0, self.relay.1));
        self.restart_with(connector, options()).await;
    }

    /// Opens the same store again with another connector and options (a wrong pin, a
    /// relay address where nothing listens, production backoff…).
    pub async fn restart_with(
        &mut self,
        connector: Arc<dyn hush_core::transport::Connector>,
        options: ClientOptions,
    ) {
        self.stop().await;
        let store = self.reopen_store().await;
        let cfg = ClientConfig {
            store: Arc::new(store),
            store_key: StoreKey::from_bytes(self.key),
            connector,
            options,
        };
        let client = Client::open(cfg).await.unwrap();
        self.events = client.events();
        self.client = Some(client);
    }

    pub async fn id(&self) -> String {
        self.c().account_id().await
    }

    /// Waits until connected.
    pub async fn connected(&self) {
        let until = tokio::time::Instant::now() + WAIT;
        while self.c().connection_state() != hush_core::ConnectionState::Connected {
            assert!(tokio::time::Instant::now() < until, "{} never connected", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for an event matching `f`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(Some(e)) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Ok(None) => panic!("{}: event stream ended waiting for {what}", self.name),
                Err(_) => panic!("{}: timed out waiting for {what}", self.name),
            }
        }
    }

    /// Waits until the conversation with `peer` holds `n` messages; returns their bodies in
    /// conversation order.
    pub async fn wait_history(&self, peer: &str, n: usize) -> Vec<hush_core::MessageView> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let page = self.c().messages(peer, None, u32::try_from(n + 10).unwrap()).await.unwrap();
            if page.len() >= n {
                assert_eq!(page.len(), n, "{}: more messages than expected", self.name);
                return page;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{}: history has {} of {n} messages",
                self.name,
                page.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
