//! Persistent sessions, their offline queues, and retained messages.

use serde::{Deserialize, Serialize};

use crate::data::message::{Message, QoS};
use crate::store::{StoreError, Txn};

use super::{decode, encode, get_typed, key, list_typed, page, prefix};

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

pub(super) fn queue_prefix(session: &str) -> Vec<u8> {
    let mut k = key(&[b"q", session.as_bytes()]);
    k.push(0);
    k
}

/// Appends a message to a session's queue: after everything committed before, in any node, and
/// at place `order` among the messages this transaction queues for the session.
pub fn push_queued(txn: &mut dyn Txn, session: &str, order: u32, msg: &Message) {
    txn.set_versionstamped(&queue_prefix(session), &order.to_be_bytes(), &encode(msg));
}

/// The place of the message that a commit with `stamp` queued with `order`
/// ([`push_queued`], [`crate::store::write_stamped`]).
pub fn queue_id(stamp: &[u8; 10], order: u32) -> QueueId {
    let mut id = [0; 14];
    id[..10].copy_from_slice(stamp);
    id[10..].copy_from_slice(&order.to_be_bytes());
    id
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
