//! `ironhub script ...` (products' data parsing scripts) and `ironhub history ...` (devices'
//! property and event history).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use serde_json::json;

use super::{ApiArgs, call, print, send};

/// `ironhub script ...`
#[derive(Debug, Subcommand)]
pub enum ScriptCmd {
    /// Save a product's data parsing script (JavaScript with Alibaba's entry points).
    Put {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// `custom` (raw frames on up_raw/down_raw) or `alink_json` (custom topics only).
        #[arg(long, default_value = "custom")]
        data_format: String,
        /// The script file.
        file: PathBuf,
    },
    /// Show a product's script.
    Get {
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Delete a product's script.
    Delete {
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Run an entry point of a product's script on a sample.
    Test {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// A device frame for rawDataToProtocol, hex.
        #[arg(long, conflicts_with_all = ["json", "topic"])]
        up: Option<String>,
        /// Alink JSON for protocolToRawData.
        #[arg(long, conflicts_with = "topic")]
        json: Option<String>,
        /// A custom topic for transformPayload (with --payload).
        #[arg(long, requires = "payload")]
        topic: Option<String>,
        /// The custom topic's payload, hex.
        #[arg(long)]
        payload: Option<String>,
    },
}

/// Runs a script subcommand.
pub async fn script(api: &ApiArgs, cmd: ScriptCmd) -> anyhow::Result<()> {
    let path = |pk: &str| format!("/api/v1/products/{pk}/script");
    let v = match cmd {
        ScriptCmd::Put {
            product,
            data_format,
            file,
        } => {
            let source = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let body = Full::new(source.into())
                .map_err(|never| match never {})
                .boxed_unsync();
            let to = format!("{}?data_format={data_format}", path(&product));
            send(api, Method::PUT, &to, "text/plain", body).await?
        }
        ScriptCmd::Get { product } => call(api, Method::GET, &path(&product), None).await?,
        ScriptCmd::Delete { product } => call(api, Method::DELETE, &path(&product), None).await?,
        ScriptCmd::Test {
            product,
            up,
            json,
            topic,
            payload,
        } => {
            let sample = match (up, json, topic) {
                (Some(hex), _, _) => json!({ "function": "rawDataToProtocol", "payload_hex": hex }),
                (_, Some(text), _) => {
                    let payload: serde_json::Value =
                        serde_json::from_str(&text).context("--json is not JSON")?;
                    json!({ "function": "protocolToRawData", "payload": payload })
                }
                (_, _, Some(topic)) => json!({ "function": "transformPayload", "topic": topic,
                                               "payload_hex": payload.unwrap_or_default() }),
                _ => anyhow::bail!("give --up HEX, --json JSON, or --topic T --payload HEX"),
            };
            let to = format!("{}/test", path(&product));
            call(api, Method::POST, &to, Some(sample)).await?
        }
    };
    print(&v);
    Ok(())
}

/// `ironhub history ...`
#[derive(Debug, Subcommand)]
pub enum HistoryCmd {
    /// The latest value of each of a device's properties.
    Latest {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// A property's values in a time range, newest first (one page; --cursor for the next).
    Property {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// The property's identifier.
        identifier: String,
        /// From, ms since the epoch (default: the retention's start).
        #[arg(long)]
        from_ms: Option<u64>,
        /// To, ms since the epoch, excluded (default: now).
        #[arg(long)]
        to_ms: Option<u64>,
        /// Oldest first.
        #[arg(long)]
        asc: bool,
        /// Values per page (1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// The previous page's `next`.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A property's values downsampled: count, min, max, average per interval.
    Series {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// The property's identifier.
        identifier: String,
        /// The interval, ms.
        #[arg(long)]
        interval_ms: u64,
        /// From, ms since the epoch (default: the retention's start).
        #[arg(long)]
        from_ms: Option<u64>,
        /// To, ms since the epoch (default: now).
        #[arg(long)]
        to_ms: Option<u64>,
    },
    /// A device's events, newest first.
    Events {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// Only this event's.
        #[arg(long)]
        identifier: Option<String>,
        /// From, ms since the epoch (default: the retention's start).
        #[arg(long)]
        from_ms: Option<u64>,
        /// To, ms since the epoch (default: now).
        #[arg(long)]
        to_ms: Option<u64>,
        /// Events at most (1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// `?a=1&b=2` of the parameters that are set ("" when none is).
fn query(params: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

/// Runs a history subcommand.
pub async fn history(api: &ApiArgs, cmd: HistoryCmd) -> anyhow::Result<()> {
    let device = |pk: &str, dn: &str| format!("/api/v1/products/{pk}/devices/{dn}");
    let text = |v: Option<u64>| v.map(|v| v.to_string());
    let path = match cmd {
        HistoryCmd::Latest { product, name } => format!("{}/properties", device(&product, &name)),
        HistoryCmd::Property {
            product,
            name,
            identifier,
            from_ms,
            to_ms,
            asc,
            limit,
            cursor,
        } => {
            let q = query(&[
                ("from_ms", text(from_ms)),
                ("to_ms", text(to_ms)),
                ("order", asc.then(|| "asc".to_owned())),
                ("limit", limit.map(|l| l.to_string())),
                ("cursor", cursor),
            ]);
            format!("{}/properties/{identifier}{q}", device(&product, &name))
        }
        HistoryCmd::Series {
            product,
            name,
            identifier,
            interval_ms,
            from_ms,
            to_ms,
        } => {
            let q = query(&[
                ("interval_ms", Some(interval_ms.to_string())),
                ("from_ms", text(from_ms)),
                ("to_ms", text(to_ms)),
            ]);
            format!(
                "{}/properties/{identifier}/series{q}",
                device(&product, &name)
            )
        }
        HistoryCmd::Events {
            product,
            name,
            identifier,
            from_ms,
            to_ms,
            limit,
        } => {
            let q = query(&[
                ("identifier", identifier),
                ("from_ms", text(from_ms)),
                ("to_ms", text(to_ms)),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            format!("{}/events{q}", device(&product, &name))
        }
    };
    print(&call(api, Method::GET, &path, None).await?);
    Ok(())
}
