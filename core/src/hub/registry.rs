//! The registry service: tenants, products and devices (create, read, list, enable, delete) and
//! the views the admin API shows of them. Each change notifies the product's consumer groups.

use serde::Serialize;

use super::{Hub, HubError, RecentMessage, device_session_key};
use crate::data::event::Event;
use crate::data::model::{self, Device, DeviceState, NodeType, Product, Tenant};
use crate::limits::LimitId;
use crate::store::records::{self, LIST_LIMIT};
use crate::store::{self, StoreError, transact};

/// A device as the admin API shows it (no secret).
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceView {
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// Owning tenant.
    pub tenant: String,
    /// inactive, online, offline or disabled.
    pub state: DeviceState,
    /// Creation time.
    pub created_at_ms: u64,
}

/// A product as the admin API shows it (no secret).
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProductView {
    /// ProductKey.
    pub product_key: String,
    /// Name.
    pub name: String,
    /// Owning tenant.
    pub tenant: String,
    /// device or gateway.
    pub node_type: NodeType,
    /// Whether dynamic registration is on.
    pub dynamic_registration: bool,
    /// Creation time.
    pub created_at_ms: u64,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            product_key: p.product_key.clone(),
            name: p.name.clone(),
            tenant: p.tenant.clone(),
            node_type: p.node_type,
            dynamic_registration: p.dynamic_registration,
            created_at_ms: p.created_at_ms,
        }
    }
}

impl Hub {
    pub(crate) async fn device_record(
        &self,
        pk: &str,
        dn: &str,
    ) -> Result<Option<Device>, StoreError> {
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        // Every connect reads this: it does not wait for writers.
        store::read(&**self.store(), |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::get_device(t, &pk, &dn).await })
        })
        .await
    }

    pub(crate) async fn view(&self, d: &Device) -> Result<DeviceView, StoreError> {
        let key = device_session_key(&d.product_key, &d.device_name);
        let online = self.online_anywhere(&key).await?;
        let state = match (d.enabled, online, d.activated) {
            (false, _, _) => DeviceState::Disabled,
            (true, true, _) => DeviceState::Online,
            (true, false, true) => DeviceState::Offline,
            (true, false, false) => DeviceState::Inactive,
        };
        Ok(DeviceView {
            product_key: d.product_key.clone(),
            device_name: d.device_name.clone(),
            tenant: d.tenant.clone(),
            state,
            created_at_ms: d.created_at_ms,
        })
    }
}

/// Tenants, products and devices: the registry every other service reads.
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Tenants, products and devices: the registry every other service reads.
    pub fn registry(&self) -> Registry<'_> {
        Registry { hub: self }
    }
}

