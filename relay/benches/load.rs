//! Relay load tool: drives the real `hush-relay` binary over QUIC on loopback and measures,
//! in the same run, the floors each figure is compared against (docs/BENCHMARKS.md).
//!
//! - Durable send→ack throughput with 1, 16 and 256 concurrent senders, against raw redb
//!   commits of the same rows (the relay's own `mailbox::store`, no network) at the batch size
//!   the relay reached, and against one commit (fsync) per message.
//! - Online delivery latency, send → recipient receives, p50 and p99 (stored and ephemeral).
//! - Memory per idle authenticated, subscribed connection at 10k connections, against a bare
//!   quinn server (same TLS and transport config) holding the same number.
//! - Reconnect storm: handshake + auth per second, against a bare quinn accept loop.
//!
//! `cargo bench -p hush-relay --bench load` runs the full sizes; under `cargo test` (no
//! `--bench` argument) it runs a small smoke pass so the tool can't rot. `HUSH_LOAD_SECTIONS`
//! (any of `throughput,latency,memory`) and `HUSH_LOAD_SENDERS` (e.g. `256`) narrow a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_net::Endpoint;
use hush_protocol::wire::server_push;
use hush_relay::config::Config;
use hush_relay::mailbox::{self, Quotas, Recipient};
use hush_testkit::protocol::{User, drain, send_to};
use hush_testkit::relay::{Relay, rss_bytes};

struct Scale {
    senders: Vec<usize>,
    sends_per_sender: fn(usize) -> usize,
    latency_samples: usize,
    idle_connections: usize,
    storm_connections: usize,
    /// Sends written by each raw redb floor measurement.
    floor_sends: usize,
}

impl Scale {
    fn full() -> Self {
        Self {
            senders: vec![1, 16, 256],
            sends_per_sender: |n| match n {
                1 => 1000,
                16 => 250,
                _ => 400,
            },
            latency_samples: 1000,
            idle_connections: 10_000,
            storm_connections: 3000,
            floor_sends: 4000,
        }
    }

    fn smoke() -> Self {
        Self {
            senders: vec![1, 4],
            sends_per_sender: |_| 10,
            latency_samples: 10,
            idle_connections: 20,
            storm_connections: 10,
            floor_sends: 20,
        }
    }
}

const PAYLOAD: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bare-quinn-server") {
        return bare_server();
    }
    let full = args.iter().any(|a| a == "--bench");
    let mut scale = if full { Scale::full() } else { Scale::smoke() };
    if let Ok(v) = std::env::var("HUSH_LOAD_SENDERS") {
        scale.senders = v.split(',').map(|n| n.trim().parse().unwrap()).collect();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(scale, full));
}

fn relay_flags() -> Vec<(&'static str, &'static str)> {
    vec![
        ("account-sends-per-second", "1000000"),
        ("account-send-burst", "1000000"),
        ("connection-requests-per-second", "1000000"),
        ("connection-request-burst", "1000000"),
        ("registrations-per-second", "1000000"),
        ("registration-burst", "1000000"),
        ("connections-per-ip", "100000"),
        ("mailbox-max-envelopes", "100000000"),
        ("mailbox-max-bytes", "100000000000"),
        ("auth-timeout-secs", "600"),
        ("idle-timeout-secs", "600"),
    ]
}

async fn run(scale: Scale, full: bool) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    println!("## hush-relay load ({} mode)\n", if full { "full" } else { "smoke" });
    let sections = std::env::var("HUSH_LOAD_SECTIONS").unwrap_or_default();
    let on = |s: &str| sections.is_empty() || sections.split(',').any(|x| x.trim() == s);
    {
        let relay = Relay::start(&dir.path().join("relay"), &relay_flags());
        if on("throughput") {
            throughput(&relay, &scale).await;
        }
        if on("latency") {
            latency(&relay, &scale).await;
        }
    }
    if on("memory") {
        let relay = Relay::start(&dir.path().join("relay-idle"), &relay_flags());
        memory_and_storm(&relay, &scale).await;
    }
}

