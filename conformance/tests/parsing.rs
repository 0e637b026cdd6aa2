//! Data parsing scripts, black-box: an unmodified Alibaba-style script
//! (`clients/alibaba_thermometer.js`) turns a binary thermometer's frames on `up_raw` into
//! property posts that the thing model checks, history keeps and a consumer group (RabbitMQ)
//! receives, answers it in binary on `up_raw_reply`, and carries a business property set to it
//! on `down_raw` and its binary answer back, and parses a custom topic's bytes for the consumer
//! group (`transformPayload`); a script that throws, loops forever or allocates
//! without end is stopped within its budget, answered with 6201 and counted, and the hub goes on.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE, group};
use ironhub_conformance::ota::send_file;
use ironhub_conformance::{Deployment, DeviceCreds, v3};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::{Value, json};

const THERMOMETER: &[u8] = include_bytes!("../clients/alibaba_thermometer.js");

fn script_path(dev: &DeviceCreds) -> String {
    format!("/api/v1/products/{}/script", dev.product_key)
}

fn raw_topic(dev: &DeviceCreds, leaf: &str) -> String {
    format!(
        "/sys/{}/{}/thing/model/{leaf}",
        dev.product_key, dev.device_name
    )
}

/// A report frame: 0x00 | id | temperature (0.1 °C) | humidity.
fn report(id: i32, tenths: i16, humidity: u8) -> Vec<u8> {
    let mut frame = vec![0x00];
    frame.extend(id.to_be_bytes());
    frame.extend(tenths.to_be_bytes());
    frame.push(humidity);
    frame
}

/// Publishes a raw frame on `up_raw` and returns the next `up_raw_reply` payload.
async fn send_raw(c: &AsyncClient, ev: &mut EventLoop, dev: &DeviceCreds, frame: &[u8]) -> Vec<u8> {
    c.publish(
        raw_topic(dev, "up_raw"),
        QoS::AtLeastOnce,
        false,
        frame.to_vec(),
    )
    .await
    .expect("publish");
    let reply = raw_topic(dev, "up_raw_reply");
    loop {
        let p = v3::next_publish(ev).await;
        if p.topic == reply {
            return p.payload.to_vec();
        }
    }
}

/// A binary report answer: (command, id, code).
fn answer(frame: &[u8]) -> (u8, i32, i16) {
    assert_eq!(frame.len(), 7, "a report answer: {frame:02x?}");
    (
        frame[0],
        i32::from_be_bytes(frame[1..5].try_into().expect("id")),
        i16::from_be_bytes(frame[5..7].try_into().expect("code")),
    )
}