impl Registry<'_> {
    /// Creates a tenant with a profile (the default profile when None).
    pub async fn create_tenant(
        &self,
        id: &str,
        name: &str,
        profile: Option<&str>,
    ) -> Result<Tenant, HubError> {
        model::validate_tenant_id(id).map_err(|e| HubError::Invalid(e.to_string()))?;
        let profile = profile.unwrap_or(crate::limits::DEFAULT_PROFILE);
        self.hub.limits().profile_named(profile)?;
        let tenant = Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            profile: profile.to_owned(),
            created_at_ms: self.hub.now_ms(),
        };
        let t2 = tenant.clone();
        transact(&**self.hub.store(), |t| {
            let tenant = t2.clone();
            Box::pin(async move {
                if records::get_tenant(t, &tenant.id).await?.is_some() {
                    return Ok(false);
                }
                records::put_tenant(t, &tenant);
                Ok(true)
            })
        })
        .await?
        .then(|| {
            self.hub.remember_tenant_profile(&tenant);
            tenant
        })
        .ok_or_else(|| HubError::AlreadyExists {
            what: "tenant",
            id: id.to_owned(),
        })
    }

    /// Reads a tenant.
    pub async fn tenant(&self, id: &str) -> Result<Tenant, HubError> {
        let id2 = id.to_owned();
        transact(&**self.hub.store(), |t| {
            let id = id2.clone();
            Box::pin(async move { records::get_tenant(t, &id).await })
        })
        .await?
        .ok_or_else(|| HubError::NotFound {
            what: "tenant",
            id: id.to_owned(),
        })
    }

    /// Lists tenants.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, HubError> {
        Ok(transact(&**self.hub.store(), |t| Box::pin(records::list_tenants(t))).await?)
    }

    /// Deletes a tenant that owns no product.
    pub async fn delete_tenant(&self, id: &str) -> Result<(), HubError> {
        self.tenant(id).await?;
        if !self.products(Some(id)).await?.is_empty() {
            return Err(HubError::Conflict(format!(
                "tenant {id} still has products; delete them first"
            )));
        }
        if !self.hub.rules().list(id).await?.is_empty()
            || !self.hub.groups().list(id).await?.is_empty()
        {
            return Err(HubError::Conflict(format!(
                "tenant {id} still has rules or consumer groups; delete them first"
            )));
        }
        // Its API keys go with it: a tenant created again under the id must not inherit them.
        for key in self.hub.business().api_keys(id) {
            self.hub.business().delete_api_key(id, &key.id).await?;
        }
        store::write(&**self.hub.store(), |t| records::delete_tenant(t, id)).await?;
        Ok(())
    }

    /// Creates a product; the returned record carries the ProductSecret (shown once).
    pub async fn create_product(
        &self,
        tenant: &str,
        name: &str,
        node_type: NodeType,
        dynamic_registration: bool,
    ) -> Result<Product, HubError> {
        self.tenant(tenant).await?;
        if !model::valid_display_name(name) {
            return Err(HubError::Invalid("name must be 1 to 64 characters".into()));
        }
        let product = Product {
            tenant: tenant.to_owned(),
            product_key: model::new_product_key(),
            name: name.to_owned(),
            node_type,
            product_secret: model::new_secret(),
            dynamic_registration,
            created_at_ms: self.hub.now_ms(),
        };
        let max = self.hub.profile_of(tenant).entities.products;
        let p2 = product.clone();
        let created = transact(&**self.hub.store(), |t| {
            let p = p2.clone();
            Box::pin(async move {
                let owned = records::list_products(t)
                    .await?
                    .iter()
                    .filter(|x| x.tenant == p.tenant)
                    .count();
                if max > 0 && owned as u64 >= max {
                    return Ok(false);
                }
                records::put_product(t, &p);
                Ok(true)
            })
        })
        .await?;
        if !created {
            return Err(self.hub.limited(
                LimitId::ProductsPerTenant,
                format!("tenant {tenant} has {max} products"),
            ));
        }
        Ok(product)
    }

    /// Reads a product (with its secret: callers must not expose it).
    pub async fn product(&self, pk: &str) -> Result<Product, HubError> {
        let pk2 = pk.to_owned();
        transact(&**self.hub.store(), |t| {
            let pk = pk2.clone();
            Box::pin(async move { records::get_product(t, &pk).await })
        })
        .await?
        .ok_or_else(|| HubError::NotFound {
            what: "product",
            id: pk.to_owned(),
        })
    }

    /// Lists products, of one tenant or all.
    pub async fn products(&self, tenant: Option<&str>) -> Result<Vec<ProductView>, HubError> {
        let all = transact(&**self.hub.store(), |t| Box::pin(records::list_products(t))).await?;
        Ok(all
            .iter()
            .filter(|p| tenant.is_none_or(|t| p.tenant == t))
            .map(ProductView::from)
            .collect())
    }

    /// Deletes a product and its devices; their connections are closed.
    pub async fn delete_product(&self, pk: &str) -> Result<(), HubError> {
        let product = self.product(pk).await?;
        self.hub
            .forget_product_in_groups(&product.tenant, pk)
            .await?;
        for d in self.devices(pk, LIST_LIMIT).await? {
            let key = device_session_key(pk, &d.device_name);
            self.hub.kick(&key).await;
            self.hub.drop_session(&key).await?;
            self.hub
                .notify_topo_change(&product.tenant, (pk, &d.device_name), 1)
                .await;
            self.hub
                .forget_topology(&product.tenant, pk, &d.device_name)
                .await?;
            self.hub.ota_device_deleted(pk, &d.device_name).await?;
        }
        let pk2 = pk.to_owned();
        transact(&**self.hub.store(), |t| {
            let pk = pk2.clone();
            Box::pin(async move {
                let Some(product) = records::get_product(t, &pk).await? else {
                    return Ok(());
                };
                let (_, devices) = records::device_counts(t, &product.tenant, &pk).await?;
                records::count_devices(t, &product.tenant, &pk, -(devices as i64));
                records::clear_product_count(t, &pk);
                records::delete_product(t, &pk);
                records::delete_model(t, &pk);
                records::delete_remote_config(t, &pk);
                records::delete_product_history(t, &product.tenant, &pk);
                records::put_topic_categories(t, &pk, &[]);
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    /// Creates a device; the returned record carries the DeviceSecret (shown once). A missing
    /// name gets a random one.
    pub async fn create_device(&self, pk: &str, name: Option<&str>) -> Result<Device, HubError> {
        let product = self.product(pk).await?;
        self.hub.registry_operation(&product.tenant)?;
        let name = name
            .map(str::to_owned)
            .unwrap_or_else(|| model::random_token(20));
        model::validate_device_name(&name).map_err(|e| HubError::Invalid(e.to_string()))?;
        let entities = self.hub.profile_of(&product.tenant).entities.clone();
        let device = Device {
            product_key: pk.to_owned(),
            device_name: name.clone(),
            tenant: product.tenant,
            device_secret: model::new_secret(),
            enabled: true,
            activated: false,
            created_at_ms: self.hub.now_ms(),
        };
        let d2 = device.clone();
        let outcome = transact(&**self.hub.store(), |t| {
            let d = d2.clone();
            let entities = entities.clone();
            Box::pin(async move {
                if records::get_device(t, &d.product_key, &d.device_name)
                    .await?
                    .is_some()
                {
                    return Ok(Err(None));
                }
                let (in_tenant, in_product) =
                    records::device_counts(t, &d.tenant, &d.product_key).await?;
                if entities.devices > 0 && in_tenant >= entities.devices {
                    return Ok(Err(Some((LimitId::DevicesPerTenant, entities.devices))));
                }
                if entities.devices_per_product > 0 && in_product >= entities.devices_per_product {
                    return Ok(Err(Some((
                        LimitId::DevicesPerProduct,
                        entities.devices_per_product,
                    ))));
                }
                records::put_device(t, &d);
                records::count_devices(t, &d.tenant, &d.product_key, 1);
                Ok(Ok(()))
            })
        })
        .await?;
        match outcome {
            Ok(()) => {
                self.hub.notify_groups(pk, |id, now| {
                    Event::lifecycle(id, &device.tenant, pk, &name, "create", now)
                });
                Ok(device)
            }
            Err(None) => Err(HubError::AlreadyExists {
                what: "device",
                id: format!("{pk}/{name}"),
            }),
            Err(Some((limit, max))) => {
                Err(self.hub.limited(limit, format!("at most {max} devices")))
            }
        }
    }

    /// Reads a device's public view.
    pub async fn device(&self, pk: &str, dn: &str) -> Result<DeviceView, HubError> {
        let d = self
            .hub
            .device_record(pk, dn)
            .await?
            .ok_or_else(|| HubError::NotFound {
                what: "device",
                id: format!("{pk}/{dn}"),
            })?;
        Ok(self.hub.view(&d).await?)
    }

    /// The last messages the device sent (newest first; this node's memory, bounded by
    /// `recent_messages_per_device`).
    pub async fn recent_messages(
        &self,
        pk: &str,
        dn: &str,
    ) -> Result<Vec<RecentMessage>, HubError> {
        self.device(pk, dn).await?;
        Ok(self.hub.inner.recent.of(&device_session_key(pk, dn)))
    }

    /// Lists a product's devices (at most `limit`).
    pub async fn devices(&self, pk: &str, limit: usize) -> Result<Vec<DeviceView>, HubError> {
        self.product(pk).await?;
        let pk2 = pk.to_owned();
        let list = transact(&**self.hub.store(), |t| {
            let pk = pk2.clone();
            Box::pin(async move { records::list_devices(t, &pk, limit).await })
        })
        .await?;
        let mut views = Vec::with_capacity(list.len());
        for d in &list {
            views.push(self.hub.view(d).await?);
        }
        Ok(views)
    }

    /// Enables or disables a device; disabling closes its connection.
    pub async fn set_device_enabled(
        &self,
        pk: &str,
        dn: &str,
        enabled: bool,
    ) -> Result<DeviceView, HubError> {
        let current = self.device(pk, dn).await?;
        self.hub.registry_operation(&current.tenant)?;
        let (pk2, dn2) = (pk.to_owned(), dn.to_owned());
        let device = transact(&**self.hub.store(), |t| {
            let (pk, dn) = (pk2.clone(), dn2.clone());
            Box::pin(async move {
                let Some(mut d) = records::get_device(t, &pk, &dn).await? else {
                    return Ok(None);
                };
                d.enabled = enabled;
                records::put_device(t, &d);
                Ok(Some(d))
            })
        })
        .await?
        .ok_or_else(|| HubError::NotFound {
            what: "device",
            id: format!("{pk}/{dn}"),
        })?;
        if !enabled {
            self.hub.kick(&device_session_key(pk, dn)).await;
        }
        // A sub-device's gateway hears of it (disable 8, enable 2).
        let status = if enabled { 2 } else { 8 };
        self.hub
            .notify_topo_change(&device.tenant, (pk, dn), status)
            .await;
        let action = if enabled { "enable" } else { "disable" };
        self.hub.notify_groups(pk, |id, now| {
            Event::lifecycle(id, &device.tenant, pk, dn, action, now)
        });
        Ok(self.hub.view(&device).await?)
    }

    /// Deletes a device, closing its connection and dropping its session.
    pub async fn delete_device(&self, pk: &str, dn: &str) -> Result<(), HubError> {
        let device = self.device(pk, dn).await?;
        self.hub.registry_operation(&device.tenant)?;
        let key = device_session_key(pk, dn);
        self.hub.kick(&key).await;
        self.hub.drop_session(&key).await?;
        self.hub.inner.recent.forget(&key);
        self.hub
            .notify_topo_change(&device.tenant, (pk, dn), 1)
            .await;
        self.hub.forget_topology(&device.tenant, pk, dn).await?;
        self.hub.ota_device_deleted(pk, dn).await?;
        let tags = self.hub.device_infos().get(pk, dn).await?.tags;
        self.hub
            .forget_device_groups(&device.tenant, (pk, dn), &tags)
            .await?;
        store::write(&**self.hub.store(), |t| {
            records::delete_open_jobs(t, pk, dn);
            records::delete_device_history(t, &device.tenant, pk, dn);
            records::delete_service_calls(t, &device.tenant, pk, dn);
            records::delete_shadow(t, pk, dn);
            records::delete_device_info(t, pk, dn);
            records::put_desired(t, pk, dn, &Default::default());
            records::delete_status_events(t, pk, dn);
            records::delete_device(t, pk, dn);
            records::count_devices(t, &device.tenant, pk, -1);
        })
        .await?;
        self.hub.notify_groups(pk, |id, now| {
            Event::lifecycle(id, &device.tenant, pk, dn, "delete", now)
        });
        Ok(())
    }
}
