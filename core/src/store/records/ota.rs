//! Firmware upgrades: packages, batches, each device's job in a batch and the open job of each
//! device's module (JSON values, so records survive new fields).

use crate::data::ota::{OtaBatch, OtaJob, OtaPackage};
use crate::store::{StoreError, Txn};

use super::{LIST_LIMIT, get_json, json, key, prefix};

// ---- packages

/// Reads a tenant's package.
pub async fn get_package(
    txn: &mut dyn Txn,
    tenant: &str,
    id: &str,
) -> Result<Option<OtaPackage>, StoreError> {
    get_json(txn, &key(&[b"a", tenant.as_bytes(), id.as_bytes()])).await
}

/// Writes a package.
pub fn put_package(txn: &mut dyn Txn, package: &OtaPackage) {
    let value = serde_json::to_vec(package).expect("packages serialize");
    txn.set(
        &key(&[b"a", package.tenant.as_bytes(), package.id.as_bytes()]),
        &value,
    );
}

/// Removes a package's record (its bytes are the blob store's).
pub fn delete_package(txn: &mut dyn Txn, tenant: &str, id: &str) {
    txn.clear(&key(&[b"a", tenant.as_bytes(), id.as_bytes()]));
}

/// A tenant's packages, oldest first.
pub async fn list_packages(txn: &mut dyn Txn, tenant: &str) -> Result<Vec<OtaPackage>, StoreError> {
    list(txn, &[b"a", tenant.as_bytes()]).await
}

/// The counter of a tenant's packages (L-091).
pub fn package_count_key(tenant: &str) -> Vec<u8> {
    key(&[b"n", b"a", tenant.as_bytes()])
}

// ---- batches

/// Reads a tenant's batch.
pub async fn get_batch(
    txn: &mut dyn Txn,
    tenant: &str,
    id: &str,
) -> Result<Option<OtaBatch>, StoreError> {
    get_json(txn, &key(&[b"b", tenant.as_bytes(), id.as_bytes()])).await
}

/// Writes a batch.
pub fn put_batch(txn: &mut dyn Txn, batch: &OtaBatch) {
    let value = serde_json::to_vec(batch).expect("batches serialize");
    txn.set(
        &key(&[b"b", batch.tenant.as_bytes(), batch.id.as_bytes()]),
        &value,
    );
}

/// A tenant's batches, oldest first.
pub async fn list_batches(txn: &mut dyn Txn, tenant: &str) -> Result<Vec<OtaBatch>, StoreError> {
    list(txn, &[b"b", tenant.as_bytes()]).await
}

/// Every tenant's batches (the rollout loads the open ones at start).
pub async fn all_batches(txn: &mut dyn Txn) -> Result<Vec<OtaBatch>, StoreError> {
    list(txn, &[b"b"]).await
}

// ---- jobs

/// Reads a device's job in a batch.
pub async fn get_job(
    txn: &mut dyn Txn,
    batch: &str,
    dn: &str,
) -> Result<Option<OtaJob>, StoreError> {
    get_json(txn, &key(&[b"B", batch.as_bytes(), dn.as_bytes()])).await
}

/// Writes a device's job in a batch.
pub fn put_job(txn: &mut dyn Txn, batch: &str, job: &OtaJob) {
    let value = serde_json::to_vec(job).expect("jobs serialize");
    txn.set(
        &key(&[b"B", batch.as_bytes(), job.device_name.as_bytes()]),
        &value,
    );
}

/// Every job of a batch, by DeviceName (at most `limit`; 0: all).
pub async fn list_jobs(
    txn: &mut dyn Txn,
    batch: &str,
    limit: usize,
) -> Result<Vec<OtaJob>, StoreError> {
    let range = prefix(&[b"B", batch.as_bytes()]);
    txn.range(&range, limit)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}

// ---- a device's open job per module

/// The batch holding the open job of a device's module, if any.
pub async fn open_job_batch(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
    module: &str,
) -> Result<Option<String>, StoreError> {
    let k = key(&[b"A", pk.as_bytes(), dn.as_bytes(), module.as_bytes()]);
    Ok(txn
        .get(&k)
        .await?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Marks `batch` as holding the open job of a device's module.
pub fn set_open_job(txn: &mut dyn Txn, pk: &str, dn: &str, module: &str, batch: &str) {
    let k = key(&[b"A", pk.as_bytes(), dn.as_bytes(), module.as_bytes()]);
    txn.set(&k, batch.as_bytes());
}

/// Clears the open job of a device's module.
pub fn clear_open_job(txn: &mut dyn Txn, pk: &str, dn: &str, module: &str) {
    txn.clear(&key(&[
        b"A",
        pk.as_bytes(),
        dn.as_bytes(),
        module.as_bytes(),
    ]));
}

/// The modules of a device with an open job, and their batches.
pub async fn open_jobs(
    txn: &mut dyn Txn,
    pk: &str,
    dn: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let range = prefix(&[b"A", pk.as_bytes(), dn.as_bytes()]);
    let skip = range.start.len();
    Ok(txn
        .range(&range, 0)
        .await?
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k[skip..]).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect())
}

/// Clears every open job of a device (it is being deleted).
pub fn delete_open_jobs(txn: &mut dyn Txn, pk: &str, dn: &str) {
    txn.clear_range(&prefix(&[b"A", pk.as_bytes(), dn.as_bytes()]));
}

async fn list<T: serde::de::DeserializeOwned>(
    txn: &mut dyn Txn,
    parts: &[&[u8]],
) -> Result<Vec<T>, StoreError> {
    let range = prefix(parts);
    txn.range(&range, LIST_LIMIT)
        .await?
        .iter()
        .map(|(k, v)| json(k, v))
        .collect()
}
