//! Writing history: the values of accepted posts go to a queue that one task writes, many
//! posts per transaction; a QoS 1 post waits for its values to be stored before it is
//! acknowledged. A sweeper removes what is past each tenant's retention, a page of series per
//! transaction, so it never holds the store for long.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::hub::session::ClientIdentity;
use crate::hub::{Hub, ThingHistory};
use crate::limits::Profile;
use crate::metering::Charge;
use crate::store::records::{self, SeriesId, SeriesKind};
use crate::store::{self, StoreError, transact};

/// How far ahead of the hub's clock a device's own time may be (beyond, the hub's time is
/// used).
pub(crate) const MAX_AHEAD_MS: u64 = 10 * 60_000;
/// Batches smaller than this wait up to `history_commit_linger_ms` for more posts.
const LINGER_BELOW: usize = 64;
/// Series swept per transaction.
const SWEEP_PAGE: usize = 500;

/// The values of one post, on their way to the store.
pub(crate) struct HistoryWrite {
    tenant: String,
    pk: String,
    dn: String,
    /// (kind, identifier, time, value).
    points: Vec<(SeriesKind, String, u64, Value)>,
    /// Told once they are stored (true) or could not be (false).
    done: Option<oneshot::Sender<bool>>,
}

/// A value's time: the device's own (`{"value", "time"}`) when it is within the retention and
/// not ahead of the hub by more than [`MAX_AHEAD_MS`], else the hub's.
fn time_of(given: Option<&Value>, now: u64, oldest: u64) -> u64 {
    given
        .and_then(Value::as_u64)
        .filter(|t| (oldest..=now + MAX_AHEAD_MS).contains(t))
        .unwrap_or(now)
}

