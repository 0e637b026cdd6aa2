//! ironhub-amqp: the AMQP 0.9.1 sink. Each consumer group is a durable RabbitMQ queue, declared
//! with the group's retention (`x-message-ttl`) and size (`x-max-length`); events are published
//! persistent, mandatory and with publisher confirms, and a batch is reported sent only when the
//! broker confirmed every event. Reconnection is lazy: a failed batch drops the connection, and
//! the hub's forwarder retries with back-off (events wait in the store's outbox meanwhile).
//!
//! With the management API configured, each consumer group also gets its own RabbitMQ user that
//! may only read the group's queue, with at most N connections and channels (L-062).
//!
//! The envelope (properties and headers) is documented in docs/protocols/amqp.md.

use std::collections::HashSet;
use std::str::FromStr;

use async_trait::async_trait;
use ironhub_core::data::event::{Destination, Event, EventKind};
use ironhub_core::sink::{ConsumerCredentials, Sink, SinkCapabilities, SinkError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

mod management;

/// The sink's name, as consumer groups refer to it.
pub const NAME: &str = "amqp";

/// Publishes events to RabbitMQ (or any AMQP 0.9.1 broker).
pub struct AmqpSink {
    uri: String,
    link: Mutex<Option<Link>>,
    management: Option<management::Management>,
}

/// An open connection with a confirm-mode channel and the queues declared on it.
struct Link {
    connection: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(format!("{what}: {e}"))
}

impl AmqpSink {
    /// A sink for the broker at `uri` (`amqp://user:pass@host:port/vhost`, or `amqps://`). It
    /// connects on first use.
    pub fn new(uri: impl Into<String>) -> AmqpSink {
        AmqpSink {
            uri: uri.into(),
            link: Mutex::new(None),
            management: None,
        }
    }

    /// Uses RabbitMQ's management HTTP API at `base` (`http://host:15672`), with the AMQP URL's
    /// user (who needs the `administrator` tag), to give each consumer group its own user.
    pub fn with_management(mut self, base: &str) -> Result<AmqpSink, String> {
        let uri = lapin::uri::AMQPUri::from_str(&self.uri).map_err(|e| format!("amqp url: {e}"))?;
        let user = &uri.authority.userinfo;
        self.management = Some(management::Management::new(
            base,
            &user.username,
            &user.password,
            &uri.vhost,
        ));
        Ok(self)
    }

    async fn connect(&self) -> Result<Link, SinkError> {
        let props = ConnectionProperties::default().with_connection_name("ironhub".into());
        let connection = Connection::connect(&self.uri, props)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable("open channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable("enable confirms", e))?;
        tracing::info!("connected to the AMQP broker");
        Ok(Link {
            connection,
            channel,
            declared: HashSet::new(),
        })
    }

    /// The open link, reconnecting if the last one broke.
    async fn link<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a mut Link, SinkError> {
        if !slot.as_ref().is_some_and(Link::usable) {
            *slot = None;
            *slot = Some(self.connect().await?);
        }
        Ok(slot.as_mut().expect("link just set"))
    }

    async fn declare(link: &mut Link, destination: &Destination) -> Result<(), SinkError> {
        if link.declared.contains(&destination.queue) {
            return Ok(());
        }
        link.channel
            .queue_declare(
                destination.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_arguments(destination),
            )
            .await
            .map_err(|e| unavailable("declare queue", e))?;
        link.declared.insert(destination.queue.clone());
        Ok(())
    }

    async fn publish(
        link: &mut Link,
        destination: &Destination,
        batch: &[&Event],
    ) -> Result<(), SinkError> {
        Self::declare(link, destination).await?;
        let mut confirms = Vec::with_capacity(batch.len());
        for event in batch {
            let confirm = link
                .channel
                .basic_publish(
                    ShortString::from(""),
                    destination.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &event.payload,
                    properties(event),
                )
                .await
                .map_err(|e| unavailable("publish", e))?;
            confirms.push(confirm);
        }
        let mut failed = Vec::new();
        for (i, confirm) in confirms.into_iter().enumerate() {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => {}
                Ok(Confirmation::Ack(Some(_))) => {
                    // Returned unroutable: the queue was deleted behind our back; declare again.
                    link.declared.remove(&destination.queue);
                    failed.push(i);
                }
                Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => failed.push(i),
                Err(e) => return Err(unavailable("confirm", e)),
            }
        }
        match failed.len() {
            0 => Ok(()),
            n if n == batch.len() => Err(SinkError::Unavailable(
                "the broker refused every event of the batch".into(),
            )),
            _ => Err(SinkError::Partial {
                failed,
                rejected: Vec::new(),
            }),
        }
    }
}

/// Queue arguments: the consumer group's retention and size (docs/limits.md L-063).
fn queue_arguments(destination: &Destination) -> FieldTable {
    let mut args = FieldTable::default();
    if destination.retention_ms > 0 {
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(destination.retention_ms as i64),
        );
    }
    if destination.max_messages > 0 {
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(destination.max_messages as i64),
        );
    }
    args
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The envelope: AMQP properties plus headers named as Alibaba's server-side subscription names
/// them (`topic`, `messageId`, `generateTime`), so existing consumers read them unchanged.
fn properties(event: &Event) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("topic".into(), text(&event.topic));
    headers.insert("messageId".into(), text(&event.id.to_string()));
    headers.insert(
        "generateTime".into(),
        AMQPValue::LongLongInt(event.generated_at_ms as i64),
    );
    headers.insert("productKey".into(), text(&event.product_key));
    headers.insert("deviceName".into(), text(&event.device_name));
    headers.insert("tenant".into(), text(&event.tenant));
    headers.insert("qos".into(), AMQPValue::LongLongInt(event.qos as i64));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(event.id.to_string().into())
        .with_timestamp(event.generated_at_ms / 1000)
        .with_type(event.kind.as_str().into())
        .with_app_id("ironhub".into())
        .with_headers(headers);
    match event.kind {
        EventKind::Upstream => props,
        EventKind::Status
        | EventKind::Lifecycle
        | EventKind::Topology
        | EventKind::Rule
        | EventKind::RuleError
        | EventKind::Ota => props.with_content_type("application/json".into()),
    }
}

