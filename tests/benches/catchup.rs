//! Catch-up benchmark (docs/BENCHMARKS.md): a device offline while N messages queue up on the
//! real relay reconnects; we time draining, decrypting, storing and acking all of them, and
//! compare with a floor measured in the same run: pure ratchet decryption of N messages of the
//! same size plus raw store writes of the same rows in the same batch size.
//!
//! The messages are queued once; then each round restores the relay's database and Bob's store
//! from copies taken while both were stopped cleanly, starts the relay, and times the catch-up,
//! alternating with a fresh measurement of the floor. This machine's timings swing by a third
//! from one moment to the next, so a ratio is taken within its round and the rounds give a
//! median and a range.
//!
//! The same N queued as **group** messages (docs/PROTOCOL.md §17: one shared sender-key payload
//! per message, Bob holding Alice's key) is caught up in the same rounds, and its time is
//! compared with the 1:1 catch-up of the round (target: within 1.2×).
//!
//! `cargo bench -p hush-e2e --bench catchup` runs N = 10,000 in 9 rounds; under `cargo test` it
//! runs a small smoke size in 2 rounds. `HUSH_CATCHUP_N` and `HUSH_CATCHUP_ROUNDS` override them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::time::{Duration, Instant};

use hush_core::Session;
use hush_core::content::{Content, Text, content::Body};
use std::collections::BTreeMap;

use hush_core::records::{
    MessageRecord, PostingsRecord, RECORD_VERSION, Record, Status, id_row, keys,
};
use hush_core::search::tokens;
use hush_core::store::{Batch, RedbStore, Store, Table};
use hush_core::vault::{StoreKey, Vault};
use hush_core::{ConnectionState, Event, MessageView};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use hush_testkit::{Device, Relay};

const BATCH: usize = hush_core::client::MAX_BATCH;

fn text(i: usize) -> String {
    format!("catch-up message number {i:05}, about as long as a typical chat line")
}

async fn floor(n: usize) -> (Duration, Duration, Duration) {
    // Ratchet: a session with one round trip done, then n messages in one chain.
    let mut rng = rand::rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let mut bob_prekeys = DevicePrekeys::new();
    bob_prekeys.generate_signed_prekey(&mut rng, &bob, 1);
    bob_prekeys.generate_one_time_prekeys(&mut rng, 1);
    bob_prekeys.generate_kem_prekeys(&mut rng, &bob, KemPreKeyKind::OneTime, 1);
    let bundle = bob_prekeys.bundle(&bob, true).unwrap().verify().unwrap();
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut a = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = a.encrypt(&mut rng, b"hi").unwrap();
    let (mut b, _) = Session::accept(&bob, &mut bob_prekeys, &first).unwrap();
    let reply = b.encrypt(&mut rng, b"hi").unwrap();
    a.decrypt(&reply).unwrap();
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let c = Content::new(Body::Text(Text {
                id: vec![7; 16],
                clock: i as u64,
                body: text(i),
                sent_at_ms: 1,
                attachment: None,
            }));
            a.encrypt(&mut rng, &c.to_bytes()).unwrap()
        })
        .collect();
    let t = Instant::now();
    let mut plain = Vec::with_capacity(n);
    for m in &messages {
        plain.push(b.decrypt(m).unwrap());
    }
    let decrypt = t.elapsed();

    // Raw store writes, durable, in the client's batch size, values sealed beforehand so
    // only the storage engine is timed. Two floors: (a) one row per message; (b) the rows the
    // client must keep per message: the message, its id index row (plain, as the client writes
    // it), and the batch's search postings (one row per distinct word), with the client's key
    // layout.
    let vault = Vault::new(&StoreKey::random());
    let conversation = [9u8; 32];
    let mut one_row = Vec::new();
    let mut same_rows = Vec::new();
    for (b, chunk) in plain.chunks(BATCH).enumerate() {
        let mut rows_a = Vec::new();
        let mut rows_b = Vec::new();
        let mut postings: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (j, p) in chunk.iter().enumerate() {
            let i = (b * BATCH + j) as u64;
            let c = Content::from_bytes(p).unwrap();
            let Some(Body::Text(t)) = c.body else { unreachable!() };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            let record = MessageRecord {
                version: RECORD_VERSION,
                id: id.to_vec(),
                conversation: conversation.to_vec(),
                sender: conversation.to_vec(),
                sender_device: 1,
                clock: i,
                body: t.body.clone(),
                sent_at_ms: t.sent_at_ms,
                outgoing: false,
                status: Status::Received as i32,
                problem_code: String::new(),
                problem: String::new(),
                ..Default::default()
            }
            .to_bytes();
            let key = keys::message(&vault, &conversation, i, &id);
            rows_a.push((
                Table::Messages,
                i.to_be_bytes().to_vec(),
                vault.seal(Table::Messages, &i.to_be_bytes(), &record),
            ));
            let idk = keys::message_id(&vault, &id).to_vec();
            rows_b.push((Table::MessageIds, idk, id_row::encode(&key)));
            rows_b.push((Table::Messages, key.clone(), vault.seal(Table::Messages, &key, &record)));
            for token in tokens(&t.body) {
                postings.entry(token).or_default().push(key.clone());
            }
        }
        for (token, message_keys) in postings {
            let k = keys::search(&vault, &token, &message_keys[0]);
            let v = PostingsRecord { version: RECORD_VERSION, message_keys }.to_bytes();
            rows_b.push((Table::SearchIndex, k.clone(), vault.seal(Table::SearchIndex, &k, &v)));
        }
        one_row.push(rows_a);
        same_rows.push(rows_b);
    }
    let mut timings = Vec::new();
    for batches in [one_row, same_rows] {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("floor.redb")).unwrap();
        let t = Instant::now();
        for rows in batches {
            let mut batch = Batch::new();
            for (table, k, v) in rows {
                batch.put(table, k, v);
            }
            store.commit(batch).await.unwrap();
        }
        timings.push(t.elapsed());
    }
    (decrypt, timings[0], timings[1])
}

