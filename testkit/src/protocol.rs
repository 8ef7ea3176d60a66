//! Test accounts that speak the relay protocol directly (hush-net over QUIC), with their
//! private keys in hand: for tests and benches of the relay itself, below the client SDK.

use std::time::Duration;

use hush_net::{Connection, NetError, Subscription};
use hush_prekeys::{DevicePrekeys, IdentityKeyPair, KemPreKeyKind};
use hush_protocol::wire::{self, server_push};
use hush_protocol::{AccountKey, AccountKeyPair, DeviceEntry, DeviceList, ErrorCode};

use crate::relay::Relay;

/// One device of a test account, with its private keys.
pub struct Device {
    /// Device id within the account.
    pub id: u32,
    /// Its registration id.
    pub registration_id: u32,
    /// Its identity key pair.
    pub identity: IdentityKeyPair,
    /// Its prekey store.
    pub prekeys: DevicePrekeys,
    /// Its current signed prekey.
    pub signed: hush_prekeys::SignedPreKey,
    /// Its last-resort KEM prekey.
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
    /// The account key pair.
    pub account: AccountKeyPair,
    /// Its devices.
    pub devices: Vec<Device>,
    /// The version of the last device list made.
    pub version: u64,
}

impl User {
    /// An account with `devices` devices (not registered yet).
    pub fn new(devices: u32) -> Self {
        let mut rng = rand::rng();
        let mut u =
            Self { account: AccountKeyPair::generate(&mut rng), devices: Vec::new(), version: 0 };
        for _ in 0..devices {
            u.add_device();
        }
        u
    }

    /// The account's public key.
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

    /// Device `id`.
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
        DeviceList::sign(&self.account, self.version, entries).expect("sign device list")
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
