//! Group chats between real clients (docs/PROTOCOL.md §17): on the in-memory relay and end to
//! end on the real relay binary. Three accounts with two devices each create, chat, add,
//! remove, leave, rename and promote; concurrent admin changes converge; an offline member
//! catches up in order; a newly linked device gets the next message; a removed member cannot
//! read what is sent after its removal even when handed the ciphertext.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use hush_core::{Event, MessageKind, MessageStatus, MessageView};
use hush_testkit::{Device, Joinable, MemoryRelay, WAIT, on_both_networks};

/// Waits until `f` holds for the device's view of the group (which it may not know yet).
async fn wait_group(
    d: &Device,
    group: &str,
    what: &str,
    f: impl Fn(&hush_core::GroupView) -> bool,
) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(g) = d.c().group(group).await
            && f(&g)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{}: group never got to: {what} (now {:?})",
            d.name,
            d.c().group(group).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the device's history of the group holds `n` texts; returns the whole timeline.
async fn wait_texts(d: &Device, group: &str, n: usize) -> Vec<MessageView> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let page = d.c().messages(group, None, 1000).await.unwrap();
        if texts(&page).len() >= n {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{}: {} texts in the group, want {n}: {:?}",
            d.name,
            texts(&page).len(),
            texts(&page)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn texts(page: &[MessageView]) -> Vec<String> {
    page.iter().filter(|m| m.kind == MessageKind::Text).map(|m| m.body.clone()).collect()
}

/// The timeline as (kind, id) pairs: what must be identical on every device.
fn order(page: &[MessageView]) -> Vec<(MessageKind, String)> {
    page.iter().map(|m| (m.kind, m.id.clone())).collect()
}

async fn status_of(d: &Device, group: &str, id: &str) -> MessageStatus {
    let page = d.c().messages(group, None, 1000).await.unwrap();
    page.iter().find(|m| m.id == id).map(|m| m.status).expect("message in history")
}

async fn wait_status(d: &Device, group: &str, id: &str, want: MessageStatus) {
    let until = tokio::time::Instant::now() + WAIT;
    while status_of(d, group, id).await != want {
        assert!(
            tokio::time::Instant::now() < until,
            "{}: status {:?}, want {want:?}",
            d.name,
            status_of(d, group, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_networks!(three_accounts_with_two_devices_each);
async fn three_accounts_with_two_devices_each(net: impl Joinable) {
    let alice = Device::create("alice-phone", &net).await;
    let alice2 = Device::link("alice-laptop", &alice).await;
    let bob = Device::create("bob-phone", &net).await;
    let bob2 = Device::link("bob-laptop", &bob).await;
    let carol = Device::create("carol-phone", &net).await;
    let carol2 = Device::link("carol-laptop", &carol).await;
    let (a, b, c) = (alice.id().await, bob.id().await, carol.id().await);

    // Create with Bob; every device of both accounts learns the group.
    let g = alice.c().create_group("Trip", "summer", std::slice::from_ref(&b)).await.unwrap();
    for d in [&alice2, &bob, &bob2] {
        wait_group(d, &g, "created with Alice and Bob", |v| {
            v.name == "Trip" && v.members.len() == 2 && v.am_member
        })
        .await;
    }
    let view = bob.c().group(&g).await.unwrap();
    assert!(view.members.iter().any(|m| m.account_id == a && m.admin));
    assert!(!view.am_admin);
    assert_eq!(bob.c().rename_group(&g, "mine").await.unwrap_err().code(), "not_admin");

    // Chat: every device, the sender's other device included, shows the same order.
    let m1 = alice.c().send_text(&g, "hello group").await.unwrap();
    wait_texts(&bob2, &g, 1).await;
    bob2.c().send_text(&g, "hi from bob's laptop").await.unwrap();
    for d in [&alice, &alice2, &bob, &bob2] {
        wait_texts(d, &g, 2).await;
    }
    // Receipts per member: Bob has it, then read it.
    wait_status(&alice, &g, &m1, MessageStatus::Delivered).await;
    let r = alice.c().group_receipts(&m1).await.unwrap();
    assert_eq!((r.members, r.delivered_to.clone()), (1, vec![b.clone()]));
    bob.c().mark_read(&g).await.unwrap();
    wait_status(&alice, &g, &m1, MessageStatus::Read).await;
    wait_status(&alice2, &g, &m1, MessageStatus::Read).await;

    // Add Carol: both her devices get the group and the next messages.
    alice.c().add_group_members(&g, std::slice::from_ref(&c)).await.unwrap();
    for d in [&carol, &carol2, &bob2] {
        wait_group(d, &g, "Carol added", |v| v.members.len() == 3).await;
    }
    carol2.c().send_text(&g, "thanks for adding me").await.unwrap();
    alice.c().rename_group(&g, "Trip 2026").await.unwrap();
    alice.c().promote_group_member(&g, &b).await.unwrap();
    for (d, n) in [(&alice, 3), (&alice2, 3), (&bob, 3), (&bob2, 3), (&carol, 1), (&carol2, 1)] {
        wait_texts(d, &g, n).await;
        wait_group(d, &g, "renamed, Bob admin", |v| {
            v.name == "Trip 2026" && v.members.iter().any(|m| m.account_id == b && m.admin)
        })
        .await;
    }
    let m_before = alice.c().send_text(&g, "all three of us").await.unwrap();
    wait_texts(&carol, &g, 2).await;

    // Bob, now an admin, removes Carol; she learns it, and sees nothing sent after.
    bob.c().remove_group_member(&g, &c).await.unwrap();
    for d in [&carol, &carol2, &alice] {
        wait_group(d, &g, "Carol removed", |v| v.members.len() == 2).await;
    }
    assert!(!carol.c().group(&g).await.unwrap().am_member);
    assert_eq!(carol.c().send_text(&g, "still here?").await.unwrap_err().code(), "not_a_member");
    alice.c().send_text(&g, "carol is gone").await.unwrap();
    for d in [&alice, &alice2, &bob, &bob2] {
        wait_texts(d, &g, 5).await;
    }
    // Bob leaves: only Alice stays.
    bob2.c().leave_group(&g).await.unwrap();
    wait_group(&alice, &g, "Bob left", |v| v.members.len() == 1).await;
    wait_group(&bob, &g, "Bob left", |v| !v.am_member).await;

    // The same timeline, messages and group events, on every device that stayed to the end.
    alice.c().send_text(&g, "alone now").await.unwrap();
    let on_alice = wait_texts(&alice, &g, 6).await;
    let on_alice2 = wait_texts(&alice2, &g, 6).await;
    assert_eq!(order(&on_alice), order(&on_alice2));
    assert_eq!(
        texts(&on_alice),
        [
            "hello group",
            "hi from bob's laptop",
            "thanks for adding me",
            "all three of us",
            "carol is gone",
            "alone now"
        ]
    );
    // Bob's devices have everything up to his leaving, in the same places.
    let on_bob = bob.c().messages(&g, None, 1000).await.unwrap();
    let on_bob2 = bob2.c().messages(&g, None, 1000).await.unwrap();
    assert_eq!(order(&on_bob), order(&on_bob2));
    assert_eq!(order(&on_bob)[..], order(&on_alice)[..on_bob.len()]);
    // Carol's devices stop at her removal.
    let on_carol = carol.c().messages(&g, None, 1000).await.unwrap();
    assert!(!texts(&on_carol).contains(&"carol is gone".to_string()));
    assert!(texts(&on_carol).contains(&"all three of us".to_string()));
    assert!(on_carol.iter().any(|m| m.id == m_before));
    let events = on_alice.iter().filter(|m| m.kind == MessageKind::GroupEvent).count();
    assert_eq!(events, 6, "create, add, rename, promote, remove, leave on the timeline");
    let convs = alice.c().conversations().await.unwrap();
    assert!(convs.iter().any(|v| v.peer == g && v.is_group && v.name == "Trip 2026"));
    for mut d in [alice, alice2, bob, bob2, carol, carol2] {
        d.stop().await;
    }
}

on_both_networks!(concurrent_admin_changes_converge);
async fn concurrent_admin_changes_converge(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let bob = Device::create("bob", &net).await;
    let carol = Device::create("carol", &net).await;
    let dave = Device::create("dave", &net).await;
    let (b, c, d) = (bob.id().await, carol.id().await, dave.id().await);
    let g = alice.c().create_group("G", "", &[b.clone(), c.clone()]).await.unwrap();
    alice.c().promote_group_member(&g, &b).await.unwrap();
    wait_group(&bob, &g, "Bob admin", |v| v.am_admin).await;
    wait_group(&carol, &g, "Bob admin", |v| v.members.iter().filter(|m| m.admin).count() == 2)
        .await;
    // Two admins change the group at the same moment, from the same epoch.
    let (x, y) = tokio::join!(
        alice.c().rename_group(&g, "by alice"),
        bob.c().add_group_members(&g, std::slice::from_ref(&d))
    );
    x.unwrap();
    y.unwrap();
    // Whichever wins the epoch, the other is re-issued on top: both take effect, everywhere.
    for dev in [&alice, &bob, &carol, &dave] {
        wait_group(dev, &g, "both changes", |v| v.name == "by alice" && v.members.len() == 4).await;
    }
    let mut views = Vec::new();
    for dev in [&alice, &bob, &carol, &dave] {
        let v = dev.c().group(&g).await.unwrap();
        views.push((v.name, v.epoch, v.members));
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "one state everywhere: {views:?}");
    let timeline = |p: Vec<MessageView>| order(&p);
    let ta = timeline(alice.c().messages(&g, None, 100).await.unwrap());
    let tc = timeline(carol.c().messages(&g, None, 100).await.unwrap());
    let tb = timeline(bob.c().messages(&g, None, 100).await.unwrap());
    assert_eq!(ta, tc, "the same group events in the same places");
    assert_eq!(ta, tb, "the beaten change left the timeline");
    for mut dev in [alice, bob, carol, dave] {
        dev.stop().await;
    }
}

on_both_networks!(an_offline_member_catches_up_in_order);
async fn an_offline_member_catches_up_in_order(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let mut bob = Device::create("bob", &net).await;
    let carol = Device::create("carol", &net).await;
    let (b, c) = (bob.id().await, carol.id().await);
    let g = alice.c().create_group("G", "", std::slice::from_ref(&b)).await.unwrap();
    wait_group(&bob, &g, "created", |v| v.am_member).await;
    bob.stop().await;
    for i in 0..50 {
        alice.c().send_text(&g, &format!("m{i}")).await.unwrap();
        if i == 20 {
            alice.c().add_group_members(&g, std::slice::from_ref(&c)).await.unwrap();
        }
        if i == 30 {
            alice.c().rename_group(&g, "renamed while bob was away").await.unwrap();
        }
    }
    alice.c().flush(WAIT).await.unwrap();
    bob.restart().await;
    let on_bob = wait_texts(&bob, &g, 50).await;
    assert_eq!(texts(&on_bob), (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let on_alice = alice.c().messages(&g, None, 1000).await.unwrap();
    assert_eq!(order(&on_bob), order(&on_alice), "messages and changes interleave identically");
    let v = bob.c().group(&g).await.unwrap();
    assert_eq!((v.name.as_str(), v.members.len()), ("renamed while bob was away", 3));
    assert_eq!(bob.c().conversations().await.unwrap()[0].unread, 50);
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}

on_both_networks!(a_newly_linked_device_gets_the_next_group_message);
async fn a_newly_linked_device_gets_the_next_group_message(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let bob = Device::create("bob", &net).await;
    let b = bob.id().await;
    let g = alice.c().create_group("G", "", std::slice::from_ref(&b)).await.unwrap();
    alice.c().send_text(&g, "before the link").await.unwrap();
    wait_texts(&bob, &g, 1).await;
    let bob2 = Device::link("bob-new-laptop", &bob).await;
    alice.c().send_text(&g, "after the link").await.unwrap();
    let page = wait_texts(&bob2, &g, 1).await;
    assert_eq!(texts(&page), ["after the link"]);
    // Its own other device tells it what the group is.
    wait_group(&bob2, &g, "state from bob's phone", |v| v.name == "G" && v.am_member).await;
    bob2.c().send_text(&g, "new laptop here").await.unwrap();
    wait_texts(&alice, &g, 3).await;
    for mut d in [alice, bob, bob2] {
        d.stop().await;
    }
}

/// The relay (or whoever holds its disk) hands a removed member the ciphertext of a message sent
/// after its removal: it can't open it, and nothing of its state changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_read_later_messages_even_given_the_ciphertext() {
    let net = MemoryRelay::new();
    let alice = Device::create("alice", &net).await;
    let bob = Device::create("bob", &net).await;
    let mut carol = Device::create("carol", &net).await;
    let (a, b, c) = (alice.id().await, bob.id().await, carol.id().await);
    let g = alice.c().create_group("G", "", &[b.clone(), c.clone()]).await.unwrap();
    alice.c().send_text(&g, "for all three").await.unwrap();
    wait_texts(&carol, &g, 1).await;
    alice.c().remove_group_member(&g, &c).await.unwrap();
    wait_group(&carol, &g, "removed", |v| !v.am_member).await;
    alice.c().send_text(&g, "secret after removal").await.unwrap();
    wait_texts(&bob, &g, 2).await;

    // Everything the relay stored for Bob's device from Alice since Carol's removal.
    let bob_key: [u8; 32] = hex::decode(&b).unwrap().try_into().unwrap();
    let carol_key: [u8; 32] = hex::decode(&c).unwrap().try_into().unwrap();
    let to_bob = net.stored_for(bob_key, 1);
    let later: Vec<_> =
        to_bob.into_iter().filter(|d| d.sender_account == hex::decode(&a).unwrap()).collect();
    let last = later.last().unwrap().clone();
    let before_events = carol.c().messages(&g, None, 100).await.unwrap();
    net.inject(carol_key, 1, last);
    let code = carol
        .expect("refused", |e| match e {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await;
    // A pairwise GroupKey for Bob doesn't open on Carol's sessions; a shared payload is under a
    // key she never got.
    assert!(
        ["unknown_sender_key", "undecryptable", "no_session"].contains(&code.as_str()),
        "{code}"
    );
    assert_eq!(carol.c().messages(&g, None, 100).await.unwrap(), before_events);
    // The shared payload of the next message (Bob already holds the new key) too.
    alice.c().send_text(&g, "another secret").await.unwrap();
    wait_texts(&bob, &g, 3).await;
    let shared = net.stored_for(bob_key, 1).last().unwrap().clone();
    assert_eq!(&shared.payload[..2], [1, 3], "a shared group payload");
    net.inject(carol_key, 1, shared);
    let code = carol
        .expect("refused", |e| match e {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(code, "unknown_sender_key");
    assert_eq!(carol.c().messages(&g, None, 100).await.unwrap(), before_events);
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}

/// Bad group input reaching a member: a tampered group message (bad signature), a replayed
/// one, and one for a group it doesn't know. Each is refused with its code, changes nothing,
/// and the good message delivered in the same batch is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_input_is_refused_and_loses_nothing_else() {
    let net = MemoryRelay::new();
    let alice = Device::create("alice", &net).await;
    let mut bob = Device::create("bob", &net).await;
    let mut stranger = Device::create("stranger", &net).await;
    let (a, b, s) = (alice.id().await, bob.id().await, stranger.id().await);
    let key = |id: &str| -> [u8; 32] { hex::decode(id).unwrap().try_into().unwrap() };
    let g = alice.c().create_group("G", "", std::slice::from_ref(&b)).await.unwrap();
    alice.c().send_text(&g, "one").await.unwrap();
    alice.c().send_text(&g, "two").await.unwrap();
    wait_texts(&bob, &g, 2).await;
    let from_alice: Vec<_> = net
        .stored_for(key(&b), 1)
        .into_iter()
        .filter(|d| d.sender_account == key(&a) && d.payload.starts_with(&[1, 3]))
        .collect();
    let shared = from_alice.last().unwrap().clone();
    let before = bob.c().group(&g).await.unwrap();

    // Tampered (a flipped ciphertext byte breaks the signature), then a replay, then a good one.
    bob.stop().await;
    let mut tampered = shared.clone();
    tampered.payload[60] ^= 1;
    net.inject(key(&b), 1, tampered);
    net.inject(key(&b), 1, shared.clone());
    alice.c().send_text(&g, "three").await.unwrap();
    alice.c().flush(WAIT).await.unwrap();
    bob.restart().await;
    let code = bob
        .expect("bad signature", |e| match e {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(code, "bad_signature");
    let page = wait_texts(&bob, &g, 3).await;
    assert_eq!(texts(&page), ["one", "two", "three"], "the replay is dropped, the good one kept");
    assert_eq!(bob.c().group(&g).await.unwrap(), before);

    // A group message for a group the stranger doesn't know: refused, nothing stored.
    net.inject(key(&s), 1, shared);
    let code = stranger
        .expect("unknown key", |e| match e {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(code, "unknown_sender_key");
    assert_eq!(stranger.c().group(&g).await.unwrap_err().code(), "unknown_group");
    assert!(stranger.c().groups().await.unwrap().is_empty());
    for mut d in [alice, bob, stranger] {
        d.stop().await;
    }
}

on_both_networks!(changes_made_back_to_back_reach_everyone_they_concern);
/// A rename and then a removal made at once: the removed member still gets the rename (it was a
/// member when it was made), then its removal, in order.
async fn changes_made_back_to_back_reach_everyone_they_concern(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let bob = Device::create("bob", &net).await;
    let carol = Device::create("carol", &net).await;
    let (b, c) = (bob.id().await, carol.id().await);
    let g = alice.c().create_group("G", "", &[b.clone(), c.clone()]).await.unwrap();
    wait_group(&carol, &g, "created", |v| v.am_member).await;
    alice.c().rename_group(&g, "renamed").await.unwrap();
    alice.c().remove_group_member(&g, &c).await.unwrap();
    wait_group(&carol, &g, "renamed, then removed", |v| v.name == "renamed" && !v.am_member).await;
    wait_group(&bob, &g, "renamed, Carol removed", |v| v.name == "renamed" && v.members.len() == 2)
        .await;
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}

on_both_networks!(typing_reaches_the_members_online);
/// Typing in a group reaches the members' online devices with who is typing. Before the typist's
/// first message (no sender key handed out yet) it sends nothing and is no error; a removed
/// member can't type in the group.
async fn typing_reaches_the_members_online(net: impl Joinable) {
    let alice = Device::create("alice", &net).await;
    let mut bob = Device::create("bob", &net).await;
    let mut carol = Device::create("carol", &net).await;
    let (a, b, c) = (alice.id().await, bob.id().await, carol.id().await);
    let g = alice.c().create_group("G", "", &[b.clone(), c.clone()]).await.unwrap();
    wait_group(&bob, &g, "created", |v| v.am_member).await;
    wait_group(&carol, &g, "created", |v| v.am_member).await;
    bob.c().set_typing(&g, true).await.unwrap();

    alice.c().send_text(&g, "hello").await.unwrap();
    wait_texts(&bob, &g, 1).await;
    wait_texts(&carol, &g, 1).await;
    alice.c().set_typing(&g, true).await.unwrap();
    for d in [&mut bob, &mut carol] {
        let seen = d
            .expect("Alice typing", |e| match e {
                Event::Typing { conversation, from, started: true } => {
                    Some((conversation.clone(), from.clone()))
                }
                _ => None,
            })
            .await;
        assert_eq!(seen, (g.clone(), a.clone()));
    }
    alice.c().set_typing(&g, false).await.unwrap();
    bob.expect("Alice stopped", |e| {
        matches!(e, Event::Typing { started: false, .. }).then_some(())
    })
    .await;

    alice.c().remove_group_member(&g, &c).await.unwrap();
    wait_group(&carol, &g, "removed", |v| !v.am_member).await;
    assert_eq!(carol.c().set_typing(&g, true).await.unwrap_err().code(), "not_a_member");
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}

/// A sender key handed out by someone who is no longer a member: the relay holds back Carol's
/// key and her message under it, and hands them to Bob after her removal. Bob refuses both
/// (`not_a_member`, then `unknown_sender_key`: he kept no key of hers), and keeps Alice's
/// messages on either side of them in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_key_from_a_non_member_is_refused() {
    let net = MemoryRelay::new();
    let alice = Device::create("alice", &net).await;
    let mut bob = Device::create("bob", &net).await;
    let carol = Device::create("carol", &net).await;
    let (b, c) = (bob.id().await, carol.id().await);
    let key = |id: &str| -> [u8; 32] { hex::decode(id).unwrap().try_into().unwrap() };
    let g = alice.c().create_group("G", "", &[b.clone(), c.clone()]).await.unwrap();
    wait_group(&bob, &g, "created", |v| v.am_member).await;
    wait_group(&carol, &g, "created", |v| v.am_member).await;

    bob.stop().await;
    carol.c().send_text(&g, "from carol").await.unwrap();
    carol.c().flush(WAIT).await.unwrap();
    let held = net.withhold(key(&b), 1, key(&c));
    assert!(held.iter().any(|d| d.payload.starts_with(&[1, 3])), "her message");
    assert!(held.iter().any(|d| !d.payload.starts_with(&[1, 3])), "her key, pairwise");
    alice.c().remove_group_member(&g, &c).await.unwrap();
    alice.c().send_text(&g, "after").await.unwrap();
    alice.c().flush(WAIT).await.unwrap();
    for d in held {
        net.inject(key(&b), 1, d);
    }
    alice.c().send_text(&g, "later").await.unwrap();
    alice.c().flush(WAIT).await.unwrap();

    bob.restart().await;
    let mut codes = Vec::new();
    while codes.len() < 2 {
        let code = bob
            .expect("refusals", |e| match e {
                Event::Error { code, .. } => Some(code.clone()),
                _ => None,
            })
            .await;
        codes.push(code);
    }
    assert_eq!(codes, ["not_a_member", "unknown_sender_key"]);
    let page = wait_texts(&bob, &g, 2).await;
    assert_eq!(texts(&page), ["after", "later"]);
    let view = bob.c().group(&g).await.unwrap();
    assert!(!view.members.iter().any(|m| m.account_id == c), "{view:?}");
    for mut d in [alice, bob, carol] {
        d.stop().await;
    }
}
