//! The browser's files and streams as the SDK's attachment sources and sinks. `sendFile`
//! reads a `Blob` (a `File` is one) slice by slice, or a `ReadableStream` chunk by chunk, so a
//! file of any size is uploaded in bounded memory instead of being read into one buffer
//! first; a `Uint8Array` is taken as it is. `downloadAttachmentTo` writes into a
//! `WritableStream` (a file from the File System Access API, a stream to a service worker…).
//!
//! Guarantees: at most one slice (64 KiB) or one stream chunk is held beside the upload's own
//! buffer; a stream that gives something other than `Uint8Array` chunks, or whose read or
//! write fails, ends the transfer with `invalid_argument`; a download that fails aborts the
//! writable stream (so its consumer sees an error, not a short file), and one that succeeds
//! closes it.

use async_trait::async_trait;
use hush_core::{AttachmentSink, AttachmentSource, ClientError};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A file to upload, as JavaScript handed it over.
pub(crate) enum Input {
    Bytes(Vec<u8>),
    Blob(BlobSource),
    Stream(StreamSource),
}

impl Input {
    /// Recognises a `Uint8Array`, a `Blob`/`File` or a `ReadableStream`; `size` is needed for
    /// a stream (its length is not known in advance), and ignored otherwise.
    pub(crate) fn from_js(value: &JsValue, size: Option<f64>) -> Result<(Self, u64), String> {
        if let Some(bytes) = value.dyn_ref::<js_sys::Uint8Array>() {
            let bytes = bytes.to_vec();
            let len = bytes.len() as u64;
            return Ok((Self::Bytes(bytes), len));
        }
        if method(value, "slice").is_some()
            && let Some(size) = get(value, "size").as_f64()
        {
            return Ok((
                Self::Blob(BlobSource { blob: value.clone(), at: 0.0, size }),
                size as u64,
            ));
        }
        if let Some(get_reader) = method(value, "getReader") {
            let reader = get_reader.call0(value).map_err(|e| describe(&e))?;
            let size = size.ok_or("a ReadableStream needs details.size (its length in bytes)")?;
            return Ok((
                Self::Stream(StreamSource { reader, chunk: Vec::new(), at: 0 }),
                size as u64,
            ));
        }
        Err("a file is a Uint8Array, a Blob or File, or a ReadableStream".into())
    }
}

/// A `Blob` read in slices.
pub(crate) struct BlobSource {
    blob: JsValue,
    at: f64,
    size: f64,
}

#[async_trait(?Send)]
impl AttachmentSource for BlobSource {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if self.at >= self.size {
            return Ok(0);
        }
        let end = (self.at + buf.len() as f64).min(self.size);
        let slice = method(&self.blob, "slice")
            .ok_or_else(|| bad("no slice method"))?
            .call2(&self.blob, &self.at.into(), &end.into())
            .map_err(|e| bad(&describe(&e)))?;
        let bytes = js_sys::Uint8Array::new(&call(&slice, "arrayBuffer", &[]).await?);
        let n = bytes.length() as usize;
        let dest = buf.get_mut(..n).ok_or_else(|| bad("a Blob slice longer than asked"))?;
        bytes.copy_to(dest);
        self.at += n as f64;
        Ok(n)
    }
}

/// A `ReadableStream` of `Uint8Array` chunks, through its reader.
pub(crate) struct StreamSource {
    reader: JsValue,
    /// The chunk being handed out, from `at` on.
    chunk: Vec<u8>,
    at: usize,
}

#[async_trait(?Send)]
impl AttachmentSource for StreamSource {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        while self.at >= self.chunk.len() {
            let next = call(&self.reader, "read", &[]).await?;
            if get(&next, "done").as_bool() == Some(true) {
                return Ok(0);
            }
            let value = get(&next, "value");
            let chunk = value
                .dyn_ref::<js_sys::Uint8Array>()
                .ok_or_else(|| bad("a ReadableStream chunk that is not a Uint8Array"))?;
            self.chunk = chunk.to_vec();
            self.at = 0;
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        Ok(n)
    }
}

#[async_trait(?Send)]
impl AttachmentSource for Input {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        match self {
            // Taken whole by `sendFile`; never read through here.
            Self::Bytes(_) => Ok(0),
            Self::Blob(b) => b.read(buf).await,
            Self::Stream(s) => s.read(buf).await,
        }
    }
}

/// A `WritableStream`, through its writer.
pub(crate) struct WritableSink {
    writer: JsValue,
}

impl WritableSink {
    pub(crate) fn from_js(stream: &JsValue) -> Result<Self, String> {
        let get_writer =
            method(stream, "getWriter").ok_or("downloadAttachmentTo takes a WritableStream")?;
        Ok(Self { writer: get_writer.call0(stream).map_err(|e| describe(&e))? })
    }

    /// Closes the stream after a download that checked, or aborts it with the error.
    pub(crate) async fn end(self, error: Option<&JsValue>) -> Result<(), ClientError> {
        match error {
            None => call(&self.writer, "close", &[]).await.map(|_| ()),
            Some(e) => call(&self.writer, "abort", &[e.clone()]).await.map(|_| ()),
        }
    }
}

#[async_trait(?Send)]
impl AttachmentSink for WritableSink {
    async fn write(&mut self, plaintext: &[u8]) -> Result<(), ClientError> {
        call(&self.writer, "write", &[js_sys::Uint8Array::from(plaintext).into()]).await.map(|_| ())
    }
}

fn get(value: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

fn method(value: &JsValue, name: &str) -> Option<js_sys::Function> {
    if !value.is_object() {
        return None;
    }
    get(value, name).dyn_into::<js_sys::Function>().ok()
}

/// Calls `name` on `target` and awaits the Promise it returns.
async fn call(target: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, ClientError> {
    let f = method(target, name).ok_or_else(|| bad(&format!("no {name} method")))?;
    let array: js_sys::Array = args.iter().collect();
    let promise = f.apply(target, &array).map_err(|e| bad(&describe(&e)))?;
    let promise = promise.dyn_into::<js_sys::Promise>().map_err(|_| bad("not a Promise"))?;
    JsFuture::from(promise).await.map_err(|e| bad(&describe(&e)))
}

fn describe(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| get(e, "message").as_string())
        .unwrap_or_else(|| "the browser refused".into())
}

fn bad(detail: &str) -> ClientError {
    ClientError::InvalidArgument(format!("reading the file: {detail}"))
}