/// Benchmarks write under the build directory, on the same disk as the floor measurements.
fn bench_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("load");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A one-envelope send of `PAYLOAD` bytes from `alice`'s device 1 to `bob`'s device 1, as the
/// relay stores it.
fn floor_send(alice: &User, bob: &User) -> mailbox::Send {
    mailbox::Send {
        sender: (*alice.key().as_bytes(), 1),
        payloads: vec![vec![7; PAYLOAD]],
        recipients: vec![Recipient {
            account: *bob.key().as_bytes(),
            device: 1,
            registration_id: bob.devices[0].registration_id,
            payload: 0,
        }],
    }
}

/// A fresh database with a sender and a recipient registered, on the same disk as the relay's;
/// returns the send the floor repeats.
fn floor_store(name: &str) -> (tempfile::TempDir, hush_relay::store::Store, mailbox::Send) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let store = hush_relay::store::Store::open(&dir.path().join(name)).unwrap();
    let mut alice = User::new(1);
    let mut bob = User::new(1);
    let txn = store.db().unwrap().begin_write().unwrap();
    hush_relay::accounts::register(&txn, &alice.next_list(), 6).unwrap();
    hush_relay::accounts::register(&txn, &bob.next_list(), 6).unwrap();
    txn.commit().unwrap();
    let send = floor_send(&alice, &bob);
    (dir, store, send)
}

const QUOTAS: Quotas = Quotas::mailbox_only(u64::MAX, u64::MAX, 86_400_000);

