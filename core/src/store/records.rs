//! Typed records on top of the key-value interface, written once for every backend.
//!
//! Key layout (segments separated by 0x00, which no identifier may contain; values are postcard):
//!
//! | key | value |
//! |---|---|
//! | `t\0{tenant}` | [`Tenant`] |
//! | `p\0{productKey}` | [`Product`] |
//! | `d\0{productKey}\0{deviceName}` | [`Device`] |
//! | `s\0{sessionKey}` | [`SessionRecord`] |
//! | `q\0{sessionKey}\0{versionstamp: 10 bytes}{order: u32 BE}` | [`Message`] waiting for an offline session, in commit order ([`QueueId`]) |
//! | `r\0{tenant}\0{topic}` | retained [`Message`] |
//! | `m\0{name}` | hub metadata (raw bytes) |
//! | `f\0{profile}` | tenant [`Profile`] (JSON, so profiles survive new fields) |
//! | `g\0{tenant}\0{group}` | [`ConsumerGroup`] |
//! | `k\0{gwProductKey}\0{gwDeviceName}\0{productKey}\0{deviceName}` | empty: a gateway carries a sub-device |
//! | `K\0{productKey}\0{deviceName}` | (gwProductKey, gwDeviceName): the gateway of a sub-device |
//! | `v\0{productKey}\0{deviceName}\0{u64::MAX - ms: BE}{seq: BE}` | [`StatusEvent`], newest first |
//! | `c\0{productKey}` | the product's [`TopicCategory`] list (JSON) |
//! | `z\0{productKey}` | the product's [`ThingModel`] (JSON) |
//! | `w\0{productKey}\0{deviceName}` | device [`Shadow`] (JSON) |
//! | `y\0{keyId}` | [`ApiKey`] of the business API (the secret as its SHA-256) |
//! | `x\0{tenant}\0{rule}` | [`Rule`] (JSON, so rules survive new fields) |
//! | `o\0{sink}\0{seq: u64 BE}` | ([`Destination`], [`Event`]) a sink has not confirmed yet, in order |
//! | `n\0t\0{tenant}` / `n\0p\0{productKey}` | device count of a tenant / a product (i64 counter) |
//! | `n\0o\0{sink}` | events in a sink's outbox (i64 counter) |
//! | `u\0...`, `e\0...` | usage counters and events (written by the meter) |
//! | `N\0{node}` | [`NodeRecord`] of a cluster node: addresses and lease |
//! | `R\0{sessionKey}` | [`RegistryEntry`]: the node holding a session, online or not |
//! | `n\0cfg` | configuration version (i64 counter): nodes reload their caches when it moves |
//! | `T\0{sha256(token) hex}` | [`TokenRecord`]: an HTTP/CoAP device token, in a cluster |

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{KeyRange, Store, StoreError, Txn};
use crate::data::api_key::ApiKey;
use crate::data::event::{Destination, Event};
use crate::data::message::{Message, QoS};
use crate::data::model::{ConsumerGroup, Device, Product, Tenant};
use crate::data::shadow::Shadow;
use crate::data::topic_category::TopicCategory;
use crate::limits::Profile;
use crate::rules::Rule;
use crate::store::decode_counter;
use crate::tsl::ThingModel;

/// Most rows returned by one listing read.
pub const LIST_LIMIT: usize = 10_000;

/// A key of `parts` joined by 0x00 (the separator of every key of the layout above).
pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn prefix(parts: &[&[u8]]) -> KeyRange {
    let mut k = key(parts);
    k.push(0);
    KeyRange::prefix(&k)
}

/// The keys under `parts`, from just after `parts` + `after` when given: one page of a listing.
fn page(parts: &[&[u8]], after: Option<&str>) -> KeyRange {
    let mut range = prefix(parts);
    if let Some(after) = after {
        // Names hold no 0x00: the first key after `after` itself.
        let mut first: Vec<&[u8]> = parts.to_vec();
        first.push(after.as_bytes());
        range.start = key(&first);
        range.start.push(0);
    }
    range
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialize")
}

