//! Forwarding: events leaving the hub for business servers (server-side subscription).
//!
//! An [`Event`] is a device's upstream message or a notification about a device (status,
//! lifecycle), addressed to one or more [`Destination`]s: queues of a sink (a consumer group's
//! RabbitMQ queue, an SQS queue). One worker per sink batches events per destination and hands
//! them to the [`Sink`]; whatever the sink does not confirm is written to the store's outbox in the
//! same order and sent again with back-off, oldest first, until the destination's retention
//! expires it. A QoS 1 publisher is answered only once its event is confirmed or in the outbox,
//! so an acknowledged message is never lost, while a sink outage costs devices one store write per
//! batch instead of a refusal.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::EgressEnv;
use super::retry::Retries;
use crate::data::event::{Destination, Event};
use crate::sink::{Sink, SinkError};
use crate::store::records::{self, OutboxRow};
use crate::store::{self, StoreError, transact};

/// Counters of one sink, for metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events the destination confirmed (directly or from the outbox).
    pub confirmed: AtomicU64,
    /// Events written to the outbox because the sink could not confirm them in time.
    pub stored: AtomicU64,
    /// Events sent from the outbox (confirmed, or rejected for good).
    pub resent: AtomicU64,
    /// Failed send attempts (batches).
    pub send_failures: AtomicU64,
    /// QoS 0 upstream events dropped because the sink's buffer was full.
    pub dropped_buffer_full: AtomicU64,
    /// Events dropped from the outbox past their destination's retention.
    pub expired: AtomicU64,
    /// Events the destination refused for good (dropped, never retried).
    pub rejected: AtomicU64,
    /// Batches the destination confirmed.
    pub batches: AtomicU64,
    /// Events waiting in the outbox now.
    pub outbox: AtomicI64,
}

/// A point-in-time copy of a sink's counters.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkStatsSnapshot {
    /// The sink's name.
    pub sink: String,
    /// Events confirmed.
    pub confirmed: u64,
    /// Events written to the outbox.
    pub stored: u64,
    /// Events sent from the outbox.
    pub resent: u64,
    /// Failed send attempts.
    pub send_failures: u64,
    /// QoS 0 events dropped at a full buffer.
    pub dropped_buffer_full: u64,
    /// Events expired in the outbox.
    pub expired: u64,
    /// Events the destination refused for good.
    pub rejected: u64,
    /// Batches confirmed.
    pub batches: u64,
    /// Events in the outbox now.
    pub outbox: u64,
    /// Events in the in-memory buffer now.
    pub buffered: u64,
}

/// Settings of the forwarder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwarderSettings {
    /// Events buffered in memory per sink.
    pub(crate) buffer: usize,
    /// Most events per batch.
    pub(crate) batch: usize,
    /// How long a send may take before its events go to the outbox.
    pub(crate) send_timeout: Duration,
}

/// How a copy of an event was made safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// The destination confirmed it.
    Confirmed,
    /// It is in the store, for the outbox or its owner's retries.
    Stored,
}

/// What becomes of a copy its sink did not confirm.
enum Unconfirmed {
    /// The sink's outbox: sent again in order, with back-off, until the destination's retention
    /// passes (consumer groups: at least once).
    Outbox,
    /// Its owner's retry schedule, as `body` (a rule output: attempts after 1, 3 and 10 s, then
    /// its error destination).
    Retry(Arc<Retries>, Vec<u8>),
}

struct Job {
    destination: Arc<Destination>,
    event: Arc<Event>,
    /// Told once the event is confirmed or stored; dropped if it could be neither.
    done: Option<oneshot::Sender<Kept>>,
    unconfirmed: Unconfirmed,
}

impl Job {
    fn retries(&self) -> bool {
        matches!(self.unconfirmed, Unconfirmed::Retry(..))
    }
}

struct Worker {
    tx: mpsc::Sender<Job>,
    sink: Arc<dyn Sink>,
    stats: Arc<SinkStats>,
}

/// Resolves once an event is safe: confirmed by every destination, or in the outbox.
pub type Confirmation =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ForwardError>> + Send>>;

/// The sinks attached to a hub and their workers.
pub(crate) struct Forwarder {
    env: EgressEnv,
    workers: std::sync::RwLock<HashMap<String, Worker>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why an event could not be forwarded safely.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Neither the sink confirmed it nor the store kept it.
    #[error("event neither confirmed nor stored: {0}")]
    NotKept(String),
}

