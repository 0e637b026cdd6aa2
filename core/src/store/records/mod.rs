//! Typed records on top of the key-value interface, written once for every backend: one file per
//! family ([`registry`], [`sessions`], [`delivery`], [`devices`], [`cluster`]), re-exported here,
//! over the key and value helpers below.
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
//! | `Y\0{productKey}\0{version: u64 BE}` | a saved [`ModelVersion`] of it (JSON; the newest 10 kept) |
//! | `C\0{productKey}` | the product's [`RemoteConfig`] file (JSON) |
//! | `D\0{productKey}\0{deviceName}` | the device's desired property values, by identifier ([`DesiredValue`](crate::data::model::DesiredValue), JSON) |
//! | `S\0{productKey}` | the product's [`ParsingScript`](crate::data::model::ParsingScript) (JSON) |
//! | `h\0{tenant}\0{pk}\0{dn}\0{p\|e\|s}\0{identifier}\0{time: u64 BE}{seq: u64 BE}` | a property value or an event's output (JSON) |
//! | `H\0{tenant}\0{pk}\0{dn}\0{p\|e\|s}\0{identifier}` | the series' [`Latest`] value |
//! | `V\0{tenant}\0{pk}\0{dn}\0{messageId}` | an asynchronous [`ServiceCall`](crate::data::model::ServiceCall) and its answer (JSON) |
//! | `w\0{productKey}\0{deviceName}` | device [`Shadow`] (JSON) |
//! | `y\0{keyId}` | [`ApiKey`] of the business API (the secret as its SHA-256) |
//! | `x\0{tenant}\0{rule}` | [`Rule`] (JSON, so rules survive new fields) |
//! | `o\0{sink}\0{seq: u64 BE}` | ([`Destination`], [`Event`]) a sink has not confirmed yet, in order |
//! | `j\0{due: u64 ms BE}{id: u64 BE}` | [`RetryRecord`]: a delivery waiting for its next attempt (rule outputs), in due order |
//! | `n\0t\0{tenant}` / `n\0p\0{productKey}` | device count of a tenant / a product (i64 counter) |
//! | `n\0o\0{sink}` | events in a sink's outbox (i64 counter) |
//! | `u\0...`, `e\0...` | usage counters and events (written by the meter) |
//! | `N\0{node}` | [`NodeRecord`] of a cluster node: addresses and lease |
//! | `R\0{sessionKey}` | [`RegistryEntry`]: the node holding a session, online or not |
//! | `n\0cfg` | configuration version (i64 counter): nodes reload their caches when it moves |
//! | `T\0{sha256(token) hex}` | [`TokenRecord`]: an HTTP/CoAP device token, in a cluster |
//! | `a\0{tenant}\0{package}` | [`OtaPackage`](crate::data::ota::OtaPackage) (JSON) |
//! | `n\0a\0{tenant}` | the tenant's package count (i64 counter) |
//! | `F\0{blob}\0{index: u32 BE}` | one 64 KB chunk of a blob (a package's bytes, [`crate::store::blobs`]) |
//! | `b\0{tenant}\0{batch}` | [`OtaBatch`](crate::data::ota::OtaBatch) (JSON) |
//! | `B\0{batch}\0{deviceName}` | [`OtaJob`](crate::data::ota::OtaJob): a device's upgrade in a batch (JSON) |
//! | `A\0{productKey}\0{deviceName}\0{module}` | the batch holding the device's open upgrade of that module |
//! | `G\0{tenant}\0{group}` | [`DeviceGroup`](crate::data::device_group::DeviceGroup) (JSON) |
//! | `M\0{tenant}\0{group}\0{productKey}/{deviceName}` / `I\0{productKey}\0{deviceName}\0{group}` | empty: a device is in a group (both ways) |
//! | `n\0G\0{tenant}` / `n\0M\0{tenant}\0{group}` | the tenant's group count / the group's device count (i64 counters) |
//! | `L\0{productKey}` | the product's tags (JSON) |
//! | `E\0{tenant}\0{tagKey}\0{tagValue}\0{productKey}/{deviceName}` | empty: a device has the tag (search by tag) |

mod cluster;
mod delivery;
mod device_groups;
mod devices;
mod history;
mod ota;
mod registry;
mod sessions;

pub use cluster::*;
pub use delivery::*;
pub use device_groups::*;
pub use devices::*;
pub use history::*;
pub use ota::*;
pub use registry::*;
pub use sessions::*;

use serde::{Serialize, de::DeserializeOwned};

use super::{KeyRange, StoreError, Txn};

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

/// Every JSON record under the key `parts`, with the rest of its key (a ProductKey, an
/// identifier) as text.
async fn list_json_by_name<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    parts: &[&[u8]],
) -> Result<Vec<(String, T)>, StoreError> {
    let range = prefix(parts);
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