fn decode<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        reason: e.to_string(),
    })
}

async fn get_typed<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    k: &[u8],
) -> Result<Option<T>, StoreError> {
    match txn.get(k).await? {
        Some(v) => decode(k, &v).map(Some),
        None => Ok(None),
    }
}

async fn list_typed<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    range: &KeyRange,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    txn.range(range, limit)
        .await?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

// ---- tenants, products, devices

/// Reads a tenant.
pub async fn get_tenant(txn: &mut dyn Txn, id: &str) -> Result<Option<Tenant>, StoreError> {
    get_typed(txn, &key(&[b"t", id.as_bytes()])).await
}

/// Writes a tenant.
pub fn put_tenant(txn: &mut dyn Txn, t: &Tenant) {
    txn.set(&key(&[b"t", t.id.as_bytes()]), &encode(t));
}

/// Removes a tenant record.
pub fn delete_tenant(txn: &mut dyn Txn, id: &str) {
    txn.clear(&key(&[b"t", id.as_bytes()]));
}

/// Lists tenants in id order.
pub async fn list_tenants(txn: &mut dyn Txn) -> Result<Vec<Tenant>, StoreError> {
    list_typed(txn, &prefix(&[b"t"]), LIST_LIMIT).await
}

/// Reads a product.
pub async fn get_product(txn: &mut dyn Txn, pk: &str) -> Result<Option<Product>, StoreError> {
    get_typed(txn, &key(&[b"p", pk.as_bytes()])).await
}

/// Writes a product.
pub fn put_product(txn: &mut dyn Txn, p: &Product) {
    txn.set(&key(&[b"p", p.product_key.as_bytes()]), &encode(p));
}

/// Removes a product and every device under it.
pub fn delete_product(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&key(&[b"p", pk.as_bytes()]));
    txn.clear_range(&prefix(&[b"d", pk.as_bytes()]));
}

/// Lists all products in key order.
pub async fn list_products(txn: &mut dyn Txn) -> Result<Vec<Product>, StoreError> {
    list_typed(txn, &prefix(&[b"p"]), LIST_LIMIT).await
}

/// Reads a device.
pub async fn get_device(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<Option<Device>, StoreError> {
    get_typed(txn, &key(&[b"d", pk.as_bytes(), dn.as_bytes()])).await
}

/// Writes a device.
pub fn put_device(txn: &mut dyn Txn, d: &Device) {
    txn.set(
        &key(&[b"d", d.product_key.as_bytes(), d.device_name.as_bytes()]),
        &encode(d),
    );
}

/// Removes a device.
pub fn delete_device(txn: &mut dyn Txn, pk: &str, dn: &str) {
    txn.clear(&key(&[b"d", pk.as_bytes(), dn.as_bytes()]));
}

fn tenant_devices_key(tenant: &str) -> Vec<u8> {
    key(&[b"n", b"t", tenant.as_bytes()])
}

fn product_devices_key(pk: &str) -> Vec<u8> {
    key(&[b"n", b"p", pk.as_bytes()])
}

/// Adjusts the device counts of a tenant and a product (atomic adds: never conflict).
pub fn count_devices(txn: &mut dyn Txn, tenant: &str, pk: &str, delta: i64) {
    txn.add(&tenant_devices_key(tenant), delta);
    txn.add(&product_devices_key(pk), delta);
}

/// Devices of a tenant and of a product.
pub async fn device_counts(
    txn: &mut dyn Txn,
    tenant: &str,
    pk: &str,
) -> Result<(u64, u64), StoreError> {
    let read = |v: Option<Bytes>| v.map(|v| decode_counter(&v).max(0) as u64).unwrap_or(0);
    let t = read(txn.get(&tenant_devices_key(tenant)).await?);
    let p = read(txn.get(&product_devices_key(pk)).await?);
    Ok((t, p))
}

/// Forgets a product's device count (the product is gone).
pub fn clear_product_count(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&product_devices_key(pk));
}

