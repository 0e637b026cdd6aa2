//! A tenant's month against its monthly quotas (seed 001): the month's usage each node keeps,
//! loaded from the store's counters, the 80 % warning and 100 % disabled events, rule executions
//! charged against their quota, and the usage dashboard's view of it.

use std::sync::Mutex;

use serde::Serialize;

use crate::limits::quota::{MonthlyQuota, WARNING_PERCENT};
use crate::limits::{LimitId, Limited, Profile};
use crate::store::{Store, StoreError};

use super::{
    Counts, DATA_POINTS, DISCARDED, JS_EXECUTIONS, MESSAGES, Meter, RULE_EXECUTIONS,
    STORED_POINT_DAYS, UsageEvent,
};

/// What is charged to a monthly quota besides messages and data points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// A rule's output for one matched message (L-072).
    RuleExecution,
    /// A data parsing script's entry point (L-097).
    ScriptExecution,
    /// A stored history value times the days it is kept (L-106).
    StoredPointDays,
}

/// Where a tenant stands against one monthly limit (seed 001's API usage dashboard).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthlyUsage {
    /// The limit id (L-070, L-071, L-072, L-097, L-106).
    pub limit: String,
    /// What is counted: `transport_messages`, `transport_data_points`, `rule_executions`,
    /// `js_executions`, `stored_point_days`.
    pub component: &'static str,
    /// Admitted this month.
    pub used: u64,
    /// The profile's monthly limit (0 = unlimited).
    pub limit_value: u64,
    /// `ok`, `warning` (80 % reached) or `disabled` (100 % reached: the component is off for the
    /// tenant until the month ends).
    pub state: &'static str,
}

/// Messages a count admitted: all sent minus those a limit discarded.
fn admitted_messages(counts: &Counts) -> u64 {
    let discarded: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with(DISCARDED))
        .map(|(_, n)| n)
        .sum();
    counts
        .get(MESSAGES)
        .copied()
        .unwrap_or(0)
        .saturating_sub(discarded)
}

#[derive(Default)]
struct TenantMonth {
    messages: Option<MonthlyQuota>,
    points: Option<MonthlyQuota>,
    rules: Option<MonthlyQuota>,
    scripts: Option<MonthlyQuota>,
    stored: Option<MonthlyQuota>,
}

/// A tenant's monthly quotas, shared by the meter and the sessions of the tenant's devices (which
/// hold it so that a message locks only its tenant's quotas, with no lookup).
#[derive(Default)]
pub struct MonthHandle(Mutex<TenantMonth>);

impl MonthHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, TenantMonth> {
        self.0.lock().expect("month lock")
    }

    /// Whether the tenant's transport is disabled by a monthly quota now.
    pub fn transport_disabled(&self, profile: &Profile, now_ms: u64) -> Option<LimitId> {
        let mut m = self.lock();
        let messages = m
            .messages
            .get_or_insert_with(|| MonthlyQuota::new(now_ms, 0));
        if messages.exhausted(profile.monthly.transport_messages, now_ms) {
            return Some(LimitId::MonthlyMessages);
        }
        let points = m.points.get_or_insert_with(|| MonthlyQuota::new(now_ms, 0));
        points
            .exhausted(profile.monthly.transport_data_points, now_ms)
            .then_some(LimitId::MonthlyDataPoints)
    }

    /// Charges an admitted message to the tenant's monthly quotas; returns the events it raised.
    pub fn charge(&self, profile: &Profile, points: u64, now_ms: u64) -> Vec<UsageEvent> {
        let mut m = self.lock();
        let m = &mut *m;
        let mut events = Vec::new();
        let charges = [
            (
                &mut m.messages,
                LimitId::MonthlyMessages,
                profile.monthly.transport_messages,
                1,
            ),
            (
                &mut m.points,
                LimitId::MonthlyDataPoints,
                profile.monthly.transport_data_points,
                points,
            ),
        ];
        for (quota, limit, value, n) in charges {
            let quota = quota.get_or_insert_with(|| MonthlyQuota::new(now_ms, 0));
            let crossed = quota.charge(value, n, now_ms);
            let kinds = [
                ("warning", crossed.warning),
                ("disabled", crossed.exhausted),
            ];
            for (kind, _) in kinds.into_iter().filter(|(_, hit)| *hit) {
                events.push(UsageEvent {
                    at_ms: now_ms,
                    limit: limit.id().to_owned(),
                    kind: kind.to_owned(),
                    used: quota.used(),
                    limit_value: value,
                });
            }
        }
        events
    }
}

