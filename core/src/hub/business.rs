//! The business API's engine: tenant API keys, and driving devices from a business server (Pub
//! to a device topic, broadcast to a product's online devices; synchronous RRPC is in
//! [`super::rrpc`]). Every call is
//! scoped to the key's tenant: another tenant's device does not exist for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Hub, HubError, device_session_key};
use crate::data::api_key::{ApiKey, ApiKeyView};
use crate::data::message::{Message, QoS};
use crate::data::model::{self, DeviceState};
use crate::limits::{LimitId, Limited};
use crate::store::StoreError;
use crate::store::{self, records, transact};
use crate::topic;

/// API keys by id, in memory for the per-request check.
#[derive(Default)]
pub(crate) struct ApiKeys {
    by_id: Mutex<HashMap<String, ApiKey>>,
}

/// A device's status as the business API shows it.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceStatus {
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// inactive, online, offline or disabled.
    pub state: DeviceState,
}

/// The hex SHA-256 of a secret (API keys, device tokens): what the store keeps instead of it.
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn not_found(pk: &str, dn: &str) -> HubError {
    HubError::NotFound {
        what: "device",
        id: format!("{pk}/{dn}"),
    }
}

impl Hub {
    pub(crate) async fn load_api_keys(&self) -> Result<(), HubError> {
        let keys = transact(&**self.store(), |t| {
            Box::pin(async move { records::list_api_keys(t).await })
        })
        .await?;
        let mut map = self.inner.api_keys.by_id.lock().expect("api keys lock");
        *map = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        Ok(())
    }

    /// The tenant a bearer token `{id}.{secret}` acts for, after the tenant's request rate
    /// (L-076). None when the token is unknown or wrong.
    pub fn business_tenant(&self, token: &str) -> Option<Result<String, Limited>> {
        let (id, secret) = token.split_once('.')?;
        let tenant = {
            let map = self.inner.api_keys.by_id.lock().expect("api keys lock");
            let key = map.get(id)?;
            if !crate::auth::signature_matches(&key.secret_sha256, hash(secret).as_bytes()) {
                return None;
            }
            key.tenant.clone()
        };
        let profile = self.profile_of(&tenant);
        let admitted = self
            .inner
            .limiter
            .api_request(&profile, &tenant, self.now_ms())
            .map_err(|l| self.counted(l));
        Some(admitted.map(|()| tenant))
    }

    /// Checks that a device exists in the tenant (another tenant's device does not exist here).
    pub(crate) async fn tenant_device(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
    ) -> Result<(), HubError> {
        match self.device_record(pk, dn).await? {
            Some(d) if d.tenant == tenant => Ok(()),
            _ => Err(not_found(pk, dn)),
        }
    }

    /// Sends a message to the product's devices online on this node, on
    /// `/sys/{pk}/{dn}{suffix}` (a broadcast, a configuration push).
    pub(crate) async fn cast_local(
        &self,
        tenant: &str,
        pk: &str,
        suffix: &str,
        payload: Bytes,
    ) -> Result<usize, StoreError> {
        let prefix = format!("{pk}/");
        let online: Vec<String> = {
            let sessions = self.inner.sessions.read().expect("sessions lock");
            sessions
                .iter()
                .filter(|(k, slot)| k.starts_with(&prefix) && slot.is_online())
                .map(|(k, _)| k[prefix.len()..].to_owned())
                .collect()
        };
        let now = self.now_ms();
        let mut reached = 0;
        for dn in online {
            let topic_name = format!("/sys/{pk}/{dn}{suffix}");
            let msg = Message::from_hub(tenant, topic_name, payload.clone(), QoS::AtMostOnce, now);
            reached += self.accept_routed(msg).await?;
        }
        Ok(reached)
    }
}

/// How long online/offline history is kept.
pub const HISTORY_RETENTION_MS: u64 = 7 * 86_400_000;

/// Records waiting to be written by a [`WriteQueue`], at most this many.
const WRITE_QUEUE_BUFFER: usize = 10_000;

