//! Rules (data forwarding): a tenant's SQL statements over device messages and their
//! destinations, with counters.

use ironhub_core::hub::{RuleSpec, RuleView};

use super::error::ApiError;
use super::route::{Access, Created, Ctx, Json, NoContent, Route, delete, get, post, put};

const RULES: &str = "/api/v1/tenants/{tenant}/rules";
const RULE: &str = "/api/v1/tenants/{tenant}/rules/{id}";

pub(super) fn routes() -> Vec<Route> {
    [
        post(RULES, "Create a rule", create),
        get(RULES, "List rules with counters", list),
        get(RULE, "A rule with counters", read),
        put(RULE, "Replace a rule", replace),
        delete(RULE, "Delete a rule", remove),
        post(
            "/api/v1/tenants/{tenant}/rules/{id}/enable",
            "Enable a rule",
            |ctx, ()| set_enabled(ctx, true),
        ),
        post(
            "/api/v1/tenants/{tenant}/rules/{id}/disable",
            "Disable a rule",
            |ctx, ()| set_enabled(ctx, false),
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

async fn create(ctx: Ctx, Json(spec): Json<RuleSpec>) -> Result<Created<RuleView>, ApiError> {
    Ok(Created(
        ctx.hub.rules().create(ctx.param("tenant"), spec).await?,
    ))
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<RuleView>, ApiError> {
    Ok(ctx.hub.rules().list(ctx.param("tenant")).await?)
}

async fn read(ctx: Ctx, _: ()) -> Result<RuleView, ApiError> {
    Ok(ctx
        .hub
        .rules()
        .get(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

async fn replace(ctx: Ctx, Json(spec): Json<RuleSpec>) -> Result<RuleView, ApiError> {
    Ok(ctx
        .hub
        .rules()
        .update(ctx.param("tenant"), ctx.param("id"), spec)
        .await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .rules()
        .delete(ctx.param("tenant"), ctx.param("id"))
        .await?;
    Ok(NoContent)
}

async fn set_enabled(ctx: Ctx, enabled: bool) -> Result<RuleView, ApiError> {
    let (tenant, id) = (ctx.param("tenant"), ctx.param("id"));
    Ok(ctx.hub.rules().set_enabled(tenant, id, enabled).await?)
}
