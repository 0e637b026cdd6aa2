//! `ironhub-bench`: a load generator for ironhub and reference MQTT brokers (MQTT 3.1.1).
//!
//! Scenarios: `fan-in` (N publishers at R msg/s each -> 1 subscriber; `--idle` holds slow clients
//! open meanwhile), `fan-out` (1 publisher -> M subscribers), `connect` (N idle connections over
//! several loopback source addresses, with signed device credentials from a file or anonymous),
//! `provision` (creates the devices for `connect` through ironhub's admin API), `amqp` (N devices
//! -> a consumer group -> an AMQP consumer on RabbitMQ), `churn` (clients connecting and
//! leaving, N at a time: the server's memory before and after), `history` (property posts kept as
//! time series) and `gateway` (N devices each on its own connection, or all behind one gateway). Each run prints a table row and
//! appends JSON to `--json`. Payloads carry their send time, so latency is end to end. The
//! server's CPU time and memory come from /proc (`--server-pid`); the generator checks its own
//! CPU so it can say when it was the bottleneck.

mod churn;
mod gateway;
mod history;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ironhub_benches::{ProcStats, percentiles, proc_stats};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(
    name = "ironhub-bench",
    about = "MQTT load generator: ironhub side by side with a reference broker"
)]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    target: SocketAddr,
    /// The broker's process id, to read its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of the broker in the results.
    #[arg(long, default_value = "server")]
    label: String,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N publishers at R msg/s each (0 = as fast as flow control allows) -> 1 subscriber.
    FanIn {
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The subscriber keeps a persistent session (clean session off): what the broker
        /// acknowledges for it must survive a crash.
        #[arg(long)]
        persistent: bool,
        /// TCP connections held open during the run that never send CONNECT (slow clients).
        #[arg(long, default_value_t = 0)]
        idle: usize,
        /// How many of the idle connections send half of a CONNECT and stop (half-open).
        #[arg(long, default_value_t = 0)]
        half_open: usize,
    },
    /// 1 publisher at R msg/s -> M subscribers.
    FanOut {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// N idle connections (keep-alive 1200 s) spread over source addresses.
    Connect {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Loopback source addresses to connect from.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
        sources: Vec<IpAddr>,
        /// Signed device credentials, one JSON object per line (from `provision`); anonymous
        /// when absent.
        #[arg(long)]
        devices: Option<PathBuf>,
        /// Connections in progress at once.
        #[arg(long, default_value_t = 256)]
        parallel: usize,
    },
    /// N devices (created through the admin API) at R msg/s each -> a consumer group on RabbitMQ
    /// -> one AMQP consumer: end-to-end latency and sustained rate through the AMQP sink.
    Amqp {
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: SocketAddr,
        #[arg(long, env = "IRONHUB_ADMIN_TOKEN")]
        token: String,
        /// The broker ironhub's `[amqp]` points at, for the consumer.
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// N devices post their properties (QoS 1) on a tenant keeping `retention_days` of history
    /// (0: none): posts acknowledged per second, CPU per post, store growth per million values.
    History {
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: SocketAddr,
        #[arg(long, env = "IRONHUB_ADMIN_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Posts per second per device (0: as fast as acknowledgements come).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 5)]
        properties: usize,
        #[arg(long, default_value_t = 30)]
        retention_days: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The hub's data directory, to measure the store's growth.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Post binary frames on `up_raw`, parsed by the product's script (a data parsing
        /// script turning them into the same property posts).
        #[arg(long)]
        raw: bool,
    },
    /// N devices each publish at R msg/s on a topic of their own that they subscribe to, each on
    /// its own connection (`--via direct`) or all on one (`--via gateway`: on ironhub, given
    /// `--api`, sub-devices logged in through a gateway device; plain topics otherwise).
    Gateway {
        /// ironhub's admin API (devices and the gateway are made there); anonymous clients of
        /// a reference broker when absent.
        #[arg(long)]
        api: Option<SocketAddr>,
        #[arg(long, env = "IRONHUB_ADMIN_TOKEN", default_value = "")]
        token: String,
        #[arg(long, value_enum, default_value = "gateway")]
        via: gateway::Via,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 10)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Set TCP_NODELAY on the clients' sockets (off by default, as in rumqttc and most
        /// device SDKs): each packet goes out at once instead of waiting under Nagle's algorithm.
        #[arg(long)]
        nodelay: bool,
    },
    /// Creates a product and N devices through ironhub's admin API and writes their signed
    /// credentials, one JSON line each.
    Provision {
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: SocketAddr,
        #[arg(long, env = "IRONHUB_ADMIN_TOKEN")]
        token: String,
        #[arg(long, default_value = "bench")]
        tenant: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Clients that connect, subscribe, publish to themselves and disconnect, N at a time, half
    /// with clean sessions and half persistent: the server's memory before and after.
    Churn {
        #[arg(long, default_value_t = 500)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn payload(size: usize) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(8)];
    p[..8].copy_from_slice(&now_us().to_be_bytes());
    p
}

fn options(args: &Args, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, args.target.ip().to_string(), args.target.port());
    o.set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// [`options`] for an ironhub device signing in with `creds`.
fn device_options(args: &Args, creds: ironhub_core::auth::MqttCredentials) -> MqttOptions {
    let mut o = options(args, &creds.client_id);
    o.set_credentials(creds.username, creds.password);
    o
}

/// Paces sends at `rate` a second (None for 0: as fast as the client takes them); late ticks
/// are caught up.
fn ticker(rate: u64) -> Option<tokio::time::Interval> {
    (rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    })
}

/// Counts deliveries and their latencies, shared by subscriber tasks.
#[derive(Default)]
struct Receiver {
    count: AtomicU64,
    /// When the last delivery arrived (µs since the epoch).
    last_us: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

async fn subscribe(
    args: &Args,
    id: String,
    filter: &str,
    q: u8,
    persistent: bool,
    rx: Arc<Receiver>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut opts = options(args, &id);
    opts.set_clean_session(!persistent);
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    client.subscribe(filter, qos(q)).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("subscriber {id}: {e}"),
            Err(_) => bail!("subscriber {id}: no SUBACK"),
        }
    }
    Ok(tokio::spawn(async move {
        let _client = client;
        receive(ev, rx, stop).await;
    }))
}

