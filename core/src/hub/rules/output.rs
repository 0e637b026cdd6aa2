//! A rule output's way to its destination: the first attempt (a queue's through its sink's
//! worker in the egress engine, a topic's at once), the durable retries that follow a failure,
//! and the report to the rule's error destination when they are exhausted.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::ActiveRule;
use crate::data::event::{Destination, Event, EventKind};
use crate::data::message::{Message, QoS};
use crate::egress::retry::Attempts;
use crate::egress::{Confirmation, ForwardError, Kept};
use crate::hub::Hub;
use crate::rules::{RETRY_DELAYS_SECS, RuleDestination, render_topic};

/// How long one attempt at a destination may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

impl Hub {
    /// The first attempt at a destination: a queue's through its sink's worker (the future
    /// says when it is safe), a topic's here and now; a failure goes to the retries.
    pub(super) async fn send_rule_output(
        &self,
        rule: &Arc<ActiveRule>,
        out: RuleOutput,
    ) -> Option<Confirmation> {
        let attempted = match self.admit_rule_write(&out.tenant) {
            Err(error) => Err(error),
            Ok(()) => match self.resolve(&out.tenant, &out.destination) {
                Ok(Some(destination)) => {
                    return Some(self.enqueue_rule_output(rule, out, destination).await);
                }
                Ok(None) => self.publish_rule_output(&out).await,
                // The destination went away (a deleted group): its retries will say so.
                Err(e) => Err(e.to_string()),
            },
        };
        match attempted {
            Ok(()) => {
                rule.counters.forwarded.fetch_add(1, Relaxed);
            }
            Err(error) => self.retry_rule_output(rule, &out, &error).await,
        }
        None
    }

    /// Hands an output to its queue's sink worker; the future resolves once it is confirmed
    /// (counted as forwarded) or stored for its retries.
    async fn enqueue_rule_output(
        &self,
        rule: &Arc<ActiveRule>,
        out: RuleOutput,
        destination: Destination,
    ) -> Confirmation {
        let event = out.event(out.message_id, EventKind::Rule, out.output.clone());
        let body = serde_json::to_vec(&out).expect("rule outputs serialize");
        let retries = self.inner.rule_retries.clone();
        let enqueued = self
            .inner
            .forwarder
            .enqueue_retrying(Arc::new(destination), event, retries, body)
            .await;
        let (hub, rule) = (self.clone(), rule.clone());
        Box::pin(async move {
            let kept = match enqueued {
                Ok(kept) => kept.await.map_err(|_| "neither sent nor stored".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            match kept {
                Ok(Kept::Confirmed) => {
                    rule.counters.forwarded.fetch_add(1, Relaxed);
                    Ok(())
                }
                // Its retries take it from here.
                Ok(Kept::Stored) => Ok(()),
                Err(error) => {
                    hub.fail_rule_output(&rule, &out, &error).await;
                    Err(ForwardError::NotKept(error))
                }
            }
        })
    }

    /// Keeps an output whose first attempt failed for its retries; if even that fails, it is
    /// failed and reported now.
    async fn retry_rule_output(&self, rule: &ActiveRule, out: &RuleOutput, error: &str) {
        let body = serde_json::to_vec(out).expect("rule outputs serialize");
        if let Err(e) = self.inner.rule_retries.schedule(body).await {
            tracing::error!(rule = %out.rule_id, error = %e, "could not store a rule delivery for its retries");
            self.fail_rule_output(rule, out, error).await;
        }
    }

    /// An output that could not even be kept for its retries: counted and reported at once.
    async fn fail_rule_output(&self, rule: &ActiveRule, out: &RuleOutput, error: &str) {
        rule.counters.failed.fetch_add(1, Relaxed);
        self.report_rule_failure(rule, out, error, 1).await;
    }

    /// The active rule `id` of `tenant`, if it is still enabled.
    pub(super) fn active_rule(&self, tenant: &str, id: &str) -> Option<Arc<ActiveRule>> {
        self.tenant_rules(tenant)?
            .iter()
            .find(|r| r.rule.id == id)
            .cloned()
    }

    async fn send_once(&self, destination: &Destination, event: &Event) -> Result<(), String> {
        let sink = self
            .inner
            .forwarder
            .sink(&destination.sink)
            .ok_or_else(|| format!("sink {} is not configured", destination.sink))?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, sink.send(destination, &[event])).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Sends a failure report to the rule's error destination (if it has one): a JSON document
    /// naming the rule, the message, the destination and the error.
    async fn report_rule_failure(
        &self,
        rule: &ActiveRule,
        d: &RuleOutput,
        error: &str,
        attempts: usize,
    ) {
        let rule = &rule.rule;
        let Some(error_destination) = &rule.error_destination else {
            tracing::warn!(rule = %rule.id, error, "rule delivery failed; no error destination");
            return;
        };
        let output: Value = serde_json::from_slice(&d.output).unwrap_or(Value::Null);
        let report = json!({
            "ruleId": rule.id, "ruleName": rule.name, "topic": d.topic,
            "productKey": d.product_key, "deviceName": d.device_name,
            "messageId": d.message_id.to_string(), "destination": d.destination, "error": error,
            "attempts": attempts, "payload": output,
        });
        let payload = Bytes::from(report.to_string());
        let outcome = match self.resolve(&rule.tenant, error_destination) {
            Ok(Some(destination)) => {
                let event = d.event(self.next_seq(), EventKind::RuleError, payload);
                self.inner
                    .forwarder
                    .forward(&[Arc::new(destination)], event, true)
                    .await
                    .map_err(|e| e.to_string())
            }
            Ok(None) => {
                let RuleDestination::Topic { topic: t } = error_destination else {
                    return;
                };
                let topic = render_topic(t, &d.product_key, &d.device_name);
                let msg = Message::from_hub(
                    &rule.tenant,
                    topic,
                    payload,
                    QoS::AtLeastOnce,
                    self.now_ms(),
                );
                self.accept(msg)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::error!(rule = %rule.id, error = %e, "could not report a rule failure");
        }
    }
}

/// One rule output on its way to one destination: what a stored retry holds (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RuleOutput {
    pub(super) rule_id: String,
    pub(super) destination: RuleDestination,
    pub(super) tenant: String,
    pub(super) topic: String,
    pub(super) product_key: String,
    pub(super) device_name: String,
    pub(super) message_id: u64,
    pub(super) qos: QoS,
    pub(super) received_at_ms: u64,
    /// The rule's SELECT applied to the message: JSON text, shared by the outputs to each
    /// destination, and stored as a string.
    #[serde(with = "json_text")]
    pub(super) output: Bytes,
}

/// A rule output's JSON text as a JSON string in a stored retry (a `Bytes` would be an array of
/// numbers).
mod json_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer, ser::Error as _};

