//! The HTTP device transport, black-box with curl (a client that is not ours): the Alibaba
//! `/auth` and `/topic/...` scheme, its errors, tokens that survive a crash, and the same limits
//! as MQTT.

use std::process::Command;
use std::time::Duration;

use ironhub_conformance::{Deployment, DeviceCreds, free_port, v3};
use serde_json::{Value, json};

struct Http {
    base: String,
    /// Extra curl arguments (the CA file for HTTPS).
    tls: Vec<String>,
}

/// One curl call: returns (status, headers, JSON body).
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
    async fn start(extra: &str) -> (Deployment, Http) {
        let port = free_port();
        let d = Deployment::start(&format!(
            "[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{extra}"
        ))
        .await;
        (
            d,
            Http {
                base: format!("http://127.0.0.1:{port}"),
                tls: Vec::new(),
            },
        )
    }

    async fn start_https(certs: &std::path::Path) -> (Deployment, Http) {
        let (cert, key) = ironhub_conformance::self_signed(certs);
        let port = free_port();
        let d = Deployment::start(&format!(
            "[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\n"
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

    fn auth_body(dev: &DeviceCreds, secret: &str) -> String {
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

    async fn call(&self, mut args: Vec<String>) -> (u16, String, Value) {
        args.splice(0..0, self.tls.iter().cloned());
        tokio::task::spawn_blocking(move || {
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap()
    }

    async fn auth(&self, dev: &DeviceCreds, secret: &str) -> (u16, String, Value) {
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

    async fn token(&self, dev: &DeviceCreds) -> String {
        let (status, _, v) = self.auth(dev, &dev.device_secret).await;
        assert_eq!(status, 200, "{v}");
        v["info"]["token"].as_str().expect("token").to_owned()
    }

    async fn publish(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_authenticates_and_publishes_over_http_to_an_mqtt_subscriber() {
    let (d, http) = Http::start("").await;
    let dev = d.provision("acme").await;
    // The same device holds an MQTT session meanwhile: HTTP does not take it over.
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(dev.user_topic("#"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;

    let token = http.token(&dev).await;
    let (status, _, v) = http
        .publish(
            Some(&token),
            &dev.user_topic("update"),
            b"{\"t\":21}".to_vec(),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let got = v3::next_publish(&mut ev).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (dev.user_topic("update").as_str(), &b"{\"t\":21}"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outlives_a_crash_of_the_hub() {
    let (mut d, http) = Http::start("").await;
    let dev = d.provision("acme").await;
    let token = http.token(&dev).await;
    d.kill();
    d.restart().await;
    let (status, _, v) = http
        .publish(Some(&token), &dev.user_topic("update"), b"{}".to_vec())
        .await;
    assert_eq!(
        (status, v["code"].as_i64()),
        (200, Some(0)),
        "the token issued before the crash still admits: {v}"
    );
    let (status, _, v) = http
        .publish(
            Some("not-a-token"),
            &dev.user_topic("update"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 401, "an unknown token stays refused: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_precise() {
    let (d, http) = Http::start("token_ttl_secs = 1\n").await;
    let dev = d.provision("acme").await;
    let other = d.add_device(&dev.product_key, "dev-2").await;

    let (bad, _, v) = http.auth(&dev, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(
        (bad, v["code"].as_i64()),
        (401, Some(20000)),
        "wrong signature: {v}"
    );
    let (missing, _, _) = http
        .publish(None, &dev.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(missing, 401, "no token");

    let token = http.token(&dev).await;
    let (acl, _, v) = http
        .publish(Some(&token), &other.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(acl, 403, "another device's topic: {v}");
    let (big, _, _) = http
        .publish(Some(&token), &dev.user_topic("x"), vec![b'x'; 300 * 1024])
        .await;
    assert_eq!(big, 413, "over the 256 KB message size");
    let (bad_topic, _, _) = http
        .publish(Some(&token), &dev.user_topic("a/b/c/d/e/f"), b"x".to_vec())
        .await;
    assert_eq!(bad_topic, 400, "more than 7 levels");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (expired, _, v) = http
        .publish(Some(&token), &dev.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(expired, 401, "expired token: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publishes_meet_the_same_rate_limits_with_429_and_retry_after() {
    let (d, http) = Http::start("").await;
    let profile = json!({ "rates": { "device_messages_qos1": "1:60" } });
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("http"), profile)
        .await;
    let token = http.token(&dev).await;
    let (first, _, _) = http
        .publish(Some(&token), &dev.user_topic("x"), b"1".to_vec())
        .await;
    let (second, head, v) = http
        .publish(Some(&token), &dev.user_topic("x"), b"2".to_vec())
        .await;
    assert_eq!(first, 200);
    assert_eq!((second, v["limit"].as_str()), (429, Some("L-017")), "{v}");
    assert!(head.contains("retry-after:"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (d, https) = Http::start_https(certs.path()).await;
    let dev = d.provision("acme").await;
    let token = https.token(&dev).await;
    let (status, _, v) = https
        .publish(
            Some(&token),
            &dev.user_topic("secure"),
            b"over https".to_vec(),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let plain = format!("http{}", &https.base["https".len()..]);
    let (status, _, _) = Http {
        base: plain,
        tls: Vec::new(),
    }
    .auth(&dev, &dev.device_secret)
    .await;
    assert_ne!(status, 200, "plain HTTP is not served on the HTTPS port");
}
