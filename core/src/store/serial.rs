//! One `Store` implementation for backends that run one writer at a time (the in-memory store and
//! redb): transactions are serialized by an async lock, writes are buffered in an overlay that
//! reads see, and commit hands the batch to the backend. Serialized transactions never conflict.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{KeyRange, ReadOnly, Store, StoreError, Txn, decode_counter};

/// A buffered write, applied in order at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Write a key.
    Set(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Clear(Vec<u8>),
    /// Remove a range.
    ClearRange(KeyRange),
    /// Add to a little-endian i64 counter.
    Add(Vec<u8>, i64),
}

impl Mutation {
    /// Applies the mutation to one key's value.
    pub fn apply_to(&self, key: &[u8], value: Option<Bytes>) -> Option<Bytes> {
        match self {
            Mutation::Set(k, v) if k == key => Some(Bytes::copy_from_slice(v)),
            Mutation::Clear(k) if k == key => None,
            Mutation::ClearRange(r) if r.contains(key) => None,
            Mutation::Add(k, d) if k == key => {
                let now = value.as_deref().map(decode_counter).unwrap_or(0);
                Some(Bytes::copy_from_slice(
                    &(now.wrapping_add(*d)).to_le_bytes(),
                ))
            }
            _ => value,
        }
    }

    fn touches(&self, range: &KeyRange) -> bool {
        match self {
            Mutation::Set(k, _) | Mutation::Clear(k) | Mutation::Add(k, _) => range.contains(k),
            Mutation::ClearRange(r) => {
                (r.end.is_empty() || range.start < r.end)
                    && (range.end.is_empty() || r.start < range.end)
            }
        }
    }
}

/// A single-writer ordered key-value backend.
pub trait Backend: Send + Sync + 'static {
    /// Backend name for logs.
    fn name(&self) -> &'static str;
    /// Reads a committed key.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Reads committed pairs of a range in key order (`limit` 0 = no limit).
    fn range(&self, range: &KeyRange, limit: usize) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    /// Reads committed pairs of a range from its end backwards (`limit` 0 = no limit).
    fn range_reverse(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    /// Applies a batch atomically and durably. May block (called off the async threads).
    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError>;
    /// Whether `apply` may block (disk IO): then it runs on the blocking pool. A backend that
    /// never blocks applies in place, which also keeps virtual-time tests deterministic.
    fn blocks(&self) -> bool {
        true
    }
}

/// A `Store` over a single-writer [`Backend`].
pub struct SerialStore<B: Backend> {
    backend: Arc<B>,
    writer: Arc<Mutex<()>>,
    /// The last commit version given out (versionstamps): the wall clock in ns at the start, so
    /// that stamps keep increasing across restarts, then one more per commit.
    version: Arc<AtomicU64>,
}

