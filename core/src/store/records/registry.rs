//! Tenants, products, devices and their counts, tenant profiles, and each device's
//! online/offline history.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::data::model::{Device, Product, Tenant};
use crate::limits::Profile;
use crate::store::decode_counter;
use crate::store::{KeyRange, StoreError, Txn};

use super::{LIST_LIMIT, encode, get_json, get_typed, json, key, list_typed, page, prefix};

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
    // Its devices, their shadows, their info and their open upgrades.
    for kind in [b"d", b"w", b"i", b"A"] {
        txn.clear_range(&prefix(&[kind, pk.as_bytes()]));
    }
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

pub(super) fn tenant_devices_key(tenant: &str) -> Vec<u8> {
    key(&[b"n", b"t", tenant.as_bytes()])
}

pub(super) fn product_devices_key(pk: &str) -> Vec<u8> {
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
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// `online` or `offline`.
    pub status: String,
    /// When, ms since the epoch.
    pub time: u64,
}

pub(super) fn status_key(pk: &str, dn: &str, at_ms: u64, seq: u64) -> Vec<u8> {
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
