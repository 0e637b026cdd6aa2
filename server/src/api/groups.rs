//! Consumer groups (server-side subscription): a tenant's durable queues of device messages.

use ironhub_core::data::model::{ConsumerGroup, DISPLAY_NAME_PATTERN};
use ironhub_core::sink::ConsumerCredentials;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::route::{Access, Created, Ctx, Json, NoContent, Route, delete, get, post, put};

const GROUPS: &str = "/api/v1/tenants/{tenant}/consumer-groups";
const GROUP: &str = "/api/v1/tenants/{tenant}/consumer-groups/{id}";
const PRODUCT: &str = "/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}";

pub(super) fn routes() -> Vec<Route> {
    [
        post(
            GROUPS,
            "Create a consumer group (its credentials are shown once)",
            create,
        ),
        get(GROUPS, "List consumer groups", list),
        get(GROUP, "A consumer group", read),
        delete(GROUP, "Delete a consumer group", remove),
        put(PRODUCT, "Associate a product", associate),
        delete(PRODUCT, "Dissociate a product", dissociate),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

/// A new consumer group.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    /// Display name, 1 to 64 characters.
    #[schemars(length(min = 1, max = 64), pattern(DISPLAY_NAME_PATTERN))]
    name: String,
    /// The sink holding its queue (`amqp`, `sqs`); the default group sink when absent.
    sink: Option<String>,
}

/// A created group, with the credentials that may consume its queue (shown once).
#[derive(Serialize, JsonSchema)]
struct CreatedGroup {
    #[serde(flatten)]
    group: ConsumerGroup,
    /// None when the sink manages no consumer credentials.
    credentials: Option<ConsumerCredentials>,
}

async fn create(ctx: Ctx, Json(r): Json<CreateGroup>) -> Result<Created<CreatedGroup>, ApiError> {
    let (group, credentials) = ctx
        .hub
        .groups()
        .create(ctx.param("tenant"), &r.name, r.sink.as_deref())
        .await?;
    Ok(Created(CreatedGroup { group, credentials }))
}

async fn list(ctx: Ctx, _: ()) -> Result<Vec<ConsumerGroup>, ApiError> {
    Ok(ctx.hub.groups().list(ctx.param("tenant")).await?)
}

async fn read(ctx: Ctx, _: ()) -> Result<ConsumerGroup, ApiError> {
    Ok(ctx
        .hub
        .groups()
        .get(ctx.param("tenant"), ctx.param("id"))
        .await?)
}

async fn remove(ctx: Ctx, _: ()) -> Result<NoContent, ApiError> {
    ctx.hub
        .groups()
        .delete(ctx.param("tenant"), ctx.param("id"))
        .await?;
    Ok(NoContent)
}

async fn associate(ctx: Ctx, _: ()) -> Result<ConsumerGroup, ApiError> {
    Ok(ctx
        .hub
        .groups()
        .associate_product(ctx.param("tenant"), ctx.param("id"), ctx.param("pk"))
        .await?)
}

async fn dissociate(ctx: Ctx, _: ()) -> Result<ConsumerGroup, ApiError> {
    Ok(ctx
        .hub
        .groups()
        .dissociate_product(ctx.param("tenant"), ctx.param("id"), ctx.param("pk"))
        .await?)
}