/// The queued state every round starts from: the relay's data directory with N envelopes in
/// Bob's mailbox, and Bob's store from just before he went offline, each copied while its
/// owner was stopped cleanly.
struct Queued {
    relay: Relay,
    bob: Device,
    /// The conversation caught up: Alice's account id, or the group's id.
    conversation: String,
    group: bool,
    relay_snapshot: tempfile::TempDir,
    bob_snapshot: tempfile::TempDir,
}

async fn queue(n: usize, group: bool) -> Queued {
    let mut relay = Relay::temp_with(&[
        ("account-sends-per-second", "1000000"),
        ("account-send-burst", "1000000"),
        ("connection-requests-per-second", "1000000"),
        ("connection-request-burst", "1000000"),
        ("mailbox-max-envelopes", "1000000"),
    ]);
    let ((mut alice, alice_id), (mut bob, bob_id)) =
        Device::contacts(&relay, ("alice", "Alice"), ("bob", "Bob")).await;
    alice.c().send_text(&bob_id, "warm-up").await.unwrap();
    bob.wait_history(&alice_id, 1).await;
    bob.c().send_text(&alice_id, "warm-up reply").await.unwrap();
    alice.wait_history(&bob_id, 2).await;
    // The group: Bob holds Alice's sender key after the warm-up, as in a running group.
    let conversation = match group {
        false => alice_id.clone(),
        true => {
            let g =
                alice.c().create_group("bench", "", std::slice::from_ref(&bob_id)).await.unwrap();
            alice.c().send_text(&g, "warm-up").await.unwrap();
            while texts(&bob, &g).await < 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bob.c().send_text(&g, "warm-up reply").await.unwrap();
            while texts(&bob, &g).await < 2 || texts(&alice, &g).await < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            alice.c().flush(Duration::from_secs(60)).await.unwrap();
            bob.c().flush(Duration::from_secs(60)).await.unwrap();
            g
        }
    };
    let to = if group { conversation.clone() } else { bob_id.clone() };
    bob.stop().await;
    let bob_snapshot = tempfile::tempdir().unwrap();
    // Once the stopped client has let go of its store, the file can be copied.
    drop(bob.reopen_store().await);
    copy_dir(bob.storage.dir(), bob_snapshot.path());

    for i in 0..n {
        alice.c().send_text(&to, &text(i)).await.unwrap();
    }
    alice.c().flush(Duration::from_secs(600)).await.unwrap();
    // Alice goes offline too: on real devices her receipt processing runs on her own phone,
    // not on the two cores Bob and the relay share here.
    alice.stop().await;
    assert!(relay.terminate(), "relay did not shut down cleanly");
    let relay_snapshot = tempfile::tempdir().unwrap();
    copy_dir(relay.data_dir(), relay_snapshot.path());
    Queued { relay, bob, conversation, group, relay_snapshot, bob_snapshot }
}