    pub(super) fn serialize<S: Serializer>(text: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(text).map_err(S::Error::custom)?)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        String::deserialize(d).map(Bytes::from)
    }
}

impl RuleOutput {
    fn event(&self, id: u64, kind: EventKind, payload: Bytes) -> Event {
        Event {
            id,
            kind,
            tenant: self.tenant.clone(),
            product_key: self.product_key.clone(),
            device_name: self.device_name.clone(),
            topic: self.topic.clone(),
            qos: self.qos,
            generated_at_ms: self.received_at_ms,
            payload,
        }
    }
}

impl Hub {
    /// A retry's write to the destination, within the tenant's write rate (L-052).
    async fn attempt_rule_output(&self, out: &RuleOutput) -> Result<(), String> {
        self.admit_rule_write(&out.tenant)?;
        match self.resolve(&out.tenant, &out.destination) {
            Ok(Some(destination)) => {
                let event = out.event(out.message_id, EventKind::Rule, out.output.clone());
                self.send_once(&destination, &event).await
            }
            Ok(None) => self.publish_rule_output(out).await,
            // The destination went away (a deleted group).
            Err(e) => Err(e.to_string()),
        }
    }

    /// One write of the tenant's rules to a destination, within its rate (L-052).
    fn admit_rule_write(&self, tenant: &str) -> Result<(), String> {
        let profile = self.profile_of(tenant);
        self.inner
            .limiter
            .rule_write(&profile, tenant, self.now_ms())
            .map_err(|limited| self.counted(limited).to_string())
    }

    /// Publishes an output to its topic destination.
    async fn publish_rule_output(&self, out: &RuleOutput) -> Result<(), String> {
        let RuleDestination::Topic { topic: t } = &out.destination else {
            return Err("not a topic".into());
        };
        let topic = render_topic(t, &out.product_key, &out.device_name);
        let qos = out.qos.min(QoS::AtLeastOnce);
        let msg = Message::from_hub(&out.tenant, topic, out.output.clone(), qos, self.now_ms());
        self.accept(msg)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The rules' side of the egress engine's retries: attempts a stored rule output again, and
/// reports it to the rule's error destination when the last attempt failed.
pub(crate) struct RuleAttempts(pub(crate) Hub);

#[async_trait::async_trait]
impl Attempts for RuleAttempts {
    async fn attempt(&self, body: &[u8]) -> Result<(), String> {
        let Some((rule, out)) = self.stored(body) else {
            return Ok(());
        };
        self.0.attempt_rule_output(&out).await?;
        rule.counters.forwarded.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn exhausted(&self, body: &[u8], error: &str) {
        let Some((rule, out)) = self.stored(body) else {
            return;
        };
        rule.counters.failed.fetch_add(1, Relaxed);
        let attempts = RETRY_DELAYS_SECS.len() + 1;
        self.0
            .report_rule_failure(&rule, &out, error, attempts)
            .await;
    }
}

impl RuleAttempts {
    /// A stored output and its rule; None (the retry is dropped) when it no longer parses or
    /// the rule was deleted or disabled meanwhile.
    fn stored(&self, body: &[u8]) -> Option<(Arc<ActiveRule>, RuleOutput)> {
        let Ok(out) = serde_json::from_slice::<RuleOutput>(body) else {
            tracing::error!("a stored rule delivery no longer parses; dropped");
            return None;
        };
        let Some(rule) = self.0.active_rule(&out.tenant, &out.rule_id) else {
            tracing::debug!(rule = %out.rule_id, "rule deleted or disabled: its retry is dropped");
            return None;
        };
        Some((rule, out))
    }
}
