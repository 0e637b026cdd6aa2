//! The rule SQL: `SELECT <items> FROM '<topic filter>' [WHERE <condition>]` over JSON payloads,
//! the dialect of Alibaba Cloud's rules engine (a quoted topic filter where SQL has a table).
//!
//! Hand-written rather than built on a general SQL parser: the dialect is a dozen productions,
//! general parsers reject the quoted FROM, and evaluation needs only this small expression tree.
//!
//! - items: `*` (the payload's fields), `a.b[0] AS x`, `deviceName()`, arithmetic, literals;
//!   without `AS`, a field is named after its last segment and a function after itself;
//! - condition: `= != <> < <= > >=`, `AND OR NOT`, `IS [NOT] NULL`, `+ - * / %`, parentheses;
//! - functions: `topic()`, `topic(n)` (n-th level, from 1), `productKey()`, `deviceName()`,
//!   `messageId()`, `timestamp()` (ms), `lower(s)`, `upper(s)`, `concat(a, ...)`, `abs(n)`.
//!
//! A field missing from the payload (or a payload that is not JSON) is null; a comparison with
//! null is false, so such messages do not match a WHERE that uses the field.

mod parse;

use serde_json::{Map, Number, Value};

/// Longest statement accepted, in bytes: the expression tree is walked recursively when a
/// message is evaluated and when it is dropped, so its size is bounded with the text.
pub const MAX_SQL_BYTES: usize = 4096;
/// Deepest nesting of parentheses, function calls, NOT and unary minus the parser follows.
pub const MAX_NESTING: usize = 32;

