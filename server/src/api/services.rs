//! Asynchronous service calls through the business API: invoke, then poll by id (the device's
//! answer also reaches the product's consumer groups).

use ironhub_core::data::model::ServiceCall;
use ironhub_core::hub::InvokeOutcome;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::route::{Access, Ctx, Json, Route, get, post};

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