/// How many texts (not group events) a device's history of `conversation` holds.
async fn texts(d: &Device, conversation: &str) -> usize {
    let page = d.c().messages(conversation, None, 100_000).await.unwrap();
    page.iter().filter(|m| m.kind == hush_core::MessageKind::Text).count()
}

/// What one round of the client's catch-up measured.
struct Round {
    client: Duration,
    connect: Duration,
    /// CPU time of the client process and of the relay during the catch-up (Linux only).
    cpu: Option<(Duration, Duration)>,
}

/// Restores the queued state, starts the relay on it, and times Bob's client from reopening
/// its store until the relay's `QueueEmpty` is processed; then checks that every message is in
/// history once, in order.
async fn catch_up(q: &mut Queued, n: usize) -> Round {
    // Once the stopped client has let go of its store, the file can be replaced.
    drop(q.bob.reopen_store().await);
    copy_dir(q.bob_snapshot.path(), q.bob.storage.dir());
    copy_dir(q.relay_snapshot.path(), q.relay.data_dir());
    q.relay.start_again();

    // A profiler's control FIFO (`perf record --control fifo:...`): sampling is enabled for the
    // catch-ups only, or only for the group ones (`PERF_CTL_GROUP_ONLY=1`) or the 1:1 ones
    // (`PERF_CTL_GROUP_ONLY=0`).
    let ctl = std::env::var("PERF_CTL")
        .ok()
        .filter(|_| std::env::var("PERF_CTL_GROUP_ONLY").map_or(true, |v| (v == "1") == q.group));
    if let Some(c) = &ctl {
        std::fs::write(c, "enable\n").unwrap();
    }
    let relay_pid = Some(q.relay.pid().to_string());
    let cpu = || (cpu_time("self"), relay_pid.as_deref().and_then(cpu_time));
    let cpu0 = cpu();
    let t = Instant::now();
    q.bob.restart().await;
    q.bob
        .expect("connected", |e| {
            matches!(e, Event::ConnectionChanged { state: ConnectionState::Connected })
                .then_some(())
        })
        .await;
    let connect = t.elapsed();
    q.bob.expect("caught up", |e| matches!(e, Event::CaughtUp).then_some(())).await;
    let client = t.elapsed();
    let cpu1 = cpu();
    if let Some(c) = &ctl {
        std::fs::write(c, "disable\n").unwrap();
    }
    let cpu = match (cpu0, cpu1) {
        ((Some(c0), Some(r0)), (Some(c1), Some(r1))) => {
            Some((c1.saturating_sub(c0), r1.saturating_sub(r0)))
        }
        _ => None,
    };
    let page: Vec<MessageView> =
        q.bob.c().messages(&q.conversation, None, u32::try_from(n + 10).unwrap()).await.unwrap();
    let page: Vec<&MessageView> =
        page.iter().filter(|m| m.kind == hush_core::MessageKind::Text).collect();
    assert_eq!(page.len(), n + 2, "every message stored once");
    assert_eq!(page.last().unwrap().body, text(n - 1));
    q.bob.stop().await;
    assert!(q.relay.terminate(), "relay did not shut down cleanly");
    Round { client, connect, cpu }
}

