//! hush-wasm: the Hush SDK for the web, a Promise-based JavaScript/TypeScript API over
//! hush-core compiled to WebAssembly.
//!
//! This crate only translates; every behaviour lives in hush-core, which on wasm32 stores in
//! IndexedDB and reaches the relay over WebSocket (`hush_core::browser`). It guarantees:
//! - **Promises.** Every client call returns a Promise; nothing blocks the page.
//! - **One error shape.** A failed call rejects with an `Error` whose `name` is `"HushError"`
//!   and whose `code` is hush-core's stable code (docs/PROTOCOL.md §15.11).
//! - **Plain objects.** Views and events are plain JS objects with camelCase fields, typed by
//!   the TypeScript declarations below (`Message`, `Conversation`, `HushEvent`…).
//! - **Events** through a callback (`listen`) or an async iterator (`events`, wrapped as
//!   `for await` by the package's `index.js`).
//!
//! On native targets the crate is empty, so workspace-wide native builds and tests skip it.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

mod streams;

use hush_core::browser::{IndexedDbStore, WebSocketConnector};
use hush_core::{Client, ClientConfig, ClientError, ClientOptions, StoreKey};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** How a client stores its data and reaches its relay. */
export interface ClientSetup {
  /** IndexedDB database name (one per account on this origin). */
  database: string;
  /** 32 bytes that encrypt everything stored (see generateStoreKey). */
  storeKey: Uint8Array;
  /** The relay's WebSocket URL, e.g. "wss://relay.example:4443". */
  relayUrl: string;
}
/** Outgoing: pending → sent → delivered → read (or failed). Incoming: received → seen. */
export type MessageStatus =
  "pending" | "sent" | "delivered" | "read" | "failed" | "received" | "seen";
export type TrustState = "unverified" | "verified" | "changed";
export type ConnectionState = "disconnected" | "connecting" | "connected" | "removed";
/** Why an outgoing message is not sent yet (it is retried), or why it failed. */
export interface SendProblem { code: string; message: string; }
export interface Message {
  id: string; conversation: string; sender: string; senderDevice: number; outgoing: boolean;
  body: string; clock: number; sentAtMs: number; status: MessageStatus;
  problem: SendProblem | null;
  /** "groupEvent": a group change in the timeline ("… added …"); `body` describes it. */
  kind: "text" | "groupEvent";
  /** The file sent with it (`body` is its caption); fetch it with downloadAttachment. */
  attachment: Attachment | null;
}
export interface Attachment {
  fileName: string; contentType: string; size: number;
  /** A small inline preview image (bytes as numbers); empty if none. */
  thumbnail: number[];
  width: number; height: number; durationMs: number;
}
/** What to say about a file being sent (only fileName is needed). */
export interface FileDetails {
  fileName: string; contentType?: string; caption?: string; thumbnail?: Uint8Array;
  width?: number; height?: number; durationMs?: number;
  /** The id the message will have (newMessageId()), to follow its upload's progress. */
  messageId?: string;
  /** Bytes: needed when the file is a ReadableStream. */
  size?: number;
}
/** An upload not finished (pendingUploads). */
export interface PendingUpload {
  messageId: string; conversation: string; fileName: string; size: number;
  /** Whether it goes on by itself (never in the browser: the page can't reopen the file). */
  resumable: boolean;
  /** Whether a sendFile call is uploading it now. */
  running: boolean;
  /** Why it stopped (an error code); empty if it didn't. */
  problem: string;
}
export interface Conversation {
  /** The peer's account id, or the group id. */
  peer: string; isGroup: boolean; name: string; unread: number; lastPreview: string;
  lastAtMs: number;
}
export interface GroupMember { accountId: string; admin: boolean; }
export interface Group {
  /** The group id: send to it with sendText, read it with messages. */
  groupId: string; name: string; description: string; epoch: number;
  members: GroupMember[]; amMember: boolean; amAdmin: boolean;
}
/** Per-member receipts of one of our group messages. */
export interface GroupReceipts { members: number; deliveredTo: string[]; readBy: string[]; }
export interface Contact { accountId: string; name: string; trust: TrustState; devices: number[]; }
export interface Device { deviceId: number; thisDevice: boolean; primary: boolean; }
export interface SearchHit { conversation: string; message: Message; }
export type HushEvent =
  | { type: "messageReceived"; message: Message }
  | { type: "statusChanged"; conversation: string; messageId: string; status: MessageStatus }
  | { type: "transferProgress"; messageId: string; upload: boolean; done: number; total: number }
  | { type: "typing"; conversation: string; from: string; started: boolean }
  | { type: "contactChanged"; contact: string }
  | { type: "identityChanged"; contact: string; deviceId: number; wasVerified: boolean }
  | { type: "devicesChanged" }
  | { type: "groupChanged"; group: string }
  | { type: "connectionChanged"; state: ConnectionState }
  | { type: "caughtUp" }
  | { type: "sendDelayed"; conversation: string; messageId: string; code: string;
      message: string; retryInMs: number }
  | { type: "error"; code: string; message: string };
