//! Property and event history, black-box: a device (rumqttc, as the Link SDK posts) posts
//! properties with its own timestamps over the last hours and an event; the API returns the
//! latest values, a property's values over the last 24 hours page by page in both orders,
//! downsampled per hour, and the events; what was acknowledged is there after a restart.

use hyper::Method;
use ironhub_conformance::{Deployment, DeviceCreds, gateway, v3};
use rumqttc::{AsyncClient, EventLoop, QoS};
use serde_json::{Value, json};

const HOUR: u64 = 3_600_000;

fn now_ms() -> u64 {
    ironhub_core::now_ms()
}

/// Posts `params` on the device's `suffix` at QoS 1 and returns the Alink reply (sent once the
/// values are stored).
async fn post(
    c: &AsyncClient,
    ev: &mut EventLoop,
    dev: &DeviceCreds,
    suffix: &str,
    params: Value,
) -> Value {
    gateway::sys_call_at(c, ev, dev, (suffix, QoS::AtLeastOnce), params).await
}

async fn get(d: &Deployment, path: &str) -> Value {
    let (s, v) = d.api(Method::GET, path, None).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_property_history_is_queried_paged_downsampled_and_survives_a_restart() {
    let mut d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("history")).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let now = now_ms();
    // Four temperatures an hour apart, with the device's own times (Alink's {"value","time"}).
    let readings = [(4, 20.5), (3, 21.0), (2, 22.0), (1, 23.5)];
    for (hours_ago, t) in readings {
        let params = json!({ "temperature": { "value": t, "time": now - hours_ago * HOUR } });
        let reply = post(&c, &mut ev, &dev, "/thing/event/property/post", params).await;
        assert_eq!(reply["code"], 200, "{reply}");
    }
    // A bare value is the hub's time; a time a day ahead is not believed either.
    post(
        &c,
        &mut ev,
        &dev,
        "/thing/event/property/post",
        json!({ "humidity": 40 }),
    )
    .await;
    let ahead = json!({ "humidity": { "value": 41, "time": now + 24 * HOUR } });
    post(&c, &mut ev, &dev, "/thing/event/property/post", ahead).await;
    let event = json!({ "value": { "temperature": 95.5 }, "time": now - HOUR / 2 });
    let reply = post(&c, &mut ev, &dev, "/thing/event/overheat/post", event).await;
    assert_eq!(reply["code"], 200, "{reply}");

    let base = format!(
        "/api/v1/products/{}/devices/{}",
        dev.product_key, dev.device_name
    );
    let latest = get(&d, &format!("{base}/properties")).await;
    assert_eq!(latest["temperature"]["value"], 23.5, "{latest}");
    assert_eq!(latest["temperature"]["time_ms"], now - HOUR);
    assert_eq!(latest["humidity"]["value"], 41, "{latest}");
    let humidity_at = latest["humidity"]["time_ms"].as_u64().expect("time");
    assert!(
        humidity_at <= now_ms() && humidity_at >= now,
        "the hub's time: {latest}"
    );

    // The last 24 hours, newest first, two at a time.
    let last_day = format!("{base}/properties/temperature?from_ms={}", now - 24 * HOUR);
    let day = format!("{last_day}&limit=2");
    let first = get(&d, &day).await;
    let values = |page: &Value| -> Vec<f64> {
        page["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["value"].as_f64().expect("a number"))
            .collect()
    };
    assert_eq!(values(&first), [23.5, 22.0], "{first}");
    let cursor = first["next"].as_str().expect("a next page");
    let second = get(&d, &format!("{day}&cursor={cursor}")).await;
    assert_eq!(values(&second), [21.0, 20.5], "{second}");
    assert!(second["next"].is_null(), "{second}");
    let oldest_first = get(&d, &format!("{last_day}&order=asc&limit=3")).await;
    assert_eq!(values(&oldest_first), [20.5, 21.0, 22.0], "{oldest_first}");
    let window = get(
        &d,
        &format!(
            "{base}/properties/temperature?from_ms={}&to_ms={}",
            now - 3 * HOUR,
            now - HOUR
        ),
    )
    .await;
    assert_eq!(values(&window), [22.0, 21.0], "to_ms is excluded: {window}");

    // Hourly buckets over the last four hours and a half.
    let series = get(
        &d,
        &format!(
            "{base}/properties/temperature/series?from_ms={}&to_ms={now}&interval_ms={}",
            now - 4 * HOUR - HOUR / 2,
            HOUR
        ),
    )
    .await;
    let buckets = series.as_array().expect("buckets");
    assert_eq!(buckets.len(), 4, "{series}");
    assert_eq!(buckets[0]["count"], 1);
    assert_eq!(buckets[3]["max"], 23.5);

    let events = get(&d, &format!("{base}/events")).await;
    assert_eq!(events[0]["identifier"], "overheat", "{events}");
    assert_eq!(events[0]["value"]["temperature"], 95.5);
    assert_eq!(events[0]["time_ms"], now - HOUR / 2);

    // Acknowledged means stored: all of it is there after a restart.
    drop(c);
    d.restart().await;
    let again = get(&d, &day).await;
    assert_eq!(values(&again), [23.5, 22.0], "{again}");
    let (s, bad) = d
        .api(
            Method::GET,
            &format!("{base}/properties/temperature?cursor=nonsense"),
            None,
        )
        .await;
    assert_eq!(s, 400, "{bad}");
}
