//! The thing model's history: every accepted property value and event, by device, kind,
//! identifier and time, and the latest value of each (JSON values).
//!
//! `h\0{tenant}\0{pk}\0{dn}\0{kind}\0{identifier}\0{time: u64 BE}{seq: u64 BE}` holds a value;
//! `H\0{tenant}\0{pk}\0{dn}\0{kind}\0{identifier}` the latest one with its time. `kind` is `p`
//! (property), `e` (event) or `s` (service calls and answers). Asynchronous service calls are
//! also kept whole, by id, for the business API to poll.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::model::ServiceCall;
use crate::store::{KeyRange, StoreError, Txn};

use super::{get_json, json, key, list_json_by_name, prefix};

/// What a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Property values.
    Property,
    /// Events (their output parameters).
    Event,
    /// Service calls and their answers.
    Service,
}

impl SeriesKind {
    fn tag(self) -> &'static [u8] {
        match self {
            SeriesKind::Property => b"p",
            SeriesKind::Event => b"e",
            SeriesKind::Service => b"s",
        }
    }
}

/// One series: a device's property or event.
#[derive(Debug, Clone, Copy)]
pub struct SeriesId<'a> {
    /// Owning tenant.
    pub tenant: &'a str,
    /// ProductKey.
    pub pk: &'a str,
    /// DeviceName.
    pub dn: &'a str,
    /// Property or event.
    pub kind: SeriesKind,
    /// The property's or event's identifier.
    pub identifier: &'a str,
}

impl SeriesId<'_> {
    fn parts(&self) -> [&[u8]; 6] {
        [
            b"h",
            self.tenant.as_bytes(),
            self.pk.as_bytes(),
            self.dn.as_bytes(),
            self.kind.tag(),
            self.identifier.as_bytes(),
        ]
    }

    /// The key of the value at `time` (`seq` orders values of the same millisecond).
    pub fn point_key(&self, time: u64, seq: u64) -> Vec<u8> {
        let mut k = key(&self.parts());
        k.push(0);
        k.extend_from_slice(&time.to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn latest_key(&self) -> Vec<u8> {
        let mut parts = self.parts();
        parts[0] = b"H";
        key(&parts)
    }

    /// The series' values from `from` (included) to `to` (excluded), ms.
    pub fn between(&self, from: u64, to: u64) -> KeyRange {
        KeyRange {
            start: self.point_key(from, 0),
            end: self.point_key(to, 0),
        }
    }
}

/// A series' latest value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    /// When, ms since the epoch.
    pub time: u64,
    /// The value (JSON).
    pub value: serde_json::Value,
}

/// A value to keep: its series, time, order within the millisecond, and the value.
pub type NewPoint<'a> = (SeriesId<'a>, u64, u64, &'a serde_json::Value);

