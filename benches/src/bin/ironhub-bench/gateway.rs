//! `gateway`: N devices, each publishing at R msg/s on a topic of its own that it subscribes to,
//! so every message goes in and comes back out. `direct`: every device on its own connection.
//! `gateway`: all of them on one connection. Against ironhub (`--api`) the N are devices of a
//! product, and in `gateway` mode its sub-devices, logged in in batches through one gateway
//! device as the Link SDK logs them in; against a reference broker they are plain topics of
//! anonymous clients. Reports what was delivered and the server's CPU per delivered message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::{
    Args, Meter, Receiver, device_options, drain, http, now_us, options, payload, qos, receive,
    summary, ticker,
};

/// How the devices reach the broker.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Via {
    /// A connection per device.
    Direct,
    /// One connection for all of them.
    Gateway,
}

impl Via {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Gateway => "gateway",
        }
    }

    /// Connections `devices` devices take.
    fn connections(self, devices: usize) -> usize {
        match self {
            Via::Direct => devices,
            Via::Gateway => 1,
        }
    }
}

/// One run of the scenario.
pub(crate) struct GatewayRun<'a> {
    /// ironhub's admin API and token: devices and a gateway are made there. None: anonymous
    /// clients of a reference broker.
    pub(crate) api: Option<(SocketAddr, &'a str)>,
    pub(crate) devices: usize,
    /// Messages per second per device (0: as fast as flow control allows).
    pub(crate) rate: u64,
    pub(crate) q: u8,
    pub(crate) size: usize,
    pub(crate) seconds: u64,
    pub(crate) via: Via,
    /// TCP_NODELAY on the clients' sockets.
    pub(crate) nodelay: bool,
}

/// A connection to open: its options, the login requests it sends first (a gateway's
/// `batch_login`s: topic and body), and the topics it subscribes to and publishes on.
struct Connection {
    options: MqttOptions,
    logins: Vec<(String, String)>,
    topics: Vec<String>,
}

/// Sub-devices a `batch_login` names (a batch of 50 signed entries is about 12 KB).
const LOGIN_BATCH: usize = 50;

/// How long one step of a connection's setup may take.
const STEP: Duration = Duration::from_secs(10);

