//! Usage metering (seed 001 and 003): counters per tenant and per device, per hour, kept in memory
//! and added to the Store at least once a minute with atomic adds (which never conflict, so many
//! nodes can flush into the same rows). Days and months are sums of hours. Monthly quotas (80 %
//! warning, 100 % disabled) are tracked in [`month`]; usage events in [`events`].
//!
//! Key layout: `u\0{tenant}\0{device}\0{hour: u64 BE}\0{metric}` = i64 counter, where `device` is
//! empty for the tenant's totals; `e\0{tenant}\0{at_ms: u64 BE}\0{limit}\0{kind}` = [`UsageEvent`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::FastMap;
use crate::limits::Limited;
use crate::limits::quota::civil_from_days;
use crate::store::{self, KeyRange, Store, StoreError, decode_counter, records, transact};

mod events;
mod month;
pub use events::{UsageEvent, events, save_event};
pub use month::{Charge, MonthHandle, MonthlyUsage};

/// Messages devices sent (accepted or not).
pub const MESSAGES: &str = "messages";
/// Data points in accepted messages.
pub const DATA_POINTS: &str = "data_points";
/// Successful connections.
pub const CONNECTIONS: &str = "connections";
/// Rule executions (a rule's output for one matched message).
pub const RULE_EXECUTIONS: &str = "rule_executions";
/// Data parsing script executions.
pub const JS_EXECUTIONS: &str = "js_executions";
/// Data parsing script executions that failed (threw, overran their budget, bad output).
pub const SCRIPT_ERRORS: &str = "script_errors";
/// History values stored, each times the days it is kept (seed 001's storage data point days).
pub const STORED_POINT_DAYS: &str = "stored_point_days";
/// Prefix of discarded-message metrics: `discarded.{limit id}`.
pub const DISCARDED: &str = "discarded.";

const HOUR_MS: u64 = 3_600_000;
/// Counters written per transaction when flushing (each key ~60 bytes: well under 1 MB).
const FLUSH_ROWS: usize = 5_000;

/// Counters of one scope and period, by metric name.
pub type Counts = BTreeMap<String, u64>;

/// Usage of a tenant or a device.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The current hour.
    pub hour: Counts,
    /// Today (UTC).
    pub day: Counts,
    /// This calendar month (UTC).
    pub month: Counts,
    /// The last 24 hours, oldest first, each with its start (ms): seed 003's publishing status,
    /// with the discarded messages per hour.
    pub last_24h: Vec<(u64, Counts)>,
}

/// The counters each admitted message adds, kept per device: a session holds its device's and
/// charges them under a lock nobody else takes on the message path. They move into the meter's
/// pending counters (the device's and its tenant's totals) at each flush and usage read.
pub struct DeviceCounters {
    tenant: String,
    device: String,
    /// Whether the device has usage rows of its own, or counts in its tenant's totals only.
    own_rows: bool,
    hot: Mutex<HotCounts>,
}

#[derive(Default, Clone, Copy)]
struct HotCounts {
    hour: u64,
    messages: u64,
    points: u64,
    connections: u64,
}

impl HotCounts {
    fn is_empty(&self) -> bool {
        self.messages == 0 && self.points == 0 && self.connections == 0
    }
}

impl DeviceCounters {
    /// The tenant counted.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The device counted (its session key).
    pub fn device(&self) -> &str {
        &self.device
    }

    fn take(&self) -> HotCounts {
        std::mem::take(&mut *self.hot.lock().expect("counters lock"))
    }
}

/// Moves counts taken from a device into the pending counters of the device and its tenant.
fn bump_hot(pending: &mut Pending, counters: &DeviceCounters, hot: HotCounts) {
    if hot.is_empty() {
        return;
    }
    let metrics = [
        (MESSAGES, hot.messages),
        (DATA_POINTS, hot.points),
        (CONNECTIONS, hot.connections),
    ];
    let scopes = if counters.own_rows {
        &["", counters.device.as_str()][..]
    } else {
        &[""][..]
    };
    for scope in scopes {
        for (metric, n) in metrics.iter().filter(|(_, n)| *n > 0) {
            bump(pending, &counters.tenant, scope, hot.hour, metric, *n);
        }
    }
}

/// Counters not yet in the store: tenant -> scope (device, or "" for the tenant) -> hour. Nested
/// so that the per-message lookup borrows the names and allocates only on first sight.
type Pending = FastMap<String, FastMap<String, BTreeMap<u64, Counts>>>;

