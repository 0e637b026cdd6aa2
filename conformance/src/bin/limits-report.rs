//! Prints the limits conformance report and writes it as JSON and Markdown next to the test
//! records (`target/conformance/limits-report.{json,md}`). Exits non-zero when an enforced limit
//! has no passing result. Run the limit tests first (`conformance/run` does both).

use ironhub_conformance::report;
use serde_json::json;

fn main() -> std::process::ExitCode {
    let rows = report::limit_rows(&report::contract());
    let mut table = Vec::new();
    let mut failures = 0;
    for row in &rows {
        let built = row.status == "enforced";
        let (observed, verdict) = match (built, report::result(&row.id)) {
            (false, _) => (row.status.clone(), "not yet built"),
            (true, Some(r)) if r["pass"] == true => {
                (r["observed"].as_str().unwrap_or("").to_owned(), "pass")
            }
            (true, Some(r)) => (r["observed"].as_str().unwrap_or("").to_owned(), "FAIL"),
            (true, None) => (
                "no result: the test did not run or failed before recording".into(),
                "FAIL",
            ),
        };
        if verdict == "FAIL" {
            failures += 1;
        }
        table.push(
            json!({ "id": row.id, "limit": row.limit, "documented": row.default,
                           "observed": observed, "result": verdict }),
        );
    }
    let mut md =
        String::from("| id | limit | documented | observed | result |\n|---|---|---|---|---|\n");
    for r in &table {
        let cell = |k: &str| r[k].as_str().unwrap_or("").replace('|', "\\|");
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell("id"),
            cell("limit"),
            cell("documented"),
            cell("observed"),
            cell("result")
        ));
    }
    print!("{md}");
    let dir = report::dir();
    std::fs::create_dir_all(&dir).expect("report directory");
    std::fs::write(dir.join("limits-report.md"), &md).expect("write markdown");
    std::fs::write(
        dir.join("limits-report.json"),
        serde_json::to_string_pretty(&table).expect("json"),
    )
    .expect("write json");
    let enforced = rows.iter().filter(|r| r.status == "enforced").count();
    println!(
        "\n{} of {enforced} enforced limits pass; report in {}",
        enforced - failures,
        dir.display()
    );
    if failures > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
