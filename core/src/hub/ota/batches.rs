//! Upgrade batches: made for a target of devices, counted per state, canceled and retried.

use std::collections::BTreeMap;

use super::{BatchSpec, BatchView, JOBS_PER_TXN, Ota, not_found};
use crate::data::ota::{OtaBatch, OtaJob, OtaPackage, OtaState, OtaTarget};
use crate::hub::HubError;
use crate::limits::LimitId;
use crate::store::{self, records, transact};

impl Ota<'_> {
    async fn find_batch(&self, tenant: &str, id: &str) -> Result<Option<OtaBatch>, HubError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        Ok(store::read(&**self.hub.store(), |t| {
            let (tenant, id) = (tenant.clone(), id.clone());
            Box::pin(async move { records::get_batch(t, &tenant, &id).await })
        })
        .await?)
    }

    /// Every job of a batch, by DeviceName.
    pub(crate) async fn batch_jobs(&self, id: &str) -> Result<Vec<OtaJob>, HubError> {
        let id = id.to_owned();
        Ok(store::read(&**self.hub.store(), |t| {
            let id = id.clone();
            Box::pin(async move { records::list_jobs(t, &id, 0).await })
        })
        .await?)
    }

    /// Makes a batch rolling a package out to its target devices (at most L-093). A device with
    /// an open upgrade of the same module in another batch has that job canceled: the newest
    /// batch wins.
    pub async fn create_batch(&self, tenant: &str, spec: BatchSpec) -> Result<BatchView, HubError> {
        // A package the body names that does not exist is a bad request, not a missing route.
        let package = match self.package(tenant, &spec.package_id).await {
            Err(HubError::NotFound { id, .. }) => {
                return Err(HubError::Invalid(format!("package_id: no package {id}")));
            }
            found => found?,
        };
        self.download_url(&package)?;
        let pk = package.product_key.clone();
        let timeout_minutes = spec.timeout_minutes.unwrap_or(1440);
        if !(1..=10_080).contains(&timeout_minutes) {
            return Err(HubError::Invalid(
                "timeout_minutes: 1 to 10080 (a week)".into(),
            ));
        }
        let devices = self
            .target_devices(tenant, &pk, &package.module, &spec.target)
            .await?;
        if devices.is_empty() {
            return Err(HubError::Invalid("the target matches no device".into()));
        }
        let max = self.hub.profile_of(tenant).entities.ota_batch_devices;
        if max > 0 && devices.len() as u64 > max {
            return Err(self.hub.limited(
                LimitId::OtaBatchDevices,
                format!(
                    "a batch upgrades at most {max} devices (L-093, profile entities.ota_batch_devices); the target matches {}",
                    devices.len()
                ),
            ));
        }
        let now = self.hub.now_ms();
        let batch = OtaBatch {
            id: format!("ob{}", self.hub.next_seq()),
            tenant: tenant.to_owned(),
            package_id: package.id.clone(),
            product_key: pk.clone(),
            target: spec.target,
            rate_per_minute: spec.rate_per_minute,
            start_at_ms: spec.start_at_ms.unwrap_or(now),
            timeout_minutes,
            created_at_ms: now,
            canceled: false,
        };
        let mut superseded = Vec::new();
        for part in devices.chunks(JOBS_PER_TXN) {
            let replaced = transact(&**self.hub.store(), |t| {
                let (batch, module) = (batch.clone(), package.module.clone());
                let pk = pk.clone();
                let part = part.to_vec();
                Box::pin(async move {
                    let mut replaced = Vec::new();
                    for (dn, source_version) in &part {
                        if let Some(old) = records::open_job_batch(t, &pk, dn, &module).await?
                            && let Some(mut job) = records::get_job(t, &old, dn).await?
                            && !job.state.is_final()
                        {
                            job.state = OtaState::Canceled;
                            job.desc = format!("superseded by batch {}", batch.id);
                            job.updated_at_ms = now;
                            records::put_job(t, &old, &job);
                            replaced.push((old, job));
                        }
                        records::set_open_job(t, &pk, dn, &module, &batch.id);
                        let job = OtaJob {
                            device_name: dn.clone(),
                            state: OtaState::Queued,
                            source_version: source_version.clone(),
                            step: 0,
                            desc: String::new(),
                            updated_at_ms: now,
                            retries: 0,
                        };
                        records::put_job(t, &batch.id, &job);
                    }
                    Ok(replaced)
                })
            })
            .await?;
            superseded.extend(replaced);
        }
        store::write(&**self.hub.store(), |t| records::put_batch(t, &batch)).await?;
        for (old, job) in superseded {
            if let Some((old_batch, old_package)) = self.open_batch(&old) {
                self.hub.ota_event(&old_batch, &old_package, &job);
            }
        }
        self.hub
            .inner
            .ota
            .open()
            .insert(batch.id.clone(), (batch.clone(), package));
        self.batch(tenant, &batch.id).await
    }

    /// The devices of a target with the version of `module` each reported.
    async fn target_devices(
        &self,
        tenant: &str,
        pk: &str,
        module: &str,
        target: &OtaTarget,
    ) -> Result<Vec<(String, Option<String>)>, HubError> {
        let names: Vec<String> = match target {
            OtaTarget::Devices { names } => {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                let mut missing = Vec::new();
                for dn in &names {
                    if self.hub.device_record(pk, dn).await?.is_none() {
                        missing.push(dn.clone());
                    }
                }
                if !missing.is_empty() {
                    return Err(HubError::Invalid(format!(
                        "no such devices in product {pk}: {}",
                        missing.join(", ")
                    )));
                }
                names
            }
            OtaTarget::Group { group_id } => self
                .hub
                .device_groups()
                .all_members(tenant, group_id)
                .await?
                .into_iter()
                .filter(|d| d.product_key == pk)
                .map(|d| d.device_name)
                .collect(),
            OtaTarget::Product | OtaTarget::Versions { .. } => {
                let mut names = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = store::read(&**self.hub.store(), |t| {
                        let (pk, after) = (pk.to_owned(), after.clone());
                        Box::pin(async move {
                            records::list_devices_after(t, &pk, after.as_deref(), 1000).await
                        })
                    })
                    .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.device_name.clone());
                    names.extend(page.into_iter().map(|d| d.device_name));
                }
                names
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for dn in names {
            let reported = self
                .hub
                .device_infos()
                .get(pk, &dn)
                .await?
                .firmware
                .get(module)
                .cloned();
            if let OtaTarget::Versions { versions } = target
                && !reported.as_ref().is_some_and(|v| versions.contains(v))
            {
                continue;
            }
            out.push((dn, reported));
        }
        Ok(out)
    }

    /// An open batch with its package (None once all its jobs ended, or it was canceled).
    pub(super) fn open_batch(&self, id: &str) -> Option<(OtaBatch, OtaPackage)> {
        self.hub.inner.ota.open().get(id).cloned()
    }

    /// A tenant's batch, its jobs counted.
    pub async fn batch(&self, tenant: &str, id: &str) -> Result<BatchView, HubError> {
        let batch = self
            .find_batch(tenant, id)
            .await?
            .ok_or_else(|| not_found("batch", id))?;
        self.view(batch).await
    }

    /// A batch with its jobs counted and its package's version and module.
    async fn view(&self, batch: OtaBatch) -> Result<BatchView, HubError> {
        let jobs = self.batch_jobs(&batch.id).await?;
        let mut counts: BTreeMap<&'static str, u64> =
            OtaState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for job in &jobs {
            *counts.entry(job.state.as_str()).or_default() += 1;
        }
        let package = self.package(&batch.tenant, &batch.package_id).await.ok();
        Ok(BatchView {
            version: package
                .as_ref()
                .map(|p| p.version.clone())
                .unwrap_or_default(),
            module: package.map(|p| p.module).unwrap_or_default(),
            batch,
            counts,
            devices: jobs.len() as u64,
        })
    }

    /// A tenant's batches, newest last.
    pub async fn batches(&self, tenant: &str) -> Result<Vec<BatchView>, HubError> {
        let owner = tenant.to_owned();
        let all = store::read(&**self.hub.store(), |t| {
            let tenant = owner.clone();
            Box::pin(async move { records::list_batches(t, &tenant).await })
        })
        .await?;
        let mut out = Vec::with_capacity(all.len());
        for b in all {
            out.push(self.view(b).await?);
        }
        Ok(out)
    }

    /// The jobs of a tenant's batch, by DeviceName.
    pub async fn jobs(&self, tenant: &str, id: &str) -> Result<Vec<OtaJob>, HubError> {
        if self.find_batch(tenant, id).await?.is_none() {
            return Err(not_found("batch", id));
        }
        self.batch_jobs(id).await
    }

    /// Cancels a batch: nothing more is sent, and every job not ended is canceled.
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<BatchView, HubError> {
        let mut batch = self
            .find_batch(tenant, id)
            .await?
            .ok_or_else(|| not_found("batch", id))?;
        let package = self.package(tenant, &batch.package_id).await?;
        batch.canceled = true;
        store::write(&**self.hub.store(), |t| records::put_batch(t, &batch)).await?;
        self.hub.inner.ota.open().remove(id);
        for job in self.batch_jobs(id).await? {
            if job.state.is_final() {
                continue;
            }
            let canceled = self
                .hub
                .change_job(&batch, &package, &job.device_name, |job| {
                    (!job.state.is_final()).then(|| {
                        job.state = OtaState::Canceled;
                        job.desc = "batch canceled".into();
                    })
                })
                .await?;
            if let Some(((), job)) = canceled {
                self.hub.ota_event(&batch, &package, &job);
            }
        }
        self.view(batch).await
    }

    /// Queues the failed and timed-out jobs of a batch again (only `devices` when given).
    pub async fn retry(
        &self,
        tenant: &str,
        id: &str,
        devices: Option<Vec<String>>,
    ) -> Result<BatchView, HubError> {
        let batch = self
            .find_batch(tenant, id)
            .await?
            .ok_or_else(|| not_found("batch", id))?;
        if batch.canceled {
            return Err(HubError::Conflict(format!("batch {id} was canceled")));
        }
        let package = self.package(tenant, &batch.package_id).await?;
        self.download_url(&package)?;
        let now = self.hub.now_ms();
        let (pk, module) = (batch.product_key.clone(), package.module.clone());
        let mut retried = 0;
        for job in self.batch_jobs(id).await? {
            let chosen = devices
                .as_ref()
                .is_none_or(|d| d.contains(&job.device_name));
            if !chosen || !matches!(job.state, OtaState::Failed | OtaState::TimedOut) {
                continue;
            }
            let dn = job.device_name.clone();
            let queued = transact(&**self.hub.store(), |t| {
                let (pk, module, dn) = (pk.clone(), module.clone(), dn.clone());
                let id = id.to_owned();
                Box::pin(async move {
                    let Some(mut job) = records::get_job(t, &id, &dn).await? else {
                        return Ok(None);
                    };
                    if !matches!(job.state, OtaState::Failed | OtaState::TimedOut) {
                        return Ok(None);
                    }
                    if records::open_job_batch(t, &pk, &dn, &module)
                        .await?
                        .is_some_and(|other| other != id)
                    {
                        // A newer batch took the device's module over.
                        return Ok(None);
                    }
                    job.state = OtaState::Queued;
                    job.step = 0;
                    job.desc = String::new();
                    job.retries += 1;
                    job.updated_at_ms = now;
                    records::put_job(t, &id, &job);
                    records::set_open_job(t, &pk, &dn, &module, &id);
                    Ok(Some(job))
                })
            })
            .await?;
            if let Some(job) = queued {
                retried += 1;
                self.hub.ota_event(&batch, &package, &job);
            }
        }
        if retried > 0 {
            self.hub
                .inner
                .ota
                .open()
                .insert(batch.id.clone(), (batch.clone(), package));
        }
        self.view(batch).await
    }
}
