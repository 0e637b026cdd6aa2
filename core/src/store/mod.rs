//! Durable state behind a small ordered, transactional key-value interface cut along
//! FoundationDB's seams (get, range, set, clear, clear_range, atomic add, commit, on_error).
//!
//! Typed records (tenants, products, devices, sessions, offline queues, retained messages) are
//! written once, in [`records`], on top of it, so every backend stays thin and one shared test
//! suite ([`suite`], feature `suite`) runs against each of them.

use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

pub mod blobs;
pub mod memory;
pub mod records;
mod serial;
#[cfg(feature = "suite")]
pub mod suite;
pub mod timed;

pub use serial::{Backend, Mutation, SerialStore};

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another transaction touched the same keys; the body is retried.
    #[error("transaction conflict")]
    Conflict,
    /// The commit may or may not have been applied (bodies must be idempotent).
    #[error("commit outcome unknown")]
    MaybeCommitted,
    /// The backend failed (IO, corruption, unreachable cluster).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// The key, escaped.
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
}

impl StoreError {
    /// Whether retrying the transaction can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict | StoreError::MaybeCommitted)
    }
}

/// A half-open key range `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key included.
    pub start: Vec<u8>,
    /// First key excluded.
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let mut end = prefix.to_vec();
        // The smallest key greater than every key with this prefix: strip trailing 0xff, bump.
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                break;
            }
        }
        KeyRange {
            start: prefix.to_vec(),
            end,
        }
    }

    /// Whether `key` lies in the range (an empty `end` means unbounded).
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// A storage backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs ("memory", "embedded", "fdb").
    fn name(&self) -> &'static str;
    /// Starts a transaction.
    async fn begin(&self) -> Result<Box<dyn Txn>, StoreError>;
    /// Starts a transaction that only reads: each read sees committed data and, where the
    /// backend runs one transaction at a time, does not wait for the one running (a device's
    /// connect must not queue behind a durable write). There it is not a snapshot: two reads may
    /// see two different commits, so use it for single reads. Committing writes from it fails.
    async fn begin_read(&self) -> Result<Box<dyn Txn>, StoreError> {
        Ok(Box::new(ReadOnly::new(self.begin().await?)))
    }
}

/// A transaction restricted to reads (see [`Store::begin_read`]): writes are remembered only
/// to fail the commit.
pub struct ReadOnly(Box<dyn Txn>, bool);

impl ReadOnly {
    /// Restricts a transaction to reads.
    pub fn new(txn: Box<dyn Txn>) -> Self {
        ReadOnly(txn, false)
    }
}

/// The error a read-only transaction's writes end in.
fn write_in_read_only() -> StoreError {
    StoreError::Backend("a read-only transaction cannot write".into())
}

#[async_trait]
impl Txn for ReadOnly {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        self.0.get(key).await
    }

    async fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.0.range(range, limit).await
    }

    async fn range_reverse(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.0.range_reverse(range, limit).await
    }

    fn set(&mut self, _key: &[u8], _value: &[u8]) {
        self.1 = true;
    }

    fn clear(&mut self, _key: &[u8]) {
        self.1 = true;
    }

    fn clear_range(&mut self, _range: &KeyRange) {
        self.1 = true;
    }

    fn add(&mut self, _key: &[u8], _delta: i64) {
        self.1 = true;
    }

    fn set_versionstamped(&mut self, _prefix: &[u8], _suffix: &[u8], _value: &[u8]) {
        self.1 = true;
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        if self.1 {
            return Err(write_in_read_only());
        }
        Ok(())
    }

    fn committed_stamp(&self) -> Option<[u8; 10]> {
        None
    }

    async fn on_error(&mut self, err: StoreError) -> Result<(), StoreError> {
        self.0.on_error(err).await
    }
}

