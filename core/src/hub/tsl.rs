//! Products' thing models as the hub keeps them: stored with their last versions, cached,
//! applied to property posts, and imported and exported in Alibaba's document format.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;

use super::{Hub, HubError};
use crate::store::{self, records, transact};
use crate::tsl::{Module, ThingModel, alibaba, bounds};

/// A saved version of a product's thing model.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct ModelVersionView {
    /// 1, 2, ... per product.
    pub version: u64,
    /// When it was saved, ms since the epoch.
    pub saved_at_ms: u64,
    /// The model.
    pub model: ThingModel,
}

/// A saved version in a listing.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// 1, 2, ... per product.
    pub version: u64,
    /// When it was saved, ms since the epoch.
    pub saved_at_ms: u64,
    /// Its properties, services and events, all modules together.
    pub features: usize,
}

/// The thing model of each product that has one.
pub(crate) type Models = RwLock<HashMap<String, Arc<ThingModel>>>;

impl Hub {
    pub(crate) async fn load_models(&self) -> Result<(), HubError> {
        let models = transact(&**self.store(), |t| {
            Box::pin(async move { records::list_models(t).await })
        })
        .await?;
        let map = models
            .into_iter()
            .map(|(pk, m)| (pk, Arc::new(m)))
            .collect();
        *self.inner.models.write().expect("models lock") = map;
        Ok(())
    }

    pub(crate) fn model_of(&self, pk: &str) -> Option<Arc<ThingModel>> {
        self.inner
            .models
            .read()
            .expect("models lock")
            .get(pk)
            .cloned()
    }
}

/// Products' thing models (TSL).
#[derive(Clone, Copy)]
pub struct ThingModels<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Products' thing models (TSL).
    pub fn thing_models(&self) -> ThingModels<'_> {
        ThingModels { hub: self }
    }
}

impl ThingModels<'_> {
    /// Sets a product's thing model (checked against L-045 to L-049 and L-104), saved as a new
    /// version (the newest 10 kept, L-105); property posts of its devices are validated against
    /// it from now on. Returns the version.
    pub async fn put(&self, pk: &str, model: ThingModel) -> Result<u64, HubError> {
        self.hub.registry().product(pk).await?;
        model.check().map_err(|e| self.refusal(e))?;
        let (product, saved, now) = (pk.to_owned(), model.clone(), self.hub.now_ms());
        let version = transact(&**self.hub.store(), |t| {
            let (pk, model) = (product.clone(), saved.clone());
            Box::pin(async move {
                records::put_model(t, &pk, &model);
                records::save_model_version(t, &pk, &model, now, bounds::VERSIONS).await
            })
        })
        .await?;
        self.hub
            .inner
            .models
            .write()
            .expect("models lock")
            .insert(pk.to_owned(), Arc::new(model));
        Ok(version)
    }

    /// Imports a module from Alibaba's document format (L-102, L-103): the default module, or
    /// the custom module its `profile.functionBlockId` names; the model's other modules stay.
    /// Saved as a new version.
    pub async fn import(&self, pk: &str, document: &[u8]) -> Result<ModelVersionView, HubError> {
        let imported = alibaba::import(document).map_err(|e| self.refusal(e))?;
        let mut model = self.get(pk).await?;
        let features = imported.features;
        match imported.module {
            None => {
                model.properties = features.properties;
                model.services = features.services;
                model.events = features.events;
            }
            Some(id) => {
                let module = Module {
                    identifier: id.clone(),
                    ..features
                };
                match model.modules.iter_mut().find(|m| m.identifier == id) {
                    Some(existing) => *existing = module,
                    None => model.modules.push(module),
                }
            }
        }
        let version = self.put(pk, model.clone()).await?;
        Ok(ModelVersionView {
            version,
            saved_at_ms: self.hub.now_ms(),
            model,
        })
    }

    /// A module of the product's model (the default one, or the custom `module`) in Alibaba's
    /// document format.
    pub async fn export(&self, pk: &str, module: Option<&str>) -> Result<Value, HubError> {
        let model = self.get(pk).await?;
        alibaba::export(&model, pk, module).ok_or_else(|| HubError::NotFound {
            what: "thing model module",
            id: module.unwrap_or_default().to_owned(),
        })
    }

    /// The product's saved versions (the newest 10, L-105), newest first, without their models.
    pub async fn versions(&self, pk: &str) -> Result<Vec<VersionInfo>, HubError> {
        Ok(self
            .saved(pk)
            .await?
            .into_iter()
            .rev()
            .map(|v| VersionInfo {
                version: v.version,
                saved_at_ms: v.saved_at_ms,
                features: v.model.features(),
            })
            .collect())
    }

    /// One saved version.
    pub async fn version(&self, pk: &str, version: u64) -> Result<ModelVersionView, HubError> {
        self.saved(pk)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .map(|v| ModelVersionView {
                version: v.version,
                saved_at_ms: v.saved_at_ms,
                model: v.model,
            })
            .ok_or_else(|| HubError::NotFound {
                what: "thing model version",
                id: version.to_string(),
            })
    }

    /// Makes a saved version the product's model again (saved as a new version).
    pub async fn restore(&self, pk: &str, version: u64) -> Result<ModelVersionView, HubError> {
        let old = self.version(pk, version).await?;
        let version = self.put(pk, old.model.clone()).await?;
        Ok(ModelVersionView {
            version,
            saved_at_ms: self.hub.now_ms(),
            model: old.model,
        })
    }

    async fn saved(&self, pk: &str) -> Result<Vec<records::ModelVersion>, HubError> {
        self.hub.registry().product(pk).await?;
        let pk = pk.to_owned();
        Ok(store::read(&**self.hub.store(), |t| {
            let pk = pk.clone();
            Box::pin(async move { records::list_model_versions(t, &pk).await })
        })
        .await?)
    }

    fn refusal(&self, e: crate::tsl::ModelError) -> HubError {
        match e.limit {
            Some(limited) => HubError::Limited {
                limited: self.hub.counted(limited),
                message: e.message,
            },
            None => HubError::Invalid(e.message),
        }
    }

    /// A product's thing model (empty when it has none).
    pub async fn get(&self, pk: &str) -> Result<ThingModel, HubError> {
        self.hub.registry().product(pk).await?;
        Ok(self
            .hub
            .model_of(pk)
            .map(|m| (*m).clone())
            .unwrap_or_default())
    }
}
