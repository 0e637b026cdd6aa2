//! The device's side of an upgrade: the push it gets on `/ota/device/upgrade/{pk}/{dn}`, the
//! pull it makes on `/sys/{pk}/{dn}/thing/ota/firmware/get` (answered on `..._reply` with the
//! same `data`), the progress it reports on `/ota/device/progress/{pk}/{dn}`, and the version it
//! reports on `/ota/device/inform/{pk}/{dn}`, which ends its job when it is the package's.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::data::event::Event;
use crate::data::message::{Message, QoS};
use crate::data::ota::{OtaBatch, OtaJob, OtaPackage, OtaState, SignMethod};
use crate::hub::device_info::DEFAULT_MODULE;
use crate::hub::session::{ClientIdentity, alink_answer, alink_request};
use crate::hub::{Hub, HubError};
use crate::store::{records, transact};

/// A device's upgrade request on one of its `/sys/` topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtaRequest {
    /// `thing/ota/firmware/get`: the pull.
    FirmwareGet,
}

impl OtaRequest {
    /// The request of a `/sys/{pk}/{dn}` topic suffix, if it is one.
    pub(crate) fn from_suffix(suffix: &str) -> Option<OtaRequest> {
        (suffix == "/thing/ota/firmware/get").then_some(OtaRequest::FirmwareGet)
    }
}

/// Whether `topic` is device `pk`/`dn`'s progress topic, `/ota/device/progress/{pk}/{dn}`.
pub(crate) fn is_progress(topic: &str, pk: &str, dn: &str) -> bool {
    crate::topic::after_device(topic, "/ota/device/progress/", pk, dn) == Some("")
}

/// What the Link SDK needs to download and check a package: `url`, `version`, `size`,
/// `signMethod` (`Md5` or `SHA256`), `sign`, `module` (and `md5` for MD5, as Alibaba sends it).
fn download_data(package: &OtaPackage, url: String) -> Value {
    let mut data = json!({
        "size": package.size, "version": package.version, "url": url,
        "signMethod": package.sign_method, "sign": package.sign(), "module": package.module,
        "isDiff": 0,
    });
    if package.sign_method == SignMethod::Md5 {
        data["md5"] = json!(package.md5);
    }
    data
}

