//! The black-box conformance harness: starts the real `ironhub` binary (or, later, attaches to a
//! running deployment), provisions tenants, products and devices through the admin API, and hands
//! out real MQTT clients (rumqttc) and raw sockets for protocol-level checks.
//!
//! The binary is `$IRONHUB_BIN` when set, else `target/debug/ironhub` of this workspace; build it
//! first (`cargo build -p ironhub`, which `.ci/run` does). To run the limit tests against a
//! deployment that is already running, set `IRONHUB_TARGET_API` (admin API base URL),
//! `IRONHUB_TARGET_MQTT` (host:port) and `IRONHUB_TARGET_TOKEN`: every test then makes its own
//! tenant there instead of starting a server.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[macro_use]
mod helpers;
pub mod amqp;
pub mod coap;
pub mod gateway;
pub mod http;
pub mod ota;
pub mod report;
pub mod sqs;
pub mod v3;
pub mod v5;
pub mod wire;

/// Admin token of the deployments the suite starts.
const TOKEN: &str = "conformance-admin-token";

/// Upper bound on every wait in the suite: a test fails rather than hangs.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs the Python client `conformance/clients/{script}` with `args`, stopped after `secs`
/// seconds, on a blocking thread (the test's runtime keeps serving meanwhile).
pub async fn python_client(script: &str, args: Vec<String>, secs: u32) -> std::process::Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(secs.to_string())
            .arg("python3")
            .arg(path)
            .args(args)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("the client's thread")
}

