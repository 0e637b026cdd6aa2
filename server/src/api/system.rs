//! Probes, metrics, this API's document, who the caller is, hub-wide counters and publishing as
//! the hub.

use bytes::Bytes;
use ironhub_core::data::model::TENANT_ID_PATTERN;
use ironhub_core::egress::SinkStatsSnapshot;
use ironhub_core::hub::StatsSnapshot;
use ironhub_core::store::{records, transact};
use ironhub_core::{QoS, topic};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::route::{Access, Ctx, Json, Metrics, Principal, Route, get, post};

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/healthz", "The process answers", healthz).access(Access::Open),
        get(
            "/readyz",
            "The store and every sink are usable (503 otherwise)",
            readyz,
        )
        .access(Access::Open),
        get(
            "/metrics",
            "Prometheus metrics (text format; the admin token)",
            metrics,
        ),
        get("/openapi.json", "This document", openapi).access(Access::Open),
        get(
            "/api/v1/whoami",
            "Who the credentials are (admin or a tenant)",
            whoami,
        )
        .access(Access::Tenant),
        get("/api/v1/stats", "Hub counters", stats),
        get("/api/v1/sinks", "Sink counters", sinks),
        post("/api/v1/messages", "Publish a message as the hub", publish).keeps_config(),
    ]
}

/// A probe's answer.
#[derive(Serialize, JsonSchema)]
struct Status {
    /// `ok` or `ready`.
    status: &'static str,
}

async fn healthz(_: Ctx, _: ()) -> Result<Status, ApiError> {
    Ok(Status { status: "ok" })
}

async fn readyz(ctx: Ctx, _: ()) -> Result<Status, ApiError> {
    // Ready when the store answers a read.
    let store = ctx.hub.store().clone();
    if let Err(e) = transact(&*store, |t| {
        Box::pin(records::get_meta(t, "admin_token_sha256"))
    })
    .await
    {
        tracing::error!(error = %e, "readiness: store unavailable");
        return Err(ApiError::unavailable("storage is unavailable"));
    }
    // Sinks keep what they cannot send in the store, so a broker outage does not stop the hub;
    // readiness still reports it for operators and load balancers.
    ctx.hub.sinks_ready().await.map_err(ApiError::unavailable)?;
    Ok(Status { status: "ready" })
}

// Per-tenant figures: the admin token only (tenants reach this listener too, for the console).
async fn metrics(ctx: Ctx, _: ()) -> Result<Metrics, ApiError> {
    Ok(Metrics(crate::metrics::render(
        &ctx.hub.stats(),
        &ctx.hub.sink_stats(),
    )))
}

async fn openapi(_: Ctx, _: ()) -> Result<Value, ApiError> {
    Ok(super::DOCUMENT.clone())
}

/// Who the credentials are.
#[derive(Serialize, JsonSchema)]
struct WhoAmI {
    /// `admin` or `tenant`.
    role: &'static str,
    /// The tenant of an API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
}

async fn whoami(ctx: Ctx, _: ()) -> Result<WhoAmI, ApiError> {
    Ok(match ctx.principal {
        Principal::Tenant(t) => WhoAmI {
            role: "tenant",
            tenant: Some(t),
        },
        _ => WhoAmI {
            role: "admin",
            tenant: None,
        },
    })
}

async fn stats(ctx: Ctx, _: ()) -> Result<StatsSnapshot, ApiError> {
    Ok(ctx.hub.stats())
}

async fn sinks(ctx: Ctx, _: ()) -> Result<Vec<SinkStatsSnapshot>, ApiError> {
    Ok(ctx.hub.sink_stats())
}

/// A message the hub publishes on a tenant's topic.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PublishMessage {
    /// The tenant whose topic it is.
    #[schemars(pattern(TENANT_ID_PATTERN))]
    tenant: String,
    /// The topic name (no wildcards).
    #[schemars(pattern(topic::NAME_PATTERN))]
    topic: String,
    /// The payload, as text.
    payload: String,
    /// 0, 1 or 2.
    #[serde(default)]
    #[schemars(range(max = 2))]
    qos: u8,
    /// Kept as the topic's retained message.
    #[serde(default)]
    retain: bool,
}

/// How many subscribers a message reached.
#[derive(Serialize, JsonSchema)]
pub(super) struct Delivered {
    /// Subscriptions (or devices) it was delivered to on this node.
    pub(super) delivered_to: usize,
}

async fn publish(ctx: Ctx, Json(r): Json<PublishMessage>) -> Result<Delivered, ApiError> {
    let qos = QoS::from_u8(r.qos).ok_or_else(|| ApiError::bad_request("qos must be 0, 1 or 2"))?;
    let delivered_to = ctx
        .hub
        .publish_as_hub(&r.tenant, &r.topic, Bytes::from(r.payload), qos, r.retain)
        .await?;
    Ok(Delivered { delivered_to })
}
