//! `ironhub tsl ...` (a product's thing model in Alibaba's document format, its versions) and
//! `ironhub thing ...` (a device's thing model in action through the business API: property
//! set, service calls, desired values; these take a tenant's API key).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use serde_json::{Value, json};

use super::{ApiArgs, call, print, send};

/// `ironhub tsl ...`
#[derive(Debug, Subcommand)]
pub enum TslCmd {
    /// Import a module from Alibaba's document format (saved as a new version).
    Import {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// The document (as Alibaba's console exports it).
        file: PathBuf,
    },
    /// A module of the product's model in Alibaba's document format.
    Export {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// A custom module (default: the default module).
        #[arg(long)]
        module: Option<String>,
    },
    /// The model's saved versions, newest first.
    Versions {
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Make a saved version the model again.
    Restore {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// The version.
        #[arg(long)]
        version: u64,
    },
}

/// Runs a tsl subcommand.
pub async fn tsl(api: &ApiArgs, cmd: TslCmd) -> anyhow::Result<()> {
    let base = |pk: &str| format!("/api/v1/products/{pk}/tsl");
    let v = match cmd {
        TslCmd::Import { product, file } => {
            let document = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let body = Full::new(document.into())
                .map_err(|never| match never {})
                .boxed_unsync();
            let path = format!("{}/import", base(&product));
            send(api, Method::POST, &path, "application/json", body).await?
        }
        TslCmd::Export { product, module } => {
            let q = module.map(|m| format!("?module={m}")).unwrap_or_default();
            call(
                api,
                Method::GET,
                &format!("{}/export{q}", base(&product)),
                None,
            )
            .await?
        }
        TslCmd::Versions { product } => {
            call(
                api,
                Method::GET,
                &format!("{}/versions", base(&product)),
                None,
            )
            .await?
        }
        TslCmd::Restore { product, version } => {
            let path = format!("{}/versions/{version}/restore", base(&product));
            call(api, Method::POST, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}

/// `ironhub thing ...`: each takes the device and a tenant's API key.
#[derive(Debug, Subcommand)]
pub enum ThingCmd {
    /// Set properties and wait for the device's answer.
    Set {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// The properties, JSON (`{"target":21}`).
        #[arg(long)]
        params: String,
        /// How long to wait, 1,000 to 8,000 ms.
        #[arg(long, default_value_t = 8000)]
        timeout_ms: u64,
    },
    /// Call a service asynchronously (poll the answer with `call`), or with --sync wait for it.
    Invoke {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// The service's identifier.
        #[arg(long)]
        service: String,
        /// Its input parameters, JSON.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Wait for the answer (the Link SDK's synchronous call, through RRPC).
        #[arg(long)]
        sync: bool,
        /// How long --sync waits, 1,000 to 8,000 ms.
        #[arg(long, default_value_t = 8000)]
        timeout_ms: u64,
    },
    /// An asynchronous call and, once it came, the device's answer.
    Call {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// The call's message_id.
        #[arg(long)]
        id: String,
    },
    /// The device's desired values, or set some (with --params).
    Desired {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// Values to set, JSON (`{"target":22}`).
        #[arg(long)]
        params: Option<String>,
    },
}

fn json_arg(text: &str, what: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))
}

/// Runs a thing subcommand with `key`, a tenant's API key.
pub async fn thing(api: &ApiArgs, key: Option<String>, cmd: ThingCmd) -> anyhow::Result<()> {
    let business = ApiArgs {
        api: api.api.clone(),
        token: Some(key.context(
            "the business API takes a tenant's API key: pass --api-key or set IRONHUB_API_KEY",
        )?),
    };
    let device = |pk: &str, dn: &str| format!("/api/v1/business/devices/{pk}/{dn}");
    let v = match cmd {
        ThingCmd::Set {
            product,
            name,
            params,
            timeout_ms,
        } => {
            let body = json!({ "product_key": product, "device_name": name,
                               "params": json_arg(&params, "--params")?, "timeout_ms": timeout_ms });
            call(
                &business,
                Method::POST,
                "/api/v1/business/properties/set",
                Some(body),
            )
            .await?
        }
        ThingCmd::Invoke {
            product,
            name,
            service,
            params,
            sync,
            timeout_ms,
        } => {
            let input = json_arg(&params, "--params")?;
            if sync {
                let body = json!({ "product_key": product, "device_name": name, "service": service,
                                   "payload": input.to_string(), "timeout_ms": timeout_ms });
                call(&business, Method::POST, "/api/v1/business/rrpc", Some(body)).await?
            } else {
                let body = json!({ "product_key": product, "device_name": name, "service": service,
                                   "params": input });
                let path = "/api/v1/business/services/invoke";
                call(&business, Method::POST, path, Some(body)).await?
            }
        }
        ThingCmd::Call { product, name, id } => {
            let path = format!("{}/services/{id}", device(&product, &name));
            call(&business, Method::GET, &path, None).await?
        }
        ThingCmd::Desired {
            product,
            name,
            params,
        } => {
            let path = format!("{}/desired", device(&product, &name));
            match params {
                Some(p) => {
                    let body = json!({ "params": json_arg(&p, "--params")? });
                    call(&business, Method::PUT, &path, Some(body)).await?
                }
                None => call(&business, Method::GET, &path, None).await?,
            }
        }
    };
    print(&v);
    Ok(())
}
