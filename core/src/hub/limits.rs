//! Tenant profiles and usage, as the hub manages and applies them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{ClientIdentity, Hub, HubError};
use crate::data::model::Tenant;
use crate::limits::rate::ByteRate;
use crate::limits::{DEFAULT_PROFILE, LimitId, Limited, Profile, datapoints};
use crate::metering::{self, DeviceCounters, MonthHandle, MonthlyUsage, Usage, UsageEvent};
use crate::store::{self, records, transact};

/// A tenant's or device's usage with the limits it is measured against.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct UsageReport {
    /// Counters: this hour, today, this month, and each of the last 24 hours.
    pub usage: Usage,
    /// The profile in force.
    pub profile: Profile,
    /// Monthly-quota events (80 % warnings, 100 % disabled), oldest first; tenant reports only.
    pub events: Vec<UsageEvent>,
    /// Standing against each monthly limit; tenant reports only.
    pub monthly: Vec<MonthlyUsage>,
}

/// What the message path needs of a device's tenant and meter, looked up once per session
/// instead of once per message: the device's usage counters, the tenant's monthly quotas, and
/// the tenant's profile (looked up again only when profiles change).
pub(crate) struct Charges {
    counters: Arc<DeviceCounters>,
    month: Arc<MonthHandle>,
    profile: Mutex<(u64, Arc<Profile>)>,
}

impl Charges {
    /// Runs `f` with the profile in force for the tenant, as of the hub's latest profile
    /// change. Borrowed under the session's own lock: cloning the `Arc` would write its count,
    /// which every session of the tenant shares, on every message.
    fn with_profile<R>(&self, hub: &Hub, f: impl FnOnce(&Profile) -> R) -> R {
        let generation = hub.inner.profile_generation.load(Ordering::Acquire);
        let mut cached = self.profile.lock().expect("charges lock");
        if cached.0 != generation {
            *cached = (generation, hub.profile_of(self.counters.tenant()));
        }
        f(&cached.1)
    }
}

impl Hub {
    /// The charges of a device's messages (see [`Charges`]).
    pub(crate) fn charges(&self, identity: &ClientIdentity) -> Charges {
        let (tenant, meter) = (identity.tenant.as_str(), &self.inner.meter);
        Charges {
            // An open-broker client counts in its tenant's totals only: its id is no registered
            // device, and clients that pick a new random id per connection would add usage rows
            // without end.
            counters: match identity.device {
                Some(_) => meter.device(tenant, &identity.key),
                None => meter.client(tenant, &identity.key),
            },
            month: self.inner.meter.month(tenant),
            profile: Mutex::new((
                self.inner.profile_generation.load(Ordering::Acquire),
                self.profile_of(tenant),
            )),
        }
    }

