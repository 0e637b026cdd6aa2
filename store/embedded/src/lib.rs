//! ironhub's default persistent `Store`: one redb file.
//!
//! Why redb: its model (ordered byte keys, serializable write transactions, snapshot reads, range
//! scans) mirrors FoundationDB's, so it maps onto the `Store` interface without emulation; it is
//! pure Rust with two dependencies, fsyncs on commit by default and keeps checksummed commit
//! slots it can repair after a crash. It runs one writer at a time, which
//! [`ironhub_core::store::SerialStore`] already provides, so this crate only maps reads and a
//! commit batch onto redb.
//!
//! A failed write (a full disk, a read-only remount) leaves redb unusable until the file is
//! opened again, so the backend drops the handle on an I/O error and reopens the file on the
//! next operation: the store refuses work while the disk refuses it, and recovers by itself.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironhub_core::store::{Backend, KeyRange, Mutation, SerialStore, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ironhub");

/// The redb-backed store.
pub type EmbeddedStore = SerialStore<RedbBackend>;

/// Memory for pages read or written, unless configured: redb's own default (1 GiB) is reached
/// by write churn alone (each commit writes fresh pages), which reads as a leak in a hub's RSS.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Opens (creating if needed) the store in `dir/ironhub.redb`, caching up to `cache_bytes` of
/// its pages in memory.
pub fn open(dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| backend(format!("create {}: {e}", dir.display())))?;
    let path = dir.join("ironhub.redb");
    let db = open_file(&path, cache_bytes)?;
    Ok(SerialStore::new(RedbBackend {
        path,
        cache_bytes,
        db: RwLock::new(Some(db)),
        reopen_at: Mutex::new(None),
        failing: AtomicBool::new(false),
    }))
}

fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(failure)?;
    let w = db.begin_write().map_err(failure)?;
    w.open_table(TABLE).map_err(failure)?;
    w.commit().map_err(failure)?;
    Ok(db)
}

/// redb as a single-writer [`Backend`].
pub struct RedbBackend {
    path: PathBuf,
    cache_bytes: usize,
    /// The open file; `None` after an I/O error until it opens again.
    db: RwLock<Option<Database>>,
    /// When the file may next be opened again after an I/O error (opening repairs the file,
    /// which is not worth doing for every write the disk refuses).
    reopen_at: Mutex<Option<Instant>>,
    /// Whether the last write failed (one warning per outage, not one per write).
    failing: AtomicBool,
}

/// How long a closed file stays closed before the next attempt to open it.
const REOPEN_BACKOFF: Duration = Duration::from_millis(500);

impl RedbBackend {
    /// Up to `limit` (0: all) committed pairs of a range, forwards or from its end.
    fn read_range(
        &self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.with_db(|db| {
            let r = db.begin_read()?;
            let table = r.open_table(TABLE)?;
            let rows = table.range::<&[u8]>(bounds(range))?;
            let rows: Box<dyn Iterator<Item = _>> = if reverse {
                Box::new(rows.rev())
            } else {
                Box::new(rows)
            };
            let pairs = rows
                .take(limit)
                .map(|row| {
                    let (k, v) = row?;
                    Ok((
                        Bytes::copy_from_slice(k.value()),
                        Bytes::copy_from_slice(v.value()),
                    ))
                })
                .collect::<Result<_, redb::StorageError>>()?;
            Ok(pairs)
        })
    }

    /// Runs `op` on the open database; an I/O error closes it (redb answers every later call
    /// with "previous I/O error" otherwise), and the file opens again on a later call.
    fn with_db<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let guard = self.opened()?;
        let Some(db) = guard.as_ref() else {
            return Err(unavailable());
        };
        let result = op(db);
        drop(guard);
        match result {
            Err(e) if spent(&e) => {
                self.close(&e);
                Err(failure(e))
            }
            other => other.map_err(failure),
        }
    }

    /// The database, opened again if an I/O error closed it and the backoff has passed.
    fn opened(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        let mut reopen_at = self.reopen_at.lock().unwrap_or_else(|e| e.into_inner());
        if reopen_at.is_some_and(|at| Instant::now() < at) {
            return Err(unavailable());
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            match open_file(&self.path, self.cache_bytes) {
                Ok(opened) => {
                    *db = Some(opened);
                    *reopen_at = None;
                    tracing::info!(path = %self.path.display(), "store file opened again");
                }
                Err(e) => {
                    *reopen_at = Some(Instant::now() + REOPEN_BACKOFF);
                    return Err(e);
                }
            }
        }
        drop(db);
        Ok(self.db.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn close(&self, cause: &redb::Error) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = None;
        *self.reopen_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + REOPEN_BACKOFF);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), error = %cause,
                "store write failed: refusing what needs storing until the disk takes writes again");
        }
    }
}

fn unavailable() -> StoreError {
    backend("the store file is closed after an I/O error; it opens again shortly")
}

/// Whether redb needs the file opened again after `e`.
fn spent(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

fn failure(e: impl Into<redb::Error>) -> StoreError {
    backend(e.into())
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
        self.with_db(|db| {
            let r = db.begin_read()?;
            let table = r.open_table(TABLE)?;
            Ok(table.get(key)?.map(|v| Bytes::copy_from_slice(v.value())))
        })
    }

    fn range(&self, range: &KeyRange, limit: usize) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.read_range(range, limit, false)
    }

    fn range_reverse(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.read_range(range, limit, true)
    }

    fn apply(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let w = db.begin_write()?;
            {
                let mut table = w.open_table(TABLE)?;
                for m in batch {
                    match m {
                        Mutation::Set(k, v) => {
                            table.insert(k.as_slice(), v.as_slice())?;
                        }
                        Mutation::Clear(k) => {
                            table.remove(k.as_slice())?;
                        }
                        Mutation::ClearRange(r) => {
                            table.retain_in::<&[u8], _>(bounds(r), |_, _| false)?;
                        }
                        Mutation::Add(k, _) => {
                            let current = table
                                .get(k.as_slice())?
                                .map(|v| Bytes::copy_from_slice(v.value()));
                            if let Some(v) = m.apply_to(k, current) {
                                table.insert(k.as_slice(), v.as_ref())?;
                            }
                        }
                    }
                }
            }
            w.commit()?;
            Ok(())
        })?;
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(path = %self.path.display(), "store writes succeed again");
        }
        Ok(())
    }
}
