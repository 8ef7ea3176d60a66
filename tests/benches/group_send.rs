//! Group sender benchmark (docs/BENCHMARKS.md "Groups"): what a group send costs the sending
//! client, and what a rotation after a removal costs one device.
//!
//! A real hush-core client sends to groups of 10, 100 and 1,000 member accounts with 3 devices
//! each, through the real relay binary on loopback (the members are protocol-level accounts
//! with real prekey bundles; they don't run clients, so every CPU tick of this process is the
//! sender's). Reported per send, after the members hold the sender's key:
//! - **sender CPU time** (user + system of this process over 20 sends, flushed) against the
//!   floor of **encoding the `Send` alone** (prost, one payload and 3 × members envelopes);
//! - **after one removal** (1,000 members): the next message rotates the key and hands it to
//!   every remaining device pairwise: time and CPU of that send, against its bound, the
//!   pairwise encryptions × devices (one `Session::encrypt` of the `GroupKey` content timed
//!   alone, times the device count).
//!
//! `cargo bench -p hush-e2e --bench group_send`; under `cargo test` a smoke size (10 members).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use hush_protocol::wire;
use hush_testkit::protocol::User;
use hush_testkit::{Device, Relay};
use prost::Message as _;

const SENDS: u32 = 20;

/// CPU time this process has used (user + system), from `/proc/self/stat` (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.get(stat.rfind(')').map_or(0, |i| i + 1)..).unwrap_or_default();
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("HUSH_GROUP_SIZES") {
        Ok(v) => v.split(',').map(|n| n.trim().parse().unwrap()).collect(),
        Err(_) if full => vec![10, 100, 1000],
        Err(_) => vec![10],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let relay = Relay::temp_with(&[
            ("account-sends-per-second", "1000000"),
            ("account-send-burst", "1000000"),
            ("connection-requests-per-second", "1000000"),
            ("connection-request-burst", "1000000"),
            ("registrations-per-second", "1000000"),
            ("registration-burst", "1000000"),
            ("account-bundles-per-second", "1000000"),
            ("account-bundle-burst", "1000000"),
            ("connections-per-ip", "100000"),
        ]);
        println!("## Group sends: the sender's CPU time per message\n");
        println!("| members (× 3 devices) | sender CPU per send | encoding the Send alone | ratio | wall time per send |");
        println!("|---|---|---|---|---|");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for &members in &sizes {
            // The sender is a member too: `members` in all.
            let (alice, group, users) = setup(&relay, members - 1).await;
            // `perf record --control fifo:…` with PERF_CTL naming the fifo profiles the sends only.
            let ctl = std::env::var("PERF_CTL").ok();
            if let Some(c) = &ctl {
                std::fs::write(c, "enable\n").unwrap();
            }
            let c0 = cpu_time();
            let t0 = Instant::now();
            for i in 0..SENDS {
                alice.c().send_text(&group, &format!("group message {i}, about a chat line long")).await.unwrap();
            }
            alice.c().flush(Duration::from_secs(300)).await.unwrap();
            let wall = t0.elapsed() / SENDS;
            sent(&alice, &group).await;
            let cpu = (cpu_time() - c0) / SENDS;
            if let Some(c) = &ctl {
                std::fs::write(c, "disable\n").unwrap();
            }
            let encode = encode_floor(&users);
            assert!(encode > Duration::ZERO);
            println!(
                "| {members} | {:.2} ms | {:.3} ms | {:.1}× | {:.1} ms |",
                ms(cpu),
                ms(encode),
                ms(cpu) / ms(encode),
                ms(wall)
            );
            if members == *sizes.last().unwrap() {
                rotation(&alice, &group, &users).await;
            }
            let mut alice = alice;
            alice.stop().await;
        }
    });
}

/// A sender client and a group of `members` protocol-level accounts (3 devices each, with
/// bundles on the relay), created and warmed up so every member device holds the key.
async fn setup(relay: &Relay, members: usize) -> (Device, String, Vec<User>) {
    let conn = relay.connect().await;
    let mut users: Vec<User> = (0..members).map(|_| User::new(3)).collect();
    for u in &mut users {
        u.register(&conn).await;
        for d in 1..=3 {
            let c = u.login(relay, d).await;
            let upload = u.devices[(d - 1) as usize].upload(0, 0);
            c.upload_prekeys(upload).await.unwrap();
            c.close();
        }
    }
    let alice = Device::create("sender", relay).await;
    let ids: Vec<String> = users.iter().map(|u| hex::encode(u.key().as_bytes())).collect();
    let group = alice.c().create_group("bench", "", &ids).await.unwrap();
    alice.c().send_text(&group, "warm-up").await.unwrap();
    alice.c().flush(Duration::from_secs(600)).await.unwrap();
    sent(&alice, &group).await;
    (alice, group, users)
}

/// Every message of the group reached the relay (a send refused for good would also leave the
/// outbox, and be measured as fast).
async fn sent(alice: &Device, group: &str) {
    for m in alice.c().messages(group, None, 1000).await.unwrap() {
        assert_eq!(m.status, hush_core::MessageStatus::Sent, "{m:?}");
    }
}

/// CPU time of encoding the `Send` of one group message to every member device: the part of a
/// send that must grow with the envelope list.
fn encode_floor(users: &[User]) -> Duration {
    let send = wire::Send {
        payloads: vec![vec![7; 2 + 41 + 60 + 16 + 64]],
        envelopes: users.iter().flat_map(|u| u.envelopes(None)).collect(),
        ephemeral: false,
    };
    let body = wire::request::Body::Send(send);
    let request = wire::Request { body: Some(body) };
    let rounds = 200u32;
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        total += std::hint::black_box(request.encode_to_vec()).len();
    }
    assert!(total > 0);
    t.elapsed() / rounds
}

/// One member removed; the next message rotates and hands the new key to every remaining
/// device pairwise.
async fn rotation(alice: &Device, group: &str, users: &[User]) {
    let removed = hex::encode(users[0].key().as_bytes());
    alice.c().remove_group_member(group, &removed).await.unwrap();
    alice.c().flush(Duration::from_secs(300)).await.unwrap();
    let devices = (users.len() - 1) * 3;
    let c0 = cpu_time();
    let t0 = Instant::now();
    alice.c().send_text(group, "the first message after the removal").await.unwrap();
    alice.c().flush(Duration::from_secs(600)).await.unwrap();
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    sent(alice, group).await;
    let per = pairwise_encrypt_cost();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\nAfter removing one of {} members: the next message rotates and hands the key to {devices} devices: {:.0} ms wall, {:.0} ms CPU; bound: {devices} pairwise encryptions × {:.1} µs = {:.0} ms\n",
        users.len(),
        ms(wall),
        ms(cpu),
        per.as_secs_f64() * 1e6,
        ms(per * u32::try_from(devices).unwrap()),
    );
}

/// One ratchet encryption of a `GroupKey` content (distribution + a short message), on an
/// established session.
fn pairwise_encrypt_cost() -> Duration {
    use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
    let mut rng = rand::rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let mut prekeys = DevicePrekeys::new();
    prekeys.generate_signed_prekey(&mut rng, &bob, 1);
    prekeys.generate_kem_prekeys(&mut rng, &bob, KemPreKeyKind::LastResort, 1);
    let bundle = prekeys.bundle(&bob, true).unwrap().verify().unwrap();
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut s = hush_core::Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let content = vec![5u8; 105 + 2 + 41 + 60 + 16 + 64 + 16];
    let rounds = 2000u32;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(s.encrypt(&mut rng, &content).unwrap());
    }
    t.elapsed() / rounds
}
