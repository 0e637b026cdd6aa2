//! RabbitMQ for the tests: a private node started on demand (by `.ci/rabbitmq`, idempotent), and
//! a consumer written with lapin the way a business server would write it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, Consumer};
use serde_json::json;

use hyper::Method;

use crate::Deployment;

/// The node every AMQP test shares.
pub const SHARED_NODE: (&str, u16) = ("ironhub-test", 5673);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/rabbitmq")
}

/// Runs `.ci/rabbitmq <node> <port> <action>`.
pub fn rabbitmq_ctl(node: (&str, u16), action: &str) {
    let out = Command::new(script())
        .args([node.0, &node.1.to_string(), action])
        .output()
        .expect("run .ci/rabbitmq");
    assert!(
        out.status.success(),
        ".ci/rabbitmq {} {action} failed: {}{}",
        node.0,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes sure the node runs (starting it if needed) and returns its AMQP URL.
pub fn rabbitmq(node: (&str, u16)) -> String {
    rabbitmq_ctl(node, "start");
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", node.1)
}

/// The `[amqp]` section for a deployment using `node`, with the management API so that each
/// consumer group gets its own user.
pub fn config(node: (&str, u16)) -> String {
    let url = rabbitmq(node);
    format!(
        "[amqp]\nurl = \"{url}\"\nmanagement_url = \"http://127.0.0.1:{}\"\n",
        node.1 + 11000
    )
}

/// The AMQP URL of `node` for a user (a consumer group's credentials).
pub fn url_as(node: (&str, u16), user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", node.1)
}

/// Whether `user` may consume `queue` (opens a connection and a consumer, then closes them).
pub async fn try_consume(url: &str, queue: &str) -> Result<Connection, lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_consume(
            queue.into(),
            "probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(connection)
}

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The AMQP `type` property (upstream, status, lifecycle).
    pub kind: String,
    /// The `message_id` property.
    pub message_id: String,
    /// Headers, as strings.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
    /// Whether the broker redelivered it.
    pub redelivered: bool,
}

impl Received {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

fn header_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A consumer of one consumer group's queue, acknowledging what it receives.
pub struct GroupConsumer {
    _connection: Connection,
    consumer: Consumer,
}

impl GroupConsumer {
    /// Connects to `url` and consumes `queue`.
    pub async fn start(url: &str, queue: &str) -> GroupConsumer {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .basic_qos(500, BasicQosOptions::default())
            .await
            .expect("qos");
        let consumer = channel
            .basic_consume(
                queue.into(),
                "conformance".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume the group's queue");
        GroupConsumer {
            _connection: connection,
            consumer,
        }
    }

    /// The next message, or None if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        let delivery: Delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        let props = &delivery.properties;
        let headers = props
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), header_text(v)))
                    .collect()
            })
            .unwrap_or_default();
        Some(Received {
            kind: props
                .kind()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            message_id: props
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            headers,
            payload: delivery.data.clone(),
            redelivered: delivery.redelivered,
        })
    }

    /// Collects messages until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.next(quiet).await {
            out.push(m);
        }
        out
    }
}

/// A consumer group as its business server sees it: its queue and the AMQP URL with the
/// group's own credentials (shown once, at creation).
pub struct Group {
    /// Its queue.
    pub queue: String,
    /// The AMQP URL with its credentials.
    pub url: String,
}

/// Creates a consumer group on `node` and associates `products` with it.
pub async fn group(d: &Deployment, node: (&str, u16), tenant: &str, products: &[&str]) -> Group {
    let (s, g) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/consumer-groups"),
            Some(json!({ "name": "backend" })),
        )
        .await;
    assert_eq!(s, 201, "create group: {g}");
    let id = g["id"].as_str().expect("id");
    for pk in products {
        let path = format!("/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}");
        let (s, v) = d.api(Method::PUT, &path, None).await;
        assert_eq!(s, 200, "associate: {v}");
    }
    let credentials = &g["credentials"];
    let url = url_as(
        node,
        credentials["username"].as_str().expect("username"),
        credentials["password"].as_str().expect("password"),
    );
    Group {
        queue: g["queue"].as_str().expect("queue").to_owned(),
        url,
    }
}