// ---- tenant profiles

/// Reads a profile.
pub async fn get_profile(txn: &mut dyn Txn, name: &str) -> Result<Option<Profile>, StoreError> {
    get_json(txn, &key(&[b"f", name.as_bytes()])).await
}

/// Writes a profile.
pub fn put_profile(txn: &mut dyn Txn, p: &Profile) {
    let value = serde_json::to_vec(p).expect("profiles serialize");
    txn.set(&key(&[b"f", p.name.as_bytes()]), &value);
}

/// Removes a profile.
pub fn delete_profile(txn: &mut dyn Txn, name: &str) {
    txn.clear(&key(&[b"f", name.as_bytes()]));
}

/// Lists stored profiles.
pub async fn list_profiles(txn: &mut dyn Txn) -> Result<Vec<Profile>, StoreError> {
    txn.range(&prefix(&[b"f"]), LIST_LIMIT)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}

/// Lists the devices of a product in name order, at most `limit`.
pub async fn list_devices(
    txn: &mut dyn Txn,
    pk: &str,
    limit: usize,
) -> Result<Vec<Device>, StoreError> {
    list_typed(txn, &prefix(&[b"d", pk.as_bytes()]), limit).await
}

/// Lists a product's devices in name order after `after` (exclusive), at most `limit`.
pub async fn list_devices_after(
    txn: &mut dyn Txn,
    pk: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Device>, StoreError> {
    list_typed(txn, &page(&[b"d", pk.as_bytes()], after), limit).await
}

// ---- online/offline history, newest first (keys hold the inverted time)

/// A device going online or offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// `online` or `offline`.
    pub status: String,
    /// When, ms since the epoch.
    pub time: u64,
}

fn status_key(pk: &str, dn: &str, at_ms: u64, seq: u64) -> Vec<u8> {
    let mut stamp = (u64::MAX - at_ms).to_be_bytes().to_vec();
    stamp.extend_from_slice(&seq.to_be_bytes());
    key(&[b"v", pk.as_bytes(), dn.as_bytes(), &stamp])
}

/// Records a status change (`seq` keeps changes of the same millisecond apart).
pub fn put_status_event(txn: &mut dyn Txn, pk: &str, dn: &str, seq: u64, event: &StatusEvent) {
    txn.set(&status_key(pk, dn, event.time, seq), &encode(event));
}

/// The newest `limit` status changes of a device.
pub async fn list_status_events(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
    limit: usize,
) -> Result<Vec<StatusEvent>, StoreError> {
    list_typed(txn, &prefix(&[b"v", pk.as_bytes(), dn.as_bytes()]), limit).await
}

/// Forgets a device's status changes older than `before_ms`.
pub fn trim_status_events(txn: &mut dyn Txn, pk: &str, dn: &str, before_ms: u64) {
    let all = prefix(&[b"v", pk.as_bytes(), dn.as_bytes()]);
    // Newest first: everything from the first key of `before_ms - 1` on is older.
    let range = KeyRange {
        start: status_key(pk, dn, before_ms.saturating_sub(1), 0),
        end: all.end,
    };
    txn.clear_range(&range);
}

/// Forgets all of a device's status changes.
pub fn delete_status_events(txn: &mut dyn Txn, pk: &str, dn: &str) {
    txn.clear_range(&prefix(&[b"v", pk.as_bytes(), dn.as_bytes()]));
}

// ---- sessions and their offline queues

/// A subscription as persisted with its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The filter as the client wrote it (may be `$share/...`).
    pub filter: String,
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 no-local.
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub subscription_id: Option<u32>,
}

/// A persistent session: what survives the connection (and the process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session key (`{pk}/{dn}` for devices, `open:{clientId}` in the open broker).
    pub key: String,
    /// Tenant scope.
    pub tenant: String,
    /// Seconds the session outlives its connection.
    pub expiry_secs: u32,
    /// When the last connection ended; None while connected.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
}

