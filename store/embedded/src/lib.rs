//! ironhub's default persistent `Store`: one redb file.
//!
//! Why redb: its model (ordered byte keys, serializable write transactions, snapshot reads, range
//! scans) mirrors FoundationDB's, so it maps onto the `Store` interface without emulation; it is
//! pure Rust with two dependencies, fsyncs on commit by default and keeps checksummed commit
//! slots it can repair after a crash. It runs one writer at a time, which
//! [`ironhub_core::store::SerialStore`] already provides, so this crate only maps reads and a
//! commit batch onto redb.

use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use ironhub_core::store::{Backend, KeyRange, Mutation, SerialStore, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ironhub");

/// The redb-backed store.
pub type EmbeddedStore = SerialStore<RedbBackend>;

/// Opens (creating if needed) the store in `dir/ironhub.redb`.
pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| backend(format!("create {}: {e}", dir.display())))?;
    let db = Database::create(dir.join("ironhub.redb")).map_err(backend)?;
    let w = db.begin_write().map_err(backend)?;
    w.open_table(TABLE).map_err(backend)?;
    w.commit().map_err(backend)?;
    Ok(SerialStore::new(RedbBackend { db }))
}

/// redb as a single-writer [`Backend`].
pub struct RedbBackend {
    db: Database,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redb: {e}"))
}

fn bounds(range: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    let end = if range.end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(range.end.as_slice())
    };
    (Bound::Included(range.start.as_slice()), end)
}

impl Backend for RedbBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let table = r.open_table(TABLE).map_err(backend)?;
        Ok(table
            .get(key)
            .map_err(backend)?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn range(&self, range: &KeyRange, limit: usize) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let table = r.open_table(TABLE).map_err(backend)?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        table
            .range::<&[u8]>(bounds(range))
            .map_err(backend)?
            .take(limit)
            .map(|row| {
                let (k, v) = row.map_err(backend)?;
                Ok((
                    Bytes::copy_from_slice(k.value()),
                    Bytes::copy_from_slice(v.value()),
                ))
            })
            .collect()
    }

    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(backend)?;
        {
            let mut table = w.open_table(TABLE).map_err(backend)?;
            for m in batch {
                match m {
                    Mutation::Set(k, v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
                    }
                    Mutation::Clear(k) => {
                        table.remove(k.as_slice()).map_err(backend)?;
                    }
                    Mutation::ClearRange(r) => {
                        table
                            .retain_in::<&[u8], _>(bounds(r), |_, _| false)
                            .map_err(backend)?;
                    }
                    Mutation::Add(k, _) => {
                        let current = table
                            .get(k.as_slice())
                            .map_err(backend)?
                            .map(|v| Bytes::copy_from_slice(v.value()));
                        if let Some(v) = m.apply_to(k, current) {
                            table.insert(k.as_slice(), v.as_ref()).map_err(backend)?;
                        }
                    }
                }
            }
        }
        w.commit().map_err(backend)
    }
}
