//! CoAP clients that are not ours, for the tests: libcoap's `coap-client` (Debian libcoap3-bin)
//! and Python aiocoap (`conformance/clients/coap_device.py`).

use std::process::Command;

use serde_json::{Value, json};

use crate::{Deployment, DeviceCreds, free_port};

/// A deployment's CoAP endpoint and the clients that talk to it.
pub struct Coap {
    /// UDP port.
    pub port: u16,
}

impl Coap {
    /// Starts a deployment with CoAP on a free port; `extra` is TOML added to `[coap]`.
    pub async fn start(extra: &str) -> (Deployment, Coap) {
        let port = free_port();
        let d = Deployment::start(&format!(
            "[coap]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{extra}"
        ))
        .await;
        (d, Coap { port })
    }

    /// The `coap://` URI of a path.
    pub fn uri(&self, path: &str) -> String {
        format!("coap://127.0.0.1:{}{path}", self.port)
    }

    /// `coap-client` POST; returns its output (the payload, prefixed by the code when it is an
    /// error).
    pub fn post(&self, path: &str, token: Option<&str>, payload: &str, extra: &[&str]) -> String {
        let mut cmd = Command::new("coap-client-notls");
        cmd.args(["-m", "post", "-B", "5", "-e", payload]);
        if let Some(t) = token {
            cmd.args(["-O", &format!("2088,{t}")]);
        }
        let out = cmd
            .args(extra)
            .arg(self.uri(path))
            .output()
            .expect("coap-client-notls runs (Debian libcoap3-bin)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Authenticates `dev` with coap-client; returns the token.
    pub fn token(&self, dev: &DeviceCreds) -> String {
        let out = self.post("/auth", None, &auth_body(dev), &["-t", "json"]);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("auth: {out}"));
        v["token"].as_str().expect("token").to_owned()
    }

    /// Runs the aiocoap client script.
    pub fn aiocoap(&self, args: &[&str]) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/coap_device.py");
        let out = Command::new("python3")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|_| {
            panic!(
                "coap_device.py {args:?}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The signed `/auth` body of the Alibaba CoAP scheme.
pub fn auth_body(dev: &DeviceCreds) -> String {
    let ts = ironhub_core::now_ms().to_string();
    let client_id = format!("{}.{}", dev.product_key, dev.device_name);
    let sign = ironhub_core::auth::sign(
        ironhub_core::auth::SignMethod::HmacSha256,
        &dev.device_secret,
        &[
            ("clientId", &client_id),
            ("deviceName", &dev.device_name),
            ("productKey", &dev.product_key),
            ("timestamp", &ts),
        ],
    );
    json!({ "productKey": dev.product_key, "deviceName": dev.device_name, "clientId": client_id,
            "timestamp": ts, "signmethod": "hmacsha256", "sign": sign })
    .to_string()
}

/// The CoAP path publishing to a device's `user/data` topic.
pub fn topic_path(dev: &DeviceCreds) -> String {
    format!("/topic{}", dev.user_topic("data"))
}