/// A transaction: reads are async, writes are buffered until `commit`, as in FoundationDB.
#[async_trait]
pub trait Txn: Send {
    /// Reads one key (sees this transaction's own writes).
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Reads up to `limit` pairs of `range` in key order (sees own writes).
    async fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    /// Reads up to `limit` pairs of `range` from its end backwards (sees own writes).
    async fn range_reverse(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    /// Writes a key.
    fn set(&mut self, key: &[u8], value: &[u8]);
    /// Removes a key.
    fn clear(&mut self, key: &[u8]);
    /// Removes every key of a range.
    fn clear_range(&mut self, range: &KeyRange);
    /// Adds `delta` to a little-endian i64 counter (FDB `MutationType::Add`); never conflicts.
    fn add(&mut self, key: &[u8], delta: i64);
    /// Writes `value` under `prefix`, a 10-byte versionstamp, then `suffix`: the stamps of later
    /// commits sort after those of earlier ones, whichever node commits (FDB
    /// `SetVersionstampedKey`), so ordered queues need no shared counter. The key cannot be read
    /// in this transaction.
    fn set_versionstamped(&mut self, prefix: &[u8], suffix: &[u8], value: &[u8]);
    /// Makes the writes durable.
    async fn commit(&mut self) -> Result<(), StoreError>;
    /// After a commit that wrote versionstamped keys: the 10-byte stamp they got (so the writer
    /// can name the rows it wrote, as a session queue does for its deliveries).
    fn committed_stamp(&self) -> Option<[u8; 10]>;
    /// Resets the transaction for a retry if `err` is retryable, otherwise returns it.
    async fn on_error(&mut self, err: StoreError) -> Result<(), StoreError>;
}

/// A boxed future borrowing the transaction, as `transact` bodies return.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 't>>;

/// Attempts before `transact` gives up on retryable errors.
const MAX_ATTEMPTS: usize = 20;

/// Runs `body` in a transaction and commits, retrying on retryable errors like
/// FoundationDB's `Database::run`. Bodies must be idempotent: a retry runs them again.
pub async fn transact<T, F>(store: &dyn Store, body: F) -> Result<T, StoreError>
where
    F: for<'t> FnMut(&'t mut dyn Txn) -> TxnFuture<'t, T>,
{
    run(store.begin().await?, body).await
}

/// Runs `body` in a read-only transaction ([`Store::begin_read`]), retrying as [`transact`]
/// does: for reads on hot paths that must not wait for writers.
pub async fn read<T, F>(store: &dyn Store, body: F) -> Result<T, StoreError>
where
    F: for<'t> FnMut(&'t mut dyn Txn) -> TxnFuture<'t, T>,
{
    run(store.begin_read().await?, body).await
}

async fn run<T, F>(txn: Box<dyn Txn>, body: F) -> Result<T, StoreError>
where
    F: for<'t> FnMut(&'t mut dyn Txn) -> TxnFuture<'t, T>,
{
    run_stamped(txn, body).await.map(|(value, _)| value)
}

/// [`run`], also returning the commit's stamp ([`Txn::committed_stamp`]).
async fn run_stamped<T, F>(
    mut txn: Box<dyn Txn>,
    mut body: F,
) -> Result<(T, Option<[u8; 10]>), StoreError>
where
    F: for<'t> FnMut(&'t mut dyn Txn) -> TxnFuture<'t, T>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = match body(&mut *txn).await {
            Ok(value) => txn.commit().await.map(|()| value),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(value) => return Ok((value, txn.committed_stamp())),
            Err(err) if attempts >= MAX_ATTEMPTS => return Err(err),
            Err(err) => txn.on_error(err).await?,
        }
    }
}

/// Runs a transaction that only writes: `writes` buffers the writes (called again on a retry),
/// then the transaction commits.
pub async fn write(
    store: &dyn Store,
    writes: impl Fn(&mut dyn Txn) + Send + Sync,
) -> Result<(), StoreError> {
    transact(store, |t| {
        writes(t);
        Box::pin(std::future::ready(Ok(())))
    })
    .await
}

/// As [`write`], and returns the stamp the commit gave the versionstamped keys it wrote (None
/// when it wrote none): the writer of a queue learns the places of its rows.
pub async fn write_stamped(
    store: &dyn Store,
    writes: impl Fn(&mut dyn Txn) + Send + Sync,
) -> Result<Option<[u8; 10]>, StoreError> {
    let txn = store.begin().await?;
    let written = run_stamped(txn, |t| {
        writes(t);
        Box::pin(std::future::ready(Ok(())))
    });
    written.await.map(|((), stamp)| stamp)
}

/// Decodes an i64 counter written by `Txn::add` (missing bytes read as zero).
pub fn decode_counter(value: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    let n = value.len().min(8);
    buf[..n].copy_from_slice(&value[..n]);
    i64::from_le_bytes(buf)
}
