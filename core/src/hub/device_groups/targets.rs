//! A group as the target of business calls: a message to each of its devices, a property set
//! and a service call of each, and their events together.

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{DeviceGroups, DeviceRef};
use crate::data::message::QoS;
use crate::hub::thing_history::RangeQuery;
use crate::hub::{Hub, HubError, InvokeOutcome, PropertySetOutcome};

/// Devices addressed at once: enough to keep the downlink busy, few enough to stay gentle.
const CONCURRENT_CALLS: usize = 64;

/// What a message to a group did.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct GroupPub {
    /// Devices in the group.
    pub devices: usize,
    /// Sessions it was handed to (devices online, or with a persistent session).
    pub delivered_to: usize,
    /// Devices it was refused for, with why (a downlink limit, a topic a category forbids).
    pub refused: Vec<DeviceError>,
}

/// A device a group call failed for.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct DeviceError {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceRef,
    /// Why.
    pub error: String,
}

/// One device's outcome of a call to each device of a group.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct GroupResult<T> {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceRef,
    /// Its outcome; absent when the call was refused for it (`error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// Why the call was refused for it (its thing model, a limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each device's property set: its answer, timeout or offline.
pub type GroupSet = GroupResult<PropertySetOutcome>;

/// Each device's service call: sent (with its id) or offline.
pub type GroupInvoke = GroupResult<InvokeOutcome>;

/// An event of one of a group's devices.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct GroupEvent {
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// The event's identifier.
    pub identifier: String,
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// The event's output.
    pub value: Value,
}

impl DeviceGroups<'_> {
    /// Publishes `payload` to each device of a group on `topic`, a template of the device's own
    /// topics (`/${productKey}/${deviceName}/user/get`, `/sys/${productKey}/${deviceName}/...`).
    pub async fn publish(
        &self,
        tenant: &str,
        group: &str,
        topic: &str,
        payload: Bytes,
        qos: QoS,
    ) -> Result<GroupPub, HubError> {
        if !topic.contains("${productKey}/${deviceName}/") {
            return Err(HubError::Invalid(
                "topic: a template of the devices' own topics, with ${productKey}/${deviceName}/"
                    .into(),
            ));
        }
        let devices = self.all_members(tenant, group).await?;
        let mut out = GroupPub {
            devices: devices.len(),
            delivered_to: 0,
            refused: Vec::new(),
        };
        let sent = futures_util::stream::iter(devices)
            .map(|d| {
                let name = topic
                    .replace("${productKey}", &d.product_key)
                    .replace("${deviceName}", &d.device_name);
                let (hub, tenant, payload) = (self.hub.clone(), tenant.to_owned(), payload.clone());
                async move {
                    let outcome = hub
                        .business()
                        .pub_to_device(&tenant, &d.product_key, &d.device_name, &name, payload, qos)
                        .await;
                    (d, outcome)
                }
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .collect::<Vec<_>>()
            .await;
        for (device, outcome) in sent {
            match outcome {
                Ok(n) => out.delivered_to += n,
                Err(e) => out.refused.push(DeviceError {
                    device,
                    error: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// Runs `call` (given the hub, the tenant and the device) for each device of a group,
    /// [`CONCURRENT_CALLS`] at a time: the outcomes by ProductKey and DeviceName.
    async fn each_device<T, Fut>(
        &self,
        tenant: &str,
        group: &str,
        call: impl Fn(Hub, String, DeviceRef) -> Fut,
    ) -> Result<Vec<GroupResult<T>>, HubError>
    where
        Fut: Future<Output = Result<T, HubError>>,
    {
        let devices = self.all_members(tenant, group).await?;
        let mut results: Vec<GroupResult<T>> = futures_util::stream::iter(devices)
            .map(|d| {
                let outcome = call(self.hub.clone(), tenant.to_owned(), d.clone());
                async move {
                    let (result, error) = match outcome.await {
                        Ok(r) => (Some(r), None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    GroupResult {
                        device: d,
                        result,
                        error,
                    }
                }
            })
            .buffer_unordered(CONCURRENT_CALLS)
            .collect()
            .await;
        results.sort_by(|a, b| {
            (&a.device.product_key, &a.device.device_name)
                .cmp(&(&b.device.product_key, &b.device.device_name))
        });
        Ok(results)
    }

    /// Sets properties of each device of a group, each waiting up to `timeout_ms` for its
    /// answer (L-025), as [`crate::hub::Business::set_properties`] does for one.
    pub async fn set_properties(
        &self,
        tenant: &str,
        group: &str,
        params: Map<String, Value>,
        timeout_ms: u64,
    ) -> Result<Vec<GroupSet>, HubError> {
        if params.is_empty() {
            return Err(HubError::Invalid("params: no property to set".into()));
        }
        self.each_device(tenant, group, |hub, tenant, d| {
            let params = params.clone();
            async move {
                let device = (
                    tenant.as_str(),
                    d.product_key.as_str(),
                    d.device_name.as_str(),
                );
                hub.business()
                    .set_properties(device, params, timeout_ms)
                    .await
            }
        })
        .await
    }

    /// Calls a service of each device of a group asynchronously, as
    /// [`crate::hub::ServiceCalls::invoke`] does for one: each device's call id (or offline, or
    /// why it was refused); their answers reach consumer groups and each call's poll.
    pub async fn invoke(
        &self,
        tenant: &str,
        group: &str,
        service: &str,
        params: Map<String, Value>,
    ) -> Result<Vec<GroupInvoke>, HubError> {
        crate::hub::service_calls::check_service_name(service)?;
        self.each_device(tenant, group, |hub, tenant, d| {
            let (service, params) = (service.to_owned(), params.clone());
            async move {
                let device = (
                    tenant.as_str(),
                    d.product_key.as_str(),
                    d.device_name.as_str(),
                );
                hub.service_calls().invoke(device, &service, params).await
            }
        })
        .await
    }

    /// The events of a group's devices in a range (of one identifier or all), newest first,
    /// at most `q.limit` (100 by default).
    pub async fn events(
        &self,
        tenant: &str,
        group: &str,
        identifier: Option<&str>,
        q: &RangeQuery,
    ) -> Result<Vec<GroupEvent>, HubError> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let history = self.hub.thing_history();
        let mut all = Vec::new();
        for d in self.all_members(tenant, group).await? {
            let found = history
                .events((&d.product_key, &d.device_name), identifier, q)
                .await?;
            all.extend(found.into_iter().map(|(identifier, p)| GroupEvent {
                product_key: d.product_key.clone(),
                device_name: d.device_name.clone(),
                identifier,
                time_ms: p.time_ms,
                value: p.value,
            }));
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
        all.truncate(limit);
        Ok(all)
    }
}