/** What every rejected Promise of the SDK holds. */
export interface HushError extends Error { name: "HushError"; code: string; }
"#;

// ---------------------------------------------------------------------------------------------
// Errors and values

fn hush_error(code: &str, detail: &str) -> JsValue {
    let e = js_sys::Error::new(&format!("{code}: {detail}"));
    e.set_name("HushError");
    // Setting a property on a fresh Error object can't fail.
    let _ = js_sys::Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

fn fail(e: ClientError) -> JsValue {
    hush_error(e.code(), &e.message())
}

fn invalid(detail: &str) -> JsValue {
    hush_error("invalid_argument", detail)
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    // Maps become plain objects, so views read like the TypeScript interfaces above.
    let s = serde_wasm_bindgen::Serializer::json_compatible();
    value.serialize(&s).map_err(|e| hush_error("internal", &e.to_string()))
}

fn setup(value: &JsValue) -> Result<(String, [u8; 32], String), JsValue> {
    let field =
        |name: &str| js_sys::Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED);
    let database = field("database")
        .as_string()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid("setup.database is a non-empty string"))?;
    let key = field("storeKey");
    let key: [u8; 32] = key
        .dyn_ref::<js_sys::Uint8Array>()
        .map(js_sys::Uint8Array::to_vec)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| invalid("setup.storeKey is a Uint8Array of 32 bytes"))?;
    let url = field("relayUrl").as_string().ok_or_else(|| invalid("setup.relayUrl is a string"))?;
    Ok((database, key, url))
}

fn file_details(value: &JsValue) -> Result<hush_core::AttachmentMeta, JsValue> {
    let field =
        |name: &str| js_sys::Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED);
    let text = |name: &str| field(name).as_string().unwrap_or_default();
    let number = |name: &str| field(name).as_f64().unwrap_or(0.0);
    let file_name =
        field("fileName").as_string().ok_or_else(|| invalid("details.fileName is a string"))?;
    Ok(hush_core::AttachmentMeta {
        file_name,
        content_type: text("contentType"),
        caption: text("caption"),
        thumbnail: field("thumbnail")
            .dyn_ref::<js_sys::Uint8Array>()
            .map(js_sys::Uint8Array::to_vec)
            .unwrap_or_default(),
        // JavaScript numbers: whole pixels and milliseconds.
        width: number("width") as u32,
        height: number("height") as u32,
        duration_ms: number("durationMs") as u64,
        message_id: field("messageId").as_string().filter(|m| !m.is_empty()),
    })
}

