//! Usage events: a tenant's monthly quota crossing 80 % (warning) or reaching 100 % (disabled),
//! kept in the store under `e\0{tenant}\0{at_ms: u64 BE}\0{limit}\0{kind}`.

use serde::{Deserialize, Serialize};

use crate::store::{self, KeyRange, Store, StoreError, records, transact};

/// A monthly-quota event of a tenant.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The limit id (L-070, L-071).
    pub limit: String,
    /// `warning` (80 % crossed) or `disabled` (100 % reached).
    pub kind: String,
    /// Usage this month at the time.
    pub used: u64,
    /// The monthly limit.
    pub limit_value: u64,
}

/// Persists a usage event.
pub async fn save_event(
    store: &dyn Store,
    tenant: &str,
    event: &UsageEvent,
) -> Result<(), StoreError> {
    // Limit and kind in the key: two events of one instant (80 % and 100 % crossed at once) must
    // not share it.
    let at = event.at_ms.to_be_bytes();
    let key = records::key(&[
        b"e",
        tenant.as_bytes(),
        &at,
        event.limit.as_bytes(),
        event.kind.as_bytes(),
    ]);
    let value = serde_json::to_vec(event).expect("events serialize");
    store::write(store, |t| t.set(&key, &value)).await
}

/// A tenant's usage events, oldest first.
pub async fn events(store: &dyn Store, tenant: &str) -> Result<Vec<UsageEvent>, StoreError> {
    let range = KeyRange::prefix(&records::key(&[b"e", tenant.as_bytes(), b""]));
    let rows = transact(store, |t| {
        let range = range.clone();
        Box::pin(async move { t.range(&range, 0).await })
    })
    .await?;
    let mut events: Vec<UsageEvent> = rows
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect();
    // A warning and a disabled event of one instant: the warning first.
    events.sort_by_key(|e| (e.at_ms, e.kind == "disabled"));
    Ok(events)
}
