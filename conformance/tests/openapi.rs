//! The REST API against its own OpenAPI document: schemathesis (PyPI) generates requests from
//! `/openapi.json` (schema-valid and schema-violating ones, then stateful sequences) and checks
//! every answer against the document: no 5xx, documented statuses, content types and bodies,
//! schema-valid requests accepted, invalid ones refused, 405 with Allow. Any finding fails.

use std::process::Command;
use std::time::Duration;

use ironhub_conformance::Deployment;

/// schemathesis' command-line entry point, with the arguments after `-c`'s program.
const CLI: &str = "import sys; from schemathesis.cli import schemathesis; \
    sys.argv = sys.argv[1:]; schemathesis()";

/// Examples per operation and phase; the whole run takes about half a minute.
const EXAMPLES: &str = "20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let d = Deployment::start("").await;
    // Something to find: a tenant with a product, a device and a business API key.
    d.provision("fuzz").await;
    let key = d.api_key("fuzz", "schemathesis").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
headers = {{ Authorization = "Bearer {admin}" }}

[[operations]]
include-path-regex = "^/api/v1/business/"
headers = {{ Authorization = "Bearer {key}" }}

# A rule's SQL has a grammar that no JSON Schema states: a schema-valid statement may still not
# parse, which is a 400 naming the problem. Everything else about rules is checked as usual.
[[operations]]
include-path-regex = "^/api/v1/tenants/\\{{tenant\\}}/rules(/\\{{id\\}})?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

# A firmware package is bytes: an empty one, or one that differs from the md5 / sha256 given with
# it, is a 400 naming the problem, which no schema of a binary body states; a batch naming a
# package or devices that do not exist is a 400 too.
[[operations]]
include-path-regex = "^/api/v1/tenants/\\{{tenant\\}}/ota/(packages|batches)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "429", "5xx"]

# A parsing script is JavaScript: a schema-valid string that does not load is a 400 naming the
# error, and a sample its script throws on or cannot take (bad hex) is a 400 too.
[[operations]]
include-path-regex = "^/api/v1/products/\\{{pk\\}}/script(/test)?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "429", "5xx"]

# A thing model document has rules no JSON Schema of a raw body states: one that does not read
# as a model is a 400 naming the problem.
[[operations]]
include-path-regex = "^/api/v1/products/\\{{pk\\}}/tsl/import$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "429", "5xx"]
"#,
            admin = d.token(),
        ),
    )
    .expect("write the config");
    let schema = format!("{}/openapi.json", d.api);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            // schemathesis keeps a cache where it runs: in the temporary directory.
            .current_dir(config.parent().expect("the config's directory"))
            .arg(Duration::from_secs(600).as_secs().to_string())
            // Its command through the python3 that has it, wherever pip put its scripts.
            .args(["python3", "-c", CLI, "schemathesis"])
            .arg("--no-color")
            .arg("--config-file")
            .arg(&config)
            .args(["run", &schema, "--checks", "all", "--continue-on-failure"])
            .args(["--max-examples", EXAMPLES, "--seed", "1"])
            .output()
            .expect("schemathesis runs (.ci/run installs it)")
    })
    .await
    .expect("schemathesis' thread");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, document) = d.api(hyper::Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    // schemathesis leaves out the document's own path.
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, p)| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "not every one of the {operations} operations was tested:\n{report}"
    );
}
