//! The publish pipeline: the admission checks (bounds, ACL, properties), limits and charges,
//! then routing.

use std::sync::atomic::Ordering;

use super::alink::DeviceRequest;
use super::{ClientIdentity, PublishRefusal, PublishRequest};
use crate::admission::{self, Stage};
use crate::data::event::{Event, EventKind};
use crate::data::message::{Message, Origin, QoS};
use crate::egress::Confirmation;
use crate::hub::Hub;
use crate::hub::limits::Charges;
use crate::hub::parsing::{DOWN_RAW_REPLY, RawFailure, UP_RAW};

/// Waits for what a deferred publish still waits for: Ok once the message is safely accepted.
pub(super) async fn confirmed(
    (delivered, confirmation): (usize, Option<Confirmation>),
) -> Result<usize, PublishRefusal> {
    if let Some(confirmation) = confirmation {
        confirmation
            .await
            .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
    }
    Ok(delivered)
}

impl Hub {
    /// Checks and accepts a publish of a client, connected or not (HTTP, CoAP): topic bounds,
    /// ACL, property bounds, limits, then routing. Ok means safely accepted.
    pub async fn publish_from(
        &self,
        identity: &ClientIdentity,
        req: PublishRequest,
    ) -> Result<usize, PublishRefusal> {
        confirmed(self.publish_deferred(identity, req).await?).await
    }

    /// As [`Hub::publish_from`], but a QoS 1 message that goes to consumer groups comes back
    /// with the confirmation to wait for before acknowledging it, instead of waiting here: a
    /// connection keeps reading while its earlier messages wait for their sinks, and
    /// acknowledges them in order.
    pub async fn publish_deferred(
        &self,
        identity: &ClientIdentity,
        req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        let charges = self.charges(identity);
        self.publish_charged(identity, &charges, req).await
    }

