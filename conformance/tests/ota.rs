//! Firmware upgrades (OTA) as devices and operators do them: a stock Link SDK device
//! (`linkkit_ota.py`, unmodified) gets the push, downloads the package over HTTPS (the hub's
//! certificate checked by the SDK) and checks its digest, reports progress and its new version; 50 rumqttc devices go through a batch at a
//! limited rate, some failing, with per-device states, counts, cancel and retry checked; a
//! package uploaded and downloaded over HTTPS with curl matches `md5sum` and `sha256sum`, and an
//! altered or unsigned link is refused (an expired one: `core/tests/engine.rs`, in virtual time).

use std::collections::HashMap;
use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE, group};
use ironhub_conformance::http::Http;
use ironhub_conformance::ota::{self, batch, firmware, jobs, until_batch, upload};
use ironhub_conformance::{Deployment, DeviceCreds, gateway, python_client, sdk_saw, v3};
use rumqttc::{Event, Packet, QoS};
use serde_json::{Value, json};

/// A tenant whose connection and registry rates do not get in the way of 50 devices at once.
fn unthrottled() -> Value {
    json!({ "rates": { "tenant_connections": "", "device_connections": "",
                       "registry_operations": "" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_link_sdk_device_is_pushed_an_upgrade_downloads_it_and_succeeds() {
    let certs = tempfile::tempdir().expect("temp dir");
    let config = format!("{}{}", ota::CONFIG, amqp::config(SHARED_NODE));
    let (d, _) = Http::start_https(certs.path(), &config).await;
    let tenant = Deployment::unique_tenant("ota-sdk");
    let dev = d.provision(&tenant).await;
    let g = group(&d, SHARED_NODE, &tenant, &[&dev.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;
    let bytes = firmware(300_000, 1);
    let query = format!(
        "product_key={}&version=2.0.0&sign_method=SHA256",
        dev.product_key
    );
    let (s, package) = upload(&d, &tenant, &query, &bytes).await;
    assert_eq!(s, 201, "{package}");
    assert_eq!(package["size"], 300_000);
    let made = batch(
        &d,
        &tenant,
        json!({ "package_id": package["id"], "target": { "kind": "devices", "names": [dev.device_name] } }),
    )
    .await;
    assert_eq!(made["counts"]["queued"], 1, "{made}");

    let mut args = dev.sdk_args(&d);
    args.push("2.0.0".into());
    // The SDK checks the download's certificate against the CA it is configured with.
    args.push(certs.path().join("cert.pem").display().to_string());
    let seen = sdk_saw(&d, python_client("linkkit_ota.py", args, 60).await);
    assert_eq!(seen["push"]["version"], "2.0.0", "{seen}");
    assert!(
        seen["push"]["url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://127.0.0.1:"),
        "{seen}"
    );
    assert_eq!(seen["push"]["sign_method"], "SHA256", "{seen}");
    assert_eq!(seen["push"]["sign"], package["sha256"], "{seen}");
    assert!(
        seen["download"].as_str().unwrap_or("").contains("SUCCESS"),
        "the SDK's digest check: {seen}"
    );
    assert_eq!(seen["downloaded_bytes"], 300_000);
    assert_eq!(seen["pull"]["url"].as_str().map(str::is_empty), Some(false));

    let id = made["id"].as_str().expect("id");
    let done = until_batch(&d, &tenant, id, |c| c["succeeded"] == 1).await;
    assert_eq!(done["devices"], 1);
    let job = &jobs(&d, &tenant, id).await[0];
    assert_eq!(job["step"], 100, "{job}");
    let (_, info) = d
        .api(
            Method::GET,
            &format!(
                "/api/v1/products/{}/devices/{}/info",
                dev.product_key, dev.device_name
            ),
            None,
        )
        .await;
    assert_eq!(info["firmware"]["default"], "2.0.0", "{info}");

    // The consumer group heard the job move on, in order.
    let events = consumer.drain(Duration::from_secs(2)).await;
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "ota")
        .map(|e| {
            let body: Value = serde_json::from_slice(&e.payload).expect("JSON");
            body["status"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(
        states,
        ["NOTIFIED", "IN_PROGRESS", "SUCCEEDED"],
        "{states:?}"
    );
}

/// How a test device answers an upgrade push.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Progress, then the new version.
    Succeeds,
    /// A download failure (-2) the first time, success after a retry.
    FailsOnce,
    /// Nothing at all.
    Silent,
}

/// A device that answers pushes as `behaviour` says and records when each push came.
async fn run_device(
    d: &Deployment,
    dev: DeviceCreds,
    behaviour: Behaviour,
    pushes: tokio::sync::mpsc::UnboundedSender<(String, tokio::time::Instant)>,
) {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let (pk, dn) = (dev.product_key.clone(), dev.device_name.clone());
    tokio::spawn(async move {
        let mut pushed = 0;
        while let Ok(event) = ev.poll().await {
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            if p.topic != format!("/ota/device/upgrade/{pk}/{dn}") {
                continue;
            }
            pushed += 1;
            let _ = pushes.send((dn.clone(), tokio::time::Instant::now()));
            let push: Value = serde_json::from_slice(&p.payload).expect("JSON push");
            let version = push["data"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let progress = format!("/ota/device/progress/{pk}/{dn}");
            let report = |step: &str, desc: &str| {
                json!({ "id": "1", "params": { "step": step, "desc": desc } }).to_string()
            };
            match behaviour {
                Behaviour::Silent => {}
                Behaviour::FailsOnce if pushed == 1 => {
                    let _ = c
                        .publish(
                            &progress,
                            QoS::AtLeastOnce,
                            false,
                            report("-2", "download failed"),
                        )
                        .await;
                }
                _ => {
                    let _ = c
                        .publish(&progress, QoS::AtLeastOnce, false, report("60", "flashing"))
                        .await;
                    let inform = json!({ "id": "2", "params": { "version": version } });
                    let _ = c
                        .publish(
                            format!("/ota/device/inform/{pk}/{dn}"),
                            QoS::AtLeastOnce,
                            false,
                            inform.to_string(),
                        )
                        .await;
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_devices_upgrade_at_a_limited_rate_with_failures_cancel_and_retry() {
    let (d, _) = Http::start(ota::CONFIG).await;
    let tenant = Deployment::unique_tenant("ota-batch");
    let first = d.tenant_with_profile(&tenant, unthrottled()).await;
    let mut devices = vec![first.clone()];
    for i in 2..=50 {
        devices.push(d.add_device(&first.product_key, &format!("dev-{i}")).await);
    }
    let behaviour = |i: usize| match i % 10 {
        3 | 7 => Behaviour::FailsOnce,
        9 => Behaviour::Silent,
        _ => Behaviour::Succeeds,
    };
    let (pushes, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    for (i, dev) in devices.iter().enumerate() {
        run_device(&d, dev.clone(), behaviour(i), pushes.clone()).await;
    }
    let query = format!("product_key={}&version=3.1.0", first.product_key);
    let (s, package) = upload(&d, &tenant, &query, &firmware(10_000, 2)).await;
    assert_eq!(s, 201, "{package}");
    // 600 a minute: 10 a second, so 50 devices take about five seconds.
    let made = batch(
        &d,
        &tenant,
        json!({ "package_id": package["id"], "target": { "kind": "product" }, "rate_per_minute": 600 }),
    )
    .await;
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(made["devices"], 50, "{made}");

    let (succeed, fail, silent) = (35, 10, 5);
    let counts = until_batch(&d, &tenant, &id, |c| {
        c["succeeded"] == succeed && c["failed"] == fail && c["notified"] == silent
    })
    .await["counts"]
        .clone();
    assert_eq!(counts["queued"], 0, "{counts}");
    let mut times = Vec::new();
    while let Ok((_, at)) = pushed.try_recv() {
        times.push(at);
    }
    assert_eq!(times.len(), 50, "one push per device");
    times.sort();
    let spread = times[49] - times[0];
    assert!(
        spread >= Duration::from_secs(3),
        "50 pushes at 10 a second took {spread:?}"
    );

    let by_name: HashMap<String, Value> = jobs(&d, &tenant, &id)
        .await
        .into_iter()
        .map(|j| (j["device_name"].as_str().unwrap_or_default().to_owned(), j))
        .collect();
    for (i, dev) in devices.iter().enumerate() {
        let job = &by_name[&dev.device_name];
        let expected = match behaviour(i) {
            Behaviour::Succeeds => "succeeded",
            Behaviour::FailsOnce => "failed",
            Behaviour::Silent => "notified",
        };
        assert_eq!(job["state"], expected, "{job}");
        if behaviour(i) == Behaviour::FailsOnce {
            assert_eq!(job["step"], -2, "{job}");
            assert_eq!(job["desc"], "download failed", "{job}");
        }
    }

    // Retrying the failed ones pushes them again, and they succeed this time.
    let (s, retried) = ota::batch_action(&d, &tenant, &id, "retry").await;
    assert_eq!(s, 200, "{retried}");
    until_batch(&d, &tenant, &id, |c| c["succeeded"] == succeed + fail).await;
    // Canceling ends the silent ones; the others keep their state.
    let (s, canceled) = ota::batch_action(&d, &tenant, &id, "cancel").await;
    assert_eq!(s, 200, "{canceled}");
    assert_eq!(canceled["counts"]["canceled"], silent, "{canceled}");
    assert_eq!(
        canceled["counts"]["succeeded"],
        succeed + fail,
        "{canceled}"
    );
    assert_eq!(canceled["canceled"], true);
    let retried_jobs = jobs(&d, &tenant, &id).await;
    assert_eq!(
        retried_jobs.iter().filter(|j| j["retries"] == 1).count(),
        fail as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_downloads_over_https_with_curl_to_its_digests_and_altered_links_are_refused() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (d, _) = Http::start_https(certs.path(), "").await;
    let ca = certs.path().join("cert.pem");
    let ca = Some(ca.as_path());
    let tenant = Deployment::unique_tenant("ota-curl");
    let dev = d.provision(&tenant).await;
    let bytes = firmware(1_234_567, 3);
    let query = format!("product_key={}&version=1.2.3&module=mcu", dev.product_key);
    // An upload that does not match the digest published with it is refused, and not kept.
    let wrong = format!("{query}&sha256={}", "0".repeat(64));
    let (s, refused) = upload(&d, &tenant, &wrong, &bytes).await;
    assert_eq!(s, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("SHA-256"),
        "{refused}"
    );
    let (s, package) = upload(&d, &tenant, &query, &bytes).await;
    assert_eq!(s, 201, "{package}");
    assert_eq!(package["sign_method"], "Md5");
    assert_eq!(package["module"], "mcu");
    let id = package["id"].as_str().expect("id");
    let (s, listed) = d
        .api(
            Method::GET,
            &format!(
                "/api/v1/tenants/{tenant}/ota/packages?product_key={}",
                dev.product_key
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id, "{listed}");

    // The device pulls the upgrade of its module (before any push: it is not online yet).
    batch(
        &d,
        &tenant,
        json!({ "package_id": id, "target": { "kind": "devices", "names": [dev.device_name] } }),
    )
    .await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let reply = gateway::sys_call(
        &c,
        &mut ev,
        &dev,
        "/thing/ota/firmware/get",
        json!({ "module": "mcu" }),
    )
    .await;
    assert_eq!(reply["code"], 200, "{reply}");
    let data = &reply["data"];
    assert_eq!(data["signMethod"], "Md5", "{reply}");
    assert_eq!(data["module"], "mcu", "{reply}");
    let url = data["url"].as_str().expect("url");

    let (status, md5, sha256, size) = ota::download(url, ca).await;
    assert_eq!(status, 200);
    assert_eq!(size, 1_234_567);
    assert_eq!(md5, data["sign"].as_str().expect("sign"));
    assert_eq!(md5, package["md5"].as_str().expect("md5"));
    assert_eq!(sha256, package["sha256"].as_str().expect("sha256"));

    let tampered = url.replace("expires=", "expires=1");
    assert_eq!(ota::download(&tampered, ca).await.0, 403);
    let other = url.replace(id, "fw1");
    assert_eq!(ota::download(&other, ca).await.0, 403);
    let unsigned = url.split('?').next().expect("path").to_owned();
    assert_eq!(ota::download(&unsigned, ca).await.0, 403);

    // A package a batch rolls out stays until the batch is canceled.
    let path = format!("/api/v1/tenants/{tenant}/ota/packages/{id}");
    let (s, refused) = d.api(Method::DELETE, &path, None).await;
    assert_eq!(s, 409, "{refused}");
    let (_, batches) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/ota/batches"),
            None,
        )
        .await;
    let batch_id = batches[0]["id"].as_str().expect("batch");
    assert_eq!(
        ota::batch_action(&d, &tenant, batch_id, "cancel").await.0,
        200
    );
    assert_eq!(d.api(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(ota::download(url, ca).await.0, 404);
    let none = gateway::sys_call(
        &c,
        &mut ev,
        &dev,
        "/thing/ota/firmware/get",
        json!({ "module": "mcu" }),
    )
    .await;
    assert_eq!(none["data"], json!({}), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uploads_a_file_rolls_it_out_and_follows_the_batch() {
    let (d, _) = Http::start(ota::CONFIG).await;
    let tenant = Deployment::unique_tenant("ota-cli");
    let dev = d.provision(&tenant).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("fw.bin");
    std::fs::write(&file, firmware(70_000, 4)).expect("package written");
    let file = file.display().to_string();
    let package = d
        .cli(&[
            "ota",
            "upload",
            "--tenant",
            &tenant,
            "--product",
            &dev.product_key,
            "--version",
            "5.0",
            "--sign-method",
            "SHA256",
            &file,
        ])
        .await
        .expect("upload");
    assert_eq!(package["size"], 70_000, "{package}");
    assert_eq!(package["sign_method"], "SHA256", "{package}");
    let id = package["id"].as_str().expect("id");
    let made = d
        .cli(&[
            "ota",
            "batch",
            "--tenant",
            &tenant,
            "--package",
            id,
            "--devices",
            &dev.device_name,
            "--rate-per-minute",
            "10",
        ])
        .await
        .expect("batch");
    let batch_id = made["id"].as_str().expect("batch id");
    assert_eq!(made["rate_per_minute"], 10, "{made}");
    let status = d
        .cli(&["ota", "status", "--tenant", &tenant, "--id", batch_id])
        .await
        .expect("status");
    assert_eq!(status["counts"]["queued"], 1, "{status}");
    let canceled = d
        .cli(&["ota", "cancel", "--tenant", &tenant, "--id", batch_id])
        .await
        .expect("cancel");
    assert_eq!(canceled["counts"]["canceled"], 1, "{canceled}");
    let listed = d
        .cli(&["ota", "jobs", "--tenant", &tenant, "--id", batch_id])
        .await
        .expect("jobs");
    assert_eq!(listed[0]["state"], "canceled", "{listed}");
    let refused = d
        .cli(&["ota", "retry", "--tenant", &tenant, "--id", batch_id])
        .await
        .expect_err("a canceled batch is not retried");
    assert!(refused.contains("409"), "{refused}");
    let packages = d
        .cli(&["ota", "packages", "--tenant", &tenant])
        .await
        .expect("packages");
    assert_eq!(packages[0]["id"], id, "{packages}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_device_is_upgraded_through_its_gateway_and_batches_pick_devices_by_version() {
    let (d, _) = Http::start(ota::CONFIG).await;
    let tenant = Deployment::unique_tenant("ota-gw");
    let f = gateway::fleet(&d, &tenant, unthrottled_gateway(), 2).await;
    let (gc, mut gev) = v3::connect(f.gateway.v3_options(&d)).await;
    gateway::log_all_in(&gc, &mut gev, &f).await;
    let sub = &f.subs[0];
    // Only the first sub-device reports 1.0 (through the gateway, in its own namespace).
    inform(&gc, &mut gev, sub, "1.0").await;
    let query = format!("product_key={}&version=2.0", sub.product_key);
    let (_, package) = upload(&d, &tenant, &query, &firmware(5_000, 6)).await;
    let made = batch(
        &d,
        &tenant,
        json!({ "package_id": package["id"], "target": { "kind": "versions", "versions": ["1.0"] } }),
    )
    .await;
    assert_eq!(made["devices"], 1, "only the device on 1.0: {made}");
    let id = made["id"].as_str().expect("id");
    let job = &jobs(&d, &tenant, id).await[0];
    assert_eq!(job["device_name"], sub.device_name.as_str());
    assert_eq!(job["source_version"], "1.0");

    // The push reaches the gateway's connection, on the sub-device's topic.
    let topic = format!(
        "/ota/device/upgrade/{}/{}",
        sub.product_key, sub.device_name
    );
    let push = loop {
        let p = v3::next_publish(&mut gev).await;
        if p.topic == topic {
            break p;
        }
    };
    let push: Value = serde_json::from_slice(&push.payload).expect("JSON");
    assert_eq!(push["data"]["version"], "2.0", "{push}");
    // Progress through the gateway, in the sub-device's namespace, moves its job.
    let progress = format!(
        "/ota/device/progress/{}/{}",
        sub.product_key, sub.device_name
    );
    let report = json!({ "id": "2", "params": { "step": "40", "desc": "flashing" } });
    gc.publish(progress, QoS::AtLeastOnce, false, report.to_string())
        .await
        .unwrap();
    v3::acked(&mut gev).await;
    until_batch(&d, &tenant, id, |c| c["in_progress"] == 1).await;
    let job = &jobs(&d, &tenant, id).await[0];
    assert_eq!(job["step"], 40, "{job}");
    inform(&gc, &mut gev, sub, "2.0").await;
    until_batch(&d, &tenant, id, |c| c["succeeded"] == 1).await;
}

/// Reports `version` on `dev`'s `/ota/device/inform` over `c` (a gateway for its sub-device) and
/// waits for the PUBACK.
async fn inform(
    c: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    dev: &DeviceCreds,
    version: &str,
) {
    let body = json!({ "id": "1", "params": { "version": version } }).to_string();
    let topic = format!("/ota/device/inform/{}/{}", dev.product_key, dev.device_name);
    c.publish(topic, QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    v3::acked(ev).await;
}

/// A tenant whose rates do not get in the way of a gateway logging its sub-devices in.
fn unthrottled_gateway() -> Value {
    json!({ "rates": { "tenant_connections": "", "device_connections": "",
                       "registry_operations": "", "sub_device_logins": "" } })
}
