//! Device groups (with sub-groups, members and tags), products' tags, devices found by tag and
//! group, and groups as targets of the business API (a message, a property set, events).

use std::collections::BTreeMap;

use ironhub_core::data::device_group::DeviceGroup;
use ironhub_core::hub::{
    DeviceRef, DeviceRefPage, GroupEvent, GroupInvoke, GroupPub, GroupSet, GroupSpec, GroupView,
    RRPC_TIMEOUT_MS, RangeQuery,
};
use ironhub_core::topic;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::business::Payload;
use super::devices::Tags;
use super::error::ApiError;
use super::route::{Access, Created, Ctx, Json, NoContent, Query, Route, delete, get, post, put};

pub(super) fn routes() -> Vec<Route> {
    let tenant = [
        post(
            "/api/v1/tenants/{tenant}/device-groups",
            "Create a device group, or a sub-group (L-099)",
            create,
        ),
        get(
            "/api/v1/tenants/{tenant}/device-groups",
            "A tenant's device groups with their device counts",
            list,
        ),
        get(
            "/api/v1/tenants/{tenant}/device-groups/{id}",
            "A device group",
            show,
        ),
        delete(
            "/api/v1/tenants/{tenant}/device-groups/{id}",
            "Delete a device group without sub-groups (its devices leave it)",
            remove,
        ),
        put(
            "/api/v1/tenants/{tenant}/device-groups/{id}/tags",
            "Set a group's tags, keeping the others (L-090)",
            set_tags,
        ),
        delete(
            "/api/v1/tenants/{tenant}/device-groups/{id}/tags/{key}",
            "Delete a group's tag",
            delete_tag,
        ),
        post(
            "/api/v1/tenants/{tenant}/device-groups/{id}/devices",
            "Put devices in a group (L-100, L-101)",
            add_devices,
        ),
        get(
            "/api/v1/tenants/{tenant}/device-groups/{id}/devices",
            "A page of a group's devices (?after=&limit=)",
            members,
        ),
        delete(
            "/api/v1/tenants/{tenant}/device-groups/{id}/devices/{pk}/{dn}",
            "Take a device out of a group",
            remove_device,
        ),
        get(
            "/api/v1/tenants/{tenant}/devices",
            "A page of the tenant's devices with a tag, in a group when given (?tag=key:value&group=&after=&limit=)",
            search,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/groups",
            "The groups a device is in",
            device_groups,
        ),
        get("/api/v1/products/{pk}/tags", "A product's tags", product_tags),
        put(
            "/api/v1/products/{pk}/tags",
            "Set a product's tags, keeping the others (L-090)",
            set_product_tags,
        ),
        delete(
            "/api/v1/products/{pk}/tags/{key}",
            "Delete a product's tag",
            delete_product_tag,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant).keeps_config());
    let business = [
        post(
            "/api/v1/business/groups/{id}/pub",
            "Send a message to each device of a group (a topic template)",
            group_pub,
        ),
        post(
            "/api/v1/business/groups/{id}/properties/set",
            "Set properties of each device of a group and wait for their answers",
            group_set,
        ),
        post(
            "/api/v1/business/groups/{id}/services/invoke",
            "Call a service of each device of a group asynchronously",
            group_invoke,
        ),
        get(
            "/api/v1/business/groups/{id}/events",
            "Events of a group's devices, newest first (?identifier=&from_ms=&to_ms=&limit=)",
            group_events,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Business).keeps_config());
    tenant.chain(business).collect()
}

async fn create(ctx: Ctx, Json(spec): Json<GroupSpec>) -> Result<Created<GroupView>, ApiError> {
    let made = ctx
        .hub
        .device_groups()
        .create(ctx.param("tenant"), spec)
        .await?;
    Ok(Created(made))
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<GroupView>, ApiError> {
    Ok(ctx.hub.device_groups().list(ctx.param("tenant")).await?)
}

async fn show(ctx: Ctx, _: ()) -> Result<GroupView, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups.get(ctx.param("tenant"), ctx.param("id")).await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let groups = ctx.hub.device_groups();
    groups.delete(ctx.param("tenant"), ctx.param("id")).await?;
    Ok(NoContent)
}

