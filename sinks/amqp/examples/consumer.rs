//! A business server's consumer of an ironhub consumer group, with lapin (docs/protocols/amqp.md).
//!
//! `cargo run -p ironhub-amqp --example consumer -- <amqp-url> <queue>`: prints each message and
//! acknowledges it after printing (at-least-once: drop duplicates by `message_id`).

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

fn header(headers: &Option<FieldTable>, name: &str) -> String {
    match headers.as_ref().and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::LongLongInt(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(queue)) = (args.next(), args.next()) else {
        eprintln!("usage: consumer <amqp-url> <queue>");
        std::process::exit(2);
    };
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "business-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let p = &delivery.properties;
        let kind = p.kind().as_ref().map(|k| k.as_str().to_owned());
        let id = p.message_id().as_ref().map(|k| k.as_str().to_owned());
        println!(
            "{} {} {} {}/{}: {}",
            kind.unwrap_or_default(),
            id.unwrap_or_default(),
            header(p.headers(), "topic"),
            header(p.headers(), "productKey"),
            header(p.headers(), "deviceName"),
            String::from_utf8_lossy(&delivery.data),
        );
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
