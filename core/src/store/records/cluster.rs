//! The cluster's shared records: nodes, the session registry, device tokens, the configuration
//! version, and hub metadata.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::decode_counter;
use crate::store::{StoreError, Txn};

use super::{decode, encode, get_typed, key, list_typed, page, prefix};

// ---- metadata

/// Reads a metadata value.
pub async fn get_meta(txn: &mut dyn Txn, name: &str) -> Result<Option<Bytes>, StoreError> {
    txn.get(&key(&[b"m", name.as_bytes()])).await
}

/// Writes a metadata value.
pub fn put_meta(txn: &mut dyn Txn, name: &str, value: &[u8]) {
    txn.set(&key(&[b"m", name.as_bytes()]), value);
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

pub(super) fn registry_key(session: &str) -> Vec<u8> {
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

pub(super) fn token_key(token_sha256_hex: &str) -> Vec<u8> {
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

pub(super) const CONFIG_VERSION: &[u8] = b"cfg";

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
