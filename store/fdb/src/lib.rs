//! ironhub-store-fdb: the [`Store`] trait on FoundationDB (API 7.3, the `foundationdb` crate), so
//! that many ironhub nodes share one consistent store. Every record, counter and queue is written
//! once in `ironhub_core::store::records`; this crate maps a transaction onto FoundationDB's:
//! reads see the transaction's own writes, `add` is FoundationDB's atomic `Add` (never conflicts),
//! `commit` reports `not_committed` as a conflict and `commit_unknown_result` as maybe-committed,
//! and `on_error` is FoundationDB's own retry and back-off (the core's `transact` loop calls it).
//!
//! Keys are the core's byte keys (documented in `records.rs`), under a prefix per deployment so
//! several hubs (or tests) can share a cluster. Offline-message queues use versionstamped keys
//! (`SetVersionstampedKey`): messages that different nodes queue for one session sort in commit
//! order with no shared counter to contend on. Transactions stay small: the core writes at most
//! one batch per transaction (usage flushes are split into 5,000-counter transactions, a
//! cluster node never scans all sessions), well inside FoundationDB's 10 MB and 5 s limits.
//!
//! Building needs Debian's `libclang-dev` (bindgen, with the crate's embedded headers); linking
//! and running need FoundationDB's client library (`libfdb_c`, from the official packages).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use async_trait::async_trait;
use bytes::Bytes;
use foundationdb::future::FdbSlice;
use foundationdb::options::{MutationType, StreamingMode};
use foundationdb::{
    Database, FdbError, FdbResult, RangeOption, Transaction, TransactionCommitError,
};
use ironhub_core::store::{KeyRange, Store, StoreError, Txn};

/// FoundationDB's client network: started once per process, stopped when the process exits.
static NETWORK: OnceLock<foundationdb::api::NetworkAutoStop> = OnceLock::new();

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("foundationdb: {e}"))
}

/// A FoundationDB cluster as an ironhub store.
pub struct FdbStore {
    db: Database,
    prefix: Vec<u8>,
}

impl FdbStore {
    /// Connects with the cluster file at `cluster_file` (None: the default location). Keys are
    /// written under `prefix` (one per deployment sharing the cluster).
    pub fn open(cluster_file: Option<&str>, prefix: &[u8]) -> Result<FdbStore, StoreError> {
        NETWORK.get_or_init(|| {
            // SAFETY: called once per process (OnceLock), before any other FoundationDB call,
            // and the returned guard lives until the process exits, as the crate requires.
            #[allow(unsafe_code)]
            unsafe {
                foundationdb::boot()
            }
        });
        let db = Database::new(cluster_file).map_err(backend)?;
        Ok(FdbStore {
            db,
            prefix: prefix.to_vec(),
        })
    }
}

#[async_trait]
impl Store for FdbStore {
    fn name(&self) -> &'static str {
        "fdb"
    }

    async fn begin(&self) -> Result<Box<dyn Txn>, StoreError> {
        let trx = self.db.create_trx().map_err(backend)?;
        Ok(Box::new(FdbTxn {
            trx: Some(trx),
            failed_commit: None,
            last_error: None,
            prefix: self.prefix.clone(),
            stamp_future: None,
            stamp: None,
        }))
    }
}

/// One FoundationDB transaction.
struct FdbTxn {
    /// None between a failed commit and `on_error`.
    trx: Option<Transaction>,
    /// The commit that failed, which `on_error` resets for the retry.
    failed_commit: Option<TransactionCommitError>,
    /// The last read error, which `on_error` hands to FoundationDB.
    last_error: Option<FdbError>,
    prefix: Vec<u8>,
    /// Asked for with the first versionstamped write, ready once the commit is.
    stamp_future: Option<StampFuture>,
    /// The stamp of the last commit with versionstamped writes.
    stamp: Option<[u8; 10]>,
}

/// `Transaction::get_versionstamp`'s future (it borrows nothing of the transaction).
type StampFuture = Pin<Box<dyn Future<Output = FdbResult<FdbSlice>> + Send + Sync>>;

