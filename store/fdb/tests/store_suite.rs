//! The shared store suite on FoundationDB, when a cluster is there: `FDB_CLUSTER_FILE` names its
//! cluster file. Without it the test says why it did nothing (CI here has no FoundationDB; the
//! crate is compile-checked there).

use ironhub_store_fdb::FdbStore;

#[tokio::test]
async fn foundationdb_passes_the_shared_suite() {
    let Ok(cluster_file) = std::env::var("FDB_CLUSTER_FILE") else {
        println!("skipped: FDB_CLUSTER_FILE is not set (no FoundationDB cluster to test against)");
        return;
    };
    // A fresh prefix per run: the suite expects an empty store.
    let prefix = format!("ironhub-test-{}/", ironhub_core::now_ms());
    let store = FdbStore::open(Some(&cluster_file), prefix.as_bytes()).expect("open FoundationDB");
    ironhub_core::store::suite::run(&store).await;
    ironhub_core::store::suite::reopen(|| {
        FdbStore::open(Some(&cluster_file), prefix.as_bytes()).expect("open FoundationDB")
    })
    .await;
}
