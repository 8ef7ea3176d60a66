//! Durability: what the relay acked survives SIGKILL, and is delivered exactly once after.

use std::collections::BTreeSet;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn acked_envelopes_survive_sigkill_and_are_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(
        dir.path(),
        &[("connection-request-burst", "100000"), ("account-send-burst", "100000")],
    );
    let mut alice = User::new(1);
    let mut bob = User::new(1);
    let c = relay.connect().await;
    alice.register(&c).await;
    bob.register(&c).await;

    // Bob receives and acks the first 50 before the crash: those must never come back.
    let a = alice.login(&relay, 1).await;
    for i in 0..50u32 {
        a.send(send_to(&bob, &i.to_be_bytes())).await.unwrap();
    }
    {
        let b = bob.login(&relay, 1).await;
        let mut sub = b.subscribe().await.unwrap();
        let got = drain(&mut sub).await;
        sub.ack(got.iter().map(|(s, _)| *s).collect()).await.unwrap();
        relay.wait_for_metric("hush_relay_envelopes_acked_total", 50).await;
    }
    // 8 concurrent senders, 25 sends each; every send that returned Ok was acked by the relay.
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let conn = alice.login(&relay, 1).await;
        let env = send_to(&bob, b"");
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25u32 {
                let mut s = env.clone();
                s.payloads[0] = (1000 + t * 100 + i).to_be_bytes().to_vec();
                conn.send(s).await.unwrap();
                acked.push(1000 + t * 100 + i);
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    relay.kill(); // SIGKILL right after the last ack.
    relay.restart_elsewhere();

    let b = bob.login(&relay, 1).await;
    let mut sub = b.subscribe().await.unwrap();
    let got = drain(&mut sub).await;
    let values: Vec<u32> =
        got.iter().map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap())).collect();
    let unique: BTreeSet<u32> = values.iter().copied().collect();
    assert_eq!(values.len(), unique.len(), "an envelope was delivered twice");
    assert_eq!(unique, acked, "every acked envelope, and nothing acked earlier by Bob");
    // Sequence numbers continue gap-free after the restart.
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (51..=250).collect::<Vec<u64>>());
}

/// A relay killed and restarted on the same address ends its predecessor's connections with a
/// stateless reset (its reset key survives in `relay.secret`): a client's next packet fails at
/// once, instead of after its 15 s idle timeout, and its reconnect goes through, all within
/// 2 s of the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_relay_resets_old_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(dir.path(), &[]);
    let mut bob = User::new(1);
    bob.register(&relay.connect().await).await;
    for round in 0..3 {
        let b = bob.login(&relay, 1).await;
        b.prekey_counts().await.unwrap();
        relay.restart();
        let restarted = std::time::Instant::now();
        // The old connection's next request meets the new process.
        let stale = tokio::time::timeout(std::time::Duration::from_secs(5), b.prekey_counts())
            .await
            .expect("no stateless reset: the request waited for the idle timeout");
        assert!(stale.is_err(), "round {round}: the old connection still answered");
        let again = bob.login(&relay, 1).await;
        again.prekey_counts().await.unwrap();
        let took = restarted.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "round {round}: {took:?}");
    }
}
