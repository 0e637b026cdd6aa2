//! A store that times what it forwards to another: reads and commits, as latency histograms for
//! `/metrics` (`ironhub_store_seconds`). The hub wraps whatever backend it runs on in one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::{KeyRange, Store, StoreError, Txn};

/// Upper bounds of the histogram buckets, in microseconds (Prometheus `le`, in seconds, is these
/// over a million); the last bucket, +Inf, is implied.
pub const BUCKETS_US: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
];

/// One latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    /// Cumulative counts are built at snapshot time; these are per bucket (+Inf last).
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, since: Instant) {
        let us = since.elapsed().as_micros() as u64;
        let i = BUCKETS_US.partition_point(|&le| le < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencyHistogram {
        let mut cumulative = 0;
        let buckets = self.buckets.each_ref().map(|b| {
            cumulative += b.load(Ordering::Relaxed);
            cumulative
        });
        LatencyHistogram {
            count: cumulative,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            cumulative: buckets,
        }
    }
}

/// A histogram's values: cumulative counts per bucket of [`BUCKETS_US`] and +Inf.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations.
    pub count: u64,
    /// Their sum, microseconds.
    pub sum_us: u64,
    /// Observations at or under each bound (the last is +Inf, equal to `count`).
    pub cumulative: [u64; BUCKETS_US.len() + 1],
}

/// The store's latency: reads (get, range) and commits.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StoreLatency {
    /// The backend's name.
    pub backend: &'static str,
    /// Reads.
    pub read: LatencyHistogram,
    /// Commits.
    pub commit: LatencyHistogram,
}

#[derive(Debug, Default)]
struct Latency {
    read: Histogram,
    commit: Histogram,
}

/// Times the store it wraps.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    latency: Arc<Latency>,
}

/// Reads the latency of a [`TimedStore`].
#[derive(Clone)]
pub struct LatencyHandle {
    backend: &'static str,
    latency: Arc<Latency>,
}

impl LatencyHandle {
    /// The histograms now.
    pub fn snapshot(&self) -> StoreLatency {
        StoreLatency {
            backend: self.backend,
            read: self.latency.read.snapshot(),
            commit: self.latency.commit.snapshot(),
        }
    }
}

impl TimedStore {
    /// Wraps `inner`; the handle reads its latency.
    pub fn wrap(inner: Arc<dyn Store>) -> (Arc<dyn Store>, LatencyHandle) {
        let latency = Arc::new(Latency::default());
        let handle = LatencyHandle {
            backend: inner.name(),
            latency: latency.clone(),
        };
        (Arc::new(TimedStore { inner, latency }), handle)
    }
}

#[async_trait]
impl Store for TimedStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn begin(&self) -> Result<Box<dyn Txn>, StoreError> {
        Ok(Box::new(TimedTxn {
            inner: self.inner.begin().await?,
            latency: self.latency.clone(),
        }))
    }

    async fn begin_read(&self) -> Result<Box<dyn Txn>, StoreError> {
        Ok(Box::new(TimedTxn {
            inner: self.inner.begin_read().await?,
            latency: self.latency.clone(),
        }))
    }
}

struct TimedTxn {
    inner: Box<dyn Txn>,
    latency: Arc<Latency>,
}

#[async_trait]
impl Txn for TimedTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let start = Instant::now();
        let got = self.inner.get(key).await;
        self.latency.read.observe(start);
        got
    }

    async fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let start = Instant::now();
        let got = self.inner.range(range, limit).await;
        self.latency.read.observe(start);
        got
    }

    async fn range_reverse(
        &mut self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let start = Instant::now();
        let got = self.inner.range_reverse(range, limit).await;
        self.latency.read.observe(start);
        got
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.inner.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.inner.clear(key);
    }

    fn clear_range(&mut self, range: &KeyRange) {
        self.inner.clear_range(range);
    }

    fn add(&mut self, key: &[u8], delta: i64) {
        self.inner.add(key, delta);
    }

    fn set_versionstamped(&mut self, prefix: &[u8], suffix: &[u8], value: &[u8]) {
        self.inner.set_versionstamped(prefix, suffix, value);
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        let start = Instant::now();
        let done = self.inner.commit().await;
        self.latency.commit.observe(start);
        done
    }

    fn committed_stamp(&self) -> Option<[u8; 10]> {
        self.inner.committed_stamp()
    }

    async fn on_error(&mut self, err: StoreError) -> Result<(), StoreError> {
        self.inner.on_error(err).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::memory_store;
    use crate::store::{transact, write};

    #[tokio::test]
    async fn reads_and_commits_are_counted_in_their_buckets() {
        let (store, latency) = TimedStore::wrap(Arc::new(memory_store()));
        write(&*store, |t| t.set(b"k", b"v")).await.unwrap();
        let got = transact(&*store, |t| Box::pin(async move { t.get(b"k").await }))
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(&b"v"[..]), "the wrapped store answers");
        let s = latency.snapshot();
        assert_eq!(s.backend, "memory");
        assert_eq!((s.read.count, s.commit.count), (1, 2));
        assert_eq!(*s.commit.cumulative.last().unwrap(), 2);
        assert!(
            s.commit.cumulative.windows(2).all(|w| w[0] <= w[1]),
            "cumulative: {:?}",
            s.commit.cumulative
        );
    }
}
