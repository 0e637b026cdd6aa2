//! Firmware upgrades (OTA): packages a tenant uploads for a product, batches that roll one out to
//! devices, and each device's job within a batch.

use serde::{Deserialize, Serialize};

/// How a device checks a package, as the Link SDK names it (`signMethod`).
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignMethod {
    /// MD5 of the package, lower-case hex.
    Md5,
    /// SHA-256 of the package, lower-case hex.
    #[serde(rename = "SHA256")]
    Sha256,
}

/// A firmware package: its bytes are in the hub's blob store under its id.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaPackage {
    /// Unique id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// The product whose devices it is for.
    pub product_key: String,
    /// The firmware module (`default` for the main firmware).
    pub module: String,
    /// The version a device reports once upgraded.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5, lower-case hex.
    pub md5: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// Which of the two devices are told to check.
    pub sign_method: SignMethod,
    /// Upload time, ms since the epoch.
    pub created_at_ms: u64,
}

impl OtaPackage {
    /// The digest devices check, per [`OtaPackage::sign_method`].
    pub fn sign(&self) -> &str {
        match self.sign_method {
            SignMethod::Md5 => &self.md5,
            SignMethod::Sha256 => &self.sha256,
        }
    }
}

/// Which devices of the package's product a batch upgrades.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OtaTarget {
    /// The listed devices.
    Devices {
        /// DeviceNames.
        names: Vec<String>,
    },
    /// Every device of the product.
    Product,
    /// Devices whose reported version of the package's module is one of these.
    Versions {
        /// Source versions.
        versions: Vec<String>,
    },
    /// The devices of a device group that are of the package's product.
    Group {
        /// The group's id.
        group_id: String,
    },
}

/// An upgrade batch: one package rolled out to its target devices.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaBatch {
    /// Unique id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// The package rolled out.
    pub package_id: String,
    /// The package's product.
    pub product_key: String,
    /// How the devices were chosen.
    pub target: OtaTarget,
    /// Devices notified per minute at most (0: no limit).
    pub rate_per_minute: u32,
    /// When notifications start, ms since the epoch.
    pub start_at_ms: u64,
    /// How long a notified device has to report success before it is timed out, minutes.
    pub timeout_minutes: u32,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// Canceled: nothing more is sent, unfinished jobs are canceled.
    pub canceled: bool,
}

/// Where one device's upgrade stands.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtaState {
    /// Waiting for its turn (the batch's start, its rate, or the device to come online).
    Queued,
    /// Sent the upgrade (push), or fetched it (pull); no progress yet.
    Notified,
    /// Reporting progress.
    InProgress,
    /// Reported the package's version.
    Succeeded,
    /// Reported a failure.
    Failed,
    /// Canceled with its batch, or by a newer batch of the same module.
    Canceled,
    /// Did not succeed within the batch's timeout.
    TimedOut,
}

impl OtaState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OtaState::Succeeded | OtaState::Failed | OtaState::Canceled | OtaState::TimedOut
        )
    }

    /// Every state, in the order of a job's life.
    pub const ALL: [OtaState; 7] = [
        OtaState::Queued,
        OtaState::Notified,
        OtaState::InProgress,
        OtaState::Succeeded,
        OtaState::Failed,
        OtaState::Canceled,
        OtaState::TimedOut,
    ];

    /// The state's name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            OtaState::Queued => "queued",
            OtaState::Notified => "notified",
            OtaState::InProgress => "in_progress",
            OtaState::Succeeded => "succeeded",
            OtaState::Failed => "failed",
            OtaState::Canceled => "canceled",
            OtaState::TimedOut => "timed_out",
        }
    }
}

/// One device's upgrade within a batch.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaJob {
    /// The device's name (the batch names its product).
    pub device_name: String,
    /// Where it stands.
    pub state: OtaState,
    /// The version the device reported when the batch was made, if any.
    pub source_version: Option<String>,
    /// The last progress step the device reported (1 to 100; negative: its failure code).
    pub step: i32,
    /// The device's last description, or why the hub ended the job.
    pub desc: String,
    /// When the state last changed, ms since the epoch.
    pub updated_at_ms: u64,
    /// How many times it was retried.
    pub retries: u32,
}
