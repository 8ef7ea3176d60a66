//! [`IndexedDbStore`]: the client store in the browser's IndexedDB, so a page reload keeps the
//! account, sessions, outbox and history.
//!
//! One IndexedDB database per store; one object store per [`Table`], with binary keys, which
//! IndexedDB orders byte-wise exactly as the [`Store`] contract requires. A [`Batch`] is one
//! `readwrite` transaction over every table it touches, with `durability: "strict"`, and
//! [`Store::commit`] resolves only on the transaction's `complete` event: atomic and durable,
//! as on native. Values arrive already sealed by the client's vault, so what IndexedDB holds
//! on disk is ciphertext under the app's store key.
//!
//! The IndexedDB calls are a few lines of JavaScript (below): its request/event API is far
//! simpler to drive from JS than through `web-sys` callbacks, and it has no logic to test
//! beyond what the conformance suite checks.

use async_trait::async_trait;
use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::js_error;
use crate::store::{Batch, Op, Scan, Store, StoreError, Table};

#[wasm_bindgen(inline_js = r#"
export function hushIdbLock(name) {
  // Resolves with a release function, or null when another tab holds the store.
  if (!globalThis.navigator?.locks) return Promise.resolve(() => {});
  return new Promise((resolve, reject) => {
    navigator.locks.request(`hush-store:${name}`, { ifAvailable: true }, (lock) => {
      if (!lock) { resolve(null); return undefined; }
      return new Promise((release) => resolve(release));
    }).catch(reject);
  });
}
export function hushIdbOpen(name, tables) {
  return new Promise((resolve, reject) => {
    // Each version holds every table of Table::ALL at the time (1: the 1:1 tables; 2: adds
    // groups and sender_keys); a release that adds a table bumps it and onupgradeneeded
    // creates the missing stores.
    const req = indexedDB.open(name, 2);
    req.onupgradeneeded = () => {
      const db = req.result;
      for (const t of tables) if (!db.objectStoreNames.contains(t)) db.createObjectStore(t);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the database is held open by an older version"));
  });
}
export function hushIdbGetMany(db, table, keys) {
  return new Promise((resolve, reject) => {
    const store = db.transaction(table, "readonly").objectStore(table);
    const out = new Array(keys.length).fill(null);
    if (keys.length === 0) { resolve(out); return; }
    let left = keys.length;
    keys.forEach((k, i) => {
      const req = store.get(k);
      req.onsuccess = () => {
        if (req.result !== undefined) out[i] = req.result;
        if (--left === 0) resolve(out);
      };
      req.onerror = () => reject(req.error);
    });
  });
}
export function hushIdbScan(db, table, start, end, reverse, limit) {
  return new Promise((resolve, reject) => {
    const range = end === null
      ? IDBKeyRange.lowerBound(start)
      : IDBKeyRange.bound(start, end, false, true);
    const out = [];
    const req = db.transaction(table, "readonly").objectStore(table)
      .openCursor(range, reverse ? "prev" : "next");
    req.onsuccess = () => {
      const c = req.result;
      if (!c || (limit > 0 && out.length >= 2 * limit)) { resolve(out); return; }
      out.push(new Uint8Array(c.key), c.value);
      c.continue();
    };
    req.onerror = () => reject(req.error);
  });
}
export function hushIdbCommit(db, tables, ops) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(tables, "readwrite", { durability: "strict" });
    try {
      for (let i = 0; i < ops.length; i += 3) {
        const store = tx.objectStore(ops[i]);
        if (ops[i + 2] === null) store.delete(ops[i + 1]); else store.put(ops[i + 2], ops[i + 1]);
      }
    } catch (e) {
      // All or nothing: what was queued before the throw must not commit.
      tx.abort();
      reject(e);
      return;
    }
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = hushIdbLock)]
    fn idb_lock(name: &str) -> Promise;
    #[wasm_bindgen(js_name = hushIdbOpen)]
    fn idb_open(name: &str, tables: Array) -> Promise;
    #[wasm_bindgen(js_name = hushIdbGetMany)]
    fn idb_get_many(db: &JsValue, table: &str, keys: Array) -> Promise;
    #[wasm_bindgen(js_name = hushIdbScan)]
    fn idb_scan(
        db: &JsValue,
        table: &str,
        start: Uint8Array,
        end: JsValue,
        reverse: bool,
        limit: u32,
    ) -> Promise;
    #[wasm_bindgen(js_name = hushIdbCommit)]
    fn idb_commit(db: &JsValue, tables: Array, ops: Array) -> Promise;
}

/// Attempts (50 ms apart) to take a store's lock before reporting it held elsewhere.
const LOCK_TRIES: u32 = 20;

