//! Test harness: the real `hush-relay` binary on loopback, and real clients (hush-net over
//! QUIC) acting as devices of real accounts.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hush_net::{Connection, Endpoint, NetError, Subscription};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use hush_protocol::wire::{self, server_push};
use hush_protocol::{AccountKey, AccountKeyPair, DeviceEntry, DeviceList, ErrorCode};

/// The relay binary under test: this build's, or `HUSH_RELAY_BIN` (a benchmark measuring an
/// earlier build against this one).
pub fn relay_binary() -> PathBuf {
    std::env::var_os("HUSH_RELAY_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hush-relay")), PathBuf::from)
}

/// The resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// How to start a relay beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Run it under this open-file limit (soft and hard), as `ulimit -n` would.
    pub nofile: Option<u64>,
    /// Write its standard error (its log) to this file instead of the test's.
    pub log: Option<PathBuf>,
}

/// A running relay process.
pub struct Relay {
    child: Child,
    launch: Launch,
    pub quic: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    pub pin: [u8; 32],
    pub data_dir: PathBuf,
    args: Vec<String>,
}

impl Relay {
    /// Starts the relay on `data_dir` with extra `--flag value` pairs.
    pub fn start(data_dir: &Path, extra: &[(&str, &str)]) -> Self {
        let args: Vec<String> =
            extra.iter().flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()]).collect();
        Self::spawn(data_dir, args, None, Launch::default())
    }

    /// Starts the relay with `launch` (a file limit, a log file).
    pub fn launch(data_dir: &Path, extra: &[(&str, &str)], launch: Launch) -> Self {
        let args: Vec<String> =
            extra.iter().flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()]).collect();
        Self::spawn(data_dir, args, None, launch)
    }

    fn spawn(
        data_dir: &Path,
        args: Vec<String>,
        ports: Option<[SocketAddr; 3]>,
        launch: Launch,
    ) -> Self {
        let [quic, ws, http] = ports.map_or_else(
            || ["127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()],
            |p| p.map(|a| a.to_string()),
        );
        // A file limit is set by a shell that then becomes the relay (`exec`).
        let mut command = match launch.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(relay_binary());
                c
            }
            None => Command::new(relay_binary()),
        };
        let stderr = match &launch.log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("relay log file")),
            None => Stdio::inherit(),
        };
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &quic, "--http-listen", &http, "--ws-listen", &ws, "--log-level"])
            // HUSH_TEST_LOG=debug shows the relay's own debug log while a test runs.
            .arg(std::env::var("HUSH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .args(&args)
            .env_remove("HUSH_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn hush-relay");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the relay never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("relay did not become ready");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {name} in ready line {line:?}"))
        };
        assert!(line.starts_with("hush-relay ready"), "unexpected first line {line:?}");
        let pin: [u8; 32] = hex::decode(field("pin")).unwrap().try_into().unwrap();
        Self {
            child,
            launch,
            quic: field("quic").parse().unwrap(),
            ws: field("ws").parse().unwrap(),
            http: field("http").parse().unwrap(),
            pin,
            data_dir: data_dir.to_owned(),
            args,
        }
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts a new process on the same data directory and flags (new ports).
    pub fn restart(&mut self) {
        self.kill();
        let next =
            Self::spawn(&self.data_dir.clone(), self.args.clone(), None, self.launch.clone());
        // The old process is dead already; dropping it only reaps it again.
        drop(std::mem::replace(self, next));
    }

    /// SIGKILL, then a new process on the same data directory, flags and ports, as a
    /// supervisor restarts a crashed relay.
    pub fn restart_in_place(&mut self) {
        self.kill();
        let ports = [self.quic, self.ws, self.http];
        let next = Self::spawn(
            &self.data_dir.clone(),
            self.args.clone(),
            Some(ports),
            self.launch.clone(),
        );
        drop(std::mem::replace(self, next));
    }

    /// A client connection (not authenticated).
    pub async fn connect(&self) -> Connection {
        let ep = Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.connect_pinned(self.quic, self.pin).await.expect("connect")
    }

    /// GET on the operator HTTP listener; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One device of a test account, with its private keys.
pub struct Device {
    pub id: u32,
    pub registration_id: u32,
    pub identity: IdentityKeyPair,
    pub prekeys: DevicePrekeys,
    pub signed: hush_prekeys::SignedPreKey,
    pub last_resort: hush_prekeys::KemPreKey,
}

impl Device {
    /// Generates keys and returns the upload a client would make: the signed prekey, the
    /// last-resort KEM key, and `one_time` / `kem` new one-time keys.
    pub fn upload(&mut self, one_time: u32, kem: u32) -> wire::UploadPrekeys {
        let mut rng = rand::rng();
        let otks = self.prekeys.generate_one_time_prekeys(&mut rng, one_time);
        let kems = self.prekeys.generate_kem_prekeys(
            &mut rng,
            &self.identity,
            KemPreKeyKind::OneTime,
            kem,
        );
        wire::UploadPrekeys {
            signed_prekey: self.signed.encode(),
            one_time_prekeys: otks.iter().map(|k| k.encode()).collect(),
            kem_prekeys: kems.iter().map(|k| k.encode()).collect(),
            last_resort_kem_prekey: self.last_resort.encode(),
        }
    }
}

/// A test account.
pub struct User {
    pub account: AccountKeyPair,
    pub devices: Vec<Device>,
    pub version: u64,
}

impl User {
    pub fn new(devices: u32) -> Self {
        let mut rng = rand::rng();
        let mut u =
            Self { account: AccountKeyPair::generate(&mut rng), devices: Vec::new(), version: 0 };
        for _ in 0..devices {
            u.add_device();
        }
        u
    }

    pub fn key(&self) -> AccountKey {
        self.account.public()
    }

    /// Adds a device locally (register again to publish it). Returns its id.
    pub fn add_device(&mut self) -> u32 {
        let mut rng = rand::rng();
        let id = self.devices.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        let identity = IdentityKeyPair::generate(&mut rng);
        let mut prekeys = DevicePrekeys::new();
        let signed = prekeys.generate_signed_prekey(&mut rng, &identity, 1_700_000_000);
        let last_resort = prekeys
            .generate_kem_prekeys(&mut rng, &identity, KemPreKeyKind::LastResort, 1)
            .remove(0);
        self.devices.push(Device {
            id,
            registration_id: 1000 + id,
            identity,
            prekeys,
            signed,
            last_resort,
        });
        id
    }

    pub fn device(&self, id: u32) -> &Device {
        self.devices.iter().find(|d| d.id == id).expect("device")
    }

    /// The next signed device list.
    pub fn next_list(&mut self) -> DeviceList {
        self.version += 1;
        let entries = self
            .devices
            .iter()
            .map(|d| DeviceEntry {
                device_id: d.id,
                registration_id: d.registration_id,
                identity: d.identity.public().clone(),
            })
            .collect();
        DeviceList::sign(&self.account, self.version, entries).unwrap()
    }

    /// Publishes the current device list.
    pub async fn register(&mut self, conn: &Connection) {
        let list = self.next_list();
        conn.register(&list).await.expect("register");
    }

    /// An authenticated connection for device `id`.
    pub async fn login(&self, relay: &Relay, id: u32) -> Connection {
        let conn = relay.connect().await;
        conn.authenticate(&self.key(), id, &self.device(id).identity).await.expect("authenticate");
        conn
    }

    /// Envelopes addressing every device of `self` except `skip` (the sender), with payload 0.
    pub fn envelopes(&self, skip: Option<u32>) -> Vec<wire::Envelope> {
        self.devices
            .iter()
            .filter(|d| Some(d.id) != skip)
            .map(|d| wire::Envelope {
                account: self.key().as_bytes().to_vec(),
                device_id: d.id,
                registration_id: d.registration_id,
                payload: 0,
            })
            .collect()
    }
}

/// A send of one payload to every device of `to`.
pub fn send_to(to: &User, payload: &[u8]) -> wire::Send {
    wire::Send { payloads: vec![payload.to_vec()], envelopes: to.envelopes(None), ephemeral: false }
}

/// Asserts that a call failed with `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: Result<T, NetError>, code: ErrorCode) -> NetError {
    match r {
        Err(e) if e.code() == Some(code) => e,
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Reads deliveries until `QueueEmpty`; returns (seq, payload) in arrival order.
pub async fn drain(sub: &mut Subscription) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match sub.next_within(Duration::from_secs(30)).await.expect("subscription") {
            Some(server_push::Body::Delivery(d)) => out.push((d.seq, d.payload)),
            Some(server_push::Body::QueueEmpty(_)) => return out,
            other => panic!("unexpected push {other:?}"),
        }
    }
}

