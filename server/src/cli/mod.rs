//! Command-line subcommands that call the admin API and print its answers (credentials
//! included, since they are shown only at creation).

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

mod device_groups;
mod ota;
mod thing;
mod tsl;

pub use device_groups::{DeviceGroupCmd, device_group};
pub use ota::{OtaCmd, ota};
pub use thing::{HistoryCmd, ScriptCmd, history, script};
pub use tsl::{ThingCmd, TslCmd, thing, tsl};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "IRONHUB_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,
    /// Admin token (printed by `ironhub serve` on its first start).
    #[arg(
        long,
        env = "IRONHUB_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// `ironhub tenant ...`
#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant.
    Create {
        /// Tenant id (lowercase letters, digits, - and _).
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Tenant profile (default: "default").
        #[arg(long)]
        profile: Option<String>,
    },
    /// List tenants.
    List,
    /// Move a tenant to another profile.
    SetProfile {
        /// Tenant id.
        id: String,
        /// Profile name.
        profile: String,
    },
    /// Show a tenant's usage (hour, day, month, last 24 hours) and monthly-quota events.
    Usage {
        /// Tenant id.
        id: String,
    },
    /// Delete a tenant that has no products.
    Delete {
        /// Tenant id.
        id: String,
    },
}

/// `ironhub profile ...`
#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Create or replace a profile from JSON (fields left out keep the seed defaults), e.g.
    /// `--json '{"rates":{"device_messages_qos0":"10:1,300:60"}}'`.
    Put {
        /// Profile name.
        name: String,
        /// The profile as JSON.
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        /// A file holding the profile as JSON.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// List profiles.
    List,
    /// Show a profile.
    Get {
        /// Profile name.
        name: String,
    },
    /// Delete a profile no tenant uses.
    Delete {
        /// Profile name.
        name: String,
    },
}

/// `ironhub product ...`
#[derive(Debug, Subcommand)]
pub enum ProductCmd {
    /// Create a product; prints its ProductKey and ProductSecret (shown once).
    Create {
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Product name.
        #[arg(long)]
        name: String,
        /// Devices of this product are gateways.
        #[arg(long)]
        gateway: bool,
        /// Allow devices to obtain their DeviceSecret with the ProductSecret.
        #[arg(long)]
        dynamic_registration: bool,
    },
    /// List products.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a product and its devices.
    Delete {
        /// ProductKey.
        product_key: String,
    },
}

/// `ironhub group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a consumer group; prints its id and its queue on the broker.
    Create {
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The sink holding its queue: amqp (default) or sqs.
        #[arg(long)]
        sink: Option<String>,
    },
    /// List a tenant's consumer groups.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Send a product's messages and notifications to a group.
    AddProduct {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        group: String,
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Stop sending a product's messages to a group.
    RemoveProduct {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        group: String,
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Delete a group (its queue stays on the broker).
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Group id.
        #[arg(long)]
        group: String,
    },
}

/// `ironhub api-key ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    /// Create a key; prints its token (`{id}.{secret}`) once.
    Create {
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// What it is for.
        #[arg(long)]
        name: String,
    },
    /// List a tenant's keys (without secrets).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Delete a key: it stops working at once.
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Key id.
        #[arg(long)]
        id: String,
    },
}

/// `ironhub rule ...`
#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// Create a rule from its JSON (`{"name","sql","destinations":[...],"error_destination"?}`,
    /// docs/rules.md).
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The rule, as JSON.
        #[arg(long)]
        json: String,
    },
    /// List a tenant's rules with their counters (matched, forwarded, failed, dropped).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Start running a rule.
    Enable {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Rule id.
        id: String,
    },
    /// Stop running a rule.
    Disable {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Rule id.
        id: String,
    },
    /// Delete a rule.
    Delete {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Rule id.
        id: String,
    },
}

