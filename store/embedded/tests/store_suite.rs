//! The shared store suite on redb, plus durability across reopening the file.

#[tokio::test]
async fn embedded_store_passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        ironhub_store_embedded::open(dir.path(), ironhub_store_embedded::DEFAULT_CACHE_BYTES)
            .unwrap();
    ironhub_core::store::suite::run(&store).await;
}

#[tokio::test]
async fn embedded_store_keeps_commits_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    ironhub_core::store::suite::reopen(|| {
        ironhub_store_embedded::open(&path, ironhub_store_embedded::DEFAULT_CACHE_BYTES).unwrap()
    })
    .await;
}
