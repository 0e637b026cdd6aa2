//! A device's property and event history: the latest values, a property's values in a range
//! (paged), downsampled for charts, and events.

use std::collections::BTreeMap;

use ironhub_core::hub::{Bucket, LatestValue, Order, PointPage, RangeQuery};
use ironhub_core::store::records::SeriesKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::route::{Access, Ctx, Query, Route, get};

pub(super) fn routes() -> Vec<Route> {
    [
        get(
            "/api/v1/products/{pk}/devices/{dn}/properties",
            "The latest value of each of a device's properties",
            latest,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/properties/{identifier}",
            "A property's values in a time range (paged)",
            property,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/properties/{identifier}/series",
            "A property's values downsampled: count, min, max and average per interval",
            series,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/events",
            "A device's events in a time range, of one identifier or all",
            events,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/events/{identifier}",
            "One event's occurrences in a time range (paged)",
            event,
        ),
        get(
            "/api/v1/products/{pk}/devices/{dn}/services/{identifier}",
            "A service's calls and answers in a time range (paged)",
            service,
        ),
    ]
    .into_iter()
    .map(|r| r.access(Access::Tenant))
    .collect()
}

fn device(ctx: &Ctx) -> (&str, &str) {
    (ctx.param("pk"), ctx.param("dn"))
}

async fn latest(ctx: Ctx, _: ()) -> Result<BTreeMap<String, LatestValue>, ApiError> {
    let (pk, dn) = device(&ctx);
    Ok(ctx
        .hub
        .thing_history()
        .latest(pk, dn, SeriesKind::Property)
        .await?)
}

async fn property(ctx: Ctx, Query(q): Query<RangeQuery>) -> Result<PointPage, ApiError> {
    let id = ctx.param("identifier");
    let history = ctx.hub.thing_history();
    Ok(history
        .points(device(&ctx), SeriesKind::Property, id, &q)
        .await?)
}

/// A downsampled range.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    /// From, ms since the epoch (default: the retention's start).
    from_ms: Option<u64>,
    /// To, ms since the epoch (default: now).
    to_ms: Option<u64>,
    /// The interval, ms; the range is cut into at most 1000.
    #[schemars(range(min = 1))]
    interval_ms: u64,
}

async fn series(ctx: Ctx, Query(q): Query<SeriesQuery>) -> Result<Vec<Bucket>, ApiError> {
    let id = ctx.param("identifier");
    let range = (q.from_ms, q.to_ms, q.interval_ms);
    Ok(ctx
        .hub
        .thing_history()
        .downsampled(device(&ctx), id, range)
        .await?)
}

/// Which events.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only this event's.
    #[schemars(length(min = 1, max = 64))]
    identifier: Option<String>,
    /// From, ms since the epoch (default: the retention's start).
    from_ms: Option<u64>,
    /// To, ms since the epoch (default: now).
    to_ms: Option<u64>,
    /// Newest first (`desc`, the default) or oldest first (`asc`).
    #[serde(default)]
    order: Order,
    /// Events at most (1 to 1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
}

/// An event that happened.
#[derive(Serialize, JsonSchema)]
struct EventRecord {
    /// The event's identifier.
    identifier: String,
    /// When, ms since the epoch.
    time_ms: u64,
    /// Its output parameters.
    value: Value,
}

async fn events(ctx: Ctx, Query(q): Query<EventsQuery>) -> Result<Vec<EventRecord>, ApiError> {
    let range = RangeQuery {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        order: q.order,
        limit: q.limit,
        cursor: None,
    };
    let found = ctx
        .hub
        .thing_history()
        .events(device(&ctx), q.identifier.as_deref(), &range)
        .await?;
    Ok(found
        .into_iter()
        .map(|(identifier, p)| EventRecord {
            identifier,
            time_ms: p.time_ms,
            value: p.value,
        })
        .collect())
}

async fn event(ctx: Ctx, Query(q): Query<RangeQuery>) -> Result<PointPage, ApiError> {
    let id = ctx.param("identifier");
    let history = ctx.hub.thing_history();
    Ok(history
        .points(device(&ctx), SeriesKind::Event, id, &q)
        .await?)
}

async fn service(ctx: Ctx, Query(q): Query<RangeQuery>) -> Result<PointPage, ApiError> {
    let id = ctx.param("identifier");
    let history = ctx.hub.thing_history();
    Ok(history
        .points(device(&ctx), SeriesKind::Service, id, &q)
        .await?)
}
