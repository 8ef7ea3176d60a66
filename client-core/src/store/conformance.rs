//! The conformance suite every [`Store`] backend must pass.
//!
//! Backends call [`run`] from a test (native: `tests/store.rs`; browser: a
//! `wasm-bindgen-test`). It returns the first violated expectation as an error, so it can run
//! under any test harness without panicking inside library code.

use super::{Batch, Scan, Store, Table, prefix_end};

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("store conformance: {what}")) }
}

/// Runs every check against an empty store.
pub async fn run(store: &dyn Store) -> Result<(), String> {
    let e = |e: super::StoreError| format!("store conformance: backend error {e}");

    // Empty store.
    check(store.get(Table::Meta, b"x").await.map_err(e)?.is_none(), "empty get is None")?;
    check(
        store.scan(Scan::prefix(Table::Messages, b"")).await.map_err(e)?.is_empty(),
        "empty scan is empty",
    )?;

    // Put, get, overwrite; tables are independent.
    let mut b = Batch::new();
    b.put(Table::Meta, b"k".to_vec(), b"v1".to_vec());
    b.put(Table::Sessions, b"k".to_vec(), b"other".to_vec());
    store.commit(b).await.map_err(e)?;
    check(store.get(Table::Meta, b"k").await.map_err(e)? == Some(b"v1".to_vec()), "get after put")?;
    check(
        store.get(Table::Sessions, b"k").await.map_err(e)? == Some(b"other".to_vec()),
        "tables are independent",
    )?;
    let mut b = Batch::new();
    b.put(Table::Meta, b"k".to_vec(), b"v2".to_vec());
    store.commit(b).await.map_err(e)?;
    check(store.get(Table::Meta, b"k").await.map_err(e)? == Some(b"v2".to_vec()), "overwrite")?;

    // Later ops in one batch win; delete of an absent key is fine; empty values round-trip.
    let mut b = Batch::new();
    b.put(Table::Meta, b"a".to_vec(), b"1".to_vec());
    b.delete(Table::Meta, b"a".to_vec());
    b.delete(Table::Meta, b"absent".to_vec());
    b.put(Table::Meta, b"empty".to_vec(), Vec::new());
    b.put(Table::Meta, b"b".to_vec(), b"1".to_vec());
    b.put(Table::Meta, b"b".to_vec(), b"2".to_vec());
    store.commit(b).await.map_err(e)?;
    check(
        store.get(Table::Meta, b"a").await.map_err(e)?.is_none(),
        "put then delete in one batch",
    )?;
    check(store.get(Table::Meta, b"b").await.map_err(e)? == Some(b"2".to_vec()), "last put wins")?;
    check(store.get(Table::Meta, b"empty").await.map_err(e)? == Some(Vec::new()), "empty value")?;

    // Ordered scans: byte order, prefixes, reverse, limits, bounds.
    let mut b = Batch::new();
    for key in [&b"p\x00"[..], b"p\x01", b"p\xff", b"p\xff\xff", b"q", b"o\xff"] {
        b.put(Table::Messages, key.to_vec(), key.to_vec());
    }
    store.commit(b).await.map_err(e)?;
    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let all = keys(store.scan(Scan::prefix(Table::Messages, b"p")).await.map_err(e)?);
    check(
        all == vec![b"p\x00".to_vec(), b"p\x01".to_vec(), b"p\xff".to_vec(), b"p\xff\xff".to_vec()],
        "prefix scan returns exactly the prefix, in byte order",
    )?;
    let mut rev = Scan::prefix(Table::Messages, b"p");
    rev.reverse = true;
    rev.limit = 2;
    let newest = keys(store.scan(rev).await.map_err(e)?);
    check(newest == vec![b"p\xff\xff".to_vec(), b"p\xff".to_vec()], "reverse scan with limit")?;
    let range = Scan {
        table: Table::Messages,
        start: b"p\x01".to_vec(),
        end: b"p\xff\xff".to_vec(),
        reverse: false,
        limit: 0,
    };
    check(
        keys(store.scan(range).await.map_err(e)?) == vec![b"p\x01".to_vec(), b"p\xff".to_vec()],
        "range is [start, end)",
    )?;
    let unbounded = Scan {
        table: Table::Messages,
        start: b"q".to_vec(),
        end: Vec::new(),
        reverse: false,
        limit: 0,
    };
    check(
        keys(store.scan(unbounded).await.map_err(e)?) == vec![b"q".to_vec()],
        "empty end is unbounded",
    )?;
    let inverted = Scan {
        table: Table::Messages,
        start: b"q".to_vec(),
        end: b"p".to_vec(),
        reverse: false,
        limit: 0,
    };
    check(store.scan(inverted).await.map_err(e)?.is_empty(), "inverted range is empty")?;
    check(prefix_end(b"p\xff") == b"q".to_vec() && prefix_end(b"\xff").is_empty(), "prefix_end")?;

    // Values are returned as stored, including large ones.
    let big = vec![0xa5u8; 300_000];
    let mut b = Batch::new();
    b.put(Table::Outbox, b"big".to_vec(), big.clone());
    store.commit(b).await.map_err(e)?;
    check(store.get(Table::Outbox, b"big").await.map_err(e)? == Some(big), "large value")?;

    // Many keys in one batch, then delete them all in one batch.
    let mut b = Batch::new();
    for i in 0u32..1000 {
        b.put(Table::SearchIndex, i.to_be_bytes().to_vec(), Vec::new());
    }
    store.commit(b).await.map_err(e)?;
    check(
        store.scan(Scan::prefix(Table::SearchIndex, b"")).await.map_err(e)?.len() == 1000,
        "1000 keys in one batch",
    )?;
    let mut b = Batch::new();
    for i in 0u32..1000 {
        b.delete(Table::SearchIndex, i.to_be_bytes().to_vec());
    }
    store.commit(b).await.map_err(e)?;
    check(
        store.scan(Scan::prefix(Table::SearchIndex, b"")).await.map_err(e)?.is_empty(),
        "batch delete",
    )?;
    Ok(())
}
