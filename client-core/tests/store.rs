//! Every storage backend passes the same conformance suite; the redb one also keeps a commit
//! across reopening the file.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hush_core::store::{Batch, MemoryStore, RedbStore, Store, Table, conformance};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(&MemoryStore::new()).await.unwrap();
}

#[tokio::test]
async fn redb_in_memory_store_conforms() {
    conformance::run(&RedbStore::in_memory().unwrap()).await.unwrap();
}

#[tokio::test]
async fn redb_file_store_conforms_and_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        conformance::run(&store).await.unwrap();
        let mut b = Batch::new();
        b.put(Table::Messages, b"kept".to_vec(), b"value".to_vec());
        store.commit(b).await.unwrap();
        // A second open of the same file in this process is refused, not corrupted.
        assert!(RedbStore::open(&path).is_err());
    }
    let reopened = RedbStore::open(&path).unwrap();
    assert_eq!(reopened.get(Table::Messages, b"kept").await.unwrap(), Some(b"value".to_vec()));
}
