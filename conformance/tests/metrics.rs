//! Operations endpoints: `/metrics` moves when messages flow (scrape, publish, scrape again) and
//! names the limits that stopped requests; `/healthz` and `/readyz` answer.

use hyper::Method;
use ironhub_conformance::{Deployment, v5};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;

async fn scrape(d: &Deployment) -> String {
    let url = format!("{}/metrics", d.api);
    let auth = format!("Authorization: Bearer {}", d.token());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "-H", &auth, &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_messages_flow_and_name_the_limits() {
    let d = Deployment::start("").await;
    let dev = d
        .tenant_with_profile(
            &Deployment::unique_tenant("ops"),
            json!({ "rates": { "device_messages_qos1": "3:60" } }),
        )
        .await;
    let before = scrape(&d).await;
    let mut wrong = dev.clone();
    wrong.device_secret = "0".repeat(32);
    v5::refusal(wrong.v5_options(&d)).await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    for _ in 0..4 {
        c.publish(dev.user_topic("m"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
        v5::puback(&mut ev).await;
    }
    let after = scrape(&d).await;
    assert!(
        after.contains("# TYPE ironhub_messages_in_total counter"),
        "{after}"
    );
    assert_eq!(
        value(&after, "ironhub_messages_in_total") - value(&before, "ironhub_messages_in_total"),
        3
    );
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved("ironhub_messages_received_total{transport=\"mqtt\",qos=\"1\"}"),
        3
    );
    assert_eq!(
        moved("ironhub_messages_received_total{transport=\"mqtt\",qos=\"0\"}"),
        0
    );
    assert_eq!(
        value(&after, "ironhub_connections_open{transport=\"mqtt\"}"),
        1
    );
    assert_eq!(
        moved("ironhub_connections_accepted_total{transport=\"mqtt\"}"),
        1
    );
    assert_eq!(
        moved("ironhub_connections_refused_total{transport=\"mqtt\",reason=\"bad_credentials\"}"),
        1,
        "{after}"
    );
    let tenant = &dev.tenant;
    assert_eq!(
        value(
            &after,
            &format!("ironhub_tenant_connections_open{{tenant=\"{tenant}\"}}")
        ),
        1
    );
    assert_eq!(
        value(
            &after,
            &format!("ironhub_tenant_monthly_used{{tenant=\"{tenant}\",limit=\"L-070\"}}")
        ),
        3,
        "admitted messages count against the month: {after}"
    );
    assert!(
        moved("ironhub_store_seconds_count{backend=\"embedded\",op=\"commit\"}") > 0,
        "the store was written (session, usage): {after}"
    );
    assert_eq!(value(&after, "ironhub_cluster_nodes"), 1);
    assert_eq!(
        value(&after, "ironhub_limited_total{limit=\"L-017\"}"),
        1,
        "the 4th was throttled: {after}"
    );

    let (status, _, _) = d
        .api_as(Method::GET, "/metrics", None, "Bearer not-the-admin-token")
        .await;
    assert_eq!(status, 401, "per-tenant figures need the admin token");
    assert_eq!(d.api(Method::GET, "/healthz", None).await.0, 200);
    let (ready, v) = d.api(Method::GET, "/readyz", None).await;
    assert_eq!((ready, v["status"].as_str()), (200, Some("ready")));
}