impl Hub {
    /// Queues the values of an accepted property post (`event` None: each property of
    /// `params`, bare or `{"value","time"}`) or event post (`event`: its output,
    /// `params.value`); with `wait` (a QoS 1 post), what tells when they are stored (true) or
    /// could not be (false). None when the writer has stopped.
    pub(crate) async fn record_history(
        &self,
        identity: &ClientIdentity,
        event: Option<&str>,
        params: &Map<String, Value>,
        now: u64,
        wait: bool,
    ) -> Option<Option<oneshot::Receiver<bool>>> {
        if identity.device.is_none() {
            return Some(None);
        }
        let profile = self.profile_of(&identity.tenant);
        let days = profile.history_retention_days;
        if days == 0 {
            return Some(None);
        }
        let oldest = now.saturating_sub(days * 86_400_000);
        let points = match event {
            None => params
                .iter()
                .map(|(k, v)| {
                    let (value, time) = crate::tsl::posted_value(v);
                    let time = time_of(time, now, oldest);
                    (SeriesKind::Property, k.clone(), time, value.clone())
                })
                .collect(),
            Some(identifier) => {
                let time = time_of(params.get("time"), now, oldest);
                let value = params
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(params.clone()));
                vec![(SeriesKind::Event, identifier.to_owned(), time, value)]
            }
        };
        self.queue_points(identity, &profile, points, wait).await
    }

    /// Queues points of a device's series as they are (a service call or its answer), not
    /// waited for. None when the writer has stopped.
    pub(crate) async fn record_points(
        &self,
        identity: &ClientIdentity,
        points: Vec<(SeriesKind, String, u64, Value)>,
    ) -> Option<()> {
        let profile = self.profile_of(&identity.tenant);
        if profile.history_retention_days == 0 {
            return Some(());
        }
        self.queue_points(identity, &profile, points, false)
            .await
            .map(|_| ())
    }

    /// Charges `points` to the tenant's month (`profile`'s, L-106) and queues them.
    async fn queue_points(
        &self,
        identity: &ClientIdentity,
        profile: &Profile,
        points: Vec<(SeriesKind, String, u64, Value)>,
        wait: bool,
    ) -> Option<Option<oneshot::Receiver<bool>>> {
        let Some((pk, dn)) = identity.device.as_ref() else {
            return Some(None);
        };
        // Each value is charged for the days it will be kept (L-106); past the month's quota
        // values are not kept (the post itself is accepted and forwarded).
        let point_days = points.len() as u64 * profile.history_retention_days;
        let charged = self.inner.meter.charge_month(
            profile,
            &identity.tenant,
            (Charge::StoredPointDays, point_days),
            self.now_ms(),
        );
        match charged {
            Ok(events) if !events.is_empty() => {
                Box::pin(self.save_usage_events(&identity.tenant, events)).await;
            }
            Ok(_) => {}
            Err(limited) => {
                self.counted(limited);
                return Some(None);
            }
        }
        let (done, stored) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let write = HistoryWrite {
            tenant: identity.tenant.clone(),
            pk: pk.clone(),
            dn: dn.clone(),
            points,
            done,
        };
        self.inner.thing_history.tx.send(write).await.ok()?;
        Some(stored)
    }

    /// Writes queued history, a batch of posts per transaction, until shutdown.
    pub(crate) async fn write_thing_history_forever(&self) {
        let Some(mut rx) = self.inner.thing_history.take_receiver() else {
            return;
        };
        let linger = Duration::from_millis(self.inner.config.history_commit_linger_ms);
        while let Some(mut batch) = self.next_batch(&mut rx).await {
            // A small batch waits a moment for more posts: a commit costs the same for one post
            // or hundreds, and QoS 1 posts are acknowledged only once it is done.
            if batch.len() < LINGER_BELOW && !linger.is_zero() {
                let until = tokio::time::Instant::now() + linger;
                while batch.len() < LINGER_BELOW {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(w)) => batch.push(w),
                        _ => break,
                    }
                }
            }
            let rows: Vec<_> = batch
                .iter()
                .flat_map(|w| {
                    w.points.iter().map(|(kind, id, time, value)| {
                        let owner = (w.tenant.clone(), w.pk.clone(), w.dn.clone());
                        (
                            owner,
                            *kind,
                            id.clone(),
                            *time,
                            self.next_seq(),
                            value.clone(),
                        )
                    })
                })
                .collect();
            let rows = std::sync::Arc::new(rows);
            let written = transact(&**self.store(), |t| {
                let rows = rows.clone();
                Box::pin(async move {
                    let points: Vec<records::NewPoint<'_>> = rows
                        .iter()
                        .map(|((tenant, pk, dn), kind, identifier, time, seq, value)| {
                            let series = SeriesId {
                                tenant,
                                pk,
                                dn,
                                kind: *kind,
                                identifier,
                            };
                            (series, *time, *seq, value)
                        })
                        .collect();
                    records::put_points(t, &points).await
                })
            })
            .await;
            if let Err(e) = &written {
                tracing::warn!(error = %e, values = rows.len(), "could not write history");
            }
            for w in &mut batch {
                if let Some(done) = w.done.take() {
                    let _ = done.send(written.is_ok());
                }
            }
        }
    }

    /// Sweeps history past retention every `history_sweep_interval_secs`, until shutdown (a
    /// single hub; in a cluster the leading node calls [`ThingHistory::sweep`]).
    pub(crate) async fn sweep_thing_history_forever(&self) {
        if self.peers().is_some() {
            return;
        }
        let every = Duration::from_secs(self.inner.config.history_sweep_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.thing_history().sweep(self.now_ms()).await {
                tracing::warn!(error = %e, "sweeping history failed");
            }
        }
    }
}

impl ThingHistory<'_> {
    /// Removes every value older than its tenant's retention at `now` (all of a tenant's whose
    /// retention is 0), and the asynchronous service calls as old; returns how many series
    /// were looked at.
    pub async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        self.hub.sweep_service_calls(now).await?;
        let mut after: Option<Vec<u8>> = None;
        let mut seen = 0;
        loop {
            let page = store::read(&**self.hub.store(), |t| {
                let after = after.clone();
                Box::pin(async move { records::latest_page(t, after.as_deref(), SWEEP_PAGE).await })
            })
            .await?;
            let Some((last, _)) = page.last() else {
                return Ok(seen);
            };
            after = Some(last.clone());
            seen += page.len();
            let cutoffs: Vec<u64> = page
                .iter()
                .map(|(k, _)| {
                    let tenant = records::tenant_of_latest(k).unwrap_or_default();
                    let days = self.hub.profile_of(tenant).history_retention_days;
                    now.saturating_sub(days * 86_400_000)
                })
                .collect();
            store::write(&**self.hub.store(), |t| {
                for ((k, latest), cutoff) in page.iter().zip(&cutoffs) {
                    records::clear_before(t, k, latest, *cutoff);
                }
            })
            .await?;
        }
    }
}
