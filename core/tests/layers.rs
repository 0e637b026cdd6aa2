//! The shape of core, checked on its source: no import circle among its top-level modules, the
//! data layer imports nothing above it, no file grows past the size a reader can hold, and core
//! names no transport or sink.
//! docs/architecture.md describes the layers these checks keep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file of core (its inline tests included) may have at most this many lines.
const MAX_LINES: usize = 700;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read core/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file's path under src/, its whole text, and its code before its test module.
fn sources() -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(src())
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            (relative, text, code)
        })
        .collect()
}

/// The top-level module a file belongs to (`hub/session.rs` is `hub`); None for lib.rs.
fn module_of(relative: &str) -> Option<String> {
    let first = relative.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// Edges A -> B for every `crate::B` named in A's code (comments left out).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let modules: BTreeSet<String> = sources.iter().filter_map(|(f, ..)| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (file, _, code) in &sources {
        let Some(from) = module_of(file) else {
            continue;
        };
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != from && modules.contains(&name) {
                    graph.get_mut(&from).expect("module").insert(name);
                }
            }
        }
    }
    graph
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(m) = stack.pop() {
        for next in &graph[&m] {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_import_circle_among_the_top_level_modules() {
    let graph = import_graph();
    assert!(graph.contains_key("hub") && graph.contains_key("data"));
    let circles: Vec<String> = graph
        .keys()
        .filter(|m| reachable(&graph, m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = graph[m]
                .iter()
                .filter(|n| reachable(&graph, n).contains(m))
                .collect();
            format!("{m} -> {back:?} -> ... -> {m}")
        })
        .collect();
    assert!(circles.is_empty(), "import circles in core: {circles:#?}");
}

#[test]
fn the_data_layer_imports_nothing_of_core() {
    let graph = import_graph();
    assert!(
        graph["data"].is_empty(),
        "core/src/data imports {:?}: move what it needs down into data, or the type up",
        graph["data"]
    );
}

#[test]
fn no_source_file_outgrows_a_reader() {
    let mut too_long = Vec::new();
    for (file, text, _) in sources() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("{file}: {lines} lines (at most {MAX_LINES})"));
        }
    }
    assert!(too_long.is_empty(), "split these by role: {too_long:#?}");
}

/// The names the stock server's plug-ins register under: core's code (its tests aside) may
/// mention them in comments, never in a string it acts on.
const PLUG_IN_NAMES: &[&str] = &[
    "\"mqtt\"",
    "\"mqtt-tls\"",
    "\"quic\"",
    "\"http\"",
    "\"coap\"",
    "\"amqp\"",
    "\"sqs\"",
];

#[test]
fn core_names_no_transport_or_sink() {
    let mut named = Vec::new();
    for (file, _, code) in sources() {
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for name in PLUG_IN_NAMES.iter().filter(|n| line.contains(*n)) {
                named.push(format!("{file}: {name} in `{}`", line.trim()));
            }
        }
    }
    assert!(
        named.is_empty(),
        "transports and sinks register themselves (Hub::transport, Sink::capabilities): {named:#?}"
    );
}

/// The policy layer: what may be admitted, decided from the request, the configuration and the
/// limits' own state.
const POLICY: &[&str] = &["acl", "admission", "limits", "topic"];
/// The engine and what sits on it: sessions, routing, egress, storage, metering.
const ABOVE_POLICY: &[&str] = &["hub", "egress", "store", "sink", "metering", "transport"];

#[test]
fn the_policy_layer_imports_nothing_of_the_engine() {
    let graph = import_graph();
    let mut upward = Vec::new();
    for module in POLICY {
        let imports = graph
            .get(*module)
            .unwrap_or_else(|| panic!("no module {module}"));
        for above in ABOVE_POLICY.iter().filter(|a| imports.contains(**a)) {
            upward.push(format!("{module} -> {above}"));
        }
    }
    assert!(
        upward.is_empty(),
        "policy decides without the engine: {upward:?}"
    );
}