fn backend(e: JsValue) -> StoreError {
    StoreError::Backend(format!("IndexedDB: {}", js_error(&e)))
}

fn bytes(value: &JsValue) -> Result<Vec<u8>, StoreError> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .ok_or_else(|| StoreError::Backend("IndexedDB: a stored value is not bytes".into()))
}

/// The client store in IndexedDB (see the module docs).
#[derive(Debug)]
pub struct IndexedDbStore {
    db: JsValue,
    /// Releases this tab's Web Lock on the store.
    release: js_sys::Function,
}

impl IndexedDbStore {
    /// Opens (creating if needed) the IndexedDB database `name` of this origin.
    ///
    /// One tab at a time: the store holds a Web Lock (`navigator.locks`) named after the
    /// database until it is dropped, and a second open while it is held fails with
    /// [`StoreError::Locked`], as a second process opening a native store does. Two clients
    /// on one store would each run the ratchet on the same sessions and corrupt them.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        // A lock released a moment ago (the previous page of a reload, a store just dropped)
        // may still be settling: wait up to a second before calling the store taken.
        let mut tries = 0;
        let release: js_sys::Function = loop {
            let lock = JsFuture::from(idb_lock(name)).await.map_err(backend)?;
            match lock.dyn_into() {
                Ok(release) => break release,
                Err(_) if tries < LOCK_TRIES => {
                    tries += 1;
                    crate::runtime::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(_) => return Err(StoreError::Locked),
            }
        };
        let tables: Array = Table::ALL.iter().map(|t| JsValue::from_str(t.name())).collect();
        let db = match JsFuture::from(idb_open(name, tables)).await {
            Ok(db) => db,
            Err(e) => {
                let _ = release.call0(&JsValue::NULL);
                return Err(backend(e));
            }
        };
        Ok(Self { db, release })
    }
}

impl Drop for IndexedDbStore {
    fn drop(&mut self) {
        // Close the connection first, so the next holder of the lock can open (and, after a
        // version change, upgrade) the database at once.
        if let Ok(close) = js_sys::Reflect::get(&self.db, &"close".into())
            && let Some(close) = close.dyn_ref::<js_sys::Function>()
        {
            let _ = close.call0(&self.db);
        }
        let _ = self.release.call0(&JsValue::NULL);
    }
}

#[async_trait(?Send)]
impl Store for IndexedDbStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_many(table, vec![key.to_vec()]).await?.pop().flatten())
    }

    async fn get_many(
        &self,
        table: Table,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Array =
            keys.iter().map(|k| JsValue::from(Uint8Array::from(k.as_slice()))).collect();
        let found =
            JsFuture::from(idb_get_many(&self.db, table.name(), keys)).await.map_err(backend)?;
        Array::from(&found)
            .iter()
            .map(|v| if v.is_null() { Ok(None) } else { bytes(&v).map(Some) })
            .collect()
    }

    async fn scan(&self, scan: Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        // IndexedDB refuses an empty or inverted range; the contract says it is just empty.
        if !scan.end.is_empty() && scan.end <= scan.start {
            return Ok(Vec::new());
        }
        let end = if scan.end.is_empty() {
            JsValue::NULL
        } else {
            Uint8Array::from(scan.end.as_slice()).into()
        };
        let limit = u32::try_from(scan.limit).unwrap_or(u32::MAX);
        let flat = JsFuture::from(idb_scan(
            &self.db,
            scan.table.name(),
            Uint8Array::from(scan.start.as_slice()),
            end,
            scan.reverse,
            limit,
        ))
        .await
        .map_err(backend)?;
        let flat = Array::from(&flat);
        let mut out = Vec::with_capacity((flat.length() / 2) as usize);
        let mut items = flat.iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            out.push((bytes(&k)?, bytes(&v)?));
        }
        Ok(out)
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tables: Vec<&'static str> = Vec::new();
        let ops = Array::new();
        for op in batch.into_ops() {
            let (table, key, value) = match op {
                Op::Put(t, k, v) => (t, k, JsValue::from(Uint8Array::from(v.as_slice()))),
                Op::Delete(t, k) => (t, k, JsValue::NULL),
            };
            if !tables.contains(&table.name()) {
                tables.push(table.name());
            }
            ops.push(&JsValue::from_str(table.name()));
            ops.push(&Uint8Array::from(key.as_slice()));
            ops.push(&value);
        }
        let tables: Array = tables.into_iter().map(JsValue::from_str).collect();
        JsFuture::from(idb_commit(&self.db, tables, ops)).await.map_err(backend)?;
        Ok(())
    }
}