/// Copies every file of `from` into `to`, replacing each by a new file (a new inode, so a
/// handle someone still holds on the old one cannot write into the copy).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            let _ = std::fs::remove_file(&target);
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// CPU time a process has used (user + system, every thread it ever had), from Linux's
/// `/proc/<pid>/stat` in clock ticks of 10 ms (`USER_HZ` is 100 on Linux); `None` elsewhere.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 14th and 15th fields of the line, so the 12th and 13th after it.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let var = |name: &str, default: usize| {
        std::env::var(name).ok().map(|v| v.parse().unwrap()).unwrap_or(default)
    };
    let n = var("HUSH_CATCHUP_N", if full { 10_000 } else { 200 });
    let rounds = var("HUSH_CATCHUP_ROUNDS", if full { 9 } else { 2 });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut q = queue(n, false).await;
        let mut g = queue(n, true).await;
        let (mut ratios_a, mut ratios_b, mut clients, mut floors_b) = (vec![], vec![], vec![], vec![]);
        let (mut groups, mut group_ratios) = (vec![], vec![]);
        for r in 1..=rounds {
            // Floor and client alternate, so a slow stretch of the machine hits both alike.
            let (decrypt, one_row, same_rows) = floor(n).await;
            let round = catch_up(&mut q, n).await;
            let group_round = catch_up(&mut g, n).await;
            let group = ms(group_round.client);
            let group_cpu = group_round.cpu.map_or(String::new(), |(c, r)| {
                format!("; CPU: client process {:.0} ms, relay {:.0} ms", ms(c), ms(r))
            });
            println!(
                "group catch-up n={n} round {r}/{rounds}: client {group:.1} ms ({:.0} msg/s); 1:1 {:.1} ms; group / 1:1 {:.2}{group_cpu}",
                n as f64 / group_round.client.as_secs_f64(),
                ms(round.client),
                group / ms(round.client),
            );
            groups.push(group);
            group_ratios.push(group / ms(round.client));
            let client = ms(round.client);
            let (ra, rb) = (client / ms(decrypt + one_row), client / ms(decrypt + same_rows));
            let cpu = round.cpu.map_or(String::new(), |(c, r)| {
                format!("; CPU: client process {:.0} ms, relay {:.0} ms", ms(c), ms(r))
            });
            println!(
                "catch-up n={n} round {r}/{rounds}: client {client:.1} ms ({:.0} msg/s, connect {:.1} ms); ratchet {:.1} ms; raw writes (a) {:.1} ms, (b) {:.1} ms; ratio (a) {ra:.2}, (b) {rb:.2}{cpu}",
                n as f64 / round.client.as_secs_f64(),
                ms(round.connect),
                ms(decrypt),
                ms(one_row),
                ms(same_rows),
            );
            ratios_a.push(ra);
            ratios_b.push(rb);
            clients.push(client);
            floors_b.push(ms(decrypt + same_rows));
        }
        let met = ratios_b.iter().filter(|r| **r <= 1.5).count();
        println!(
            "catch-up n={n}, {rounds} rounds: client {}; floor ratchet + (b) {}; ratio to ratchet + (a) {}; ratio to ratchet + (b) {} ({met} of {rounds} rounds <= 1.5)",
            summary(&mut clients, " ms"),
            summary(&mut floors_b, " ms"),
            summary(&mut ratios_a, ""),
            summary(&mut ratios_b, ""),
        );
        let met = group_ratios.iter().filter(|r| **r <= 1.2).count();
        println!(
            "group catch-up n={n}, {rounds} rounds: client {}; group / 1:1 {} ({met} of {rounds} rounds <= 1.2)",
            summary(&mut groups, " ms"),
            summary(&mut group_ratios, ""),
        );
    });
}

/// "median (min-max)" of the values, each with `unit`.
fn summary(values: &mut [f64], unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let median = match values.len() {
        0 => f64::NAN,
        l if l % 2 == 1 => values[l / 2],
        l => (values[l / 2 - 1] + values[l / 2]) / 2.0,
    };
    let (lo, hi) =
        (values.first().copied().unwrap_or(f64::NAN), values.last().copied().unwrap_or(f64::NAN));
    if unit.is_empty() {
        format!("median {median:.2} ({lo:.2}-{hi:.2})")
    } else {
        format!("median {median:.1}{unit} ({lo:.1}-{hi:.1}{unit})")
    }
}
