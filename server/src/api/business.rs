//! The business API: what a tenant's servers call with an API key (send to devices, call them,
//! broadcast, read their status and shadows), scoped to the key's tenant.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use ironhub_core::QoS;
use ironhub_core::data::model::DeviceState;
use ironhub_core::data::shadow::Shadow;
use ironhub_core::hub::{
    DevicePage, DeviceStatus, PropertySetOutcome, RRPC_TIMEOUT_MS, RrpcForm, RrpcOutcome,
};
use ironhub_core::store::records::StatusEvent;
use ironhub_core::topic;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::MAX_LIST;
use super::error::ApiError;
use super::route::{Access, Ctx, Json, Query, Route, get, post, put};
use super::system::Delivered;

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/business/pub",
            "Send a message to one of a device's topics",
            publish,
        ),
        post(
            "/api/v1/business/rrpc",
            "Call a device synchronously (SUCCESS, TIMEOUT or OFFLINE)",
            rrpc,
        ),
        post(
            "/api/v1/business/properties/set",
            "Set a device's properties and wait for its set_reply (replied, timeout or offline)",
            set_properties,
        ),
        post(
            "/api/v1/business/broadcast",
            "Send a message to every online device of a product",
            broadcast,
        ),
        get(
            "/api/v1/business/devices",
            "A page of a product's devices (?product_key=&state=&after=&page_size=)",
            devices,
        ),
        get(
            "/api/v1/business/devices/{pk}/{dn}",
            "A device's status",
            status,
        ),
        get(
            "/api/v1/business/devices/{pk}/{dn}/history",
            "A device's online/offline changes of the last 7 days, newest first (?limit=)",
            history,
        ),
        get(
            "/api/v1/business/shadows/{pk}/{dn}",
            "A device's shadow",
            shadow,
        ),
        put(
            "/api/v1/business/shadows/{pk}/{dn}",
            "Set desired shadow properties",
            set_desired,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Business).keeps_config())
    .collect()
}

/// The caller's tenant (the business API has no other callers).
fn tenant(ctx: &Ctx) -> &str {
    ctx.principal.tenant().unwrap_or_default()
}

/// How a payload is written in a JSON body.
#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// The payload is the text itself.
    #[default]
    Text,
    /// The payload is base64 (standard alphabet, padded).
    Base64,
}

/// A payload in a JSON body: text, or base64 with `"encoding": "base64"`.
#[derive(Deserialize)]
pub(super) struct Payload {
    payload: String,
    #[serde(default)]
    encoding: Encoding,
}

/// Standard base64 with padding, as [`Payload::decode`] accepts it: the unused bits before the
/// padding are zero (so `iz==` is not base64, `iw==` is).
const BASE64_PATTERN: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// Text, or base64 with `"encoding": "base64"`: one shape each, so the base64 one can carry
/// its syntax.
impl JsonSchema for Payload {
    fn schema_name() -> Cow<'static, str> {
        "Payload".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "required": ["payload"],
            "properties": {
                "payload": { "type": "string", "description": "the payload: text, or base64" },
                "encoding": { "type": "string", "enum": ["text", "base64"] },
            },
            "oneOf": [
                { "properties": { "encoding": { "enum": ["text"] } } },
                { "not": { "required": ["encoding"] } },
                {
                    "required": ["encoding"],
                    "properties": {
                        "encoding": { "enum": ["base64"] },
                        "payload": { "pattern": BASE64_PATTERN },
                    },
                },
            ],
        })
    }
}

impl Payload {
    pub(super) fn decode(self) -> Result<Bytes, ApiError> {
        match self.encoding {
            Encoding::Text => Ok(Bytes::from(self.payload)),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.payload)
                .map(Bytes::from)
                .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}"))),
        }
    }
}

