//! A tenant's business API keys.

use ironhub_core::data::api_key::ApiKeyView;
use ironhub_core::data::model::DISPLAY_NAME_PATTERN;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::route::{Access, Created, Ctx, Json, NoContent, Route, delete, get, post};

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/tenants/{tenant}/api-keys",
            "Create a business API key (its token is shown once)",
            create,
        ),
        get("/api/v1/tenants/{tenant}/api-keys", "List API keys", list),
        delete(
            "/api/v1/tenants/{tenant}/api-keys/{id}",
            "Revoke an API key",
            remove,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

/// A new API key.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    /// Display name, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), pattern(DISPLAY_NAME_PATTERN))]
    name: String,
}

/// A created key with its token (`{id}.{secret}`), shown once.
#[derive(Serialize, JsonSchema)]
struct CreatedKey {
    #[serde(flatten)]
    key: ApiKeyView,
    /// `Authorization: Bearer <token>` on the business API.
    token: String,
}

async fn create(ctx: Ctx, Json(r): Json<CreateApiKey>) -> Result<Created<CreatedKey>, ApiError> {
    let (key, secret) = ctx
        .hub
        .business()
        .create_api_key(ctx.param("tenant"), &r.name)
        .await?;
    let token = format!("{}.{secret}", key.id);
    Ok(Created(CreatedKey { key, token }))
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<ApiKeyView>, ApiError> {
    let tenant = ctx.param("tenant");
    ctx.hub.registry().tenant(tenant).await?;
    Ok(ctx.hub.business().api_keys(tenant))
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .business()
        .delete_api_key(ctx.param("tenant"), ctx.param("id"))
        .await?;
    Ok(NoContent)
}
