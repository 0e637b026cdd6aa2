//! docs/protocols/mqtt-conformance.md is the MQTT contract the way docs/limits.md is the limits
//! contract: this checks that it lists every normative statement of MQTT 3.1.1 and 5.0 once and
//! in order, that every statement it calls honoured names tests that exist, and that every test
//! of `mqtt311_spec.rs` and `mqtt5_spec.rs` sits on the rows its name gives.

use std::collections::BTreeMap;

const TABLE: &str = include_str!("../../docs/protocols/mqtt-conformance.md");

/// One row: statement id, duty, status, tests, note.
struct Row {
    id: String,
    duty: String,
    status: String,
    tests: Vec<String>,
    note: String,
}

/// The rows of the section headed `heading`.
fn section(heading: &str) -> Vec<Row> {
    let start = TABLE
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading}"));
    let rest = &TABLE[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter(|l| l.starts_with("| MQTT-"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 6, "a row has six cells: {l}");
            Row {
                id: cells[0].to_owned(),
                duty: cells[1].to_owned(),
                status: cells[2].to_owned(),
                tests: cells[3]
                    .split(", ")
                    .filter(|t| !t.is_empty())
                    .map(|t| t.trim_matches('`').to_owned())
                    .collect(),
                note: cells[4].to_owned(),
            }
        })
        .collect()
}

/// `MQTT-3.1.2-24` as (3, 1, 2, 24).
fn numbers(id: &str) -> [u32; 4] {
    let n: Vec<u32> = id
        .trim_start_matches("MQTT-")
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad id {id}")))
        .collect();
    [n[0], n[1], n[2], n[3]]
}

/// The source of the file a test reference names.
fn source(file: &str) -> String {
    let path = if file.contains('/') {
        format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))
    } else {
        format!("{}/tests/{file}.rs", env!("CARGO_MANIFEST_DIR"))
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Whether `source` has a test function `name` (its attribute on one of the lines above).
fn is_test(source: &str, name: &str) -> bool {
    let Some(at) = source.find(&format!("fn {name}(")) else {
        return false;
    };
    let before: Vec<&str> = source[..at].lines().rev().take(3).collect();
    before
        .iter()
        .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
}

/// The statement ids a spec test's name gives: `mqtt_3_1_2_4_and_3_1_2_5_...` or
/// `mqtt_3_3_1_5_to_3_3_1_12_...` (a range).
fn ids_in_name(name: &str) -> Vec<String> {
    let words: Vec<&str> = name.trim_start_matches("mqtt_").split('_').collect();
    let mut ids: Vec<[u32; 4]> = Vec::new();
    let (mut i, mut range) = (0, false);
    while i < words.len() {
        let four: Option<Vec<u32>> = words
            .get(i..i + 4)
            .and_then(|w| w.iter().map(|p| p.parse().ok()).collect());
        match four {
            Some(n) => {
                let id = [n[0], n[1], n[2], n[3]];
                match ids.last().copied() {
                    Some(from) if range => {
                        ids.extend((from[3] + 1..=id[3]).map(|y| [id[0], id[1], id[2], y]))
                    }
                    _ => ids.push(id),
                }
                range = false;
                i += 4;
            }
            None => {
                range = words[i] == "to";
                i += 1;
            }
        }
    }
    ids.iter()
        .map(|n| format!("MQTT-{}.{}.{}-{}", n[0], n[1], n[2], n[3]))
        .collect()
}

fn check_version(heading: &str, statements: usize, absent: &[&str], spec_file: &str) {
    let rows = section(heading);
    assert_eq!(rows.len(), statements, "{heading}: every statement, once");
    let mut problems = Vec::new();
    // In order, numbered without gaps within a section (save statements the standard skips).
    for pair in rows.windows(2) {
        let (a, b) = (numbers(&pair[0].id), numbers(&pair[1].id));
        let next_in_section = a[..3] == b[..3] && b[3] == a[3] + 1;
        let skipped = a[..3] == b[..3]
            && b[3] == a[3] + 2
            && absent.contains(&format!("MQTT-{}.{}.{}-{}", a[0], a[1], a[2], a[3] + 1).as_str());
        let new_section = a[..3] < b[..3]
            && (b[3] == 1
                || absent.contains(&format!("MQTT-{}.{}.{}-1", b[0], b[1], b[2]).as_str()));
        if !(next_in_section || skipped || new_section) {
            problems.push(format!("{} follows {}", pair[1].id, pair[0].id));
        }
    }
    let mut by_id: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in &rows {
        by_id.insert(&row.id, row);
        if !["server", "client", "both", "data"].contains(&row.duty.as_str()) {
            problems.push(format!("{}: duty {:?}", row.id, row.duty));
        }
        match row.status.as_str() {
            "honoured" | "different for devices" if row.tests.is_empty() => {
                problems.push(format!("{} is {} but names no test", row.id, row.status))
            }
            "different for devices" | "n/a" if row.note.is_empty() => problems.push(format!(
                "{} is {} without a note saying why",
                row.id, row.status
            )),
            "honoured" | "different for devices" | "n/a" => {}
            other => problems.push(format!("{}: status {other:?}", row.id)),
        }
        for test in &row.tests {
            let (file, name) = test
                .rsplit_once("::")
                .unwrap_or_else(|| panic!("{}: test {test} is not file::name", row.id));
            if !is_test(&source(file), name) {
                problems.push(format!("{}: no test {test}", row.id));
            }
        }
    }
    // Every spec test is on the rows its name gives.
    let spec = source(spec_file);
    for name in spec
        .split("fn ")
        .skip(1)
        .filter_map(|s| s.split('(').next())
        .filter(|n| n.starts_with("mqtt_"))
    {
        let reference = format!("{spec_file}::{name}");
        let ids = ids_in_name(name);
        if ids.is_empty() {
            problems.push(format!("{name} names no statement"));
        }
        for id in ids {
            match by_id.get(id.as_str()) {
                Some(row) if row.tests.contains(&reference) => {}
                Some(_) => problems.push(format!("{id} does not name {reference}")),
                None => problems.push(format!("{name} names {id}, which is not a statement")),
            }
        }
    }
    assert!(problems.is_empty(), "{heading}:\n{}", problems.join("\n"));
}

#[test]
fn every_mqtt_311_statement_is_listed_and_every_honoured_one_tested() {
    check_version("## MQTT 3.1.1", 141, &[], "mqtt311_spec");
}

#[test]
fn every_mqtt_5_statement_is_listed_and_every_honoured_one_tested() {
    check_version("## MQTT 5.0", 251, &["MQTT-2.2.1-1"], "mqtt5_spec");
}

#[test]
fn test_names_give_statement_ids_and_ranges() {
    assert_eq!(
        ids_in_name("mqtt_3_1_2_4_and_3_2_2_1_sessions"),
        ["MQTT-3.1.2-4", "MQTT-3.2.2-1"]
    );
    assert_eq!(
        ids_in_name("mqtt_3_3_1_5_to_3_3_1_7_and_4_7_2_1_x"),
        [
            "MQTT-3.3.1-5",
            "MQTT-3.3.1-6",
            "MQTT-3.3.1-7",
            "MQTT-4.7.2-1"
        ]
    );
}
