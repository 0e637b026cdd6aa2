//! Device groups, their members (both ways), the tags of products, and the index of devices by
//! tag (JSON values for groups and tags; memberships and index entries are empty values).

use std::collections::BTreeMap;

use crate::data::device_group::DeviceGroup;
use crate::store::{StoreError, Txn};

use super::{LIST_LIMIT, get_json, json, key, page, prefix};

// ---- groups

/// Reads a tenant's group.
pub async fn get_device_group(
    txn: &mut dyn Txn,
    tenant: &str,
    id: &str,
) -> Result<Option<DeviceGroup>, StoreError> {
    get_json(txn, &key(&[b"G", tenant.as_bytes(), id.as_bytes()])).await
}

/// Writes a group.
pub fn put_device_group(txn: &mut dyn Txn, group: &DeviceGroup) {
    let value = serde_json::to_vec(group).expect("groups serialize");
    txn.set(
        &key(&[b"G", group.tenant.as_bytes(), group.id.as_bytes()]),
        &value,
    );
}

/// Removes a group's record.
pub fn delete_device_group(txn: &mut dyn Txn, tenant: &str, id: &str) {
    txn.clear(&key(&[b"G", tenant.as_bytes(), id.as_bytes()]));
}

/// A tenant's groups, by id.
pub async fn list_device_groups(
    txn: &mut dyn Txn,
    tenant: &str,
) -> Result<Vec<DeviceGroup>, StoreError> {
    let range = prefix(&[b"G", tenant.as_bytes()]);
    txn.range(&range, LIST_LIMIT)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}

/// The counter of a tenant's device groups (L-099).
pub fn group_count_key(tenant: &str) -> Vec<u8> {
    key(&[b"n", b"G", tenant.as_bytes()])
}

/// The counter of a group's devices (L-100).
pub fn member_count_key(tenant: &str, group: &str) -> Vec<u8> {
    key(&[b"n", b"M", tenant.as_bytes(), group.as_bytes()])
}

// ---- members: `M\0{tenant}\0{group}\0{pk}/{dn}` and `I\0{pk}\0{dn}\0{group}`

fn member_key(tenant: &str, group: &str, pk: &str, dn: &str) -> Vec<u8> {
    let device = format!("{pk}/{dn}");
    key(&[b"M", tenant.as_bytes(), group.as_bytes(), device.as_bytes()])
}

fn in_group_key(pk: &str, dn: &str, group: &str) -> Vec<u8> {
    key(&[b"I", pk.as_bytes(), dn.as_bytes(), group.as_bytes()])
}

/// Whether a device is in a group.
pub async fn is_member(
    txn: &mut dyn Txn,
    tenant: &str,
    group: &str,
    (pk, dn): (&str, &str),
) -> Result<bool, StoreError> {
    Ok(txn.get(&member_key(tenant, group, pk, dn)).await?.is_some())
}

/// Puts a device in a group (both directions; the caller counts).
pub fn add_member(txn: &mut dyn Txn, tenant: &str, group: &str, (pk, dn): (&str, &str)) {
    txn.set(&member_key(tenant, group, pk, dn), &[]);
    txn.set(&in_group_key(pk, dn, group), &[]);
}

/// Takes a device out of a group (both directions; the caller counts).
pub fn remove_member(txn: &mut dyn Txn, tenant: &str, group: &str, (pk, dn): (&str, &str)) {
    txn.clear(&member_key(tenant, group, pk, dn));
    txn.clear(&in_group_key(pk, dn, group));
}

/// A page of a group's devices as `(pk, dn)`, after the device `after` (`pk/dn`).
pub async fn list_members(
    txn: &mut dyn Txn,
    tenant: &str,
    group: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let parts: [&[u8]; 3] = [b"M", tenant.as_bytes(), group.as_bytes()];
    device_page(txn, &parts, after, limit).await
}

/// The groups a device is in, by id.
pub async fn groups_of_device(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<Vec<String>, StoreError> {
    let range = prefix(&[b"I", pk.as_bytes(), dn.as_bytes()]);
    let skip = range.start.len();
    Ok(txn
        .range(&range, LIST_LIMIT)
        .await?
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[skip..]).into_owned())
        .collect())
}

// ---- product tags

/// A product's tags.
pub async fn get_product_tags(
    txn: &mut dyn Txn,
    pk: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    Ok(get_json(txn, &key(&[b"L", pk.as_bytes()]))
        .await?
        .unwrap_or_default())
}

/// Replaces a product's tags (none: the record goes).
pub fn put_product_tags(txn: &mut dyn Txn, pk: &str, tags: &BTreeMap<String, String>) {
    let k = key(&[b"L", pk.as_bytes()]);
    if tags.is_empty() {
        txn.clear(&k);
    } else {
        txn.set(&k, &serde_json::to_vec(tags).expect("tags serialize"));
    }
}

// ---- devices by tag: `E\0{tenant}\0{key}\0{value}\0{pk}/{dn}`

fn tagged_key(tenant: &str, (k, v): (&str, &str), pk: &str, dn: &str) -> Vec<u8> {
    let device = format!("{pk}/{dn}");
    key(&[
        b"E",
        tenant.as_bytes(),
        k.as_bytes(),
        v.as_bytes(),
        device.as_bytes(),
    ])
}

/// Moves a device's index entries from its `old` tags to its `new` ones.
pub fn reindex_tags(
    txn: &mut dyn Txn,
    tenant: &str,
    (pk, dn): (&str, &str),
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    for (k, v) in old {
        if new.get(k) != Some(v) {
            txn.clear(&tagged_key(tenant, (k, v), pk, dn));
        }
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            txn.set(&tagged_key(tenant, (k, v), pk, dn), &[]);
        }
    }
}

/// A page of a tenant's devices tagged `key` = `value`, as `(pk, dn)`, after `after` (`pk/dn`).
pub async fn devices_tagged(
    txn: &mut dyn Txn,
    tenant: &str,
    (k, v): (&str, &str),
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let parts: [&[u8]; 4] = [b"E", tenant.as_bytes(), k.as_bytes(), v.as_bytes()];
    device_page(txn, &parts, after, limit).await
}

/// A page of the devices named by the last part (`pk/dn`) of the keys under `parts`.
async fn device_page(
    txn: &mut dyn Txn,
    parts: &[&[u8]],
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let range = page(parts, after);
    let skip = prefix(parts).start.len();
    Ok(txn
        .range(&range, limit)
        .await?
        .iter()
        .filter_map(|(k, _)| {
            let device = String::from_utf8_lossy(&k[skip..]).into_owned();
            let (pk, dn) = device.split_once('/')?;
            Some((pk.to_owned(), dn.to_owned()))
        })
        .collect())
}
