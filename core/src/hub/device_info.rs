//! What a device says about itself: its tags, set by the device over Alink
//! (`/sys/{pk}/{dn}/thing/deviceinfo/update|delete`, answered on `..._reply`) or through the
//! admin API, and the firmware versions it reports on `/ota/device/inform/{pk}/{dn}` (per
//! module; `default` when it names none). Kept in the store beside the device, gone with it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::session::{ClientIdentity, alink_answer, alink_request};
use super::{Hub, HubError};
use crate::data::model::DeviceInfo;
use crate::limits::LimitId;
use crate::store::{records, transact};

/// Longest tag key (Alibaba's bound).
pub const MAX_TAG_KEY: usize = 30;
/// Longest tag value (Alibaba's bound).
pub const MAX_TAG_VALUE: usize = 128;
/// What [`check_tag`] accepts as a key, as a regular expression (for API schemas).
pub const TAG_KEY_PATTERN: &str = "^[A-Za-z0-9._-]{1,30}$";
/// The module a firmware report without one is recorded under.
pub const DEFAULT_MODULE: &str = "default";

/// A device-info request of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoOp {
    Update,
    Delete,
}

impl InfoOp {
    /// The request of a `/sys/{pk}/{dn}` topic suffix, if it is one.
    pub(crate) fn from_suffix(suffix: &str) -> Option<InfoOp> {
        match suffix {
            "/thing/deviceinfo/update" => Some(InfoOp::Update),
            "/thing/deviceinfo/delete" => Some(InfoOp::Delete),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            InfoOp::Update => "thing.deviceinfo.update",
            InfoOp::Delete => "thing.deviceinfo.delete",
        }
    }
}

/// Whether `/ota/device/inform/{pk}/{dn}` is device `pk`/`dn`'s firmware report topic.
pub(crate) fn is_firmware_report(topic: &str, pk: &str, dn: &str) -> bool {
    crate::topic::after_device(topic, "/ota/device/inform/", pk, dn) == Some("")
}

/// Checks a tag: a key of letters, digits, `.`, `_` or `-` up to [`MAX_TAG_KEY`] characters, a
/// value up to [`MAX_TAG_VALUE`].
pub fn check_tag(key: &str, value: &str) -> Result<(), HubError> {
    let key_ok = !key.is_empty()
        && key.chars().count() <= MAX_TAG_KEY
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !key_ok {
        return Err(HubError::Invalid(format!(
            "tag key {key:?}: 1 to {MAX_TAG_KEY} letters, digits, '.', '_' or '-'"
        )));
    }
    if value.chars().count() > MAX_TAG_VALUE {
        return Err(HubError::Invalid(format!(
            "tag {key}: a value of at most {MAX_TAG_VALUE} characters"
        )));
    }
    Ok(())
}

/// Devices' tags and reported firmware versions.
#[derive(Clone, Copy)]
pub struct DeviceInfos<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Devices' tags and reported firmware versions.
    pub fn device_infos(&self) -> DeviceInfos<'_> {
        DeviceInfos { hub: self }
    }

    /// Answers a device's `deviceinfo/update` or `delete` (the reply's payload): 200, or 460
    /// with what was wrong (a malformed entry, a tag over its bounds, more tags than L-090).
    pub(crate) async fn device_info_request(
        &self,
        identity: &ClientIdentity,
        op: InfoOp,
        payload: &[u8],
    ) -> Bytes {
        let (id, params) = alink_request(payload);
        let outcome = match (identity.device.as_ref(), &params) {
            (Some((pk, dn)), Value::Array(entries)) => {
                let field =
                    |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
                match op {
                    InfoOp::Update => {
                        let tags: Option<BTreeMap<String, String>> = entries
                            .iter()
                            .map(|e| Some((field(e, "attrKey")?, field(e, "attrValue")?)))
                            .collect();
                        match tags {
                            Some(tags) => self.device_infos().set_tags(pk, dn, tags).await,
                            None => Err(HubError::Invalid(
                                "each entry needs attrKey and attrValue".into(),
                            )),
                        }
                    }
                    InfoOp::Delete => {
                        let keys: Option<Vec<String>> =
                            entries.iter().map(|e| field(e, "attrKey")).collect();
                        match keys {
                            Some(keys) => self.device_infos().delete_tags(pk, dn, &keys).await,
                            None => Err(HubError::Invalid("each entry needs attrKey".into())),
                        }
                    }
                }
            }
            _ => Err(HubError::Invalid("params must be a list".into())),
        };
        let (code, message) = match outcome {
            Ok(_) => (200, "success".to_owned()),
            Err(e @ (HubError::Unavailable(_) | HubError::Store(_))) => (500, e.to_string()),
            Err(e) => (460, e.to_string()),
        };
        alink_answer(&id, code, json!({}), &message, op.method())
    }

    /// Records the firmware version a device reported (`{"params":{"version","module"?}}`);
    /// a report without a version is ignored, as it has no reply to carry an error.
    pub(crate) async fn firmware_report(&self, identity: &ClientIdentity, payload: &[u8]) {
        let Some((pk, dn)) = identity.device.as_ref() else {
            return;
        };
        let (_, params) = alink_request(payload);
        let Some(version) = params["version"].as_str().filter(|v| !v.is_empty()) else {
            tracing::warn!(device = %identity.key, "firmware report without a version ignored");
            return;
        };
        let module = params["module"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_MODULE);
        let (version, module) = (version.to_owned(), module.to_owned());
        let saved = self
            .device_infos()
            .update((&identity.tenant, pk, dn), {
                let (version, module) = (version.clone(), module.clone());
                move |info| {
                    info.firmware.insert(module.clone(), version.clone());
                    Ok::<(), ()>(())
                }
            })
            .await;
        if let Err(e) = saved {
            tracing::warn!(device = %identity.key, error = %e, "firmware version not recorded");
        }
        if let Err(e) = self.ota_version_reported(pk, dn, &module, &version).await {
            tracing::warn!(device = %identity.key, error = %e, "firmware upgrade not updated");
        }
    }
}