#[async_trait]
impl Sink for AmqpSink {
    fn name(&self) -> &str {
        NAME
    }

    /// Consumer groups live on RabbitMQ unless created on another sink.
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            default_for_groups: true,
            rule_queue_retention_ms: None,
        }
    }

    async fn send(&self, destination: &Destination, batch: &[&Event]) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        let link = self.link(&mut slot).await?;
        let outcome = Self::publish(link, destination, batch).await;
        if matches!(outcome, Err(SinkError::Unavailable(_))) {
            // Start from a fresh connection next time: the channel may be closed by the broker.
            *slot = None;
        }
        outcome
    }

    async fn prepare(&self, destination: &Destination) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        let link = self.link(&mut slot).await?;
        let outcome = Self::declare(link, destination).await;
        if outcome.is_err() {
            *slot = None;
        }
        outcome
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        self.link(&mut slot).await.map(|_| ())
    }

    /// A user named after the queue, read-only on it, at most `max_consumers` connections and
    /// channels.
    async fn grant_consumer(
        &self,
        destination: &Destination,
        max_consumers: u64,
    ) -> Result<Option<ConsumerCredentials>, SinkError> {
        let Some(management) = &self.management else {
            return Ok(None);
        };
        let username = destination.queue.clone();
        let password = ironhub_core::data::model::random_token(24);
        management
            .create_consumer(&username, &password, &destination.queue, max_consumers)
            .await?;
        Ok(Some(ConsumerCredentials { username, password }))
    }

    async fn revoke_consumer(&self, destination: &Destination) -> Result<(), SinkError> {
        match &self.management {
            Some(management) => management.delete_consumer(&destination.queue).await,
            None => Ok(()),
        }
    }
}
