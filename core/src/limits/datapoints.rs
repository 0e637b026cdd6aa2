//! Counting data points as seed 001 does: each key of a telemetry or attribute message is one
//! data point (a nested object counts as one for its key); a string or JSON value longer than 512
//! characters counts as one point per started 512 characters. Alink posts are counted on their
//! `params`. A payload that is not a JSON object is one data point.

use serde_json::Value;

/// Characters per data point for long strings and JSON values.
pub const CHARS_PER_POINT: usize = 512;

fn value_points(v: &Value) -> u64 {
    let chars = match v {
        Value::String(s) => s.chars().count(),
        Value::Object(_) | Value::Array(_) => v.to_string().chars().count(),
        _ => return 1,
    };
    chars.div_ceil(CHARS_PER_POINT).max(1) as u64
}

/// Data points in a payload.
pub fn count(payload: &[u8]) -> u64 {
    // Not an object: one point, without a parse attempt (a failed parse allocates its error).
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return 1;
    }
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(payload) else {
        return 1;
    };
    let fields = match root.get("params") {
        Some(Value::Object(params)) => params,
        _ => &root,
    };
    fields.values().map(value_points).sum::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_001_example_is_five_points() {
        let msg = br#"{
            "stringKey":"value1", "booleanKey":true, "doubleKey":42.0, "longKey":73,
            "jsonKey": { "someNumber": 42, "someArray": [1,2,3], "someNestedObject": {"key": "value"} }
        }"#;
        assert_eq!(count(msg), 5);
    }

    #[test]
    fn long_values_count_per_512_characters() {
        let long = "x".repeat(1025);
        assert_eq!(
            count(format!(r#"{{"a":"{long}","b":1}}"#).as_bytes()),
            3 + 1
        );
        assert_eq!(
            count(format!(r#"{{"a":"{}"}}"#, "y".repeat(512)).as_bytes()),
            1
        );
    }

    #[test]
    fn alink_posts_count_their_params_and_other_payloads_count_one() {
        assert_eq!(
            count(br#"{"id":"1","version":"1.0","params":{"t":1,"h":2},"method":"x"}"#),
            2
        );
        assert_eq!(count(b"\x01\x02binary"), 1);
        assert_eq!(count(b"[1,2,3]"), 1);
        assert_eq!(count(b" \n{\"a\":1,\"b\":2}"), 2, "leading whitespace");
        assert_eq!(count(b"{not json"), 1);
        assert_eq!(count(b""), 1);
    }
}
