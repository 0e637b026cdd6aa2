//! A device shadow's document (Alibaba's format): the state the device reported and the state the
//! business server desires, per-property timestamps and a version. The shadow service
//! of the hub reads and changes it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A device's shadow as stored and shown.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// `{"reported": {...}, "desired": {...}}`.
    pub state: ShadowState,
    /// When each property was last set: `{"reported": {"k": {"timestamp": ms}}, ...}`.
    pub metadata: ShadowState,
    /// Increases with every change.
    pub version: u64,
    /// When it last changed, ms since the epoch.
    pub timestamp: u64,
}

/// Reported and desired properties.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowState {
    /// What the device reported.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub reported: Map<String, Value>,
    /// What the business server wants.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub desired: Map<String, Value>,
}