/// Drives a connection and counts what it gets back, with latencies (from the send time in the
/// payload's first 8 bytes), until `stop`.
async fn receive(mut ev: EventLoop, rx: Arc<Receiver>, stop: Arc<AtomicBool>) {
    let mut local = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                rx.count.fetch_add(1, Ordering::Relaxed);
                rx.last_us.store(now_us(), Ordering::Relaxed);
                if p.payload.len() >= 8 {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().expect("8 bytes"));
                    local.push(now_us().saturating_sub(sent));
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    rx.latencies.lock().await.extend(local);
}

/// Runs one client per (options, topic) for `seconds`, each at `rate` msg/s (0: unthrottled);
/// returns how many were sent.
async fn publish(
    clients: Vec<(MqttOptions, String)>,
    rate: u64,
    q: u8,
    size: usize,
    seconds: u64,
) -> anyhow::Result<u64> {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (opts, topic) in clients {
        let (client, mut ev) = AsyncClient::new(opts, 1000);
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let written = sent.clone();
            // Counts what was written to the socket, not what was queued in the client.
            let driver = tokio::spawn(async move {
                loop {
                    match ev.poll().await {
                        Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
            let mut tick = ticker(rate);
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if client
                    .publish(topic.as_str(), qos(q), false, payload(size))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Let in-flight QoS 1 publishes complete before the connection goes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            driver.abort();
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// Waits until `rx` has `expected` or stops growing for 2 s.
async fn drain(rx: &Receiver, expected: u64) {
    let mut last = (rx.count.load(Ordering::Relaxed), Instant::now());
    while rx.count.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rx.count.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
    }
}

struct Meter {
    server: Option<String>,
    start: Instant,
    server0: Option<ProcStats>,
    self0: ProcStats,
}

impl Meter {
    fn start(args: &Args) -> Meter {
        let server = args.server_pid.map(|p| p.to_string());
        let server0 = server.as_deref().and_then(proc_stats);
        Meter {
            server,
            start: Instant::now(),
            server0,
            self0: proc_stats("self").unwrap_or_default(),
        }
    }

    fn finish(&self, delivered: u64) -> Value {
        let elapsed = self.start.elapsed().as_secs_f64();
        let server1 = self.server.as_deref().and_then(proc_stats);
        let self1 = proc_stats("self").unwrap_or_default();
        let gen_cores = (self1.cpu - self.self0.cpu).as_secs_f64() / elapsed;
        let mut v = json!({ "elapsed_s": elapsed, "generator_cores": gen_cores,
                            "generator_saturated": gen_cores > 0.9 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64 });
        if let (Some(a), Some(b)) = (self.server0, server1) {
            let cpu = (b.cpu - a.cpu).as_secs_f64();
            v["server_cpu_s"] = json!(cpu);
            v["server_cpu_us_per_msg"] = json!(if delivered > 0 {
                cpu * 1e6 / delivered as f64
            } else {
                0.0
            });
            v["server_rss_bytes"] = json!(b.rss);
            v["server_rss_growth_bytes"] = json!(b.rss as i64 - a.rss as i64);
        }
        v
    }
}

/// Who sends and receives in a fan scenario, and how.
struct Fan {
    publishers: usize,
    subscribers: usize,
    rate: u64,
    qos: u8,
    size: usize,
    seconds: u64,
    persistent: bool,
    /// Idle connections held during the run, and how many of them are half-open.
    idle: (usize, usize),
}

/// Opens `idle` TCP connections that never complete a CONNECT; the first `half_open` send half
/// of one. They stay open while the returned streams live (unless the server closes them).
async fn hold_idle(
    target: SocketAddr,
    idle: usize,
    half_open: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let half = connect_packet("half-open", None);
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut s = TcpStream::connect(target).await?;
        if i < half_open {
            s.write_all(&half[..half.len() / 2]).await?;
        }
        held.push(s);
    }
    Ok(held)
}

async fn fan(args: &Args, f: Fan) -> anyhow::Result<Value> {
    let Fan {
        publishers,
        subscribers,
        rate,
        qos: q,
        size,
        seconds,
        persistent,
        idle,
    } = f;
    let idle = hold_idle(args.target, idle.0, idle.1).await?;
    let prefix = format!("bench{}", now_us() % 100_000);
    let rx = Arc::new(Receiver::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut subs = Vec::new();
    for i in 0..subscribers {
        subs.push(
            subscribe(
                args,
                format!("{prefix}-sub-{i}"),
                &format!("{prefix}/#"),
                q,
                persistent,
                rx.clone(),
                stop.clone(),
            )
            .await?,
        );
    }
    let meter = Meter::start(args);
    let start_us = now_us();
    let clients = (0..publishers)
        .map(|i| {
            let opts = options(args, &format!("{prefix}-pub-{i}"));
            (opts, format!("{prefix}/{i}"))
        })
        .collect();
    let sent = publish(clients, rate, q, size, seconds).await?;
    let expected = sent * subscribers as u64;
    drain(&rx, expected).await;
    let delivered = rx.count.load(Ordering::Relaxed);
    let v = meter.finish(delivered);
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    let mut v = summary(v, &rx, sent, expected, start_us).await;
    v["idle_held"] = json!(idle.len());
    Ok(v)
}

/// Adds what was sent, delivered and lost, the delivered rate and the latencies to `v`.
async fn summary(mut v: Value, rx: &Receiver, sent: u64, expected: u64, start_us: u64) -> Value {
    let delivered = rx.count.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *rx.latencies.lock().await);
    v["sent"] = json!(sent);
    v["expected"] = json!(expected);
    v["delivered"] = json!(delivered);
    v["lost"] = json!(expected.saturating_sub(delivered));
    let span_s = (rx.last_us.load(Ordering::Relaxed).saturating_sub(start_us)) as f64 / 1e6;
    v["delivered_per_s"] = json!(if span_s > 0.0 {
        delivered as f64 / span_s
    } else {
        0.0
    });
    v["latency"] = json!(percentiles(&mut lat));
    v
}

/// Counts what an AMQP consumer of `queue` receives, with latencies from the payloads' send time.
async fn consume_amqp(
    url: &str,
    queue: &str,
    rx: Arc<Receiver>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("connect to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let _connection = connection;
        let mut local = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
            else {
                continue;
            };
            let upstream =
                delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some("upstream");
            if upstream && delivery.data.len() >= 8 {
                rx.count.fetch_add(1, Ordering::Relaxed);
                rx.last_us.store(now_us(), Ordering::Relaxed);
                let sent = u64::from_be_bytes(delivery.data[..8].try_into().expect("8 bytes"));
                local.push(now_us().saturating_sub(sent));
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        rx.latencies.lock().await.extend(local);
    }))
}

/// The `amqp` scenario's settings.
struct AmqpRun<'a> {
    api: SocketAddr,
    token: &'a str,
    amqp_url: &'a str,
    publishers: usize,
    rate: u64,
    q: u8,
    size: usize,
    seconds: u64,
}

async fn amqp(args: &Args, run: AmqpRun<'_>) -> anyhow::Result<Value> {
    let tenant = format!("bench-amqp-{}", now_us() % 100_000);
    let (pk, devices) = provision_devices(run.api, run.token, &tenant, run.publishers).await?;
    let group = http(
        run.api,
        run.token,
        "POST",
        &format!("/api/v1/tenants/{tenant}/consumer-groups"),
        &json!({ "name": "bench" }),
    )
    .await?;
    let id = group["id"].as_str().context("group id")?;
    let queue = group["queue"].as_str().context("group queue")?;
    http(
        run.api,
        run.token,
        "PUT",
        &format!("/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}"),
        &Value::Null,
    )
    .await?;
    let rx = Arc::new(Receiver::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = consume_amqp(run.amqp_url, queue, rx.clone(), stop.clone()).await?;
    let clients = devices
        .into_iter()
        .map(|d| {
            let topic = format!("/{pk}/{}/user/data", d.name);
            (device_options(args, d.creds), topic)
        })
        .collect();
    let meter = Meter::start(args);
    let start_us = now_us();
    let sent = publish(clients, run.rate, run.q, run.size, run.seconds).await?;
    drain(&rx, sent).await;
    let v = meter.finish(rx.count.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.await;
    Ok(summary(v, &rx, sent, sent, start_us).await)
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 1200 s so idle connections send nothing).
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let connect = rmqtt_codec::v3::Connect {
        clean_session: true,
        keep_alive: 1200,
        client_id: client_id.into(),
        username: login.map(|(u, _)| u.into()),
        password: login.map(|(_, p)| bytes::Bytes::copy_from_slice(p.as_bytes())),
        ..Default::default()
    };
    let mut buf = bytes::BytesMut::new();
    rmqtt_codec::v3::Codec::new(0)
        .encode(
            rmqtt_codec::v3::Packet::Connect(Box::new(connect)),
            &mut buf,
        )
        .expect("a CONNECT encodes");
    buf.to_vec()
}

async fn open_one(
    target: SocketAddr,
    source: IpAddr,
    packet: Vec<u8>,
) -> anyhow::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let mut s = socket.connect(target).await?;
    s.write_all(&packet).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut ack))
        .await
        .context("no CONNACK")??;
    if ack[0] != 0x20 || ack[3] != 0 {
        bail!("refused: CONNACK {ack:?}");
    }
    Ok(s)
}

