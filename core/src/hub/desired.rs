//! Desired property values (Alibaba's desired properties): the business API sets what it wants
//! a device's properties to become, each value versioned; the device reads them on
//! `/sys/{pk}/{dn}/thing/property/desired/get` (at connect, typically) and clears those it took
//! on `.../desired/delete`, both answered on `..._reply`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::session::{ClientIdentity, alink_answer, alink_request};
use super::{Hub, HubError};
use crate::data::model::DesiredValue;
use crate::store::{self, StoreError, records, transact};

/// What a device asks about its desired values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DesiredOp {
    /// `thing/property/desired/get`: `params` lists identifiers (none: all).
    Get,
    /// `thing/property/desired/delete`: `params` maps identifiers to `{"version"?}`.
    Delete,
}

impl DesiredOp {
    pub(crate) fn from_suffix(suffix: &str) -> Option<DesiredOp> {
        match suffix {
            "/thing/property/desired/get" => Some(DesiredOp::Get),
            "/thing/property/desired/delete" => Some(DesiredOp::Delete),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            DesiredOp::Get => "thing.property.desired.get",
            DesiredOp::Delete => "thing.property.desired.delete",
        }
    }
}

/// Desired property values of devices.
#[derive(Clone, Copy)]
pub struct DesiredProperties<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Desired property values of devices.
    pub fn desired_properties(&self) -> DesiredProperties<'_> {
        DesiredProperties { hub: self }
    }

    /// Answers a device's `desired/get` or `desired/delete` (the reply's payload).
    pub(crate) async fn desired_request(
        &self,
        identity: &ClientIdentity,
        op: DesiredOp,
        payload: &[u8],
    ) -> Bytes {
        let (id, params) = alink_request(payload);
        let Some((pk, dn)) = identity.device.as_ref() else {
            return alink_answer(&id, 460, json!({}), "not a device", op.method());
        };
        let outcome = match (op, &params) {
            (DesiredOp::Get, Value::Array(names)) => {
                let names: Option<Vec<String>> = names
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect();
                match names {
                    Some(names) => self.desired_of(pk, dn, &names).await.map(|found| {
                        let data: Map<String, Value> = found
                            .into_iter()
                            .map(|(k, v)| (k, json!({ "value": v.value, "version": v.version })))
                            .collect();
                        Value::Object(data)
                    }),
                    None => return bad(&id, op, "params: a list of property identifiers"),
                }
            }
            (DesiredOp::Delete, Value::Object(entries)) => {
                let versions: BTreeMap<String, Option<u64>> = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v["version"].as_u64()))
                    .collect();
                self.delete_desired(pk, dn, versions)
                    .await
                    .map(|()| json!({}))
            }
            _ => return bad(&id, op, "params do not fit the method"),
        };
        match outcome {
            Ok(data) => alink_answer(&id, 200, data, "success", op.method()),
            Err(e) => alink_answer(&id, 500, json!({}), &e.to_string(), op.method()),
        }
    }

    async fn desired_of(
        &self,
        pk: &str,
        dn: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, DesiredValue>, StoreError> {
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        let all = store::read(&**self.store(), |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::get_desired(t, &pk, &dn).await })
        })
        .await?;
        Ok(all
            .into_iter()
            .filter(|(k, _)| names.is_empty() || names.contains(k))
            .collect())
    }

    /// Deletes desired values: each whose version is given only at that version.
    async fn delete_desired(
        &self,
        pk: &str,
        dn: &str,
        versions: BTreeMap<String, Option<u64>>,
    ) -> Result<(), StoreError> {
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        transact(&**self.store(), |t| {
            let (pk, dn, versions) = (pk.clone(), dn.clone(), versions.clone());
            Box::pin(async move {
                let mut desired = records::get_desired(t, &pk, &dn).await?;
                desired.retain(|k, v| match versions.get(k) {
                    Some(Some(version)) => *version != v.version,
                    Some(None) => false,
                    None => true,
                });
                records::put_desired(t, &pk, &dn, &desired);
                Ok(())
            })
        })
        .await
    }
}

fn bad(id: &Value, op: DesiredOp, why: &str) -> Bytes {
    alink_answer(
        id,
        460,
        json!({}),
        &format!("request parameter error: {why}"),
        op.method(),
    )
}

impl DesiredProperties<'_> {
    /// Sets desired values (checked against the thing model when the product has one: each a
    /// writable property of its type). With `versions`, a value changes only if its current
    /// version is the one given (0: it has none yet), else nothing changes (409).
    pub async fn set(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
        params: Map<String, Value>,
        versions: BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, DesiredValue>, HubError> {
        if params.is_empty() {
            return Err(HubError::Invalid("params: no property".into()));
        }
        self.hub.tenant_device(tenant, pk, dn).await?;
        if let Some(model) = self.hub.model_of(pk) {
            model.check_set(&params).map_err(HubError::Invalid)?;
        }
        let (pk_owned, dn_owned, now) = (pk.to_owned(), dn.to_owned(), self.hub.now_ms());
        let outcome = transact(&**self.hub.store(), |t| {
            let (pk, dn, params, versions) = (
                pk_owned.clone(),
                dn_owned.clone(),
                params.clone(),
                versions.clone(),
            );
            Box::pin(async move {
                let mut desired = records::get_desired(t, &pk, &dn).await?;
                for (k, expected) in &versions {
                    let current = desired.get(k).map_or(0, |v| v.version);
                    if params.contains_key(k) && current != *expected {
                        return Ok(Err(format!("{k} is at version {current}, not {expected}")));
                    }
                }
                for (k, value) in params {
                    let version = desired.get(&k).map_or(0, |v| v.version) + 1;
                    desired.insert(
                        k,
                        DesiredValue {
                            value,
                            version,
                            time_ms: now,
                        },
                    );
                }
                records::put_desired(t, &pk, &dn, &desired);
                Ok(Ok(desired))
            })
        })
        .await?;
        outcome.map_err(HubError::Conflict)
    }

    /// A device's desired values.
    pub async fn get(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
    ) -> Result<BTreeMap<String, DesiredValue>, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        Ok(self.hub.desired_of(pk, dn, &[]).await?)
    }
}
