//! Fuzzes the rules SQL parser and evaluator: any text must parse to a query or a clean error,
//! never a panic, a stack overflow or a hang; a query that parses must evaluate against a
//! message without panicking. The first byte picks the payload the query is evaluated against.
#![no_main]

use ironhub_core::rules::{Context, Query};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(sql) = std::str::from_utf8(rest) else { return };
    let Ok(query) = Query::parse(sql) else { return };
    let payload = match pick % 4 {
        0 => Value::Null,
        1 => json!({ "temp": 21.5, "items": { "a": [1, 2, { "b": "x" }] }, "s": "HeLLo" }),
        2 => json!([1, "two", null, true]),
        _ => json!({ "params": { "temp": -1e308, "n": i64::MIN, "u": u64::MAX } }),
    };
    let cx = Context {
        payload: &payload,
        topic: "/pk/dn/user/data",
        product_key: "pk",
        device_name: "dn",
        message_id: 7,
        timestamp_ms: 1_796_083_200_000,
    };
    if query.matches(&cx) {
        let _ = query.select(&cx);
    }
});
