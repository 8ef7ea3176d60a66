//! Attachments (docs/PROTOCOL.md §14.16, §18): a file is encrypted in segments as it is read,
//! uploaded to the relay's blob store in puts, and sent as a pointer in an ordinary message
//! (1:1 or group; its caption is the message's text); a received one is downloaded in ranges,
//! checked and decrypted.
//!
//! Guarantees:
//! - memory stays bounded whatever the file's size: at most one put of ciphertext (about 1 MB)
//!   and one segment are held on upload, four ranges (about 4 MB) on download;
//! - a dropped connection doesn't restart a transfer: the upload asks the relay what it
//!   committed and goes on from there (the construction is deterministic under the key, so the
//!   bytes it has not had acked are still in hand), the download resumes from what it has
//!   checked;
//! - the message is queued only once the whole blob is committed on the relay, so a recipient
//!   never gets a pointer to a blob that isn't there; until then the call is in progress
//!   (`Event::TransferProgress`) and can be canceled;
//! - a download hands out the file only after every segment and the digest checked: a
//!   tampered, truncated or wrong-key blob is a typed error, and a file download leaves nothing
//!   at the destination.

use hush_protocol::wire::{self, request, response};

use super::error::ClientError;
use super::handle::Client;
use super::inner::{Inner, unexpected};
use super::types::Event;
use crate::attachment::{AttachmentKey, Decryptor, Encryptor, SEGMENT_LEN, sealed_len};
use crate::content::{self, MESSAGE_ID_LEN};
use crate::records::{RECORD_VERSION, Record, UploadRecord, keys, meta};
use crate::store::{Scan, Store, Table};
use crate::transport::{Link, TransportError};
use hush_protocol::ErrorCode;

/// Bytes asked for per download request (the relay caps it at its own limit).
const GET_BYTES: u32 = 1_024_000;
/// Download requests in flight at once: with one, each range waits for the last one's round
/// trip and the relay's read; four overlap them (docs/BENCHMARKS.md: download 2.7× a quinn
/// copy + redb read with one, 1.6× with four, no better with eight), for 4 MB held at most.
const GETS_IN_FLIGHT: usize = 4;
/// Times a transfer waits for the connection to come back before it gives up.
const MAX_RECONNECTS: u32 = 20;
/// How long one wait for the connection lasts.
const RECONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the sender says about a file (all optional but the name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentMeta {
    /// File name, without a path.
    pub file_name: String,
    /// MIME type (`image/jpeg`…).
    pub content_type: String,
    /// The message's text.
    pub caption: String,
    /// A small preview image (at most 64 KiB), sent inline.
    pub thumbnail: Vec<u8>,
    /// Pixels, if an image or video.
    pub width: u32,
    /// Pixels, if an image or video.
    pub height: u32,
    /// Milliseconds, if audio or video.
    pub duration_ms: u64,
    /// The id the message will have (from [`Client::new_message_id`]), so that the app can
    /// follow the upload's progress under it before the call returns; a fresh one if `None`.
    pub message_id: Option<String>,
}

/// Where an upload reads its plaintext from: the app's own stream (a browser `Blob`, a Kotlin
/// `InputStream`…), besides the bytes and paths the SDK reads itself.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait AttachmentSource: crate::runtime::MaybeSend {
    /// Fills `buf` from the front with the next bytes; 0 at the end.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError>;
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl AttachmentSource for std::io::Cursor<Vec<u8>> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        std::io::Read::read(self, buf).map_err(|e| ClientError::InvalidArgument(e.to_string()))
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[async_trait::async_trait]
impl AttachmentSource for std::fs::File {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        // A read of 64 KiB from a local file: short enough to do in place.
        std::io::Read::read(self, buf)
            .map_err(|e| ClientError::InvalidArgument(format!("reading the file: {e}")))
    }
}

