//! `hush`: a small command-line chat demo on top of the Hush SDK (`hush-core`).
//!
//! Each data directory holds one device: its encrypted redb store (`hush.redb`) and the key
//! that encrypts it (`store.key`). Commands that talk to the relay need its address and
//! certificate pin (from the relay's `hush-relay ready … pin=…` line).

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hush_core::store::RedbStore;
use hush_core::transport::QuicConnector;
use hush_core::{
    Client, ClientConfig, ClientError, ClientOptions, ConnectionState, Event, MessageStatus,
    MessageView, StoreKey,
};
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, BufReader};

type Res<T = ()> = Result<T, Box<dyn Error>>;

/// A command-line chat demo for Hush.
#[derive(Parser)]
#[command(name = "hush", version)]
struct Cli {
    /// Data directory of this device (store and store key).
    #[arg(long, env = "HUSH_DIR", default_value = "./hush-data")]
    dir: PathBuf,
    /// The relay's QUIC address.
    #[arg(long, env = "HUSH_RELAY", default_value = "127.0.0.1:4433")]
    relay: SocketAddr,
    /// The relay's certificate pin (64 hex digits, from its ready line).
    #[arg(long, env = "HUSH_PIN")]
    pin: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates an account (this directory becomes its primary device).
    Create,
    /// Prints this device's account id and device id.
    Id,
    /// Adds a contact and prints the safety number to compare.
    Add {
        /// The contact's account id.
        account_id: String,
        /// A name for the contact.
        name: String,
    },
    /// Sends a message and waits until the relay has it.
    Send {
        /// The contact's account id.
        account_id: String,
        /// The text.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Prints a conversation.
    History {
        /// The contact's account id.
        account_id: String,
        /// How many of the newest messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Searches the local history.
    Search {
        /// Words to find.
        #[arg(required = true)]
        query: Vec<String>,
    },
    /// Chats interactively (`/quit` or end of input leaves).
    Chat {
        /// The contact's account id.
        account_id: String,
    },
    /// On a new device: prints a link code for the primary device to approve.
    LinkBegin,
    /// On the primary device: approves a link code and prints the grant.
    LinkApprove {
        /// The code from `link-begin`.
        code: String,
    },
    /// On the new device: finishes linking with the grant from `link-approve`.
    LinkFinish {
        /// The grant from `link-approve`.
        grant: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(c) => eprintln!("error: {c} ({})", c.code()),
                None => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// The store key: 32 random bytes in `<dir>/store.key`, created (mode 0600) on first use. A
/// real app keeps it in the platform keystore (Android Keystore, iOS Keychain), not on disk
/// next to the store.
fn store_key(dir: &Path) -> Res<StoreKey> {
    let path = dir.join("store.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&path)?.write_all(&key)?;
    }
    let bytes: [u8; 32] = std::fs::read(&path)?
        .try_into()
        .map_err(|_| format!("{} is not 32 bytes", path.display()))?;
    Ok(StoreKey::from_bytes(bytes))
}

/// The client configuration; `online` commands need the pin.
fn config(cli: &Cli, online: bool) -> Res<ClientConfig> {
    let pin: [u8; 32] = match &cli.pin {
        Some(p) => {
            hex::decode(p.trim())?.try_into().map_err(|_| "the pin is 64 hex digits (32 bytes)")?
        }
        None if online => return Err("this command needs --pin (or HUSH_PIN)".into()),
        // Offline: local reads only; the background connection just fails to verify.
        None => [0; 32],
    };
    std::fs::create_dir_all(&cli.dir)?;
    Ok(ClientConfig {
        store: Arc::new(RedbStore::open(&cli.dir.join("hush.redb"))?),
        store_key: store_key(&cli.dir)?,
        connector: Arc::new(QuicConnector::new(cli.relay, pin)?),
        options: ClientOptions::default(),
    })
}

fn receipt(s: MessageStatus) -> &'static str {
    match s {
        MessageStatus::Pending => "… pending",
        MessageStatus::Sent => "✓ sent",
        MessageStatus::Delivered => "✓✓ delivered",
        MessageStatus::Read => "✓✓ read",
        MessageStatus::Failed => "✗ failed",
        MessageStatus::Received => "new",
        MessageStatus::Seen => "seen",
    }
}

fn line(m: &MessageView) -> String {
    let who = if m.outgoing { "me" } else { "them" };
    format!("[{}] {who}: {}", receipt(m.status), m.body)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Waits until the relay's queue for this device is drained (or `wait` passes).
async fn catch_up(client: &Client, wait: Duration) {
    let mut events = client.events();
    let _ = tokio::time::timeout(wait, async {
        while let Some(e) = events.next().await {
            if e == Event::CaughtUp {
                break;
            }
        }
    })
    .await;
}

async fn run(cli: Cli) -> Res {
    match &cli.cmd {
        Cmd::Create => {
            let client = Client::create_account(config(&cli, true)?).await?;
            println!("{}", client.account_id().await);
            client.shutdown().await;
        }
        Cmd::LinkBegin => println!("{}", Client::begin_link(&config(&cli, false)?).await?),
        Cmd::LinkFinish { grant } => {
            let client = Client::finish_link(config(&cli, true)?, grant).await?;
            println!(
                "linked: account {} device {}",
                client.account_id().await,
                client.device_id().await
            );
            catch_up(&client, Duration::from_secs(10)).await;
            client.shutdown().await;
        }
        cmd => {
            let online = !matches!(cmd, Cmd::Id | Cmd::History { .. } | Cmd::Search { .. })
                || cli.pin.is_some();
            let client = Client::open(config(&cli, online)?).await?;
            let result = command(&client, cmd, online).await;
            client.shutdown().await;
            result?;
        }
    }
    Ok(())
}

async fn command(client: &Client, cmd: &Cmd, online: bool) -> Res {
    match cmd {
        Cmd::Id => {
            println!("account {}", client.account_id().await);
            println!("device {}", client.device_id().await);
        }
        Cmd::Add { account_id, name } => {
            let c = client.add_contact(account_id, name).await?;
            println!("added {} ({} device(s))", c.name, c.devices.len());
            println!("safety number: {}", client.safety_number(account_id).await?);
        }
        Cmd::Send { account_id, text } => {
            let id = client.send_text(account_id, &text.join(" ")).await?;
            client.flush(Duration::from_secs(30)).await?;
            let msgs = client.messages(account_id, None, 100).await?;
            let status = msgs.iter().find(|m| m.id == id).map_or(MessageStatus::Sent, |m| m.status);
            println!("{id} {}", receipt(status));
        }
        Cmd::History { account_id, limit } => {
            if online {
                catch_up(client, Duration::from_secs(10)).await;
            }
            for m in client.messages(account_id, None, *limit).await? {
                println!("{}", line(&m));
            }
            if online {
                // Catching up queued delivery receipts; let them reach the relay before the
                // process exits (they would otherwise wait for the next command).
                let _ = client.flush(Duration::from_secs(5)).await;
            }
        }
        Cmd::Search { query } => {
            for hit in client.search(&query.join(" "), 20).await? {
                println!("{}… {}", short(&hit.conversation), line(&hit.message));
            }
        }
        Cmd::Chat { account_id } => chat(client, account_id).await?,
        Cmd::LinkApprove { code } => println!("{}", client.approve_link(code).await?),
        Cmd::Create | Cmd::LinkBegin | Cmd::LinkFinish { .. } => {}
    }
    Ok(())
}

async fn chat(client: &Client, peer: &str) -> Res {
    let contact = client.contacts().await.into_iter().find(|c| c.account_id == peer);
    let name = contact.map(|c| c.name).ok_or("unknown contact: add it first")?;
    let me = client.device_id().await;
    let mut events = client.events();
    for m in client.messages(peer, None, 10).await? {
        println!("{}", line(&m));
    }
    client.mark_read(peer).await?;
    println!("chatting with {name}; type a line to send, /quit to leave");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => break,
                Some(Event::MessageReceived { message: m }) if m.conversation == peer => {
                    if m.outgoing {
                        // Our own sends echo here too; show only those from our other devices.
                        if m.sender_device != me {
                            println!("me (device {}): {}", m.sender_device, m.body);
                        }
                    } else {
                        println!("{name}: {}", m.body);
                        client.mark_read(peer).await?;
                    }
                }
                Some(Event::StatusChanged { conversation, message_id, status })
                    if conversation == peer
                        && !matches!(status, MessageStatus::Received | MessageStatus::Seen) =>
                {
                    println!("  {} ({})", receipt(status), short(&message_id));
                }
                Some(Event::Typing { conversation, started }) if conversation == peer => {
                    println!("{name} {}", if started { "is typing…" } else { "stopped typing" });
                }
                Some(Event::IdentityChanged { contact, .. }) if contact == peer => {
                    println!("! {name}'s safety number changed; compare it again");
                }
                Some(Event::ConnectionChanged { state }) => match state {
                    ConnectionState::Connected => println!("(connected)"),
                    ConnectionState::Disconnected => println!("(offline, retrying)"),
                    ConnectionState::Removed => return Err("this device was removed".into()),
                    ConnectionState::Connecting => {}
                },
                Some(Event::Error { code, message }) => eprintln!("error: {message} ({code})"),
                Some(_) => {}
            },
            input = stdin.next_line() => {
                let Some(text) = input? else { break };
                let text = text.trim();
                if text == "/quit" {
                    break;
                }
                if !text.is_empty()
                    && let Err(e) = client.send_text(peer, text).await
                {
                    eprintln!("error: {e} ({})", e.code());
                }
            }
        }
    }
    // Give queued sends a moment to reach the relay; whatever is left goes out next time.
    let _ = client.flush(Duration::from_secs(5)).await;
    Ok(())
}