/// The next delivery (skipping nothing); panics on anything else or a timeout.
pub async fn next_delivery(sub: &mut Subscription) -> wire::Delivery {
    match sub.next_within(Duration::from_secs(30)).await.expect("subscription") {
        Some(server_push::Body::Delivery(d)) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// Polls `/metrics` until counter `name` reaches `at_least` (a readiness check, not a sleep).
pub async fn wait_for_metric(relay: &Relay, name: &str, at_least: u64) {
    for _ in 0..500 {
        let (_, body) = relay.http_get("/metrics").await;
        let v = body
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if v as u64 >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {at_least}");
}

/// The value of metric `name` (a line `name value`, or `name{labels} value` when `name`
/// includes the labels); 0 if absent.
pub async fn metric(relay: &Relay, name: &str) -> f64 {
    let (_, body) = relay.http_get("/metrics").await;
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Opens `streams` request streams on `conn`; on each, sends the length prefix of a frame of
/// `announced` bytes and then `sent` bytes of its body, and never the rest (an attacker's
/// half-sent requests). The streams stay open as long as the returned handles live.
pub async fn half_sent_frames(
    conn: &Connection,
    streams: usize,
    announced: u32,
    sent: usize,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let mut out = Vec::with_capacity(streams);
    let mut bytes = announced.to_be_bytes().to_vec();
    bytes.resize(4 + sent, 0x5a);
    for _ in 0..streams {
        // The relay lets a connection open 64 streams, but credit for the streams of requests
        // just answered may not have come back yet: take what is granted.
        let open = tokio::time::timeout(Duration::from_millis(500), conn.quic().open_bi());
        let Ok(Ok((mut send, recv))) = open.await else { break };
        // The relay may stop the stream (over budget); the attacker does not care.
        let _ = send.write_all(&bytes).await;
        out.push((send, recv));
    }
    out
}

/// Alice (one device, logged in) and Bob (`bob_devices` devices), both registered.
pub async fn pair(relay: &Relay, bob_devices: u32) -> (User, User, Connection) {
    let mut alice = User::new(1);
    let mut bob = User::new(bob_devices);
    let c = relay.connect().await;
    alice.register(&c).await;
    bob.register(&c).await;
    let a = alice.login(relay, 1).await;
    (alice, bob, a)
}

/// The highest RSS of `pid` seen over `over`, sampled every 50 ms (a measurement window, not
/// a wait for readiness: nothing tells when quinn has processed every packet sent).
pub async fn peak_rss(pid: u32, over: Duration) -> u64 {
    let mut peak = rss_bytes(pid);
    let end = std::time::Instant::now() + over;
    while std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_bytes(pid));
    }
    peak
}

/// Opens `n` TCP connections to `addr` that never send a byte, from 127.0.0.2 to 127.0.0.9 in
/// turn (8 source addresses); returns those that connected.
pub async fn half_open(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let source = SocketAddr::from(([127, 0, 0, 2 + (i % 8) as u8], 0));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await
        {
            held.push(s);
        }
    }
    held
}

/// A plain (`ws://`) WebSocket handshake with the relay's listener, as a browser makes it;
/// whether it completed within `within`.
pub async fn websocket_handshake(addr: SocketAddr, within: Duration) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/"),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", hush_protocol::websocket::SUBPROTOCOL.parse().unwrap());
    tokio::time::timeout(within, tokio_tungstenite::client_async(req, tcp))
        .await
        .is_ok_and(|r| r.is_ok())
}
