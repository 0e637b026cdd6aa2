//! Firmware upgrades (OTA), as the Link SDK does them: a tenant uploads a package for a product
//! (its bytes streamed to the blob store, its size bounded by L-092, MD5 and SHA-256 computed on
//! the way), then rolls it out in batches (listed devices, the whole product, or devices on given
//! versions; L-093) at a rate and from a start time. Each device of a batch has a job:
//! [`rollout`] pushes `/ota/device/upgrade/{pk}/{dn}` to the online ones as the rate allows and
//! times out the silent ones; [`device`] answers the pull (`thing/ota/firmware/get`), follows
//! `/ota/device/progress` and ends the job when the device reports the package's version.
//! Devices download the package from an expiring signed URL that the HTTP device transport
//! serves ([`Hub::download`]). Every state change goes to the product's consumer groups.

mod batches;
mod device;
mod packages;
mod rollout;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub(crate) use device::{OtaRequest, is_progress};

use super::{Hub, HubError};
use crate::data::ota::{OtaBatch, OtaPackage, OtaTarget, SignMethod};
use crate::store::{self, records};

/// Bytes read from the blob store per step of a download.
const DOWNLOAD_STEP: usize = 256 * 1024;
/// Jobs written per transaction when a batch is made.
const JOBS_PER_TXN: usize = 500;
/// The longest version or module name (Alibaba: 64 characters).
pub const MAX_VERSION: usize = 64;

/// What the hub keeps in memory for upgrades.
#[derive(Default)]
pub(crate) struct OtaRuntime {
    /// Batches with jobs still open, by id, with their package.
    open: Mutex<HashMap<String, (OtaBatch, OtaPackage)>>,
}

impl OtaRuntime {
    /// The open batches, by id.
    pub(crate) fn open(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (OtaBatch, OtaPackage)>> {
        self.open.lock().expect("ota lock")
    }
}

/// How a package is uploaded.
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// The version devices report once upgraded (1 to 64 characters).
    #[schemars(length(min = 1, max = 64))]
    pub version: String,
    /// The firmware module (default: `default`).
    #[serde(default)]
    pub module: Option<String>,
    /// The digest devices check (default: `Md5`).
    #[serde(default, rename = "signMethod")]
    pub sign_method: Option<SignMethod>,
    /// The MD5 the uploader expects (hex): the upload is refused when the bytes differ.
    #[serde(default)]
    pub md5: Option<String>,
    /// The SHA-256 the uploader expects (hex): as `md5`.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// How a batch is made.
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// The package to roll out.
    pub package_id: String,
    /// Which devices of its product.
    pub target: OtaTarget,
    /// Devices notified per minute at most (default 0: no limit).
    #[serde(default)]
    pub rate_per_minute: u32,
    /// When to start, ms since the epoch (default: now).
    #[serde(default)]
    pub start_at_ms: Option<u64>,
    /// Minutes a notified device has to succeed (default 1440, at most 10080).
    #[serde(default)]
    #[schemars(range(min = 1, max = 10080))]
    pub timeout_minutes: Option<u32>,
}

/// A batch with its jobs counted by state.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct BatchView {
    /// The batch.
    #[serde(flatten)]
    pub batch: OtaBatch,
    /// The package's version.
    pub version: String,
    /// The package's module.
    pub module: String,
    /// Jobs per state (every state listed).
    pub counts: BTreeMap<&'static str, u64>,
    /// Jobs in all.
    pub devices: u64,
}

/// Firmware packages and upgrade batches.
#[derive(Clone, Copy)]
pub struct Ota<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Firmware packages and upgrade batches.
    pub fn ota(&self) -> Ota<'_> {
        Ota { hub: self }
    }

    /// Loads the open batches.
    pub(crate) async fn load_ota(&self) -> Result<(), HubError> {
        let batches = store::read(&**self.store(), |t| Box::pin(records::all_batches(t))).await?;
        let mut open = HashMap::new();
        for batch in batches.into_iter().filter(|b| !b.canceled) {
            let tenant = batch.tenant.clone();
            let jobs = self.ota().batch_jobs(&batch.id).await?;
            if jobs.iter().all(|j| j.state.is_final()) {
                continue;
            }
            if let Ok(package) = self.ota().package(&tenant, &batch.package_id).await {
                open.insert(batch.id.clone(), (batch, package));
            }
        }
        *self.inner.ota.open() = open;
        Ok(())
    }
}

fn check_name(what: &str, value: &str) -> Result<(), HubError> {
    let ok = !value.is_empty()
        && value.chars().count() <= MAX_VERSION
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(HubError::Invalid(format!(
            "{what} {value:?}: 1 to {MAX_VERSION} letters, digits, '.', '_', '-' or '+'"
        )))
    }
}

fn not_found(what: &'static str, id: &str) -> HubError {
    HubError::NotFound {
        what,
        id: id.to_owned(),
    }
}
