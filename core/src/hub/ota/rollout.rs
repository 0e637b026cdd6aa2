//! The rollout: every `[hub.ota] rollout_interval_ms`, each open batch that has started pushes its
//! upgrade to queued devices that are online on this node, as many as its rate allows so far
//! (`rate_per_minute` x minutes since the start, counting every job that left the queue), times
//! out jobs notified longer ago than the batch's timeout, and is closed once every job ended.
//! A job moves on in one transaction, so in a cluster each device is pushed once, by the node
//! holding its connection.

use std::time::Duration;

use crate::data::ota::{OtaBatch, OtaPackage, OtaState};
use crate::hub::{Hub, HubError, device_session_key};

impl Hub {
    /// Rolls the open batches out until the hub stops.
    pub(crate) async fn roll_out_forever(self) {
        let every = Duration::from_millis(self.inner.config.ota.rollout_interval_ms.max(10));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let open: Vec<(OtaBatch, OtaPackage)> =
                self.inner.ota.open().values().cloned().collect();
            for (batch, package) in open {
                if let Err(e) = self.roll_out(&batch, &package).await {
                    tracing::warn!(batch = %batch.id, error = %e, "OTA rollout step failed");
                }
            }
        }
    }

    /// One step of a batch's rollout.
    async fn roll_out(&self, batch: &OtaBatch, package: &OtaPackage) -> Result<(), HubError> {
        let now = self.now_ms();
        let jobs = self.ota().batch_jobs(&batch.id).await?;
        if jobs.iter().all(|j| j.state.is_final()) {
            self.inner.ota.open().remove(&batch.id);
            return Ok(());
        }
        let timeout_ms = u64::from(batch.timeout_minutes) * 60_000;
        for job in &jobs {
            let waiting = matches!(job.state, OtaState::Notified | OtaState::InProgress);
            if waiting && job.updated_at_ms + timeout_ms <= now {
                let timed_out = self
                    .change_job(batch, package, &job.device_name, |job| {
                        let still = matches!(job.state, OtaState::Notified | OtaState::InProgress);
                        (still && job.updated_at_ms + timeout_ms <= now).then(|| {
                            job.state = OtaState::TimedOut;
                            job.desc =
                                format!("no success within {} minutes", batch.timeout_minutes);
                        })
                    })
                    .await?;
                if let Some(((), job)) = timed_out {
                    self.ota_event(batch, package, &job);
                }
            }
        }
        if now < batch.start_at_ms {
            return Ok(());
        }
        let left_queue = jobs.iter().filter(|j| j.state != OtaState::Queued).count() as u64;
        let allowed = match batch.rate_per_minute {
            0 => u64::MAX,
            rate => (u64::from(rate) * (now - batch.start_at_ms))
                .div_ceil(60_000)
                .max(1),
        };
        let mut budget = allowed.saturating_sub(left_queue);
        for job in jobs.iter().filter(|j| j.state == OtaState::Queued) {
            if budget == 0 {
                break;
            }
            let key = device_session_key(&batch.product_key, &job.device_name);
            if !self.slot(&key).is_some_and(|s| s.is_online()) {
                continue;
            }
            let pushed = self
                .push_upgrade(
                    &batch.tenant,
                    &batch.product_key,
                    &job.device_name,
                    &package.module,
                )
                .await?;
            if pushed {
                budget -= 1;
            }
        }
        Ok(())
    }
}
