//! Where messages go: consumer groups, the forwarding outbox, rules.

use crate::data::event::{Destination, Event};
use crate::data::model::ConsumerGroup;
use crate::rules::Rule;
use crate::store::decode_counter;
use serde::{Deserialize, Serialize};

use crate::store::{KeyRange, Store, StoreError, Txn};

use super::{decode, encode, get_json, get_typed, json, key, list_typed, prefix};

// ---- consumer groups

/// Reads a consumer group.
pub async fn get_group(
    txn: &mut dyn Txn,
    tenant: &str,
    id: &str,
) -> Result<Option<ConsumerGroup>, StoreError> {
    get_typed(txn, &key(&[b"g", tenant.as_bytes(), id.as_bytes()])).await
}

/// Writes a consumer group.
pub fn put_group(txn: &mut dyn Txn, g: &ConsumerGroup) {
    txn.set(
        &key(&[b"g", g.tenant.as_bytes(), g.id.as_bytes()]),
        &encode(g),
    );
}

/// Removes a consumer group.
pub fn delete_group(txn: &mut dyn Txn, tenant: &str, id: &str) {
    txn.clear(&key(&[b"g", tenant.as_bytes(), id.as_bytes()]));
}

/// Lists a tenant's consumer groups, or every tenant's.
pub async fn list_groups(
    txn: &mut dyn Txn,
    tenant: Option<&str>,
) -> Result<Vec<ConsumerGroup>, StoreError> {
    let range = match tenant {
        Some(t) => prefix(&[b"g", t.as_bytes()]),
        None => prefix(&[b"g"]),
    };
    list_typed(txn, &range, 0).await
}

// ---- forwarding outbox: events a sink has not confirmed yet, in order

/// One event waiting in a sink's outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its key, to clear it once sent.
    pub key: Vec<u8>,
    /// Where it goes.
    pub destination: Destination,
    /// The event.
    pub event: Event,
}

pub(super) fn outbox_count_key(sink: &str) -> Vec<u8> {
    key(&[b"n", b"o", sink.as_bytes()])
}

/// Appends events to a sink's outbox under their sequence numbers (callers keep them increasing).
pub fn put_outbox(txn: &mut dyn Txn, sink: &str, rows: &[(u64, &Destination, &Event)]) {
    for (seq, destination, event) in rows {
        let k = key(&[b"o", sink.as_bytes(), &seq.to_be_bytes()]);
        txn.set(&k, &encode(&(destination, event)));
    }
    txn.add(&outbox_count_key(sink), rows.len() as i64);
}

/// Reads the oldest `limit` events of a sink's outbox.
pub async fn read_outbox(
    txn: &mut dyn Txn,
    sink: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = txn.range(&prefix(&[b"o", sink.as_bytes()]), limit).await?;
    rows.iter()
        .map(|(k, v)| {
            let (destination, event) = decode(k, v)?;
            Ok(OutboxRow {
                key: k.to_vec(),
                destination,
                event,
            })
        })
        .collect()
}

/// Removes sent or expired events from a sink's outbox.
pub fn clear_outbox(txn: &mut dyn Txn, sink: &str, keys: &[Vec<u8>]) {
    for k in keys {
        txn.clear(k);
    }
    txn.add(&outbox_count_key(sink), -(keys.len() as i64));
}

/// How many events wait in a sink's outbox.
pub async fn outbox_len(store: &dyn Store, sink: &str) -> Result<i64, StoreError> {
    let k = outbox_count_key(sink);
    crate::store::transact(store, |t| {
        let k = k.clone();
        Box::pin(async move { Ok(t.get(&k).await?.map_or(0, |v| decode_counter(&v))) })
    })
    .await
}

/// Reads a rule.
pub async fn get_rule(
    txn: &mut dyn Txn,
    tenant: &str,
    id: &str,
) -> Result<Option<Rule>, StoreError> {
    get_json(txn, &key(&[b"x", tenant.as_bytes(), id.as_bytes()])).await
}

/// Writes a rule.
pub fn put_rule(txn: &mut dyn Txn, r: &Rule) {
    let value = serde_json::to_vec(r).expect("rules serialize");
    txn.set(&key(&[b"x", r.tenant.as_bytes(), r.id.as_bytes()]), &value);
}

/// Removes a rule.
pub fn delete_rule(txn: &mut dyn Txn, tenant: &str, id: &str) {
    txn.clear(&key(&[b"x", tenant.as_bytes(), id.as_bytes()]));
}

/// Lists a tenant's rules, or every tenant's.
pub async fn list_rules(txn: &mut dyn Txn, tenant: Option<&str>) -> Result<Vec<Rule>, StoreError> {
    let range = match tenant {
        Some(t) => prefix(&[b"x", t.as_bytes()]),
        None => prefix(&[b"x"]),
    };
    txn.range(&range, 0)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}

// ---- retries: deliveries waiting for their next attempt, in the order they are due

/// A delivery waiting for its next attempt; what it delivers is its owner's (opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The attempt it waits for (1: the first retry).
    pub attempt: u32,
    /// What to deliver, encoded by the service that scheduled it.
    pub body: Vec<u8>,
}

/// A retry as read back: its key (to move or clear it) and its record.
#[derive(Debug, Clone)]
pub struct RetryRow {
    /// Its key.
    pub key: Vec<u8>,
    /// Its id, unique among retries.
    pub id: u64,
    /// When it is due (ms since the epoch).
    pub due_ms: u64,
    /// The record.
    pub record: RetryRecord,
}

fn retry_key(due_ms: u64, id: u64) -> Vec<u8> {
    let mut k = key(&[b"j", b""]);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Writes a retry due at `due_ms`; returns its key.
pub fn put_retry(txn: &mut dyn Txn, due_ms: u64, id: u64, record: &RetryRecord) -> Vec<u8> {
    let key = retry_key(due_ms, id);
    txn.set(&key, &encode(record));
    key
}

/// Removes a retry.
pub fn delete_retry(txn: &mut dyn Txn, key: &[u8]) {
    txn.clear(key);
}

/// Up to `limit` retries due by `now_ms`, the earliest first.
pub async fn due_retries(
    txn: &mut dyn Txn,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<RetryRow>, StoreError> {
    let range = KeyRange {
        start: key(&[b"j", b""]),
        end: retry_key(now_ms.saturating_add(1), 0),
    };
    retry_rows(txn, &range, limit).await
}

/// When the earliest retry is due, if any is waiting.
pub async fn next_retry_due(txn: &mut dyn Txn) -> Result<Option<u64>, StoreError> {
    let rows = retry_rows(txn, &prefix(&[b"j"]), 1).await?;
    Ok(rows.first().map(|r| r.due_ms))
}

async fn retry_rows(
    txn: &mut dyn Txn,
    range: &KeyRange,
    limit: usize,
) -> Result<Vec<RetryRow>, StoreError> {
    let skip = key(&[b"j", b""]).len();
    txn.range(range, limit)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let stamp = k.get(skip..skip + 16).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).replace('\0', "/"),
                reason: "a retry key holds a due time and an id".into(),
            })?;
            let (due, id) = stamp.split_at(8);
            Ok(RetryRow {
                due_ms: u64::from_be_bytes(due.try_into().expect("8 bytes")),
                id: u64::from_be_bytes(id.try_into().expect("8 bytes")),
                record: decode(&k, &v)?,
                key: k.to_vec(),
            })
        })
        .collect()
}