impl SessionRecord {
    /// Whether the session expired by `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        expired(self.disconnected_at_ms, self.expiry_secs, now_ms)
    }
}

/// Whether a session disconnected at `disconnected_at_ms` (None: connected) with `expiry_secs`
/// has expired by `now_ms`.
pub fn expired(disconnected_at_ms: Option<u64>, expiry_secs: u32, now_ms: u64) -> bool {
    disconnected_at_ms.is_some_and(|at| at + u64::from(expiry_secs) * 1000 <= now_ms)
}

/// Reads a session.
pub async fn get_session(
    txn: &mut dyn Txn,
    session: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    get_typed(txn, &key(&[b"s", session.as_bytes()])).await
}

/// Writes a session.
pub fn put_session(txn: &mut dyn Txn, s: &SessionRecord) {
    txn.set(&key(&[b"s", s.key.as_bytes()]), &encode(s));
}

/// Removes a session and its queue.
pub fn delete_session(txn: &mut dyn Txn, session: &str) {
    txn.clear(&key(&[b"s", session.as_bytes()]));
    txn.clear_range(&prefix(&[b"q", session.as_bytes()]));
}

/// Lists all sessions.
pub async fn list_sessions(txn: &mut dyn Txn) -> Result<Vec<SessionRecord>, StoreError> {
    list_typed(txn, &prefix(&[b"s"]), 0).await
}

/// Lists up to `limit` sessions in key order, after the session `after` when given (pages).
pub async fn list_sessions_after(
    txn: &mut dyn Txn,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<SessionRecord>, StoreError> {
    list_typed(txn, &page(&[b"s"], after), limit).await
}

/// Where a queued message is in its session's queue: the versionstamp of the commit that queued
/// it (10 bytes, increasing with commit order across every node sharing the store) and its
/// place in that commit (4 bytes).
pub type QueueId = [u8; 14];

fn queue_prefix(session: &str) -> Vec<u8> {
    let mut k = key(&[b"q", session.as_bytes()]);
    k.push(0);
    k
}

/// Appends a message to a session's queue: after everything committed before, in any node, and
/// at place `order` among the messages this transaction queues for the session.
pub fn push_queued(txn: &mut dyn Txn, session: &str, order: u32, msg: &Message) {
    txn.set_versionstamped(&queue_prefix(session), &order.to_be_bytes(), &encode(msg));
}

/// Removes one queued message.
pub fn remove_queued(txn: &mut dyn Txn, session: &str, id: &QueueId) {
    let mut k = queue_prefix(session);
    k.extend_from_slice(id);
    txn.clear(&k);
}

/// Reads up to `limit` queued messages in order, with their places.
pub async fn read_queue(
    txn: &mut dyn Txn,
    session: &str,
    limit: usize,
) -> Result<Vec<(QueueId, Message)>, StoreError> {
    let rows = txn
        .range(&prefix(&[b"q", session.as_bytes()]), limit)
        .await?;
    rows.iter()
        .map(|(k, v)| {
            let id: QueueId = k[k.len() - 14..].try_into().expect("14-byte suffix");
            Ok((id, decode(k, v)?))
        })
        .collect()
}

/// Counts a session's queued messages (reads keys only up to `cap`).
pub async fn count_queued(
    txn: &mut dyn Txn,
    session: &str,
    cap: usize,
) -> Result<usize, StoreError> {
    Ok(txn
        .range(&prefix(&[b"q", session.as_bytes()]), cap)
        .await?
        .len())
}

// ---- retained messages

/// Writes a retained message.
pub fn put_retained(txn: &mut dyn Txn, msg: &Message) {
    txn.set(
        &key(&[b"r", msg.tenant.as_bytes(), msg.topic.as_bytes()]),
        &encode(msg),
    );
}

/// Removes a retained message.
pub fn delete_retained(txn: &mut dyn Txn, tenant: &str, topic: &str) {
    txn.clear(&key(&[b"r", tenant.as_bytes(), topic.as_bytes()]));
}

/// Lists every retained message of every tenant.
pub async fn list_retained(txn: &mut dyn Txn) -> Result<Vec<Message>, StoreError> {
    list_typed(txn, &prefix(&[b"r"]), 0).await
}

// ---- metadata

/// Reads a metadata value.
pub async fn get_meta(txn: &mut dyn Txn, name: &str) -> Result<Option<Bytes>, StoreError> {
    txn.get(&key(&[b"m", name.as_bytes()])).await
}

/// Writes a metadata value.
pub fn put_meta(txn: &mut dyn Txn, name: &str, value: &[u8]) {
    txn.set(&key(&[b"m", name.as_bytes()]), value);
}

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

fn outbox_count_key(sink: &str) -> Vec<u8> {
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
    super::transact(store, |t| {
        let k = k.clone();
        Box::pin(async move { Ok(t.get(&k).await?.map_or(0, |v| decode_counter(&v))) })
    })
    .await
}

// ---- rules (JSON: destinations are a tagged enum, and rules should survive new fields)

fn json<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        reason: e.to_string(),
    })
}

