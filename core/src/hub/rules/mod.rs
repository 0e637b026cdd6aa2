//! Rules as the hub manages and runs them: stored per tenant, compiled once, evaluated on every
//! message a client publishes in the tenant, their outputs delivered with retries.

mod output;

pub(crate) use output::RuleAttempts;
use output::RuleOutput;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use serde_json::Value;

use super::{Hub, HubError};
use crate::data::event::Destination;
use crate::data::message::QoS;
use crate::data::model;
use crate::egress::Confirmation;
use crate::limits::LimitId;
use crate::rules::{
    Context, Query, Rule, RuleCounters, RuleCountersSnapshot, RuleDestination, render_topic,
};
use crate::store::{records, transact};
use crate::topic;

/// A rule ready to run.
pub(crate) struct ActiveRule {
    rule: Rule,
    query: Query,
    counters: Arc<RuleCounters>,
}

/// The enabled rules of each tenant, and every rule's counters.
pub(crate) struct RuleTable {
    /// Looked up for every message.
    by_tenant: std::sync::RwLock<crate::FastMap<String, Arc<[Arc<ActiveRule>]>>>,
    counters: std::sync::Mutex<HashMap<String, Arc<RuleCounters>>>,
}

impl RuleTable {
    pub(crate) fn new() -> RuleTable {
        RuleTable {
            by_tenant: std::sync::RwLock::default(),
            counters: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn counters(&self, id: &str) -> Arc<RuleCounters> {
        let mut map = self.counters.lock().expect("rule counters lock");
        map.entry(id.to_owned()).or_default().clone()
    }
}

/// A rule with what it did, as the API shows it.
#[derive(schemars::JsonSchema, Debug, Clone, serde::Serialize)]
pub struct RuleView {
    /// The rule.
    #[serde(flatten)]
    pub rule: Rule,
    /// Its counters since the hub started.
    pub counters: RuleCountersSnapshot,
}

/// The fields of a rule a client sets.
#[derive(schemars::JsonSchema, Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Display name.
    #[schemars(length(min = 1, max = 64), pattern(model::DISPLAY_NAME_PATTERN))]
    pub name: String,
    /// The statement.
    pub sql: String,
    /// Destinations (1 to the profile's limit, L-050; 10 by default).
    #[schemars(length(min = 1))]
    pub destinations: Vec<RuleDestination>,
    /// Where failures are reported.
    #[serde(default)]
    pub error_destination: Option<RuleDestination>,
    /// Whether it runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A message as rules see it.
pub(crate) struct RuleInput<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a Bytes,
    pub(crate) qos: QoS,
    pub(crate) device: Option<&'a (String, String)>,
    pub(crate) received_at_ms: u64,
}

impl Hub {
    pub(crate) async fn load_rules(&self) -> Result<(), HubError> {
        let rules = transact(&**self.store(), |t| {
            Box::pin(async move { records::list_rules(t, None).await })
        })
        .await?;
        {
            // Counters of rules deleted elsewhere (another node) go.
            let ids: std::collections::HashSet<&str> =
                rules.iter().map(|r| r.id.as_str()).collect();
            self.inner
                .rules
                .counters
                .lock()
                .expect("rule counters lock")
                .retain(|id, _| ids.contains(id.as_str()));
        }
        let mut by_tenant: HashMap<String, Vec<Arc<ActiveRule>>> = HashMap::new();
        for rule in rules.into_iter().filter(|r| r.enabled) {
            let Ok(query) = Query::parse(&rule.sql) else {
                tracing::error!(rule = %rule.id, "stored rule no longer parses; skipped");
                continue;
            };
            let counters = self.inner.rules.counters(&rule.id);
            by_tenant
                .entry(rule.tenant.clone())
                .or_default()
                .push(Arc::new(ActiveRule {
                    rule,
                    query,
                    counters,
                }));
        }
        let by_tenant = by_tenant
            .into_iter()
            .map(|(t, r)| (t, Arc::from(r)))
            .collect();
        *self.inner.rules.by_tenant.write().expect("rules lock") = by_tenant;
        Ok(())
    }