/// Where a download writes its plaintext as it checks: the app's own stream (a Kotlin
/// `OutputStream`, a browser `WritableStream`…), besides the memory and paths the SDK writes
/// itself. It gets each piece once the segments in it authenticated; the file is whole and
/// right only when the download call succeeds (the blob's digest is checked last), so an app
/// that streams somewhere visible must be ready to discard what it got on an error.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait AttachmentSink: crate::runtime::MaybeSend {
    /// Takes the next checked plaintext.
    async fn write(&mut self, plaintext: &[u8]) -> Result<(), ClientError>;
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl AttachmentSink for Vec<u8> {
    async fn write(&mut self, plaintext: &[u8]) -> Result<(), ClientError> {
        self.extend_from_slice(plaintext);
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[async_trait::async_trait]
impl AttachmentSink for std::fs::File {
    async fn write(&mut self, plaintext: &[u8]) -> Result<(), ClientError> {
        std::io::Write::write_all(self, plaintext)
            .map_err(|e| ClientError::InvalidArgument(format!("writing the file: {e}")))
    }
}

/// An upload that has not finished: being sent, or stopped (the relay unreachable, the app
/// restarted) and waiting to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The id its message will have.
    pub message_id: String,
    /// The conversation it goes to.
    pub conversation: String,
    /// The file's name.
    pub file_name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Whether the SDK can go on by itself (it reads from a path); an upload of bytes or of
    /// the app's stream stopped by a restart can only be given up ([`Client::cancel_transfer`])
    /// and sent again.
    pub resumable: bool,
    /// Whether a call is uploading it now.
    pub running: bool,
    /// Why it stopped (an error code), if it did.
    pub problem: String,
}

impl Client {
    /// Sends `bytes` as a file to a conversation (1:1 or group): encrypts and uploads it
    /// (progress as [`Event::TransferProgress`] under the returned message id), then sends the
    /// message that points at it, as [`Client::send_text`] does with a text. Returns the
    /// message id.
    pub async fn send_attachment(
        &self,
        conversation: &str,
        bytes: Vec<u8>,
        meta: AttachmentMeta,
    ) -> Result<String, ClientError> {
        let len = bytes.len() as u64;
        self.send_from(conversation, std::io::Cursor::new(bytes), len, meta, None).await
    }

    /// [`Client::send_attachment`] reading `len` bytes from the app's `source` as it uploads
    /// (any size, in bounded memory). An upload from a stream can't go on after a restart.
    pub async fn send_attachment_stream(
        &self,
        conversation: &str,
        source: impl AttachmentSource,
        len: u64,
        meta: AttachmentMeta,
    ) -> Result<String, ClientError> {
        self.send_from(conversation, source, len, meta, None).await
    }

    /// [`Client::send_attachment`] reading the file at `path` as it uploads (any size, in
    /// bounded memory).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn send_attachment_file(
        &self,
        conversation: &str,
        path: &std::path::Path,
        meta: AttachmentMeta,
    ) -> Result<String, ClientError> {
        let (file, len, modified_ns) = open_file(path)?;
        let path = path.to_str().ok_or_else(|| {
            ClientError::InvalidArgument(format!("{}: not a UTF-8 path", path.display()))
        })?;
        self.send_from(conversation, file, len, meta, Some((path.to_owned(), modified_ns))).await
    }

    /// Forwards the file of a message (ours or received) to another conversation: a new message
    /// with the same pointer, so the blob is not uploaded again (it keeps its original expiry).
    /// Returns the new message's id.
    pub async fn forward_attachment(
        &self,
        message_id: &str,
        conversation: &str,
        caption: &str,
    ) -> Result<String, ClientError> {
        let pointer = self.pointer(&parse_message_id(message_id)?).await?;
        let mut id = [0u8; MESSAGE_ID_LEN];
        rand::RngExt::fill(&mut rand::rng(), &mut id[..]);
        self.send_message(conversation, id, caption, Some(pointer)).await
    }

    /// A fresh message id, for [`AttachmentMeta::message_id`].
    pub fn new_message_id(&self) -> String {
        let mut id = [0u8; MESSAGE_ID_LEN];
        rand::RngExt::fill(&mut rand::rng(), &mut id[..]);
        hex::encode(id)
    }

    /// Stops an upload or download in progress (by message id); the call doing it returns
    /// `canceled`. Nothing is sent for a canceled upload, and a stopped one
    /// ([`Client::pending_uploads`]) is given up: forgotten, its message never sent.
    pub async fn cancel_transfer(&self, message_id: &str) -> Result<(), ClientError> {
        let id = parse_message_id(message_id)?;
        let running = {
            let mut canceled = self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?;
            let running = self.inner.uploading.lock().map_err(|_| ClientError::ShutDown)?;
            let running = running.contains(&id[..]);
            // A download in progress isn't in `uploading`; it looks at `canceled` likewise.
            canceled.insert(id.to_vec());
            running
        };
        if !running {
            delete_upload(&self.inner, &id).await?;
            // A download still running removes the mark when it notices; with none, nobody
            // would.
            if !self.inner.downloading.lock().map_err(|_| ClientError::ShutDown)?.contains(&id[..])
            {
                self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.remove(&id[..]);
            }
        }
        Ok(())
    }

    /// The uploads that have not finished (being sent now, or stopped and waiting), oldest
    /// first is not promised. Uploads from a path go on by themselves once the client is
    /// connected after a restart; the others wait for the user to give up.
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, ClientError> {
        let running = self.inner.uploading.lock().map_err(|_| ClientError::ShutDown)?.clone();
        Ok(load_uploads(&self.inner)
            .await?
            .into_iter()
            .map(|r| {
                let pointer = r.pointer.clone().unwrap_or_default();
                PendingUpload {
                    message_id: hex::encode(&r.message_id),
                    conversation: r.conversation.clone(),
                    file_name: pointer.file_name.clone(),
                    size: pointer.plaintext_len,
                    resumable: !r.path.is_empty(),
                    running: running.contains(&r.message_id),
                    problem: r.problem.clone(),
                }
            })
            .collect())
    }

    /// Downloads, checks and decrypts the attachment of a message; the whole file in memory.
    pub async fn download_attachment(&self, message_id: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.download_attachment_to(message_id, &mut out).await?;
        Ok(out)
    }

    /// Downloads the attachment of a message into the app's `sink`, in bounded memory: each
    /// piece once it authenticated; the file is whole and right only if this returns `Ok` (the
    /// digest is checked last). Unlike [`Client::save_attachment`], it can't go on after a
    /// restart (the SDK doesn't know what the sink kept): download again.
    pub async fn download_attachment_to(
        &self,
        message_id: &str,
        sink: &mut dyn AttachmentSink,
    ) -> Result<(), ClientError> {
        let id = parse_message_id(message_id)?;
        let (pointer, mut decryptor) = self.start_download(&id).await?;
        self.finish_download(&id, &pointer, &mut decryptor, sink).await?;
        decryptor.finish(&digest(&pointer)?)?;
        Ok(())
    }

    /// Downloads the attachment of a message to `dest`, in bounded memory: written to
    /// `dest` + `.part` as segments check, renamed to `dest` only once the whole blob and its
    /// digest checked.
    ///
    /// Resumable: if the call ends because the relay can't be reached (or the app stops or is
    /// killed), the `.part` file stays, and saving the same message to the same `dest` again,
    /// after a restart too, goes on from the last whole segment it holds (re-sealed to carry
    /// the digest on; a `.part` that is not this file's is caught by the digest and the file
    /// refused). Any other failure (a bad blob, a refusal, a cancel) removes the `.part`.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn save_attachment(
        &self,
        message_id: &str,
        dest: &std::path::Path,
    ) -> Result<(), ClientError> {
        let id = parse_message_id(message_id)?;
        let mut part = dest.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let io =
            |e: std::io::Error| ClientError::InvalidArgument(format!("{}: {e}", dest.display()));
        let (pointer, mut decryptor) = self.start_download(&id).await?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(io)?;
        let mut result = replay_part(&mut file, &mut decryptor).map_err(io);
        if result.is_ok() && decryptor.position() > 0 {
            progress(&self.inner, &id, false, decryptor.position(), pointer.blob_len);
        }
        if result.is_ok() {
            result = self.finish_download(&id, &pointer, &mut decryptor, &mut file).await;
        }
        let result = result
            .and_then(|()| digest(&pointer))
            .and_then(|d| Ok(decryptor.finish(&d)?))
            .and_then(|_| file.sync_all().map_err(io))
            .and_then(|()| std::fs::rename(&part, dest).map_err(io));
        // After a resumable failure what was written stays for the next try (a torn last
        // write is cut there by `replay_part`).
        if let Err(e) = &result
            && !resumable(e)
        {
            drop(file);
            let _ = std::fs::remove_file(&part);
        }
        result
    }

    async fn send_from(
        &self,
        conversation: &str,
        source: impl AttachmentSource,
        len: u64,
        meta: AttachmentMeta,
        path: Option<(String, u64)>,
    ) -> Result<String, ClientError> {
        if meta.file_name.len() > content::MAX_ATTACHMENT_LABEL_BYTES
            || meta.content_type.len() > content::MAX_ATTACHMENT_LABEL_BYTES
        {
            return Err(ClientError::InvalidArgument(
                "a file name and a content type have at most 255 bytes".into(),
            ));
        }
        if meta.thumbnail.len() > content::MAX_THUMBNAIL_BYTES {
            return Err(ClientError::InvalidArgument("a thumbnail has at most 64 KiB".into()));
        }
        // Checked before the upload: a message the conversation would refuse isn't uploaded.
        let chars = meta.caption.chars().count();
        if chars > content::MAX_TEXT_CHARS {
            return Err(ClientError::TextTooLong { chars, limit: content::MAX_TEXT_CHARS });
        }
        super::groups::parse_conversation(conversation)?;
        let id = match &meta.message_id {
            Some(id) => parse_message_id(id)?,
            None => {
                let mut id = [0u8; MESSAGE_ID_LEN];
                rand::RngExt::fill(&mut rand::rng(), &mut id[..]);
                id
            }
        };
        let key = AttachmentKey::generate(&mut rand::rng());
        let (path, modified_ns) = path.unwrap_or_default();
        // Filled in field by field: the pointer wipes its key on drop, so it has no
        // struct-update syntax.
        let mut pointer = content::Attachment::default();
        pointer.key = key.as_bytes().to_vec();
        pointer.plaintext_len = len;
        pointer.content_type = meta.content_type;
        pointer.file_name = meta.file_name;
        pointer.thumbnail = meta.thumbnail;
        pointer.width = meta.width;
        pointer.height = meta.height;
        pointer.duration_ms = meta.duration_ms;
        let record = UploadRecord {
            version: RECORD_VERSION,
            message_id: id.to_vec(),
            conversation: conversation.to_owned(),
            caption: meta.caption,
            pointer: Some(pointer),
            path,
            modified_ns,
            max_put: 0,
            problem: String::new(),
        };
        if !self.inner.uploading.lock().map_err(|_| ClientError::ShutDown)?.insert(id.to_vec()) {
            return Err(ClientError::InvalidArgument("that message id is being uploaded".into()));
        }
        // Written before the first byte goes out, so a restart finds the upload.
        let written = put_upload(&self.inner, &record).await;
        if let Err(e) = written {
            self.inner.uploading.lock().map_err(|_| ClientError::ShutDown)?.remove(&id[..]);
            return Err(e);
        }
        self.run_upload(record, source).await
    }

    /// Uploads (or goes on uploading) a recorded attachment, then sends its message. The
    /// caller has put the message id in `uploading`; this takes it out.
    async fn run_upload(
        &self,
        mut record: UploadRecord,
        source: impl AttachmentSource,
    ) -> Result<String, ClientError> {
        let id = record.message_id.clone();
        let uploaded = upload(&self.inner, &mut record, source).await;
        self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.remove(&id);
        let sent = match uploaded {
            Ok(sealed) => {
                let mut pointer = record.pointer.clone().unwrap_or_default();
                pointer.blob_len = sealed.blob_len;
                pointer.plaintext_len = sealed.plaintext_len;
                pointer.digest = sealed.digest.to_vec();
                let id: [u8; MESSAGE_ID_LEN] = id
                    .as_slice()
                    .try_into()
                    .map_err(|_| ClientError::Protocol("upload record".into()))?;
                // Deletes the upload record in the transaction that queues the message.
                self.send_message(&record.conversation, id, &record.caption, Some(pointer)).await
            }
            Err(e) => Err(e),
        };
        match &sent {
            Ok(_) => {}
            Err(e) if resumable(e) => {
                record.problem = e.code().to_owned();
                let _ = put_upload(&self.inner, &record).await;
            }
            Err(_) => {
                let _ = delete_upload(&self.inner, &id).await;
            }
        }
        self.inner.uploading.lock().map_err(|_| ClientError::ShutDown)?.remove(&id);
        sent
    }

    /// The pointer of a message's attachment and a decryptor for its blob.
    async fn start_download(
        &self,
        id: &[u8],
    ) -> Result<(content::Attachment, Decryptor), ClientError> {
        let pointer = self.pointer(id).await?;
        let key: [u8; 32] = pointer
            .key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("attachment key".into()))?;
        let decryptor = Decryptor::new(&AttachmentKey::from_bytes(key), pointer.blob_len);
        Ok((pointer, decryptor))
    }

    /// Downloads the rest of the blob from the decryptor's position, handing each checked
    /// piece of plaintext to `sink`. The caller checks the digest.
    async fn finish_download(
        &self,
        id: &[u8],
        pointer: &content::Attachment,
        decryptor: &mut Decryptor,
        sink: &mut dyn AttachmentSink,
    ) -> Result<(), ClientError> {
        self.inner.downloading.lock().map_err(|_| ClientError::ShutDown)?.insert(id.to_vec());
        let result = download(&self.inner, id, pointer, decryptor, sink).await;
        self.inner.downloading.lock().map_err(|_| ClientError::ShutDown)?.remove(id);
        self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.remove(id);
        result
    }
}

