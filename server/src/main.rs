//! `ironhub`: the IoT hub server and its command-line client.
//!
//! `ironhub serve` runs the hub: MQTT on 1883, the admin API on 127.0.0.1:8080, data in `./data`,
//! configurable with a TOML file (`--config`) and environment overrides. The other subcommands
//! call the admin API (`ironhub product create`, `ironhub device create`, `ironhub device sign`...).
//!
//! ## Cargo features
//! Components are chosen at compile time; a configuration naming a compiled-out component fails at
//! start with the feature to enable.
//! - `mqtt` (default): MQTT 3.1.1/5.0 over TCP and TLS.
//! - `quic` (default): MQTT over QUIC (`[quic] enabled = true`).
//! - `http` (default): the HTTP device transport (`[http] enabled = true`).
//! - `embedded` (default): the redb store, the single-node default.
//! - `jemalloc` (default): jemalloc as the global allocator.

mod api;
mod cli;
mod cluster;
mod components;
mod config;
mod console;
mod metrics;
mod serve;

use clap::{Parser, Subcommand};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ironhub",
    version,
    about = "An IoT hub: MQTT devices, tenants, products, admin API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    api: cli::ApiArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub.
    Serve(serve::ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(cli::TenantCmd),
    /// Manage tenant profiles (limits).
    #[command(subcommand)]
    Profile(cli::ProfileCmd),
    /// Manage products.
    #[command(subcommand)]
    Product(cli::ProductCmd),
    /// Manage devices and compute their MQTT credentials.
    #[command(subcommand)]
    Device(cli::DeviceCmd),
    /// Manage consumer groups (server-side subscription over AMQP).
    #[command(subcommand)]
    Group(cli::GroupCmd),
    /// Manage rules (data forwarding: SQL, destinations, retries).
    #[command(subcommand)]
    Rule(cli::RuleCmd),
    /// Manage a tenant's API keys (business API and web console).
    #[command(subcommand)]
    ApiKey(cli::ApiKeyCmd),
    /// Firmware upgrades: packages and batches.
    #[command(subcommand)]
    Ota(cli::OtaCmd),
    /// Device groups, their members and tags; devices found by tag.
    #[command(subcommand)]
    DeviceGroup(cli::DeviceGroupCmd),
    /// A product's thing model in Alibaba's document format, and its versions.
    #[command(subcommand)]
    Tsl(cli::TslCmd),
    /// A device's thing model in action (property set, services, desired values) through the
    /// business API.
    Thing {
        /// A tenant's API key (`keyId.secret`).
        #[arg(long, env = "IRONHUB_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        #[command(subcommand)]
        cmd: cli::ThingCmd,
    },
    /// Products' data parsing scripts.
    #[command(subcommand)]
    Script(cli::ScriptCmd),
    /// Devices' property and event history.
    #[command(subcommand)]
    History(cli::HistoryCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Tenant(c) => cli::tenant(&cli.api, c).await,
            Command::Profile(c) => cli::profile(&cli.api, c).await,
            Command::Product(c) => cli::product(&cli.api, c).await,
            Command::Device(c) => cli::device(&cli.api, c).await,
            Command::Group(c) => cli::group(&cli.api, c).await,
            Command::Rule(c) => cli::rule(&cli.api, c).await,
            Command::ApiKey(c) => cli::api_key(&cli.api, c).await,
            Command::Ota(c) => cli::ota(&cli.api, c).await,
            Command::DeviceGroup(c) => cli::device_group(&cli.api, c).await,
            Command::Script(c) => cli::script(&cli.api, c).await,
            Command::Tsl(c) => cli::tsl(&cli.api, c).await,
            Command::Thing { api_key, cmd } => cli::thing(&cli.api, api_key, cmd).await,
            Command::History(c) => cli::history(&cli.api, c).await,
        }
    })
}
