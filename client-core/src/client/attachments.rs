//! Attachments (docs/PROTOCOL.md §14.16, §18): a file is encrypted in segments as it is read,
//! uploaded to the relay's blob store in puts, and sent as a pointer in an ordinary message
//! (1:1 or group; its caption is the message's text); a received one is downloaded in ranges,
//! checked and decrypted.
//!
//! Guarantees:
//! - memory stays bounded whatever the file's size: at most one put of ciphertext (about 1 MB)
//!   and one segment are held on upload, one read on download;
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
use crate::transport::{Link, TransportError};

/// Bytes asked for per download request (the relay caps it at its own limit).
const GET_BYTES: u32 = 1_024_000;
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

/// Where an upload reads its plaintext from.
pub(crate) trait Source: Send {
    /// Fills `buf` from the front; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError>;
}

impl Source for std::io::Cursor<Vec<u8>> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        std::io::Read::read(self, buf).map_err(|e| ClientError::InvalidArgument(e.to_string()))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Source for std::fs::File {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        std::io::Read::read(self, buf)
            .map_err(|e| ClientError::InvalidArgument(format!("reading the file: {e}")))
    }
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
        self.send_from(conversation, std::io::Cursor::new(bytes), len, meta).await
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
        let file = std::fs::File::open(path)
            .map_err(|e| ClientError::InvalidArgument(format!("{}: {e}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| ClientError::InvalidArgument(format!("{}: {e}", path.display())))?
            .len();
        self.send_from(conversation, file, len, meta).await
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
    /// `canceled`. Nothing is sent for a canceled upload.
    pub fn cancel_transfer(&self, message_id: &str) -> Result<(), ClientError> {
        let id = parse_message_id(message_id)?;
        self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.insert(id.to_vec());
        Ok(())
    }

    /// Downloads, checks and decrypts the attachment of a message; the whole file in memory.
    pub async fn download_attachment(&self, message_id: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.download_into(message_id, &mut |plain: &[u8]| {
            out.extend_from_slice(plain);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Downloads the attachment of a message to `dest`, in bounded memory: written to
    /// `dest` + `.part` as segments check, renamed to `dest` only once the whole blob and its
    /// digest checked, and removed on any failure.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn save_attachment(
        &self,
        message_id: &str,
        dest: &std::path::Path,
    ) -> Result<(), ClientError> {
        use std::io::Write;
        let mut part = dest.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let io =
            |e: std::io::Error| ClientError::InvalidArgument(format!("{}: {e}", dest.display()));
        let mut file = std::fs::File::create(&part).map_err(io)?;
        let result = self
            .download_into(message_id, &mut |plain: &[u8]| file.write_all(plain).map_err(io))
            .await
            .and_then(|()| file.sync_all().map_err(io))
            .and_then(|()| std::fs::rename(&part, dest).map_err(io));
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result
    }

    async fn send_from(
        &self,
        conversation: &str,
        source: impl Source,
        len: u64,
        meta: AttachmentMeta,
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
        let uploaded = upload(&self.inner, &id, &key, source, len).await;
        self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.remove(&id[..]);
        let (blob_id, sealed) = uploaded?;
        let pointer = content::Attachment {
            blob_id,
            key: key.as_bytes().to_vec(),
            plaintext_len: sealed.plaintext_len,
            blob_len: sealed.blob_len,
            digest: sealed.digest.to_vec(),
            content_type: meta.content_type,
            file_name: meta.file_name,
            thumbnail: meta.thumbnail,
            width: meta.width,
            height: meta.height,
            duration_ms: meta.duration_ms,
        };
        self.send_message(conversation, id, &meta.caption, Some(pointer)).await
    }

    async fn download_into(
        &self,
        message_id: &str,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), ClientError> + Send),
    ) -> Result<(), ClientError> {
        let id = parse_message_id(message_id)?;
        let pointer = self.pointer(&id).await?;
        let key: [u8; 32] = pointer
            .key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("attachment key".into()))?;
        let digest: [u8; 32] = pointer
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("attachment digest".into()))?;
        let mut decryptor = Decryptor::new(&AttachmentKey::from_bytes(key), pointer.blob_len);
        let result = download(&self.inner, &id, &pointer, &mut decryptor, sink).await;
        self.inner.canceled.lock().map_err(|_| ClientError::ShutDown)?.remove(&id[..]);
        result?;
        decryptor.finish(&digest)?;
        Ok(())
    }
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
        let connected = state.wait_for(|s| *s == super::types::ConnectionState::Connected);
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

async fn upload(
    inner: &Inner,
    id: &[u8],
    key: &AttachmentKey,
    mut source: impl Source,
    len: u64,
) -> Result<(Vec<u8>, crate::attachment::Sealed), ClientError> {
    let total = sealed_len(len);
    let mut attempt = 0;
    let created = loop {
        let l = link(inner, &mut attempt).await?;
        match l.request(request::Body::BlobCreate(wire::BlobCreate { size: total })).await {
            Ok(response::Body::BlobCreated(c)) => break c,
            Ok(_) => return Err(unexpected("BlobCreated")),
            Err(e) if retry_after(&e, &mut attempt).await => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let max_put = usize::try_from(created.max_put).unwrap_or(0);
    if max_put == 0 || created.blob_id.len() != 32 {
        return Err(ClientError::Protocol("a BlobCreated without a put size or blob id".into()));
    }
    // `pending` holds the ciphertext not yet acked, from `committed` on: at most one put
    // plus a segment.
    let mut pending = Vec::with_capacity(max_put + SEGMENT_LEN + 64);
    let mut encryptor = Some(Encryptor::new(key, &mut pending));
    let mut sealed = None;
    let mut committed = 0u64;
    let mut buf = vec![0u8; SEGMENT_LEN];
    let mut read = 0u64;
    while committed < total {
        check_canceled(inner, id)?;
        // Encrypt until a put's worth is ready, or the file ends.
        while pending.len() < max_put
            && let Some(e) = encryptor.as_mut()
        {
            let n = source.read(&mut buf)?;
            read += n as u64;
            if n == 0 {
                if read != len {
                    return Err(ClientError::InvalidArgument("the file changed size".into()));
                }
                sealed = encryptor.take().map(|e| e.finish(&mut pending));
                break;
            }
            if read > len {
                return Err(ClientError::InvalidArgument("the file changed size".into()));
            }
            e.update(buf.get(..n).unwrap_or_default(), &mut pending);
        }
        let n = pending.len().min(max_put);
        let put = wire::BlobPut {
            blob_id: created.blob_id.clone(),
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
                let status = wire::BlobStatus { blob_id: created.blob_id.clone() };
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
        committed = at;
        progress(inner, id, true, committed, total);
    }
    let sealed = sealed.ok_or_else(|| ClientError::Protocol("the upload ended early".into()))?;
    Ok((created.blob_id, sealed))
}

async fn download(
    inner: &Inner,
    id: &[u8],
    pointer: &content::Attachment,
    decryptor: &mut Decryptor,
    sink: &mut (dyn FnMut(&[u8]) -> Result<(), ClientError> + Send),
) -> Result<(), ClientError> {
    let mut attempt = 0;
    let mut plain = Vec::new();
    while decryptor.position() < pointer.blob_len {
        check_canceled(inner, id)?;
        let get = wire::BlobGet {
            blob_id: pointer.blob_id.clone(),
            offset: decryptor.position(),
            max_len: GET_BYTES,
        };
        let l = link(inner, &mut attempt).await?;
        let data = match l.request(request::Body::BlobGet(get)).await {
            Ok(response::Body::BlobData(d)) => d,
            Ok(_) => return Err(unexpected("BlobData")),
            Err(e) if retry_after(&e, &mut attempt).await => continue,
            Err(e) => return Err(e.into()),
        };
        if data.offset != decryptor.position() {
            return Err(ClientError::Protocol("a blob range from the wrong offset".into()));
        }
        if data.data.is_empty() {
            // The relay's blob ends before the pointer's.
            return Err(crate::attachment::AttachmentError::Truncated.into());
        }
        plain.clear();
        decryptor.update(&data.data, &mut plain)?;
        sink(&plain)?;
        progress(inner, id, false, decryptor.position(), pointer.blob_len);
    }
    Ok(())
}
