//! Where messages go: consumer groups, the forwarding outbox, rules.

use crate::data::event::{Destination, Event};
use crate::data::model::ConsumerGroup;
use crate::rules::Rule;
use crate::store::decode_counter;
use crate::store::{Store, StoreError, Txn};

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