async fn get_json<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    k: &[u8],
) -> Result<Option<T>, StoreError> {
    match txn.get(k).await? {
        Some(v) => json(k, &v).map(Some),
        None => Ok(None),
    }
}

/// Every JSON record under `tag`, with the rest of its key (a ProductKey) as text.
async fn list_json_by_name<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    tag: &[u8],
) -> Result<Vec<(String, T)>, StoreError> {
    let range = prefix(&[tag]);
    let skip = range.start.len();
    txn.range(&range, 0)
        .await?
        .iter()
        .map(|(k, v)| {
            Ok((
                String::from_utf8_lossy(&k[skip..]).into_owned(),
                json(k, v)?,
            ))
        })
        .collect()
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

// ---- gateway topology: which sub-devices each gateway carries

fn topology_key(gw: (&str, &str), sub: (&str, &str)) -> Vec<u8> {
    key(&[
        b"k",
        gw.0.as_bytes(),
        gw.1.as_bytes(),
        sub.0.as_bytes(),
        sub.1.as_bytes(),
    ])
}

fn gateway_key(sub: (&str, &str)) -> Vec<u8> {
    key(&[b"K", sub.0.as_bytes(), sub.1.as_bytes()])
}

/// Attaches a sub-device to a gateway (both directions of the edge).
pub fn put_topology(txn: &mut dyn Txn, gw: (&str, &str), sub: (&str, &str)) {
    txn.set(&topology_key(gw, sub), b"");
    txn.set(&gateway_key(sub), &encode(&(gw.0, gw.1)));
}

/// Detaches a sub-device from a gateway.
pub fn delete_topology(txn: &mut dyn Txn, gw: (&str, &str), sub: (&str, &str)) {
    txn.clear(&topology_key(gw, sub));
    txn.clear(&gateway_key(sub));
}

/// The gateway a sub-device is attached to.
pub async fn gateway_of(
    txn: &mut dyn Txn,
    sub: (&str, &str),
) -> Result<Option<(String, String)>, StoreError> {
    get_typed(txn, &gateway_key(sub)).await
}

/// A gateway's sub-devices as (productKey, deviceName), at most `limit` (0: all).
pub async fn list_sub_devices(
    txn: &mut dyn Txn,
    gw: (&str, &str),
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let range = prefix(&[b"k", gw.0.as_bytes(), gw.1.as_bytes()]);
    let skip = range.start.len();
    Ok(txn
        .range(&range, limit)
        .await?
        .iter()
        .filter_map(|(k, _)| {
            let rest = std::str::from_utf8(&k[skip..]).ok()?;
            let (pk, dn) = rest.split_once('\0')?;
            Some((pk.to_owned(), dn.to_owned()))
        })
        .collect())
}

// ---- business API keys

/// Writes an API key.
pub fn put_api_key(txn: &mut dyn Txn, k: &ApiKey) {
    txn.set(&key(&[b"y", k.id.as_bytes()]), &encode(k));
}

/// Removes an API key.
pub fn delete_api_key(txn: &mut dyn Txn, id: &str) {
    txn.clear(&key(&[b"y", id.as_bytes()]));
}

/// Lists every API key.
pub async fn list_api_keys(txn: &mut dyn Txn) -> Result<Vec<ApiKey>, StoreError> {
    list_typed(txn, &prefix(&[b"y"]), 0).await
}

// ---- device shadows (JSON: they are JSON documents)

/// Reads a device's shadow.
pub async fn get_shadow(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<Option<Shadow>, StoreError> {
    get_json(txn, &key(&[b"w", pk.as_bytes(), dn.as_bytes()])).await
}

/// Writes a device's shadow.
pub fn put_shadow(txn: &mut dyn Txn, pk: &str, dn: &str, shadow: &Shadow) {
    let value = serde_json::to_vec(shadow).expect("shadows serialize");
    txn.set(&key(&[b"w", pk.as_bytes(), dn.as_bytes()]), &value);
}

/// The devices whose shadow has desired properties, as (productKey, deviceName).
pub async fn devices_with_desired(txn: &mut dyn Txn) -> Result<Vec<(String, String)>, StoreError> {
    let range = prefix(&[b"w"]);
    let skip = range.start.len();
    let mut out = Vec::new();
    for (k, v) in txn.range(&range, 0).await? {
        let shadow: Shadow = json(&k, &v)?;
        if shadow.state.desired.is_empty() {
            continue;
        }
        let rest = String::from_utf8_lossy(&k[skip..]).into_owned();
        if let Some((pk, dn)) = rest.split_once('\0') {
            out.push((pk.to_owned(), dn.to_owned()));
        }
    }
    Ok(out)
}

/// Removes a device's shadow.
pub fn delete_shadow(txn: &mut dyn Txn, pk: &str, dn: &str) {
    txn.clear(&key(&[b"w", pk.as_bytes(), dn.as_bytes()]));
}

// ---- thing models (JSON)

/// Writes a product's thing model.
pub fn put_model(txn: &mut dyn Txn, pk: &str, model: &ThingModel) {
    let value = serde_json::to_vec(model).expect("models serialize");
    txn.set(&key(&[b"z", pk.as_bytes()]), &value);
}

/// Removes a product's thing model.
pub fn delete_model(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&key(&[b"z", pk.as_bytes()]));
}

/// Every product's thing model, by ProductKey.
pub async fn list_models(txn: &mut dyn Txn) -> Result<Vec<(String, ThingModel)>, StoreError> {
    list_json_by_name(txn, b"z").await
}

// ---- topic categories (JSON)

/// Replaces a product's topic categories (an empty list removes them).
pub fn put_topic_categories(txn: &mut dyn Txn, pk: &str, categories: &[TopicCategory]) {
    let k = key(&[b"c", pk.as_bytes()]);
    if categories.is_empty() {
        txn.clear(&k);
    } else {
        txn.set(
            &k,
            &serde_json::to_vec(categories).expect("categories serialize"),
        );
    }
}

/// Every product's topic categories, by ProductKey.
pub async fn list_topic_categories(
    txn: &mut dyn Txn,
) -> Result<Vec<(String, Vec<TopicCategory>)>, StoreError> {
    list_json_by_name(txn, b"c").await
}

// ---- cluster: nodes, the session registry, the configuration version

/// A node of a cluster (`N\0{node}`), renewed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub id: String,
    /// Where its peers reach it (host:port of the cluster link).
    pub cluster_addr: String,
    /// Where devices reach its MQTT listener (told to devices when this node hands over).
    pub mqtt_addr: Option<String>,
    /// The lease: the node counts as alive until then (ms since the epoch).
    pub lease_until_ms: u64,
    /// When the node started.
    pub started_at_ms: u64,
}

