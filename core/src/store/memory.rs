//! The in-memory backend: a `BTreeMap` behind a mutex. For tests and for in-process clusters.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Backend, KeyRange, Mutation, SerialStore, StoreError};

/// Ordered map in memory.
#[derive(Default)]
pub struct MemoryBackend {
    map: Mutex<BTreeMap<Vec<u8>, Bytes>>,
}

/// The in-memory `Store`.
pub type MemoryStore = SerialStore<MemoryBackend>;

/// A new, empty in-memory store.
pub fn memory_store() -> MemoryStore {
    SerialStore::new(MemoryBackend::default())
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn blocks(&self) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .map
            .lock()
            .expect("memory store lock")
            .get(key)
            .cloned())
    }

    fn range(&self, range: &KeyRange, limit: usize) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let map = self.map.lock().expect("memory store lock");
        let iter = map
            .range(range.start.clone()..)
            .take_while(|(k, _)| range.end.is_empty() || k.as_slice() < range.end.as_slice())
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone()));
        Ok(if limit == 0 {
            iter.collect()
        } else {
            iter.take(limit).collect()
        })
    }

    fn range_reverse(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let map = self.map.lock().expect("memory store lock");
        let iter = map
            .range(range.start.clone()..)
            .take_while(|(k, _)| range.end.is_empty() || k.as_slice() < range.end.as_slice())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone()));
        Ok(if limit == 0 {
            iter.collect()
        } else {
            iter.take(limit).collect()
        })
    }

    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let mut map = self.map.lock().expect("memory store lock");
        for m in batch {
            match m {
                Mutation::ClearRange(r) => {
                    let doomed: Vec<Vec<u8>> = map
                        .range(r.start.clone()..)
                        .take_while(|(k, _)| r.end.is_empty() || k.as_slice() < r.end.as_slice())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
                Mutation::Set(k, _) | Mutation::Clear(k) | Mutation::Add(k, _) => {
                    match m.apply_to(k, map.get(k).cloned()) {
                        Some(v) => map.insert(k.clone(), v),
                        None => map.remove(k),
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "suite"))]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_shared_suite() {
        crate::store::suite::run(&super::memory_store()).await;
    }
}