fn digest(pointer: &content::Attachment) -> Result<[u8; 32], ClientError> {
    pointer
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::Protocol("attachment digest".into()))
}

/// Whether a transfer that failed this way can go on later from where it stopped: the relay
/// could not be reached, or the client stopped.
fn resumable(e: &ClientError) -> bool {
    matches!(e, ClientError::Network(_) | ClientError::ShutDown)
}

/// Opens a file to upload: the file, its length and its modification time (ns).
#[cfg(not(target_arch = "wasm32"))]
fn open_file(path: &std::path::Path) -> Result<(std::fs::File, u64, u64), ClientError> {
    let io = |e: std::io::Error| ClientError::InvalidArgument(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok((file, meta.len(), modified))
}

async fn put_upload(inner: &Inner, record: &UploadRecord) -> Result<(), ClientError> {
    let mut tx = super::core::Tx::new(inner.store.as_ref(), &inner.vault);
    tx.put(Table::Meta, &keys::upload(&inner.vault, &record.message_id), &record.to_bytes());
    inner.commit_then_emit(tx, ()).await
}

/// Forgets an upload (done by the user giving up, or by a failure it can't come back from).
async fn delete_upload(inner: &Inner, message_id: &[u8]) -> Result<(), ClientError> {
    let mut tx = super::core::Tx::new(inner.store.as_ref(), &inner.vault);
    tx.batch.delete(Table::Meta, keys::upload(&inner.vault, message_id));
    inner.commit_then_emit(tx, ()).await
}

async fn load_uploads(inner: &Inner) -> Result<Vec<UploadRecord>, ClientError> {
    let rows = inner.store.scan(Scan::prefix(Table::Meta, meta::UPLOADS)).await?;
    rows.into_iter()
        .map(|(k, v)| Ok(UploadRecord::from_bytes(&inner.vault.open(Table::Meta, &k, &v)?)?))
        .collect()
}

/// Goes on with the uploads from a path that a previous run left unfinished, one after the
/// other, once the client is connected (each waits for the connection like any transfer). A
/// file that changed or went away since ends its upload with an [`Event::Error`]; each that
/// finishes sends its message as the original call would have.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn resume_uploads(client: Client) {
    let records = match load_uploads(&client.inner).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(code = e.code(), "cannot read the unfinished uploads");
            return;
        }
    };
    for record in records.into_iter().filter(|r| !r.path.is_empty()) {
        if client.inner.is_shut_down() {
            return;
        }
        let id = record.message_id.clone();
        let claimed = client.inner.uploading.lock().is_ok_and(|mut u| u.insert(id.clone()));
        if !claimed {
            continue;
        }
        let pointer = record.pointer.clone().unwrap_or_default();
        let opened =
            open_file(std::path::Path::new(&record.path)).and_then(|(f, len, modified)| {
                if len != pointer.plaintext_len || modified != record.modified_ns {
                    return Err(ClientError::InvalidArgument(format!(
                        "{} changed since its upload started; send it again",
                        record.path
                    )));
                }
                Ok(f)
            });
        let result = match opened {
            Ok(file) => client.run_upload(record, file).await,
            Err(e) => {
                let _ = delete_upload(&client.inner, &id).await;
                if let Ok(mut u) = client.inner.uploading.lock() {
                    u.remove(&id);
                }
                Err(e)
            }
        };
        if let Err(e) = result
            && !matches!(e, ClientError::ShutDown)
        {
            client.inner.events.emit(vec![Event::Error {
                code: e.code().to_owned(),
                message: format!(
                    "the upload of message {} stopped: {}",
                    hex::encode(&id),
                    e.message()
                ),
            }]);
        }
    }
}

