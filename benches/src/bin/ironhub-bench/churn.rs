//! The `churn` scenario: clients that connect, subscribe, publish to themselves, receive, and
//! disconnect, over and over, a fixed number at a time; half with clean sessions (a new client
//! id each round), half persistent (one client id per worker, so the broker keeps a bounded set
//! of stored sessions). It reads the server's memory after a warm-up and again when the churn has
//! settled: a server that leaks per connection or per session grows between the two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ironhub_benches::proc_stats;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// How long to churn and with how many clients at a time.
pub struct Churn {
    /// Clients connected (or connecting) at once.
    pub clients: usize,
    /// Churn before the baseline is read (the server's one-time growth: tables, pools).
    pub warmup_secs: u64,
    /// Churn measured against the baseline.
    pub seconds: u64,
    /// Quiet time after each phase before memory is read.
    pub settle_secs: u64,
}

/// What the workers counted.
#[derive(Default)]
struct Tally {
    rounds: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// One round of one client: connect, subscribe to its topic, publish QoS 1 there, receive it,
/// disconnect.
async fn round(target: SocketAddr, id: &str, persistent: bool, topic: &str) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(id, target.ip().to_string(), target.port());
    opts.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(!persistent);
    let (client, mut ev) = AsyncClient::new(opts, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    client
        .publish(topic, QoS::AtLeastOnce, false, id.as_bytes().to_vec())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, ev.poll())
            .await
            .map_err(|_| anyhow::anyhow!("round of {id} did not complete in 10 s"))?;
        match event? {
            Event::Incoming(Packet::Publish(p)) if p.payload == id.as_bytes() && !received => {
                received = true;
                client.disconnect().await?;
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// Churns with `clients` workers until `until`.
async fn churn_until(
    target: SocketAddr,
    prefix: &str,
    clients: usize,
    until: Instant,
    tally: &Arc<Tally>,
) {
    let mut workers = Vec::with_capacity(clients);
    for worker in 0..clients {
        let (prefix, tally) = (prefix.to_owned(), tally.clone());
        workers.push(tokio::spawn(async move {
            let persistent = worker % 2 == 1;
            let topic = format!("{prefix}/{worker}");
            let mut n = 0u64;
            while Instant::now() < until {
                let id = if persistent {
                    format!("{prefix}-p{worker}")
                } else {
                    format!("{prefix}-c{worker}-{n}")
                };
                n += 1;
                match round(target, &id, persistent, &topic).await {
                    Ok(()) => {
                        tally.rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        tally.first_error.lock().await.get_or_insert(e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// Runs the scenario; memory figures need the server's pid.
pub async fn run(target: SocketAddr, server: Option<&str>, c: Churn) -> anyhow::Result<Value> {
    let prefix = format!("churn{}", std::process::id());
    let rss = || server.and_then(proc_stats).map(|s| s.rss);
    let cpu = || server.and_then(proc_stats).map(|s| s.cpu);
    let warmup = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(c.warmup_secs);
    churn_until(target, &prefix, c.clients, until, &warmup).await;
    tokio::time::sleep(Duration::from_secs(c.settle_secs)).await;
    let (rss_before, cpu_before) = (rss(), cpu());

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let until = start + Duration::from_secs(c.seconds);
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampler = {
        let (peak, server) = (peak.clone(), server.map(str::to_owned));
        tokio::spawn(async move {
            while let Some(s) = server.as_deref().and_then(proc_stats) {
                peak.fetch_max(s.rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    churn_until(target, &prefix, c.clients, until, &tally).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = cpu();
    sampler.abort();
    tokio::time::sleep(Duration::from_secs(c.settle_secs)).await;
    let rss_after = rss();

    let rounds = tally.rounds.load(Ordering::Relaxed);
    let mut v = json!({
        "rounds": rounds,
        "rounds_per_s": rounds as f64 / elapsed,
        "warmup_rounds": warmup.rounds.load(Ordering::Relaxed),
        "errors": tally.errors.load(Ordering::Relaxed) + warmup.errors.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
    });
    let first = tally.first_error.lock().await.take();
    if let Some(e) = first.or(warmup.first_error.lock().await.take()) {
        v["first_error"] = json!(e);
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        v["server_rss_before_bytes"] = json!(before);
        v["server_rss_peak_bytes"] = json!(peak.load(Ordering::Relaxed));
        v["server_rss_after_bytes"] = json!(after);
        v["server_rss_change_pct"] = json!((after as f64 / before as f64 - 1.0) * 100.0);
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        v["server_cpu_us_per_round"] = json!((b - a).as_secs_f64() * 1e6 / rounds.max(1) as f64);
    }
    Ok(v)
}
