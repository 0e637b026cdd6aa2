//! A product's data parsing script: saved (the request's body, JavaScript), read, deleted, and
//! tried on a sample payload.

use ironhub_core::data::model::DataFormat;
use ironhub_core::hub::{ScriptTest, ScriptTestOutcome, ScriptUpdate, ScriptView};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::route::{
    Access, Ctx, Json, NoContent, Query, Route, ScriptFile, delete, get, post, put,
};

/// Largest body read before the hub checks the tenant's bound (L-096, 128 KB by default).
const MAX_SCRIPT_BODY: usize = 4 * 1024 * 1024;

pub(super) fn routes() -> Vec<Route> {
    [
        put(
            "/api/v1/products/{pk}/script",
            "Save the product's data parsing script (the body, JavaScript; L-096, L-098)",
            save,
        ),
        get(
            "/api/v1/products/{pk}/script",
            "The product's data parsing script",
            show,
        ),
        delete(
            "/api/v1/products/{pk}/script",
            "Delete the product's data parsing script",
            remove,
        ),
        post(
            "/api/v1/products/{pk}/script/test",
            "Run an entry point of the product's script on a sample (charged like any execution)",
            test,
        )
        .keeps_config(),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

/// How the product's devices speak the thing model.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SaveQuery {
    /// `custom` (default): raw frames on `up_raw`/`down_raw`, parsed by the script;
    /// `alink_json`: the script parses custom topics only.
    data_format: Option<DataFormat>,
}

async fn save(
    mut ctx: Ctx,
    (Query(q), _): (Query<SaveQuery>, ScriptFile),
) -> Result<ScriptView, ApiError> {
    let body = ctx
        .upload
        .take()
        .ok_or_else(|| ApiError::bad_request("the script is the request's body"))?;
    let source = super::read_limited(body, MAX_SCRIPT_BODY).await?;
    let source = String::from_utf8(source.to_vec())
        .map_err(|_| ApiError::bad_request("the script must be UTF-8 text"))?;
    let update = ScriptUpdate {
        source,
        data_format: q.data_format.unwrap_or_default(),
    };
    Ok(ctx
        .hub
        .parsing_scripts()
        .put(ctx.param("pk"), update)
        .await?)
}

async fn show(ctx: Ctx, _: ()) -> Result<ScriptView, ApiError> {
    Ok(ctx.hub.parsing_scripts().get(ctx.param("pk")).await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub.parsing_scripts().delete(ctx.param("pk")).await?;
    Ok(NoContent)
}

async fn test(ctx: Ctx, Json(sample): Json<ScriptTest>) -> Result<ScriptTestOutcome, ApiError> {
    Ok(ctx
        .hub
        .parsing_scripts()
        .test(ctx.param("pk"), sample)
        .await?)
}
