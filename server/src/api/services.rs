//! Asynchronous service calls through the business API: invoke, then poll by id (the device's
//! answer also reaches the product's consumer groups); and devices' desired property values.

use std::collections::BTreeMap;

use ironhub_core::data::model::{DesiredValue, ServiceCall};
use ironhub_core::hub::InvokeOutcome;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::route::{Access, Ctx, Json, Route, get, post, put};

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/business/services/invoke",
            "Call a device's service asynchronously (sent or offline; poll the answer by id)",
            invoke,
        ),
        get(
            "/api/v1/business/devices/{pk}/{dn}/services/{id}",
            "An asynchronous service call and, once it came, the device's answer",
            show,
        ),
        put(
            "/api/v1/business/devices/{pk}/{dn}/desired",
            "Set desired property values (versioned; the device reads them with desired/get)",
            set_desired,
        ),
        get(
            "/api/v1/business/devices/{pk}/{dn}/desired",
            "A device's desired property values",
            desired,
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

/// An asynchronous service call.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Invoke {
    product_key: String,
    device_name: String,
    /// The service's identifier (a custom module's as `{module}:{service}`).
    #[schemars(
        length(min = 1, max = 64),
        pattern(r"^(?!property$)[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?$")
    )]
    service: String,
    /// Its input parameters (checked against the product's thing model when it has one).
    #[serde(default)]
    params: Map<String, Value>,
}

async fn invoke(ctx: Ctx, Json(r): Json<Invoke>) -> Result<InvokeOutcome, ApiError> {
    let device = (tenant(&ctx), r.product_key.as_str(), r.device_name.as_str());
    Ok(ctx
        .hub
        .service_calls()
        .invoke(device, &r.service, r.params)
        .await?)
}

async fn show(ctx: Ctx, _: ()) -> Result<ServiceCall, ApiError> {
    let device = (tenant(&ctx), ctx.param("pk"), ctx.param("dn"));
    Ok(ctx.hub.service_calls().get(device, ctx.param("id")).await?)
}

/// Desired values to set.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetDesired {
    /// Property identifiers and their desired values (checked against the thing model).
    #[schemars(extend("minProperties" = 1))]
    params: Map<String, Value>,
    /// For each property given here, the version it must be at for the change (0: none yet).
    #[serde(default)]
    versions: BTreeMap<String, u64>,
}

async fn set_desired(
    ctx: Ctx,
    Json(r): Json<SetDesired>,
) -> Result<BTreeMap<String, DesiredValue>, ApiError> {
    let device = (tenant(&ctx), ctx.param("pk"), ctx.param("dn"));
    Ok(ctx
        .hub
        .desired_properties()
        .set(device, r.params, r.versions)
        .await?)
}

async fn desired(ctx: Ctx, _: ()) -> Result<BTreeMap<String, DesiredValue>, ApiError> {
    let device = (tenant(&ctx), ctx.param("pk"), ctx.param("dn"));
    Ok(ctx.hub.desired_properties().get(device).await?)
}
