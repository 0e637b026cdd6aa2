//! Device groups (seed 000: groups of devices across products, with sub-groups) and the tags of
//! products and groups.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A group of a tenant's devices, of any of its products.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGroup {
    /// Unique within the tenant.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// For people.
    pub name: String,
    /// The group it is a sub-group of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tag key to value (what its devices have in common).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When it was created, ms since the epoch.
    pub created_at_ms: u64,
}
