//! Firmware upgrades: a tenant's packages (uploaded as the request's raw body, streamed to the
//! store) and the batches rolling them out, with each device's job.

use futures_util::TryStreamExt;
use http_body_util::BodyStream;
use ironhub_core::data::ota::{OtaJob, OtaPackage, SignMethod};
use ironhub_core::hub::{BatchSpec, BatchView, PackageSpec};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::route::{
    Access, Created, Ctx, Json, NoContent, Query, Route, Upload, delete, get, post,
};

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/tenants/{tenant}/ota/packages",
            "Upload a firmware package (the body is the package; L-091, L-092)",
            upload,
        )
        .keeps_config(),
        get(
            "/api/v1/tenants/{tenant}/ota/packages",
            "List firmware packages",
            packages,
        ),
        get(
            "/api/v1/tenants/{tenant}/ota/packages/{id}",
            "A firmware package",
            package,
        ),
        delete(
            "/api/v1/tenants/{tenant}/ota/packages/{id}",
            "Delete a firmware package (not while a batch rolls it out)",
            delete_package,
        )
        .keeps_config(),
        post(
            "/api/v1/tenants/{tenant}/ota/batches",
            "Roll a package out to devices (L-093)",
            create_batch,
        ),
        get(
            "/api/v1/tenants/{tenant}/ota/batches",
            "List upgrade batches with their counts",
            batches,
        ),
        get(
            "/api/v1/tenants/{tenant}/ota/batches/{id}",
            "An upgrade batch with its counts per state",
            batch,
        ),
        get(
            "/api/v1/tenants/{tenant}/ota/batches/{id}/jobs",
            "Each device's upgrade in a batch",
            jobs,
        ),
        post(
            "/api/v1/tenants/{tenant}/ota/batches/{id}/cancel",
            "Cancel a batch (jobs not ended are canceled)",
            cancel,
        ),
        post(
            "/api/v1/tenants/{tenant}/ota/batches/{id}/retry",
            "Queue a batch's failed and timed-out jobs again",
            retry,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

/// What a package is, given as query parameters of its upload.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The product whose devices it is for.
    #[schemars(length(min = 1, max = 64))]
    product_key: String,
    /// The version devices report once upgraded.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._+-]{1,64}$"))]
    version: String,
    /// The firmware module (default: `default`).
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._+-]{1,64}$"))]
    module: Option<String>,
    /// The digest devices check (default: `Md5`).
    sign_method: Option<SignMethod>,
    /// The MD5 the package must have (hex); the upload is refused otherwise.
    #[schemars(pattern(r"^[0-9a-fA-F]{32}$"))]
    md5: Option<String>,
    /// The SHA-256 the package must have (hex); the upload is refused otherwise.
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    sha256: Option<String>,
}

async fn upload(
    mut ctx: Ctx,
    (Query(q), Upload): (Query<UploadQuery>, Upload),
) -> Result<Created<OtaPackage>, ApiError> {
    let body = ctx
        .upload
        .take()
        .ok_or_else(|| ApiError::bad_request("the package is the request's body"))?;
    let chunks =
        BodyStream::new(body).try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let spec = PackageSpec {
        version: q.version,
        module: q.module,
        sign_method: q.sign_method,
        md5: q.md5,
        sha256: q.sha256,
    };
    let package = ctx
        .hub
        .ota()
        .upload(ctx.param("tenant"), &q.product_key, spec, Box::pin(chunks))
        .await?;
    Ok(Created(package))
}

/// Which packages to list.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PackagesQuery {
    /// Only this product's.
    product_key: Option<String>,
}

async fn packages(ctx: Ctx, Query(q): Query<PackagesQuery>) -> Result<Vec<OtaPackage>, ApiError> {
    let tenant = ctx.param("tenant");
    ctx.hub.registry().tenant(tenant).await?;
    Ok(ctx
        .hub
        .ota()
        .packages(tenant, q.product_key.as_deref())
        .await?)
}

async fn package(ctx: Ctx, _: ()) -> Result<OtaPackage, ApiError> {
    Ok(ctx
        .hub
        .ota()
        .package(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

async fn delete_package(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .ota()
        .delete_package(ctx.param("tenant"), ctx.param("id"))
        .await?;
    Ok(NoContent)
}

async fn create_batch(
    ctx: Ctx,
    Json(spec): Json<BatchSpec>,
) -> Result<Created<BatchView>, ApiError> {
    let tenant = ctx.param("tenant");
    ctx.hub.registry().tenant(tenant).await?;
    Ok(Created(ctx.hub.ota().create_batch(tenant, spec).await?))
}

async fn batches(ctx: Ctx, _: ()) -> Result<Vec<BatchView>, ApiError> {
    let tenant = ctx.param("tenant");
    ctx.hub.registry().tenant(tenant).await?;
    Ok(ctx.hub.ota().batches(tenant).await?)
}

async fn batch(ctx: Ctx, _: ()) -> Result<BatchView, ApiError> {
    Ok(ctx
        .hub
        .ota()
        .batch(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

async fn jobs(ctx: Ctx, _: ()) -> Result<Vec<OtaJob>, ApiError> {
    Ok(ctx
        .hub
        .ota()
        .jobs(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

async fn cancel(ctx: Ctx, _: ()) -> Result<BatchView, ApiError> {
    Ok(ctx
        .hub
        .ota()
        .cancel(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

/// Which jobs to retry.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Retry {
    /// Only these devices' (default: every failed or timed-out job).
    devices: Option<Vec<String>>,
}

async fn retry(ctx: Ctx, Json(r): Json<Retry>) -> Result<BatchView, ApiError> {
    Ok(ctx
        .hub
        .ota()
        .retry(ctx.param("tenant"), ctx.param("id"), r.devices)
        .await?)
}