async fn set_tags(ctx: Ctx, Json(Tags(tags)): Json<Tags>) -> Result<GroupView, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups
        .set_tags(ctx.param("tenant"), ctx.param("id"), tags)
        .await?)
}

async fn delete_tag(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let groups = ctx.hub.device_groups();
    groups
        .delete_tag(ctx.param("tenant"), ctx.param("id"), ctx.param("key"))
        .await?;
    Ok(NoContent)
}

/// Devices to put in a group.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddDevices {
    /// 1 to 1,000 devices of the tenant.
    #[schemars(length(min = 1, max = 1000))]
    devices: Vec<DeviceRef>,
}

async fn add_devices(ctx: Ctx, Json(r): Json<AddDevices>) -> Result<GroupView, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups
        .add_devices(ctx.param("tenant"), ctx.param("id"), &r.devices)
        .await?)
}

/// A page of a listing.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// The previous page's `next`.
    #[schemars(length(min = 1, max = 200))]
    after: Option<String>,
    /// Devices per page (1 to 1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
}

/// A page's `limit`, checking `after` and `limit` against their bounds.
fn page_bounds(after: Option<&str>, limit: Option<usize>) -> Result<usize, ApiError> {
    if after.is_some_and(|a| a.is_empty() || a.len() > 200) {
        return Err(ApiError::bad_request("after: a previous page's next"));
    }
    match limit.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::bad_request("limit: 1 to 1000")),
    }
}

async fn members(ctx: Ctx, Query(q): Query<PageQuery>) -> Result<DeviceRefPage, ApiError> {
    let limit = page_bounds(q.after.as_deref(), q.limit)?;
    let groups = ctx.hub.device_groups();
    Ok(groups
        .members(
            ctx.param("tenant"),
            ctx.param("id"),
            q.after.as_deref(),
            limit,
        )
        .await?)
}

async fn remove_device(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let groups = ctx.hub.device_groups();
    let device = (ctx.param("pk"), ctx.param("dn"));
    groups
        .remove_device(ctx.param("tenant"), ctx.param("id"), device)
        .await?;
    Ok(NoContent)
}

/// Which devices to find.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    /// `key:value`: devices with this tag.
    #[schemars(length(min = 3, max = 160), pattern(r"^[A-Za-z0-9._-]{1,30}:.+$"))]
    tag: String,
    /// Only devices in this group.
    #[schemars(length(min = 1, max = 64))]
    group: Option<String>,
    /// The previous page's `next`.
    #[schemars(length(min = 1, max = 200))]
    after: Option<String>,
    /// Devices per page (1 to 1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
}

async fn search(ctx: Ctx, Query(q): Query<SearchQuery>) -> Result<DeviceRefPage, ApiError> {
    let (key, value) = q
        .tag
        .split_once(':')
        .filter(|(k, v)| {
            (1..=30).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !v.is_empty()
                && q.tag.len() <= 160
        })
        .ok_or_else(|| ApiError::bad_request("tag: key:value (a tag key, then its value)"))?;
    let limit = page_bounds(q.after.as_deref(), q.limit)?;
    let groups = ctx.hub.device_groups();
    Ok(groups
        .search(
            ctx.param("tenant"),
            (key, value),
            q.group.as_deref(),
            q.after.as_deref(),
            limit,
        )
        .await?)
}

async fn device_groups(ctx: Ctx, _: ()) -> Result<Vec<DeviceGroup>, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups.of_device(ctx.param("pk"), ctx.param("dn")).await?)
}

async fn product_tags(ctx: Ctx, _: ()) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(ctx
        .hub
        .device_groups()
        .product_tags(ctx.param("pk"))
        .await?)
}

async fn set_product_tags(
    ctx: Ctx,
    Json(Tags(tags)): Json<Tags>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups.set_product_tags(ctx.param("pk"), tags).await?)
}

