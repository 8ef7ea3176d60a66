//! The SHA-256 of an attachment blob (docs/PROTOCOL.md §18), computed beside its encryption or
//! decryption: on a second core where there is one, so that hashing the blob doesn't add its
//! whole cost to the cipher's.
//!
//! Hashing is as fast as ChaCha20-Poly1305 within a factor of two, and the blob has to be
//! hashed in order, so done inline it adds about half again to the construction's time
//! (docs/BENCHMARKS.md). Here the first [`INLINE_BYTES`] are hashed in place (a small file
//! never starts a thread); past that, the bytes are handed in batches of [`BATCH`] to a thread
//! of the digest's own that hashes them in order while the caller goes on.
//!
//! Guarantees: the digest is the SHA-256 of exactly the bytes given, in order, whichever way
//! it was computed; at most `(QUEUED + 2) × BATCH` bytes (about 1 MiB) are held; no thread
//! outlives its digest by more than the batch it is hashing (dropping the digest closes the
//! channel the thread reads). In the browser (no threads) and where a thread can't be started,
//! everything is hashed in place.

use sha2::{Digest, Sha256};

/// Bytes hashed in place before a thread is worth starting.
#[cfg(not(target_arch = "wasm32"))]
const INLINE_BYTES: u64 = 1 << 20;
/// Bytes handed to the thread at a time.
#[cfg(not(target_arch = "wasm32"))]
const BATCH: usize = 256 * 1024;
/// Batches waiting for the thread before the caller waits for it.
#[cfg(not(target_arch = "wasm32"))]
const QUEUED: usize = 2;

/// A running SHA-256 of a blob.
pub(crate) struct BlobDigest {
    state: State,
}

enum State {
    Inline {
        hasher: Sha256,
        seen: u64,
    },
    #[cfg(not(target_arch = "wasm32"))]
    Thread(Worker),
}

#[cfg(not(target_arch = "wasm32"))]
struct Worker {
    /// Bytes not yet handed over.
    batch: Vec<u8>,
    to: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Emptied batches coming back, so the buffers are reused rather than allocated anew.
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<[u8; 32]>,
}

impl BlobDigest {
    pub(crate) fn new() -> Self {
        Self { state: State::Inline { hasher: Sha256::new(), seen: 0 } }
    }

    /// Takes the next bytes of the blob.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Inline { hasher, seen } => {
                hasher.update(bytes);
                *seen += bytes.len() as u64;
                #[cfg(not(target_arch = "wasm32"))]
                if *seen >= INLINE_BYTES
                    && let Some(worker) = Worker::start(hasher.clone())
                {
                    self.state = State::Thread(worker);
                }
            }
            #[cfg(not(target_arch = "wasm32"))]
            State::Thread(w) => {
                w.batch.extend_from_slice(bytes);
                if w.batch.len() >= BATCH {
                    w.hand_over();
                }
            }
        }
    }

    /// The digest of everything given.
    ///
    /// The thread can't fail (it only hashes), so its digest always comes back; if it ever
    /// didn't, the result is all zeros, which matches no blob: the transfer is refused as
    /// `digest_mismatch`, never accepted.
    pub(crate) fn finish(self) -> [u8; 32] {
        match self.state {
            State::Inline { hasher, .. } => hasher.finalize().into(),
            #[cfg(not(target_arch = "wasm32"))]
            State::Thread(mut w) => {
                if !w.batch.is_empty() {
                    w.hand_over();
                }
                let Worker { to, thread, .. } = w;
                drop(to);
                thread.join().unwrap_or([0u8; 32])
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Worker {
    fn start(mut hasher: Sha256) -> Option<Self> {
        let (to, from) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (give_back, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("hush-digest".into())
            .spawn(move || {
                for mut batch in from {
                    hasher.update(&batch);
                    batch.clear();
                    // The digest may be done with the buffers already; nothing to do then.
                    let _ = give_back.send(batch);
                }
                hasher.finalize().into()
            })
            .ok()?;
        Some(Self { batch: Vec::with_capacity(BATCH + BATCH / 2), to, back, thread })
    }

    fn hand_over(&mut self) {
        let fresh = self.back.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH + BATCH / 2));
        let full = std::mem::replace(&mut self.batch, fresh);
        if let Err(std::sync::mpsc::SendError(full)) = self.to.send(full) {
            // The thread is gone (it can't be, short of the process ending): keep the bytes
            // so the digest comes out wrong rather than silently shorter.
            self.batch = full;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Any slicing of any length, across the switch to the thread, gives SHA-256.
        #[test]
        fn same_digest_as_sha256(len in 0usize..(3 << 20), piece in 1usize..300_000) {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let mut d = BlobDigest::new();
            for chunk in data.chunks(piece) {
                d.update(chunk);
            }
            let want: [u8; 32] = Sha256::digest(&data).into();
            prop_assert_eq!(d.finish(), want);
        }
    }
}