    /// [`Hub::publish_deferred`] with the charges a session keeps.
    pub(super) async fn publish_charged(
        &self,
        identity: &ClientIdentity,
        charges: &Charges,
        mut req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        let now = self.now_ms();
        let may = |access, topic: &str| self.may(identity, access, topic);
        admission::publish(&self.inner.config, &req.topic, &req.properties, may).inspect_err(
            |r| self.note_refusal(&identity.key, Stage::Publish, &r.cause(), &req.topic),
        )?;
        // A raw thing-model frame goes on as the Alink message its product's script makes of
        // it (limits, rules, history and consumer groups see that one).
        let mut raw_answer = false;
        if let Some((pk, dn)) = identity.device.as_ref()
            && let Some(answer) = raw_frame(&req.topic, pk, dn)
        {
            let who = (identity.tenant.as_str(), &*identity.key);
            match Box::pin(self.parse_raw(who, (pk, dn), answer, &req.payload)).await {
                Ok((topic, payload)) => {
                    (req.topic, req.payload) = (topic, payload);
                    raw_answer = !answer;
                }
                Err(RawFailure::Limited(limited)) => return Err(PublishRefusal::Limited(limited)),
                Err(failure) => {
                    // Not understood, but sent: metered and limited as it came.
                    self.admit_message(charges, req.qos != QoS::AtMostOnce, &req.payload, now)
                        .await
                        .map_err(|l| PublishRefusal::Limited(self.counted(l)))?;
                    let RawFailure::Answer((topic, payload)) = failure else {
                        return Ok((0, None));
                    };
                    let qos = req.qos.min(QoS::AtLeastOnce);
                    let reply = Message::from_hub(&identity.tenant, topic, payload, qos, now);
                    self.accept(reply)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                    return Ok((0, None));
                }
            }
        }
        self.admit_message(charges, req.qos != QoS::AtMostOnce, &req.payload, now)
            .await
            .map_err(|l| PublishRefusal::Limited(self.counted(l)))?;
        self.inner.stats.received[req.transport.index()][req.qos as usize]
            .fetch_add(1, Ordering::Relaxed);
        if identity.device.is_some() {
            self.inner
                .recent
                .record(&identity.key, &req.topic, &req.payload, req.qos, now);
        }
        // A request of the device to the hub on one of its own topics, handled after routing.
        let mut request = identity.device.as_ref().and_then(|(pk, dn)| {
            DeviceRequest::of(&req.topic, pk, dn).map(|kind| {
                let call = (kind, req.topic.clone(), req.payload.clone(), req.qos);
                (call, raw_answer)
            })
        });
        if let Some(answer) = request.take_if(|((kind, ..), _)| !kind.is_routed()) {
            let stored = Box::pin(self.answer_device_request(identity, answer, now)).await?;
            return Ok((0, stored));
        }
        let req_qos = req.qos;
        let msg = Message {
            tenant: identity.tenant.clone(),
            topic: req.topic,
            payload: req.payload,
            qos: req.qos,
            retain: req.retain,
            properties: req.properties,
            expires_at_ms: req.message_expiry_secs.map(|s| now + u64::from(s) * 1000),
            origin: Origin::Client(identity.key.clone()),
            received_at_ms: now,
        };
        // Rules and consumer groups see a parsed custom topic's JSON; subscribers, the bytes.
        let mut forwarded = msg.payload.clone();
        if let Some((pk, dn)) = identity.device.as_ref()
            && self.parses_topic(pk, dn, &msg.topic)
        {
            let who = (identity.tenant.as_str(), &*identity.key);
            forwarded = Box::pin(self.transform_payload(who, pk, &msg.topic, &forwarded)).await;
        }
        // Built only for products with consumer groups: most messages go nowhere else.
        let upstream = identity.device.as_ref().and_then(|(pk, dn)| {
            let destinations = self.group_destinations(pk)?;
            Some((
                destinations,
                Event {
                    id: self.next_seq(),
                    kind: EventKind::Upstream,
                    tenant: msg.tenant.clone(),
                    product_key: pk.clone(),
                    device_name: dn.clone(),
                    topic: msg.topic.clone(),
                    qos: msg.qos,
                    generated_at_ms: now,
                    payload: forwarded.clone(),
                },
            ))
        });
        let rules = self.tenant_rules(&identity.tenant);
        let rule_input = rules
            .as_ref()
            .map(|_| (msg.topic.clone(), forwarded, msg.qos));
        let delivered = self
            .accept(msg)
            .await
            .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
        let mut rules_kept = None;
        if let (Some(rules), Some((topic, payload, qos))) = (rules, rule_input) {
            let input = crate::hub::rules::RuleInput {
                tenant: &identity.tenant,
                topic: &topic,
                payload: &payload,
                qos,
                device: identity.device.as_ref(),
                received_at_ms: now,
            };
            rules_kept = Box::pin(self.run_rules(&rules, &input)).await;
        }
        let wait = req_qos != QoS::AtMostOnce;
        let mut confirmation = None;
        if let Some((destinations, event)) = upstream {
            let enqueued = Box::pin(self.inner.forwarder.enqueue(&destinations, event, wait))
                .await
                .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
            confirmation = wait.then_some(enqueued);
        }
        // The rules' outputs are safe (sent, or stored for their retries) before a QoS 1/2
        // publisher is acknowledged; a QoS 0 one does not wait for them.
        if let Some(kept) = rules_kept {
            if !wait {
                tokio::spawn(async move {
                    let _ = kept.await;
                });
            } else {
                confirmation = Some(match confirmation {
                    Some(upstream) => Box::pin(async move {
                        upstream.await?;
                        kept.await
                    }),
                    None => kept,
                });
            }
        }
        if let Some(request) = request {
            // A QoS 1 post's values are stored before it is acknowledged, as its events are.
            let stored = Box::pin(self.answer_device_request(identity, request, now)).await?;
            if let Some(stored) = stored {
                confirmation = Some(match confirmation {
                    Some(earlier) => Box::pin(async move {
                        earlier.await?;
                        stored.await
                    }),
                    None => stored,
                });
            }
        }
        Ok((delivered, confirmation))
    }
}

/// Whether `topic` carries a raw thing-model frame of device `pk`/`dn`: `Some(false)` on
/// `up_raw` (a post, answered on `up_raw_reply`), `Some(true)` on `down_raw_reply` (an answer).
fn raw_frame(topic: &str, pk: &str, dn: &str) -> Option<bool> {
    match crate::topic::after_device(topic, "/sys/", pk, dn)? {
        UP_RAW => Some(false),
        DOWN_RAW_REPLY => Some(true),
        _ => None,
    }
}