    /// Profiles or tenants' profile names changed: sessions look their profile up again.
    fn profiles_changed(&self) {
        self.inner.profile_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Loads each known tenant's monthly usage (after the profile maps).
    pub(crate) async fn load_months(&self) -> Result<(), HubError> {
        let tenants: Vec<String> = self
            .inner
            .tenant_profiles
            .read()
            .expect("profiles lock")
            .keys()
            .cloned()
            .collect();
        let now = self.now_ms();
        for tenant in tenants {
            self.inner
                .meter
                .load_month(&**self.store(), &tenant, now)
                .await?;
        }
        Ok(())
    }

    /// Replaces the cached profiles and tenants' profile names with the store's (at start, and
    /// when another node changed them).
    pub(crate) async fn load_profile_maps(&self) -> Result<(), HubError> {
        let (profiles, tenants) = transact(&**self.store(), |t| {
            Box::pin(async move {
                Ok((
                    records::list_profiles(t).await?,
                    records::list_tenants(t).await?,
                ))
            })
        })
        .await?;
        *self.inner.profiles.write().expect("profiles lock") = profiles
            .into_iter()
            .map(|p| (p.name.clone(), Arc::new(p)))
            .collect();
        *self.inner.tenant_profiles.write().expect("profiles lock") =
            tenants.into_iter().map(|t| (t.id, t.profile)).collect();
        self.profiles_changed();
        Ok(())
    }

    pub(crate) fn remember_tenant_profile(&self, tenant: &Tenant) {
        self.inner
            .tenant_profiles
            .write()
            .expect("profiles lock")
            .insert(tenant.id.clone(), tenant.profile.clone());
        self.profiles_changed();
    }

    /// The profile in force for a tenant (the default one for unknown tenants).
    pub fn profile_of(&self, tenant: &str) -> Arc<Profile> {
        // On every message: two read locks and two lookups, nothing allocated.
        let names = self.inner.tenant_profiles.read().expect("profiles lock");
        let stored = names.get(tenant).and_then(|name| {
            self.inner
                .profiles
                .read()
                .expect("profiles lock")
                .get(name)
                .cloned()
        });
        stored.unwrap_or_else(|| self.inner.default_profile.clone())
    }

    /// Applies the registry-operations rate limit of a tenant.
    pub(crate) fn registry_operation(&self, tenant: &str) -> Result<(), HubError> {
        self.inner
            .limiter
            .registry(&self.profile_of(tenant), tenant, self.now_ms())
            .map_err(|limited| HubError::Limited {
                limited: self.counted(limited),
                message: format!("device registry operations of tenant {tenant}"),
            })
    }

    /// Counts a limit's refusal in the hub's stats (and so in /metrics), passing it on.
    pub(crate) fn counted(&self, limited: Limited) -> Limited {
        self.inner.stats.limited(limited.limit);
        limited
    }

    /// A bound a transport checks itself (a size only its protocol has, such as L-023 for CoAP):
    /// refused and counted when `value` is over `max`.
    pub fn check_bound(&self, limit: LimitId, value: usize, max: usize) -> Result<(), Limited> {
        if value > max {
            return Err(self.counted(Limited::new(limit)));
        }
        Ok(())
    }

    /// Meters a device message and applies the monthly quotas and rate limits to it. Ok means
    /// admitted (and charged); Err names the limit that discarded it (and it is counted).
    pub(crate) async fn admit_message(
        &self,
        charges: &Charges,
        qos1_or_2: bool,
        payload: &[u8],
        now: u64,
    ) -> Result<(), Limited> {
        let meter = &self.inner.meter;
        let (tenant, device) = (charges.counters.tenant(), charges.counters.device());
        let points = datapoints::count(payload);
        let admitted = charges.with_profile(self, |profile| {
            if let Some(limit) = charges.month.transport_disabled(profile, now) {
                return Err(Limited::new(limit));
            }
            self.inner
                .limiter
                .message(profile, tenant, device, qos1_or_2, points, now)?;
            meter.admitted(&charges.counters, points, now);
            Ok(charges.month.charge(profile, points, now))
        });
        let events = match admitted {
            Ok(events) => events,
            Err(limited) => {
                meter.add(tenant, Some(device), &[(metering::MESSAGES, 1)], now);
                meter.discarded(tenant, device, &limited, now);
                tracing::debug!(tenant, device, limit = %limited.limit, "message discarded by a limit");
                return Err(limited);
            }
        };
        if !events.is_empty() {
            // Twice a month per quota at most: boxed, to keep every message's future small.
            Box::pin(self.save_usage_events(tenant, events)).await;
        }
        Ok(())
    }

    pub(crate) async fn save_usage_events(&self, tenant: &str, events: Vec<UsageEvent>) {
        for event in events {
            tracing::warn!(tenant, limit = %event.limit, kind = %event.kind, used = event.used, of = event.limit_value, "monthly usage");
            if let Err(e) = metering::save_event(&**self.store(), tenant, &event).await {
                tracing::warn!(error = %e, "could not store a usage event");
            }
        }
    }

    /// The read allowance of a new connection (L-019), or None when unlimited.
    pub fn connection_bandwidth(&self) -> Option<ByteRate> {
        let per_sec = self.inner.config.max_connection_bytes_per_sec;
        (per_sec > 0).then(|| ByteRate::new(per_sec, self.now_ms()))
    }

    /// Applies the connection limits (monthly quota, device and tenant connection rates).
    pub(crate) fn admit_connection(&self, identity: &ClientIdentity) -> Result<(), Limited> {
        let now = self.now_ms();
        let (tenant, device) = (identity.tenant.as_str(), &*identity.key);
        let charges = self.charges(identity);
        charges.with_profile(self, |profile| {
            if let Some(limit) = charges.month.transport_disabled(profile, now) {
                return Err(Limited::new(limit));
            }
            self.inner
                .limiter
                .connection(profile, tenant, device, now)?;
            self.inner.meter.connected(&charges.counters, now);
            Ok(())
        })
    }

    pub(crate) async fn flush_usage_forever(&self) {
        let every = std::time::Duration::from_secs(
            self.inner.config.usage_flush_interval_secs.clamp(1, 60),
        );
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.inner.meter.flush(&**self.store()).await {
                tracing::warn!(error = %e, "usage flush failed; counters kept for the next one");
            }
        }
    }
}

/// Tenant profiles and usage reports.
#[derive(Clone, Copy)]
pub struct Profiles<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Tenant profiles and usage reports.
    pub fn limits(&self) -> Profiles<'_> {
        Profiles { hub: self }
    }
}