async fn config(value: &JsValue) -> Result<ClientConfig, JsValue> {
    let (database, key, url) = setup(value)?;
    let connector = WebSocketConnector::new(&url).map_err(|e| invalid(&e.to_string()))?;
    let store = IndexedDbStore::open(&database).await.map_err(|e| fail(e.into()))?;
    Ok(ClientConfig {
        store: Arc::new(store),
        store_key: StoreKey::from_bytes(key),
        connector: Arc::new(connector),
        options: ClientOptions::default(),
    })
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// 32 random bytes (from the browser's CSPRNG) for `ClientSetup.storeKey`. Keep them where
/// the app keeps secrets; without them the stored history can't be read.
#[wasm_bindgen(js_name = generateStoreKey)]
pub fn generate_store_key() -> Vec<u8> {
    StoreKey::random().expose_bytes().to_vec()
}

/// Creates an account (this is its first device) on the relay.
#[wasm_bindgen(js_name = createAccount)]
pub async fn create_account(
    #[wasm_bindgen(unchecked_param_type = "ClientSetup")] setup: JsValue,
) -> Result<HushClient, JsValue> {
    let client = Client::create_account(config(&setup).await?).await.map_err(fail)?;
    Ok(HushClient { inner: client })
}

/// Opens the account kept in `setup.database` and starts connecting.
#[wasm_bindgen(js_name = openAccount)]
pub async fn open_account(
    #[wasm_bindgen(unchecked_param_type = "ClientSetup")] setup: JsValue,
) -> Result<HushClient, JsValue> {
    let client = Client::open(config(&setup).await?).await.map_err(fail)?;
    Ok(HushClient { inner: client })
}

/// Re-creates an account's primary device from its exported account key.
#[wasm_bindgen(js_name = restoreAccount)]
pub async fn restore_account(
    #[wasm_bindgen(unchecked_param_type = "ClientSetup")] setup: JsValue,
    account_key: String,
) -> Result<HushClient, JsValue> {
    let client =
        Client::restore_account(config(&setup).await?, &account_key).await.map_err(fail)?;
    Ok(HushClient { inner: client })
}

/// Starts linking this browser as a new device: returns the code to show the primary device.
#[wasm_bindgen(js_name = beginLink)]
pub async fn begin_link(
    #[wasm_bindgen(unchecked_param_type = "ClientSetup")] setup: JsValue,
) -> Result<String, JsValue> {
    Client::begin_link(&config(&setup).await?).await.map_err(fail)
}

/// Finishes linking with the grant the primary device returned from `approveLink`.
#[wasm_bindgen(js_name = finishLink)]
pub async fn finish_link(
    #[wasm_bindgen(unchecked_param_type = "ClientSetup")] setup: JsValue,
    grant: String,
) -> Result<HushClient, JsValue> {
    let client = Client::finish_link(config(&setup).await?, &grant).await.map_err(fail)?;
    Ok(HushClient { inner: client })
}

// ---------------------------------------------------------------------------------------------
// The client

/// A Hush client for one device (one browser profile and database).
#[wasm_bindgen]
pub struct HushClient {
    inner: Client,
}

#[wasm_bindgen]
impl HushClient {
    /// This account's id (64 hex digits): what contacts add.
    #[wasm_bindgen(js_name = accountId)]
    pub async fn account_id(&self) -> String {
        self.inner.account_id().await
    }

    /// This device's id within the account.
    #[wasm_bindgen(js_name = deviceId)]
    pub async fn device_id(&self) -> u32 {
        self.inner.device_id().await
    }

    /// The account's devices.
    #[wasm_bindgen(unchecked_return_type = "Device[]")]
    pub async fn devices(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.devices().await)
    }

    /// The account key, for a recovery backup (primary device only).
    #[wasm_bindgen(js_name = exportAccountKey)]
    pub async fn export_account_key(&self) -> Result<String, JsValue> {
        self.inner.export_account_key().await.map_err(fail)
    }

    /// Approves a link code from `beginLink` on the new device; returns the grant for it.
    #[wasm_bindgen(js_name = approveLink)]
    pub async fn approve_link(&self, link_code: String) -> Result<String, JsValue> {
        self.inner.approve_link(&link_code).await.map_err(fail)
    }

    /// Removes one of the account's other devices (primary device only).
    #[wasm_bindgen(js_name = removeDevice)]
    pub async fn remove_device(&self, device_id: u32) -> Result<(), JsValue> {
        self.inner.remove_device(device_id).await.map_err(fail)
    }

    /// The connection state now.
    #[wasm_bindgen(js_name = connectionState, unchecked_return_type = "ConnectionState")]
    pub fn connection_state(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.connection_state())
    }

    /// Adds a contact by account id (fetches and verifies its device list).
    #[wasm_bindgen(js_name = addContact, unchecked_return_type = "Contact")]
    pub async fn add_contact(&self, account_id: String, name: String) -> Result<JsValue, JsValue> {
        to_js(&self.inner.add_contact(&account_id, &name).await.map_err(fail)?)
    }

    /// Every contact.
    #[wasm_bindgen(unchecked_return_type = "Contact[]")]
    pub async fn contacts(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.contacts().await)
    }

    /// The safety number to compare with a contact (docs/PROTOCOL.md §4).
    #[wasm_bindgen(js_name = safetyNumber)]
    pub async fn safety_number(&self, contact: String) -> Result<String, JsValue> {
        self.inner.safety_number(&contact).await.map_err(fail)
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    #[wasm_bindgen(js_name = setVerified)]
    pub async fn set_verified(&self, contact: String, verified: bool) -> Result<(), JsValue> {
        self.inner.set_verified(&contact, verified).await.map_err(fail)
    }

    /// Accepts a contact's changed identity key, releasing held sends.
    #[wasm_bindgen(js_name = acceptIdentityChange)]
    pub async fn accept_identity_change(&self, contact: String) -> Result<(), JsValue> {
        self.inner.accept_identity_change(&contact).await.map_err(fail)
    }

    /// Sends a file: a `File` or `Blob` (read slice by slice), a `ReadableStream` of
    /// `Uint8Array` chunks (`details.size` gives its length), or a `Uint8Array`; encrypted and
    /// uploaded as it is read, with `transferProgress` events, then sent as a message pointing
    /// at it. Resolves with the message id once the message is queued. (An upload stopped by
    /// closing the page can't be read again: it shows in `pendingUploads` until given up.)
    #[wasm_bindgen(js_name = sendFile)]
    pub async fn send_file(
        &self,
        conversation: String,
        file: JsValue,
        details: JsValue,
    ) -> Result<String, JsValue> {
        let meta = file_details(&details)?;
        let size = js_sys::Reflect::get(&details, &"size".into()).ok().and_then(|s| s.as_f64());
        match streams::Input::from_js(&file, size).map_err(|e| invalid(&e))? {
            (streams::Input::Bytes(bytes), _) => {
                self.inner.send_attachment(&conversation, bytes, meta).await.map_err(fail)
            }
            (input, len) => self
                .inner
                .send_attachment_stream(&conversation, input, len, meta)
                .await
                .map_err(fail),
        }
    }

    /// Downloads, checks and decrypts the file of a message; resolves with its bytes (make a
    /// `Blob` of them to show or save it).
    #[wasm_bindgen(js_name = downloadAttachment)]
    pub async fn download_attachment(
        &self,
        message_id: String,
    ) -> Result<js_sys::Uint8Array, JsValue> {
        let bytes = self.inner.download_attachment(&message_id).await.map_err(fail)?;
        Ok(js_sys::Uint8Array::from(bytes.as_slice()))
    }

    /// Downloads the file of a message into a `WritableStream`, each piece once it checked;
    /// closes the stream when the whole file and its digest checked, aborts it on an error
    /// (and rejects with the error).
    #[wasm_bindgen(js_name = downloadAttachmentTo)]
    pub async fn download_attachment_to(
        &self,
        message_id: String,
        writable: JsValue,
    ) -> Result<(), JsValue> {
        let mut sink = streams::WritableSink::from_js(&writable).map_err(|e| invalid(&e))?;
        match self.inner.download_attachment_to(&message_id, &mut sink).await {
            Ok(()) => sink.end(None).await.map_err(fail),
            Err(e) => {
                let e = fail(e);
                let _ = sink.end(Some(&e)).await;
                Err(e)
            }
        }
    }

    /// Forwards the file of a message to another conversation without uploading it again;
    /// resolves with the new message's id.
    #[wasm_bindgen(js_name = forwardAttachment)]
    pub async fn forward_attachment(
        &self,
        message_id: String,
        conversation: String,
        caption: String,
    ) -> Result<String, JsValue> {
        self.inner.forward_attachment(&message_id, &conversation, &caption).await.map_err(fail)
    }

    /// A fresh message id, for `FileDetails.messageId`.
    #[wasm_bindgen(js_name = newMessageId)]
    pub fn new_message_id(&self) -> String {
        self.inner.new_message_id()
    }

    /// Stops an upload or download in progress (its promise rejects with `canceled`), or
    /// gives up a stopped upload from `pendingUploads` (its message is never sent).
    #[wasm_bindgen(js_name = cancelTransfer)]
    pub async fn cancel_transfer(&self, message_id: String) -> Result<(), JsValue> {
        self.inner.cancel_transfer(&message_id).await.map_err(fail)
    }

    /// The uploads not finished: running, or stopped when the page closed (those can't be
    /// read again: show them as failed and let the user send the file again or give up).
    #[wasm_bindgen(js_name = pendingUploads, unchecked_return_type = "PendingUpload[]")]
    pub async fn pending_uploads(&self) -> Result<JsValue, JsValue> {
        let uploads = self.inner.pending_uploads().await.map_err(fail)?;
        let list = js_sys::Array::new();
        for u in uploads {
            let o = js_sys::Object::new();
            for (k, v) in [
                ("messageId", JsValue::from(u.message_id)),
                ("conversation", u.conversation.into()),
                ("fileName", u.file_name.into()),
                ("size", (u.size as f64).into()),
                ("resumable", u.resumable.into()),
                ("running", u.running.into()),
                ("problem", u.problem.into()),
            ] {
                let _ = js_sys::Reflect::set(&o, &k.into(), &v);
            }
            list.push(&o);
        }
        Ok(list.into())
    }

    /// Sends a text; resolves at once with the message id (the outbox sends it durably).
    #[wasm_bindgen(js_name = sendText)]
    pub async fn send_text(&self, conversation: String, text: String) -> Result<String, JsValue> {
        self.inner.send_text(&conversation, &text).await.map_err(fail)
    }

    /// Creates a group with us as its admin and `members` (account ids); resolves with its id.
    #[wasm_bindgen(js_name = createGroup)]
    pub async fn create_group(
        &self,
        name: String,
        description: String,
        members: Vec<String>,
    ) -> Result<String, JsValue> {
        self.inner.create_group(&name, &description, &members).await.map_err(fail)
    }

    /// Adds members (admins only).
    #[wasm_bindgen(js_name = addGroupMembers)]
    pub async fn add_group_members(
        &self,
        group: String,
        members: Vec<String>,
    ) -> Result<(), JsValue> {
        self.inner.add_group_members(&group, &members).await.map_err(fail)
    }

    /// Removes a member (admins only); it can't read anything sent afterwards.
    #[wasm_bindgen(js_name = removeGroupMember)]
    pub async fn remove_group_member(&self, group: String, member: String) -> Result<(), JsValue> {
        self.inner.remove_group_member(&group, &member).await.map_err(fail)
    }

    /// Leaves a group.
    #[wasm_bindgen(js_name = leaveGroup)]
    pub async fn leave_group(&self, group: String) -> Result<(), JsValue> {
        self.inner.leave_group(&group).await.map_err(fail)
    }

    /// Makes a member an admin (admins only).
    #[wasm_bindgen(js_name = promoteGroupMember)]
    pub async fn promote_group_member(&self, group: String, member: String) -> Result<(), JsValue> {
        self.inner.promote_group_member(&group, &member).await.map_err(fail)
    }

    /// Makes an admin a plain member (admins only).
    #[wasm_bindgen(js_name = demoteGroupMember)]
    pub async fn demote_group_member(&self, group: String, member: String) -> Result<(), JsValue> {
        self.inner.demote_group_member(&group, &member).await.map_err(fail)
    }

    /// Renames a group (admins only).
    #[wasm_bindgen(js_name = renameGroup)]
    pub async fn rename_group(&self, group: String, name: String) -> Result<(), JsValue> {
        self.inner.rename_group(&group, &name).await.map_err(fail)
    }

    /// Sets a group's description (admins only).
    #[wasm_bindgen(js_name = setGroupDescription)]
    pub async fn set_group_description(
        &self,
        group: String,
        description: String,
    ) -> Result<(), JsValue> {
        self.inner.set_group_description(&group, &description).await.map_err(fail)
    }

    /// The groups this device knows.
    #[wasm_bindgen(unchecked_return_type = "Group[]")]
    pub async fn groups(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.groups().await.map_err(fail)?)
    }

    /// One group.
    #[wasm_bindgen(unchecked_return_type = "Group")]
    pub async fn group(&self, group: String) -> Result<JsValue, JsValue> {
        to_js(&self.inner.group(&group).await.map_err(fail)?)
    }

    /// Per-member receipts of one of our group messages.
    #[wasm_bindgen(js_name = groupReceipts, unchecked_return_type = "GroupReceipts")]
    pub async fn group_receipts(&self, message_id: String) -> Result<JsValue, JsValue> {
        to_js(&self.inner.group_receipts(&message_id).await.map_err(fail)?)
    }

    /// Gives up on an outgoing message that is still pending: it is marked failed
    /// (`canceled`).
    #[wasm_bindgen(js_name = cancelSend)]
    pub async fn cancel_send(&self, message_id: String) -> Result<(), JsValue> {
        self.inner.cancel_send(&message_id).await.map_err(fail)
    }

    /// Marks a conversation read (sends read receipts).
    #[wasm_bindgen(js_name = markRead)]
    pub async fn mark_read(&self, conversation: String) -> Result<(), JsValue> {
        self.inner.mark_read(&conversation).await.map_err(fail)
    }

    /// Tells the conversation (the peer, or a group's members) we started or stopped typing.
    #[wasm_bindgen(js_name = setTyping)]
    pub async fn set_typing(&self, conversation: String, started: bool) -> Result<(), JsValue> {
        self.inner.set_typing(&conversation, started).await.map_err(fail)
    }

    /// A page of a conversation in order: the `limit` messages before `before` (or the newest).
    #[wasm_bindgen(unchecked_return_type = "Message[]")]
    pub async fn messages(
        &self,
        conversation: String,
        before: Option<String>,
        limit: u32,
    ) -> Result<JsValue, JsValue> {
        to_js(&self.inner.messages(&conversation, before, limit).await.map_err(fail)?)
    }

    /// Conversations, most recent first, with unread counts.
    #[wasm_bindgen(unchecked_return_type = "Conversation[]")]
    pub async fn conversations(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.conversations().await.map_err(fail)?)
    }

    /// Full-text search over local history.
    #[wasm_bindgen(unchecked_return_type = "SearchHit[]")]
    pub async fn search(&self, query: String, limit: u32) -> Result<JsValue, JsValue> {
        to_js(&self.inner.search(&query, limit).await.map_err(fail)?)
    }

    /// Waits until everything sent is acked by the relay, up to `timeout_ms`.
    pub async fn flush(&self, timeout_ms: u32) -> Result<(), JsValue> {
        self.inner.flush(Duration::from_millis(timeout_ms.into())).await.map_err(fail)
    }

    /// Stops background work and closes the connection (the outbox keeps pending sends). The
    /// store stays open (and locked to this tab) until the client is freed: call `free()`
    /// before opening the same database again in this tab.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// Calls `callback` with every event from now on, until the handle is stopped.
    pub fn listen(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: HushEvent) => void")]
        callback: js_sys::Function,
    ) -> ListenerHandle {
        let stop = Rc::new(tokio::sync::Notify::new());
        let stopped = Rc::clone(&stop);
        let mut events = self.inner.events();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    () = stopped.notified() => None,
                };
                let Some(event) = event else { break };
                if let Ok(value) = to_js(&event) {
                    // A throwing callback is the app's bug; it must not stop the stream.
                    let _ = callback.call1(&JsValue::NULL, &value);
                }
            }
        });
        ListenerHandle { stop }
    }

    /// The event stream as an object with `next(): Promise<HushEvent | undefined>`; the
    /// package's `events()` wraps it for `for await`.
    #[wasm_bindgen(js_name = eventStream)]
    pub fn event_stream(&self) -> EventStream {
        EventStream { inner: Rc::new(tokio::sync::Mutex::new(self.inner.events())) }
    }
}

/// Stops a `listen` callback.
#[wasm_bindgen]
pub struct ListenerHandle {
    stop: Rc<tokio::sync::Notify>,
}

#[wasm_bindgen]
impl ListenerHandle {
    /// No more calls after this; the listener's task ends at once.
    pub fn stop(&self) {
        // `notify_one` keeps a permit if the task is busy in a callback, so it still stops.
        self.stop.notify_one();
    }
}

/// Events, one Promise at a time.
#[wasm_bindgen]
pub struct EventStream {
    inner: Rc<tokio::sync::Mutex<hush_core::EventStream>>,
}

#[wasm_bindgen]
impl EventStream {
    /// The next event; `undefined` once the client has shut down.
    #[wasm_bindgen(unchecked_return_type = "HushEvent | undefined")]
    pub async fn next(&self) -> Result<JsValue, JsValue> {
        let inner = Rc::clone(&self.inner);
        let mut events = inner.lock().await;
        match events.next().await {
            Some(e) => to_js(&e),
            None => Ok(JsValue::UNDEFINED),
        }
    }
}
