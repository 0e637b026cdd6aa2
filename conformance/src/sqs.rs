//! An SQS endpoint for the tests (moto, started on demand by `.ci/moto`, idempotent) and the
//! documented boto3 consumer.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The port of the moto endpoint every SQS test shares.
pub const MOTO_PORT: u16 = 4566;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Makes sure moto runs and returns its endpoint URL.
pub fn moto() -> String {
    let out = Command::new(repo().join(".ci/moto"))
        .arg(MOTO_PORT.to_string())
        .output()
        .expect("run .ci/moto");
    assert!(
        out.status.success(),
        ".ci/moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("http://127.0.0.1:{MOTO_PORT}")
}

/// The `[sqs]` section pointing a deployment at `endpoint` (moto takes any credentials).
pub fn config(endpoint: &str) -> String {
    format!(
        "[sqs]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n"
    )
}

/// Runs `conformance/clients/sqs_consumer.py` on `queue` until it is idle for `idle_secs`;
/// returns the JSON line of each message it received (and deleted).
pub fn consume(endpoint: &str, queue: &str, idle_secs: u32) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(repo().join("conformance/clients/sqs_consumer.py"))
        .args([endpoint, "us-east-1", queue, &idle_secs.to_string()])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "sqs_consumer.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
