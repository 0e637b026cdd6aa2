//! Products: create, list, read, delete, their topic categories and their thing model (its
//! versions, and Alibaba's document format in and out).

use ironhub_core::data::model::{DISPLAY_NAME_PATTERN, NodeType, Product};
use ironhub_core::data::topic_category::TopicCategory;
use ironhub_core::hub::{ModelVersionView, ProductView, VersionInfo};
use ironhub_core::tsl::ThingModel;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::route::{
    Access, Created, Ctx, Json, JsonFile, NoContent, Principal, Query, Route, delete, get, post,
    put,
};

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            "/api/v1/products",
            "Create a product (its ProductSecret is shown once)",
            create,
        ),
        get("/api/v1/products", "List products (?tenant=)", list),
        get("/api/v1/products/{pk}", "A product", read),
        delete(
            "/api/v1/products/{pk}",
            "Delete a product and its devices",
            remove,
        ),
        get(
            "/api/v1/products/{pk}/topics",
            "A product's topic categories",
            topics,
        ),
        put(
            "/api/v1/products/{pk}/topics",
            "Replace a product's topic categories",
            set_topics,
        ),
        get(
            "/api/v1/products/{pk}/tsl",
            "A product's thing model",
            model,
        ),
        put(
            "/api/v1/products/{pk}/tsl",
            "Set a product's thing model (saved as a new version)",
            set_model,
        ),
        post(
            "/api/v1/products/{pk}/tsl/import",
            "Import a module of a thing model from Alibaba's document format (the body; L-102, L-103)",
            import_model,
        ),
        get(
            "/api/v1/products/{pk}/tsl/export",
            "A module of the product's thing model in Alibaba's document format (?module=)",
            export_model,
        )
        .keeps_config(),
        get(
            "/api/v1/products/{pk}/tsl/versions",
            "The saved versions of a product's thing model, newest first (L-105)",
            model_versions,
        )
        .keeps_config(),
        get(
            "/api/v1/products/{pk}/tsl/versions/{version}",
            "One saved version of a product's thing model",
            model_version,
        )
        .keeps_config(),
        post(
            "/api/v1/products/{pk}/tsl/versions/{version}/restore",
            "Make a saved version the product's thing model again (saved as a new version)",
            restore_model,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

/// A new product.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    /// The owning tenant (a tenant's key: its own).
    tenant: String,
    /// Display name, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), pattern(DISPLAY_NAME_PATTERN))]
    name: String,
    /// `device` (default) or `gateway`.
    node_type: Option<NodeType>,
    /// Whether devices may obtain their DeviceSecret with the ProductSecret.
    #[serde(default)]
    dynamic_registration: bool,
}

async fn create(ctx: Ctx, Json(r): Json<CreateProduct>) -> Result<Created<Product>, ApiError> {
    if ctx.principal.tenant().is_some_and(|own| own != r.tenant) {
        return Err(ApiError::forbidden(
            "a tenant's API key creates products of its tenant only",
        ));
    }
    let product = ctx
        .hub
        .registry()
        .create_product(
            &r.tenant,
            &r.name,
            r.node_type.unwrap_or_default(),
            r.dynamic_registration,
        )
        .await?;
    // The ProductSecret is shown here, once.
    Ok(Created(product))
}

/// Which products to list.
#[derive(Deserialize, JsonSchema)]
struct ListProducts {
    /// Only this tenant's (a tenant's key: always its own).
    tenant: Option<String>,
}

async fn list(ctx: Ctx, Query(q): Query<ListProducts>) -> Result<Vec<ProductView>, ApiError> {
    let tenant = match &ctx.principal {
        Principal::Tenant(own) => Some(own.as_str()),
        _ => q.tenant.as_deref(),
    };
    Ok(ctx.hub.registry().products(tenant).await?)
}

async fn read(ctx: Ctx, _: ()) -> Result<ProductView, ApiError> {
    let product = ctx.hub.registry().product(ctx.param("pk")).await?;
    Ok(ProductView::from(&product))
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub.registry().delete_product(ctx.param("pk")).await?;
    Ok(NoContent)
}

async fn topics(ctx: Ctx, _: ()) -> Result<Vec<TopicCategory>, ApiError> {
    Ok(ctx.hub.topics().get(ctx.param("pk")).await?)
}

async fn set_topics(
    ctx: Ctx,
    Json(categories): Json<Vec<TopicCategory>>,
) -> Result<Vec<TopicCategory>, ApiError> {
    Ok(ctx.hub.topics().put(ctx.param("pk"), categories).await?)
}

async fn model(ctx: Ctx, _: ()) -> Result<ThingModel, ApiError> {
    Ok(ctx.hub.thing_models().get(ctx.param("pk")).await?)
}

async fn set_model(ctx: Ctx, Json(model): Json<ThingModel>) -> Result<ThingModel, ApiError> {
    let pk = ctx.param("pk");
    ctx.hub.thing_models().put(pk, model).await?;
    Ok(ctx.hub.thing_models().get(pk).await?)
}

/// Largest body read before the hub checks the document's bound (L-102, 512 KB).
const MAX_TSL_DOCUMENT: usize = 4 * 1024 * 1024;

async fn import_model(mut ctx: Ctx, _: JsonFile) -> Result<ModelVersionView, ApiError> {
    let body = ctx
        .upload
        .take()
        .ok_or_else(|| ApiError::bad_request("the document is the request's body"))?;
    let document = super::read_limited(body, MAX_TSL_DOCUMENT).await?;
    Ok(ctx
        .hub
        .thing_models()
        .import(ctx.param("pk"), &document)
        .await?)
}

/// Which module to export.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// A custom module's identifier (default: the default module).
    #[schemars(length(min = 1, max = 64))]
    module: Option<String>,
}

async fn export_model(ctx: Ctx, Query(q): Query<ExportQuery>) -> Result<Value, ApiError> {
    Ok(ctx
        .hub
        .thing_models()
        .export(ctx.param("pk"), q.module.as_deref())
        .await?)
}

async fn model_versions(ctx: Ctx, _: ()) -> Result<Vec<VersionInfo>, ApiError> {
    Ok(ctx.hub.thing_models().versions(ctx.param("pk")).await?)
}

fn version_param(ctx: &Ctx) -> Result<u64, ApiError> {
    ctx.param("version")
        .parse()
        .map_err(|_| ApiError::not_found("no such version"))
}

async fn model_version(ctx: Ctx, _: ()) -> Result<ModelVersionView, ApiError> {
    let version = version_param(&ctx)?;
    Ok(ctx
        .hub
        .thing_models()
        .version(ctx.param("pk"), version)
        .await?)
}

async fn restore_model(ctx: Ctx, _: ()) -> Result<ModelVersionView, ApiError> {
    let version = version_param(&ctx)?;
    Ok(ctx
        .hub
        .thing_models()
        .restore(ctx.param("pk"), version)
        .await?)
}
