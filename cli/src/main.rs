//! `hush`: a small command-line chat demo on top of the Hush SDK (`hush-core`).
//!
//! Each data directory holds one device: its encrypted redb store (`hush.redb`) and the key
//! that encrypts it (`store.key`). Commands that talk to the relay need its address and, for a
//! self-signed relay, its pin (from the relay's `hush-relay ready … pin=…` line); a relay with a
//! CA-issued certificate is reached by host name without one.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hush_core::store::RedbStore;
use hush_core::transport::{QuicConnector, RelayAddress, trust_from};
use hush_core::{
    Client, ClientConfig, ClientError, ClientOptions, ConnectionState, Event, MessageKind,
    MessageStatus, MessageView, StoreKey,
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
    /// The relay's QUIC address: `relay.example.com:4433`, or `ip:port`.
    #[arg(long, env = "HUSH_RELAY", default_value = "127.0.0.1:4433")]
    relay: RelayAddress,
    /// The relay's pin, for a self-signed relay (64 hex digits, from its ready line). Without
    /// it the relay's certificate must be valid for its host name (WebPKI).
    #[arg(long, env = "HUSH_PIN")]
    pin: Option<String>,
    /// A private CA's certificate (PEM file) to trust besides the system's roots.
    #[arg(long, env = "HUSH_CA")]
    ca: Option<PathBuf>,
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
    /// Sends a message and waits until the relay has it. Exit status: 0 sent, 1 refused
    /// for good, 75 still pending (it stays queued and goes out on a later run).
    Send {
        /// Seconds to wait for the relay to take it.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// The contact's account id.
        account_id: String,
        /// The text.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Sends a file (encrypted on this device, uploaded to the relay's blob store), with an
    /// optional caption; prints the message id. Exit status as `send`.
    SendFile {
        /// Seconds to wait for the relay to take the message once the file is uploaded.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// MIME type to label it with.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// The conversation: a contact's account id or a group id.
        account_id: String,
        /// The file.
        path: std::path::PathBuf,
        /// A caption.
        caption: Vec<String>,
    },
    /// Saves the file of a received (or sent) message to a path, checked and decrypted.
    Save {
        /// The message id (from `history`).
        message_id: String,
        /// Where to write it.
        path: std::path::PathBuf,
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
    /// Group chats: create one, change its members, list them. Send to a group, read its
    /// history or chat in it with `send`, `history` and `chat` and the group id.
    #[command(subcommand)]
    Group(GroupCmd),
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

#[derive(Subcommand)]
enum GroupCmd {
    /// Creates a group with you as admin; prints its id.
    Create {
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// The group's name.
        name: String,
        /// Account ids of the first members.
        members: Vec<String>,
    },
    /// Adds members (admins only).
    Add {
        /// The group id.
        group: String,
        /// Account ids.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Removes a member (admins only).
    Remove {
        /// The group id.
        group: String,
        /// Account id.
        member: String,
    },
    /// Leaves a group.
    Leave {
        /// The group id.
        group: String,
    },
    /// Makes a member an admin (admins only).
    Promote {
        /// The group id.
        group: String,
        /// Account id.
        member: String,
    },
    /// Makes an admin a plain member (admins only).
    Demote {
        /// The group id.
        group: String,
        /// Account id.
        member: String,
    },
    /// Renames a group (admins only).
    Rename {
        /// The group id.
        group: String,
        /// The new name.
        #[arg(required = true)]
        name: Vec<String>,
    },
    /// Lists your groups.
    List,
    /// Shows a group's name and members.
    Show {
        /// The group id.
        group: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<Exit>() {
                eprintln!("error [{}]: {}", exit.code, exit.message);
                return ExitCode::from(exit.status);
            }
            match e.downcast_ref::<ClientError>() {
                Some(c) => eprintln!("error [{}]: {}", c.code(), c.message()),
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

/// The client configuration: how to reach the relay (a pin, a CA, or the system's roots).
fn config(cli: &Cli) -> Res<ClientConfig> {
    let ca = match &cli.ca {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    let trust = trust_from(cli.pin.as_deref(), ca.as_deref())?;
    std::fs::create_dir_all(&cli.dir)?;
    Ok(ClientConfig {
        store: Arc::new(RedbStore::open(&cli.dir.join("hush.redb"))?),
        store_key: store_key(&cli.dir)?,
        connector: Arc::new(QuicConnector::new(cli.relay.clone(), trust)),
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
    if m.kind == MessageKind::GroupEvent {
        return format!("* {}", m.body);
    }
    let who = if m.outgoing { "me" } else { "them" };
    // In a group, say which member wrote it.
    let who = if m.outgoing || m.conversation == m.sender {
        who.to_owned()
    } else {
        format!("{}…", short(&m.sender))
    };
    let file = match &m.attachment {
        Some(a) => format!(" [file {} ({} bytes), id {}]", a.file_name, a.size, m.id),
        None => String::new(),
    };
    format!("[{}] {who}: {}{file}", receipt(m.status), m.body)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A command that ends with a code a script can act on (`failed`: exit 1; still pending:
/// exit 75, EX_TEMPFAIL, since the message stays queued and goes out on a later run).
#[derive(Debug)]
struct Exit {
    status: u8,
    code: String,
    message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl Error for Exit {}

/// Waits until the message is sent (prints it, exit 0), fails (exit 1 with its code), or is
/// still pending after `wait` (exit 75 with the last reason); prints each delay.
async fn send_outcome(
    client: &Client,
    events: &mut hush_core::EventStream,
    conversation: &str,
    id: &str,
    wait: Duration,
) -> Res {
    let mut last_delay: Option<(String, String)> = None;
    let waited = tokio::time::timeout(wait, async {
        while let Some(e) = events.next().await {
            match e {
                Event::StatusChanged { message_id, status, .. }
                    if message_id == id && status != MessageStatus::Pending =>
                {
                    return Some(status);
                }
                Event::SendDelayed { message_id, code, message, retry_in_ms, .. }
                    if message_id == id =>
                {
                    eprintln!(
                        "… pending: {message} ({code}); retrying in {} s",
                        retry_in_ms / 1000
                    );
                    last_delay = Some((code, message));
                }
                _ => {}
            }
        }
        None
    })
    .await;
    match waited {
        Ok(Some(MessageStatus::Failed)) => {
            let m = client.messages(conversation, None, 100).await?;
            let problem = m.into_iter().find(|m| m.id == id).and_then(|m| m.problem);
            let (code, message) =
                problem.map_or(("failed".into(), "refused".into()), |p| (p.code, p.message));
            println!("{id} {}", receipt(MessageStatus::Failed));
            Err(Box::new(Exit { status: 1, code, message }))
        }
        Ok(Some(status)) => {
            println!("{id} {}", receipt(status));
            Ok(())
        }
        Ok(None) | Err(_) => {
            let (code, why) = last_delay
                .unwrap_or_else(|| ("network".into(), "the relay did not take it in time".into()));
            println!("{id} {}", receipt(MessageStatus::Pending));
            Err(Box::new(Exit {
                status: 75,
                code,
                message: format!(
                    "still pending after {} s ({why}); it stays queued and goes out the next \
                     time hush runs",
                    wait.as_secs()
                ),
            }))
        }
    }
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
            let client = Client::create_account(config(&cli)?).await?;
            println!("{}", client.account_id().await);
            client.shutdown().await;
        }
        Cmd::LinkBegin => println!("{}", Client::begin_link(&config(&cli)?).await?),
        Cmd::LinkFinish { grant } => {
            let client = Client::finish_link(config(&cli)?, grant).await?;
            println!(
                "linked: account {} device {}",
                client.account_id().await,
                client.device_id().await
            );
            catch_up(&client, Duration::from_secs(10)).await;
            client.shutdown().await;
        }
        cmd => {
            // Local reads don't wait for the relay unless told how to reach it.
            let online = !matches!(
                cmd,
                Cmd::Id
                    | Cmd::History { .. }
                    | Cmd::Search { .. }
                    | Cmd::Group(GroupCmd::List | GroupCmd::Show { .. })
            ) || cli.pin.is_some()
                || cli.ca.is_some();
            let client = Client::open(config(&cli)?).await?;
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
        Cmd::Send { account_id, text, wait } => {
            let mut events = client.events();
            let id = client.send_text(account_id, &text.join(" ")).await?;
            send_outcome(client, &mut events, account_id, &id, Duration::from_secs(*wait)).await?;
        }
        Cmd::SendFile { account_id, path, caption, content_type, wait } => {
            let mut events = client.events();
            let meta = hush_core::AttachmentMeta {
                file_name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                content_type: content_type.clone(),
                caption: caption.join(" "),
                ..Default::default()
            };
            let id = client.send_attachment_file(account_id, path, meta).await?;
            println!("{id}");
            send_outcome(client, &mut events, account_id, &id, Duration::from_secs(*wait)).await?;
        }
        Cmd::Save { message_id, path } => {
            client.save_attachment(message_id, path).await?;
            println!("saved {}", path.display());
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
        Cmd::Group(g) => group(client, g, online).await?,
        Cmd::Create | Cmd::LinkBegin | Cmd::LinkFinish { .. } => {}
    }
    Ok(())
}

/// A group command; changes wait until the relay has them (they go out on a later run if not).
async fn group(client: &Client, cmd: &GroupCmd, online: bool) -> Res {
    let changed = |what: String| async move {
        println!("{what}");
        if let Err(e) = client.flush(Duration::from_secs(30)).await {
            eprintln!("… queued, not yet on the relay ({}): it goes out on a later run", e.code());
        }
        Ok::<_, Box<dyn Error>>(())
    };
    match cmd {
        GroupCmd::Create { name, description, members } => {
            let id = client.create_group(name, description, members).await?;
            changed(id).await?;
        }
        GroupCmd::Add { group, members } => {
            client.add_group_members(group, members).await?;
            changed(format!("added {} member(s)", members.len())).await?;
        }
        GroupCmd::Remove { group, member } => {
            client.remove_group_member(group, member).await?;
            changed(format!("removed {}", short(member))).await?;
        }
        GroupCmd::Leave { group } => {
            client.leave_group(group).await?;
            changed("left the group".into()).await?;
        }
        GroupCmd::Promote { group, member } => {
            client.promote_group_member(group, member).await?;
            changed(format!("{} is an admin", short(member))).await?;
        }
        GroupCmd::Demote { group, member } => {
            client.demote_group_member(group, member).await?;
            changed(format!("{} is a member", short(member))).await?;
        }
        GroupCmd::Rename { group, name } => {
            client.rename_group(group, &name.join(" ")).await?;
            changed("renamed".into()).await?;
        }
        GroupCmd::List => {
            if online {
                catch_up(client, Duration::from_secs(10)).await;
            }
            for g in client.groups().await? {
                let state = if g.am_member { "" } else { " (not a member)" };
                println!("{} {} ({} members){state}", g.group_id, g.name, g.members.len());
            }
        }
        GroupCmd::Show { group } => {
            if online {
                catch_up(client, Duration::from_secs(10)).await;
            }
            let g = client.group(group).await?;
            println!("{} (epoch {})", g.name, g.epoch);
            if !g.description.is_empty() {
                println!("{}", g.description);
            }
            for m in g.members {
                println!("  {}{}", m.account_id, if m.admin { " admin" } else { "" });
            }
        }
    }
    Ok(())
}

async fn chat(client: &Client, peer: &str) -> Res {
    let contact = client.contacts().await.into_iter().find(|c| c.account_id == peer);
    let name = match contact {
        Some(c) => c.name,
        None => client.group(peer).await.map(|g| g.name).map_err(|_| "unknown contact or group")?,
    };
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
                    } else if m.kind == MessageKind::GroupEvent {
                        println!("* {}", m.body);
                    } else {
                        let who = if m.sender == peer { name.clone() } else { format!("{name}/{}", short(&m.sender)) };
                        println!("{who}: {}", m.body);
                        client.mark_read(peer).await?;
                    }
                }
                Some(Event::StatusChanged { conversation, message_id, status })
                    if conversation == peer
                        && !matches!(status, MessageStatus::Received | MessageStatus::Seen) =>
                {
                    println!("  {} ({})", receipt(status), short(&message_id));
                }
                Some(Event::SendDelayed { conversation, message_id, code, message, .. })
                    if conversation == peer =>
                {
                    println!("  … pending ({}): {message} [{code}]", short(&message_id));
                }
                Some(Event::Typing { conversation, started, .. }) if conversation == peer => {
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