/// Records per transaction of a [`WriteQueue`].
const WRITE_BATCH: usize = 512;

/// Records the hub writes in batches, off the connection path: a durable write per connect
/// would bound the connect rate by the disk (one fsync each on the embedded store).
pub(crate) struct WriteQueue<T> {
    pub(crate) tx: tokio::sync::mpsc::Sender<T>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<T>>>,
}

impl<T> Default for WriteQueue<T> {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE_BUFFER);
        WriteQueue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl<T> WriteQueue<T> {
    /// The receiving end, for the one task that writes the records.
    pub(crate) fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<T>> {
        self.rx.lock().expect("write queue lock").take()
    }
}

/// A device's online/offline change, for its history.
pub(crate) type StatusChange = (String, String, records::StatusEvent);

/// A page of devices.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct DevicePage {
    /// The devices, in name order.
    pub devices: Vec<DeviceStatus>,
    /// Pass as `after` for the next page; None at the end.
    pub next: Option<String>,
}

impl Hub {
    /// Records that a device went online or offline (written in the background).
    pub(crate) fn record_status(&self, pk: &str, dn: &str, online: bool) {
        let event = records::StatusEvent {
            status: if online { "online" } else { "offline" }.into(),
            time: self.now_ms(),
        };
        if self
            .inner
            .history
            .tx
            .try_send((pk.to_owned(), dn.to_owned(), event))
            .is_err()
        {
            tracing::warn!(device = %format!("{pk}/{dn}"), "status history buffer full: a change was not recorded");
        }
    }

    /// Marks a device activated (its first connection), in the background.
    pub(crate) async fn record_activation(&self, pk: &str, dn: &str) {
        // Waits when the queue is full rather than forgetting: activation ends dynamic
        // registration for the device (the writer drains the queue at shutdown).
        let _ = self
            .inner
            .activations
            .tx
            .send((pk.to_owned(), dn.to_owned()))
            .await;
    }

    /// The next batch of a write queue's records; None once shut down and drained (the hub's
    /// shutdown waits for the writers).
    pub(crate) async fn next_batch<T>(
        &self,
        rx: &mut tokio::sync::mpsc::Receiver<T>,
    ) -> Option<Vec<T>> {
        let first = tokio::select! {
            biased;
            e = rx.recv() => e,
            () = self.inner.shutdown.cancelled() => rx.try_recv().ok(),
        };
        let mut batch = vec![first?];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Writes buffered status changes, a batch per transaction, until shutdown.
    pub(crate) async fn write_history_forever(&self) {
        let Some(mut rx) = self.inner.history.take_receiver() else {
            return;
        };
        while let Some(batch) = self.next_batch(&mut rx).await {
            let rows: Vec<(u64, _)> = batch.into_iter().map(|e| (self.next_seq(), e)).collect();
            let cutoff = self.now_ms().saturating_sub(HISTORY_RETENTION_MS);
            let written = store::write(&**self.store(), |t| {
                for (seq, (pk, dn, event)) in &rows {
                    records::put_status_event(t, pk, dn, *seq, event);
                    records::trim_status_events(t, pk, dn, cutoff);
                }
            })
            .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, lost = rows.len(), "could not write status history");
            }
        }
    }

    /// Writes buffered activations, a batch per transaction, until shutdown. Each device is
    /// read again in the transaction: a change made meanwhile (disabled, new secret) stays.
    pub(crate) async fn write_activations_forever(&self) {
        let Some(mut rx) = self.inner.activations.take_receiver() else {
            return;
        };
        while let Some(batch) = self.next_batch(&mut rx).await {
            let batch = Arc::new(batch);
            let written = transact(&**self.store(), |t| {
                let batch = batch.clone();
                Box::pin(async move {
                    for (pk, dn) in batch.iter() {
                        if let Some(mut d) = records::get_device(t, pk, dn).await?
                            && !d.activated
                        {
                            d.activated = true;
                            records::put_device(t, &d);
                        }
                    }
                    Ok(())
                })
            })
            .await;
            if let Err(e) = written {
                // They are marked at their next connection.
                tracing::warn!(error = %e, devices = batch.len(), "could not record activations");
            }
        }
    }
}