impl FdbTxn {
    /// Reads a range, forwards or backwards, page by page until `limit` (0: all).
    async fn read_range(
        &mut self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let (start, end) = self.bounds(range);
        let mut opt = RangeOption::from((start, end));
        opt.limit = (limit > 0).then_some(limit);
        opt.reverse = reverse;
        opt.mode = StreamingMode::WantAll;
        let mut out = Vec::new();
        let skip = self.prefix.len();
        loop {
            let read = self.trx()?.get_range(&opt, 1, false).await;
            let kvs = match read {
                Ok(kvs) => kvs,
                Err(e) => return Err(self.read_error(e)),
            };
            for kv in kvs.iter() {
                out.push((
                    Bytes::copy_from_slice(&kv.key()[skip..]),
                    Bytes::copy_from_slice(kv.value()),
                ));
            }
            let full = limit > 0 && out.len() >= limit;
            match (full, opt.next_range(&kvs)) {
                (false, Some(next)) => opt = next,
                _ => break,
            }
        }
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// A range's keys in the cluster (an open end stops at the end of the prefix).
    fn bounds(&self, range: &KeyRange) -> (Vec<u8>, Vec<u8>) {
        let end = if range.end.is_empty() {
            let mut end = self.prefix.clone();
            end.push(0xff);
            end
        } else {
            self.key(&range.end)
        };
        (self.key(&range.start), end)
    }

    fn trx(&self) -> Result<&Transaction, StoreError> {
        self.trx
            .as_ref()
            .ok_or_else(|| backend("transaction used after a failed commit without on_error"))
    }

    fn read_error(&mut self, e: FdbError) -> StoreError {
        let err = classify(e);
        self.last_error = Some(e);
        err
    }
}

/// FoundationDB's retryable errors as the core's.
fn classify(e: FdbError) -> StoreError {
    if e.is_maybe_committed() {
        StoreError::MaybeCommitted
    } else if e.is_retryable() {
        StoreError::Conflict
    } else {
        backend(e)
    }
}

#[async_trait]
impl Txn for FdbTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let k = self.key(key);
        let read = self.trx()?.get(&k, false).await;
        match read {
            Ok(v) => Ok(v.map(|v| Bytes::copy_from_slice(&v))),
            Err(e) => Err(self.read_error(e)),
        }
    }

    async fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.read_range(range, limit, false).await
    }

    async fn range_reverse(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.read_range(range, limit, true).await
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let k = self.key(key);
        if let Some(trx) = &self.trx {
            trx.set(&k, value);
        }
    }

    fn clear(&mut self, key: &[u8]) {
        let k = self.key(key);
        if let Some(trx) = &self.trx {
            trx.clear(&k);
        }
    }

    fn clear_range(&mut self, range: &KeyRange) {
        let (start, end) = self.bounds(range);
        if let Some(trx) = &self.trx {
            trx.clear_range(&start, &end);
        }
    }

    fn add(&mut self, key: &[u8], delta: i64) {
        let k = self.key(key);
        if let Some(trx) = &self.trx {
            trx.atomic_op(&k, &delta.to_le_bytes(), MutationType::Add);
        }
    }

    fn set_versionstamped(&mut self, prefix: &[u8], suffix: &[u8], value: &[u8]) {
        // The key with a 10-byte placeholder that FoundationDB fills in at commit, followed by
        // the placeholder's offset (u32 little-endian), as API version 520 and later expect.
        let mut k = self.key(prefix);
        let offset = k.len() as u32;
        k.extend_from_slice(&[0; 10]);
        k.extend_from_slice(suffix);
        k.extend_from_slice(&offset.to_le_bytes());
        if let Some(trx) = &self.trx {
            trx.atomic_op(&k, value, MutationType::SetVersionstampedKey);
            if self.stamp_future.is_none() {
                self.stamp_future = Some(Box::pin(trx.get_versionstamp()));
            }
        }
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        let trx = self
            .trx
            .take()
            .ok_or_else(|| backend("commit without a transaction"))?;
        let stamp_future = self.stamp_future.take();
        match trx.commit().await {
            Ok(committed) => {
                // Ready for reuse, as the in-memory and embedded backends are.
                self.trx = Some(committed.reset());
                if let Some(future) = stamp_future {
                    let stamp = future.await.map_err(classify_final)?;
                    self.stamp = stamp.as_ref().try_into().ok();
                }
                Ok(())
            }
            Err(failed) => {
                let err = classify(*failed);
                self.failed_commit = Some(failed);
                Err(err)
            }
        }
    }

    fn committed_stamp(&self) -> Option<[u8; 10]> {
        self.stamp
    }

    async fn on_error(&mut self, err: StoreError) -> Result<(), StoreError> {
        self.stamp_future = None;
        if !err.is_retryable() {
            return Err(err);
        }
        if let Some(failed) = self.failed_commit.take() {
            self.trx = Some(failed.on_error().await.map_err(classify_final)?);
            return Ok(());
        }
        match (self.trx.take(), self.last_error.take()) {
            (Some(trx), Some(e)) => {
                self.trx = Some(trx.on_error(e).await.map_err(classify_final)?);
                Ok(())
            }
            (trx, _) => {
                self.trx = trx;
                Err(err)
            }
        }
    }
}

/// An error `on_error` itself returns is final.
fn classify_final(e: FdbError) -> StoreError {
    backend(e)
}
