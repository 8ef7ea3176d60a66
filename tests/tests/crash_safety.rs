//! Crash safety of the outbox and the inbox, as a property: two real clients chat through the
//! in-memory relay while a generated plan crashes either of them after any number of store
//! commits (its store keeps exactly what was committed before, as a disk would), cuts every
//! link, or makes the relay carry out a request and lose its response. After the plan, both
//! restart cleanly and settle. Then every message whose `send_text` returned `Ok` is in both
//! histories exactly once, and no message whose `send_text` failed is anywhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::time::Duration;

use hush_testkit::{Device, MemoryRelay, WAIT};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// `count` messages from Alice (`false`) or Bob (`true`).
    Send { bob: bool, count: u8 },
    /// Restart that device with a store that crashes after `commits` more commits; it runs
    /// on (receiving, sending, acking) until then.
    Crash { bob: bool, commits: u8 },
    /// Cut every link (both clients reconnect).
    Sever,
    /// The relay carries out the request `after` requests from now but loses its response.
    LoseResponse { after: u8 },
    /// The relay stores the next send but loses its response.
    LoseSendResponse,
    /// The relay goes down or comes back up.
    Relay { up: bool },
    /// Let the clients work for a moment.
    Pause,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<bool>(), 1..4u8).prop_map(|(bob, count)| Step::Send { bob, count }),
        3 => (any::<bool>(), 0..12u8).prop_map(|(bob, commits)| Step::Crash { bob, commits }),
        1 => Just(Step::Sever),
        2 => (1..6u8).prop_map(|after| Step::LoseResponse { after }),
        1 => Just(Step::LoseSendResponse),
        1 => any::<bool>().prop_map(|up| Step::Relay { up }),
        1 => Just(Step::Pause),
    ]
}

/// What one device's sends came to.
#[derive(Default)]
struct Sent {
    ok: BTreeSet<String>,
    failed: BTreeSet<String>,
}

/// Restarts a device whose store crashed (or that is stopped) with a store that never does.
async fn revive(d: &mut Device) {
    if !d.is_running() || d.has_crashed() {
        d.restart().await;
    }
}

/// Runs a plan, checks the outcome, and returns the successful and failed sends of Alice
/// and Bob, and the relay.
async fn run(plan: Vec<Step>) -> ([Sent; 2], MemoryRelay) {
    let relay = MemoryRelay::new();
    let ((mut alice, alice_id), (mut bob, bob_id)) =
        Device::contacts(&relay, ("alice", "Alice"), ("bob", "Bob")).await;
    let mut sent = [Sent::default(), Sent::default()];
    let mut next = 0;
    for step in plan {
        match step {
            Step::Send { bob: from_bob, count } => {
                let (d, peer) =
                    if from_bob { (&mut bob, &alice_id) } else { (&mut alice, &bob_id) };
                revive(d).await;
                for _ in 0..count {
                    next += 1;
                    let text = format!("message {next}");
                    match d.c().send_text(peer, &text).await {
                        Ok(_) => sent[usize::from(from_bob)].ok.insert(text),
                        Err(_) => sent[usize::from(from_bob)].failed.insert(text),
                    };
                }
            }
            Step::Crash { bob: which, commits } => {
                let d = if which { &mut bob } else { &mut alice };
                d.restart_crashing_after(u64::from(commits)).await;
            }
            Step::Sever => relay.sever(),
            Step::Relay { up } => relay.set_down(!up),
            Step::LoseResponse { after } => {
                relay.lose_response(relay.requests() + u64::from(after))
            }
            Step::LoseSendResponse => relay.lose_next_send_response(),
            Step::Pause => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        // The other tasks get a turn between steps, as they would between user actions.
        tokio::task::yield_now().await;
    }
    // Both settle on stores that no longer crash, with the relay up.
    relay.set_down(false);
    for d in [&mut alice, &mut bob] {
        if !d.is_running() || d.may_crash() {
            d.restart().await;
        }
    }
    alice.c().flush(WAIT).await.unwrap();
    bob.c().flush(WAIT).await.unwrap();

    let want: BTreeSet<&String> = sent[0].ok.iter().chain(&sent[1].ok).collect();
    for (d, peer) in [(&alice, &bob_id), (&bob, &alice_id)] {
        let history = d.wait_history(peer, want.len()).await;
        let bodies: Vec<&String> = history.iter().map(|m| &m.body).collect();
        let unique: BTreeSet<&String> = bodies.iter().copied().collect();
        assert_eq!(unique.len(), bodies.len(), "{}: a message shows twice: {bodies:?}", d.name);
        assert_eq!(unique, want, "{}: history differs from what was sent", d.name);
    }
    // `want` holds the successful sends only, so the equality above also says that no failed
    // send arrived.
    alice.stop().await;
    bob.stop().await;
    (sent, relay)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HUSH_CRASH_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn outbox_and_inbox_lose_nothing_and_duplicate_nothing_across_crashes(
        plan in prop::collection::vec(step(), 1..10)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(plan));
    }
}

// The cases below pin down what the generated plans are there to reach.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_commit_fails_is_an_error_and_never_arrives() {
    // With the relay down, nothing but the send commits.
    let ([alice, _], _) = run(vec![
        Step::Relay { up: false },
        Step::Crash { bob: false, commits: 0 },
        Step::Send { bob: false, count: 1 },
        Step::Send { bob: false, count: 2 },
    ])
    .await;
    assert_eq!((alice.failed.len(), alice.ok.len()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_response_is_lost_is_resent_and_shows_once() {
    let (sent, relay) = run(vec![
        Step::Send { bob: false, count: 1 },
        Step::LoseSendResponse,
        Step::Send { bob: false, count: 1 },
    ])
    .await;
    assert_eq!(sent[0].ok.len(), 2);
    // The outbox resent the bytes it had committed: Bob's ratchet drops the copy.
    assert!(relay.resent_after_lost_response(), "the lost send was never resent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_commit_while_receiving_loses_nothing() {
    for commits in 0..8 {
        run(vec![Step::Crash { bob: true, commits }, Step::Send { bob: false, count: 4 }]).await;
    }
}

/// A connection lost in the middle of a catch-up, while one batch is committed and the next is
/// decrypted in memory but not yet committed: the memory that ran ahead of the store is
/// forgotten, so the relay's redelivery of the uncommitted batch decrypts again instead of
/// being taken for a duplicate and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_between_a_prepared_batch_and_its_commit_loses_nothing() {
    const N: usize = 2 * hush_core::client::MAX_BATCH + 300;
    let relay = MemoryRelay::new();
    let ((mut alice, alice_id), (mut bob, bob_id)) =
        Device::contacts(&relay, ("alice", "Alice"), ("bob", "Bob")).await;
    alice.c().send_text(&bob_id, "hello").await.unwrap();
    bob.wait_history(&alice_id, 1).await;
    bob.stop().await;
    for i in 0..N {
        alice.c().send_text(&bob_id, &format!("queued {i}")).await.unwrap();
    }
    alice.c().flush(WAIT).await.unwrap();
    alice.stop().await;
    bob.restart().await;
    // The first batch's events come after its commit, while the next batch is already
    // decrypted in memory; cutting the connection now ends the run before that one commits.
    bob.expect("the first queued message", |e| {
        matches!(e, hush_core::Event::MessageReceived { .. }).then_some(())
    })
    .await;
    relay.sever();
    let history = bob.wait_history(&alice_id, N + 1).await;
    let unique: BTreeSet<&String> = history.iter().map(|m| &m.body).collect();
    assert_eq!(unique.len(), N + 1, "every message once");
    bob.stop().await;
}
