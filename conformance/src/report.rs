//! The limits report: each limit test records what it observed; `limits-report` (a binary of this
//! crate) joins the records with docs/limits.md into a table, JSON and Markdown.

use std::path::PathBuf;

use serde_json::{Value, json};

/// Where test records and the report go: `$IRONHUB_REPORT_DIR`, else `target/conformance`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IRONHUB_REPORT_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let target = target.canonicalize().unwrap_or(target);
    target.join("conformance")
}

/// Records the observation of one limit test, then asserts it passed. `documented` is the value
/// the test configured or the default it checked; `observed` what the deployment did.
pub fn check(id: &str, documented: &str, observed: &str, pass: bool) {
    let results = dir().join("results");
    std::fs::create_dir_all(&results).expect("report directory");
    let row = json!({ "id": id, "documented": documented, "observed": observed, "pass": pass });
    std::fs::write(results.join(format!("{id}.json")), row.to_string()).expect("write result");
    assert!(pass, "{id}: documented {documented}, observed {observed}");
}

/// A row of docs/limits.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRow {
    /// `L-xxx`.
    pub id: String,
    /// What is limited.
    pub limit: String,
    /// The default.
    pub default: String,
    /// `enforced` or `not yet built (issue N...)`.
    pub status: String,
}

/// Parses the rows of docs/limits.md (every table row whose first cell is an id).
pub fn limit_rows(markdown: &str) -> Vec<LimitRow> {
    markdown
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let id = cells.first()?;
            if cells.len() < 7 || !id.starts_with("L-") {
                return None;
            }
            Some(LimitRow {
                id: (*id).to_owned(),
                limit: cells[1].to_owned(),
                default: cells[2].to_owned(),
                status: cells[6].to_owned(),
            })
        })
        .collect()
}

/// The contract, read from the workspace.
pub fn contract() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/limits.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The recorded result of a limit, if its test ran.
pub fn result(id: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir().join("results").join(format!("{id}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}
