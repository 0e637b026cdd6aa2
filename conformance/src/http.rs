//! The HTTP device client of the suite: curl (a client that is not ours) speaking Alibaba's
//! `/auth` and `/topic/...` scheme.

use std::process::Command;

use serde_json::{Value, json};

use crate::{Deployment, DeviceCreds, free_port};

/// An HTTP device client (curl) for a deployment's HTTP transport.
pub struct Http {
    /// Base URL of the transport.
    pub base: String,
    /// Extra curl arguments (the CA file for HTTPS).
    tls: Vec<String>,
}

/// One curl call (10 s at most): returns (status, headers, JSON body).
fn curl(args: &[&str]) -> (u16, String, Value) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

impl Http {
    /// A client for the plain HTTP transport at `base`.
    pub fn at(base: String) -> Http {
        Http {
            base,
            tls: Vec::new(),
        }
    }

    /// A client for a plain HTTP transport, with the configuration that enables it on a free
    /// port.
    pub fn plain() -> (String, Http) {
        let port = free_port();
        (
            format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
            Http::at(format!("http://127.0.0.1:{port}")),
        )
    }

    /// Starts a deployment with the HTTP transport on and `extra` configuration.
    pub async fn start(extra: &str) -> (Deployment, Http) {
        let (config, http) = Http::plain();
        (Deployment::start(&format!("{config}{extra}")).await, http)
    }

    /// Starts a deployment with HTTPS on a self-signed certificate made in `certs` (its
    /// `cert.pem`), and `extra` configuration.
    pub async fn start_https(certs: &std::path::Path, extra: &str) -> (Deployment, Http) {
        let (cert, key) = crate::self_signed(certs);
        let port = free_port();
        let d = Deployment::start(&format!(
            "[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\n{extra}"
        ))
        .await;
        (
            d,
            Http {
                base: format!("https://127.0.0.1:{port}"),
                tls: vec!["--cacert".into(), cert.display().to_string()],
            },
        )
    }

    /// The `/auth` request body of `dev` signed with `secret`.
    pub fn auth_body(dev: &DeviceCreds, secret: &str) -> String {
        let ts = ironhub_core::now_ms().to_string();
        let client_id = format!("{}.{}", dev.product_key, dev.device_name);
        let sign = ironhub_core::auth::mqtt_password(
            ironhub_core::auth::SignMethod::HmacSha1,
            secret,
            &client_id,
            &dev.device_name,
            &dev.product_key,
            Some(&ts),
        );
        json!({ "productKey": dev.product_key, "deviceName": dev.device_name, "clientId": client_id,
                "timestamp": ts, "signmethod": "hmacsha1", "sign": sign, "version": "default" })
        .to_string()
    }

    /// One curl call with the TLS arguments: (status, headers, JSON body).
    pub async fn call(&self, mut args: Vec<String>) -> (u16, String, Value) {
        args.splice(0..0, self.tls.iter().cloned());
        tokio::task::spawn_blocking(move || {
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap()
    }

    /// `POST /auth` signed with `secret`.
    pub async fn auth(&self, dev: &DeviceCreds, secret: &str) -> (u16, String, Value) {
        let url = format!("{}/auth", self.base);
        self.call(vec![
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "content-type: application/json".into(),
            "--data".into(),
            Self::auth_body(dev, secret),
            url,
        ])
        .await
    }

    /// A token for `dev` (asserts the authentication succeeds).
    pub async fn token(&self, dev: &DeviceCreds) -> String {
        let (status, _, v) = self.auth(dev, &dev.device_secret).await;
        assert_eq!(status, 200, "{v}");
        v["info"]["token"].as_str().expect("token").to_owned()
    }

    /// `POST /topic{topic}` with the token, if any.
    pub async fn publish(
        &self,
        token: Option<&str>,
        topic: &str,
        body: Vec<u8>,
    ) -> (u16, String, Value) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), body).unwrap();
        let mut args = vec![
            "-X".into(),
            "POST".into(),
            "--data-binary".into(),
            format!("@{}", file.path().display()),
        ];
        if let Some(t) = token {
            args.extend(["-H".into(), format!("password: {t}")]);
        }
        args.push(format!("{}/topic{topic}", self.base));
        let r = self.call(args).await;
        drop(file);
        r
    }
}
