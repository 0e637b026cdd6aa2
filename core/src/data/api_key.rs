//! A tenant's API key for the business API, as stored and as shown.

use serde::{Deserialize, Serialize};

/// A tenant's API key as stored (the secret only as its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier (`ak...`).
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret, hex (stored; never shown: see [`ApiKeyView`]).
    pub secret_sha256: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// An API key as the admin API shows it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyView {
    /// Public identifier.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            name: k.name.clone(),
            created_at_ms: k.created_at_ms,
        }
    }
}