/// What a Link SDK script saw (its last line, JSON), after checking that it succeeded; the
/// script's output and the hub's log otherwise.
pub fn sdk_saw(d: &Deployment, out: std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK client failed: {stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that client sockets
/// cannot take it between this check and the server's bind.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = nanos
        ^ (std::process::id() << 8)
        ^ NEXT.fetch_add(7919, std::sync::atomic::Ordering::Relaxed);
    loop {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = 20_000 + (x >> 8) % 12_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONHUB_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/ironhub");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p ironhub` first (or set IRONHUB_BIN)",
        bin.display()
    );
    bin
}

/// A running ironhub process with its own data directory and ports.
pub struct Deployment {
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// Admin API base URL.
    pub api: String,
    token: String,
    config: PathBuf,
    data: tempfile::TempDir,
    child: Option<Child>,
    /// The process's open-file limit, when the launch set one.
    open_files: Option<u64>,
}

/// How to start a deployment, beyond its configuration.
#[derive(Default)]
pub struct Launch {
    /// TOML appended to the generated configuration.
    pub config: String,
    /// The server's open-file limit (soft and hard, through `prlimit`).
    pub open_files: Option<u64>,
    /// Runs once on the data directory's path (created, empty) before the first start: a test
    /// mounts a small file system there.
    pub prepare_data: Option<PrepareData>,
}

/// A step run on the data directory before a deployment first starts.
pub type PrepareData = Box<dyn FnOnce(&std::path::Path)>;

impl Deployment {
    /// The admin token (for clients other than this harness, such as the console test's browser).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts ironhub on the embedded store with `extra_config` (TOML) appended to a config that
    /// sets the ports and data directory.
    pub async fn start(extra_config: &str) -> Deployment {
        Deployment::launch(Launch {
            config: extra_config.into(),
            ..Launch::default()
        })
        .await
    }

    /// Starts ironhub as `launch` says (always a process of its own, never an attached
    /// deployment).
    pub async fn launch(launch: Launch) -> Deployment {
        let extra_config = launch.config.as_str();
        let data = tempfile::tempdir().expect("temp dir");
        let plain = launch.open_files.is_none() && launch.prepare_data.is_none();
        if plain
            && extra_config.is_empty()
            && let Some(attached) = Deployment::attached(&data)
        {
            return attached;
        }
        if let Some(prepare) = launch.prepare_data {
            let dir = data.path().join("data");
            std::fs::create_dir_all(&dir).expect("data dir");
            prepare(&dir);
        }
        let config = data.path().join("ironhub.toml");
        let mut d = Deployment {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            api: String::new(),
            token: TOKEN.into(),
            config,
            data,
            child: None,
            open_files: launch.open_files,
        };
        // Another process may take a port between the check and the bind: then try new ones.
        for _ in 0..5 {
            let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let text = format!(
                "data_dir = {:?}\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n[mqtt]\nlisten = \"{mqtt}\"\n{extra_config}\n",
                d.data.path().join("data")
            );
            std::fs::write(&d.config, text).expect("write config");
            (d.mqtt, d.api) = (mqtt, format!("http://{admin}"));
            match d.try_spawn().await {
                Ok(()) => return d,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("ironhub did not start; log:\n{log}"),
            }
        }
        panic!(
            "ironhub did not start: no free ports after 5 tries; log:\n{}",
            d.log()
        )
    }

    /// The deployment named by `IRONHUB_TARGET_*`, if set.
    fn attached(data: &tempfile::TempDir) -> Option<Deployment> {
        let api = std::env::var("IRONHUB_TARGET_API").ok()?;
        let mqtt = std::env::var("IRONHUB_TARGET_MQTT").ok()?;
        let token = std::env::var("IRONHUB_TARGET_TOKEN")
            .expect("IRONHUB_TARGET_TOKEN with IRONHUB_TARGET_API");
        let mqtt = std::net::ToSocketAddrs::to_socket_addrs(&mqtt)
            .ok()?
            .next()?;
        let data = tempfile::tempdir_in(data.path()).expect("temp dir");
        Some(Deployment {
            mqtt,
            api,
            token,
            config: PathBuf::new(),
            data,
            child: None,
            open_files: None,
        })
    }

    /// A tenant id unique to this test run (deployments may be shared).
    pub fn unique_tenant(prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            ironhub_core::data::model::random_token(8).to_lowercase()
        )
    }

    /// An open broker whose sandbox tenant has no rate limits (where the load is the point).
    pub async fn unlimited_open_broker() -> Deployment {
        let d = Deployment::open_broker("").await;
        d.unlimit_sandbox().await;
        d
    }

    /// Takes the rate limits off the open broker's sandbox tenant.
    pub async fn unlimit_sandbox(&self) {
        let profile = serde_json::json!({ "rates": { "tenant_connections": "",
            "device_connections": "", "tenant_messages": "", "device_messages_qos0": "",
            "device_messages_qos1": "" }, "data_points_per_hour": 0 });
        let (s, v) = self
            .api(Method::PUT, "/api/v1/profiles/unlimited", Some(profile))
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self
            .api(
                Method::PUT,
                "/api/v1/tenants/sandbox/profile",
                Some(serde_json::json!({ "profile": "unlimited" })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Starts with the open-broker mode on (anonymous clients in the `sandbox` tenant);
    /// `hub_config` is TOML for the `[hub]` section.
    pub async fn open_broker(hub_config: &str) -> Deployment {
        Deployment::start(&format!(
            "[hub]\n{hub_config}\n[hub.open_broker]\nenabled = true\n"
        ))
        .await
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("ironhub did not start; log:\n{log}");
        }
    }

    /// Starts the server and waits until it serves; Err carries its log when it exited or did
    /// not get ready in time.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.data.path().join("ironhub.log")).expect("log file");
        let mut command = match self.open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("IRONHUB_LOG", "info,ironhub_core=debug")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ironhub");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = self.call(Method::GET, "/healthz", None).await.is_ok()
                && tokio::net::TcpStream::connect(self.mqtt).await.is_ok();
            if ready {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's data directory (where a self-signed QUIC certificate is generated).
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// The server's process id (None for an attached deployment or after a kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("ironhub.log")).unwrap_or_default()
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (graceful) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("wait").is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("ironhub did not stop on SIGTERM; log:\n{}", self.log());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Graceful stop, then start again on the same data directory and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        self.call_with_headers(method, path, body)
            .await
            .map(|(s, _, v)| (s, v))
    }

    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, hyper::HeaderMap, Value), String> {
        let authorization = format!("Bearer {}", self.token);
        self.call_as(method, path, body, &authorization).await
    }

    /// Calls the API with another `Authorization` header (a tenant's API key); returns status,
    /// headers and JSON body.
    pub async fn api_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        authorization: &str,
    ) -> (u16, hyper::HeaderMap, Value) {
        self.call_as(method, path, body, authorization)
            .await
            .expect("API reachable")
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        authorization: &str,
    ) -> Result<(u16, hyper::HeaderMap, Value), String> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api))
            .header("authorization", authorization)
            .body(Full::new(
                body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
        };
        Ok((status, headers, value))
    }

    /// Runs the `ironhub` command line against this deployment's admin API with `args`:
    /// whether it succeeded, and what it printed (JSON), or its error output.
    pub async fn cli(&self, args: &[&str]) -> Result<Value, String> {
        let mut command = Command::new(binary());
        command
            .args(["--api", &self.api, "--token", &self.token])
            .args(args);
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the CLI's thread")
            .expect("the CLI runs");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    }

    /// Calls the admin API; returns status and JSON body.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body)
            .await
            .expect("admin API reachable")
    }

    /// Calls the admin API; returns status, headers and JSON body.
    pub async fn api_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, hyper::HeaderMap, Value) {
        self.call_with_headers(method, path, body)
            .await
            .expect("admin API reachable")
    }

    /// Creates an API key named `name` for `tenant`; returns its token.
    pub async fn api_key(&self, tenant: &str, name: &str) -> String {
        let (s, v) = self
            .api(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/api-keys"),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    /// Creates a tenant, a product and a device, returning the device's credentials.
    pub async fn provision(&self, tenant: &str) -> DeviceCreds {
        let (s, _) = self
            .api(
                Method::POST,
                "/api/v1/tenants",
                Some(json!({ "id": tenant })),
            )
            .await;
        assert!(s == 201 || s == 409, "tenant create: {s}");
        let (s, p) = self
            .api(
                Method::POST,
                "/api/v1/products",
                Some(json!({ "tenant": tenant, "name": "p", "dynamic_registration": true })),
            )
            .await;
        assert_eq!(s, 201, "product create: {p}");
        let pk = p["product_key"].as_str().expect("product_key").to_owned();
        let product_secret = p["product_secret"]
            .as_str()
            .expect("product_secret")
            .to_owned();
        let mut creds = self.add_device(&pk, "dev-1").await;
        creds.product_secret = product_secret;
        creds
    }

    /// Creates a profile from `profile` (JSON, unset fields keep the defaults), a tenant using it,
    /// a product and a device; returns the device's credentials.
    pub async fn tenant_with_profile(&self, tenant: &str, profile: Value) -> DeviceCreds {
        let (s, v) = self
            .api(
                Method::PUT,
                &format!("/api/v1/profiles/{tenant}-profile"),
                Some(profile),
            )
            .await;
        assert_eq!(s, 200, "profile: {v}");
        let body = json!({ "id": tenant, "profile": format!("{tenant}-profile") });
        let (s, v) = self.api(Method::POST, "/api/v1/tenants", Some(body)).await;
        assert_eq!(s, 201, "tenant: {v}");
        self.provision(tenant).await
    }

    /// Creates another device under a product.
    pub async fn add_device(&self, pk: &str, name: &str) -> DeviceCreds {
        let (s, d) = self
            .api(
                Method::POST,
                &format!("/api/v1/products/{pk}/devices"),
                Some(json!({ "device_name": name })),
            )
            .await;
        assert_eq!(s, 201, "device create: {d}");
        DeviceCreds {
            tenant: d["tenant"].as_str().expect("tenant").to_owned(),
            product_key: pk.to_owned(),
            device_name: name.to_owned(),
            device_secret: d["device_secret"]
                .as_str()
                .expect("device_secret")
                .to_owned(),
            product_secret: String::new(),
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("--- ironhub log of the failed test ---\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a device needs to connect.
#[derive(Debug, Clone)]
pub struct DeviceCreds {
    /// Tenant.
    pub tenant: String,
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// DeviceSecret.
    pub device_secret: String,
    /// ProductSecret (when provisioned with the product).
    pub product_secret: String,
}

impl DeviceCreds {
    /// Signed MQTT credentials (client id, user name, password).
    pub fn mqtt(&self) -> ironhub_core::auth::MqttCredentials {
        ironhub_core::auth::device_credentials(
            &self.product_key,
            &self.device_name,
            &self.device_secret,
            ironhub_core::now_ms(),
        )
    }

    /// The command line of the Link SDK scripts in `conformance/clients/`: HOST PORT
    /// PRODUCT_KEY DEVICE_NAME DEVICE_SECRET.
    pub fn sdk_args(&self, d: &Deployment) -> Vec<String> {
        vec![
            "127.0.0.1".into(),
            d.mqtt.port().to_string(),
            self.product_key.clone(),
            self.device_name.clone(),
            self.device_secret.clone(),
        ]
    }

    /// A topic under the device's own user namespace.
    pub fn user_topic(&self, leaf: &str) -> String {
        format!("/{}/{}/user/{leaf}", self.product_key, self.device_name)
    }

    /// rumqttc (MQTT 3.1.1) options with signed credentials.
    pub fn v3_options(&self, d: &Deployment) -> rumqttc::MqttOptions {
        let c = self.mqtt();
        let mut o = rumqttc::MqttOptions::new(c.client_id, d.mqtt.ip().to_string(), d.mqtt.port());
        o.set_credentials(c.username, c.password)
            .set_keep_alive(Duration::from_secs(60));
        o
    }

    /// rumqttc (MQTT 5) options with signed credentials.
    pub fn v5_options(&self, d: &Deployment) -> rumqttc::v5::MqttOptions {
        let c = self.mqtt();
        let mut o =
            rumqttc::v5::MqttOptions::new(c.client_id, d.mqtt.ip().to_string(), d.mqtt.port());
        o.set_credentials(c.username, c.password)
            .set_keep_alive(Duration::from_secs(60));
        o
    }
}

/// Anonymous MQTT 3.1.1 options (open-broker mode).
pub fn open_v3(d: &Deployment, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, d.mqtt.ip().to_string(), d.mqtt.port());
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// Anonymous MQTT 5 options (open-broker mode).
pub fn open_v5(d: &Deployment, client_id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(client_id, d.mqtt.ip().to_string(), d.mqtt.port());
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command line tool.
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}

/// Raw MQTT bytes for protocol-level tests, where a well-behaved client library cannot go.
pub mod raw {
    /// Encodes a remaining length (MQTT variable byte integer).
    pub fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                return;
            }
        }
    }

    /// A 16-bit length-prefixed field.
    pub fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        string(bytes, &mut out);
        out
    }

    /// A packet from its first byte and its body.
    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        remaining_length(body.len(), &mut out);
        out.extend_from_slice(body);
        out
    }

    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// MQTT 3.1.1 CONNECT (clean session) with optional credentials.
    pub fn connect(client_id: &str, keep_alive: u16, login: Option<(&str, &str)>) -> Vec<u8> {
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.push(4);
        body.push(if login.is_some() { 0xC2 } else { 0x02 });
        body.extend_from_slice(&keep_alive.to_be_bytes());
        string(client_id.as_bytes(), &mut body);
        if let Some((u, p)) = login {
            string(u.as_bytes(), &mut body);
            string(p.as_bytes(), &mut body);
        }
        let mut out = vec![0x10];
        remaining_length(body.len(), &mut out);
        out.extend(body);
        out
    }

    /// SUBSCRIBE to one filter.
    pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        string(filter.as_bytes(), &mut body);
        body.push(qos);
        let mut out = vec![0x82];
        remaining_length(body.len(), &mut out);
        out.extend(body);
        out
    }

    /// Reads one packet: its first byte and its body.
    pub async fn read_packet<R: tokio::io::AsyncRead + Unpin>(
        r: &mut R,
    ) -> std::io::Result<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let first = r.read_u8().await?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = r.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Ok((first, body))
    }

    /// The topic and payload of a QoS 0 PUBLISH body.
    pub fn publish_parts(body: &[u8]) -> (String, Vec<u8>) {
        let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
        (
            String::from_utf8_lossy(&body[2..2 + n]).into_owned(),
            body[2 + n..].to_vec(),
        )
    }

    /// QoS 0 PUBLISH.
    pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        publish_qos(topic, payload, 0, 0)
    }

    /// PUBLISH with a QoS and (for QoS 1 and 2) a packet id.
    pub fn publish_qos(topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut out = vec![0x30 | (qos << 1)];
        remaining_length(body.len(), &mut out);
        out.extend(body);
        out
    }
}