impl From<StoreError> for ForwardError {
    fn from(e: StoreError) -> Self {
        ForwardError::NotKept(e.to_string())
    }
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Forwarder {
    pub(crate) fn new(env: EgressEnv) -> Forwarder {
        Forwarder {
            env,
            workers: std::sync::RwLock::default(),
            tasks: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn attach(&self, sink: Arc<dyn Sink>, settings: ForwarderSettings) {
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        let stats = Arc::new(SinkStats::default());
        let name = sink.name().to_owned();
        let run = SinkRun {
            env: self.env.clone(),
            sink: sink.clone(),
            stats: stats.clone(),
            settings,
            backlog: true,
            retry_at: Instant::now(),
            backoff: RETRY_MIN,
        };
        let task = tokio::spawn(run.run(rx));
        self.tasks.lock().expect("forwarder lock").push(task);
        let worker = Worker { tx, sink, stats };
        self.workers
            .write()
            .expect("forwarder lock")
            .insert(name, worker);
    }

    /// Creates a destination's queue on its sink.
    pub(crate) async fn prepare(&self, destination: &Destination) -> Result<(), SinkError> {
        let sink = {
            let workers = self.workers.read().expect("forwarder lock");
            workers.get(&destination.sink).map(|w| w.sink.clone())
        };
        match sink {
            Some(sink) => sink.prepare(destination).await,
            None => Err(SinkError::Unavailable(format!(
                "sink {} is not configured",
                destination.sink
            ))),
        }
    }

    /// Asks a destination's sink for consumer credentials.
    pub(crate) async fn grant_consumer(
        &self,
        destination: &Destination,
        max_consumers: u64,
    ) -> Result<Option<crate::sink::ConsumerCredentials>, SinkError> {
        match self.sink(&destination.sink) {
            Some(sink) => sink.grant_consumer(destination, max_consumers).await,
            None => Ok(None),
        }
    }

    /// Asks a destination's sink to remove its consumer credentials.
    pub(crate) async fn revoke_consumer(&self, destination: &Destination) -> Result<(), SinkError> {
        match self.sink(&destination.sink) {
            Some(sink) => sink.revoke_consumer(destination).await,
            None => Ok(()),
        }
    }

    /// The queue of a sink's worker and its counters.
    fn worker(&self, sink: &str) -> Option<(mpsc::Sender<Job>, Arc<SinkStats>)> {
        let workers = self.workers.read().expect("forwarder lock");
        workers.get(sink).map(|w| (w.tx.clone(), w.stats.clone()))
    }

    pub(crate) fn sink(&self, name: &str) -> Option<Arc<dyn Sink>> {
        let workers = self.workers.read().expect("forwarder lock");
        workers.get(name).map(|w| w.sink.clone())
    }

    /// Hands `event` to the worker of each destination's sink. With `wait`, returns once every
    /// copy is confirmed or stored; without, a full buffer drops the event (counted).
    pub(crate) async fn forward(
        &self,
        destinations: &[Arc<Destination>],
        event: Event,
        wait: bool,
    ) -> Result<(), ForwardError> {
        self.enqueue(destinations, event, wait).await?.await
    }

    /// Hands an event to the sinks' workers; with `wait`, the returned future resolves once
    /// every destination confirmed it or it is in the outbox (the caller may keep working
    /// meanwhile, as an MQTT connection reading the next PUBLISH does).
    pub(crate) async fn enqueue(
        &self,
        destinations: &[Arc<Destination>],
        event: Event,
        wait: bool,
    ) -> Result<Confirmation, ForwardError> {
        let event = Arc::new(event);
        let mut pending = Vec::new();
        for destination in destinations {
            let (done, confirmed) = if wait {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let job = Job {
                destination: destination.clone(),
                event: event.clone(),
                done,
                unconfirmed: Unconfirmed::Outbox,
            };
            let Some((tx, stats)) = self.worker(&destination.sink) else {
                // The sink is not configured on this node: keep the event for when it is.
                store_jobs(&self.env, &destination.sink, &[job]).await?;
                continue;
            };
            if wait {
                tx.send(job)
                    .await
                    .map_err(|_| ForwardError::NotKept("the hub is stopping".into()))?;
                pending.extend(confirmed);
            } else if tx.try_send(job).is_err() {
                stats.dropped_buffer_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Box::pin(async move {
            for confirmed in pending {
                confirmed
                    .await
                    .map_err(|_| ForwardError::NotKept("the sink worker gave up".into()))?;
            }
            Ok(())
        }))
    }

    /// Hands one copy of an event to its sink's worker, to go out in the sink's next batch; if
    /// the sink does not confirm it, it is kept on `retries` (with `body`, what its owner
    /// attempts it again from) instead of the outbox. The future says which, once it is safe.
    pub(crate) async fn enqueue_retrying(
        &self,
        destination: Arc<Destination>,
        event: Event,
        retries: Arc<Retries>,
        body: Vec<u8>,
    ) -> Result<oneshot::Receiver<Kept>, ForwardError> {
        let (done, kept) = oneshot::channel();
        let tx = self.worker(&destination.sink).map(|(tx, _)| tx);
        let job = Job {
            destination,
            event: Arc::new(event),
            done: Some(done),
            unconfirmed: Unconfirmed::Retry(retries, body),
        };
        match tx {
            Some(tx) => tx
                .send(job)
                .await
                .map_err(|_| ForwardError::NotKept("the hub is stopping".into()))?,
            // The sink is not configured on this node: straight to the retries.
            None => schedule(job).await,
        }
        Ok(kept)
    }

    pub(crate) fn stats(&self) -> Vec<SinkStatsSnapshot> {
        let workers = self.workers.read().expect("forwarder lock");
        let mut out: Vec<SinkStatsSnapshot> = workers
            .iter()
            .map(|(name, w)| {
                let s = &w.stats;
                SinkStatsSnapshot {
                    sink: name.clone(),
                    confirmed: s.confirmed.load(Ordering::Relaxed),
                    stored: s.stored.load(Ordering::Relaxed),
                    resent: s.resent.load(Ordering::Relaxed),
                    send_failures: s.send_failures.load(Ordering::Relaxed),
                    dropped_buffer_full: s.dropped_buffer_full.load(Ordering::Relaxed),
                    expired: s.expired.load(Ordering::Relaxed),
                    rejected: s.rejected.load(Ordering::Relaxed),
                    batches: s.batches.load(Ordering::Relaxed),
                    outbox: s.outbox.load(Ordering::Relaxed).max(0) as u64,
                    buffered: (w.tx.max_capacity() - w.tx.capacity()) as u64,
                }
            })
            .collect();
        out.sort_by(|a, b| a.sink.cmp(&b.sink));
        out
    }

    /// The attached sinks, by name.
    pub(crate) fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        let workers = self.workers.read().expect("forwarder lock");
        let mut sinks: Vec<Arc<dyn Sink>> = workers.values().map(|w| w.sink.clone()).collect();
        sinks.sort_by(|a, b| a.name().cmp(b.name()));
        sinks
    }

    /// Stops the workers (they store what is still buffered) and waits for them.
    pub(crate) async fn stop(&self) {
        self.workers.write().expect("forwarder lock").clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("forwarder lock"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Writes jobs to the sink's outbox, in order, and tells their publishers they are safe.
async fn store_jobs(env: &EgressEnv, sink: &str, jobs: &[Job]) -> Result<(), StoreError> {
    let rows: Vec<(u64, &Destination, &Event)> = jobs
        .iter()
        .map(|j| (env.seq.next(), &*j.destination, &*j.event))
        .collect();
    store::write(&*env.store, |t| records::put_outbox(t, sink, &rows)).await
}

/// The state of one sink's worker.
struct SinkRun {
    env: EgressEnv,
    sink: Arc<dyn Sink>,
    stats: Arc<SinkStats>,
    settings: ForwarderSettings,
    /// Whether the outbox may hold events: new events then go behind them, keeping order.
    backlog: bool,
    retry_at: Instant,
    backoff: Duration,
}

impl SinkRun {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let shutdown = self.env.shutdown.clone();
        match records::outbox_len(&*self.env.store, self.sink.name()).await {
            Ok(n) => {
                self.stats.outbox.store(n, Ordering::Relaxed);
                self.backlog = n > 0;
            }
            Err(e) => {
                tracing::warn!(sink = self.sink.name(), error = %e, "could not read the outbox")
            }
        }
        loop {
            let first = if self.backlog {
                tokio::select! {
                    job = rx.recv() => job,
                    () = tokio::time::sleep_until(self.retry_at) => {
                        self.drain_outbox().await;
                        continue;
                    }
                    () = shutdown.cancelled() => break,
                }
            } else {
                tokio::select! {
                    job = rx.recv() => job,
                    () = shutdown.cancelled() => break,
                }
            };
            let Some(first) = first else { break };
            let mut jobs = vec![first];
            while jobs.len() < self.settings.batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            // Copies with retries of their own are attempted now whatever the outbox holds:
            // they keep no order with it. (Most batches have none: no split then.)
            if jobs.iter().any(Job::retries) {
                let (retrying, outboxed): (Vec<Job>, Vec<Job>) =
                    jobs.into_iter().partition(Job::retries);
                self.attempt(retrying).await;
                jobs = outboxed;
                if jobs.is_empty() {
                    continue;
                }
            }
            if self.backlog {
                self.store(jobs).await;
            } else {
                self.deliver(jobs).await;
            }
        }
        // Stopping: whatever is still buffered goes to the outbox (or its retries) for the next
        // start.
        rx.close();
        let mut rest = Vec::new();
        while let Some(job) = rx.recv().await {
            if job.retries() {
                schedule(job).await;
            } else {
                rest.push(job);
            }
        }
        if !rest.is_empty() {
            self.store(rest).await;
        }
    }

    /// Sends copies that have retries of their own, by destination; what is not confirmed goes
    /// to its retries.
    async fn attempt(&mut self, jobs: Vec<Job>) {
        for (destination, group) in by_destination(jobs) {
            let events: Vec<&Event> = group.iter().map(|j| &*j.event).collect();
            let failed = self.send(&destination, &events).await;
            for (i, job) in group.into_iter().enumerate() {
                if failed.contains(&i) {
                    schedule(job).await;
                } else {
                    confirm(vec![job]);
                }
            }
        }
    }

    /// Sends jobs grouped by destination; what is not confirmed goes to the outbox.
    async fn deliver(&mut self, jobs: Vec<Job>) {
        let mut unconfirmed = Vec::new();
        for (destination, group) in by_destination(jobs) {
            if self.backlog {
                unconfirmed.extend(group);
                continue;
            }
            let events: Vec<&Event> = group.iter().map(|j| &*j.event).collect();
            let failed = self.send(&destination, &events).await;
            if failed.is_empty() {
                confirm(group);
                continue;
            }
            self.backlog = true;
            let mut ok = Vec::new();
            for (i, job) in group.into_iter().enumerate() {
                if failed.contains(&i) {
                    unconfirmed.push(job);
                } else {
                    ok.push(job);
                }
            }
            confirm(ok);
        }
        if !unconfirmed.is_empty() {
            self.store(unconfirmed).await;
        }
    }

    /// Sends one batch; returns the indices to send again. Events the destination rejects for
    /// good are counted and treated as done.
    async fn send(&mut self, destination: &Destination, events: &[&Event]) -> Vec<usize> {
        let outcome = tokio::time::timeout(
            self.settings.send_timeout,
            self.sink.send(destination, events),
        )
        .await;
        let failed: Vec<usize> = match outcome {
            Ok(Ok(())) => {
                self.backoff = RETRY_MIN;
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .confirmed
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                return Vec::new();
            }
            Ok(Err(SinkError::Partial { failed, rejected })) => {
                let done = events.len().saturating_sub(failed.len() + rejected.len());
                self.stats
                    .rejected
                    .fetch_add(rejected.len() as u64, Ordering::Relaxed);
                self.stats
                    .confirmed
                    .fetch_add(done as u64, Ordering::Relaxed);
                if failed.is_empty() {
                    self.backoff = RETRY_MIN;
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    return Vec::new();
                }
                failed
            }
            Ok(Err(e)) => {
                tracing::warn!(sink = self.sink.name(), queue = %destination.queue, error = %e, "send failed");
                (0..events.len()).collect()
            }
            Err(_) => {
                tracing::warn!(sink = self.sink.name(), queue = %destination.queue, "send timed out");
                (0..events.len()).collect()
            }
        };
        self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        failed
    }

    async fn store(&mut self, jobs: Vec<Job>) {
        match store_jobs(&self.env, self.sink.name(), &jobs).await {
            Ok(()) => {
                let n = jobs.len() as u64;
                self.stats.stored.fetch_add(n, Ordering::Relaxed);
                self.stats.outbox.fetch_add(n as i64, Ordering::Relaxed);
                self.backlog = true;
                for job in jobs {
                    if let Some(done) = job.done {
                        let _ = done.send(Kept::Stored);
                    }
                }
            }
            Err(e) => {
                // Dropping the jobs tells waiting publishers their message was not kept: a QoS 1
                // device is not acknowledged and sends it again.
                tracing::error!(sink = self.sink.name(), error = %e, lost = jobs.len(), "could not store events in the outbox");
            }
        }
    }

    /// Sends the oldest events of the outbox; clears what was confirmed or expired.
    async fn drain_outbox(&mut self) {
        let name = self.sink.name().to_owned();
        let rows = match transact(&*self.env.store, |t| {
            let name = name.clone();
            let limit = self.settings.batch;
            Box::pin(async move { records::read_outbox(t, &name, limit).await })
        })
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "could not read the outbox");
                self.retry_at = Instant::now() + RETRY_MAX;
                return;
            }
        };
        if rows.is_empty() {
            self.backlog = false;
            self.stats.outbox.store(0, Ordering::Relaxed);
            return;
        }
        let now = self.env.clock.now_ms();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut expired = 0u64;
        let mut resent = 0u64;
        let mut failure = false;
        // Consecutive rows of one destination form a batch; a failure stops the pass so the
        // outbox keeps its order.
        let mut start = 0;
        while start < rows.len() {
            let destination = &rows[start].destination;
            let end = rows[start..]
                .iter()
                .position(|r| r.destination != *destination)
                .map_or(rows.len(), |n| start + n);
            let batch = &rows[start..end];
            let (live, old): (Vec<&OutboxRow>, Vec<&OutboxRow>) = batch
                .iter()
                .partition(|r| r.event.generated_at_ms + destination.retention_ms > now);
            expired += old.len() as u64;
            done.extend(old.iter().map(|r| r.key.clone()));
            if !live.is_empty() {
                let events: Vec<&Event> = live.iter().map(|r| &r.event).collect();
                let failed = self.send(destination, &events).await;
                for (i, row) in live.iter().enumerate() {
                    if !failed.contains(&i) {
                        done.push(row.key.clone());
                        resent += 1;
                    }
                }
                if !failed.is_empty() {
                    failure = true;
                    break;
                }
            }
            start = end;
        }
        if let Err(e) =
            store::write(&*self.env.store, |t| records::clear_outbox(t, &name, &done)).await
        {
            tracing::warn!(sink = %name, error = %e, "could not clear sent events from the outbox");
            return;
        }
        self.stats.expired.fetch_add(expired, Ordering::Relaxed);
        self.stats.resent.fetch_add(resent, Ordering::Relaxed);
        self.stats
            .outbox
            .fetch_sub(done.len() as i64, Ordering::Relaxed);
        if expired > 0 {
            tracing::warn!(sink = %name, expired, "events expired in the outbox");
        }
        if !failure {
            self.retry_at = Instant::now();
        }
    }
}

fn confirm(jobs: Vec<Job>) {
    for job in jobs {
        if let Some(done) = job.done {
            let _ = done.send(Kept::Confirmed);
        }
    }
}

/// Jobs grouped by destination, in the order each destination first appears.
fn by_destination(jobs: Vec<Job>) -> Vec<(Arc<Destination>, Vec<Job>)> {
    let mut groups: Vec<(Arc<Destination>, Vec<Job>)> = Vec::new();
    for job in jobs {
        match groups
            .iter_mut()
            .find(|(d, _)| Arc::ptr_eq(d, &job.destination) || **d == *job.destination)
        {
            Some((_, group)) => group.push(job),
            None => groups.push((job.destination.clone(), vec![job])),
        }
    }
    groups
}

/// Keeps a copy its sink did not confirm on its owner's retries; if even that fails, the copy
/// is dropped, which tells a waiting publisher it was not kept.
async fn schedule(job: Job) {
    let Unconfirmed::Retry(retries, body) = job.unconfirmed else {
        return;
    };
    match retries.schedule(body).await {
        Ok(()) => {
            if let Some(done) = job.done {
                let _ = done.send(Kept::Stored);
            }
        }
        Err(e) => tracing::error!(error = %e, "could not store a delivery for its retries"),
    }
}
