//! The thing model's history: every accepted property post and event post is kept as time
//! series in the store (per device, property or event, and time), for the tenant's retention
//! (profile `history_retention_days`, 30 by default), and queried: the latest value of every
//! property, one property's values in a time range (paged, either order), events by identifier
//! and range, and a property's values downsampled (min, max, average, count per interval).
//! [`writer`] writes them (a QoS 1 post is acknowledged once its values are stored) and sweeps
//! what is past retention.

mod writer;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use writer::HistoryWrite;

use super::{Hub, HubError};
use crate::store::records::{self, Latest, SeriesId, SeriesKind};
use crate::store::{self, KeyRange};

/// Most values one page returns.
pub const MAX_PAGE: usize = 1000;
/// Most buckets of a downsampled series.
pub const MAX_BUCKETS: u64 = 1000;
/// Most values a downsampled series reads.
pub const MAX_SCANNED: usize = 500_000;

/// Which way a page runs.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Newest first.
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

/// A time range and a page of it.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// From, ms since the epoch (included; default: the retention's start).
    pub from_ms: Option<u64>,
    /// To, ms since the epoch (excluded; default: now and a little after).
    pub to_ms: Option<u64>,
    /// Newest first (`desc`, the default) or oldest first (`asc`).
    #[serde(default)]
    pub order: Order,
    /// Values per page (1 to 1000, default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[schemars(length(min = 1, max = 64))]
    pub cursor: Option<String>,
}

/// One value of a property (or one event's output).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// The value.
    pub value: Value,
}

/// A page of values.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct PointPage {
    /// The values, in the order asked.
    pub points: Vec<Point>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next: Option<String>,
}

/// One interval of a downsampled series (numbers only; others are counted in `count` alone).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// The interval's start, ms since the epoch.
    pub start_ms: u64,
    /// Values in the interval.
    pub count: u64,
    /// Smallest numeric value.
    pub min: Option<f64>,
    /// Largest numeric value.
    pub max: Option<f64>,
    /// Average of the numeric values.
    pub avg: Option<f64>,
}

/// A device's latest value of a property or event.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
pub struct LatestValue {
    /// When, ms since the epoch.
    pub time_ms: u64,
    /// The value.
    pub value: Value,
}

impl From<Latest> for LatestValue {
    fn from(l: Latest) -> Self {
        LatestValue {
            time_ms: l.time,
            value: l.value,
        }
    }
}

/// Property and event history.
#[derive(Clone, Copy)]
pub struct ThingHistory<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Property and event history.
    pub fn thing_history(&self) -> ThingHistory<'_> {
        ThingHistory { hub: self }
    }
}

/// A page's cursor: the time and sequence of the last value given, hex.
fn cursor_of(time: u64, seq: u64) -> String {
    format!("{time:016x}{seq:016x}")
}

fn parse_cursor(cursor: &str) -> Result<(u64, u64), HubError> {
    let bad = || HubError::Invalid(format!("cursor {cursor:?} is not one this API gave"));
    if cursor.len() != 32 {
        return Err(bad());
    }
    let time = u64::from_str_radix(&cursor[..16], 16).map_err(|_| bad())?;
    let seq = u64::from_str_radix(&cursor[16..], 16).map_err(|_| bad())?;
    Ok((time, seq))
}