/// Where a session's connection is (`R\0{sessionKey}`): the node holding it, and whether it is
/// connected there (an offline persistent session stays with the node it left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The node.
    pub node: String,
    /// Connected now.
    pub online: bool,
    /// When this entry was written.
    pub since_ms: u64,
}

/// Writes a node's record.
pub fn put_node(txn: &mut dyn Txn, node: &NodeRecord) {
    txn.set(&key(&[b"N", node.id.as_bytes()]), &encode(node));
}

/// Removes a node's record (it left the cluster).
pub fn delete_node(txn: &mut dyn Txn, node: &str) {
    txn.clear(&key(&[b"N", node.as_bytes()]));
}

/// Lists the nodes that have a record, live or not.
pub async fn list_nodes(txn: &mut dyn Txn) -> Result<Vec<NodeRecord>, StoreError> {
    list_typed(txn, &prefix(&[b"N"]), 0).await
}

fn registry_key(session: &str) -> Vec<u8> {
    key(&[b"R", session.as_bytes()])
}

/// Reads where a session is.
pub async fn get_registry(
    txn: &mut dyn Txn,
    session: &str,
) -> Result<Option<RegistryEntry>, StoreError> {
    get_typed(txn, &registry_key(session)).await
}

/// Records where a session is.
pub fn put_registry(txn: &mut dyn Txn, session: &str, entry: &RegistryEntry) {
    txn.set(&registry_key(session), &encode(entry));
}

