//! Remote configuration, as Alibaba's: one JSON file per product (at most L-094), which devices
//! fetch with `/sys/{pk}/{dn}/thing/config/get` (answered on `..._reply`) and are told of on
//! `/sys/{pk}/{dn}/thing/config/push` when the business side pushes it. Both carry the file's
//! id, size, SHA-256 and a signed URL the HTTP device transport serves; the device downloads it
//! from there (`getType` `file`).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::downloads::{Download, DownloadError};
use super::session::{ClientIdentity, alink_answer, alink_request};
use super::{Hub, HubError};
use crate::data::model::RemoteConfig;
use crate::limits::LimitId;
use crate::store::{self, records};

/// Alink code of a `config/get` for a product without a configuration file (Alibaba: the
/// configuration function is not available).
const NO_CONFIG: u16 = 6713;

/// A product's configuration file, as the API shows it.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct ConfigView {
    /// The file's id (a new one for every change).
    pub config_id: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lower-case hex (the `sign` devices check).
    pub sha256: String,
    /// When it was set, ms since the epoch.
    pub updated_at_ms: u64,
    /// The file.
    pub content: Value,
}

impl From<RemoteConfig> for ConfigView {
    fn from(c: RemoteConfig) -> Self {
        ConfigView {
            content: serde_json::from_str(&c.content).unwrap_or_default(),
            config_id: c.config_id,
            size: c.content.len() as u64,
            sha256: c.sha256,
            updated_at_ms: c.updated_at_ms,
        }
    }
}

/// Products' remote configuration files.
#[derive(Clone, Copy)]
pub struct RemoteConfigs<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Products' remote configuration files.
    pub fn remote_configs(&self) -> RemoteConfigs<'_> {
        RemoteConfigs { hub: self }
    }

    /// Answers a device's `thing/config/get`: its product's file (`configId`, `configSize`,
    /// `sign`, `signMethod` `Sha256`, `url`, `getType` `file`), or 6713 without one.
    pub(crate) async fn config_request(&self, identity: &ClientIdentity, payload: &[u8]) -> Bytes {
        let method = "thing.config.get";
        let (id, _) = alink_request(payload);
        let Some((pk, _)) = identity.device.as_ref() else {
            return alink_answer(&id, 460, json!({}), "not a device", method);
        };
        let configs = self.remote_configs();
        let answer = match configs.find(pk).await {
            Ok(Some(config)) => configs.params(pk, &config),
            Ok(None) => Err(HubError::NotFound {
                what: "configuration of product",
                id: pk.clone(),
            }),
            Err(e) => Err(e.into()),
        };
        match answer {
            Ok(data) => alink_answer(&id, 200, data, "success", method),
            Err(e @ HubError::NotFound { .. }) => {
                alink_answer(&id, NO_CONFIG, json!({}), &e.to_string(), method)
            }
            Err(e) => alink_answer(&id, 500, json!({}), &e.to_string(), method),
        }
    }
}

impl RemoteConfigs<'_> {
    async fn find(&self, pk: &str) -> Result<Option<RemoteConfig>, store::StoreError> {
        let pk = pk.to_owned();
        store::read(&**self.hub.store(), |t| {
            let pk = pk.clone();
            Box::pin(async move { records::get_remote_config(t, &pk).await })
        })
        .await
    }

    /// What a push or a `config/get` reply carries about the file.
    fn params(&self, pk: &str, config: &RemoteConfig) -> Result<Value, HubError> {
        let url = self
            .hub
            .signed_url(&format!("/config/{pk}/{}", config.config_id))?;
        Ok(json!({
            "configId": config.config_id, "configSize": config.content.len(),
            "sign": config.sha256, "signMethod": "Sha256", "url": url, "getType": "file",
        }))
    }

    /// Sets product `pk`'s file: JSON (Alibaba accepts nothing else) of at most L-094 bytes.
    pub async fn set(&self, pk: &str, content: &[u8]) -> Result<ConfigView, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let max = self
            .hub
            .profile_of(&product.tenant)
            .entities
            .remote_config_bytes;
        if max > 0 && content.len() as u64 > max {
            return Err(self.hub.limited(
                LimitId::RemoteConfigSize,
                format!(
                    "a configuration file is at most {max} bytes (L-094, profile entities.remote_config_bytes)"
                ),
            ));
        }
        let text = std::str::from_utf8(content)
            .ok()
            .filter(|t| serde_json::from_str::<Value>(t).is_ok())
            .ok_or_else(|| HubError::Invalid("a configuration file is JSON".into()))?;
        let config = RemoteConfig {
            config_id: format!("cfg{}", self.hub.next_seq()),
            content: text.to_owned(),
            sha256: hex::encode(Sha256::digest(content)),
            updated_at_ms: self.hub.now_ms(),
        };
        store::write(&**self.hub.store(), |t| {
            records::put_remote_config(t, pk, &config);
        })
        .await?;
        Ok(config.into())
    }

    /// Product `pk`'s file.
    pub async fn get(&self, pk: &str) -> Result<ConfigView, HubError> {
        self.hub.registry().product(pk).await?;
        self.find(pk)
            .await?
            .map(ConfigView::from)
            .ok_or_else(|| HubError::NotFound {
                what: "configuration of product",
                id: pk.to_owned(),
            })
    }

    /// Removes product `pk`'s file.
    pub async fn delete(&self, pk: &str) -> Result<(), HubError> {
        self.hub.registry().product(pk).await?;
        store::write(&**self.hub.store(), |t| {
            records::delete_remote_config(t, pk)
        })
        .await?;
        Ok(())
    }

    /// Tells every online device of product `pk` of its file on `/sys/{pk}/{dn}/thing/config/push`
    /// (across the cluster); returns how many were told.
    pub async fn push(&self, pk: &str) -> Result<usize, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let config = self.find(pk).await?.ok_or_else(|| HubError::NotFound {
            what: "configuration of product",
            id: pk.to_owned(),
        })?;
        let body = json!({
            "id": self.hub.next_seq().to_string(), "version": "1.0", "method": "thing.config.push",
            "params": self.params(pk, &config)?,
        });
        let payload = Bytes::from(body.to_string());
        let suffix = "/thing/config/push";
        let tenant = &product.tenant;
        Ok(self
            .hub
            .cast_local(tenant, pk, suffix, payload.clone())
            .await?
            + self.hub.cast_elsewhere(tenant, pk, suffix, &payload).await)
    }

    /// A file's bytes, for [`Hub::download`] (only the current file of the product).
    pub(crate) async fn open_file(
        &self,
        pk: &str,
        config_id: &str,
    ) -> Result<Download, DownloadError> {
        let found = self
            .find(pk)
            .await?
            .filter(|c| c.config_id == config_id)
            .ok_or(DownloadError::NotFound)?;
        let bytes = Bytes::from(found.content);
        Ok(Download {
            size: bytes.len() as u64,
            body: Box::pin(futures_util::stream::iter([Ok(bytes)])),
        })
    }
}
