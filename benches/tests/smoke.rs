//! A short smoke run of the load generator against a real ironhub: it proves the scenarios work
//! end to end (nothing lost at a light load, idle connections held, JSON written). No timing is
//! asserted: figures come from `benches/compare`, not from tests.

use std::net::SocketAddr;
use std::process::Command;

use ironhub_conformance::Deployment;
use serde_json::Value;

async fn run(mqtt: SocketAddr, args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
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

/// The gateway scenario on ironhub: devices made through the admin API, then the same traffic on
/// a connection each and through one gateway that logs them in as its sub-devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_scenario_runs_direct_and_through_a_gateway() {
    let d = Deployment::start("").await;
    let api = d.api.trim_start_matches("http://").to_owned();
    for via in ["direct", "gateway"] {
        let r = run(
            d.mqtt,
            &[
                "gateway",
                "--api",
                &api,
                "--token",
                d.token(),
                "--via",
                via,
                "--devices",
                "60",
                "--rate",
                "2",
                "--seconds",
                "1",
            ],
        )
        .await;
        let result = &r["result"];
        assert!(result["sent"].as_u64().unwrap() >= 60, "{r}");
        assert_eq!(result["delivered"], result["sent"], "{r}");
        let connections = if via == "direct" { 60 } else { 1 };
        assert_eq!(result["connections"], connections, "{r}");
    }
}

/// The soak's 30-second version (`benches/soak` runs it for 10 minutes): clients connect,
/// subscribe, publish and leave, clean and persistent, and the hub's memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_gives_its_memory_back() {
    let d = Deployment::unlimited_open_broker().await;
    let pid = d.pid().expect("a process of its own").to_string();
    let v = run(
        d.mqtt,
        &[
            "--server-pid",
            &pid,
            "churn",
            "--clients",
            "200",
            "--warmup",
            "10",
            "--seconds",
            "18",
            "--settle",
            "2",
        ],
    )
    .await;
    println!("{v}");
    let r = &v["result"];
    assert!(r["rounds"].as_u64().unwrap() > 1_000, "{v}");
    let (before, after) = (
        r["server_rss_before_bytes"].as_f64().unwrap(),
        r["server_rss_after_bytes"].as_f64().unwrap(),
    );
    assert!(
        after <= before * 1.10,
        "the hub's memory grew by more than 10 % over the churn: {v}"
    );
}
