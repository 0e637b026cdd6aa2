//! Devices of a product: create, list, read, delete, enable and disable, their usage, recent
//! messages, shadow, tags and reported firmware, and a gateway's sub-devices. Device records are read from the store, so
//! none of these reloads the configuration.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ironhub_core::data::model::{DEVICE_NAME_PATTERN, Device, DeviceInfo};
use ironhub_core::data::shadow::Shadow;
use ironhub_core::hub::{
    DeviceView, MAX_TAG_VALUE, RecentMessage, SubDevice, TAG_KEY_PATTERN, UsageReport,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::MAX_LIST;
use super::error::ApiError;
use super::route::{Access, Created, Ctx, Json, NoContent, Query, Route, delete, get, post, put};

const DEVICE: &str = "/api/v1/products/{pk}/devices/{dn}";

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/products/{pk}/devices",
            "Create a device (its DeviceSecret is shown once)",
            create,
        ),
        get(
            "/api/v1/products/{pk}/devices",
            "List a product's devices (?limit=)",
            list,
        ),
        get(DEVICE, "A device", read),
        delete(DEVICE, "Delete a device", remove),
        post(
            "/api/v1/products/{pk}/devices/{dn}/disable",
            "Disable a device",
            |ctx, ()| set_enabled(ctx, false),
        ),
        post(
            "/api/v1/products/{pk}/devices/{dn}/enable",
            "Enable a device",
            |ctx, ()| set_enabled(ctx, true),
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/usage",
            "A device's usage (24-hour publishing status)",
            usage,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/messages",
            "The last messages a device sent (newest first, this node's memory)",
            messages,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/shadow",
            "A device's shadow",
            shadow,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/info",
            "A device's tags and the firmware versions it reported",
            info,
        ),
        put(
            "/api/v1/products/{pk}/devices/{dn}/tags",
            "Set tags of a device (others are kept; L-090)",
            set_tags,
        ),
        delete(
            "/api/v1/products/{pk}/devices/{dn}/tags/{key}",
            "Delete a tag of a device",
            delete_tag,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/sub-devices",
            "A gateway's sub-devices",
            sub_devices,
        ),
        put(
            "/api/v1/products/{pk}/devices/{dn}/sub-devices/{subPk}/{subDn}",
            "Attach a sub-device to a gateway",
            attach,
        ),
        delete(
            "/api/v1/products/{pk}/devices/{dn}/sub-devices/{subPk}/{subDn}",
            "Detach a sub-device",
            detach,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant).keeps_config())
    .collect()
}

/// A new device.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateDevice {
    /// Its DeviceName (generated when absent): 4 to 32 letters, digits and `-_@.:`.
    #[schemars(pattern(DEVICE_NAME_PATTERN))]
    device_name: Option<String>,
}

async fn create(ctx: Ctx, Json(r): Json<CreateDevice>) -> Result<Created<Device>, ApiError> {
    let device = ctx
        .hub
        .registry()
        .create_device(ctx.param("pk"), r.device_name.as_deref())
        .await?;
    // The DeviceSecret is shown here, once.
    Ok(Created(device))
}

/// How many devices to list.
#[derive(Deserialize, JsonSchema)]
struct ListDevices {
    /// At most this many (and at most 1,000).
    limit: Option<usize>,
}

async fn list(ctx: Ctx, Query(q): Query<ListDevices>) -> Result<Vec<DeviceView>, ApiError> {
    let limit = q.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
    Ok(ctx.hub.registry().devices(ctx.param("pk"), limit).await?)
}

async fn read(ctx: Ctx, _: ()) -> Result<DeviceView, ApiError> {
    Ok(ctx
        .hub
        .registry()
        .device(ctx.param("pk"), ctx.param("dn"))
        .await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .registry()
        .delete_device(ctx.param("pk"), ctx.param("dn"))
        .await?;
    Ok(NoContent)
}

async fn set_enabled(ctx: Ctx, enabled: bool) -> Result<DeviceView, ApiError> {
    let (pk, dn) = (ctx.param("pk"), ctx.param("dn"));
    Ok(ctx
        .hub
        .registry()
        .set_device_enabled(pk, dn, enabled)
        .await?)
}

async fn usage(ctx: Ctx, _: ()) -> Result<UsageReport, ApiError> {
    Ok(ctx
        .hub
        .limits()
        .device_usage(ctx.param("pk"), ctx.param("dn"))
        .await?)
}

/// A device's last messages.
#[derive(Serialize, JsonSchema)]
struct Messages {
    /// Newest first.
    messages: Vec<RecentMessage>,
}

async fn messages(ctx: Ctx, _: ()) -> Result<Messages, ApiError> {
    let messages = ctx
        .hub
        .registry()
        .recent_messages(ctx.param("pk"), ctx.param("dn"))
        .await?;
    Ok(Messages { messages })
}

async fn shadow(ctx: Ctx, _: ()) -> Result<Shadow, ApiError> {
    let (pk, dn) = (ctx.param("pk"), ctx.param("dn"));
    let device = ctx.hub.registry().device(pk, dn).await?;
    Ok(ctx.hub.shadows().get(&device.tenant, pk, dn).await?)
}

async fn info(ctx: Ctx, _: ()) -> Result<DeviceInfo, ApiError> {
    let (pk, dn) = (ctx.param("pk"), ctx.param("dn"));
    Ok(ctx.hub.device_infos().get(pk, dn).await?)
}

/// Tags to set: key to value.
#[derive(Deserialize)]
pub(super) struct Tags(pub(super) BTreeMap<String, String>);

/// An object whose keys and values are tags as the hub accepts them.
impl JsonSchema for Tags {
    fn schema_name() -> Cow<'static, str> {
        "Tags".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": TAG_KEY_PATTERN },
            "additionalProperties": { "type": "string", "maxLength": MAX_TAG_VALUE },
        })
    }
}

async fn set_tags(ctx: Ctx, Json(Tags(tags)): Json<Tags>) -> Result<DeviceInfo, ApiError> {
    let (pk, dn) = (ctx.param("pk"), ctx.param("dn"));
    Ok(ctx.hub.device_infos().set_tags(pk, dn, tags).await?)
}

async fn delete_tag(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let (pk, dn, key) = (ctx.param("pk"), ctx.param("dn"), ctx.param("key"));
    let keys = [key.to_owned()];
    ctx.hub.device_infos().delete_tags(pk, dn, &keys).await?;
    Ok(NoContent)
}

async fn sub_devices(ctx: Ctx, _: ()) -> Result<Vec<SubDevice>, ApiError> {
    Ok(ctx
        .hub
        .topology()
        .list(ctx.param("pk"), ctx.param("dn"))
        .await?)
}

async fn attach(ctx: Ctx, _: ()) -> Result<Vec<SubDevice>, ApiError> {
    let gateway = (ctx.param("pk"), ctx.param("dn"));
    let sub = (ctx.param("subPk"), ctx.param("subDn"));
    ctx.hub.topology().attach_from_cloud(gateway, sub).await?;
    Ok(ctx.hub.topology().list(gateway.0, gateway.1).await?)
}

async fn detach(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let gateway = (ctx.param("pk"), ctx.param("dn"));
    let sub = (ctx.param("subPk"), ctx.param("subDn"));
    ctx.hub.topology().detach_from_cloud(gateway, sub).await?;
    Ok(NoContent)
}