    /// Where a destination sends: a queue of a sink, or None for a topic (checked here).
    fn resolve(&self, tenant: &str, d: &RuleDestination) -> Result<Option<Destination>, HubError> {
        match d {
            RuleDestination::ConsumerGroup { group } => match self.group_destination(tenant, group)
            {
                Some(d) => Ok(Some((*d).clone())),
                None => Err(HubError::NotFound {
                    what: "consumer group",
                    id: group.clone(),
                }),
            },
            RuleDestination::SinkQueue { sink: name, queue } => {
                let sink = self.inner.forwarder.sink(name).ok_or_else(|| {
                    HubError::Invalid(format!(
                        "{name}_queue destinations need the {name} sink: configure [{name}]"
                    ))
                })?;
                let Some(retention_ms) = sink.capabilities().rule_queue_retention_ms else {
                    return Err(HubError::Invalid(format!(
                        "the {name} sink takes no rule queues: use a consumer group on it"
                    )));
                };
                // Each tenant's queues under its own name, apart from its consumer groups'.
                if !queue.starts_with(&format!("{tenant}-"))
                    || queue.starts_with(&sink.group_queue(tenant, ""))
                {
                    return Err(HubError::Invalid(format!(
                        "a {name}_queue destination is named {tenant}-... (the tenant's id and a dash), not {queue}"
                    )));
                }
                Ok(Some(Destination {
                    sink: name.clone(),
                    queue: queue.clone(),
                    retention_ms,
                    max_messages: 0,
                }))
            }
            RuleDestination::Topic { topic: t } => {
                topic::validate_name(&render_topic(t, "pk", "dn"))
                    .map_err(|e| HubError::Invalid(format!("destination topic {t}: {e}")))?;
                Ok(None)
            }
        }
    }

    /// The enabled rules of a tenant, if any.
    pub(crate) fn tenant_rules(&self, tenant: &str) -> Option<Arc<[Arc<ActiveRule>]>> {
        let map = self.inner.rules.by_tenant.read().expect("rules lock");
        map.get(tenant).cloned()
    }

    /// Runs `rules` on a message a client published (L-051 applies per matched message): an
    /// output to a queue goes out in its sink's next batch through the egress engine, and one the
    /// sink does not confirm is kept on the durable retry schedule; an output to a topic is
    /// published at once. The returned future resolves once every output is confirmed or stored
    /// (a QoS 1 publisher is acknowledged after it); None when there is nothing to wait for.
    pub(crate) async fn run_rules(
        &self,
        rules: &[Arc<ActiveRule>],
        m: &RuleInput<'_>,
    ) -> Option<Confirmation> {
        let matching: Vec<&Arc<ActiveRule>> = rules
            .iter()
            .filter(|r| topic::matches(&r.query.from, m.topic))
            .collect();
        if matching.is_empty() {
            return None;
        }
        let payload: Value = serde_json::from_slice(m.payload).unwrap_or(Value::Null);
        let (pk, dn) = m
            .device
            .map_or(("", ""), |(pk, dn)| (pk.as_str(), dn.as_str()));
        let cx = Context {
            payload: &payload,
            topic: m.topic,
            product_key: pk,
            device_name: dn,
            message_id: self.next_seq(),
            timestamp_ms: m.received_at_ms,
        };
        let profile = self.profile_of(m.tenant);
        let mut waits = Vec::new();
        for rule in matching {
            if !rule.query.matches(&cx) {
                continue;
            }
            rule.counters.matched.fetch_add(1, Relaxed);
            let now = self.now_ms();
            let admitted = self
                .inner
                .limiter
                .rule_message(&profile, m.tenant, now)
                .and_then(|()| {
                    self.inner.meter.charge_month(
                        &profile,
                        m.tenant,
                        (crate::metering::Charge::RuleExecution, 1),
                        now,
                    )
                });
            let events = match admitted {
                Ok(events) => events,
                Err(limited) => {
                    self.counted(limited);
                    rule.counters.throttled.fetch_add(1, Relaxed);
                    continue;
                }
            };
            for event in events {
                tracing::warn!(tenant = m.tenant, limit = %event.limit, kind = %event.kind, used = event.used, "monthly rule executions");
                if let Err(e) = crate::metering::save_event(&**self.store(), m.tenant, &event).await
                {
                    tracing::warn!(error = %e, "could not store a usage event");
                }
            }
            let output = Bytes::from(rule.query.select(&cx).to_string());
            for d in &rule.rule.destinations {
                let out = RuleOutput {
                    rule_id: rule.rule.id.clone(),
                    destination: d.clone(),
                    tenant: m.tenant.to_owned(),
                    topic: m.topic.to_owned(),
                    product_key: pk.to_owned(),
                    device_name: dn.to_owned(),
                    message_id: cx.message_id,
                    qos: m.qos,
                    received_at_ms: m.received_at_ms,
                    output: output.clone(),
                };
                waits.extend(Box::pin(self.send_rule_output(rule, out)).await);
            }
        }
        if waits.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for wait in waits {
                wait.await?;
            }
            Ok(())
        }))
    }
}

/// Rules (data forwarding): a tenant's SQL statements and their destinations.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Rules (data forwarding): a tenant's SQL statements and their destinations.
    pub fn rules(&self) -> Rules<'_> {
        Rules { hub: self }
    }
}