impl<B: Backend> SerialStore<B> {
    /// Wraps a backend.
    pub fn new(backend: B) -> Self {
        SerialStore {
            backend: Arc::new(backend),
            writer: Arc::new(Mutex::new(())),
            version: Arc::new(AtomicU64::new(now_ns())),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[async_trait]
impl<B: Backend> Store for SerialStore<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    async fn begin(&self) -> Result<Box<dyn Txn>, StoreError> {
        let guard = self.writer.clone().lock_owned().await;
        Ok(Box::new(SerialTxn {
            backend: self.backend.clone(),
            mutations: Vec::new(),
            stamped: Vec::new(),
            stamp: None,
            version: self.version.clone(),
            _guard: Some(guard),
        }))
    }

    /// Without the writer's lock: the backends apply a commit atomically for readers, so each
    /// read sees the state before or after it.
    async fn begin_read(&self) -> Result<Box<dyn Txn>, StoreError> {
        Ok(Box::new(ReadOnly::new(Box::new(SerialTxn {
            backend: self.backend.clone(),
            mutations: Vec::new(),
            stamped: Vec::new(),
            stamp: None,
            version: self.version.clone(),
            _guard: None,
        }))))
    }
}

struct SerialTxn<B: Backend> {
    backend: Arc<B>,
    mutations: Vec<Mutation>,
    /// Versionstamped writes: prefix, suffix, value; their keys are made at commit.
    stamped: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// The stamp of the last commit that had versionstamped writes.
    stamp: Option<[u8; 10]>,
    version: Arc<AtomicU64>,
    /// The writer's lock; None in read-only transactions.
    _guard: Option<OwnedMutexGuard<()>>,
}

impl<B: Backend> SerialTxn<B> {
    fn resolve(&self, key: &[u8], base: Option<Bytes>) -> Option<Bytes> {
        self.mutations.iter().fold(base, |v, m| m.apply_to(key, v))
    }

    /// A range whose keys this transaction wrote: its writes merged over the committed pairs,
    /// in key order (backwards when `reverse`), then cut at `limit`.
    fn merged(
        &self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Option<Bytes>> = self
            .backend
            .range(range, 0)?
            .into_iter()
            .map(|(k, v)| (k.to_vec(), Some(v)))
            .collect();
        for m in &self.mutations {
            if let Mutation::Set(k, _) | Mutation::Add(k, _) = m
                && range.contains(k)
            {
                merged.entry(k.clone()).or_insert(None);
            }
        }
        let pairs: Box<dyn Iterator<Item = (Vec<u8>, Option<Bytes>)>> = if reverse {
            Box::new(merged.into_iter().rev())
        } else {
            Box::new(merged.into_iter())
        };
        let mut out = Vec::new();
        for (k, base) in pairs {
            if let Some(v) = self.resolve(&k, base) {
                out.push((Bytes::from(k), v));
                if limit != 0 && out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl<B: Backend> Txn for SerialTxn<B> {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let base = self.backend.get(key)?;
        Ok(self.resolve(key, base))
    }

    async fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        if !self.mutations.iter().any(|m| m.touches(range)) {
            return self.backend.range(range, limit);
        }
        Ok(self.merged(range, limit, false)?)
    }

    async fn range_reverse(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        if !self.mutations.iter().any(|m| m.touches(range)) {
            return self.backend.range_reverse(range, limit);
        }
        Ok(self.merged(range, limit, true)?)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.mutations
            .push(Mutation::Set(key.to_vec(), value.to_vec()));
    }

    fn clear(&mut self, key: &[u8]) {
        self.mutations.push(Mutation::Clear(key.to_vec()));
    }

    fn clear_range(&mut self, range: &KeyRange) {
        self.mutations.push(Mutation::ClearRange(range.clone()));
    }

    fn add(&mut self, key: &[u8], delta: i64) {
        self.mutations.push(Mutation::Add(key.to_vec(), delta));
    }

    fn set_versionstamped(&mut self, prefix: &[u8], suffix: &[u8], value: &[u8]) {
        self.stamped
            .push((prefix.to_vec(), suffix.to_vec(), value.to_vec()));
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        if !self.stamped.is_empty() {
            // One writer at a time (the lock this transaction holds): a plain read-then-write
            // of the version is race-free. FoundationDB's stamp: 8-byte version, 2-byte order
            // of the transaction in its batch (always 0 here).
            let version = (self.version.load(Ordering::Relaxed) + 1).max(now_ns());
            self.version.store(version, Ordering::Relaxed);
            let mut stamp = [0; 10];
            stamp[..8].copy_from_slice(&version.to_be_bytes());
            self.stamp = Some(stamp);
            for (prefix, suffix, value) in std::mem::take(&mut self.stamped) {
                let mut key = prefix;
                key.extend_from_slice(&version.to_be_bytes());
                key.extend_from_slice(&[0, 0]);
                key.extend_from_slice(&suffix);
                self.mutations.push(Mutation::Set(key, value));
            }
        }
        if self.mutations.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.mutations);
        if !self.backend.blocks() {
            return self.backend.apply(&batch);
        }
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.apply(&batch))
            .await
            .map_err(|e| StoreError::Backend(format!("commit task: {e}")))?
    }

    fn committed_stamp(&self) -> Option<[u8; 10]> {
        self.stamp
    }

    async fn on_error(&mut self, err: StoreError) -> Result<(), StoreError> {
        // One writer at a time: nothing to retry against.
        self.mutations.clear();
        self.stamped.clear();
        Err(err)
    }
}
