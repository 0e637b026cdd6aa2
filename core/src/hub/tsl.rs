//! Products' thing models as the hub keeps them: stored, cached, and applied to property posts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Hub, HubError};
use crate::store::{self, records, transact};
use crate::tsl::ThingModel;

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
    /// Sets a product's thing model (checked against L-046 to L-049); property posts of its
    /// devices are validated against it from now on.
    pub async fn put(&self, pk: &str, model: ThingModel) -> Result<(), HubError> {
        self.hub.registry().product(pk).await?;
        if let Err(e) = model.check() {
            return Err(match e.limit {
                Some(limited) => HubError::Limited {
                    limited: self.hub.counted(limited),
                    message: e.message,
                },
                None => HubError::Invalid(e.message),
            });
        }
        store::write(&**self.hub.store(), |t| records::put_model(t, pk, &model)).await?;
        self.hub
            .inner
            .models
            .write()
            .expect("models lock")
            .insert(pk.to_owned(), Arc::new(model));
        Ok(())
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
