//! Device groups and tags (seed 000): a tenant's groups of devices across its products, with
//! sub-groups (L-099), members (L-100 per group, L-101 per device) and tags (L-090); products'
//! tags; devices found by tag and by group. [`targets`] addresses a group's devices at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Hub, HubError};
use crate::data::device_group::DeviceGroup;
use crate::limits::LimitId;
use crate::store::{self, decode_counter, records, transact};

mod targets;

pub use targets::{GroupEvent, GroupInvoke, GroupPub, GroupSet};

/// How deep sub-groups nest (a group, its sub-group, ... five levels in all).
pub const MAX_GROUP_DEPTH: usize = 5;
/// Devices one request adds to a group.
pub const MAX_DEVICES_PER_REQUEST: usize = 1_000;
/// Most devices one page of a listing or search returns.
pub const MAX_PAGE: usize = 1_000;

/// What a new group is.
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// For people: 1 to 64 characters.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// The group it is a sub-group of.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// For people: at most 256 characters.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
}

/// A group with its device count.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct GroupView {
    /// The group.
    #[serde(flatten)]
    pub group: DeviceGroup,
    /// Devices in it (its sub-groups' not included).
    pub device_count: u64,
}

/// A device as listings name it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRef {
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
}

/// A page of devices.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct DeviceRefPage {
    /// The devices, by ProductKey and DeviceName.
    pub devices: Vec<DeviceRef>,
    /// Give it as `after` for the next page (absent on the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

fn page_of(found: Vec<(String, String)>, limit: usize) -> DeviceRefPage {
    let next = (found.len() == limit)
        .then(|| found.last().map(|(pk, dn)| format!("{pk}/{dn}")))
        .flatten();
    DeviceRefPage {
        devices: found
            .into_iter()
            .map(|(product_key, device_name)| DeviceRef {
                product_key,
                device_name,
            })
            .collect(),
        next,
    }
}