async fn setup(d: &Deployment, prefix: &str) -> (DeviceCreds, AsyncClient, EventLoop) {
    let dev = d.provision(&Deployment::unique_tenant(prefix)).await;
    let model = json!({ "properties": [
        { "identifier": "temperature", "accessMode": "r",
          "dataType": { "type": "float", "specs": { "min": -40, "max": 85 } } },
        { "identifier": "humidity", "accessMode": "r",
          "dataType": { "type": "int", "specs": { "min": 0, "max": 100 } } },
        { "identifier": "interval", "accessMode": "rw",
          "dataType": { "type": "int", "specs": { "min": 1, "max": 3600 } } } ] });
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    let (s, v) = d.api(Method::PUT, &path, Some(model)).await;
    assert_eq!(s, 200, "{v}");
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    for leaf in ["up_raw_reply", "down_raw"] {
        c.subscribe(raw_topic(&dev, leaf), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        assert_eq!(v3::suback(&mut ev).await.len(), 1);
    }
    (dev, c, ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alibaba_script_parses_a_binary_thermometer_both_ways() {
    let d = Deployment::start(&amqp::config(SHARED_NODE)).await;
    let (dev, c, mut ev) = setup(&d, "parsing").await;
    let g = group(&d, SHARED_NODE, &dev.tenant, &[&dev.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;

    // Before a script, a raw frame is answered with 6200.
    let none = send_raw(&c, &mut ev, &dev, &report(1, 235, 40)).await;
    let none: Value = serde_json::from_slice(&none).expect("an Alink answer");
    assert_eq!(none["code"], 6200, "{none}");

    let (s, saved) = send_file(&d, "PUT", &script_path(&dev), THERMOMETER).await;
    assert_eq!(s, 200, "{saved}");
    assert_eq!(saved["data_format"], "custom");
    assert_eq!(saved["missing_functions"], json!([]), "{saved}");

    // A report: checked by the thing model, answered in binary, kept, forwarded as Alink JSON.
    let ok = send_raw(&c, &mut ev, &dev, &report(7, 235, 40)).await;
    assert_eq!(answer(&ok), (0x02, 7, 200));
    let hot = send_raw(&c, &mut ev, &dev, &report(8, 1200, 40)).await;
    assert_eq!(
        answer(&hot),
        (0x02, 8, 6306),
        "120 °C is out of the model's range"
    );
    let latest = format!(
        "/api/v1/products/{}/devices/{}/properties",
        dev.product_key, dev.device_name
    );
    let (s, values) = d.api(Method::GET, &latest, None).await;
    assert_eq!(s, 200, "{values}");
    assert_eq!(values["temperature"]["value"], 23.5, "{values}");
    assert_eq!(values["humidity"]["value"], 40, "{values}");
    let forwarded = consumer
        .next(Duration::from_secs(10))
        .await
        .expect("the parsed post reaches the consumer group");
    assert_eq!(
        forwarded.header("topic"),
        format!(
            "/sys/{}/{}/thing/event/property/post",
            dev.product_key, dev.device_name
        )
    );
    let post: Value = serde_json::from_slice(&forwarded.payload).expect("Alink JSON");
    assert_eq!(
        post["params"],
        json!({ "temperature": 23.5, "humidity": 40 })
    );

    // A business property set goes out in binary on down_raw; the binary answer completes it.
    let auth = format!("Bearer {}", d.api_key(&dev.tenant, "set").await);
    let device = tokio::spawn(async move {
        let frame = v3::next_publish(&mut ev).await;
        let mut reply = vec![0x03];
        reply.extend_from_slice(&frame.payload[1..5]);
        reply.extend(200i16.to_be_bytes());
        let topic = frame.topic.replace("/down_raw", "/down_raw_reply");
        c.publish(topic, QoS::AtLeastOnce, false, reply)
            .await
            .expect("answer");
        v3::until(&mut ev, |e| {
            matches!(e, Ok(Event::Incoming(Packet::PubAck(_)))).then_some(())
        })
        .await;
        (frame, c, ev)
    });
    let body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                       "params": { "interval": 300 }, "timeout_ms": 5000 });
    let (s, _, set) = d
        .api_as(
            Method::POST,
            "/api/v1/business/properties/set",
            Some(body),
            &auth,
        )
        .await;
    assert_eq!(s, 200, "{set}");
    assert_eq!(
        (&set["outcome"], &set["code"]),
        (&json!("replied"), &json!(200)),
        "{set}"
    );
    let (frame, c, mut ev) = device.await.expect("the device's side");
    assert_eq!(frame.topic, raw_topic(&dev, "down_raw"));
    let id: i32 = set["message_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a number");
    let mut expected = vec![0x01];
    expected.extend(id.to_be_bytes());
    expected.extend(300i16.to_be_bytes());
    assert_eq!(frame.payload.to_vec(), expected);

    // A custom topic marked for parsing reaches the consumer group as transformPayload's JSON.
    let topics = format!("/api/v1/products/{}/topics", dev.product_key);
    let category = json!([{ "topic": "/${productKey}/${deviceName}/user/update",
                            "operation": "pub", "parse": true }]);
    let (s, v) = d.api(Method::PUT, &topics, Some(category)).await;
    assert_eq!(s, 200, "{v}");
    c.publish(
        dev.user_topic("update"),
        QoS::AtLeastOnce,
        false,
        vec![0x5a],
    )
    .await
    .expect("publish");
    v3::acked(&mut ev).await;
    let parsed = loop {
        let m = consumer
            .next(Duration::from_secs(10))
            .await
            .expect("the custom topic's message reaches the consumer group");
        if m.header("topic") == dev.user_topic("update") {
            break m;
        }
    };
    let parsed: Value = serde_json::from_slice(&parsed.payload).expect("JSON");
    assert_eq!(parsed, json!({ "battery": 90 }));

    // A frame the script throws on is answered with 6201 and counted.
    let bad = send_raw(&c, &mut ev, &dev, &[0x7f, 1, 2]).await;
    let bad: Value = serde_json::from_slice(&bad).expect("an Alink answer");
    assert_eq!(bad["code"], 6201, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown command 127"),
        "{bad}"
    );
    let (s, usage) = d
        .api(
            Method::GET,
            &format!(
                "/api/v1/products/{}/devices/{}/usage",
                dev.product_key, dev.device_name
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["usage"]["hour"]["script_errors"], 1, "{usage}");
    let (s, tenant) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{}/usage", dev.tenant),
            None,
        )
        .await;
    assert_eq!(s, 200, "{tenant}");
    // Two reports and their answers, the set and its answer, the custom topic, the bad frame.
    assert_eq!(tenant["usage"]["month"]["js_executions"], 8, "{tenant}");
    // Every message the device sent is metered, those that could not be parsed too: the
    // frame before the script, two reports, the set's answer, the custom topic, the bad frame.
    assert_eq!(tenant["usage"]["month"]["messages"], 6, "{tenant}");

    // The test endpoint runs each entry point on a sample.
    let test = format!("{}/test", script_path(&dev));
    let samples = [
        (
            json!({ "function": "rawDataToProtocol", "payload_hex": "0x000000000100eb28" }),
            json!({ "outcome": "json", "output": { "method": "thing.event.property.post",
                    "version": "1.0", "id": "1",
                    "params": { "temperature": 23.5, "humidity": 40 } } }),
        ),
        (
            json!({ "function": "protocolToRawData", "payload": { "method": "thing.service.property.set",
                    "id": "2", "params": { "interval": 60 } } }),
            json!({ "outcome": "bytes", "output_hex": "0100000002003c" }),
        ),
        (
            json!({ "function": "transformPayload", "topic": "/a/b/user/update", "payload_hex": "5a" }),
            json!({ "outcome": "json", "output": { "battery": 90 } }),
        ),
    ];
    for (sample, expected) in samples {
        let (s, out) = d.api(Method::POST, &test, Some(sample)).await;
        assert_eq!((s, out), (200, expected));
    }

    // The command line: the script saved from its file and tried, the history read.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/alibaba_thermometer.js"
    );
    let pk = dev.product_key.as_str();
    let saved = d.cli(&["script", "put", "--product", pk, file]).await;
    assert_eq!(saved.expect("script put")["data_format"], "custom");
    let tried = d
        .cli(&[
            "script",
            "test",
            "--product",
            pk,
            "--up",
            "000000000200f014",
        ])
        .await
        .expect("script test");
    assert_eq!(tried["output"]["params"]["temperature"], 24.0, "{tried}");
    let dn = dev.device_name.as_str();
    let latest = d
        .cli(&["history", "latest", "--product", pk, "--name", dn])
        .await
        .expect("history latest");
    assert_eq!(latest["temperature"]["value"], 23.5, "{latest}");
    let page = d
        .cli(&[
            "history",
            "property",
            "--product",
            pk,
            "--name",
            dn,
            "humidity",
            "--limit",
            "1",
        ])
        .await
        .expect("history property");
    assert_eq!(page["points"][0]["value"], 40, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_are_stopped_within_their_budget_and_the_hub_goes_on() {
    let d = Deployment::start("[hub.scripts]\ntime_budget_ms = 200\nmemory_mb = 8\n").await;
    let (dev, c, mut ev) = setup(&d, "runaway").await;
    let path = script_path(&dev);

    // Refused at the door: not JavaScript, too large (L-096), endless at load (L-098).
    let (s, v) = send_file(&d, "PUT", &path, b"function rawDataToProtocol(b) {").await;
    assert_eq!(s, 400, "{v}");
    let large = format!("/*{}*/", "x".repeat(128 * 1024));
    let (s, v) = send_file(&d, "PUT", &path, large.as_bytes()).await;
    assert_eq!((s, &v["limit"]), (413, &json!("L-096")), "{v}");
    let (s, v) = send_file(&d, "PUT", &path, b"for (;;) {}").await;
    assert_eq!((s, &v["limit"]), (400, &json!("L-098")), "{v}");
    assert_eq!(d.api(Method::GET, &path, None).await.0, 404);

    let scripts = [
        "function rawDataToProtocol(b) { for (;;) {} }",
        "function rawDataToProtocol(b) { var a = []; for (;;) { a.push(new Array(65536).fill(b)); } }",
    ];
    for script in scripts {
        let (s, v) = send_file(&d, "PUT", &path, script.as_bytes()).await;
        assert_eq!(s, 200, "{v}");
        let started = std::time::Instant::now();
        let stopped = send_raw(&c, &mut ev, &dev, &report(1, 200, 50)).await;
        let stopped: Value = serde_json::from_slice(&stopped).expect("an Alink answer");
        assert_eq!(stopped["code"], 6201, "{script}: {stopped}");
        let message = stopped["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("time budget") || message.contains("memory"),
            "{message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stopped, not left running: {:?}",
            started.elapsed()
        );
        // The hub goes on: a JSON post of the same device is answered.
        let post = format!(
            "/sys/{}/{}/thing/event/property/post",
            dev.product_key, dev.device_name
        );
        let body = json!({ "id": "9", "version": "1.0", "params": { "humidity": 51 },
                           "method": "thing.event.property.post" });
        c.subscribe(format!("{post}_reply"), QoS::AtMostOnce)
            .await
            .expect("subscribe");
        c.publish(&post, QoS::AtLeastOnce, false, body.to_string())
            .await
            .expect("publish");
        let reply = loop {
            let p = v3::next_publish(&mut ev).await;
            if p.topic.ends_with("/post_reply") {
                break serde_json::from_slice::<Value>(&p.payload).expect("JSON");
            }
        };
        assert_eq!(reply["code"], 200, "{reply}");
    }
    let usage = format!(
        "/api/v1/products/{}/devices/{}/usage",
        dev.product_key, dev.device_name
    );
    let (s, usage) = d.api(Method::GET, &usage, None).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["usage"]["hour"]["script_errors"], 2, "{usage}");
}