async fn connect(
    args: &Args,
    connections: usize,
    sources: &[IpAddr],
    devices: Option<&PathBuf>,
    parallel: usize,
) -> anyhow::Result<Value> {
    let creds: Vec<Value> = match devices {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if devices.is_some() && creds.len() < connections {
        bail!("{} credentials for {connections} connections", creds.len());
    }
    let prefix = format!("idle{}", now_us() % 100_000);
    let meter = Meter::start(args);
    let held = Arc::new(Mutex::new(Vec::with_capacity(connections)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for i in 0..connections {
        let packet = match creds.get(i) {
            Some(c) => connect_packet(
                c["client_id"].as_str().unwrap_or_default(),
                Some((
                    c["username"].as_str().unwrap_or_default(),
                    c["password"].as_str().unwrap_or_default(),
                )),
            ),
            None => connect_packet(&format!("{prefix}-{i}"), None),
        };
        let (held, errors, gate) = (held.clone(), errors.clone(), gate.clone());
        let (target, source) = (args.target, sources[i % sources.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            match open_one(target, source, packet).await {
                Ok(s) => held.lock().await.push(s),
                Err(e) => {
                    // Out of file descriptors (EMFILE) or ports: back off instead of storming.
                    errors.lock().await.push(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let connected = held.lock().await.len() as u64;
    let elapsed = meter.start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await; // let the server settle before reading RSS
    let mut v = meter.finish(connected);
    let errors = errors.lock().await;
    v["connections"] = json!(connections);
    v["connected"] = json!(connected);
    v["connects_per_s"] = json!(connected as f64 / elapsed);
    v["authenticated"] = json!(devices.is_some());
    if let Some(growth) = v["server_rss_growth_bytes"].as_i64() {
        v["rss_per_connection_bytes"] = json!(growth as f64 / connected.max(1) as f64);
    }
    v["errors"] = json!(errors.len());
    if let Some(first) = errors.first() {
        v["first_error"] = json!(first);
    }
    Ok(v)
}

async fn http(
    api: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    http_text(
        api,
        token,
        (method, path),
        ("application/json", &body.to_string()),
    )
    .await
}

/// A request to the admin API with a body of `content_type`; its JSON answer.
async fn http_text(
    api: SocketAddr,
    token: &str,
    (method, path): (&str, &str),
    (content_type, body): (&str, &str),
) -> anyhow::Result<Value> {
    let mut s = TcpStream::connect(api).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 2") {
        bail!("{method} {path}: {head} {body}");
    }
    Ok(serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn provision(
    api: SocketAddr,
    token: &str,
    tenant: &str,
    count: usize,
    out: &PathBuf,
) -> anyhow::Result<Value> {
    let (pk, devices) = provision_devices(api, token, tenant, count).await?;
    let mut lines = String::new();
    for d in &devices {
        lines.push_str(&serde_json::to_string(&d.creds)?);
        lines.push('\n');
    }
    std::fs::write(out, lines)?;
    Ok(json!({ "product_key": pk, "devices": count }))
}

/// A profile without rate limits, data-point window or monthly quota, so provisioning,
/// connecting and publishing are measured, not throttled.
fn bench_profile() -> Value {
    json!({ "rates": { "registry_operations": "", "tenant_connections": "", "device_connections": "",
                       "tenant_messages": "", "device_messages_qos0": "", "device_messages_qos1": "",
                       "sub_device_logins": "" },
            "data_points_per_hour": 0, "monthly": { "transport_messages": 0, "transport_data_points": 0 } })
}

/// A device made through the admin API: its name, secret and signed MQTT credentials.
struct Provisioned {
    name: String,
    secret: String,
    creds: ironhub_core::auth::MqttCredentials,
}

/// Creates a tenant with [`bench_profile`], a product and `count` devices.
async fn provision_devices(
    api: SocketAddr,
    token: &str,
    tenant: &str,
    count: usize,
) -> anyhow::Result<(String, Vec<Provisioned>)> {
    let profile = bench_profile();
    http(
        api,
        token,
        "PUT",
        &format!("/api/v1/profiles/{tenant}"),
        &profile,
    )
    .await?;
    let _ = http(
        api,
        token,
        "POST",
        "/api/v1/tenants",
        &json!({ "id": tenant, "profile": tenant }),
    )
    .await;
    provision_product(
        api,
        token,
        &json!({ "tenant": tenant, "name": "bench" }),
        count,
    )
    .await
}

/// Creates the product `product` describes and `count` devices of it; returns its ProductKey and
/// the devices.
async fn provision_product(
    api: SocketAddr,
    token: &str,
    product: &Value,
    count: usize,
) -> anyhow::Result<(String, Vec<Provisioned>)> {
    let p = http(api, token, "POST", "/api/v1/products", product).await?;
    let pk = p["product_key"].as_str().context("product_key")?.to_owned();
    let mut devices = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("bench-{i:06}");
        let d = http(
            api,
            token,
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            &json!({ "device_name": name }),
        )
        .await?;
        let secret = d["device_secret"]
            .as_str()
            .context("device_secret")?
            .to_owned();
        let creds =
            ironhub_core::auth::device_credentials(&pk, &name, &secret, ironhub_core::now_ms());
        devices.push(Provisioned {
            name,
            secret,
            creds,
        });
    }
    Ok((pk, devices))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (name, params, result) = match &args.scenario {
        Scenario::FanIn {
            publishers,
            rate,
            qos,
            payload,
            seconds,
            persistent,
            idle,
            half_open,
        } => (
            "fan-in",
            json!({ "publishers": publishers, "rate": rate, "qos": qos, "payload": payload, "seconds": seconds, "persistent": persistent, "idle": idle, "half_open": half_open }),
            fan(
                &args,
                Fan {
                    publishers: *publishers,
                    subscribers: 1,
                    rate: *rate,
                    qos: *qos,
                    size: *payload,
                    seconds: *seconds,
                    persistent: *persistent,
                    idle: (*idle, *half_open),
                },
            )
            .await?,
        ),
        Scenario::FanOut {
            subscribers,
            rate,
            qos,
            payload,
            seconds,
        } => (
            "fan-out",
            json!({ "subscribers": subscribers, "rate": rate, "qos": qos, "payload": payload, "seconds": seconds }),
            fan(
                &args,
                Fan {
                    publishers: 1,
                    subscribers: *subscribers,
                    rate: *rate,
                    qos: *qos,
                    size: *payload,
                    seconds: *seconds,
                    persistent: false,
                    idle: (0, 0),
                },
            )
            .await?,
        ),
        Scenario::Connect {
            connections,
            sources,
            devices,
            parallel,
        } => (
            "connect",
            json!({ "connections": connections, "sources": sources.len() }),
            connect(&args, *connections, sources, devices.as_ref(), *parallel).await?,
        ),
        Scenario::Amqp {
            api,
            token,
            amqp_url,
            publishers,
            rate,
            qos,
            payload,
            seconds,
        } => (
            "amqp",
            json!({ "publishers": publishers, "rate": rate, "qos": qos, "payload": payload, "seconds": seconds }),
            amqp(
                &args,
                AmqpRun {
                    api: *api,
                    token,
                    amqp_url,
                    publishers: *publishers,
                    rate: *rate,
                    q: *qos,
                    size: *payload,
                    seconds: *seconds,
                },
            )
            .await?,
        ),
        Scenario::History {
            api,
            token,
            devices,
            rate,
            properties,
            retention_days,
            seconds,
            data_dir,
            raw,
        } => (
            "history",
            json!({ "devices": devices, "rate": rate, "properties": properties, "retention_days": retention_days, "seconds": seconds, "raw": raw }),
            history::run(
                &args,
                history::HistoryRun {
                    api: *api,
                    token,
                    devices: *devices,
                    rate: *rate,
                    properties: *properties,
                    retention_days: *retention_days,
                    seconds: *seconds,
                    data_dir: data_dir.as_deref(),
                    raw: *raw,
                },
            )
            .await?,
        ),
        Scenario::Gateway {
            api,
            token,
            via,
            devices,
            rate,
            qos,
            payload,
            seconds,
            nodelay,
        } => (
            "gateway",
            json!({ "devices": devices, "via": via.name(),
                    "devices_made_on": api.map(|_| "ironhub"), "rate": rate, "qos": qos, "payload": payload, "seconds": seconds,
                    "nodelay": nodelay }),
            gateway::run(
                &args,
                gateway::GatewayRun {
                    api: api.map(|a| (a, token.as_str())),
                    devices: *devices,
                    rate: *rate,
                    q: *qos,
                    size: *payload,
                    seconds: *seconds,
                    via: *via,
                    nodelay: *nodelay,
                },
            )
            .await?,
        ),
        Scenario::Churn {
            clients,
            warmup,
            seconds,
            settle,
        } => (
            "churn",
            json!({ "clients": clients, "warmup": warmup, "seconds": seconds }),
            churn::run(
                args.target,
                args.server_pid.map(|p| p.to_string()).as_deref(),
                churn::Churn {
                    clients: *clients,
                    warmup_secs: *warmup,
                    seconds: *seconds,
                    settle_secs: *settle,
                },
            )
            .await?,
        ),
        Scenario::Provision {
            api,
            token,
            tenant,
            count,
            out,
        } => {
            let r = provision(*api, token, tenant, *count, out).await?;
            println!("{r}");
            return Ok(());
        }
    };
    let row = json!({ "scenario": name, "server": args.label, "params": params, "result": result });
    println!("{row}");
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{row}")?;
    }
    Ok(())
}