/// Device groups, products' tags, and devices found by tag or group.
#[derive(Clone, Copy)]
pub struct DeviceGroups<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Device groups, products' tags, and devices found by tag or group.
    pub fn device_groups(&self) -> DeviceGroups<'_> {
        DeviceGroups { hub: self }
    }

    /// Takes a deleted device out of its groups and the tag index (its tags are `tags`).
    pub(crate) async fn forget_device_groups(
        &self,
        tenant: &str,
        (pk, dn): (&str, &str),
        tags: &BTreeMap<String, String>,
    ) -> Result<(), HubError> {
        let (tenant, pk, dn, tags) = (
            tenant.to_owned(),
            pk.to_owned(),
            dn.to_owned(),
            tags.clone(),
        );
        transact(&**self.store(), |t| {
            let (tenant, pk, dn, tags) = (tenant.clone(), pk.clone(), dn.clone(), tags.clone());
            Box::pin(async move {
                for group in records::groups_of_device(t, &pk, &dn).await? {
                    records::remove_member(t, &tenant, &group, (&pk, &dn));
                    t.add(&records::member_count_key(&tenant, &group), -1);
                }
                records::reindex_tags(t, &tenant, (&pk, &dn), &tags, &BTreeMap::new());
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

impl DeviceGroups<'_> {
    async fn counter(&self, key: Vec<u8>) -> Result<u64, HubError> {
        let n = store::read(&**self.hub.store(), |t| {
            let k = key.clone();
            Box::pin(async move { Ok(t.get(&k).await?.map_or(0, |v| decode_counter(&v))) })
        })
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn record(&self, tenant: &str, id: &str) -> Result<DeviceGroup, HubError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        store::read(&**self.hub.store(), |t| {
            let (tenant, id) = (tenant.clone(), id.clone());
            Box::pin(async move { records::get_device_group(t, &tenant, &id).await })
        })
        .await?
        .ok_or(HubError::NotFound {
            what: "device group",
            id,
        })
    }

    /// Creates a group, or a sub-group of `parent_id` (L-099; five levels at most).
    pub async fn create(&self, tenant: &str, spec: GroupSpec) -> Result<GroupView, HubError> {
        self.hub.registry().tenant(tenant).await?;
        let name = spec.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(HubError::Invalid("name: 1 to 64 characters".into()));
        }
        if spec
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 256)
        {
            return Err(HubError::Invalid(
                "description: at most 256 characters".into(),
            ));
        }
        if let Some(parent) = &spec.parent_id {
            let mut depth = 1;
            let mut at = self.record(tenant, parent).await?;
            while let Some(up) = at.parent_id.clone() {
                depth += 1;
                at = self.record(tenant, &up).await?;
            }
            if depth >= MAX_GROUP_DEPTH {
                return Err(HubError::Invalid(format!(
                    "groups nest {MAX_GROUP_DEPTH} levels deep at most"
                )));
            }
        }
        let max = self.hub.profile_of(tenant).entities.device_groups;
        let group = DeviceGroup {
            id: format!("g{:016x}", rand::random::<u64>()),
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            parent_id: spec.parent_id,
            description: spec.description,
            tags: BTreeMap::new(),
            created_at_ms: self.hub.now_ms(),
        };
        let made = transact(&**self.hub.store(), |t| {
            let group = group.clone();
            Box::pin(async move {
                let count_key = records::group_count_key(&group.tenant);
                let held = t.get(&count_key).await?.map_or(0, |v| decode_counter(&v));
                if max > 0 && held.max(0) as u64 >= max {
                    return Ok(false);
                }
                records::put_device_group(t, &group);
                t.add(&count_key, 1);
                Ok(true)
            })
        })
        .await?;
        if !made {
            return Err(self.hub.limited(
                LimitId::DeviceGroups,
                format!("at most {max} device groups per tenant, sub-groups included"),
            ));
        }
        Ok(GroupView {
            group,
            device_count: 0,
        })
    }

    /// A tenant's groups with their device counts.
    pub async fn list(&self, tenant: &str) -> Result<Vec<GroupView>, HubError> {
        self.hub.registry().tenant(tenant).await?;
        let owner = tenant.to_owned();
        Ok(store::read(&**self.hub.store(), |t| {
            let tenant = owner.clone();
            Box::pin(async move {
                let mut out = Vec::new();
                for group in records::list_device_groups(t, &tenant).await? {
                    let count_key = records::member_count_key(&tenant, &group.id);
                    let held = t.get(&count_key).await?.map_or(0, |v| decode_counter(&v));
                    out.push(GroupView {
                        group,
                        device_count: held.max(0) as u64,
                    });
                }
                Ok(out)
            })
        })
        .await?)
    }

    /// One group with its device count.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<GroupView, HubError> {
        let group = self.record(tenant, id).await?;
        let device_count = self.counter(records::member_count_key(tenant, id)).await?;
        Ok(GroupView {
            group,
            device_count,
        })
    }

    /// Deletes a group without sub-groups; its devices leave it (they are not deleted).
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        self.record(tenant, id).await?;
        let children = self
            .list(tenant)
            .await?
            .into_iter()
            .filter(|g| g.group.parent_id.as_deref() == Some(id))
            .count();
        if children > 0 {
            return Err(HubError::Conflict(format!(
                "group {id} has {children} sub-group(s): delete them first"
            )));
        }
        loop {
            let members = self.members(tenant, id, None, MAX_PAGE).await?;
            if members.devices.is_empty() {
                break;
            }
            for d in members.devices {
                self.remove_device(tenant, id, (&d.product_key, &d.device_name))
                    .await?;
            }
        }
        let (owner, name) = (tenant.to_owned(), id.to_owned());
        store::write(&**self.hub.store(), |t| {
            records::delete_device_group(t, &owner, &name);
            t.clear(&records::member_count_key(&owner, &name));
            t.add(&records::group_count_key(&owner), -1);
        })
        .await?;
        Ok(())
    }

    /// Sets a group's tags (others are kept; L-090).
    pub async fn set_tags(
        &self,
        tenant: &str,
        id: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<GroupView, HubError> {
        let mut group = self.record(tenant, id).await?;
        group.tags = self.merged_tags(tenant, &group.tags, tags)?;
        store::write(&**self.hub.store(), |t| {
            records::put_device_group(t, &group)
        })
        .await?;
        self.get(tenant, id).await
    }

    /// Deletes one of a group's tags (absent: no error).
    pub async fn delete_tag(&self, tenant: &str, id: &str, key: &str) -> Result<(), HubError> {
        let mut group = self.record(tenant, id).await?;
        if group.tags.remove(key).is_some() {
            store::write(&**self.hub.store(), |t| {
                records::put_device_group(t, &group)
            })
            .await?;
        }
        Ok(())
    }

    /// `current` with `changes`, each checked, within the tenant's L-090.
    fn merged_tags(
        &self,
        tenant: &str,
        current: &BTreeMap<String, String>,
        changes: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, HubError> {
        for (k, v) in &changes {
            super::device_info::check_tag(k, v)?;
        }
        let mut merged = current.clone();
        merged.extend(changes);
        let max = self.hub.profile_of(tenant).entities.tags_per_device;
        if max > 0 && merged.len() as u64 > max {
            return Err(self.hub.limited(
                LimitId::TagsPerDevice,
                format!("at most {max} tags per product, device or group (L-090)"),
            ));
        }
        Ok(merged)
    }

    /// Puts devices of the tenant in a group (L-100, L-101); those already in it stay.
    pub async fn add_devices(
        &self,
        tenant: &str,
        id: &str,
        devices: &[DeviceRef],
    ) -> Result<GroupView, HubError> {
        self.record(tenant, id).await?;
        if devices.is_empty() || devices.len() > MAX_DEVICES_PER_REQUEST {
            return Err(HubError::Invalid(format!(
                "devices: 1 to {MAX_DEVICES_PER_REQUEST} per request"
            )));
        }
        for d in devices {
            self.hub
                .tenant_device(tenant, &d.product_key, &d.device_name)
                .await?;
        }
        let profile = self.hub.profile_of(tenant);
        let (per_group, per_device) = (
            profile.entities.devices_per_group,
            profile.entities.groups_per_device,
        );
        for d in devices {
            let (owner, group, pk, dn) = (
                tenant.to_owned(),
                id.to_owned(),
                d.product_key.clone(),
                d.device_name.clone(),
            );
            let refused = transact(&**self.hub.store(), |t| {
                let (tenant, group, pk, dn) =
                    (owner.clone(), group.clone(), pk.clone(), dn.clone());
                Box::pin(async move {
                    if records::is_member(t, &tenant, &group, (&pk, &dn)).await? {
                        return Ok(None);
                    }
                    let count_key = records::member_count_key(&tenant, &group);
                    let held = t.get(&count_key).await?.map_or(0, |v| decode_counter(&v));
                    if per_group > 0 && held.max(0) as u64 >= per_group {
                        return Ok(Some(LimitId::DevicesPerGroup));
                    }
                    let groups = records::groups_of_device(t, &pk, &dn).await?.len() as u64;
                    if per_device > 0 && groups >= per_device {
                        return Ok(Some(LimitId::GroupsPerDevice));
                    }
                    records::add_member(t, &tenant, &group, (&pk, &dn));
                    t.add(&count_key, 1);
                    Ok(None)
                })
            })
            .await?;
            match refused {
                Some(LimitId::DevicesPerGroup) => {
                    return Err(self.hub.limited(
                        LimitId::DevicesPerGroup,
                        format!("at most {per_group} devices per group"),
                    ));
                }
                Some(limit) => {
                    return Err(self.hub.limited(
                        limit,
                        format!(
                            "device {}/{} is in {per_device} groups already",
                            d.product_key, d.device_name
                        ),
                    ));
                }
                None => {}
            }
        }
        self.get(tenant, id).await
    }

    /// Takes a device of the tenant out of a group (not in it: no error).
    pub async fn remove_device(
        &self,
        tenant: &str,
        id: &str,
        (pk, dn): (&str, &str),
    ) -> Result<(), HubError> {
        self.record(tenant, id).await?;
        self.hub.tenant_device(tenant, pk, dn).await?;
        let (owner, group, pk, dn) = (
            tenant.to_owned(),
            id.to_owned(),
            pk.to_owned(),
            dn.to_owned(),
        );
        transact(&**self.hub.store(), |t| {
            let (tenant, group, pk, dn) = (owner.clone(), group.clone(), pk.clone(), dn.clone());
            Box::pin(async move {
                if records::is_member(t, &tenant, &group, (&pk, &dn)).await? {
                    records::remove_member(t, &tenant, &group, (&pk, &dn));
                    t.add(&records::member_count_key(&tenant, &group), -1);
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    /// A page of a group's devices, after `after` (a previous page's `next`).
    pub async fn members(
        &self,
        tenant: &str,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeviceRefPage, HubError> {
        self.record(tenant, id).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let (owner, group, after) = (tenant.to_owned(), id.to_owned(), after.map(str::to_owned));
        let found = store::read(&**self.hub.store(), |t| {
            let (tenant, group, after) = (owner.clone(), group.clone(), after.clone());
            Box::pin(async move {
                records::list_members(t, &tenant, &group, after.as_deref(), limit).await
            })
        })
        .await?;
        Ok(page_of(found, limit))
    }

    /// Every device of a group (at most L-100 of them), for addressing them all.
    pub(crate) async fn all_members(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<DeviceRef>, HubError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.members(tenant, id, after.as_deref(), MAX_PAGE).await?;
            all.extend(page.devices);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The groups a device is in.
    pub async fn of_device(&self, pk: &str, dn: &str) -> Result<Vec<DeviceGroup>, HubError> {
        let device = self.hub.registry().device(pk, dn).await?;
        let (pk_owned, dn_owned) = (pk.to_owned(), dn.to_owned());
        let ids = store::read(&**self.hub.store(), |t| {
            let (pk, dn) = (pk_owned.clone(), dn_owned.clone());
            Box::pin(async move { records::groups_of_device(t, &pk, &dn).await })
        })
        .await?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            groups.push(self.record(&device.tenant, &id).await?);
        }
        Ok(groups)
    }

    /// A page of a tenant's devices that have tag `key` = `value`, and are in `group` when
    /// given.
    pub async fn search(
        &self,
        tenant: &str,
        (key, value): (&str, &str),
        group: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeviceRefPage, HubError> {
        self.hub.registry().tenant(tenant).await?;
        if let Some(group) = group {
            self.record(tenant, group).await?;
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let (owner, tag, group, after) = (
            tenant.to_owned(),
            (key.to_owned(), value.to_owned()),
            group.map(str::to_owned),
            after.map(str::to_owned),
        );
        let found = store::read(&**self.hub.store(), |t| {
            let (tenant, (k, v), group, mut after) =
                (owner.clone(), tag.clone(), group.clone(), after.clone());
            Box::pin(async move {
                let mut out = Vec::new();
                loop {
                    let tagged =
                        records::devices_tagged(t, &tenant, (&k, &v), after.as_deref(), limit)
                            .await?;
                    let last = tagged.last().map(|(pk, dn)| format!("{pk}/{dn}"));
                    for (pk, dn) in tagged {
                        let keep = match &group {
                            Some(g) => records::is_member(t, &tenant, g, (&pk, &dn)).await?,
                            None => true,
                        };
                        if keep && out.len() < limit {
                            out.push((pk, dn));
                        }
                    }
                    match last {
                        Some(last) if out.len() < limit => after = Some(last),
                        _ => return Ok(out),
                    }
                }
            })
        })
        .await?;
        Ok(page_of(found, limit))
    }

    /// A product's tags.
    pub async fn product_tags(&self, pk: &str) -> Result<BTreeMap<String, String>, HubError> {
        self.hub.registry().product(pk).await?;
        let pk = pk.to_owned();
        Ok(store::read(&**self.hub.store(), |t| {
            let pk = pk.clone();
            Box::pin(async move { records::get_product_tags(t, &pk).await })
        })
        .await?)
    }

    /// Sets a product's tags (others are kept; L-090).
    pub async fn set_product_tags(
        &self,
        pk: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let current = self.product_tags(pk).await?;
        let merged = self.merged_tags(&product.tenant, &current, tags)?;
        store::write(&**self.hub.store(), |t| {
            records::put_product_tags(t, pk, &merged)
        })
        .await?;
        Ok(merged)
    }

    /// Deletes one of a product's tags (absent: no error).
    pub async fn delete_product_tag(&self, pk: &str, key: &str) -> Result<(), HubError> {
        let mut tags = self.product_tags(pk).await?;
        if tags.remove(key).is_some() {
            store::write(&**self.hub.store(), |t| {
                records::put_product_tags(t, pk, &tags)
            })
            .await?;
        }
        Ok(())
    }
}
