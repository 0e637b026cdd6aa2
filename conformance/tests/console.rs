//! The web console in a real browser: Debian's Chromium, driven by `conformance/console/console.mjs`
//! (playwright-core from the npm registry). The admin signs in and sees the tenant; the tenant
//! signs in with its API key, creates a device and is shown its secret once; this test connects
//! that device over MQTT and makes it publish, partly over its rate limit; the console shows it
//! online, its last messages, the discarded messages of the hour, the search and the disable
//! button of the product page, a device group made in the console with that device in it (its
//! page names the group), a desired value and a property set from the device's page, the tenant's
//! monthly usage
//! moving past the 80 % warning, and an upgrade batch with its device's job, canceled from the
//! console. Screenshots: `target/conformance/console/`.
//!
//! `.ci/run` installs Chromium and the script's npm package; run it once before this test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::Method;
use ironhub_conformance::{Deployment, DeviceCreds, gateway, ota, v3};
use rumqttc::QoS;
use serde_json::json;
use tokio::sync::mpsc;

/// Messages of the throttled burst: the profile admits 3 QoS 0 messages a minute per device.
const BURST: usize = 12;
/// QoS 1 messages of the second batch, all admitted (6 a minute): 3 + 6 = 9 of a monthly 10.
const SECOND: usize = 6;

/// The script's next line, or None when it ended or stayed silent for a minute.
async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(60), lines.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_device_connect_its_messages_counted_and_throttled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the console test needs Chromium and playwright-core: run .ci/run once (it installs both)"
    );
    // The HTTP device transport serves firmware downloads: upgrade batches need it.
    let (http, _) = ironhub_conformance::http::Http::plain();
    let d = Deployment::start(&http).await;
    let tenant = Deployment::unique_tenant("console");
    let first = d
        .tenant_with_profile(
            &tenant,
            json!({
                "rates": { "device_messages_qos0": "3:60", "device_messages_qos1": "6:60" },
                "monthly": { "transport_messages": 10 },
            }),
        )
        .await;
    let key = d.api_key(&tenant, "console").await;
    // An upgrade batch for the provisioned device, which stays offline: its job stays queued.
    let query = format!("product_key={}&version=9.9.9", first.product_key);
    let (s, package) = ota::upload(&d, &tenant, &query, &ota::firmware(4096, 5)).await;
    assert_eq!(s, 201, "{package}");
    let target = json!({ "kind": "devices", "names": [first.device_name] });
    let batch = ota::batch(
        &d,
        &tenant,
        json!({ "package_id": package["id"], "target": target }),
    )
    .await;
    // A gateway of another tenant carrying a sub-device, logged in through it.
    let f = gateway::fleet(&d, &Deployment::unique_tenant("console-gw"), json!({}), 1).await;
    let (gc, mut gev) = v3::connect(f.gateway.v3_options(&d)).await;
    let login = gateway::batch_login(&f.subs);
    let reply =
        gateway::session_call(&gc, &mut gev, &f.gateway, "batch_login", login, |_| {}).await;
    assert_eq!(reply["code"], 200, "{reply}");
    // The gateway posts two temperatures (QoS 1: stored once acknowledged) for its page's chart.
    let post_topic = format!(
        "/sys/{}/{}/thing/event/property/post",
        f.gateway.product_key, f.gateway.device_name
    );
    for t in [21.5, 23.0] {
        let body = json!({ "id": "1", "params": { "temperature": t } }).to_string();
        gc.publish(&post_topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
        v3::acked(&mut gev).await;
    }
    let gateway_poller = tokio::spawn(async move { while gev.poll().await.is_ok() {} });
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance/console");

    let mut node = Command::new("node")
        .arg(dir.join("console.mjs"))
        .env("CONSOLE_URL", format!("{}/console/", d.api))
        .env("ADMIN_TOKEN", d.token())
        .env("TENANT_KEY", &key)
        .env("TENANT", &tenant)
        .env("PRODUCT_KEY", &first.product_key)
        .env(
            "GATEWAY",
            format!("{}/{}", f.gateway.product_key, f.gateway.device_name),
        )
        .env("SUB_DEVICE", &f.subs[0].device_name)
        .env("OTA_BATCH", batch["id"].as_str().expect("batch id"))
        .env("OTA_DEVICE", &first.device_name)
        .env("ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let line = next_line(&mut lines)
        .await
        .expect("the console created a device");
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        parts[..3],
        ["DEVICE", first.product_key.as_str(), "console-dev"]
    );
    let device = DeviceCreds {
        tenant: tenant.clone(),
        product_key: parts[1].to_owned(),
        device_name: parts[2].to_owned(),
        device_secret: parts[3].to_owned(),
        product_secret: String::new(),
    };
    // The secret the console showed is the one that works.
    let (client, mut ev) = v3::connect(device.v3_options(&d)).await;
    for i in 0..BURST {
        client
            .publish(
                device.user_topic("data"),
                QoS::AtMostOnce,
                false,
                format!("{{\"n\":{i}}}"),
            )
            .await
            .unwrap();
    }
    // The connection is served (the burst sent, pings answered) while the browser looks.
    let more = next_line(&mut lines);
    tokio::pin!(more);
    let line = loop {
        tokio::select! {
            line = &mut more => break line,
            event = ev.poll() => { event.expect("the device stays connected"); }
        }
    };
    assert_eq!(
        line.as_deref(),
        Some("MORE"),
        "the console checked the first batch"
    );
    for i in 0..SECOND {
        client
            .publish(
                device.user_topic("data"),
                QoS::AtLeastOnce,
                false,
                format!("{{\"m\":{i}}}"),
            )
            .await
            .unwrap();
        v3::acked(&mut ev).await;
    }
    let poller = tokio::spawn(async move { while ev.poll().await.is_ok() {} });

    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .expect("node ran");
    poller.abort();
    gateway_poller.abort();
    drop(gc);
    assert!(
        status.success(),
        "the console checks failed ({status}); screenshots in {}",
        artifacts.display()
    );
    for shot in [
        "01-admin-tenants",
        "01b-gateway-sub-devices",
        "04-device-page",
        "04b-group",
        "04c-thing-model",
        "06-usage-warning",
        "09-ota-batch",
    ] {
        assert!(
            artifacts.join(format!("{shot}.png")).exists(),
            "{shot}.png written"
        );
    }
    let (_, usage) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/usage"),
            None,
        )
        .await;
    assert_eq!(usage["monthly"][0]["used"], 3 + SECOND as u64, "{usage}");
}