/// `ironhub device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Create a device; prints its DeviceSecret (shown once).
    Create {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName (random when omitted).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a product's devices.
    List {
        /// ProductKey.
        #[arg(long)]
        product: String,
    },
    /// Show a device and its state.
    Get {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Disable a device (its connection is closed and new ones refused).
    Disable {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Enable a device.
    Enable {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Delete a device.
    Delete {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Show a device's usage, including its publishing status over the last 24 hours.
    Usage {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Compute signed MQTT credentials locally (no API call) and show how to connect.
    Sign {
        /// ProductKey.
        #[arg(long)]
        product: String,
        /// DeviceName.
        #[arg(long)]
        name: String,
        /// DeviceSecret.
        #[arg(long, env = "IRONHUB_DEVICE_SECRET", hide_env_values = true)]
        secret: String,
        /// Print only shell variable assignments (for `eval`).
        #[arg(long)]
        shell: bool,
    },
    /// List a gateway's sub-devices.
    SubDevices {
        /// The gateway's ProductKey.
        #[arg(long)]
        product: String,
        /// The gateway's DeviceName.
        #[arg(long)]
        name: String,
    },
    /// Attach a sub-device to a gateway (detaching it from any other).
    AddSub {
        /// The gateway's ProductKey.
        #[arg(long)]
        product: String,
        /// The gateway's DeviceName.
        #[arg(long)]
        name: String,
        /// The sub-device's ProductKey.
        #[arg(long)]
        sub_product: String,
        /// The sub-device's DeviceName.
        #[arg(long)]
        sub_name: String,
    },
    /// Detach a sub-device from a gateway.
    RemoveSub {
        /// The gateway's ProductKey.
        #[arg(long)]
        product: String,
        /// The gateway's DeviceName.
        #[arg(long)]
        name: String,
        /// The sub-device's ProductKey.
        #[arg(long)]
        sub_product: String,
        /// The sub-device's DeviceName.
        #[arg(long)]
        sub_name: String,
    },
}

async fn call(
    api: &ApiArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let body = Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    send(api, method, path, "application/json", body).await
}

/// A request body the CLI sends: JSON, or a file streamed from disk.
pub(crate) type SendBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Sends one request to the admin API and returns its JSON answer (an error for a failure
/// status, with the API's message).
async fn send(
    api: &ApiArgs,
    method: Method,
    path: &str,
    content_type: &str,
    body: SendBody,
) -> anyhow::Result<Value> {
    let token = api
        .token
        .as_deref()
        .context("no admin token: pass --token or set IRONHUB_ADMIN_TOKEN (printed by the first `ironhub serve`)")?;
    let client: Client<_, SendBody> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("{}{}", api.api.trim_end_matches('/'), path);
    let req = Request::builder()
        .method(method)
        .uri(&uri)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, content_type)
        .body(body)?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach the admin API at {uri}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    if !status.is_success() {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        bail!(
            "{} {}: {message}",
            status.as_u16(),
            value.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(value)
}

fn print(v: &Value) {
    if !v.is_null() {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("JSON values print")
        );
    }
}

/// Runs a tenant subcommand.
pub async fn tenant(api: &ApiArgs, cmd: TenantCmd) -> anyhow::Result<()> {
    let v = match cmd {
        TenantCmd::Create { id, name, profile } => {
            let body = json!({ "id": id, "name": name, "profile": profile });
            call(api, Method::POST, "/api/v1/tenants", Some(body)).await?
        }
        TenantCmd::SetProfile { id, profile } => {
            let body = json!({ "profile": profile });
            call(
                api,
                Method::PUT,
                &format!("/api/v1/tenants/{id}/profile"),
                Some(body),
            )
            .await?
        }
        TenantCmd::Usage { id } => {
            call(
                api,
                Method::GET,
                &format!("/api/v1/tenants/{id}/usage"),
                None,
            )
            .await?
        }
        TenantCmd::List => call(api, Method::GET, "/api/v1/tenants", None).await?,
        TenantCmd::Delete { id } => {
            call(api, Method::DELETE, &format!("/api/v1/tenants/{id}"), None).await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs a profile subcommand.
pub async fn profile(api: &ApiArgs, cmd: ProfileCmd) -> anyhow::Result<()> {
    let v = match cmd {
        ProfileCmd::Put { name, json, file } => {
            let text = match (json, file) {
                (Some(j), _) => j,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, None) => "{}".to_owned(),
            };
            let body: Value =
                serde_json::from_str(&text).context("the profile is not valid JSON")?;
            call(
                api,
                Method::PUT,
                &format!("/api/v1/profiles/{name}"),
                Some(body),
            )
            .await?
        }
        ProfileCmd::List => call(api, Method::GET, "/api/v1/profiles", None).await?,
        ProfileCmd::Get { name } => {
            call(api, Method::GET, &format!("/api/v1/profiles/{name}"), None).await?
        }
        ProfileCmd::Delete { name } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/profiles/{name}"),
                None,
            )
            .await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs a product subcommand.
pub async fn product(api: &ApiArgs, cmd: ProductCmd) -> anyhow::Result<()> {
    let v = match cmd {
        ProductCmd::Create {
            tenant,
            name,
            gateway,
            dynamic_registration,
        } => {
            let node_type = if gateway { "gateway" } else { "device" };
            let body = json!({ "tenant": tenant, "name": name, "node_type": node_type,
                               "dynamic_registration": dynamic_registration });
            call(api, Method::POST, "/api/v1/products", Some(body)).await?
        }
        ProductCmd::List { tenant } => {
            let q = tenant.map(|t| format!("?tenant={t}")).unwrap_or_default();
            call(api, Method::GET, &format!("/api/v1/products{q}"), None).await?
        }
        ProductCmd::Delete { product_key } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/products/{product_key}"),
                None,
            )
            .await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs a consumer-group subcommand.
pub async fn group(api: &ApiArgs, cmd: GroupCmd) -> anyhow::Result<()> {
    let groups = |tenant: &str| format!("/api/v1/tenants/{tenant}/consumer-groups");
    let v = match cmd {
        GroupCmd::Create { tenant, name, sink } => {
            let body = json!({ "name": name, "sink": sink });
            call(api, Method::POST, &groups(&tenant), Some(body)).await?
        }
        GroupCmd::List { tenant } => call(api, Method::GET, &groups(&tenant), None).await?,
        GroupCmd::AddProduct {
            tenant,
            group,
            product,
        } => {
            let path = format!("{}/{group}/products/{product}", groups(&tenant));
            call(api, Method::PUT, &path, None).await?
        }
        GroupCmd::RemoveProduct {
            tenant,
            group,
            product,
        } => {
            let path = format!("{}/{group}/products/{product}", groups(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
        GroupCmd::Delete { tenant, group } => {
            let path = format!("{}/{group}", groups(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs an API key subcommand.
pub async fn api_key(api: &ApiArgs, cmd: ApiKeyCmd) -> anyhow::Result<()> {
    let keys = |tenant: &str| format!("/api/v1/tenants/{tenant}/api-keys");
    let v = match cmd {
        ApiKeyCmd::Create { tenant, name } => {
            let body = json!({ "name": name });
            call(api, Method::POST, &keys(&tenant), Some(body)).await?
        }
        ApiKeyCmd::List { tenant } => call(api, Method::GET, &keys(&tenant), None).await?,
        ApiKeyCmd::Delete { tenant, id } => {
            call(
                api,
                Method::DELETE,
                &format!("{}/{id}", keys(&tenant)),
                None,
            )
            .await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs a rule subcommand.
pub async fn rule(api: &ApiArgs, cmd: RuleCmd) -> anyhow::Result<()> {
    let rules = |tenant: &str| format!("/api/v1/tenants/{tenant}/rules");
    let v = match cmd {
        RuleCmd::Create { tenant, json } => {
            let body: Value = serde_json::from_str(&json).context("--json is not JSON")?;
            call(api, Method::POST, &rules(&tenant), Some(body)).await?
        }
        RuleCmd::List { tenant } => call(api, Method::GET, &rules(&tenant), None).await?,
        RuleCmd::Enable { tenant, id } => {
            let path = format!("{}/{id}/enable", rules(&tenant));
            call(api, Method::POST, &path, None).await?
        }
        RuleCmd::Disable { tenant, id } => {
            let path = format!("{}/{id}/disable", rules(&tenant));
            call(api, Method::POST, &path, None).await?
        }
        RuleCmd::Delete { tenant, id } => {
            let path = format!("{}/{id}", rules(&tenant));
            call(api, Method::DELETE, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}

/// Runs a device subcommand.
pub async fn device(api: &ApiArgs, cmd: DeviceCmd) -> anyhow::Result<()> {
    let v = match cmd {
        DeviceCmd::Create { product, name } => {
            let body = json!({ "device_name": name });
            call(
                api,
                Method::POST,
                &format!("/api/v1/products/{product}/devices"),
                Some(body),
            )
            .await?
        }
        DeviceCmd::List { product } => {
            call(
                api,
                Method::GET,
                &format!("/api/v1/products/{product}/devices"),
                None,
            )
            .await?
        }
        DeviceCmd::Get { product, name } => {
            call(
                api,
                Method::GET,
                &format!("/api/v1/products/{product}/devices/{name}"),
                None,
            )
            .await?
        }
        DeviceCmd::Disable { product, name } => {
            call(
                api,
                Method::POST,
                &format!("/api/v1/products/{product}/devices/{name}/disable"),
                None,
            )
            .await?
        }
        DeviceCmd::Enable { product, name } => {
            call(
                api,
                Method::POST,
                &format!("/api/v1/products/{product}/devices/{name}/enable"),
                None,
            )
            .await?
        }
        DeviceCmd::Delete { product, name } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/products/{product}/devices/{name}"),
                None,
            )
            .await?
        }
        DeviceCmd::SubDevices { product, name } => {
            let path = format!("/api/v1/products/{product}/devices/{name}/sub-devices");
            call(api, Method::GET, &path, None).await?
        }
        DeviceCmd::AddSub {
            product,
            name,
            sub_product,
            sub_name,
        } => {
            let path = format!(
                "/api/v1/products/{product}/devices/{name}/sub-devices/{sub_product}/{sub_name}"
            );
            call(api, Method::PUT, &path, None).await?
        }
        DeviceCmd::RemoveSub {
            product,
            name,
            sub_product,
            sub_name,
        } => {
            let path = format!(
                "/api/v1/products/{product}/devices/{name}/sub-devices/{sub_product}/{sub_name}"
            );
            call(api, Method::DELETE, &path, None).await?
        }
        DeviceCmd::Usage { product, name } => {
            call(
                api,
                Method::GET,
                &format!("/api/v1/products/{product}/devices/{name}/usage"),
                None,
            )
            .await?
        }
        DeviceCmd::Sign {
            product,
            name,
            secret,
            shell,
        } => {
            let c = ironhub_core::auth::device_credentials(
                &product,
                &name,
                &secret,
                ironhub_core::now_ms(),
            );
            if shell {
                println!("MQTT_CLIENT_ID='{}'", c.client_id);
                println!("MQTT_USERNAME='{}'", c.username);
                println!("MQTT_PASSWORD='{}'", c.password);
            } else {
                print(&json!(c));
            }
            return Ok(());
        }
    };
    print(&v);
    Ok(())
}
