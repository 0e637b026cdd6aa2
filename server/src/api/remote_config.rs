//! A product's remote configuration file: set (the request's body, JSON), read, deleted, and
//! pushed to the product's online devices.

use ironhub_core::hub::ConfigView;
use schemars::JsonSchema;
use serde::Serialize;

use super::error::ApiError;
use super::route::{Access, Ctx, JsonFile, NoContent, Route, delete, get, post, put};

/// Largest body read before the hub checks the tenant's bound (L-094, 64 KB by default).
const MAX_CONFIG_BODY: usize = 4 * 1024 * 1024;

pub(super) fn routes() -> Vec<Route> {
    [
        put(
            "/api/v1/products/{pk}/config",
            "Set the product's remote configuration file (the body, JSON; L-094)",
            set,
        ),
        get(
            "/api/v1/products/{pk}/config",
            "The product's remote configuration file",
            show,
        ),
        delete(
            "/api/v1/products/{pk}/config",
            "Delete the product's remote configuration file",
            remove,
        ),
        post(
            "/api/v1/products/{pk}/config/push",
            "Tell the product's online devices of its configuration file (thing/config/push)",
            push,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant).keeps_config())
    .collect()
}

async fn set(mut ctx: Ctx, _: JsonFile) -> Result<ConfigView, ApiError> {
    let body = ctx
        .upload
        .take()
        .ok_or_else(|| ApiError::bad_request("the file is the request's body"))?;
    let content = super::read_limited(body, MAX_CONFIG_BODY).await?;
    Ok(ctx
        .hub
        .remote_configs()
        .set(ctx.param("pk"), &content)
        .await?)
}

async fn show(ctx: Ctx, _: ()) -> Result<ConfigView, ApiError> {
    Ok(ctx.hub.remote_configs().get(ctx.param("pk")).await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub.remote_configs().delete(ctx.param("pk")).await?;
    Ok(NoContent)
}

/// How many devices a push reached.
#[derive(Serialize, JsonSchema)]
struct Pushed {
    /// Online devices of the product that were sent `thing/config/push`.
    pushed_to: usize,
}

async fn push(ctx: Ctx, _: ()) -> Result<Pushed, ApiError> {
    let pushed_to = ctx.hub.remote_configs().push(ctx.param("pk")).await?;
    Ok(Pushed { pushed_to })
}