// No deny_unknown_fields: serde does not support it with `flatten`.
/// A message to one of a device's topics.
#[derive(Deserialize, JsonSchema)]
struct BusinessPub {
    product_key: String,
    device_name: String,
    /// One of the device's topics: `/{pk}/{dn}/...` or `/sys/{pk}/{dn}/...`.
    #[schemars(pattern(topic::NAME_PATTERN))]
    topic: String,
    #[serde(flatten)]
    payload: Payload,
    /// 0 (default) or 1.
    #[serde(default)]
    #[schemars(range(max = 1))]
    qos: u8,
}

/// A business message's QoS: 0 or 1.
pub(super) fn downlink_qos(qos: u8) -> Result<QoS, ApiError> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(ApiError::bad_request("qos must be 0 or 1")),
    }
}

async fn publish(ctx: Ctx, Json(r): Json<BusinessPub>) -> Result<Delivered, ApiError> {
    let qos = downlink_qos(r.qos)?;
    let payload = r.payload.decode()?;
    let delivered_to = ctx
        .hub
        .business()
        .pub_to_device(
            tenant(&ctx),
            &r.product_key,
            &r.device_name,
            &r.topic,
            payload,
            qos,
        )
        .await?;
    Ok(Delivered { delivered_to })
}

// No deny_unknown_fields: serde does not support it with `flatten`.
/// A synchronous call.
#[derive(Deserialize, JsonSchema)]
struct BusinessRrpc {
    product_key: String,
    device_name: String,
    #[serde(flatten)]
    payload: Payload,
    /// How long to wait for the answer, 1,000 to 8,000 ms (L-025; 8,000 when absent).
    #[schemars(range(min = *RRPC_TIMEOUT_MS.start(), max = *RRPC_TIMEOUT_MS.end()))]
    timeout_ms: Option<u64>,
    /// The Link SDK's user RRPC: one of the device's own `/{pk}/{dn}/user/...` topics; the call
    /// goes on `/ext/rrpc/{id}{topic}` (the device subscribed `/ext/rrpc/+{topic}`).
    topic: Option<String>,
    /// The Link SDK's synchronous service call: a service identifier of the thing model; the
    /// call goes on `/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{service}` in Alink JSON, the
    /// payload being the input parameters (a JSON object). Without `topic` or `service`, the
    /// form follows what the device subscribed: user RRPC on its one `/ext/rrpc/+{topic}`
    /// subscription, `/sys/{pk}/{dn}/rrpc/request/{id}` otherwise (400 when it subscribed
    /// several user RRPC topics and no `/sys` RRPC one).
    service: Option<String>,
}

async fn rrpc(ctx: Ctx, Json(r): Json<BusinessRrpc>) -> Result<RrpcOutcome, ApiError> {
    let payload = r.payload.decode()?;
    let timeout = r.timeout_ms.unwrap_or(*RRPC_TIMEOUT_MS.end());
    let form = match (r.topic, r.service) {
        (None, None) => None,
        (Some(topic), None) => Some(RrpcForm::Topic(topic)),
        (None, Some(service)) => Some(RrpcForm::Service(service)),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give topic or service, not both"));
        }
    };
    let device = (tenant(&ctx), r.product_key.as_str(), r.device_name.as_str());
    Ok(ctx
        .hub
        .business()
        .rrpc(device, form, payload, timeout)
        .await?)
}

/// A property set.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BusinessPropertySet {
    product_key: String,
    device_name: String,
    /// The properties to set (`{module}:{property}` for a custom module's), checked against
    /// the thing model when the product has one.
    #[schemars(extend("minProperties" = 1))]
    params: serde_json::Map<String, serde_json::Value>,
    /// How long to wait for the device's `set_reply`, 1,000 to 8,000 ms (L-025; 8,000 when
    /// absent).
    #[schemars(range(min = *RRPC_TIMEOUT_MS.start(), max = *RRPC_TIMEOUT_MS.end()))]
    timeout_ms: Option<u64>,
}