/// The business API's operations: API keys, messages and calls to devices, broadcasts, device status, pages and online history.
#[derive(Clone, Copy)]
pub struct Business<'a> {
    pub(super) hub: &'a Hub,
}

impl Hub {
    /// The business API's operations: API keys, messages and calls to devices, broadcasts, device status, pages and online history.
    pub fn business(&self) -> Business<'_> {
        Business { hub: self }
    }
}

impl Business<'_> {
    /// Creates an API key for a tenant; returns it with its secret (shown once). The bearer
    /// token is `{id}.{secret}`.
    pub async fn create_api_key(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<(ApiKeyView, String), HubError> {
        self.hub.registry().tenant(tenant).await?;
        if !model::valid_display_name(name) {
            return Err(HubError::Invalid("name must be 1 to 64 characters".into()));
        }
        let secret = model::new_secret();
        let key = ApiKey {
            id: format!("ak{}", model::random_token(14)),
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            secret_sha256: hash(&secret),
            created_at_ms: self.hub.now_ms(),
        };
        store::write(&**self.hub.store(), |t| records::put_api_key(t, &key)).await?;
        self.hub
            .inner
            .api_keys
            .by_id
            .lock()
            .expect("api keys lock")
            .insert(key.id.clone(), key.clone());
        Ok((ApiKeyView::from(&key), secret))
    }

    /// A tenant's API keys (without secrets).
    pub fn api_keys(&self, tenant: &str) -> Vec<ApiKeyView> {
        let map = self.hub.inner.api_keys.by_id.lock().expect("api keys lock");
        let mut keys: Vec<ApiKeyView> = map
            .values()
            .filter(|k| k.tenant == tenant)
            .map(ApiKeyView::from)
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    /// Revokes an API key.
    pub async fn delete_api_key(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        let known = self.api_keys(tenant).iter().any(|k| k.id == id);
        if !known {
            return Err(HubError::NotFound {
                what: "api key",
                id: id.to_owned(),
            });
        }
        store::write(&**self.hub.store(), |t| records::delete_api_key(t, id)).await?;
        self.hub
            .inner
            .api_keys
            .by_id
            .lock()
            .expect("api keys lock")
            .remove(id);
        Ok(())
    }

    /// The device's status.
    pub async fn device_status(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
    ) -> Result<DeviceStatus, HubError> {
        let view = match self.hub.device_record(pk, dn).await? {
            Some(d) if d.tenant == tenant => self.hub.view(&d).await?,
            _ => return Err(not_found(pk, dn)),
        };
        Ok(DeviceStatus {
            product_key: view.product_key,
            device_name: view.device_name,
            state: view.state,
        })
    }

    /// Publishes `payload` to one of a device's own topics (`/{pk}/{dn}/...` or
    /// `/sys/{pk}/{dn}/...`); returns how many sessions it was handed to.
    pub async fn pub_to_device(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        topic_name: &str,
        payload: Bytes,
        qos: QoS,
    ) -> Result<usize, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        let own = [format!("/{pk}/{dn}/"), format!("/sys/{pk}/{dn}/")];
        if !own.iter().any(|p| topic_name.starts_with(p.as_str())) {
            return Err(HubError::Invalid(format!(
                "topic must be one of the device's: /{pk}/{dn}/... or /sys/{pk}/{dn}/..."
            )));
        }
        topic::validate_name(topic_name).map_err(|e| HubError::Invalid(e.to_string()))?;
        self.admit_downlink(tenant, &device_session_key(pk, dn))?;
        let msg = Message::from_hub(
            tenant,
            topic_name.to_owned(),
            payload,
            qos,
            self.hub.now_ms(),
        );
        Ok(self.hub.accept(msg).await?)
    }

    /// Sends `payload` to every online device of a product, on
    /// `/sys/{pk}/{dn}/broadcast/request/{id}` (no subscription needed); at most 64 KB (L-035)
    /// and the tenant's broadcast rate (L-036). Returns the id and how many devices got it.
    pub async fn broadcast(
        &self,
        tenant: &str,
        pk: &str,
        payload: Bytes,
    ) -> Result<(String, usize), HubError> {
        let product = self.hub.registry().product(pk).await?;
        if product.tenant != tenant {
            return Err(HubError::NotFound {
                what: "product",
                id: pk.to_owned(),
            });
        }
        let profile = self.hub.profile_of(tenant);
        let max = profile.business.broadcast_bytes;
        if max > 0 && payload.len() as u64 > max {
            return Err(HubError::Limited {
                limited: self.hub.counted(Limited::new(LimitId::BroadcastSize)),
                message: format!("a broadcast is at most {max} bytes"),
            });
        }
        self.hub
            .inner
            .limiter
            .broadcast(&profile, tenant, self.hub.now_ms())
            .map_err(|l| HubError::Limited {
                limited: self.hub.counted(l),
                message: "too many broadcasts".into(),
            })?;
        let id = self.hub.next_seq().to_string();
        let suffix = format!("/broadcast/request/{id}");
        let reached = self
            .hub
            .cast_local(tenant, pk, &suffix, payload.clone())
            .await?
            + self.hub.cast_elsewhere(tenant, pk, &suffix, &payload).await;
        Ok((id, reached))
    }

    /// A device's online/offline changes of the last 7 days, newest first (at most `limit`).
    pub async fn status_history(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        limit: usize,
    ) -> Result<Vec<records::StatusEvent>, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        let cutoff = self.hub.now_ms().saturating_sub(HISTORY_RETENTION_MS);
        let events = transact(&**self.hub.store(), |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::list_status_events(t, &pk, &dn, limit).await })
        })
        .await?;
        Ok(events.into_iter().filter(|e| e.time >= cutoff).collect())
    }

    /// A page of a product's devices in name order, after `after`, optionally only those in
    /// `state`, at most `page_size`.
    pub async fn device_page(
        &self,
        tenant: &str,
        pk: &str,
        state: Option<DeviceState>,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<DevicePage, HubError> {
        let product = self.hub.registry().product(pk).await?;
        if product.tenant != tenant {
            return Err(HubError::NotFound {
                what: "product",
                id: pk.to_owned(),
            });
        }
        let mut devices = Vec::new();
        let mut cursor = after.map(str::to_owned);
        // Reads in batches until the page is full or the product ends.
        loop {
            let batch = page_size.max(1) * 4;
            let (pk2, from) = (pk.to_owned(), cursor.clone());
            let rows = transact(&**self.hub.store(), |t| {
                let (pk, from) = (pk2.clone(), from.clone());
                Box::pin(async move {
                    records::list_devices_after(t, &pk, from.as_deref(), batch).await
                })
            })
            .await?;
            let exhausted = rows.len() < batch;
            for (i, d) in rows.iter().enumerate() {
                cursor = Some(d.device_name.clone());
                let view = self.hub.view(d).await?;
                if state.is_none_or(|s| s == view.state) {
                    devices.push(DeviceStatus {
                        product_key: view.product_key,
                        device_name: view.device_name,
                        state: view.state,
                    });
                    if devices.len() == page_size {
                        let last_of_all = exhausted && i + 1 == rows.len();
                        let next = (!last_of_all).then(|| d.device_name.clone());
                        return Ok(DevicePage { devices, next });
                    }
                }
            }
            if exhausted {
                return Ok(DevicePage {
                    devices,
                    next: None,
                });
            }
        }
    }

    /// Downlink rates: the tenant's (L-015) and the device's (L-018).
    pub(crate) fn admit_downlink(&self, tenant: &str, device_key: &str) -> Result<(), HubError> {
        let profile = self.hub.profile_of(tenant);
        self.hub
            .inner
            .limiter
            .downlink(&profile, tenant, device_key, self.hub.now_ms())
            .map_err(|l| HubError::Limited {
                limited: self.hub.counted(l),
                message: "too many messages to devices".into(),
            })
    }
}
