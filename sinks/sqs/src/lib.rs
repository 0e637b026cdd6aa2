//! ironhub-sqs: the SQS sink. A consumer group on SQS is a standard queue created with the
//! group's retention (`MessageRetentionPeriod`); events go out with `SendMessageBatch`, ten per
//! request, and each entry's outcome is reported on its own: an entry SQS refuses for good (a
//! sender fault such as a message over 256 KiB) is rejected and counted, any other failure is
//! retried by the hub's forwarder from its outbox.
//!
//! Works with Amazon SQS and with any endpoint speaking its API (moto in the tests). The envelope
//! (body and message attributes) is documented in docs/protocols/sqs.md.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use base64::Engine;
use ironhub_core::data::event::{Destination, Event};
use ironhub_core::sink::{Sink, SinkCapabilities, SinkError};
use tokio::sync::Mutex;

/// The sink's name, as consumer groups refer to it.
pub const NAME: &str = "sqs";

/// How long an SQS queue named by a rule keeps messages (SQS's default, four days).
const RULE_QUEUE_RETENTION_MS: u64 = 4 * 86_400_000;

/// Most entries SQS takes in one `SendMessageBatch`.
const BATCH: usize = 10;

/// Most bytes (bodies and attributes) in one `SendMessageBatch`: SQS's classic 256 KiB, which
/// every endpoint accepts (AWS now takes 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// SQS keeps messages between one minute and 14 days.
const RETENTION_SECS: std::ops::RangeInclusive<u64> = 60..=1_209_600;

/// Where and as whom to reach SQS.
#[derive(Debug, Clone, Default)]
pub struct SqsSettings {
    /// A custom endpoint (`http://127.0.0.1:4566`); None for AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// The region (`us-east-1`).
    pub region: String,
    /// Static credentials; None for the default chain (environment, profile, instance role).
    pub credentials: Option<(String, String)>,
}

/// Sends events to SQS queues.
pub struct SqsSink {
    client: Client,
    /// Queue URLs by name.
    urls: Mutex<HashMap<String, String>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(format!("{what}: {e}"))
}

impl SqsSink {
    /// A sink with `settings`; requests start on first use.
    pub async fn new(settings: &SqsSettings) -> SqsSink {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &settings.credentials {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "config"));
        }
        SqsSink {
            client: Client::new(&loader.load().await),
            urls: Mutex::new(HashMap::new()),
        }
    }

    /// The queue's URL, creating the queue with the destination's retention if needed
    /// (CreateQueue returns the existing queue when its attributes match).
    async fn queue_url(&self, destination: &Destination) -> Result<String, SinkError> {
        if let Some(url) = self.urls.lock().await.get(&destination.queue) {
            return Ok(url.clone());
        }
        let retention =
            (destination.retention_ms / 1000).clamp(*RETENTION_SECS.start(), *RETENTION_SECS.end());
        let out = self
            .client
            .create_queue()
            .queue_name(&destination.queue)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                retention.to_string(),
            )
            .send()
            .await
            .map_err(|e| unavailable("create queue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let url = out
            .queue_url()
            .ok_or_else(|| SinkError::Unavailable("CreateQueue returned no URL".into()))?
            .to_owned();
        self.urls
            .lock()
            .await
            .insert(destination.queue.clone(), url.clone());
        Ok(url)
    }
}

fn text(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

fn number(value: u64) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(value.to_string())
        .build()
        .expect("data type is set")
}