impl Meter {
    /// Loads a tenant's monthly usage from the store and this node's pending counters: at start
    /// (quotas survive restarts) and, in a cluster, again and again (all nodes add to the store).
    /// Usage only grows, and the month's warnings already raised stay raised.
    pub async fn load_month(
        &self,
        store: &dyn Store,
        tenant: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let usage = self.usage(store, tenant, None, now_ms).await?;
        let get = |m: &str| usage.month.get(m).copied().unwrap_or(0);
        let month = self.month(tenant);
        let mut guard = month.lock();
        let m = &mut *guard;
        let quotas = [
            (&mut m.messages, admitted_messages(&usage.month)),
            (&mut m.points, get(DATA_POINTS)),
            (&mut m.rules, get(RULE_EXECUTIONS)),
            (&mut m.scripts, get(JS_EXECUTIONS)),
            (&mut m.stored, get(STORED_POINT_DAYS)),
        ];
        for (quota, used) in quotas {
            quota
                .get_or_insert_with(|| MonthlyQuota::new(now_ms, 0))
                .set_used(used, now_ms);
        }
        Ok(())
    }

    /// Tenants whose monthly usage is tracked here.
    pub fn tenants(&self) -> Vec<String> {
        self.months
            .lock()
            .expect("meter lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The tenant's standing against each monthly limit of `profile`.
    pub fn monthly(&self, profile: &Profile, tenant: &str, now_ms: u64) -> Vec<MonthlyUsage> {
        let month = self.month(tenant);
        let mut guard = month.lock();
        let m = &mut *guard;
        let quotas = [
            (
                &mut m.messages,
                LimitId::MonthlyMessages,
                "transport_messages",
                profile.monthly.transport_messages,
            ),
            (
                &mut m.points,
                LimitId::MonthlyDataPoints,
                "transport_data_points",
                profile.monthly.transport_data_points,
            ),
            (
                &mut m.rules,
                LimitId::MonthlyRuleExecutions,
                "rule_executions",
                profile.monthly.rule_executions,
            ),
            (
                &mut m.scripts,
                LimitId::MonthlyJsExecutions,
                "js_executions",
                profile.monthly.js_executions,
            ),
            (
                &mut m.stored,
                LimitId::MonthlyStoredPointDays,
                "stored_point_days",
                profile.monthly.stored_point_days,
            ),
        ];
        quotas
            .into_iter()
            .map(|(quota, limit, component, value)| {
                let quota = quota.get_or_insert_with(|| MonthlyQuota::new(now_ms, 0));
                let state = if quota.exhausted(value, now_ms) {
                    "disabled"
                } else if value > 0
                    && quota.used().saturating_mul(100) >= value.saturating_mul(WARNING_PERCENT)
                {
                    "warning"
                } else {
                    "ok"
                };
                MonthlyUsage {
                    limit: limit.id().to_owned(),
                    component,
                    used: quota.used(),
                    limit_value: value,
                    state,
                }
            })
            .collect()
    }

    /// Charges `n` of `what` (a rule execution, L-072; a parsing script execution, L-097;
    /// stored point-days, L-106) to the tenant's month: Err when the monthly quota is exhausted
    /// (nothing charged), else the usage events it raised.
    pub fn charge_month(
        &self,
        profile: &Profile,
        tenant: &str,
        (what, n): (Charge, u64),
        now_ms: u64,
    ) -> Result<Vec<UsageEvent>, Limited> {
        let (limit, value, metric) = match what {
            Charge::RuleExecution => (
                LimitId::MonthlyRuleExecutions,
                profile.monthly.rule_executions,
                RULE_EXECUTIONS,
            ),
            Charge::ScriptExecution => (
                LimitId::MonthlyJsExecutions,
                profile.monthly.js_executions,
                JS_EXECUTIONS,
            ),
            Charge::StoredPointDays => (
                LimitId::MonthlyStoredPointDays,
                profile.monthly.stored_point_days,
                STORED_POINT_DAYS,
            ),
        };
        let crossed = {
            let month = self.month(tenant);
            let mut m = month.lock();
            let quota = match what {
                Charge::RuleExecution => &mut m.rules,
                Charge::ScriptExecution => &mut m.scripts,
                Charge::StoredPointDays => &mut m.stored,
            }
            .get_or_insert_with(|| MonthlyQuota::new(now_ms, 0));
            if quota.exhausted(value, now_ms) {
                return Err(Limited::new(limit));
            }
            let crossed = quota.charge(value, n, now_ms);
            [
                ("warning", crossed.warning),
                ("disabled", crossed.exhausted),
            ]
            .into_iter()
            .filter(|(_, hit)| *hit)
            .map(|(kind, _)| UsageEvent {
                at_ms: now_ms,
                limit: limit.id().to_owned(),
                kind: kind.to_owned(),
                used: quota.used(),
                limit_value: value,
            })
            .collect()
        };
        self.add(tenant, None, &[(metric, n)], now_ms);
        Ok(crossed)
    }
}
