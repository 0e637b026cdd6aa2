//! Products: create, list, read, delete, their topic categories and their thing model.

use ironhub_core::data::model::{DISPLAY_NAME_PATTERN, NodeType, Product};
use ironhub_core::data::topic_category::TopicCategory;
use ironhub_core::hub::ProductView;
use ironhub_core::tsl::ThingModel;
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::route::{
    Access, Created, Ctx, Json, NoContent, Principal, Query, Route, delete, get, post, put,
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
            "Set a product's thing model",
            set_model,
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