/// Writes values, and makes the newest of each series its latest unless a later one is stored.
/// The stored latest values are read before anything is written: a read after writes is
/// checked against every write of the transaction.
pub async fn put_points(txn: &mut dyn Txn, points: &[NewPoint<'_>]) -> Result<(), StoreError> {
    let mut newest: std::collections::HashMap<Vec<u8>, (u64, &serde_json::Value)> =
        std::collections::HashMap::new();
    for (series, time, _, value) in points {
        let entry = newest.entry(series.latest_key()).or_insert((*time, *value));
        if *time >= entry.0 {
            *entry = (*time, *value);
        }
    }
    let mut latest = Vec::with_capacity(newest.len());
    for (k, (time, value)) in newest {
        let stored = get_json::<Latest>(txn, &k).await?;
        if stored.is_none_or(|l| l.time <= time) {
            latest.push((k, time, value));
        }
    }
    for (series, time, seq, value) in points {
        let bytes = serde_json::to_vec(value).expect("JSON values serialize");
        txn.set(&series.point_key(*time, *seq), &bytes);
    }
    for (k, time, value) in latest {
        let bytes = serde_json::to_vec(&json!({ "time": time, "value": value }))
            .expect("JSON values serialize");
        txn.set(&k, &bytes);
    }
    Ok(())
}

/// The time and value of a point's key and bytes.
pub fn decode_point(k: &[u8], v: &[u8]) -> Result<(u64, u64, serde_json::Value), StoreError> {
    let at = k.len().saturating_sub(16);
    let time = u64::from_be_bytes(k[at..at + 8].try_into().unwrap_or_default());
    let seq = u64::from_be_bytes(k[at + 8..].try_into().unwrap_or_default());
    Ok((time, seq, json(k, v)?))
}

/// Reads up to `limit` values of `range` (oldest first, or newest first when `reverse`).
pub async fn read_points(
    txn: &mut dyn Txn,
    range: &KeyRange,
    limit: usize,
    reverse: bool,
) -> Result<Vec<(u64, u64, serde_json::Value)>, StoreError> {
    let rows: Vec<(Bytes, Bytes)> = if reverse {
        txn.range_reverse(range, limit).await?
    } else {
        txn.range(range, limit).await?
    };
    rows.iter().map(|(k, v)| decode_point(k, v)).collect()
}

/// The latest value of each series of a device's `kind`, by identifier.
pub async fn latest_of(
    txn: &mut dyn Txn,
    tenant: &str,
    pk: &str,
    dn: &str,
    kind: SeriesKind,
) -> Result<Vec<(String, Latest)>, StoreError> {
    let parts = [
        b"H",
        tenant.as_bytes(),
        pk.as_bytes(),
        dn.as_bytes(),
        kind.tag(),
    ];
    list_json_by_name(txn, &parts).await
}

/// A page of every series' latest entry after `after` (a key this returned), for the sweeper:
/// (its key, the latest value).
pub async fn latest_page(
    txn: &mut dyn Txn,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Latest)>, StoreError> {
    page_after(txn, b"H", after, limit).await
}

/// The JSON records under `tag`, from just after the key `after`: one page of a scan.
async fn page_after<T: serde::de::DeserializeOwned>(
    txn: &mut dyn Txn,
    tag: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
    let mut range = prefix(&[tag]);
    if let Some(after) = after {
        range.start = after.to_vec();
        range.start.push(0);
    }
    txn.range(&range, limit)
        .await?
        .iter()
        .map(|(k, v)| Ok((k.to_vec(), json(k, v)?)))
        .collect()
}

/// The tenant of a latest entry's key (`H\0{tenant}\0...`).
pub fn tenant_of_latest(latest_key: &[u8]) -> Option<&str> {
    latest_key
        .split(|b| *b == 0)
        .nth(1)
        .and_then(|t| std::str::from_utf8(t).ok())
}

/// Removes a series' values before `cutoff` (ms), given its latest entry's key; the latest
/// entry too when it is older.
pub fn clear_before(txn: &mut dyn Txn, latest_key: &[u8], latest: &Latest, cutoff: u64) {
    let mut start = latest_key.to_vec();
    start[0] = b'h';
    start.push(0);
    let mut end = start.clone();
    end.extend_from_slice(&cutoff.to_be_bytes());
    txn.clear_range(&KeyRange { start, end });
    if latest.time < cutoff {
        txn.clear(latest_key);
    }
}

/// Removes a device's history.
pub fn delete_device_history(txn: &mut dyn Txn, tenant: &str, pk: &str, dn: &str) {
    for tag in [b"h", b"H"] {
        txn.clear_range(&prefix(&[
            tag,
            tenant.as_bytes(),
            pk.as_bytes(),
            dn.as_bytes(),
        ]));
    }
}

/// Removes the history of a product's devices.
pub fn delete_product_history(txn: &mut dyn Txn, tenant: &str, pk: &str) {
    for tag in [b"h", b"H"] {
        txn.clear_range(&prefix(&[tag, tenant.as_bytes(), pk.as_bytes()]));
    }
}

// ---- asynchronous service calls: `V\0{tenant}\0{pk}\0{dn}\0{message_id}` (JSON)

fn call_key(tenant: &str, pk: &str, dn: &str, id: &str) -> Vec<u8> {
    key(&[
        b"V",
        tenant.as_bytes(),
        pk.as_bytes(),
        dn.as_bytes(),
        id.as_bytes(),
    ])
}

/// Reads a device's service call.
pub async fn get_service_call(
    txn: &mut dyn Txn,
    tenant: &str,
    (pk, dn): (&str, &str),
    id: &str,
) -> Result<Option<ServiceCall>, StoreError> {
    get_json(txn, &call_key(tenant, pk, dn, id)).await
}

/// Writes a service call.
pub fn put_service_call(txn: &mut dyn Txn, call: &ServiceCall) {
    let k = call_key(
        &call.tenant,
        &call.product_key,
        &call.device_name,
        &call.message_id,
    );
    txn.set(&k, &serde_json::to_vec(call).expect("calls serialize"));
}

/// Removes one service call.
pub fn delete_service_call(txn: &mut dyn Txn, call: &ServiceCall) {
    let k = call_key(
        &call.tenant,
        &call.product_key,
        &call.device_name,
        &call.message_id,
    );
    txn.clear(&k);
}

/// Removes a device's service calls.
pub fn delete_service_calls(txn: &mut dyn Txn, tenant: &str, pk: &str, dn: &str) {
    txn.clear_range(&prefix(&[
        b"V",
        tenant.as_bytes(),
        pk.as_bytes(),
        dn.as_bytes(),
    ]));
}

/// A page of every service call (for the sweep), after the key `after`.
pub async fn service_call_page(
    txn: &mut dyn Txn,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, ServiceCall)>, StoreError> {
    page_after(txn, b"V", after, limit).await
}