/// Whether SQS accepts `s` as a message body: XML characters only.
fn sqs_text(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// Splits `events` into requests of at most [`BATCH`] entries and [`BATCH_BYTES`] bytes (an
/// event larger than that alone goes on its own, for SQS to accept or reject); returns the
/// entries with their index in `events`.
fn requests(events: &[&Event]) -> Vec<Vec<(usize, SendMessageBatchRequestEntry)>> {
    let mut out: Vec<Vec<(usize, SendMessageBatchRequestEntry)>> = Vec::new();
    let mut bytes = 0;
    for (i, event) in events.iter().enumerate() {
        let (entry, size) = entry(i, event);
        match out.last_mut() {
            Some(last) if last.len() < BATCH && bytes + size <= BATCH_BYTES => {
                bytes += size;
                last.push((i, entry));
            }
            _ => {
                bytes = size;
                out.push(vec![(i, entry)]);
            }
        }
    }
    out
}

/// One batch entry and its size as SQS counts it (body plus attribute names, types and values).
/// The payload is the body (base64 when it is not text SQS accepts, with the
/// `encoding` attribute saying so) and the envelope as message attributes.
fn entry(id: usize, event: &Event) -> (SendMessageBatchRequestEntry, usize) {
    let as_text = std::str::from_utf8(&event.payload)
        .ok()
        .filter(|s| sqs_text(s));
    let body = match as_text {
        Some(s) => s.to_owned(),
        None => base64::engine::general_purpose::STANDARD.encode(&event.payload),
    };
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(body)
        .message_attributes("type", text(event.kind.as_str()))
        .message_attributes("topic", text(&event.topic))
        .message_attributes("messageId", text(&event.id.to_string()))
        .message_attributes("generateTime", number(event.generated_at_ms))
        .message_attributes("productKey", text(&event.product_key))
        .message_attributes("deviceName", text(&event.device_name))
        .message_attributes("tenant", text(&event.tenant))
        .message_attributes("qos", number(event.qos as u64));
    if as_text.is_none() {
        builder = builder.message_attributes("encoding", text("base64"));
    }
    let entry = builder.build().expect("id and body are set");
    let attributes: usize = entry
        .message_attributes()
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.data_type().len() + v.string_value().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    let size = entry.message_body().len() + attributes;
    (entry, size)
}

#[async_trait]
impl Sink for SqsSink {
    fn name(&self) -> &str {
        NAME
    }

    /// Rules may name SQS queues of their own (`sqs_queue`), kept four days (SQS's default).
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            default_for_groups: false,
            rule_queue_retention_ms: Some(RULE_QUEUE_RETENTION_MS),
        }
    }

    /// `ih-{tenant}-{id}`: SQS names allow no dots and at most 80 characters.
    fn group_queue(&self, tenant: &str, id: &str) -> String {
        format!("ih-{tenant}-{id}")
    }

    async fn prepare(&self, destination: &Destination) -> Result<(), SinkError> {
        self.queue_url(destination).await.map(|_| ())
    }

    async fn send(&self, destination: &Destination, batch: &[&Event]) -> Result<(), SinkError> {
        let url = self.queue_url(destination).await?;
        let mut failed = Vec::new();
        let mut rejected = Vec::new();
        for (request_no, request) in requests(batch).into_iter().enumerate() {
            let indices: Vec<usize> = request.iter().map(|(i, _)| *i).collect();
            let entries = request.into_iter().map(|(_, e)| e).collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) if request_no == 0 => {
                    // Nothing went out: a transient outage as far as the hub is concerned.
                    self.urls.lock().await.remove(&destination.queue);
                    let e = aws_sdk_sqs::error::DisplayErrorContext(e);
                    return Err(unavailable("SendMessageBatch", e));
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "SendMessageBatch failed");
                    failed.extend(indices);
                    continue;
                }
            };
            for f in out.failed() {
                let Ok(i) = f.id().parse::<usize>() else {
                    continue;
                };
                if f.sender_fault() {
                    tracing::warn!(queue = %destination.queue, code = f.code(), reason = f.message().unwrap_or(""), "SQS rejected an event");
                    rejected.push(i);
                } else {
                    failed.push(i);
                }
            }
        }
        if failed.is_empty() && rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Partial { failed, rejected })
        }
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        self.client
            .list_queues()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ListQueues", aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &[u8]) -> Event {
        Event {
            id: 7,
            kind: ironhub_core::data::event::EventKind::Upstream,
            tenant: "t".into(),
            product_key: "pk".into(),
            device_name: "dn".into(),
            topic: "/pk/dn/user/x".into(),
            qos: ironhub_core::QoS::AtLeastOnce,
            generated_at_ms: 1,
            payload: payload.to_vec().into(),
        }
    }

    #[test]
    fn requests_hold_at_most_ten_entries_and_256_kib() {
        let small: Vec<Event> = (0..25).map(|_| event(b"{}")).collect();
        let refs: Vec<&Event> = small.iter().collect();
        let sizes: Vec<usize> = requests(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<Event> = (0..3).map(|_| event(&[b'x'; 100 * 1024])).collect();
        let refs: Vec<&Event> = big.iter().collect();
        let sizes: Vec<usize> = requests(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1], "two 100 KiB bodies fit, a third does not");
        let ids: Vec<usize> = requests(&refs).concat().iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    #[test]
    fn binary_payloads_go_as_base64_with_an_encoding_attribute() {
        let (e, _) = entry(0, &event(&[0, 159, 146, 150]));
        assert_eq!(e.message_body(), "AJ+Slg==");
        let attrs = e.message_attributes().unwrap();
        assert_eq!(attrs["encoding"].string_value(), Some("base64"));
        let (e, _) = entry(0, &event(b"{\"t\":1}"));
        assert_eq!(e.message_body(), "{\"t\":1}");
        assert!(!e.message_attributes().unwrap().contains_key("encoding"));
        assert_eq!(
            e.message_attributes().unwrap()["productKey"].string_value(),
            Some("pk")
        );
    }

    #[test]
    fn text_that_sqs_refuses_is_detected() {
        assert!(sqs_text("{\"t\":1}\n"));
        assert!(!sqs_text("a\u{0}b"));
        assert!(!sqs_text("\u{FFFF}"));
    }
}