impl DeviceInfos<'_> {
    /// A device's tags and reported firmware versions.
    pub async fn get(&self, pk: &str, dn: &str) -> Result<DeviceInfo, HubError> {
        self.hub.registry().device(pk, dn).await?;
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        let info = transact(&**self.hub.store(), |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::get_device_info(t, &pk, &dn).await })
        })
        .await?;
        Ok(info.unwrap_or_default())
    }

    /// Sets tags (others are kept), within the device's bounds (L-090).
    pub async fn set_tags(
        &self,
        pk: &str,
        dn: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<DeviceInfo, HubError> {
        let device = self.hub.registry().device(pk, dn).await?;
        for (k, v) in &tags {
            check_tag(k, v)?;
        }
        let max = self.hub.profile_of(&device.tenant).entities.tags_per_device;
        let outcome = self
            .update((&device.tenant, pk, dn), move |info| {
                let mut merged = info.tags.clone();
                merged.extend(tags.clone());
                if max > 0 && merged.len() as u64 > max {
                    return Err(max);
                }
                info.tags = merged;
                Ok(())
            })
            .await?;
        outcome.map_err(|max| {
            self.hub.limited(
                LimitId::TagsPerDevice,
                format!("at most {max} tags per product, device or group (L-090, profile entities.tags_per_device)"),
            )
        })
    }

    /// Deletes tags (keys it does not have are no error).
    pub async fn delete_tags(
        &self,
        pk: &str,
        dn: &str,
        keys: &[String],
    ) -> Result<DeviceInfo, HubError> {
        let device = self.hub.registry().device(pk, dn).await?;
        let keys = keys.to_vec();
        let outcome = self
            .update((&device.tenant, pk, dn), move |info| {
                for k in &keys {
                    info.tags.remove(k);
                }
                Ok::<(), u64>(())
            })
            .await?;
        Ok(outcome.unwrap_or_default())
    }

    /// Reads, changes and writes a device's info in one transaction, with the index of the
    /// tenant's devices by tag; `change` may refuse.
    async fn update<E: Send + 'static>(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
        change: impl Fn(&mut DeviceInfo) -> Result<(), E> + Send + Sync + Clone + 'static,
    ) -> Result<Result<DeviceInfo, E>, HubError> {
        let (tenant, pk, dn) = (tenant.to_owned(), pk.to_owned(), dn.to_owned());
        Ok(transact(&**self.hub.store(), |t| {
            let (tenant, pk, dn, change) = (tenant.clone(), pk.clone(), dn.clone(), change.clone());
            Box::pin(async move {
                let mut info = records::get_device_info(t, &pk, &dn)
                    .await?
                    .unwrap_or_default();
                let before = info.tags.clone();
                if let Err(e) = change(&mut info) {
                    return Ok(Err(e));
                }
                records::put_device_info(t, &pk, &dn, &info);
                records::reindex_tags(t, &tenant, (&pk, &dn), &before, &info.tags);
                Ok(Ok(info))
            })
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_alibabas_bounds() {
        assert!(check_tag("room", "greenhouse-3").is_ok());
        assert!(check_tag("SYS_SDK_LANGUAGE", "Python").is_ok());
        assert!(check_tag("", "x").is_err());
        assert!(check_tag("a b", "x").is_err());
        assert!(check_tag(&"k".repeat(31), "x").is_err());
        assert!(check_tag("k", &"v".repeat(129)).is_err());
        assert!(check_tag("k", &"v".repeat(128)).is_ok());
    }

    #[test]
    fn firmware_reports_are_the_devices_own() {
        assert!(is_firmware_report("/ota/device/inform/pk/dn", "pk", "dn"));
        assert!(!is_firmware_report(
            "/ota/device/inform/pk/other",
            "pk",
            "dn"
        ));
        assert!(!is_firmware_report(
            "/ota/device/inform/pk/dn/x",
            "pk",
            "dn"
        ));
    }
}