/// Removes a session's registry entry.
pub fn delete_registry(txn: &mut dyn Txn, session: &str) {
    txn.clear(&registry_key(session));
}

/// A device token of the HTTP or CoAP transports (`T\0{sha256(token), hex}`), stored in a
/// cluster so that any node accepts it; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Tenant.
    pub tenant: String,
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// When it expires, ms since the epoch.
    pub expires_at_ms: u64,
}

fn token_key(token_sha256_hex: &str) -> Vec<u8> {
    key(&[b"T", token_sha256_hex.as_bytes()])
}

/// Stores a device token (by its hash).
pub fn put_token(txn: &mut dyn Txn, token_sha256_hex: &str, record: &TokenRecord) {
    txn.set(&token_key(token_sha256_hex), &encode(record));
}

/// Reads a device token (by its hash).
pub async fn get_token(
    txn: &mut dyn Txn,
    token_sha256_hex: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    get_typed(txn, &token_key(token_sha256_hex)).await
}

/// Lists up to `limit` stored tokens (hash, record) after the hash `after` (pages).
pub async fn list_tokens_after(
    txn: &mut dyn Txn,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, TokenRecord)>, StoreError> {
    let skip = token_key("").len();
    txn.range(&page(&[b"T"], after), limit)
        .await?
        .iter()
        .map(|(k, v)| {
            Ok((
                String::from_utf8_lossy(&k[skip..]).into_owned(),
                decode(k, v)?,
            ))
        })
        .collect()
}

/// Removes a stored token.
pub fn delete_token(txn: &mut dyn Txn, token_sha256_hex: &str) {
    txn.clear(&token_key(token_sha256_hex));
}

const CONFIG_VERSION: &[u8] = b"cfg";

/// Marks that tenants, profiles, groups, rules, keys, models or categories changed, so that
/// every node reloads them.
pub fn bump_config_version(txn: &mut dyn Txn) {
    txn.add(&key(&[b"n", CONFIG_VERSION]), 1);
}

/// The configuration version (0 before any change).
pub async fn config_version(txn: &mut dyn Txn) -> Result<i64, StoreError> {
    Ok(txn
        .get(&key(&[b"n", CONFIG_VERSION]))
        .await?
        .map_or(0, |v| decode_counter(&v)))
}