/// Adds `n` to a metric of a scope and hour.
fn bump(pending: &mut Pending, tenant: &str, scope: &str, hour: u64, metric: &str, n: u64) {
    if !pending.contains_key(tenant) {
        pending.insert(tenant.to_owned(), FastMap::default());
    }
    let scopes = pending.get_mut(tenant).expect("inserted above");
    if !scopes.contains_key(scope) {
        scopes.insert(scope.to_owned(), BTreeMap::new());
    }
    let counts = scopes
        .get_mut(scope)
        .expect("inserted above")
        .entry(hour)
        .or_default();
    match counts.get_mut(metric) {
        Some(c) => *c += n,
        None => {
            counts.insert(metric.to_owned(), n);
        }
    }
}

/// The hub's meter.
#[derive(Default)]
pub struct Meter {
    pending: Mutex<Pending>,
    months: Mutex<FastMap<String, Arc<MonthHandle>>>,
    /// Each device's hot counters, by tenant then device.
    devices: Mutex<FastMap<String, FastMap<String, Arc<DeviceCounters>>>>,
    /// Held by a flush from taking the pending counters until they are in the store, and by
    /// usage reads: between the two, the counts are neither pending nor stored.
    flushing: tokio::sync::RwLock<()>,
}

fn counter_key(tenant: &str, device: &str, hour: u64, metric: &str) -> Vec<u8> {
    records::key(&[
        b"u",
        tenant.as_bytes(),
        device.as_bytes(),
        &hour.to_be_bytes(),
        metric.as_bytes(),
    ])
}

/// Every key of one hour of a scope starts with this (the empty last part adds the separator).
fn hour_prefix(tenant: &str, device: &str, hour: u64) -> Vec<u8> {
    counter_key(tenant, device, hour, "")
}

/// First hour (hours since the epoch) of the UTC day and month of `now_ms`.
fn day_and_month_start_hours(now_ms: u64) -> (u64, u64) {
    let days = now_ms / 86_400_000;
    let (_, _, day_of_month) = civil_from_days(days as i64);
    (days * 24, (days - u64::from(day_of_month - 1)) * 24)
}