/// Why a statement was refused, with the byte offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule SQL at {position}: {message}")]
pub struct SqlError {
    /// Byte offset in the statement.
    pub position: usize,
    /// What was expected.
    pub message: String,
    /// Whether the statement passed a bound ([`MAX_SQL_BYTES`], [`MAX_NESTING`]: L-053) rather
    /// than breaking the grammar.
    pub over_bound: bool,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Selected items, in order.
    items: Vec<Item>,
    /// The topic filter of FROM.
    pub from: String,
    condition: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    All,
    Field(Expr, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    Path(Vec<Segment>),
    Call(String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Binary(Box<Expr>, Op, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// What a rule sees of a message.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The payload, parsed (Null when it is not JSON).
    pub payload: &'a Value,
    /// The message's topic.
    pub topic: &'a str,
    /// ProductKey of the publishing device ("" for other clients).
    pub product_key: &'a str,
    /// DeviceName of the publishing device ("" for other clients).
    pub device_name: &'a str,
    /// The message's id.
    pub message_id: u64,
    /// When the hub accepted it, ms.
    pub timestamp_ms: u64,
}

impl Query {
    /// Parses a statement.
    pub fn parse(sql: &str) -> Result<Query, SqlError> {
        parse::statement(sql)
    }

    /// Whether a message passes the WHERE condition (true without one).
    pub fn matches(&self, cx: &Context<'_>) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|c| eval(c, cx) == Value::Bool(true))
    }

    /// The JSON object the SELECT makes of a message.
    pub fn select(&self, cx: &Context<'_>) -> Value {
        let mut out = Map::new();
        for item in &self.items {
            match item {
                Item::All => {
                    if let Value::Object(fields) = cx.payload {
                        out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                Item::Field(expr, name) => {
                    out.insert(name.clone(), eval(expr, cx));
                }
            }
        }
        Value::Object(out)
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn num_value(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> Value {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return Value::Bool(false),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    let Some(o) = ordering else {
        return Value::Bool(op == Op::Ne);
    };
    Value::Bool(match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
        _ => false,
    })
}

fn eval(e: &Expr, cx: &Context<'_>) -> Value {
    match e {
        Expr::Literal(v) => v.clone(),
        Expr::Path(path) => {
            let mut v = cx.payload;
            for s in path {
                let next = match s {
                    Segment::Key(k) => v.get(k),
                    Segment::Index(i) => v.get(*i),
                };
                match next {
                    Some(n) => v = n,
                    None => return Value::Null,
                }
            }
            v.clone()
        }
        Expr::Call(f, args) => call(f, args, cx),
        Expr::Not(x) => match eval(x, cx) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Bool(false),
        },
        Expr::Neg(x) => number(&eval(x, cx)).map_or(Value::Null, |n| num_value(-n)),
        Expr::IsNull(x, want_null) => Value::Bool(eval(x, cx).is_null() == *want_null),
        Expr::Binary(a, op, b) => {
            let (a, b) = (eval(a, cx), eval(b, cx));
            match op {
                Op::And => Value::Bool(a == Value::Bool(true) && b == Value::Bool(true)),
                Op::Or => Value::Bool(a == Value::Bool(true) || b == Value::Bool(true)),
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => compare(&a, *op, &b),
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => {
                    let (Some(x), Some(y)) = (number(&a), number(&b)) else {
                        return Value::Null;
                    };
                    match op {
                        Op::Add => num_value(x + y),
                        Op::Sub => num_value(x - y),
                        Op::Mul => num_value(x * y),
                        Op::Div if y != 0.0 => num_value(x / y),
                        Op::Rem if y != 0.0 => num_value(x % y),
                        _ => Value::Null,
                    }
                }
            }
        }
    }
}

fn call(f: &str, args: &[Expr], cx: &Context<'_>) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Null, |a| eval(a, cx));
    match f {
        "topic" => match number(&arg(0)) {
            None => Value::String(cx.topic.to_owned()),
            Some(n) if n >= 1.0 => cx
                .topic
                .trim_start_matches('/')
                .split('/')
                .nth(n as usize - 1)
                .map_or(Value::Null, |l| Value::String(l.to_owned())),
            Some(_) => Value::Null,
        },
        "productKey" => Value::String(cx.product_key.to_owned()),
        "deviceName" => Value::String(cx.device_name.to_owned()),
        "messageId" => Value::String(cx.message_id.to_string()),
        "timestamp" => Value::from(cx.timestamp_ms),
        "lower" => Value::String(text(&arg(0)).to_lowercase()),
        "upper" => Value::String(text(&arg(0)).to_uppercase()),
        "concat" => Value::String(args.iter().map(|a| text(&eval(a, cx))).collect()),
        "abs" => number(&arg(0)).map_or(Value::Null, |n| num_value(n.abs())),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cx(payload: &Value) -> Context<'_> {
        Context {
            payload,
            topic: "/a1pk/lamp-01/user/data",
            product_key: "a1pk",
            device_name: "lamp-01",
            message_id: 42,
            timestamp_ms: 1000,
        }
    }

    #[test]
    fn selects_fields_functions_and_expressions() {
        let q = Query::parse(
            "SELECT t.celsius AS c, t.celsius * 9 / 5 + 32 AS f, deviceName(), topic(2) AS dev, items[1] \
             FROM '/+/+/user/data' WHERE t.celsius > 30 AND NOT (mode = 'test')",
        )
        .unwrap();
        assert_eq!(q.from, "/+/+/user/data");
        let p = json!({"t": {"celsius": 35}, "mode": "live", "items": [1, 2]});
        assert!(q.matches(&cx(&p)));
        assert_eq!(
            q.select(&cx(&p)),
            json!({"c": 35, "f": 95, "deviceName": "lamp-01", "dev": "lamp-01", "items": 2})
        );
        let cool = json!({"t": {"celsius": 20}, "mode": "live"});
        assert!(!q.matches(&cx(&cool)));
        let test = json!({"t": {"celsius": 40}, "mode": "test"});
        assert!(!q.matches(&cx(&test)));
    }

    #[test]
    fn missing_fields_and_non_json_payloads_do_not_match() {
        let q =
            Query::parse("SELECT * FROM '/#' WHERE temp >= 1 OR temp IS NULL AND x = 1").unwrap();
        assert!(!q.matches(&cx(&Value::Null)));
        let q = Query::parse("select *, 'v1' as version from '/#' where temp is not null").unwrap();
        let p = json!({"temp": 3});
        assert!(q.matches(&cx(&p)));
        assert_eq!(q.select(&cx(&p)), json!({"temp": 3, "version": "v1"}));
        assert!(!q.matches(&cx(&json!({"other": 1}))));
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = Query::parse("SELECT a FROM topic").unwrap_err();
        assert!(e.message.contains("quotes"), "{e}");
        assert_eq!(e.position, 14);
        assert!(
            Query::parse("SELECT a + 1 FROM '/#'")
                .unwrap_err()
                .message
                .contains("AS")
        );
        assert!(
            Query::parse("SELECT nope() FROM '/#'")
                .unwrap_err()
                .message
                .contains("unknown function")
        );
        assert!(Query::parse("SELECT a FROM '/#' WHERE").is_err());
        assert!(Query::parse("SELECT a FROM '/a/#/b'").is_err());
        assert!(Query::parse("SELECT a FROM '/#' extra").is_err());
        assert!(Query::parse("SELECT 'open FROM '/#'").is_err());
    }

    /// Found by fuzzing: 200,000 nested parentheses overflowed the parser's stack.
    #[test]
    fn nesting_and_length_are_bounded() {
        let nested = |n: usize| {
            format!(
                "SELECT a FROM '/#' WHERE {}1{} = 1",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        assert!(Query::parse(&nested(MAX_NESTING)).is_ok());
        let e = Query::parse(&nested(MAX_NESTING + 1)).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = Query::parse(&format!(
            "SELECT a FROM '/#' WHERE {}a",
            "NOT ".repeat(MAX_NESTING + 1)
        ))
        .unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = Query::parse(&format!(
            "SELECT {}a AS x FROM '/#'",
            "-".repeat(MAX_NESTING + 1)
        ))
        .unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let long = format!(
            "SELECT a FROM '/#' WHERE a = '{}'",
            "x".repeat(MAX_SQL_BYTES)
        );
        let e = Query::parse(&long).unwrap_err();
        assert!(e.message.contains("longer than 4096 bytes"), "{e}");
        // The longest flat statement parses, evaluates and drops without deep recursion trouble.
        let flat = format!(
            "SELECT a AS x FROM '/#' WHERE a{} = 1",
            " + a".repeat((MAX_SQL_BYTES - 40) / 4)
        );
        assert!(flat.len() <= MAX_SQL_BYTES);
        let q = Query::parse(&flat).unwrap();
        assert!(!q.matches(&cx(&json!({"a": 1}))));
    }
}
