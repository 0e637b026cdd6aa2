//! What the hub keeps per product and device beyond the registry: gateway topology, shadows,
//! device info (tags, firmware versions), thing models, topic categories, and the business API's
//! keys.

use crate::data::api_key::ApiKey;
use std::collections::BTreeMap;

use crate::data::model::{DesiredValue, DeviceInfo, ParsingScript, RemoteConfig};
use crate::data::shadow::Shadow;
use crate::data::topic_category::TopicCategory;
use crate::store::{StoreError, Txn};
use crate::tsl::ThingModel;

use super::{encode, get_json, get_typed, json, key, list_json_by_name, list_typed, prefix};

// ---- gateway topology: which sub-devices each gateway carries

pub(super) fn topology_key(gw: (&str, &str), sub: (&str, &str)) -> Vec<u8> {
    key(&[
        b"k",
        gw.0.as_bytes(),
        gw.1.as_bytes(),
        sub.0.as_bytes(),
        sub.1.as_bytes(),
    ])
}

pub(super) fn gateway_key(sub: (&str, &str)) -> Vec<u8> {
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

// ---- device info: tags and reported firmware (JSON)

/// Reads what a device said about itself.
pub async fn get_device_info(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<Option<DeviceInfo>, StoreError> {
    get_json(txn, &key(&[b"i", pk.as_bytes(), dn.as_bytes()])).await
}

/// Writes what a device said about itself.
pub fn put_device_info(txn: &mut dyn Txn, pk: &str, dn: &str, info: &DeviceInfo) {
    let value = serde_json::to_vec(info).expect("device info serializes");
    txn.set(&key(&[b"i", pk.as_bytes(), dn.as_bytes()]), &value);
}

/// Removes a device's info.
pub fn delete_device_info(txn: &mut dyn Txn, pk: &str, dn: &str) {
    txn.clear(&key(&[b"i", pk.as_bytes(), dn.as_bytes()]));
}

// ---- desired property values (JSON)

/// A device's desired property values, by identifier.
pub async fn get_desired(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<BTreeMap<String, DesiredValue>, StoreError> {
    Ok(get_json(txn, &key(&[b"D", pk.as_bytes(), dn.as_bytes()]))
        .await?
        .unwrap_or_default())
}

/// Replaces a device's desired values (none: the record goes).
pub fn put_desired(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
    desired: &BTreeMap<String, DesiredValue>,
) {
    let k = key(&[b"D", pk.as_bytes(), dn.as_bytes()]);
    if desired.is_empty() {
        txn.clear(&k);
    } else {
        txn.set(
            &k,
            &serde_json::to_vec(desired).expect("desired values serialize"),
        );
    }
}

// ---- remote configuration (JSON)

/// Reads a product's remote configuration file.
pub async fn get_remote_config(
    txn: &mut dyn Txn,
    pk: &str,
) -> Result<Option<RemoteConfig>, StoreError> {
    get_json(txn, &key(&[b"C", pk.as_bytes()])).await
}

/// Writes a product's remote configuration file.
pub fn put_remote_config(txn: &mut dyn Txn, pk: &str, config: &RemoteConfig) {
    let value = serde_json::to_vec(config).expect("configurations serialize");
    txn.set(&key(&[b"C", pk.as_bytes()]), &value);
}

/// Removes a product's remote configuration file.
pub fn delete_remote_config(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&key(&[b"C", pk.as_bytes()]));
}

// ---- parsing scripts (JSON)

/// Reads a product's parsing script.
pub async fn get_script(txn: &mut dyn Txn, pk: &str) -> Result<Option<ParsingScript>, StoreError> {
    get_json(txn, &key(&[b"S", pk.as_bytes()])).await
}

/// Writes a product's parsing script.
pub fn put_script(txn: &mut dyn Txn, pk: &str, script: &ParsingScript) {
    let value = serde_json::to_vec(script).expect("scripts serialize");
    txn.set(&key(&[b"S", pk.as_bytes()]), &value);
}

/// Removes a product's parsing script.
pub fn delete_script(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&key(&[b"S", pk.as_bytes()]));
}

/// Every product's parsing script, by ProductKey.
pub async fn list_scripts(txn: &mut dyn Txn) -> Result<Vec<(String, ParsingScript)>, StoreError> {
    list_json_by_name(txn, &[b"S"]).await
}

// ---- thing models (JSON)

/// Writes a product's thing model.
pub fn put_model(txn: &mut dyn Txn, pk: &str, model: &ThingModel) {
    let value = serde_json::to_vec(model).expect("models serialize");
    txn.set(&key(&[b"z", pk.as_bytes()]), &value);
}

/// Removes a product's thing model and its saved versions.
pub fn delete_model(txn: &mut dyn Txn, pk: &str) {
    txn.clear(&key(&[b"z", pk.as_bytes()]));
    txn.clear_range(&prefix(&[b"Y", pk.as_bytes()]));
}

/// A saved version of a product's thing model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelVersion {
    /// 1, 2, ... per product.
    pub version: u64,
    /// When it was saved, ms since the epoch.
    pub saved_at_ms: u64,
    /// The model.
    pub model: ThingModel,
}

fn version_key(pk: &str, version: u64) -> Vec<u8> {
    key(&[b"Y", pk.as_bytes(), &version.to_be_bytes()])
}

/// A product's saved thing-model versions, oldest first.
pub async fn list_model_versions(
    txn: &mut dyn Txn,
    pk: &str,
) -> Result<Vec<ModelVersion>, StoreError> {
    txn.range(&prefix(&[b"Y", pk.as_bytes()]), 0)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}

/// Saves `model` as the product's next version, keeping the newest `keep` (the oldest go);
/// returns its number.
pub async fn save_model_version(
    txn: &mut dyn Txn,
    pk: &str,
    model: &ThingModel,
    saved_at_ms: u64,
    keep: usize,
) -> Result<u64, StoreError> {
    let saved = list_model_versions(txn, pk).await?;
    let version = saved.last().map_or(1, |v| v.version + 1);
    let record = ModelVersion {
        version,
        saved_at_ms,
        model: model.clone(),
    };
    txn.set(
        &version_key(pk, version),
        &serde_json::to_vec(&record).expect("versions serialize"),
    );
    let excess = (saved.len() + 1).saturating_sub(keep);
    for old in saved.iter().take(excess) {
        txn.clear(&version_key(pk, old.version));
    }
    Ok(version)
}

/// Every product's thing model, by ProductKey.
pub async fn list_models(txn: &mut dyn Txn) -> Result<Vec<(String, ThingModel)>, StoreError> {
    list_json_by_name(txn, &[b"z"]).await
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
    list_json_by_name(txn, &[b"c"]).await
}
