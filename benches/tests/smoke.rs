//! A short smoke run of the load generator against a real ironhub: it proves the scenarios work
//! end to end (nothing lost at a light load, idle connections held, JSON written). No timing is
//! asserted: figures come from `benches/compare`, not from tests.

use std::net::SocketAddr;
use std::process::Command;

use ironhub_conformance::Deployment;
use serde_json::Value;

async fn run(mqtt: SocketAddr, args: &'static [&'static str]) -> Value {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_ironhub-bench"))
            .args(["--target", &mqtt.to_string(), "--label", "smoke"])
            .args(args)
            .output()
            .expect("ironhub-bench runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    })
    .await
    .expect("bench task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_fan_out_and_connect_scenarios_run() {
    let d = Deployment::open_broker("").await;
    let fan_in = run(
        d.mqtt,
        &[
            "fan-in",
            "--publishers",
            "2",
            "--rate",
            "10",
            "--qos",
            "1",
            "--seconds",
            "1",
        ],
    )
    .await;
    let r = &fan_in["result"];
    assert!(r["sent"].as_u64().unwrap() > 0);
    assert_eq!(r["delivered"], r["sent"], "{fan_in}");
    assert_eq!(r["lost"], 0);

    let fan_out = run(
        d.mqtt,
        &[
            "fan-out",
            "--subscribers",
            "3",
            "--rate",
            "10",
            "--seconds",
            "1",
        ],
    )
    .await;
    assert_eq!(
        fan_out["result"]["delivered"], fan_out["result"]["expected"],
        "{fan_out}"
    );

    let connect = run(
        d.mqtt,
        &[
            "connect",
            "--connections",
            "50",
            "--sources",
            "127.0.0.1,127.0.0.2",
        ],
    )
    .await;
    assert_eq!(connect["result"]["connected"], 50, "{connect}");
}