pub(crate) async fn run(args: &Args, run: GatewayRun<'_>) -> anyhow::Result<Value> {
    let connections = match run.api {
        Some((api, token)) => devices(args, api, token, &run).await?,
        None => anonymous(args, &run),
    };
    let mut opened = Vec::with_capacity(connections.len());
    for c in connections {
        opened.push(open(c, run.nodelay).await?);
    }
    let rx = Arc::new(Receiver::default());
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let meter = Meter::start(args);
    let start_us = now_us();
    let deadline = Instant::now() + Duration::from_secs(run.seconds);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (client, ev, topics) in opened {
        readers.push(tokio::spawn(receive(ev, rx.clone(), stop.clone())));
        // A connection carries its devices' rates together, round the topics in turn.
        let rate = run.rate * topics.len() as u64;
        writers.push(tokio::spawn(write(
            client,
            topics,
            (rate, qos(run.q), run.size),
            deadline,
            sent.clone(),
        )));
    }
    let mut clients = Vec::new();
    for w in writers {
        clients.push(w.await?);
    }
    let total = sent.load(Ordering::Relaxed);
    drain(&rx, total).await;
    let v = meter.finish(rx.count.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    for c in clients {
        let _ = c.disconnect().await;
    }
    let mut v = summary(v, &rx, total, total, start_us).await;
    v["connections"] = json!(run.via.connections(run.devices));
    Ok(v)
}

/// Anonymous clients publishing on `{prefix}/{i}/get`.
fn anonymous(args: &Args, run: &GatewayRun<'_>) -> Vec<Connection> {
    let prefix = format!("bench{}", now_us() % 100_000);
    let topics: Vec<String> = (0..run.devices)
        .map(|i| format!("{prefix}/{i}/get"))
        .collect();
    match run.via {
        Via::Direct => topics
            .into_iter()
            .enumerate()
            .map(|(i, t)| Connection {
                options: options(args, &format!("{prefix}-{i}")),
                logins: Vec::new(),
                topics: vec![t],
            })
            .collect(),
        Via::Gateway => vec![Connection {
            options: options(args, &format!("{prefix}-gw")),
            logins: Vec::new(),
            topics,
        }],
    }
}

/// Devices of a new tenant on ironhub, each on its `/{pk}/{dn}/user/get`; in gateway mode also a
/// gateway product and device, the devices attached to it as sub-devices.
async fn devices(
    args: &Args,
    api: SocketAddr,
    token: &str,
    run: &GatewayRun<'_>,
) -> anyhow::Result<Vec<Connection>> {
    let tenant = format!("bench-gateway-{}", now_us() % 100_000);
    let (pk, devices) = super::provision_devices(api, token, &tenant, run.devices).await?;
    let topic = |d: &super::Provisioned| format!("/{pk}/{}/user/get", d.name);
    if let Via::Direct = run.via {
        return Ok(devices
            .into_iter()
            .map(|d| Connection {
                topics: vec![topic(&d)],
                options: device_options(args, d.creds),
                logins: Vec::new(),
            })
            .collect());
    }
    let (gw_pk, gateway) = super::provision_product(
        api,
        token,
        &json!({ "tenant": tenant, "name": "gateway", "node_type": "gateway" }),
        1,
    )
    .await?;
    let gateway = gateway.into_iter().next().context("the gateway device")?;
    for d in &devices {
        let path = format!(
            "/api/v1/products/{gw_pk}/devices/{}/sub-devices/{pk}/{}",
            gateway.name, d.name
        );
        http(api, token, "PUT", &path, &Value::Null).await?;
    }
    let login_topic = format!("/ext/session/{gw_pk}/{}/combine/batch_login", gateway.name);
    let logins = devices
        .chunks(LOGIN_BATCH)
        .map(|batch| {
            let list: Vec<Value> = batch.iter().map(|d| login_entry(&pk, d)).collect();
            let body = json!({ "id": "1", "version": "1.0",
                               "params": { "signMethod": "hmacSha256", "deviceList": list } });
            (login_topic.clone(), body.to_string())
        })
        .collect();
    Ok(vec![Connection {
        topics: devices.iter().map(topic).collect(),
        options: device_options(args, gateway.creds),
        logins,
    }])
}

/// A `batch_login` entry for a sub-device, signed with its secret as the Link SDK signs it.
fn login_entry(pk: &str, d: &super::Provisioned) -> Value {
    let client_id = format!("{pk}.{}|lan=Python,_v=2.2.1,_ss=1|", d.name);
    let ts = ironhub_core::now_ms().to_string();
    let sign = ironhub_core::auth::sign(
        ironhub_core::auth::SignMethod::HmacSha256,
        &d.secret,
        &[
            ("clientId", &client_id),
            ("deviceName", &d.name),
            ("productKey", pk),
            ("timestamp", &ts),
        ],
    );
    json!({ "productKey": pk, "deviceName": d.name, "clientId": client_id, "timestamp": ts,
            "sign": sign, "cleanSession": "true" })
}

/// Connects, sends the logins (each answered 200 on its `_reply`) and subscribes to every topic.
async fn open(
    c: Connection,
    nodelay: bool,
) -> anyhow::Result<(AsyncClient, EventLoop, Vec<String>)> {
    let (client, mut ev) = AsyncClient::new(c.options, 1000);
    if nodelay {
        let mut network = ev.network_options();
        network.set_tcp_nodelay(true);
        ev.set_network_options(network);
    }
    next(&mut ev, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await?;
    for (topic, body) in c.logins {
        client
            .publish(topic.as_str(), QoS::AtMostOnce, false, body)
            .await?;
        let reply = format!("{topic}_reply");
        let mut answer = None;
        next(&mut ev, "the login's reply", |p| match p {
            Packet::Publish(p) if p.topic == reply => {
                answer = serde_json::from_slice::<Value>(&p.payload).ok();
                true
            }
            _ => false,
        })
        .await?;
        let answer = answer.unwrap_or(Value::Null);
        if answer["code"] != 200 {
            bail!("batch_login refused: {answer}");
        }
    }
    for t in &c.topics {
        client.subscribe(t.as_str(), QoS::AtLeastOnce).await?;
        next(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await?;
    }
    Ok((client, ev, c.topics))
}

/// Polls `ev` until a packet `wanted` accepts arrives.
async fn next(
    ev: &mut EventLoop,
    what: &str,
    mut wanted: impl FnMut(&Packet) -> bool,
) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(STEP, ev.poll()).await {
            Ok(Ok(Event::Incoming(p))) if wanted(&p) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("waiting for {what}: {e}"),
            Err(_) => bail!("no {what} within {STEP:?}"),
        }
    }
}

/// Publishes round `topics` at `rate` msg/s (0: as fast as the client takes them) until
/// `deadline`, counting each in `sent`; hands the client back so it stays connected while
/// deliveries drain.
async fn write(
    client: AsyncClient,
    topics: Vec<String>,
    (rate, q, size): (u64, QoS, usize),
    deadline: Instant,
    sent: Arc<AtomicU64>,
) -> AsyncClient {
    let mut tick = ticker(rate);
    for topic in topics.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        if client
            .publish(topic.as_str(), q, false, payload(size))
            .await
            .is_err()
        {
            break;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    client
}
