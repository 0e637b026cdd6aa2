//! `ironhub serve`: loads the configuration, opens the store, starts the hub, the transports and
//! the admin API, and shuts them down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ironhub_core::Hub;
use ironhub_core::store::{self, Store, records, transact};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, token_hash};
use crate::cluster::Cluster;
use crate::components;
use crate::config::{Config, StoreBackend};

/// How long shutdown waits for transports to close their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Options of `ironhub serve`; each overrides the configuration file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "IRONHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long, env = "IRONHUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// MQTT listen address.
    #[arg(long, env = "IRONHUB_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// Admin API listen address.
    #[arg(long, env = "IRONHUB_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Admin token (instead of the generated one).
    #[arg(long, env = "IRONHUB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Store backend: embedded or memory.
    #[arg(long, env = "IRONHUB_STORE")]
    store: Option<StoreBackend>,
    /// AMQP broker URL for consumer groups (enables the AMQP sink).
    #[arg(long, env = "IRONHUB_AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "IRONHUB_LOG", default_value = "info")]
    log: String,
}

impl std::str::FromStr for StoreBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(StoreBackend::Embedded),
            "memory" => Ok(StoreBackend::Memory),
            "fdb" => Ok(StoreBackend::Fdb),
            other => Err(format!(
                "unknown store backend {other:?} (embedded, memory, fdb)"
            )),
        }
    }
}

/// Runs the hub until a signal arrives.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .init();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.mqtt_listen {
        config.mqtt.listen = a;
    }
    if let Some(a) = args.admin_listen {
        config.admin.listen = a;
    }
    if let Some(t) = args.admin_token {
        config.admin.token = Some(t);
    }
    if let Some(s) = args.store {
        config.store.backend = s;
    }
    if let Some(url) = args.amqp_url {
        let management_url = config.amqp.take().and_then(|a| a.management_url);
        config.amqp = Some(crate::config::AmqpConfig {
            url,
            management_url,
        });
    }
    tracing::info!(components = ?components::compiled(), "starting ironhub {}", env!("CARGO_PKG_VERSION"));

    if config.cluster.is_some() && config.store.backend != StoreBackend::Fdb {
        anyhow::bail!(
            "[cluster] needs a store the nodes share: set [store] backend = \"fdb\" (docs/operations.md, \"Running a cluster\")"
        );
    }
    let store = components::open_store(&config)?;
    let node = Node::start(&config, store).await?;
    wait_for_signal().await;
    node.stop().await;
    Ok(())
}

/// A running hub with its transports, admin API and, when configured, its place in a cluster.
pub struct Node {
    /// The hub.
    pub hub: Hub,
    /// The cluster membership, if this node is one of several.
    pub cluster: Option<Arc<Cluster>>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts everything `config` names on `store`.
    pub async fn start(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Node> {
        let cluster = config
            .cluster
            .clone()
            .map(|c| Cluster::new(c, store.clone()));
        let hub = match &cluster {
            Some(c) => Hub::start_node(config.hub.clone(), store, c.clone()).await,
            None => Hub::start(config.hub.clone(), store).await,
        }
        .context("starting the hub")?;
        for sink in components::sinks(config).await? {
            hub.attach_sink(sink);
        }
        let token_sha256 = admin_token(&hub, config).await?;
        let transports = components::transports(config).await?;
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin API on {}", config.admin.listen))?;
        tracing::info!(addr = %config.admin.listen, "admin API listening");

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(c) = &cluster {
            tasks.extend(
                c.start(hub.clone(), shutdown.clone())
                    .await
                    .context("joining the cluster")?,
            );
        }
        for t in transports {
            let name = t.name();
            let (hub, shutdown) = (hub.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = t.serve(hub, shutdown).await {
                    tracing::error!(transport = name, error = %e, "transport failed");
                }
            }));
        }
        let admin = Api::new(hub.clone(), token_sha256);
        tasks.push(tokio::spawn(admin.serve(admin_listener, shutdown.clone())));
        Ok(Node {
            hub,
            cluster,
            shutdown,
            tasks,
        })
    }

    /// Stops gracefully: leaves the cluster (devices are told where to go), closes connections
    /// with their sessions persisted, flushes what the hub buffers.
    pub async fn stop(self) {
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        tracing::info!("shutting down: closing connections and persisting sessions");
        self.shutdown.cancel();
        let all = futures_join(self.tasks);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("shutdown grace period elapsed");
        }
        self.hub.shutdown().await;
        tracing::info!("stopped");
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The admin token's hash: from config, from the store, or a new token printed once.
async fn admin_token(hub: &Hub, config: &Config) -> anyhow::Result<[u8; 32]> {
    if let Some(t) = &config.admin.token {
        return Ok(token_hash(t));
    }
    let store = hub.store().clone();
    let saved = transact(&*store, |t| {
        Box::pin(records::get_meta(t, "admin_token_sha256"))
    })
    .await?;
    if let Some(h) = saved
        && let Ok(hash) = <[u8; 32]>::try_from(h.as_ref())
    {
        return Ok(hash);
    }
    let token = ironhub_core::data::model::random_token(40);
    let hash = token_hash(&token);
    store::write(&*store, |t| {
        records::put_meta(t, "admin_token_sha256", &hash)
    })
    .await?;
    let memory = config.store.backend == StoreBackend::Memory;
    println!(
        "\n  ironhub admin token (shown once{}):\n\n    export IRONHUB_ADMIN_TOKEN={token}\n",
        if memory {
            "; memory store: a new one each start"
        } else {
            ", keep it safe"
        }
    );
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_backend_parses() {
        assert_eq!("memory".parse::<StoreBackend>(), Ok(StoreBackend::Memory));
        assert_eq!("fdb".parse::<StoreBackend>(), Ok(StoreBackend::Fdb));
        assert!("sqlite".parse::<StoreBackend>().is_err());
    }

    #[test]
    fn token_hash_is_stable_and_distinct() {
        assert_eq!(token_hash("a"), token_hash("a"));
        assert_ne!(token_hash("a"), token_hash("b"));
    }
}
