//! Tenant profiles: the named sets of limits tenants live under.

use ironhub_core::limits::Profile;

use super::error::ApiError;
use super::route::{Ctx, Json, NoContent, Route, delete, get, put};

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/api/v1/profiles", "List profiles", list),
        get("/api/v1/profiles/{name}", "A profile", read),
        put(
            "/api/v1/profiles/{name}",
            "Create or replace a profile (the path names it; fields left out keep the defaults)",
            replace,
        ),
        delete(
            "/api/v1/profiles/{name}",
            "Delete an unused profile",
            remove,
        ),
    ]
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<Profile>, ApiError> {
    Ok(ctx.hub.limits().profiles())
}

async fn read(ctx: Ctx, _: ()) -> Result<Profile, ApiError> {
    Ok((*ctx.hub.limits().profile_named(ctx.param("name"))?).clone())
}

async fn replace(ctx: Ctx, Json(mut profile): Json<Profile>) -> Result<Profile, ApiError> {
    profile.name = ctx.param("name").to_owned();
    Ok(ctx.hub.limits().put_profile(profile).await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub.limits().delete_profile(ctx.param("name")).await?;
    Ok(NoContent)
}
