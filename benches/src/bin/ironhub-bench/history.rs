//! `history`: N devices post their properties (QoS 1, so each post is acknowledged once its
//! values are stored) on a tenant whose profile keeps `retention_days` of history (0: none).
//! Reports the posts acknowledged per second, the hub's CPU per post and, with `--data-dir`,
//! how much the store's directory grew per million values kept. With `raw`, the posts are binary
//! frames on `up_raw` that the product's parsing script turns into the same property posts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::{Args, Meter, bench_profile, http, provision_devices};

/// One run of the scenario.
pub(crate) struct HistoryRun<'a> {
    pub(crate) api: std::net::SocketAddr,
    pub(crate) token: &'a str,
    pub(crate) devices: usize,
    /// Posts per second per device (0: as fast as acknowledgements allow).
    pub(crate) rate: u64,
    /// Properties per post (each a value kept).
    pub(crate) properties: usize,
    pub(crate) retention_days: u64,
    pub(crate) seconds: u64,
    pub(crate) data_dir: Option<&'a Path>,
    /// Binary frames on `up_raw`, parsed by [`SCRIPT`], instead of Alink JSON.
    pub(crate) raw: bool,
}

/// The product's parsing script in `raw` runs, in the style of Alibaba's samples: a frame is a
/// command byte (0: report), the id (uint32) and each property as an int16 of tenths; the answer
/// is 0x02, the id and the code (int16).
const SCRIPT: &str = r#"
function rawDataToProtocol(bytes) {
    var u = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) { u[i] = bytes[i] & 0xff; }
    var v = new DataView(u.buffer, 0);
    var params = {};
    for (var p = 0; 5 + 2 * p + 1 < u.length; p++) { params['p' + p] = v.getInt16(5 + 2 * p) / 10; }
    return { method: 'thing.event.property.post', version: '1.0', id: '' + v.getUint32(1), params: params };
}
function protocolToRawData(json) {
    var u = new Uint8Array(7);
    var v = new DataView(u.buffer, 0);
    v.setUint8(0, 2); v.setUint32(1, parseInt(json.id)); v.setInt16(5, json.code);
    return [].slice.call(u);
}
"#;

/// The binary frame [`SCRIPT`] reads as [`post`] `n`.
fn frame(n: u64, properties: usize) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((n as u32).to_be_bytes());
    for i in 0..properties {
        let tenths = 200 + ((n + i as u64) % 100) as i16;
        out.extend(tenths.to_be_bytes());
    }
    out
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A property post of `properties` values (temperatures that move a little).
fn post(n: u64, properties: usize) -> Vec<u8> {
    let params: serde_json::Map<String, Value> = (0..properties)
        .map(|i| {
            (
                format!("p{i}"),
                json!(20.0 + ((n + i as u64) % 100) as f64 / 10.0),
            )
        })
        .collect();
    json!({ "id": n.to_string(), "version": "1.0", "params": params })
        .to_string()
        .into_bytes()
}

pub(crate) async fn run(args: &Args, run: HistoryRun<'_>) -> anyhow::Result<Value> {
    let tenant = format!(
        "bench-history-{}-{}",
        run.retention_days,
        super::now_us() % 100_000
    );
    let (pk, devices) = provision_devices(run.api, run.token, &tenant, run.devices).await?;
    let mut profile = bench_profile();
    profile["history_retention_days"] = json!(run.retention_days);
    http(
        run.api,
        run.token,
        "PUT",
        &format!("/api/v1/profiles/{tenant}"),
        &profile,
    )
    .await?;
    if run.raw {
        let path = format!("/api/v1/products/{pk}/script");
        super::http_text(run.api, run.token, ("PUT", &path), ("text/plain", SCRIPT)).await?;
    }
    let size0 = run.data_dir.map(dir_size);
    let acked = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(args);
    let deadline = Instant::now() + Duration::from_secs(run.seconds);
    let mut tasks = Vec::new();
    for d in devices {
        let (creds, dn) = (d.creds, d.name);
        let mut opts = MqttOptions::new(
            creds.client_id,
            args.target.ip().to_string(),
            args.target.port(),
        );
        opts.set_credentials(creds.username, creds.password)
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(100);
        let (client, mut ev) = AsyncClient::new(opts, 1000);
        let topic = if run.raw {
            format!("/sys/{pk}/{dn}/thing/model/up_raw")
        } else {
            format!("/sys/{pk}/{dn}/thing/event/property/post")
        };
        let raw = run.raw;
        let acked = acked.clone();
        let properties = run.properties;
        let rate = run.rate;
        tasks.push(tokio::spawn(async move {
            let driver = tokio::spawn(async move {
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
            let mut tick = super::ticker(rate);
            let mut n = 0;
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                n += 1;
                let body = if raw {
                    frame(n, properties)
                } else {
                    post(n, properties)
                };
                if client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, body)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // The posts in flight are acknowledged before the connection goes.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let _ = client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            driver.abort();
        }));
    }
    for t in tasks {
        t.await?;
    }
    let posts = acked.load(Ordering::Relaxed);
    let mut v = meter.finish(posts);
    let values = posts * run.properties as u64;
    v["posts_acknowledged"] = json!(posts);
    v["posts_per_s"] = json!(posts as f64 / run.seconds as f64);
    v["values"] = json!(values);
    if let (Some(before), Some(dir)) = (size0, run.data_dir) {
        let growth = dir_size(dir).saturating_sub(before);
        v["store_growth_bytes"] = json!(growth);
        v["store_bytes_per_million_values"] = json!(if values > 0 {
            growth as f64 * 1e6 / values as f64
        } else {
            0.0
        });
    }
    Ok(v)
}
