//! Real [`hush_core::Client`]s as test devices, on either network: the real relay binary over
//! QUIC (each device with its own redb store in its own directory), or an in-memory relay
//! (each device with an in-memory store that can be made to crash).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hush_core::store::{MemoryStore, RedbStore, Store};
use hush_core::transport::{Connector, QuicConnector};
use hush_core::{Client, ClientConfig, ClientOptions, Event, EventStream, StoreKey};

use crate::crash::CrashStore;
use crate::memory::MemoryRelay;
use crate::relay::Relay;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(60);

/// Client options for tests: quick reconnects.
pub fn options() -> ClientOptions {
    ClientOptions {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

/// A network devices join: how they reach the relay and where they keep their store.
#[derive(Clone)]
pub enum Network {
    /// The real relay over QUIC; stores on disk.
    Quic {
        /// Where the relay listens.
        addr: std::net::SocketAddr,
        /// Its certificate pin.
        pin: [u8; 32],
    },
    /// An in-memory relay; stores in memory.
    Memory(MemoryRelay),
}

impl Network {
    /// A new connector to this network's relay.
    pub fn connector(&self) -> Arc<dyn Connector> {
        match self {
            Self::Quic { addr, pin } => Arc::new(QuicConnector::pinned(*addr, *pin)),
            Self::Memory(relay) => relay.connector(),
        }
    }
}

/// Something devices can join.
pub trait Joinable {
    /// The network.
    fn network(&self) -> Network;
}

impl Joinable for Relay {
    fn network(&self) -> Network {
        Network::Quic { addr: self.quic, pin: self.pin }
    }
}

impl<T: Joinable + ?Sized> Joinable for &T {
    fn network(&self) -> Network {
        (**self).network()
    }
}

impl Joinable for Network {
    fn network(&self) -> Network {
        self.clone()
    }
}

impl Joinable for MemoryRelay {
    fn network(&self) -> Network {
        Network::Memory(self.clone())
    }
}

/// Where a device keeps its data between runs of its client.
pub enum Storage {
    /// A redb file in a directory of its own.
    Disk(tempfile::TempDir),
    /// An in-memory store ("the disk"), opened through a [`CrashStore`] by each run.
    Memory(Arc<MemoryStore>),
}

impl Storage {
    fn new(network: &Network) -> Self {
        match network {
            Network::Quic { .. } => Self::Disk(tempfile::tempdir().expect("store directory")),
            Network::Memory(_) => Self::Memory(Arc::new(MemoryStore::new())),
        }
    }

    /// The store directory (a device on the QUIC network).
    pub fn dir(&self) -> &Path {
        match self {
            Self::Disk(d) => d.path(),
            Self::Memory(_) => panic!("an in-memory device has no directory"),
        }
    }
}

/// One device: its storage, store key and running client.
pub struct Device {
    /// For messages.
    pub name: &'static str,
    /// Its storage.
    pub storage: Storage,
    key: [u8; 32],
    network: Network,
    client: Option<Client>,
    /// The running client's store, when it is a [`CrashStore`].
    crash: Option<Arc<CrashStore>>,
    /// The running client's events.
    events: Option<EventStream>,
}

impl Device {
    /// The store a new client run opens: the redb file once the previous run let go of it, or
    /// a crash store over the memory "disk" (crashing after `crash_after` commits, if given).
    async fn open_store(&mut self, crash_after: Option<u64>) -> Arc<dyn Store> {
        match &self.storage {
            Storage::Disk(_) => Arc::new(self.reopen_store().await),
            Storage::Memory(disk) => {
                let disk = Arc::clone(disk);
                let store = Arc::new(match crash_after {
                    Some(n) => CrashStore::crashing_after(disk, n),
                    None => CrashStore::new(disk),
                });
                self.crash = Some(Arc::clone(&store));
                store
            }
        }
    }

    fn blank(name: &'static str, net: &impl Joinable, key: [u8; 32]) -> Self {
        let network = net.network();
        let storage = Storage::new(&network);
        Self { name, storage, key, network, client: None, crash: None, events: None }
    }

    async fn config(&mut self, crash_after: Option<u64>) -> ClientConfig {
        ClientConfig {
            store: self.open_store(crash_after).await,
            store_key: StoreKey::from_bytes(self.key),
            connector: self.network.connector(),
            options: options(),
        }
    }

    async fn started(mut self, client: Client) -> Self {
        self.events = Some(client.events());
        self.client = Some(client);
        self.connected().await;
        self
    }

    /// A new account's first device.
    pub async fn create(name: &'static str, net: &impl Joinable) -> Self {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ name.len() as u8);
        let mut d = Self::blank(name, net, key);
        let client = Client::create_account(d.config(None).await).await.expect("create account");
        d.started(client).await
    }

    /// Two new accounts' first devices, each in the other's contacts under the given display
    /// name: `((alice, alice_id), (bob, bob_id))` for `(("alice", "Alice"), ("bob", "Bob"))`.
    pub async fn contacts(
        net: &impl Joinable,
        (a_name, a_display): (&'static str, &str),
        (b_name, b_display): (&'static str, &str),
    ) -> ((Self, String), (Self, String)) {
        let a = Self::create(a_name, net).await;
        let b = Self::create(b_name, net).await;
        let (a_id, b_id) = (a.id().await, b.id().await);
        a.c().add_contact(&b_id, b_display).await.expect("add contact");
        b.c().add_contact(&a_id, a_display).await.expect("add contact");
        ((a, a_id), (b, b_id))
    }

    /// The primary device of an existing account, restored from its account key.
    pub async fn restore(name: &'static str, net: &impl Joinable, account_key: &str) -> Self {
        let mut d = Self::blank(name, net, [0x77; 32]);
        let cfg = d.config(None).await;
        let client = Client::restore_account(cfg, account_key).await.expect("restore account");
        d.started(client).await
    }

    /// A new device linked to `primary`'s account.
    pub async fn link(name: &'static str, primary: &Device) -> Self {
        let mut d = Self::blank(name, &primary.network, [0x5a; 32]);
        let code = {
            let cfg = d.config(None).await;
            Client::begin_link(&cfg).await.expect("begin link")
        };
        let grant = primary.c().approve_link(&code).await.expect("approve link");
        let cfg = d.config(None).await;
        let client = Client::finish_link(cfg, &grant).await.expect("finish link");
        d.started(client).await
    }

    /// The running client's events (opened when it started).
    pub fn events(&mut self) -> &mut EventStream {
        self.events.as_mut().expect("client is stopped")
    }

    /// The running client.
    pub fn c(&self) -> &Client {
        self.client.as_ref().expect("client is stopped")
    }

    /// Whether a client is running.
    pub fn is_running(&self) -> bool {
        self.client.is_some()
    }

    /// Stops the client (as if the app process ended).
    pub async fn stop(&mut self) {
        if let Some(c) = self.client.take() {
            c.shutdown().await;
        }
        self.crash = None;
    }

    /// Opens this device's redb store once the stopped client has let go of it: redb releases
    /// the file lock when the last handle drops, and background tasks drop theirs a moment
    /// after the client stops.
    pub async fn reopen_store(&self) -> RedbStore {
        let path = self.storage.dir().join("hush.redb");
        let mut tries = 0;
        loop {
            match RedbStore::open(&path) {
                Ok(s) => return s,
                Err(_) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen store: {e}"),
            }
        }
    }

    /// Opens the same store again, as a restarted app process would.
    pub async fn restart(&mut self) {
        let connector = self.network.connector();
        self.restart_with(connector, options()).await;
    }

    /// Restarts on the memory "disk" with a store that crashes after `commits` commits (an
    /// in-memory device).
    pub async fn restart_crashing_after(&mut self, commits: u64) {
        self.stop().await;
        let cfg = self.config(Some(commits)).await;
        self.run(cfg).await;
    }

    /// Resolves once the running client's crash store has crashed.
    pub async fn crashed(&self) {
        match &self.crash {
            Some(c) => c.died().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the running client's store is set to crash (or has).
    pub fn may_crash(&self) -> bool {
        self.crash.as_ref().is_some_and(|c| c.may_crash())
    }

    /// Whether the running client's crash store has crashed.
    pub fn has_crashed(&self) -> bool {
        self.crash.as_ref().is_some_and(|c| c.is_dead())
    }

    /// Opens the same store again with another connector and options (a wrong pin, a
    /// relay address where nothing listens, production backoff…).
    pub async fn restart_with(&mut self, connector: Arc<dyn Connector>, options: ClientOptions) {
        self.stop().await;
        let mut cfg = self.config(None).await;
        cfg.connector = connector;
        cfg.options = options;
        self.run(cfg).await;
    }

    async fn run(&mut self, cfg: ClientConfig) {
        let client = Client::open(cfg).await.expect("open client");
        self.events = Some(client.events());
        self.client = Some(client);
    }

    /// The account id.
    pub async fn id(&self) -> String {
        self.c().account_id().await
    }

    /// Waits until connected.
    pub async fn connected(&self) {
        let until = tokio::time::Instant::now() + WAIT;
        while self.c().connection_state() != hush_core::ConnectionState::Connected {
            assert!(tokio::time::Instant::now() < until, "{} never connected", self.name);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for an event matching `f`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events().next()).await {
                Ok(Some(e)) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Ok(None) => panic!("{}: event stream ended waiting for {what}", self.name),
                Err(_) => panic!("{}: timed out waiting for {what}", self.name),
            }
        }
    }

    /// Waits until the conversation with `peer` holds `n` messages; returns them in
    /// conversation order.
    pub async fn wait_history(&self, peer: &str, n: usize) -> Vec<hush_core::MessageView> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let page = self.c().messages(peer, None, u32::try_from(n + 10).unwrap_or(u32::MAX));
            let page = page.await.expect("messages");
            if page.len() >= n {
                assert_eq!(page.len(), n, "{}: more messages than expected", self.name);
                return page;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{}: history has {} of {n} messages",
                self.name,
                page.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
