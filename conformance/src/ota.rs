//! Files devices download, from the outside: firmware packages and configuration files uploaded
//! and downloaded with `curl` as an operator and a device would, digests checked with `md5sum`
//! and `sha256sum`, upgrade batches made and followed through the admin API.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use crate::{Deployment, WAIT};

/// Configuration for upgrade tests: a rollout step every 100 ms.
pub const CONFIG: &str = "[hub.ota]\nrollout_interval_ms = 100\n";

/// `len` bytes that differ from one package to the next (`seed`).
pub fn firmware(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + usize::from(seed) * 7) % 251) as u8 ^ seed)
        .collect()
}

/// Runs curl (silent, 10 s at most) with `args`, after which it prints the status; returns the
/// status and what it printed before.
async fn curl(args: Vec<String>) -> (u16, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "-S", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs")
    })
    .await
    .expect("curl's thread");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Uploads `bytes` as a package (`query` names its product and version) with curl
/// (`--data-binary`): status and answer.
pub async fn upload(d: &Deployment, tenant: &str, query: &str, bytes: &[u8]) -> (u16, Value) {
    let path = format!("/api/v1/tenants/{tenant}/ota/packages?{query}");
    send_file(d, "POST", &path, bytes).await
}

/// Sends `bytes` as the body of an admin API request with curl: status and JSON answer.
pub async fn send_file(d: &Deployment, method: &str, path: &str, bytes: &[u8]) -> (u16, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body.bin");
    std::fs::write(&file, bytes).expect("body written");
    let (status, body) = curl(vec![
        "-X".into(),
        method.into(),
        "-H".into(),
        format!("authorization: Bearer {}", d.token()),
        "-H".into(),
        "content-type: application/octet-stream".into(),
        "--data-binary".into(),
        format!("@{}", file.display()),
        format!("{}{path}", d.api),
    ])
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Downloads `url` with curl (trusting the certificate `ca` for HTTPS): the status, and the
/// bytes' MD5 and SHA-256 (from `md5sum` and `sha256sum`) and size.
pub async fn download(url: &str, ca: Option<&Path>) -> (u16, String, String, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("download.bin");
    let mut args = vec!["-o".into(), file.display().to_string(), url.into()];
    if let Some(ca) = ca {
        args.extend(["--cacert".into(), ca.display().to_string()]);
    }
    let (status, _) = curl(args).await;
    let digest = |tool: &str| {
        let out = Command::new(tool)
            .arg(&file)
            .output()
            .expect("digest tool runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    (status, digest("md5sum"), digest("sha256sum"), size)
}

/// Makes a batch (`spec` as the API takes it); asserts it was made.
pub async fn batch(d: &Deployment, tenant: &str, spec: Value) -> Value {
    let (s, v) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/ota/batches"),
            Some(spec),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

/// Waits (bounded) until the batch's counts satisfy `done`; returns the batch.
pub async fn until_batch(
    d: &Deployment,
    tenant: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/api/v1/tenants/{tenant}/ota/batches/{id}");
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let (s, v) = d.api(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{v}");
        if done(&v["counts"]) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch {id} stayed at {}",
            v["counts"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A batch's jobs by DeviceName.
pub async fn jobs(d: &Deployment, tenant: &str, id: &str) -> Vec<Value> {
    let (s, v) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/ota/batches/{id}/jobs"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

/// `POST .../ota/batches/{id}/{action}` (`cancel` or `retry`): status and the batch.
pub async fn batch_action(d: &Deployment, tenant: &str, id: &str, action: &str) -> (u16, Value) {
    let path = format!("/api/v1/tenants/{tenant}/ota/batches/{id}/{action}");
    d.api(Method::POST, &path, None).await
}
