//! `ironhub ota ...`: firmware packages (uploaded from a file, streamed) and upgrade batches.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use super::{ApiArgs, call, print, send};

/// `ironhub ota ...`
#[derive(Debug, Subcommand)]
pub enum OtaCmd {
    /// Upload a firmware package from a file; prints it with its size, MD5 and SHA-256.
    Upload {
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// The product whose devices it is for.
        #[arg(long)]
        product: String,
        /// The version devices report once upgraded.
        #[arg(long)]
        version: String,
        /// The firmware module (default: `default`).
        #[arg(long)]
        module: Option<String>,
        /// The digest devices check: Md5 (default) or SHA256.
        #[arg(long)]
        sign_method: Option<String>,
        /// The file's MD5 as published with it: the hub refuses an upload that differs.
        #[arg(long)]
        md5: Option<String>,
        /// The file's SHA-256, as `--md5`.
        #[arg(long)]
        sha256: Option<String>,
        /// The package file.
        file: PathBuf,
    },
    /// List a tenant's packages.
    Packages {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only this product's.
        #[arg(long)]
        product: Option<String>,
    },
    /// Delete a package (not while a batch rolls it out).
    DeletePackage {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Package id.
        #[arg(long)]
        id: String,
    },
    /// Roll a package out: to listed devices, the whole product, or devices on given versions.
    Batch {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Package id.
        #[arg(long)]
        package: String,
        /// These devices (comma-separated DeviceNames).
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["whole_product", "from_versions"])]
        devices: Vec<String>,
        /// Every device of the package's product.
        #[arg(long)]
        whole_product: bool,
        /// Devices that reported one of these versions (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "whole_product")]
        from_versions: Vec<String>,
        /// The devices of this device group (those of the package's product).
        #[arg(long, conflicts_with_all = ["whole_product", "from_versions", "devices"])]
        group: Option<String>,
        /// Devices notified per minute at most (default: no limit).
        #[arg(long, default_value_t = 0)]
        rate_per_minute: u32,
        /// When to start, ms since the epoch (default: now).
        #[arg(long)]
        start_at_ms: Option<u64>,
        /// Minutes a notified device has to succeed (default 1440).
        #[arg(long)]
        timeout_minutes: Option<u32>,
    },
    /// List a tenant's batches with their counts per state.
    Batches {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Show a batch with its counts per state.
    Status {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Batch id.
        #[arg(long)]
        id: String,
    },
    /// Show each device's upgrade in a batch.
    Jobs {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Batch id.
        #[arg(long)]
        id: String,
    },
    /// Cancel a batch.
    Cancel {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Batch id.
        #[arg(long)]
        id: String,
    },
    /// Queue a batch's failed and timed-out jobs again.
    Retry {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Batch id.
        #[arg(long)]
        id: String,
        /// Only these devices' (comma-separated).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
    },
}

/// Runs an OTA subcommand.
pub async fn ota(api: &ApiArgs, cmd: OtaCmd) -> anyhow::Result<()> {
    let base = |tenant: &str| format!("/api/v1/tenants/{tenant}/ota");
    let v = match cmd {
        OtaCmd::Upload {
            tenant,
            product,
            version,
            module,
            sign_method,
            md5,
            sha256,
            file,
        } => {
            let mut query = format!("product_key={product}&version={version}");
            if let Some(m) = module {
                query.push_str(&format!("&module={m}"));
            }
            for (name, value) in [
                ("sign_method", sign_method),
                ("md5", md5),
                ("sha256", sha256),
            ] {
                if let Some(v) = value {
                    query.push_str(&format!("&{name}={v}"));
                }
            }
            let opened = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let body =
                StreamBody::new(ReaderStream::new(opened).map_ok(Frame::data)).boxed_unsync();
            let path = format!("{}/packages?{query}", base(&tenant));
            send(api, Method::POST, &path, "application/octet-stream", body).await?
        }
        OtaCmd::Packages { tenant, product } => {
            let q = product
                .map(|p| format!("?product_key={p}"))
                .unwrap_or_default();
            call(
                api,
                Method::GET,
                &format!("{}/packages{q}", base(&tenant)),
                None,
            )
            .await?
        }
        OtaCmd::DeletePackage { tenant, id } => {
            let path = format!("{}/packages/{id}", base(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
        OtaCmd::Batch {
            tenant,
            package,
            devices,
            whole_product,
            from_versions,
            group,
            rate_per_minute,
            start_at_ms,
            timeout_minutes,
        } => {
            let target = if let Some(group_id) = group {
                json!({ "kind": "group", "group_id": group_id })
            } else if whole_product {
                json!({ "kind": "product" })
            } else if !from_versions.is_empty() {
                json!({ "kind": "versions", "versions": from_versions })
            } else {
                json!({ "kind": "devices", "names": devices })
            };
            let mut body = json!({ "package_id": package, "target": target,
                                   "rate_per_minute": rate_per_minute });
            if let Some(at) = start_at_ms {
                body["start_at_ms"] = json!(at);
            }
            if let Some(minutes) = timeout_minutes {
                body["timeout_minutes"] = json!(minutes);
            }
            let path = format!("{}/batches", base(&tenant));
            call(api, Method::POST, &path, Some(body)).await?
        }
        OtaCmd::Batches { tenant } => {
            call(
                api,
                Method::GET,
                &format!("{}/batches", base(&tenant)),
                None,
            )
            .await?
        }
        OtaCmd::Status { tenant, id } => {
            let path = format!("{}/batches/{id}", base(&tenant));
            call(api, Method::GET, &path, None).await?
        }
        OtaCmd::Jobs { tenant, id } => {
            let path = format!("{}/batches/{id}/jobs", base(&tenant));
            call(api, Method::GET, &path, None).await?
        }
        OtaCmd::Cancel { tenant, id } => {
            let path = format!("{}/batches/{id}/cancel", base(&tenant));
            call(api, Method::POST, &path, None).await?
        }
        OtaCmd::Retry {
            tenant,
            id,
            devices,
        } => {
            let body = if devices.is_empty() {
                Value::Null
            } else {
                json!({ "devices": devices })
            };
            let path = format!("{}/batches/{id}/retry", base(&tenant));
            call(
                api,
                Method::POST,
                &path,
                Some(body).filter(|b| !b.is_null()),
            )
            .await?
        }
    };
    print(&v);
    Ok(())
}