async fn delete_product_tag(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    let groups = ctx.hub.device_groups();
    groups
        .delete_product_tag(ctx.param("pk"), ctx.param("key"))
        .await?;
    Ok(NoContent)
}

/// The caller's tenant (the business API has no other callers).
fn tenant(ctx: &Ctx) -> &str {
    ctx.principal.tenant().unwrap_or_default()
}

// No deny_unknown_fields: serde does not support it with `flatten`.
/// A message to each device of a group.
#[derive(Deserialize, JsonSchema)]
struct GroupMessage {
    /// A template of the devices' own topics: `/${productKey}/${deviceName}/user/...` or
    /// `/sys/${productKey}/${deviceName}/...`.
    #[schemars(
        length(min = 1, max = 128),
        pattern(r"^(/sys)?/\$\{productKey\}/\$\{deviceName\}/[^+#\u0000]+$")
    )]
    topic: String,
    #[serde(flatten)]
    payload: Payload,
    /// 0 (default) or 1.
    #[serde(default)]
    #[schemars(range(max = 1))]
    qos: u8,
}

async fn group_pub(ctx: Ctx, Json(r): Json<GroupMessage>) -> Result<GroupPub, ApiError> {
    let qos = super::business::downlink_qos(r.qos)?;
    let sample = r
        .topic
        .replace("${productKey}", "pk")
        .replace("${deviceName}", "dn");
    topic::validate_name(&sample).map_err(|e| ApiError::bad_request(format!("topic: {e}")))?;
    let payload = r.payload.decode()?;
    let groups = ctx.hub.device_groups();
    Ok(groups
        .publish(tenant(&ctx), ctx.param("id"), &r.topic, payload, qos)
        .await?)
}

/// Properties to set on each device of a group.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GroupProperties {
    /// The properties and their values (checked against each device's thing model).
    #[schemars(extend("minProperties" = 1))]
    params: Map<String, Value>,
    /// How long each device may take to answer, 1,000 to 8,000 ms (L-025; 8,000 when absent).
    #[schemars(range(min = 1000, max = 8000))]
    timeout_ms: Option<u64>,
}

async fn group_set(ctx: Ctx, Json(r): Json<GroupProperties>) -> Result<Vec<GroupSet>, ApiError> {
    let timeout = r.timeout_ms.unwrap_or(*RRPC_TIMEOUT_MS.end());
    let groups = ctx.hub.device_groups();
    Ok(groups
        .set_properties(tenant(&ctx), ctx.param("id"), r.params, timeout)
        .await?)
}

/// A service call to each device of a group.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GroupService {
    /// The service's identifier (a custom module's as `{module}:{service}`).
    #[schemars(
        length(min = 1, max = 64),
        pattern(r"^(?!property$)[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?$")
    )]
    service: String,
    /// Its input parameters (checked against each device's thing model).
    #[serde(default)]
    params: Map<String, Value>,
}

async fn group_invoke(ctx: Ctx, Json(r): Json<GroupService>) -> Result<Vec<GroupInvoke>, ApiError> {
    let groups = ctx.hub.device_groups();
    Ok(groups
        .invoke(tenant(&ctx), ctx.param("id"), &r.service, r.params)
        .await?)
}

/// Which events.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GroupEventsQuery {
    /// Only this event's.
    #[schemars(length(min = 1, max = 64))]
    identifier: Option<String>,
    /// From, ms since the epoch (default: the retention's start).
    from_ms: Option<u64>,
    /// To, ms since the epoch (default: now).
    to_ms: Option<u64>,
    /// Events at most (1 to 1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
}

async fn group_events(
    ctx: Ctx,
    Query(q): Query<GroupEventsQuery>,
) -> Result<Vec<GroupEvent>, ApiError> {
    let range = RangeQuery {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        order: Default::default(),
        limit: q.limit,
        cursor: None,
    };
    let groups = ctx.hub.device_groups();
    Ok(groups
        .events(
            tenant(&ctx),
            ctx.param("id"),
            q.identifier.as_deref(),
            &range,
        )
        .await?)
}
