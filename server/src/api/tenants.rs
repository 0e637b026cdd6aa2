//! Tenants: create, list, read, delete, their profile and their usage.

use ironhub_core::data::model::{TENANT_ID_PATTERN, Tenant};
use ironhub_core::hub::UsageReport;
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::route::{
    Access, Created, Ctx, Json, NoContent, Principal, Route, delete, get, post, put,
};

pub(super) fn routes() -> Vec<Route> {
    vec![
        post("/api/v1/tenants", "Create a tenant", create),
        get(
            "/api/v1/tenants",
            "List tenants (a tenant's key: its own)",
            list,
        )
        .access(Access::Tenant),
        get("/api/v1/tenants/{tenant}", "A tenant", read).access(Access::Tenant),
        delete(
            "/api/v1/tenants/{tenant}",
            "Delete a tenant without products",
            remove,
        ),
        put(
            "/api/v1/tenants/{tenant}/profile",
            "Set a tenant's profile",
            set_profile,
        ),
        get(
            "/api/v1/tenants/{tenant}/usage",
            "A tenant's usage and monthly events",
            usage,
        )
        .access(Access::Tenant),
    ]
}

/// A new tenant.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    /// Its stable id: lowercase letters, digits, `-` and `_`, 1 to 64.
    #[schemars(pattern(TENANT_ID_PATTERN))]
    id: String,
    /// Display name (the id when absent).
    name: Option<String>,
    /// Its profile (the default profile when absent).
    profile: Option<String>,
}

async fn create(ctx: Ctx, Json(r): Json<CreateTenant>) -> Result<Created<Tenant>, ApiError> {
    let name = r.name.as_deref().unwrap_or(&r.id);
    let tenant = ctx
        .hub
        .registry()
        .create_tenant(&r.id, name, r.profile.as_deref())
        .await?;
    Ok(Created(tenant))
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<Tenant>, ApiError> {
    Ok(match &ctx.principal {
        Principal::Tenant(own) => vec![ctx.hub.registry().tenant(own).await?],
        _ => ctx.hub.registry().tenants().await?,
    })
}

async fn read(ctx: Ctx, _: ()) -> Result<Tenant, ApiError> {
    Ok(ctx.hub.registry().tenant(ctx.param("tenant")).await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .registry()
        .delete_tenant(ctx.param("tenant"))
        .await?;
    Ok(NoContent)
}

/// A tenant's profile.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetProfile {
    /// The profile's name.
    profile: String,
}

async fn set_profile(ctx: Ctx, Json(r): Json<SetProfile>) -> Result<Tenant, ApiError> {
    Ok(ctx
        .hub
        .limits()
        .set_tenant_profile(ctx.param("tenant"), &r.profile)
        .await?)
}

async fn usage(ctx: Ctx, _: ()) -> Result<UsageReport, ApiError> {
    Ok(ctx.hub.limits().tenant_usage(ctx.param("tenant")).await?)
}
