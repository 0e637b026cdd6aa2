//! `ironhub device-group ...`: device groups, their members and tags; devices found by tag.

use std::collections::BTreeMap;

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use super::{ApiArgs, call, print};

/// `ironhub device-group ...`
#[derive(Debug, Subcommand)]
pub enum DeviceGroupCmd {
    /// Create a group, or a sub-group.
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// The group it is a sub-group of.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List a tenant's groups.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Delete a group (without sub-groups).
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        id: String,
    },
    /// Put devices in a group.
    Add {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        id: String,
        /// Devices as ProductKey/DeviceName, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        devices: Vec<String>,
    },
    /// Take a device out of a group.
    Remove {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        id: String,
        /// ProductKey/DeviceName.
        #[arg(long)]
        device: String,
    },
    /// A page of a group's devices.
    Devices {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        id: String,
        /// The previous page's `next`.
        #[arg(long)]
        after: Option<String>,
    },
    /// Set a group's tags (KEY=VALUE ...), keeping the others.
    Tag {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        id: String,
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// A page of the tenant's devices with a tag (KEY:VALUE), in a group when given.
    Search {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// KEY:VALUE.
        #[arg(long)]
        tag: String,
        /// Only devices in this group.
        #[arg(long)]
        group: Option<String>,
        /// The previous page's `next`.
        #[arg(long)]
        after: Option<String>,
    },
}

fn device(text: &str) -> anyhow::Result<Value> {
    let (pk, dn) = text
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{text}: a device is ProductKey/DeviceName"))?;
    Ok(json!({ "product_key": pk, "device_name": dn }))
}

/// Runs a device-group subcommand.
pub async fn device_group(api: &ApiArgs, cmd: DeviceGroupCmd) -> anyhow::Result<()> {
    let base = |tenant: &str| format!("/api/v1/tenants/{tenant}/device-groups");
    let v = match cmd {
        DeviceGroupCmd::Create {
            tenant,
            name,
            parent,
        } => {
            let body = json!({ "name": name, "parent_id": parent });
            call(api, Method::POST, &base(&tenant), Some(body)).await?
        }
        DeviceGroupCmd::List { tenant } => call(api, Method::GET, &base(&tenant), None).await?,
        DeviceGroupCmd::Delete { tenant, id } => {
            let path = format!("{}/{id}", base(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
        DeviceGroupCmd::Add {
            tenant,
            id,
            devices,
        } => {
            let devices = devices
                .iter()
                .map(|d| device(d))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let path = format!("{}/{id}/devices", base(&tenant));
            call(
                api,
                Method::POST,
                &path,
                Some(json!({ "devices": devices })),
            )
            .await?
        }
        DeviceGroupCmd::Remove { tenant, id, device } => {
            let path = format!("{}/{id}/devices/{device}", base(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
        DeviceGroupCmd::Devices { tenant, id, after } => {
            let q = after.map(|a| format!("?after={a}")).unwrap_or_default();
            let path = format!("{}/{id}/devices{q}", base(&tenant));
            call(api, Method::GET, &path, None).await?
        }
        DeviceGroupCmd::Tag { tenant, id, tags } => {
            let tags = tags
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("{t}: a tag is KEY=VALUE"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let path = format!("{}/{id}/tags", base(&tenant));
            call(api, Method::PUT, &path, Some(json!(tags))).await?
        }
        DeviceGroupCmd::Search {
            tenant,
            tag,
            group,
            after,
        } => {
            let mut path = format!("/api/v1/tenants/{tenant}/devices?tag={tag}");
            for (name, value) in [("group", group), ("after", after)] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={v}"));
                }
            }
            call(api, Method::GET, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}