async fn set_properties(
    ctx: Ctx,
    Json(r): Json<BusinessPropertySet>,
) -> Result<PropertySetOutcome, ApiError> {
    let timeout = r.timeout_ms.unwrap_or(*RRPC_TIMEOUT_MS.end());
    let device = (tenant(&ctx), r.product_key.as_str(), r.device_name.as_str());
    Ok(ctx
        .hub
        .business()
        .set_properties(device, r.params, timeout)
        .await?)
}

// No deny_unknown_fields: serde does not support it with `flatten`.
/// A message to every online device of a product.
#[derive(Deserialize, JsonSchema)]
struct BusinessBroadcast {
    product_key: String,
    #[serde(flatten)]
    payload: Payload,
}

/// A broadcast's id and reach.
#[derive(Serialize, JsonSchema)]
struct Broadcast {
    message_id: String,
    /// Devices it was delivered to on this node.
    delivered_to: usize,
}

async fn broadcast(ctx: Ctx, Json(r): Json<BusinessBroadcast>) -> Result<Broadcast, ApiError> {
    let payload = r.payload.decode()?;
    let (message_id, delivered_to) = ctx
        .hub
        .business()
        .broadcast(tenant(&ctx), &r.product_key, payload)
        .await?;
    Ok(Broadcast {
        message_id,
        delivered_to,
    })
}

/// Which devices to page through.
#[derive(Deserialize, JsonSchema)]
struct DeviceQuery {
    product_key: String,
    /// Only devices in this state.
    state: Option<DeviceState>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// 1 to 1,000 (50 when absent).
    #[schemars(range(min = 1, max = MAX_LIST))]
    page_size: Option<usize>,
}

async fn devices(ctx: Ctx, Query(q): Query<DeviceQuery>) -> Result<DevicePage, ApiError> {
    let page_size = q.page_size.unwrap_or(50);
    if !(1..=MAX_LIST).contains(&page_size) {
        return Err(ApiError::bad_request(format!(
            "page_size must be 1 to {MAX_LIST}"
        )));
    }
    Ok(ctx
        .hub
        .business()
        .device_page(
            tenant(&ctx),
            &q.product_key,
            q.state,
            q.after.as_deref(),
            page_size,
        )
        .await?)
}

async fn status(ctx: Ctx, _: ()) -> Result<DeviceStatus, ApiError> {
    Ok(ctx
        .hub
        .business()
        .device_status(tenant(&ctx), ctx.param("pk"), ctx.param("dn"))
        .await?)
}

/// How many status changes to return.
#[derive(Deserialize, JsonSchema)]
struct HistoryQuery {
    /// 1 to 1,000 (100 when absent; larger values are capped).
    limit: Option<usize>,
}

/// A device's status changes.
#[derive(Serialize, JsonSchema)]
struct History {
    /// Newest first.
    events: Vec<StatusEvent>,
}

async fn history(ctx: Ctx, Query(q): Query<HistoryQuery>) -> Result<History, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let events = ctx
        .hub
        .business()
        .status_history(tenant(&ctx), ctx.param("pk"), ctx.param("dn"), limit)
        .await?;
    Ok(History { events })
}

async fn shadow(ctx: Ctx, _: ()) -> Result<Shadow, ApiError> {
    Ok(ctx
        .hub
        .shadows()
        .get(tenant(&ctx), ctx.param("pk"), ctx.param("dn"))
        .await?)
}

/// Desired properties, and the version they are based on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DesiredUpdate {
    state: DesiredState,
    /// The shadow version this update is based on (refused when it moved on).
    version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DesiredState {
    desired: Map<String, Value>,
}

async fn set_desired(ctx: Ctx, Json(r): Json<DesiredUpdate>) -> Result<Shadow, ApiError> {
    Ok(ctx
        .hub
        .shadows()
        .set_desired(
            tenant(&ctx),
            ctx.param("pk"),
            ctx.param("dn"),
            &r.state.desired,
            r.version,
        )
        .await?)
}
