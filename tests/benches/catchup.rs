//! Catch-up benchmark (docs/BENCHMARKS.md): a device offline while N messages queue up on the
//! real relay reconnects; we time draining, decrypting, storing and acking all of them, and
//! compare with a floor measured in the same run: pure ratchet decryption of N messages of the
//! same size plus raw store writes of the same rows in the same batch size.
//!
//! `cargo bench -p hush-e2e --bench catchup` runs N = 10,000; under `cargo test` it runs a
//! small smoke size. `HUSH_CATCHUP_N` overrides N.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use hush_core::Session;
use hush_core::content::{Content, Text, content::Body};
use std::collections::BTreeMap;

use hush_core::records::{MessageRecord, PostingsRecord, RECORD_VERSION, Record, Status, keys};
use hush_core::search::tokens;
use hush_core::store::{Batch, RedbStore, Store, Table};
use hush_core::vault::{StoreKey, Vault};
use hush_core::{ConnectionState, Event, MessageView};
use hush_e2e::{Device, Relay};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};

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
    // client must keep per message: the message, its id index row, and the batch's search
    // postings (one row per distinct word), with the client's key layout.
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
            }
            .to_bytes();
            let key = keys::message(&vault, &conversation, i, &id);
            rows_a.push((
                Table::Messages,
                i.to_be_bytes().to_vec(),
                vault.seal(Table::Messages, &i.to_be_bytes(), &record),
            ));
            let idk = keys::message_id(&vault, &id).to_vec();
            rows_b.push((
                Table::MessageIds,
                idk.clone(),
                vault.seal(Table::MessageIds, &idk, &key),
            ));
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

async fn catch_up(n: usize) -> Duration {
    let relay = Relay::start_with(&[
        ("account-sends-per-second", "1000000"),
        ("account-send-burst", "1000000"),
        ("connection-requests-per-second", "1000000"),
        ("connection-request-burst", "1000000"),
        ("mailbox-max-envelopes", "1000000"),
    ]);
    let mut alice = Device::create("alice", &relay).await;
    let mut bob = Device::create("bob", &relay).await;
    let (alice_id, bob_id) = (alice.id().await, bob.id().await);
    alice.c().add_contact(&bob_id, "Bob").await.unwrap();
    bob.c().add_contact(&alice_id, "Alice").await.unwrap();
    alice.c().send_text(&bob_id, "warm-up").await.unwrap();
    bob.wait_history(&alice_id, 1).await;
    bob.c().send_text(&alice_id, "warm-up reply").await.unwrap();
    alice.wait_history(&bob_id, 2).await;
    bob.stop().await;

    for i in 0..n {
        alice.c().send_text(&bob_id, &text(i)).await.unwrap();
    }
    alice.c().flush(Duration::from_secs(600)).await.unwrap();
    // Alice goes offline too: on real devices her receipt processing runs on her own phone,
    // not on the two cores Bob and the relay share here.
    alice.stop().await;

    let ctl = std::env::var("PERF_CTL").ok();
    if let Some(c) = &ctl {
        std::fs::write(c, "enable\n").unwrap();
    }
    let relay_pid = relay.pid().map(|p| p.to_string());
    let cpu = || (cpu_time("self"), relay_pid.as_deref().and_then(cpu_time));
    let cpu0 = cpu();
    let t = Instant::now();
    bob.restart().await;
    bob.expect("connected", |e| {
        matches!(e, Event::ConnectionChanged { state: ConnectionState::Connected }).then_some(())
    })
    .await;
    let connect = t.elapsed();
    bob.expect("caught up", |e| matches!(e, Event::CaughtUp).then_some(())).await;
    let elapsed = t.elapsed();
    let cpu1 = cpu();
    if let Some(c) = &ctl {
        std::fs::write(c, "disable\n").unwrap();
    }
    println!(
        "catch-up n={n}: reopen + connect + auth took {:.1} ms of it",
        connect.as_secs_f64() * 1e3
    );
    if let ((Some(c0), Some(r0)), (Some(c1), Some(r1))) = (cpu0, cpu1) {
        // CPU time is steadier than wall time on a shared machine, and splits the work between
        // the two processes (the bench process's own figure includes its idle Alice).
        println!(
            "catch-up n={n}: CPU time: client process {:.1} ms, relay {:.1} ms",
            c1.saturating_sub(c0).as_secs_f64() * 1e3,
            r1.saturating_sub(r0).as_secs_f64() * 1e3
        );
    }
    let page: Vec<MessageView> =
        bob.c().messages(&alice_id, None, u32::try_from(n + 10).unwrap()).await.unwrap();
    assert_eq!(page.len(), n + 2, "every message stored once");
    assert_eq!(page.last().unwrap().body, text(n - 1));
    bob.stop().await;
    elapsed
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
    let n: usize = std::env::var("HUSH_CATCHUP_N")
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(if full { 10_000 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (decrypt, one_row, same_rows) = floor(n).await;
        let client = catch_up(n).await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "catch-up n={n}: client {:.1} ms ({:.0} msg/s); ratchet {:.1} ms; raw writes: one row per message {:.1} ms, the client's rows {:.1} ms",
            ms(client),
            n as f64 / client.as_secs_f64(),
            ms(decrypt),
            ms(one_row),
            ms(same_rows),
        );
        println!(
            "catch-up n={n}: ratio to floor (a) ratchet + one row per message {:.2}; to floor (b) ratchet + the client's rows {:.2}",
            ms(client) / ms(decrypt + one_row),
            ms(client) / ms(decrypt + same_rows),
        );
    });
}