impl Profiles<'_> {
    /// A profile by name: stored ones, and the built-in default.
    pub fn profile_named(&self, name: &str) -> Result<Arc<Profile>, HubError> {
        if let Some(p) = self
            .hub
            .inner
            .profiles
            .read()
            .expect("profiles lock")
            .get(name)
        {
            return Ok(p.clone());
        }
        if name == DEFAULT_PROFILE {
            return Ok(self.hub.inner.default_profile.clone());
        }
        Err(HubError::NotFound {
            what: "profile",
            id: name.to_owned(),
        })
    }

    /// Every profile, the default included.
    pub fn profiles(&self) -> Vec<Profile> {
        let map = self.hub.inner.profiles.read().expect("profiles lock");
        let mut out: Vec<Profile> = map.values().map(|p| (**p).clone()).collect();
        if !map.contains_key(DEFAULT_PROFILE) {
            out.push(Profile::default());
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Creates or replaces a profile; tenants using it get the new limits at once.
    pub async fn put_profile(&self, profile: Profile) -> Result<Profile, HubError> {
        crate::data::model::validate_tenant_id(&profile.name)
            .map_err(|e| HubError::Invalid(e.to_string().replacen("id", "profile name", 1)))?;
        store::write(&**self.hub.store(), |t| records::put_profile(t, &profile)).await?;
        self.hub
            .inner
            .profiles
            .write()
            .expect("profiles lock")
            .insert(profile.name.clone(), Arc::new(profile.clone()));
        self.hub.profiles_changed();
        Ok(profile)
    }

    /// Deletes a profile no tenant uses (the default cannot be deleted, only overridden).
    pub async fn delete_profile(&self, name: &str) -> Result<(), HubError> {
        if name == DEFAULT_PROFILE {
            return Err(HubError::Conflict(
                "the default profile cannot be deleted".into(),
            ));
        }
        self.profile_named(name)?;
        let users: Vec<String> = self
            .hub
            .inner
            .tenant_profiles
            .read()
            .expect("profiles lock")
            .iter()
            .filter(|(_, p)| *p == name)
            .map(|(t, _)| t.clone())
            .collect();
        if !users.is_empty() {
            return Err(HubError::Conflict(format!(
                "profile {name} is used by tenants {}",
                users.join(", ")
            )));
        }
        store::write(&**self.hub.store(), |t| records::delete_profile(t, name)).await?;
        self.hub
            .inner
            .profiles
            .write()
            .expect("profiles lock")
            .remove(name);
        self.hub.profiles_changed();
        Ok(())
    }

    /// Moves a tenant to another profile.
    pub async fn set_tenant_profile(
        &self,
        tenant: &str,
        profile: &str,
    ) -> Result<Tenant, HubError> {
        self.profile_named(profile)?;
        let mut t = self.hub.registry().tenant(tenant).await?;
        t.profile = profile.to_owned();
        store::write(&**self.hub.store(), |txn| records::put_tenant(txn, &t)).await?;
        self.hub.remember_tenant_profile(&t);
        Ok(t)
    }

    /// Usage of a tenant, with its profile and monthly-quota events.
    pub async fn tenant_usage(&self, tenant: &str) -> Result<UsageReport, HubError> {
        self.hub.registry().tenant(tenant).await?;
        let store = self.hub.store().clone();
        let usage = self
            .hub
            .inner
            .meter
            .usage(&*store, tenant, None, self.hub.now_ms())
            .await?;
        let events = metering::events(&*store, tenant).await?;
        let profile = self.hub.profile_of(tenant);
        Ok(UsageReport {
            usage,
            monthly: self
                .hub
                .inner
                .meter
                .monthly(&profile, tenant, self.hub.now_ms()),
            profile: (*profile).clone(),
            events,
        })
    }

    /// Usage of one device, including its publishing status over the last 24 hours.
    pub async fn device_usage(&self, pk: &str, dn: &str) -> Result<UsageReport, HubError> {
        let device = self.hub.registry().device(pk, dn).await?;
        let key = super::device_session_key(pk, dn);
        let usage = self
            .hub
            .inner
            .meter
            .usage(
                &**self.hub.store(),
                &device.tenant,
                Some(&key),
                self.hub.now_ms(),
            )
            .await?;
        Ok(UsageReport {
            usage,
            profile: (*self.hub.profile_of(&device.tenant)).clone(),
            events: Vec::new(),
            monthly: Vec::new(),
        })
    }
}

/// One counter per limit, indexed like [`LimitId::ALL`].
#[derive(Debug)]
pub struct LimitCounters([AtomicU64; LimitId::COUNT]);

impl Default for LimitCounters {
    fn default() -> Self {
        LimitCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::ops::Deref for LimitCounters {
    type Target = [AtomicU64; LimitId::COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