/// Takes back into `decryptor` the whole segments a `.part` file kept from an earlier try
/// (see [`Decryptor::replay`]), cuts the file after them and leaves it positioned there.
#[cfg(not(target_arch = "wasm32"))]
fn replay_part(file: &mut std::fs::File, decryptor: &mut Decryptor) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut segment = zeroize::Zeroizing::new(vec![0u8; SEGMENT_LEN]);
    let mut kept = 0u64;
    file.seek(SeekFrom::Start(0))?;
    loop {
        match file.read_exact(&mut segment) {
            Ok(()) if decryptor.replay(&segment) => kept += SEGMENT_LEN as u64,
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    file.set_len(kept)?;
    file.seek(SeekFrom::Start(kept))?;
    Ok(())
}

impl Client {
    /// The attachment pointer of a stored message.
    async fn pointer(&self, id: &[u8]) -> Result<content::Attachment, ClientError> {
        let _core = self.inner.lock_for_app().await;
        let mut tx = super::core::Tx::new(self.inner.store.as_ref(), &self.inner.vault);
        let (_, m) = tx
            .message(id)
            .await?
            .ok_or_else(|| ClientError::InvalidArgument("no such message".into()))?;
        m.attachment
            .clone()
            .ok_or_else(|| ClientError::InvalidArgument("the message has no attachment".into()))
    }
}

fn parse_message_id(id: &str) -> Result<[u8; MESSAGE_ID_LEN], ClientError> {
    hex::decode(id.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ClientError::InvalidArgument("a message id is 32 hex digits".into()))
}

fn check_canceled(inner: &Inner, id: &[u8]) -> Result<(), ClientError> {
    match inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.contains(id) {
        true => Err(ClientError::Canceled),
        false => Ok(()),
    }
}

fn progress(inner: &Inner, id: &[u8], upload: bool, done: u64, total: u64) {
    inner.events.emit(vec![Event::TransferProgress {
        message_id: hex::encode(id),
        upload,
        done,
        total,
    }]);
}

/// The current link, waiting (boundedly) for the connection to come back.
async fn link(inner: &Inner, attempt: &mut u32) -> Result<std::sync::Arc<dyn Link>, ClientError> {
    loop {
        if inner.is_shut_down() {
            return Err(ClientError::ShutDown);
        }
        if let Some(l) = inner.current_link() {
            return Ok(l);
        }
        *attempt += 1;
        if *attempt > MAX_RECONNECTS {
            return Err(inner
                .last_failure()
                .unwrap_or_else(|| ClientError::Network("not connected to the relay".into())));
        }
        let mut state = inner.state.subscribe();
        let mut shutdown = inner.shutdown.subscribe();
        let connected = async {
            tokio::select! {
                _ = state.wait_for(|s| *s == super::types::ConnectionState::Connected) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        };
        let _ = crate::runtime::timeout(RECONNECT_WAIT, connected).await;
    }
}

/// Whether a failed request is worth retrying once the connection is back (the link broke),
/// as opposed to a refusal. Counts the failure against the transfer's bound and waits a moment
/// (the connection task notices a broken link and reconnects meanwhile).
async fn retry_after(e: &TransportError, attempt: &mut u32) -> bool {
    if matches!(e, TransportError::Relay(_)) || *attempt >= MAX_RECONNECTS {
        return false;
    }
    *attempt += 1;
    crate::runtime::sleep(std::time::Duration::from_millis(200)).await;
    true
}

/// Uploads the blob of `record`: into the blob it names if the relay still has it (from what
/// the relay committed: the file is encrypted again from the start, which gives the same bytes
/// under the same key, and what the relay holds is skipped), else into a new one, whose id is
/// written to the record before the first put.
async fn upload(
    inner: &Inner,
    record: &mut UploadRecord,
    source: impl AttachmentSource,
) -> Result<crate::attachment::Sealed, ClientError> {
    let id = record.message_id.clone();
    let pointer = record.pointer.clone().unwrap_or_default();
    let key: [u8; 32] = pointer
        .key
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::Protocol("upload key".into()))?;
    let key = AttachmentKey::from_bytes(key);
    let len = pointer.plaintext_len;
    let total = sealed_len(len);
    let mut attempt = 0;
    let mut committed = 0u64;
    let mut blob_id = pointer.blob_id.clone();
    if !blob_id.is_empty() {
        let status = loop {
            let l = link(inner, &mut attempt).await?;
            let status = wire::BlobStatus { blob_id: blob_id.clone() };
            match l.request(request::Body::BlobStatus(status)).await {
                Ok(response::Body::BlobProgress(p)) => break Some(p),
                Ok(_) => return Err(unexpected("BlobProgress")),
                // Expired, or swept: start a new blob.
                Err(TransportError::Relay(r)) if r.is(ErrorCode::UnknownBlob) => break None,
                Err(e) if retry_after(&e, &mut attempt).await => continue,
                Err(e) => return Err(e.into()),
            }
        };
        match status {
            Some(p) if p.size == total && p.committed <= total => committed = p.committed,
            _ => blob_id.clear(),
        }
    }
    if blob_id.is_empty() {
        let created = loop {
            let l = link(inner, &mut attempt).await?;
            match l.request(request::Body::BlobCreate(wire::BlobCreate { size: total })).await {
                Ok(response::Body::BlobCreated(c)) => break c,
                Ok(_) => return Err(unexpected("BlobCreated")),
                Err(e) if retry_after(&e, &mut attempt).await => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if created.max_put == 0 || created.blob_id.len() != 32 {
            return Err(ClientError::Protocol(
                "a BlobCreated without a put size or blob id".into(),
            ));
        }
        blob_id = created.blob_id;
        record.max_put = created.max_put;
        if let Some(p) = record.pointer.as_mut() {
            p.blob_id = blob_id.clone();
        }
        put_upload(inner, record).await?;
    }
    let max_put = usize::try_from(record.max_put).unwrap_or(0).max(SEGMENT_LEN);
    // `pending` holds ciphertext from blob offset `base` on: what is not yet acked, plus (on a
    // resumed upload) what is being skipped. At most one put plus a segment.
    let mut pending = Vec::with_capacity(max_put + SEGMENT_LEN + 64);
    let mut base = 0u64;
    let mut plain = Plaintext {
        encryptor: Some(Encryptor::with_len(&key, len, &mut pending)),
        source,
        buf: zeroize::Zeroizing::new(vec![0u8; SEGMENT_LEN]),
        read: 0,
        len,
        sealed: None,
    };
    if committed > 0 {
        progress(inner, &id, true, committed, total);
    }
    while committed < total {
        check_canceled(inner, &id)?;
        // Encrypt until a put's worth past `committed` is ready, or the file ends.
        loop {
            if base < committed {
                let skip =
                    usize::try_from(committed - base).unwrap_or(usize::MAX).min(pending.len());
                pending.drain(..skip);
                base += skip as u64;
            }
            if pending.len() >= max_put && base >= committed {
                break;
            }
            if !plain.encrypt_more(&mut pending).await? {
                break;
            }
        }
        if base != committed {
            return Err(ClientError::Protocol("the relay holds more than the file makes".into()));
        }
        let n = pending.len().min(max_put);
        let put = wire::BlobPut {
            blob_id: blob_id.clone(),
            offset: committed,
            data: pending.get(..n).unwrap_or_default().to_vec(),
        };
        let l = link(inner, &mut attempt).await?;
        let at = match l.request(request::Body::BlobPut(put)).await {
            Ok(response::Body::BlobProgress(p)) => p.committed,
            Ok(_) => return Err(unexpected("BlobProgress")),
            // The put may have landed before the link broke: ask what the relay holds.
            Err(e) if retry_after(&e, &mut attempt).await => {
                let l = link(inner, &mut attempt).await?;
                let status = wire::BlobStatus { blob_id: blob_id.clone() };
                match l.request(request::Body::BlobStatus(status)).await {
                    Ok(response::Body::BlobProgress(p)) => p.committed,
                    Ok(_) => return Err(unexpected("BlobProgress")),
                    Err(e) if retry_after(&e, &mut attempt).await => committed,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if at < committed || at > committed + n as u64 {
            return Err(ClientError::Protocol(
                "the relay reports an unexpected upload length".into(),
            ));
        }
        let acked = usize::try_from(at - committed).unwrap_or(0);
        pending.drain(..acked);
        base = at;
        committed = at;
        progress(inner, &id, true, committed, total);
    }
    // A resumed upload whose blob was already whole still reads the file to the end, for the
    // digest the pointer carries.
    while plain.encrypt_more(&mut pending).await? {
        pending.clear();
    }
    plain.sealed.ok_or_else(|| ClientError::Protocol("the upload ended early".into()))
}

/// An upload's plaintext being read and encrypted, piece by piece.
struct Plaintext<S> {
    /// `None` once the last segment is sealed.
    encryptor: Option<Encryptor>,
    source: S,
    buf: zeroize::Zeroizing<Vec<u8>>,
    /// Bytes read so far, against the `len` the blob was sized for.
    read: u64,
    len: u64,
    sealed: Option<crate::attachment::Sealed>,
}

impl<S: AttachmentSource> Plaintext<S> {
    /// Reads the next piece and appends its ciphertext to `out` (the last segment at the end
    /// of the file). Returns `false`, doing nothing, once everything is sealed; a file that
    /// turns out longer or shorter than `len` is an error.
    async fn encrypt_more(&mut self, out: &mut Vec<u8>) -> Result<bool, ClientError> {
        let Some(e) = self.encryptor.as_mut() else { return Ok(false) };
        let n = self.source.read(&mut self.buf).await?;
        self.read += n as u64;
        let changed = || ClientError::InvalidArgument("the file changed size".into());
        if n == 0 {
            if self.read != self.len {
                return Err(changed());
            }
            self.sealed = self.encryptor.take().map(|e| e.finish(out));
        } else if self.read > self.len {
            return Err(changed());
        } else {
            e.update(self.buf.get(..n).unwrap_or_default(), out);
        }
        Ok(true)
    }
}

async fn download(
    inner: &Inner,
    id: &[u8],
    pointer: &content::Attachment,
    decryptor: &mut Decryptor,
    sink: &mut dyn AttachmentSink,
) -> Result<(), ClientError> {
    type Answer = Result<response::Body, TransportError>;
    let mut attempt = 0;
    let mut plain = Vec::new();
    // Ranges asked for and not yet taken, in order; each is a request of its own running
    // beside the others, so the relay's per-request costs overlap.
    let mut waiting: std::collections::VecDeque<tokio::sync::oneshot::Receiver<Answer>> =
        Default::default();
    let mut asked = decryptor.position();
    // The relay may answer less than asked (its own cap); then ranges go by what it gives.
    let mut step = u64::from(GET_BYTES);
    while decryptor.position() < pointer.blob_len {
        check_canceled(inner, id)?;
        let l = link(inner, &mut attempt).await?;
        while waiting.len() < GETS_IN_FLIGHT && asked < pointer.blob_len {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let get = wire::BlobGet {
                blob_id: pointer.blob_id.clone(),
                offset: asked,
                max_len: u32::try_from(step).unwrap_or(GET_BYTES),
            };
            let l = std::sync::Arc::clone(&l);
            crate::runtime::spawn(async move {
                let _ = tx.send(l.request(request::Body::BlobGet(get)).await);
            });
            waiting.push_back(rx);
            asked += step;
        }
        let Some(next) = waiting.pop_front() else { break };
        let answer = next
            .await
            .unwrap_or_else(|_| Err(TransportError::Disconnected("request dropped".into())));
        let data = match answer {
            Ok(response::Body::BlobData(d)) => d,
            Ok(_) => return Err(unexpected("BlobData")),
            Err(e) if retry_after(&e, &mut attempt).await => {
                // Ask again from what was checked; answers still coming are dropped.
                waiting.clear();
                asked = decryptor.position();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if data.offset != decryptor.position() {
            return Err(ClientError::Protocol("a blob range from the wrong offset".into()));
        }
        if data.data.is_empty() {
            // The relay's blob ends before the pointer's.
            return Err(crate::attachment::AttachmentError::Truncated.into());
        }
        let end = data.offset + data.data.len() as u64;
        if (data.data.len() as u64) < step && end < pointer.blob_len {
            // A shorter answer than asked: the relay's cap. The ranges asked after it are
            // off; ask again from its end in steps of what it gives.
            step = data.data.len() as u64;
            waiting.clear();
            asked = end;
        }
        plain.clear();
        decryptor.update(&data.data, &mut plain)?;
        sink.write(&plain).await?;
        progress(inner, id, false, decryptor.position(), pointer.blob_len);
    }
    Ok(())
}