/// Sends per second of raw redb durable commits doing the relay's own mailbox writes for
/// `batch` sends per commit.
async fn redb_floor(batch: usize, sends: usize) -> f64 {
    tokio::task::spawn_blocking(move || {
        let (_dir, store, send) = floor_store("floor.redb");
        let commits = (sends / batch).max(3);
        let start = Instant::now();
        for _ in 0..commits {
            // The relay's own batched write path, without the network.
            let txn = store.db().unwrap().begin_write().unwrap();
            let sends = vec![(&send, 1); batch];
            for r in mailbox::store_batch(&txn, &sends, QUOTAS).unwrap() {
                r.unwrap();
            }
            txn.commit().unwrap();
        }
        (commits * batch) as f64 / start.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

async fn throughput(relay: &Relay, scale: &Scale) {
    println!("### Durable send→ack throughput ({PAYLOAD}-byte payload, one recipient device)\n");
    println!(
        "| senders | sends | relay sends/s | mean commit batch | raw redb at that batch, sends/s | relay / raw | raw redb, one commit per send, sends/s | relay / one-per-send | bare quinn echo, requests/s | relay / echo |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let bare = start_bare();
    let mut cpu_rows = Vec::new();
    let mut latency_rows = Vec::new();
    let setup = relay.connect().await;
    let mut alice = User::new(1);
    alice.register(&setup).await;
    for &n in &scale.senders {
        let mut bob = User::new(1);
        bob.register(&setup).await;
        let per = (scale.sends_per_sender)(n);
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(alice.login(relay, 1).await);
        }
        let csum0 = relay.metric("hush_relay_commit_seconds_sum").await;
        let sum0 = relay.metric("hush_relay_commit_batch_size_sum").await;
        let cnt0 = relay.metric("hush_relay_commit_batch_size_count").await;
        let cpu0 = cpu_us(relay.pid());
        let me0 = cpu_us(std::process::id());
        let drops0 = udp_receive_drops();
        let start = Instant::now();
        let mut tasks = Vec::new();
        // The load generator sends one pre-encoded frame per request (as the echo client does),
        // so its own CPU stays out of the relay's way on this 2-core machine.
        let frame = hush_protocol::frame::encode(&hush_protocol::wire::Request {
            body: Some(hush_protocol::wire::request::Body::Send(send_to(&bob, &[7; PAYLOAD]))),
        });
        for conn in conns {
            let frame = frame.clone();
            tasks.push(tokio::spawn(async move {
                let mut took = Vec::with_capacity(per);
                for _ in 0..per {
                    let sent = Instant::now();
                    match conn.request_raw(&frame).await.unwrap() {
                        hush_protocol::wire::response::Body::Sent(_) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                    took.push(sent.elapsed());
                }
                took
            }));
        }
        let mut took = Vec::new();
        for t in tasks {
            took.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        let drops = udp_receive_drops().saturating_sub(drops0);
        took.sort();
        latency_rows.push(format!(
            "| {n} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {drops} |",
            took.len(),
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99)),
            ms(took.last().copied().unwrap_or_default()),
        ));
        let total = n * per;
        let relay_cpu = (cpu_us(relay.pid()) - cpu0) / total as f64;
        let client_cpu = (cpu_us(std::process::id()) - me0) / total as f64;
        let rate = total as f64 / elapsed.as_secs_f64();
        let sum1 = relay.metric("hush_relay_commit_batch_size_sum").await;
        let cnt1 = relay.metric("hush_relay_commit_batch_size_count").await;
        let batch = ((sum1 - sum0) / (cnt1 - cnt0).max(1.0)).max(1.0);
        let csum1 = relay.metric("hush_relay_commit_seconds_sum").await;
        let commits = (cnt1 - cnt0).max(1.0);
        eprintln!(
            "senders {n}: {commits} commits, mean commit {:.3} ms, writer busy {:.0}% of the run",
            (csum1 - csum0) / commits * 1e3,
            (csum1 - csum0) / elapsed.as_secs_f64() * 100.0
        );
        // Same rows, same count: the floor's tables grow to the size the relay's did.
        let floor = redb_floor(batch.round().max(1.0) as usize, total).await;
        let one = redb_floor(1, scale.floor_sends / 4).await;
        let frame_len = hush_protocol::frame::encode(&hush_protocol::wire::Request {
            body: Some(hush_protocol::wire::request::Body::Send(send_to(&bob, &[7; PAYLOAD]))),
        })
        .len();
        let (echo_cpu0, echo_me0) = (cpu_us(bare.child.id()), cpu_us(std::process::id()));
        let echo = echo_rate(&bare, n, per, frame_len).await;
        let echo_cpu = (cpu_us(bare.child.id()) - echo_cpu0) / total as f64;
        let echo_client = (cpu_us(std::process::id()) - echo_me0) / total as f64;
        cpu_rows.push(format!(
            "| {n} | {relay_cpu:.1} µs | {client_cpu:.1} µs | {echo_cpu:.1} µs | {echo_client:.1} µs |"
        ));
        println!(
            "| {n} | {total} | {rate:.0} | {batch:.1} | {floor:.0} | {:.2} | {one:.0} | {:.1}× | {echo:.0} | {:.2} |",
            rate / floor,
            rate / one,
            rate / echo
        );
        // Every acked send is in Bob's mailbox, once.
        let b_conn = bob.login(relay, 1).await;
        let mut sub = b_conn.subscribe().await.unwrap();
        let got = drain(&mut sub).await;
        assert_eq!(got.len(), total);
        sub.ack(got.iter().map(|(s, _)| *s).collect()).await.unwrap();
    }
    println!(
        "\nSend → `Sent` latency under that load (each sender waits for its answer before the next), and UDP datagrams the kernel dropped for full receive buffers (all sockets, from /proc/net/snmp), same runs:\n"
    );
    println!("| senders | sends | p50 | p99 | max | UDP receive-buffer drops |");
    println!("|---|---|---|---|---|---|");
    for r in latency_rows {
        println!("{r}");
    }
    println!("\nServer CPU (user + system) per request, same runs:\n");
    println!(
        "| senders | hush-relay per durable send | load client per send | bare quinn echo per request | echo client per request |"
    );
    println!("|---|---|---|---|---|");
    for r in cpu_rows {
        println!("{r}");
    }
    println!();
}

/// Requests per second against the bare quinn echo server: `n` connections, each making `per`
/// sequential request/response exchanges of `len` bytes (the size of a relay send frame).
async fn echo_rate(bare: &Bare, n: usize, per: usize, len: usize) -> f64 {
    let ep = Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(ep.connect_pinned(bare.addr, bare.pin).await.unwrap());
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in conns {
        tasks.push(tokio::spawn(async move {
            let body = vec![7u8; len];
            for _ in 0..per {
                let (mut send, mut recv) = c.quic().open_bi().await.unwrap();
                send.write_all(&body).await.unwrap();
                send.finish().unwrap();
                let back = recv.read_to_end(1 << 20).await.unwrap();
                assert_eq!(back.len(), len);
            }
            c.close();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (n * per) as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(relay: &Relay, scale: &Scale) {
    println!("### Online delivery latency (send → recipient receives, one at a time)\n");
    println!(
        "| kind | samples | p50 | p99 | floor: raw redb durable commit of one send, p50 / p99 |"
    );
    println!("|---|---|---|---|---|");
    let setup = relay.connect().await;
    let mut alice = User::new(1);
    let mut bob = User::new(1);
    alice.register(&setup).await;
    bob.register(&setup).await;
    let a = alice.login(relay, 1).await;
    let b = bob.login(relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    assert!(drain(&mut sub).await.is_empty());
    let (f50, f99) = commit_latency(scale.latency_samples.min(500)).await;
    for ephemeral in [false, true] {
        let mut samples = Vec::with_capacity(scale.latency_samples);
        for _ in 0..scale.latency_samples {
            let mut send = send_to(&bob, &[1; PAYLOAD]);
            send.ephemeral = ephemeral;
            let start = Instant::now();
            a.send(send).await.unwrap();
            let d = match sub.next().await.unwrap() {
                Some(server_push::Body::Delivery(d)) => d,
                other => panic!("unexpected {other:?}"),
            };
            samples.push(start.elapsed());
            if !ephemeral {
                sub.ack(vec![d.seq]).await.unwrap();
            }
        }
        samples.sort();
        let floor = if ephemeral {
            "— (never stored)".to_owned()
        } else {
            format!("{:.2} ms / {:.2} ms", ms(f50), ms(f99))
        };
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {floor} |",
            if ephemeral { "ephemeral (typing)" } else { "stored (durable)" },
            samples.len(),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
        );
    }
    println!();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn commit_latency(samples: usize) -> (Duration, Duration) {
    tokio::task::spawn_blocking(move || {
        let (_dir, store, send) = floor_store("latency.redb");
        let mut v: Vec<Duration> = (0..samples.max(1))
            .map(|_| {
                let start = Instant::now();
                let txn = store.db().unwrap().begin_write().unwrap();
                mailbox::store(&txn, &send, QUOTAS, 1).unwrap();
                txn.commit().unwrap();
                start.elapsed()
            })
            .collect();
        v.sort();
        (percentile(&v, 0.5), percentile(&v, 0.99))
    })
    .await
    .unwrap()
}

/// UDP datagrams dropped so far because a socket's receive buffer was full (RcvbufErrors).
fn udp_receive_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in microseconds.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name, starting at field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ticks = field(14) + field(15);
    ticks * 1e6 / 100.0 // USER_HZ is 100 on Linux
}

struct Bare {
    child: std::process::Child,
    addr: SocketAddr,
    pin: [u8; 32],
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bare() -> Bare {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("bare-quinn-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace().skip(2);
    let addr = parts.next().unwrap().parse().unwrap();
    let pin = hex::decode(parts.next().unwrap()).unwrap().try_into().unwrap();
    Bare { child, addr, pin }
}

/// A bare quinn server: the relay's TLS and transport configuration, an accept loop that holds
/// every connection until the peer closes it, and nothing else.
fn bare_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Config { data_dir: dir.path().to_owned(), idle_timeout_secs: 600, ..Config::default() };
        let identity = hush_relay::tls::load_identity(&config).unwrap();
        let pin = hex::encode(identity.pin);
        let certs = hush_relay::tls::Certificates::new(&identity).unwrap();
        let server = hush_relay::tls::server_config(&certs, &config).unwrap();
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        println!("bare ready {} {pin}", endpoint.local_addr().unwrap());
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                // Echo each request stream: the request/response floor with no relay logic.
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(body) = recv.read_to_end(1 << 20).await {
                            let _ = send.write_all(&body).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
}

/// Client endpoints for many connections (one UDP socket each, to spread receive buffers).
fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n).map(|_| Endpoint::new("127.0.0.1:0".parse().unwrap()).unwrap()).collect()
}

/// Runs `k` copies of `f` with at most 64 in flight; returns completions per second.
async fn storm<F, Fut>(k: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let fut = f(i);
        tasks.push(tokio::spawn(async move {
            fut.await;
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    k as f64 / start.elapsed().as_secs_f64()
}

async fn memory_and_storm(relay: &Relay, scale: &Scale) {
    let n = scale.idle_connections;
    // Register the devices first: accounts are stored state, not connection cost.
    let users: Vec<Arc<User>> = {
        let setup = relay.connect().await;
        let mut users = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for _ in 0..n {
            let mut u = User::new(1);
            let list = u.next_list();
            let conn = setup.clone();
            pending.push(tokio::spawn(async move { conn.register(&list).await.unwrap() }));
            users.push(Arc::new(u));
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap();
        }
        setup.close();
        users
    };
    let eps = endpoints(16);
    let (quic, pin) = (relay.quic, relay.pin);
    let relay_before = rss_bytes(relay.pid());
    let held = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
    storm(n, |i| {
        let ep = eps[i % eps.len()].clone();
        let u = Arc::clone(&users[i]);
        let held = Arc::clone(&held);
        async move {
            let c = ep.connect_pinned(quic, pin).await.unwrap();
            c.authenticate(&u.key(), 1, &u.device(1).identity).await.unwrap();
            let mut sub = c.subscribe().await.unwrap();
            assert!(drain(&mut sub).await.is_empty());
            held.lock().await.push((c, sub));
        }
    })
    .await;
    let relay_after = rss_bytes(relay.pid());
    let authed = relay.metric("hush_relay_authenticated_connections").await as usize;
    assert_eq!(authed, n);

    let bare = start_bare();
    let bare_before = rss_bytes(bare.child.id());
    let bare_held = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
    storm(n, |i| {
        let ep = eps[i % eps.len()].clone();
        let bare_held = Arc::clone(&bare_held);
        let (addr, pin) = (bare.addr, bare.pin);
        async move {
            let c = ep.connect_pinned(addr, pin).await.unwrap();
            bare_held.lock().await.push(c);
        }
    })
    .await;
    let bare_after = rss_bytes(bare.child.id());
    let relay_per = relay_after.saturating_sub(relay_before) as f64 / n as f64;
    let bare_per = bare_after.saturating_sub(bare_before) as f64 / n as f64;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("### Memory per idle connection ({n} connections)\n");
    println!("| server | RSS before | RSS with {n} connections | per connection | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| hush-relay (authenticated + subscribed) | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.2}× |",
        mib(relay_before),
        mib(relay_after),
        relay_per / 1024.0,
        relay_per / bare_per
    );
    println!(
        "| bare quinn (same TLS + transport config) | {:.1} MiB | {:.1} MiB | {:.1} KiB | 1.00× |",
        mib(bare_before),
        mib(bare_after),
        bare_per / 1024.0
    );
    println!(
        "\nAt {:.1} KiB per connection, 24 GiB holds about {:.1} million idle authenticated connections (memory only).\n",
        relay_per / 1024.0,
        24.0 * 1073741824.0 / relay_per.max(1.0) / 1e6
    );
    for (c, _) in held.lock().await.iter() {
        c.close();
    }
    for c in bare_held.lock().await.iter() {
        c.close();
    }

    // Reconnect storm: connections churn through handshake (+ auth for the relay).
    let k = scale.storm_connections;
    let relay_rate = storm(k, |i| {
        let ep = eps[i % eps.len()].clone();
        let u = Arc::clone(&users[i % users.len()]);
        async move {
            let c = ep.connect_pinned(quic, pin).await.unwrap();
            c.authenticate(&u.key(), 1, &u.device(1).identity).await.unwrap();
            c.close();
        }
    })
    .await;
    let bare_rate = storm(k, |i| {
        let ep = eps[i % eps.len()].clone();
        let (addr, pin) = (bare.addr, bare.pin);
        async move {
            let c = ep.connect_pinned(addr, pin).await.unwrap();
            c.close();
        }
    })
    .await;
    println!("### Reconnect storm ({k} connections, 64 in flight)\n");
    println!("| server | connections per second | ratio |");
    println!("|---|---|---|");
    println!(
        "| hush-relay: QUIC handshake + challenge + authenticate | {relay_rate:.0} | {:.2}× |",
        relay_rate / bare_rate
    );
    println!("| bare quinn: QUIC handshake | {bare_rate:.0} | 1.00× |");
}