impl ThingHistory<'_> {
    /// The tenant of a device (NotFound when there is none).
    async fn tenant_of(&self, pk: &str, dn: &str) -> Result<String, HubError> {
        Ok(self.hub.registry().device(pk, dn).await?.tenant)
    }

    /// The latest value of each of a device's properties (`Event`: of each event).
    pub async fn latest(
        &self,
        pk: &str,
        dn: &str,
        kind: SeriesKind,
    ) -> Result<std::collections::BTreeMap<String, LatestValue>, HubError> {
        let tenant = self.tenant_of(pk, dn).await?;
        self.latest_in(&tenant, (pk, dn), kind).await
    }

    async fn latest_in(
        &self,
        tenant: &str,
        (pk, dn): (&str, &str),
        kind: SeriesKind,
    ) -> Result<std::collections::BTreeMap<String, LatestValue>, HubError> {
        let (tenant, pk, dn) = (tenant.to_owned(), pk.to_owned(), dn.to_owned());
        let rows = store::read(&**self.hub.store(), |t| {
            let (tenant, pk, dn) = (tenant.clone(), pk.clone(), dn.clone());
            Box::pin(async move { records::latest_of(t, &tenant, &pk, &dn, kind).await })
        })
        .await?;
        Ok(rows.into_iter().map(|(k, l)| (k, l.into())).collect())
    }

    /// The range a query covers, its defaults filled in.
    fn bounds(&self, tenant: &str, q: &RangeQuery) -> (u64, u64) {
        let now = self.hub.now_ms();
        let days = self.hub.profile_of(tenant).history_retention_days;
        let from = q
            .from_ms
            .unwrap_or_else(|| now.saturating_sub(days * 86_400_000));
        let to = q.to_ms.unwrap_or(now + writer::MAX_AHEAD_MS + 1);
        (from, to)
    }

    /// One page of a series' values in a range.
    pub async fn points(
        &self,
        (pk, dn): (&str, &str),
        kind: SeriesKind,
        identifier: &str,
        q: &RangeQuery,
    ) -> Result<PointPage, HubError> {
        let tenant = self.tenant_of(pk, dn).await?;
        self.page(&tenant, (pk, dn), kind, identifier, q).await
    }

    async fn page(
        &self,
        tenant: &str,
        (pk, dn): (&str, &str),
        kind: SeriesKind,
        identifier: &str,
        q: &RangeQuery,
    ) -> Result<PointPage, HubError> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let (from, to) = self.bounds(tenant, q);
        let series = SeriesId {
            tenant,
            pk,
            dn,
            kind,
            identifier,
        };
        let mut range = series.between(from, to);
        if let Some(cursor) = &q.cursor {
            let (time, seq) = parse_cursor(cursor)?;
            let mut next = series.point_key(time, seq);
            match q.order {
                Order::Asc => {
                    next.push(0);
                    range.start = range.start.max(next);
                }
                Order::Desc => range.end = range.end.min(next),
            }
        }
        let reverse = q.order == Order::Desc;
        let rows = read_points(self.hub, range, limit + 1, reverse).await?;
        let more = rows.len() > limit;
        let points: Vec<(u64, u64, Value)> = rows.into_iter().take(limit).collect();
        let next = more
            .then(|| points.last().map(|(t, s, _)| cursor_of(*t, *s)))
            .flatten();
        Ok(PointPage {
            points: points
                .into_iter()
                .map(|(time_ms, _, value)| Point { time_ms, value })
                .collect(),
            next,
        })
    }

    /// A property's values in a range, in intervals of `interval_ms`: count, and min, max and
    /// average of the numbers (at most [`MAX_BUCKETS`] intervals, [`MAX_SCANNED`] values).
    pub async fn downsampled(
        &self,
        (pk, dn): (&str, &str),
        identifier: &str,
        (from_ms, to_ms, interval_ms): (Option<u64>, Option<u64>, u64),
    ) -> Result<Vec<Bucket>, HubError> {
        let tenant = self.tenant_of(pk, dn).await?;
        let q = RangeQuery {
            from_ms,
            to_ms,
            ..RangeQuery::default()
        };
        let (from, to) = self.bounds(&tenant, &q);
        if interval_ms == 0 || to <= from || (to - from).div_ceil(interval_ms) > MAX_BUCKETS {
            return Err(HubError::Invalid(format!(
                "interval_ms must cut the range into 1 to {MAX_BUCKETS} intervals"
            )));
        }
        let series = SeriesId {
            tenant: &tenant,
            pk,
            dn,
            kind: SeriesKind::Property,
            identifier,
        };
        let rows = read_points(self.hub, series.between(from, to), MAX_SCANNED, false).await?;
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut sums: Vec<(f64, u64)> = Vec::new();
        for (time, _, value) in rows {
            let start = from + (time - from) / interval_ms * interval_ms;
            if buckets.last().is_none_or(|b| b.start_ms != start) {
                buckets.push(Bucket {
                    start_ms: start,
                    count: 0,
                    min: None,
                    max: None,
                    avg: None,
                });
                sums.push((0.0, 0));
            }
            let (b, sum) = (
                buckets.last_mut().expect("pushed"),
                sums.last_mut().expect("pushed"),
            );
            b.count += 1;
            if let Some(x) = value.as_f64() {
                b.min = Some(b.min.map_or(x, |m| m.min(x)));
                b.max = Some(b.max.map_or(x, |m| m.max(x)));
                sum.0 += x;
                sum.1 += 1;
                b.avg = Some(sum.0 / sum.1 as f64);
            }
        }
        Ok(buckets)
    }

    /// A page of a device's events, of one identifier or all (newest or oldest first per
    /// identifier, then merged by time).
    pub async fn events(
        &self,
        (pk, dn): (&str, &str),
        identifier: Option<&str>,
        q: &RangeQuery,
    ) -> Result<Vec<(String, Point)>, HubError> {
        let tenant = self.tenant_of(pk, dn).await?;
        let identifiers: Vec<String> = match identifier {
            Some(i) => vec![i.to_owned()],
            None => self
                .latest_in(&tenant, (pk, dn), SeriesKind::Event)
                .await?
                .into_keys()
                .collect(),
        };
        let mut all = Vec::new();
        for id in identifiers {
            let page = self
                .page(&tenant, (pk, dn), SeriesKind::Event, &id, q)
                .await?;
            all.extend(page.points.into_iter().map(|p| (id.clone(), p)));
        }
        match q.order {
            Order::Desc => all.sort_by_key(|e| std::cmp::Reverse(e.1.time_ms)),
            Order::Asc => all.sort_by_key(|e| e.1.time_ms),
        }
        all.truncate(q.limit.unwrap_or(100).clamp(1, MAX_PAGE));
        Ok(all)
    }
}

async fn read_points(
    hub: &Hub,
    range: KeyRange,
    limit: usize,
    reverse: bool,
) -> Result<Vec<(u64, u64, Value)>, HubError> {
    Ok(store::read(&**hub.store(), |t| {
        let range = range.clone();
        Box::pin(async move { records::read_points(t, &range, limit, reverse).await })
    })
    .await?)
}
