//! Large opaque values (firmware packages) behind a small trait, so an object store can stand in
//! for the built-in [`StoreBlobs`], which cuts each blob into 64 KB chunks of the key-value store:
//! every backend holds them (FoundationDB's values are at most 100 KB, its transactions 10 MB),
//! and every node of a cluster reads what one node wrote.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::records::key;
use super::{KeyRange, Store, StoreError, Txn, write};

/// Bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks written per transaction (1 MB: well within any backend's transaction size).
const CHUNKS_PER_TXN: usize = 16;

/// Where blobs are kept.
#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Starts writing blob `name` (replacing any earlier one of that name).
    fn create(&self, name: &str) -> Box<dyn BlobWriter + '_>;
    /// Up to `max` bytes of blob `name` from `offset` (empty past its end, or when it does not
    /// exist).
    async fn read(&self, name: &str, offset: u64, max: usize) -> Result<Bytes, StoreError>;
    /// Removes blob `name`.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
}

/// A blob being written, in order.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Writes what is left; returns the blob's size.
    async fn finish(self: Box<Self>) -> Result<u64, StoreError>;
}

/// Blobs in the hub's key-value store, under `F\0{name}\0{index: u32 BE}`.
pub struct StoreBlobs {
    store: Arc<dyn Store>,
}

impl StoreBlobs {
    /// Blobs kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreBlobs { store }
    }
}

#[async_trait]
impl Blobs for StoreBlobs {
    fn create(&self, name: &str) -> Box<dyn BlobWriter + '_> {
        Box::new(Chunks(&*self.store).writer(name))
    }

    async fn read(&self, name: &str, offset: u64, max: usize) -> Result<Bytes, StoreError> {
        Chunks(&*self.store).read(name, offset, max).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        Chunks(&*self.store).delete(name).await
    }
}

fn chunk_key(name: &str, index: u32) -> Vec<u8> {
    key(&[b"F", name.as_bytes(), &index.to_be_bytes()])
}

fn chunk_range(name: &str) -> KeyRange {
    let mut start = key(&[b"F", name.as_bytes()]);
    start.push(0);
    KeyRange::prefix(&start)
}

/// The chunk layout over any store (the shared store suite runs it on each backend).
#[derive(Clone, Copy)]
pub(crate) struct Chunks<'s>(pub(crate) &'s dyn Store);

impl<'s> Chunks<'s> {
    pub(crate) fn writer(self, name: &str) -> ChunkWriter<'s> {
        ChunkWriter {
            store: self.0,
            name: name.to_owned(),
            buffer: BytesMut::new(),
            next: 0,
            size: 0,
            cleared: false,
        }
    }

    pub(crate) async fn read(
        self,
        name: &str,
        offset: u64,
        max: usize,
    ) -> Result<Bytes, StoreError> {
        let chunk = CHUNK as u64;
        let first = u32::try_from(offset / chunk).unwrap_or(u32::MAX);
        let count = max.div_ceil(CHUNK) + 1;
        let mut range = chunk_range(name);
        range.start = chunk_key(name, first);
        let rows = super::read(self.0, |t: &mut dyn Txn| {
            let range = range.clone();
            Box::pin(async move { t.range(&range, count).await })
        })
        .await?;
        let mut out = BytesMut::new();
        let mut at = u64::from(first) * chunk;
        for (k, v) in rows {
            // Chunks are contiguous: a gap would be a damaged blob.
            if k != chunk_key(name, u32::try_from(at / chunk).unwrap_or(u32::MAX)) {
                break;
            }
            let skip = usize::try_from(offset.saturating_sub(at)).unwrap_or(usize::MAX);
            if skip < v.len() {
                let take = (v.len() - skip).min(max - out.len());
                out.extend_from_slice(&v[skip..skip + take]);
            }
            at += v.len() as u64;
            if out.len() >= max || v.len() < CHUNK {
                break;
            }
        }
        Ok(out.freeze())
    }

    pub(crate) async fn delete(self, name: &str) -> Result<(), StoreError> {
        let range = chunk_range(name);
        write(self.0, |t| t.clear_range(&range)).await
    }
}

/// Writes a blob chunk by chunk, a transaction per [`CHUNKS_PER_TXN`] chunks.
pub(crate) struct ChunkWriter<'s> {
    store: &'s dyn Store,
    name: String,
    buffer: BytesMut,
    next: u32,
    size: u64,
    /// Whether an earlier blob of this name was cleared (on the first write).
    cleared: bool,
}

impl ChunkWriter<'_> {
    /// Writes the full chunks in the buffer (and a last partial one when `all`).
    async fn flush(&mut self, all: bool) -> Result<(), StoreError> {
        if !self.cleared {
            // An upload of this name that failed half-way leaves chunks: they go first.
            Chunks(self.store).delete(&self.name).await?;
            self.cleared = true;
        }
        let mut rows = Vec::new();
        while self.buffer.len() >= CHUNK || (all && !self.buffer.is_empty()) {
            let take = self.buffer.len().min(CHUNK);
            rows.push((chunk_key(&self.name, self.next), self.buffer.split_to(take)));
            self.next += 1;
        }
        for batch in rows.chunks(CHUNKS_PER_TXN) {
            write(self.store, |t| {
                for (k, v) in batch {
                    t.set(k, v);
                }
            })
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for ChunkWriter<'_> {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(data);
        self.size += data.len() as u64;
        if self.buffer.len() >= CHUNK * CHUNKS_PER_TXN {
            self.flush(false).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StoreError> {
        self.flush(true).await?;
        Ok(self.size)
    }
}