impl Meter {
    /// A tenant's monthly quotas, created on first sight.
    pub fn month(&self, tenant: &str) -> Arc<MonthHandle> {
        let mut months = self.months.lock().expect("meter lock");
        match months.get(tenant) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::<MonthHandle>::default();
                months.insert(tenant.to_owned(), m.clone());
                m
            }
        }
    }

    /// A device's hot counters (see [`Meter::admitted`]), created on first sight.
    pub fn device(&self, tenant: &str, device: &str) -> Arc<DeviceCounters> {
        self.counters(tenant, device, true)
    }

    /// The hot counters of a client that is no registered device: it counts in its tenant's
    /// totals, with no usage rows of its own.
    pub fn client(&self, tenant: &str, key: &str) -> Arc<DeviceCounters> {
        self.counters(tenant, key, false)
    }

    fn counters(&self, tenant: &str, device: &str, own_rows: bool) -> Arc<DeviceCounters> {
        let mut devices = self.devices.lock().expect("meter lock");
        if !devices.contains_key(tenant) {
            devices.insert(tenant.to_owned(), FastMap::default());
        }
        let of_tenant = devices.get_mut(tenant).expect("inserted above");
        if let Some(c) = of_tenant.get(device) {
            return c.clone();
        }
        let c = Arc::new(DeviceCounters {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            own_rows,
            hot: Mutex::default(),
        });
        of_tenant.insert(device.to_owned(), c.clone());
        c
    }

    /// Counts an admitted message of `points` data points for its device and tenant: what
    /// [`Meter::add`] does with [`MESSAGES`] and [`DATA_POINTS`], without a shared lock.
    pub fn admitted(&self, counters: &DeviceCounters, points: u64, now_ms: u64) {
        self.count(counters, now_ms, |hot| {
            hot.messages += 1;
            hot.points += points;
        });
    }

    /// Counts a connection of the device ([`CONNECTIONS`]), kept with its hot counters rather
    /// than in the pending maps: a connect storm would otherwise add a few nested map entries per
    /// device until the next flush.
    pub fn connected(&self, counters: &DeviceCounters, now_ms: u64) {
        self.count(counters, now_ms, |hot| hot.connections += 1);
    }

    fn count(&self, counters: &DeviceCounters, now_ms: u64, add: impl FnOnce(&mut HotCounts)) {
        let hour = now_ms / HOUR_MS;
        let previous = {
            let mut hot = counters.hot.lock().expect("counters lock");
            let previous = if hot.hour != hour && !hot.is_empty() {
                std::mem::take(&mut *hot)
            } else {
                HotCounts::default()
            };
            hot.hour = hour;
            add(&mut hot);
            previous
        };
        // Once an hour per device: the last hour's counts join the pending ones.
        if !previous.is_empty() {
            bump_hot(
                &mut self.pending.lock().expect("meter lock"),
                counters,
                previous,
            );
        }
    }

    /// Moves the hot counters of a tenant's devices (or every tenant's) into the pending ones;
    /// forgets the devices no session holds any more.
    fn gather(&self, tenant: Option<&str>) {
        let mut devices = self.devices.lock().expect("meter lock");
        let mut pending = self.pending.lock().expect("meter lock");
        for (name, of_tenant) in devices.iter_mut() {
            if tenant.is_some_and(|t| t != name) {
                continue;
            }
            of_tenant.retain(|_, counters| {
                // Counted before taking: with only this map holding them (and `device` waiting
                // for this lock) nobody can add to them after the take.
                let held = Arc::strong_count(counters) > 1;
                bump_hot(&mut pending, counters, counters.take());
                held
            });
        }
        devices.retain(|_, of_tenant| !of_tenant.is_empty());
    }

    /// Adds to metrics of a device (and of its tenant's totals) in the hour of `now_ms`.
    pub fn add(&self, tenant: &str, device: Option<&str>, metrics: &[(&str, u64)], now_ms: u64) {
        let hour = now_ms / HOUR_MS;
        let mut pending = self.pending.lock().expect("meter lock");
        for scope in [Some(""), device].into_iter().flatten() {
            for (metric, n) in metrics {
                bump(&mut pending, tenant, scope, hour, metric, *n);
            }
        }
    }

    /// Writes the pending counters to the store (atomic adds); on failure they stay pending.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _flushing = self.flushing.write().await;
        self.gather(None);
        let batch = std::mem::take(&mut *self.pending.lock().expect("meter lock"));
        if batch.is_empty() {
            return Ok(());
        }
        let rows = || {
            batch.iter().flat_map(|(tenant, scopes)| {
                scopes.iter().flat_map(move |(scope, hours)| {
                    hours.iter().flat_map(move |(hour, counts)| {
                        counts
                            .iter()
                            .map(move |(metric, n)| (tenant, scope, *hour, metric, *n))
                    })
                })
            })
        };
        // Several transactions of at most FLUSH_ROWS counters: a large fleet's hour stays
        // inside FoundationDB's 10 MB and 5 s per transaction.
        let all: Vec<_> = rows().collect();
        for (i, chunk) in all.chunks(FLUSH_ROWS).enumerate() {
            let written = store::write(store, |t| {
                for (tenant, scope, hour, metric, n) in chunk {
                    t.add(&counter_key(tenant, scope, *hour, metric), *n as i64);
                }
            })
            .await;
            if let Err(e) = written {
                // What was not written stays pending for the next flush.
                let mut pending = self.pending.lock().expect("meter lock");
                for (tenant, scope, hour, metric, n) in all.iter().skip(i * FLUSH_ROWS) {
                    bump(&mut pending, tenant, scope, *hour, metric, *n);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn hours(
        &self,
        store: &dyn Store,
        tenant: &str,
        device: &str,
        from_hour: u64,
        to_hour: u64,
    ) -> Result<BTreeMap<u64, Counts>, StoreError> {
        let range = KeyRange {
            start: hour_prefix(tenant, device, from_hour),
            end: hour_prefix(tenant, device, to_hour + 1),
        };
        // The hour starts after the scope's parts and their separators.
        let prefix_len = records::key(&[b"u", tenant.as_bytes(), device.as_bytes()]).len() + 1;
        let _no_flush = self.flushing.read().await;
        let rows = transact(store, |t| {
            let range = range.clone();
            Box::pin(async move { t.range(&range, 0).await })
        })
        .await?;
        let mut out: BTreeMap<u64, Counts> = BTreeMap::new();
        for (k, v) in rows {
            let hour = u64::from_be_bytes(
                k[prefix_len..prefix_len + 8]
                    .try_into()
                    .expect("8-byte hour"),
            );
            let metric = String::from_utf8_lossy(&k[prefix_len + 9..]).into_owned();
            *out.entry(hour).or_default().entry(metric).or_default() +=
                decode_counter(&v).max(0) as u64;
        }
        self.gather(Some(tenant));
        let pending = self.pending.lock().expect("meter lock");
        let hours = pending.get(tenant).and_then(|scopes| scopes.get(device));
        for (hour, counts) in hours.into_iter().flat_map(|h| h.range(from_hour..=to_hour)) {
            let entry = out.entry(*hour).or_default();
            for (metric, n) in counts {
                *entry.entry(metric.clone()).or_default() += n;
            }
        }
        Ok(out)
    }

    /// Usage of a tenant (`device` None) or one device, as of `now_ms`.
    pub async fn usage(
        &self,
        store: &dyn Store,
        tenant: &str,
        device: Option<&str>,
        now_ms: u64,
    ) -> Result<Usage, StoreError> {
        let now_hour = now_ms / HOUR_MS;
        let (day_start, month_start) = day_and_month_start_hours(now_ms);
        let from = month_start.min(now_hour.saturating_sub(23));
        let hours = self
            .hours(store, tenant, device.unwrap_or(""), from, now_hour)
            .await?;
        let sum = |from: u64| {
            let mut total = Counts::new();
            for (_, counts) in hours.range(from..=now_hour) {
                for (metric, n) in counts {
                    *total.entry(metric.clone()).or_default() += n;
                }
            }
            total
        };
        let last_24h = (now_hour.saturating_sub(23)..=now_hour)
            .map(|h| (h * HOUR_MS, hours.get(&h).cloned().unwrap_or_default()))
            .collect();
        Ok(Usage {
            hour: sum(now_hour),
            day: sum(day_start),
            month: sum(month_start),
            last_24h,
        })
    }

    /// Records that a limit discarded a message.
    pub fn discarded(&self, tenant: &str, device: &str, limited: &Limited, now_ms: u64) {
        self.add(
            tenant,
            Some(device),
            &[(&format!("{DISCARDED}{}", limited.limit.id()), 1)],
            now_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{LimitId, Profile};
    use crate::store::memory::memory_store;

    const T0: u64 = 20_780 * 86_400_000 + 10 * HOUR_MS; // 2026-11-23 10:00 UTC

    #[tokio::test]
    async fn hours_roll_up_into_days_and_months_across_flushes() {
        let store = memory_store();
        let meter = Meter::default();
        meter.add("t", Some("pk/d"), &[(MESSAGES, 3)], T0);
        meter.add("t", Some("pk/d"), &[(MESSAGES, 2)], T0 - 24 * HOUR_MS);
        meter.flush(&store).await.unwrap();
        meter.add("t", Some("pk/d"), &[(MESSAGES, 4)], T0 + 1000); // still pending
        let u = meter
            .usage(&store, "t", Some("pk/d"), T0 + 2000)
            .await
            .unwrap();
        assert_eq!(u.hour[MESSAGES], 7);
        assert_eq!(u.day[MESSAGES], 7);
        assert_eq!(u.month[MESSAGES], 9);
        assert_eq!(u.last_24h.len(), 24);
        assert_eq!(u.last_24h.last().unwrap().1[MESSAGES], 7);
        let tenant = meter.usage(&store, "t", None, T0 + 2000).await.unwrap();
        assert_eq!(
            tenant.month[MESSAGES], 9,
            "the tenant total includes its devices"
        );
        let other = meter.usage(&store, "u", None, T0).await.unwrap();
        assert!(other.month.is_empty(), "tenants are separate");
    }

    #[tokio::test]
    async fn a_client_that_is_no_device_counts_in_its_tenants_totals_only() {
        let store = memory_store();
        let meter = Meter::default();
        let client = meter.client("t", "open:random-id");
        meter.connected(&client, T0);
        meter.admitted(&client, 2, T0);
        meter.flush(&store).await.unwrap();
        let tenant = meter.usage(&store, "t", None, T0 + 1).await.unwrap();
        assert_eq!((tenant.hour[MESSAGES], tenant.hour[CONNECTIONS]), (1, 1));
        let own = meter
            .usage(&store, "t", Some("open:random-id"), T0 + 1)
            .await
            .unwrap();
        assert!(own.month.is_empty(), "no rows of its own: {:?}", own.month);
    }

    #[tokio::test]
    async fn a_sessions_counters_reach_device_and_tenant_across_hours_and_flushes() {
        let store = memory_store();
        let meter = Meter::default();
        let counters = meter.device("t", "pk/d");
        meter.connected(&counters, T0 - HOUR_MS);
        meter.admitted(&counters, 2, T0 - HOUR_MS);
        meter.admitted(&counters, 3, T0); // a new hour: the last one's counts move on
        meter.admitted(&counters, 0, T0 + 1);
        let device = meter.usage(&store, "t", Some("pk/d"), T0).await.unwrap();
        assert_eq!(
            (device.hour[MESSAGES], device.hour[DATA_POINTS]),
            (2, 3),
            "read before any flush"
        );
        assert_eq!(device.day[MESSAGES], 3);
        assert_eq!(device.day[CONNECTIONS], 1);
        assert!(
            !device.hour.contains_key(CONNECTIONS),
            "counted in its own hour"
        );
        meter.flush(&store).await.unwrap();
        meter.admitted(&counters, 5, T0 + 2);
        let tenant = meter.usage(&store, "t", None, T0 + 3).await.unwrap();
        assert_eq!(
            (tenant.hour[MESSAGES], tenant.hour[DATA_POINTS]),
            (3, 8),
            "flushed and hot counts, in the tenant's totals"
        );
        let other = meter.usage(&store, "u", None, T0).await.unwrap();
        assert!(other.month.is_empty(), "tenants are separate");
        drop(counters);
        meter.flush(&store).await.unwrap();
        assert!(
            meter.devices.lock().unwrap().is_empty(),
            "a device no session holds is forgotten once flushed"
        );
        let again = meter.device("t", "pk/d");
        meter.admitted(&again, 1, T0 + 4);
        meter.flush(&store).await.unwrap();
        let device = meter
            .usage(&store, "t", Some("pk/d"), T0 + 5)
            .await
            .unwrap();
        assert_eq!(
            device.hour[MESSAGES], 4,
            "nothing lost across the forgetting"
        );
    }

    #[tokio::test]
    async fn a_flush_larger_than_one_transaction_is_split_and_complete() {
        let store = memory_store();
        let meter = Meter::default();
        let devices = FLUSH_ROWS + 500;
        for d in 0..devices {
            meter.add("t", Some(&format!("pk/d{d}")), &[(MESSAGES, 1)], T0);
        }
        meter.flush(&store).await.unwrap();
        let tenant = meter.usage(&store, "t", None, T0).await.unwrap();
        assert_eq!(tenant.hour[MESSAGES], devices as u64);
        let last = meter
            .usage(&store, "t", Some(&format!("pk/d{}", devices - 1)), T0)
            .await
            .unwrap();
        assert_eq!(last.hour[MESSAGES], 1);
        assert!(
            meter.pending.lock().unwrap().is_empty(),
            "nothing left pending"
        );
    }

    #[test]
    fn monthly_quota_events_fire_once_each() {
        let meter = Meter::default();
        let mut p = Profile::default();
        p.monthly.transport_messages = 10;
        let mut kinds = Vec::new();
        for _ in 0..12 {
            if meter.month("t").transport_disabled(&p, T0).is_some() {
                break;
            }
            kinds.extend(
                meter
                    .month("t")
                    .charge(&p, 1, T0)
                    .into_iter()
                    .map(|e| e.kind),
            );
        }
        assert_eq!(kinds, vec!["warning", "disabled"]);
        assert_eq!(
            meter.month("t").transport_disabled(&p, T0),
            Some(LimitId::MonthlyMessages)
        );
        assert_eq!(meter.month("other").transport_disabled(&p, T0), None);
    }

    #[tokio::test]
    async fn the_monthly_view_counts_admitted_messages_also_after_a_restart() {
        let store = memory_store();
        let meter = Meter::default();
        let mut p = Profile::default();
        p.monthly.transport_messages = 10;
        let discard = Limited::new(LimitId::DeviceMessagesQos0);
        for i in 0..12u64 {
            meter.add("t", Some("pk/d"), &[(MESSAGES, 1)], T0);
            if i < 8 {
                meter.month("t").charge(&p, 1, T0);
            } else {
                meter.discarded("t", "pk/d", &discard, T0);
            }
        }
        let state = |m: &Meter| {
            let v = m.monthly(&p, "t", T0);
            assert_eq!(v[0].limit, "L-070");
            (v[0].used, v[0].state)
        };
        assert_eq!(state(&meter), (8, "warning"));
        meter.flush(&store).await.unwrap();
        let restarted = Meter::default();
        restarted.load_month(&store, "t", T0).await.unwrap();
        assert_eq!(
            state(&restarted),
            (8, "warning"),
            "discarded messages were never charged"
        );
        assert_eq!(Meter::default().monthly(&p, "t", T0)[0].state, "ok");
    }
}