/// A number the SDK may send as text (`"step": "-1"`).
fn number(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

impl Hub {
    /// Answers a device's `thing/ota/firmware/get`: the upgrade waiting for its module (`data`
    /// empty when there is none; a batch not started yet is not offered); the job becomes
    /// notified.
    pub(crate) async fn ota_request(
        &self,
        identity: &ClientIdentity,
        op: OtaRequest,
        payload: &[u8],
    ) -> Bytes {
        let OtaRequest::FirmwareGet = op;
        let method = "thing.ota.firmware.get";
        let (id, params) = alink_request(payload);
        let Some((pk, dn)) = identity.device.as_ref() else {
            return alink_answer(&id, 460, json!({}), "not a device", method);
        };
        let module = params["module"].as_str().unwrap_or(DEFAULT_MODULE);
        match self.offer_upgrade(pk, dn, module, true).await {
            Ok(Some(data)) => alink_answer(&id, 200, data, "success", method),
            Ok(None) => alink_answer(&id, 200, json!({}), "no upgrade", method),
            Err(e) => alink_answer(&id, 500, json!({}), &e.to_string(), method),
        }
    }

    /// The download data of the upgrade waiting for a device's module, its job marked notified
    /// (only from queued when `pulled` is false: the rollout's push).
    pub(crate) async fn offer_upgrade(
        &self,
        pk: &str,
        dn: &str,
        module: &str,
        pulled: bool,
    ) -> Result<Option<Value>, HubError> {
        let batch_id = self.open_job(pk, dn, module).await?;
        let Some((batch, package)) = batch_id.and_then(|id| self.ota().open_batch(&id)) else {
            return Ok(None);
        };
        if batch.start_at_ms > self.now_ms() {
            return Ok(None);
        }
        let url = self.ota().download_url(&package)?;
        let notified = self
            .change_job(&batch, &package, dn, |job| match job.state {
                OtaState::Queued => {
                    job.state = OtaState::Notified;
                    Some(true)
                }
                OtaState::Notified | OtaState::InProgress if pulled => Some(false),
                _ => None,
            })
            .await?;
        Ok(match notified {
            Some((true, job)) => {
                self.ota_event(&batch, &package, &job);
                Some(download_data(&package, url))
            }
            Some((false, _)) => Some(download_data(&package, url)),
            None => None,
        })
    }

    /// Pushes the upgrade to a device on `/ota/device/upgrade/{pk}/{dn}` (queued jobs only);
    /// whether it was sent.
    pub(crate) async fn push_upgrade(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        module: &str,
    ) -> Result<bool, HubError> {
        let Some(data) = self.offer_upgrade(pk, dn, module, false).await? else {
            return Ok(false);
        };
        let body = json!({
            "code": "1000", "data": data, "id": self.next_seq(), "message": "success",
        });
        let push = Message::from_hub(
            tenant,
            format!("/ota/device/upgrade/{pk}/{dn}"),
            Bytes::from(body.to_string()),
            QoS::AtLeastOnce,
            self.now_ms(),
        );
        self.accept(push).await?;
        Ok(true)
    }

    /// Follows a device's `/ota/device/progress`: `{"params":{"step","desc","module"?}}`; a step
    /// of 1 to 100 is progress, a negative one a failure (-1 upgrade, -2 download, -3 check,
    /// -4 flash failed). Reports without an open job are ignored (there is no reply).
    pub(crate) async fn ota_progress(&self, identity: &ClientIdentity, payload: &[u8]) {
        let Some((pk, dn)) = identity.device.as_ref() else {
            return;
        };
        let (_, params) = alink_request(payload);
        let Some(step) = number(&params["step"]).and_then(|s| i32::try_from(s).ok()) else {
            tracing::warn!(device = %identity.key, "OTA progress without a step ignored");
            return;
        };
        let module = params["module"].as_str().unwrap_or(DEFAULT_MODULE);
        let desc = params["desc"].as_str().unwrap_or_default().to_owned();
        let outcome = self
            .job_of(pk, dn, module, |_, job| {
                if job.state.is_final() || job.state == OtaState::Queued && step >= 0 {
                    return None;
                }
                let before = job.state;
                job.step = step;
                job.desc = desc.clone();
                job.state = if step < 0 {
                    OtaState::Failed
                } else {
                    OtaState::InProgress
                };
                Some(before != job.state)
            })
            .await;
        if let Err(e) = outcome {
            tracing::warn!(device = %identity.key, error = %e, "OTA progress not recorded");
        }
    }

    /// A device reported `version` of `module`: its open job of that module succeeds when it is
    /// the package's version.
    pub(crate) async fn ota_version_reported(
        &self,
        pk: &str,
        dn: &str,
        module: &str,
        version: &str,
    ) -> Result<(), HubError> {
        self.job_of(pk, dn, module, |package, job| {
            (!job.state.is_final() && package.version == version).then(|| {
                job.state = OtaState::Succeeded;
                job.step = 100;
                job.desc = format!("reported version {version}");
                true
            })
        })
        .await
    }

    /// Changes the open job of a device's module with `change` (None: leave it; Some(true):
    /// its state changed, so consumer groups hear of it).
    async fn job_of(
        &self,
        pk: &str,
        dn: &str,
        module: &str,
        mut change: impl FnMut(&OtaPackage, &mut OtaJob) -> Option<bool> + Send,
    ) -> Result<(), HubError> {
        let batch_id = self.open_job(pk, dn, module).await?;
        let Some((batch, package)) = batch_id.and_then(|id| self.ota().open_batch(&id)) else {
            return Ok(());
        };
        let changed = self
            .change_job(&batch, &package, dn, |job| change(&package, job))
            .await?;
        if let Some((true, job)) = changed {
            self.ota_event(&batch, &package, &job);
        }
        Ok(())
    }

    /// Applies `change` to a device's job of `batch` (None: leave it), written only if nobody
    /// changed the job meanwhile (else read and decided again); a job that ends releases the
    /// device's module. Returns what `change` said and the job after it.
    pub(crate) async fn change_job<T>(
        &self,
        batch: &OtaBatch,
        package: &OtaPackage,
        dn: &str,
        mut change: impl FnMut(&mut OtaJob) -> Option<T>,
    ) -> Result<Option<(T, OtaJob)>, HubError> {
        let (id, pk, module) = (&batch.id, &batch.product_key, &package.module);
        let dn = dn.to_owned();
        loop {
            let before = crate::store::read(&**self.store(), |t| {
                let (id, dn) = (id.clone(), dn.clone());
                Box::pin(async move { records::get_job(t, &id, &dn).await })
            })
            .await?;
            let Some(before) = before else {
                return Ok(None);
            };
            let mut after = before.clone();
            let Some(said) = change(&mut after) else {
                return Ok(None);
            };
            after.updated_at_ms = self.now_ms();
            let written = transact(&**self.store(), |t| {
                let (before, after) = (before.clone(), after.clone());
                let (id, pk, dn, module) = (id.clone(), pk.clone(), dn.clone(), module.clone());
                Box::pin(async move {
                    if records::get_job(t, &id, &dn).await?.as_ref() != Some(&before) {
                        return Ok(false);
                    }
                    records::put_job(t, &id, &after);
                    if after.state.is_final()
                        && records::open_job_batch(t, &pk, &dn, &module)
                            .await?
                            .as_deref()
                            == Some(id.as_str())
                    {
                        records::clear_open_job(t, &pk, &dn, &module);
                    }
                    Ok(true)
                })
            })
            .await?;
            if written {
                return Ok(Some((said, after)));
            }
        }
    }

    /// Cancels the open upgrades of a device being deleted.
    pub(crate) async fn ota_device_deleted(&self, pk: &str, dn: &str) -> Result<(), HubError> {
        let (owner, name) = (pk.to_owned(), dn.to_owned());
        let open = crate::store::read(&**self.store(), |t| {
            let (pk, dn) = (owner.clone(), name.clone());
            Box::pin(async move { records::open_jobs(t, &pk, &dn).await })
        })
        .await?;
        for (_, batch_id) in open {
            let Some((batch, package)) = self.ota().open_batch(&batch_id) else {
                continue;
            };
            let canceled = self
                .change_job(&batch, &package, dn, |job| {
                    (!job.state.is_final()).then(|| {
                        job.state = OtaState::Canceled;
                        job.desc = "device deleted".into();
                    })
                })
                .await?;
            if let Some(((), job)) = canceled {
                self.ota_event(&batch, &package, &job);
            }
        }
        Ok(())
    }

    /// The batch holding the open job of a device's module, if any.
    async fn open_job(&self, pk: &str, dn: &str, module: &str) -> Result<Option<String>, HubError> {
        let (pk, dn, module) = (pk.to_owned(), dn.to_owned(), module.to_owned());
        Ok(crate::store::read(&**self.store(), |t| {
            let (pk, dn, module) = (pk.clone(), dn.clone(), module.clone());
            Box::pin(async move { records::open_job_batch(t, &pk, &dn, &module).await })
        })
        .await?)
    }

    /// Sends a job's state to the product's consumer groups, on Alibaba's
    /// `/{pk}/{dn}/ota/upgrade` topic.
    pub(crate) fn ota_event(&self, batch: &OtaBatch, package: &OtaPackage, job: &OtaJob) {
        let (tenant, pk, dn) = (&batch.tenant, &batch.product_key, &job.device_name);
        self.notify_groups(pk, |id, now| {
            let payload = json!({
                "productKey": pk, "deviceName": dn, "moduleName": package.module,
                "status": job.state.as_str().to_uppercase(), "step": job.step, "desc": job.desc,
                "srcVersion": job.source_version, "destVersion": package.version,
                "jobId": batch.id, "packageId": package.id, "messageCreateTime": now,
            });
            Event::ota(id, tenant, pk, dn, now, payload)
        });
    }
}
