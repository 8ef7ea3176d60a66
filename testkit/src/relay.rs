//! The real `hush-relay` binary as a child process on loopback.
//!
//! Every test and bench that needs a relay starts it here, so there is one way to find the
//! binary, one set of test flags and one readiness check (the relay's first stdout line,
//! `hush-relay ready quic=… ws=… http=… pin=…`: no sleeps).
//!
//! The binary is found, in order: `HUSH_RELAY_BIN` (a benchmark measuring an earlier build
//! against this one); the `hush-relay` in the running test executable's
//! `target/<profile>/`, which `cargo test --workspace` and `cargo bench -p hush-relay` build
//! anyway; otherwise it is built once per process with `cargo build -p hush-relay`. A release
//! run (a benchmark) always asks cargo, which is a no-op when the binary is fresh, so a bench
//! never measures stale code.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use hush_net::{Connection, Endpoint};

/// How long a relay may take to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The relay binary under test (see the module docs for where it comes from).
pub fn relay_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_build).clone()
}

fn find_or_build() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUSH_RELAY_BIN") {
        return PathBuf::from(bin);
    }
    let release = !cfg!(debug_assertions);
    // A test or bench runs from target/<profile>/deps/, a binary (hush-test-relay) from
    // target/<profile>/: the relay is built into target/<profile>/.
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        let dir = if dir.ends_with("deps") { dir.parent()? } else { dir };
        Some(dir.join("hush-relay"))
    });
    if let Some(bin) = &beside
        && bin.exists()
        && !release
    {
        return bin.clone();
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "hush-relay", "--bin", "hush-relay"]);
    if release {
        cmd.arg("--release");
    }
    let built = cmd.status().is_ok_and(|s| s.success());
    assert!(built, "building hush-relay failed ({cmd:?})");
    beside.filter(|b| b.exists()).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join(if release { "release" } else { "debug" }).join("hush-relay")
    })
}

/// How to start a relay beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Run it under this open-file limit (soft and hard), as `ulimit -n` would.
    pub nofile: Option<u64>,
    /// Write its standard error (its log) to this file instead of the test's.
    pub log: Option<PathBuf>,
}

/// Where the relay keeps its data: a directory the caller owns, or one the relay owns and
/// deletes when dropped.
enum DataDir {
    Borrowed(PathBuf),
    Owned(tempfile::TempDir),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            Self::Borrowed(p) => p,
            Self::Owned(t) => t.path(),
        }
    }
}

/// A running (or stopped) relay process on loopback.
pub struct Relay {
    child: Option<Child>,
    launch: Launch,
    data: DataDir,
    args: Vec<String>,
    /// The QUIC listener.
    pub quic: SocketAddr,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    /// The operator HTTP listener (health, metrics).
    pub http: SocketAddr,
    /// The SHA-256 pin of its self-signed certificate's key.
    pub pin: [u8; 32],
}

fn flags(extra: &[(&str, &str)]) -> Vec<String> {
    extra.iter().flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()]).collect()
}

impl Relay {
    /// Starts the relay on `data_dir` with extra `--flag value` pairs.
    pub fn start(data_dir: &Path, extra: &[(&str, &str)]) -> Self {
        Self::launch(data_dir, extra, Launch::default())
    }

    /// Starts the relay on `data_dir` with `launch` (a file limit, a log file).
    pub fn launch(data_dir: &Path, extra: &[(&str, &str)], launch: Launch) -> Self {
        Self::new(DataDir::Borrowed(data_dir.to_owned()), flags(extra), launch)
    }

    /// Starts the relay on a fresh temporary data directory, removed when it drops.
    pub fn temp() -> Self {
        Self::temp_with(&[])
    }

    /// [`Self::temp`] with extra `--flag value` pairs.
    pub fn temp_with(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("relay data directory");
        Self::new(DataDir::Owned(dir), flags(extra), Launch::default())
    }

    fn new(data: DataDir, args: Vec<String>, launch: Launch) -> Self {
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut relay = Self {
            child: None,
            launch,
            data,
            args,
            quic: unbound,
            ws: unbound,
            http: unbound,
            pin: [0; 32],
        };
        relay.spawn();
        relay
    }

    /// Starts the process on the current addresses (port 0 the first time: the relay picks
    /// them and says which in its ready line).
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the relay is running");
        // A file limit is set by a shell that then becomes the relay (`exec`).
        let mut command = match self.launch.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(relay_binary());
                c
            }
            None => Command::new(relay_binary()),
        };
        let stderr = match &self.launch.log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("relay log file")),
            None => Stdio::inherit(),
        };
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--listen", &self.quic.to_string(), "--http-listen", &self.http.to_string()])
            .args(["--ws-listen", &self.ws.to_string(), "--log-level"])
            // HUSH_TEST_LOG=debug shows the relay's own debug log while a test runs.
            .arg(std::env::var("HUSH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .args(&self.args)
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
        let line = rx.recv_timeout(READY_WITHIN).expect("relay did not become ready");
        let ready = Ready::parse(&line).unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        (self.quic, self.ws, self.http, self.pin) = (ready.quic, ready.ws, ready.http, ready.pin);
        self.child = Some(child);
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The relay's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the relay is not running")
    }

    /// SIGKILL: no chance to flush or clean up anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the graceful shutdown; whether it exited successfully (so the
    /// database was closed cleanly and its directory can be copied).
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        c.wait().is_ok_and(|s| s.success())
    }

    /// SIGKILL, then a new process on the same data directory, flags and addresses (same pin),
    /// as a supervisor restarts a crashed relay under clients that keep reconnecting.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, then a new process on the same data directory and flags but new ports.
    pub fn restart_elsewhere(&mut self) {
        self.kill();
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        (self.quic, self.ws, self.http) = (unbound, unbound, unbound);
        self.spawn();
    }

    /// Starts a stopped relay again on the same data directory and addresses.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// A client connection (not authenticated).
    pub async fn connect(&self) -> Connection {
        let ep = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
        ep.connect_pinned(self.quic, self.pin).await.expect("connect")
    }

    /// GET on the operator HTTP listener; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http).await.expect("connect http");
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.expect("write http");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read http");
        let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    /// The value of metric `name` (a line `name value`, or `name{labels} value` when `name`
    /// includes the labels); 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until counter `name` reaches `at_least` (a readiness check, not a
    /// sleep).
    pub async fn wait_for_metric(&self, name: &str, at_least: u64) {
        for _ in 0..500 {
            let (_, body) = self.http_get("/metrics").await;
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
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The relay's ready line.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// QUIC listener.
    pub quic: SocketAddr,
    /// WebSocket listener.
    pub ws: SocketAddr,
    /// Operator HTTP listener.
    pub http: SocketAddr,
    /// Certificate key pin.
    pub pin: [u8; 32],
}

impl Ready {
    /// Parses `hush-relay ready quic=… ws=… http=… pin=…`.
    pub fn parse(line: &str) -> Option<Self> {
        if !line.starts_with("hush-relay ready") {
            return None;
        }
        let field = |name: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        Some(Self {
            quic: field("quic")?.parse().ok()?,
            ws: field("ws")?.parse().ok()?,
            http: field("http")?.parse().ok()?,
            pin: hex::decode(field("pin")?).ok()?.try_into().ok()?,
        })
    }
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