impl Rules<'_> {
    /// Creates a rule (L-005, L-050).
    pub async fn create(&self, tenant: &str, spec: RuleSpec) -> Result<RuleView, HubError> {
        self.hub.registry().tenant(tenant).await?;
        self.check_rule(tenant, &spec).await?;
        let rule = Rule {
            tenant: tenant.to_owned(),
            id: model::random_token(12),
            name: spec.name,
            sql: spec.sql,
            enabled: spec.enabled,
            destinations: spec.destinations,
            error_destination: spec.error_destination,
            created_at_ms: self.hub.now_ms(),
        };
        let max = self.hub.profile_of(tenant).forwarding.rules;
        let r = rule.clone();
        let created = transact(&**self.hub.store(), |t| {
            let r = r.clone();
            Box::pin(async move {
                let existing = records::list_rules(t, Some(&r.tenant)).await?;
                if max > 0 && existing.len() as u64 >= max {
                    return Ok(false);
                }
                records::put_rule(t, &r);
                Ok(true)
            })
        })
        .await?;
        if !created {
            return Err(self.hub.limited(
                LimitId::RulesPerTenant,
                format!("at most {max} rules per tenant"),
            ));
        }
        self.hub.load_rules().await?;
        Ok(self.rule_view(rule))
    }

    /// A tenant's rules with their counters.
    pub async fn list(&self, tenant: &str) -> Result<Vec<RuleView>, HubError> {
        self.hub.registry().tenant(tenant).await?;
        let tenant = tenant.to_owned();
        let rules = transact(&**self.hub.store(), |t| {
            let tenant = tenant.clone();
            Box::pin(async move { records::list_rules(t, Some(&tenant)).await })
        })
        .await?;
        Ok(rules.into_iter().map(|r| self.rule_view(r)).collect())
    }

    /// One rule with its counters.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<RuleView, HubError> {
        Ok(self.rule_view(self.rule_record(tenant, id).await?))
    }

    /// Replaces a rule's statement, destinations and state.
    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        spec: RuleSpec,
    ) -> Result<RuleView, HubError> {
        let mut rule = self.rule_record(tenant, id).await?;
        self.check_rule(tenant, &spec).await?;
        rule.name = spec.name;
        rule.sql = spec.sql;
        rule.enabled = spec.enabled;
        rule.destinations = spec.destinations;
        rule.error_destination = spec.error_destination;
        crate::store::write(&**self.hub.store(), |t| records::put_rule(t, &rule)).await?;
        self.hub.load_rules().await?;
        Ok(self.rule_view(rule))
    }

    /// Enables or disables a rule.
    pub async fn set_enabled(
        &self,
        tenant: &str,
        id: &str,
        enabled: bool,
    ) -> Result<RuleView, HubError> {
        let mut rule = self.rule_record(tenant, id).await?;
        rule.enabled = enabled;
        crate::store::write(&**self.hub.store(), |t| records::put_rule(t, &rule)).await?;
        self.hub.load_rules().await?;
        Ok(self.rule_view(rule))
    }

    /// Deletes a rule.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        self.rule_record(tenant, id).await?;
        crate::store::write(&**self.hub.store(), |t| records::delete_rule(t, tenant, id)).await?;
        self.hub
            .inner
            .rules
            .counters
            .lock()
            .expect("rule counters lock")
            .remove(id);
        self.hub.load_rules().await
    }

    /// Checks a spec: the SQL parses, 1 to 10 destinations (L-050), each usable by the tenant.
    async fn check_rule(&self, tenant: &str, spec: &RuleSpec) -> Result<(), HubError> {
        Query::parse(&spec.sql).map_err(|e| {
            if e.over_bound {
                self.hub.limited(LimitId::RuleSql, e.to_string())
            } else {
                HubError::Invalid(e.to_string())
            }
        })?;
        if !model::valid_display_name(&spec.name) {
            return Err(HubError::Invalid("name must be 1 to 64 characters".into()));
        }
        let max = self.hub.profile_of(tenant).forwarding.destinations_per_rule;
        if spec.destinations.is_empty() {
            return Err(HubError::Invalid(
                "a rule needs at least one destination".into(),
            ));
        }
        if max > 0 && spec.destinations.len() as u64 > max {
            return Err(self.hub.limited(
                LimitId::DestinationsPerRule,
                format!("at most {max} destinations per rule"),
            ));
        }
        for d in spec.destinations.iter().chain(&spec.error_destination) {
            self.hub.resolve(tenant, d)?;
        }
        Ok(())
    }

    fn rule_view(&self, rule: Rule) -> RuleView {
        let counters = self.hub.inner.rules.counters(&rule.id).snapshot();
        RuleView { rule, counters }
    }

    async fn rule_record(&self, tenant: &str, id: &str) -> Result<Rule, HubError> {
        let (tenant2, id2) = (tenant.to_owned(), id.to_owned());
        transact(&**self.hub.store(), |t| {
            let (tenant, id) = (tenant2.clone(), id2.clone());
            Box::pin(async move { records::get_rule(t, &tenant, &id).await })
        })
        .await?
        .ok_or_else(|| HubError::NotFound {
            what: "rule",
            id: id.to_owned(),
        })
    }
}
