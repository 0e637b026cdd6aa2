//! Data parsing scripts (seed 000): a product's JavaScript, written as for Alibaba's IoT platform,
//! run by QuickJS in a sandbox. Each execution has a time budget (an interrupt handler stops the
//! script when it runs out) and each script its own memory limit (a QuickJS runtime per script);
//! the sandbox has no IO at all: no modules, no timers, nothing but the language.
//!
//! Scripts run on a few worker threads of their own, so a slow script never holds an async
//! worker. A product's script always runs on the same worker, which keeps it compiled between
//! executions; a script stopped by its budget or its memory limit is dropped and compiled again
//! for its next execution, so nothing it left behind survives.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{cell::Cell, thread};

use rquickjs::{Context, Ctx, Function, Object, Runtime, Value};
use tokio::sync::{mpsc, oneshot};

/// Alibaba's entry point for upstream Thing-model data: `rawDataToProtocol(bytes)`.
pub const UP: &str = "rawDataToProtocol";
/// Alibaba's entry point for downstream Thing-model data: `protocolToRawData(json)`.
pub const DOWN: &str = "protocolToRawData";
/// Alibaba's entry point for custom topics: `transformPayload(topic, bytes)`.
pub const TRANSFORM: &str = "transformPayload";

/// Compiled scripts each worker keeps; beyond it, one is dropped for the next.
const CACHED_PER_WORKER: usize = 256;
/// The stack a script may use (deep recursion is an error, not a crash).
const STACK_BYTES: usize = 512 * 1024;
/// Executions waiting per worker before callers wait to queue theirs.
const QUEUE: usize = 1024;
/// How often what a compiled script holds is measured, in executions (it walks its heap).
const MEASURE_EVERY: u64 = 64;

/// What a script may use per execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Wall time for one execution (compiling the script included).
    pub time: Duration,
    /// Memory of the script's runtime: its code, its globals and what an execution allocates.
    pub memory_bytes: usize,
    /// Memory all the compiled scripts a worker keeps may hold between executions; past it,
    /// others are dropped (and compiled again when next needed).
    pub cache_bytes: usize,
}

/// A script version: what the workers compile and cache (by product and version).
#[derive(Debug)]
pub struct Script {
    /// The product it belongs to.
    pub product_key: String,
    /// Changes whenever the source does.
    pub version: u64,
    /// The JavaScript source.
    pub source: String,
}

/// One execution: which entry point, with what.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `rawDataToProtocol(bytes)`: a device's raw frame to Alink JSON.
    Up(Vec<u8>),
    /// `protocolToRawData(json)`: Alink JSON to the device's raw frame.
    Down(serde_json::Value),
    /// `transformPayload(topic, bytes)`: a custom topic's payload to JSON.
    Transform(String, Vec<u8>),
}

impl Call {
    /// The entry point it calls.
    pub fn function(&self) -> &'static str {
        match self {
            Call::Up(_) => UP,
            Call::Down(_) => DOWN,
            Call::Transform(..) => TRANSFORM,
        }
    }
}

/// What an execution returned: JSON for `Up` and `Transform`, bytes for `Down`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A JSON value (an Alink request or reply, or a custom topic's JSON).
    Json(serde_json::Value),
    /// The device's raw bytes.
    Bytes(Vec<u8>),
}

/// Why a script did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The source is not valid JavaScript (or threw while being loaded).
    #[error("the script does not load: {0}")]
    Load(String),
    /// The entry point is not a function of the script.
    #[error("the script defines no function {0}")]
    Missing(&'static str),
    /// The script threw.
    #[error("{function} threw: {message}")]
    Threw {
        /// The entry point.
        function: &'static str,
        /// The exception's message.
        message: String,
    },
    /// The execution ran past its time budget and was stopped.
    #[error("the script ran past its time budget of {0} ms and was stopped")]
    TimeBudget(u128),
    /// The script's runtime reached its memory limit.
    #[error("the script ran out of its {0} bytes of memory and was stopped")]
    Memory(usize),
    /// The entry point returned something of the wrong shape.
    #[error("{function} returned {what}")]
    Output {
        /// The entry point.
        function: &'static str,
        /// What was wrong with it.
        what: String,
    },
    /// The script workers are gone (the hub is shutting down).
    #[error("the script workers are not running")]
    Stopped,
}

struct Job {
    script: Arc<Script>,
    call: Option<Call>,
    answer: oneshot::Sender<Result<Output, ScriptError>>,
}

/// The script workers: a product's executions always go to the same one.
pub struct Scripts {
    workers: Vec<mpsc::Sender<Job>>,
    hasher: foldhash::fast::FixedState,
}

impl Scripts {
    /// Starts `workers` threads (at least one) running scripts within `budget`.
    pub fn start(workers: usize, budget: Budget) -> Scripts {
        let workers = (0..workers.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE);
                thread::Builder::new()
                    .name(format!("ironhub-script-{i}"))
                    .spawn(move || Worker::new(budget).run(rx))
                    .expect("spawn a script worker");
                tx
            })
            .collect();
        Scripts {
            workers,
            hasher: foldhash::fast::FixedState::with_seed(0x5c1),
        }
    }

    fn worker(&self, product_key: &str) -> &mpsc::Sender<Job> {
        let at = self.hasher.hash_one(product_key) % self.workers.len() as u64;
        &self.workers[at as usize]
    }

    /// Runs one entry point of `script`.
    pub async fn run(&self, script: &Arc<Script>, call: Call) -> Result<Output, ScriptError> {
        self.send(script, Some(call)).await
    }

    /// Loads `script` once, as a check before it is saved: Ok when it compiles and defines
    /// Alibaba's entry points as functions (those it lacks are listed).
    pub async fn check(&self, script: &Arc<Script>) -> Result<Vec<&'static str>, ScriptError> {
        match self.send(script, None).await? {
            Output::Json(serde_json::Value::Array(missing)) => Ok([UP, DOWN, TRANSFORM]
                .into_iter()
                .filter(|f| missing.iter().any(|m| m == f))
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    async fn send(&self, script: &Arc<Script>, call: Option<Call>) -> Result<Output, ScriptError> {
        let (answer, rx) = oneshot::channel();
        let job = Job {
            script: script.clone(),
            call,
            answer,
        };
        self.worker(&script.product_key)
            .send(job)
            .await
            .map_err(|_| ScriptError::Stopped)?;
        rx.await.map_err(|_| ScriptError::Stopped)?
    }
}

/// A compiled script in its own runtime (its memory limit is the runtime's).
struct Sandbox {
    version: u64,
    deadline: Rc<Cell<Option<Instant>>>,
    context: Context,
    runtime: Runtime,
    /// What its runtime held when last measured, bytes.
    held: usize,
    /// Executions since it was loaded.
    calls: u64,
}

struct Worker {
    budget: Budget,
    sandboxes: HashMap<String, Sandbox>,
}

impl Worker {
    fn new(budget: Budget) -> Worker {
        Worker {
            budget,
            sandboxes: HashMap::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            let result = self.execute(&job.script, job.call);
            if matches!(
                result,
                Err(ScriptError::TimeBudget(_) | ScriptError::Memory(_) | ScriptError::Load(_))
            ) {
                self.sandboxes.remove(&job.script.product_key);
            }
            let _ = job.answer.send(result);
        }
    }

    fn execute(&mut self, script: &Script, call: Option<Call>) -> Result<Output, ScriptError> {
        let current = self
            .sandboxes
            .get(&script.product_key)
            .is_some_and(|s| s.version == script.version);
        if !current {
            if self.sandboxes.len() >= CACHED_PER_WORKER
                && let Some(any) = self.sandboxes.keys().next().cloned()
            {
                self.sandboxes.remove(&any);
            }
            let sandbox = Sandbox::load(script, self.budget)?;
            self.sandboxes.insert(script.product_key.clone(), sandbox);
        }
        let sandbox = self
            .sandboxes
            .get_mut(&script.product_key)
            .expect("loaded above");
        let result = match call {
            Some(call) => sandbox.call(&call, self.budget),
            None => Ok(Output::Json(sandbox.missing_functions())),
        };
        // Measuring walks the runtime's heap: after loading, then every so many executions.
        let measure = sandbox.calls.is_multiple_of(MEASURE_EVERY);
        sandbox.calls += 1;
        if measure {
            sandbox.held =
                usize::try_from(sandbox.runtime.memory_usage().memory_used_size).unwrap_or(0);
            self.trim(&script.product_key);
        }
        result
    }

    /// Drops compiled scripts other than `keep` while they hold more than the cache's bound.
    fn trim(&mut self, keep: &str) {
        let mut held: usize = self.sandboxes.values().map(|s| s.held).sum();
        while held > self.budget.cache_bytes {
            let Some(other) = self.sandboxes.keys().find(|k| *k != keep).cloned() else {
                return;
            };
            if let Some(dropped) = self.sandboxes.remove(&other) {
                held -= dropped.held;
            }
        }
    }
}

impl Sandbox {
    fn load(script: &Script, budget: Budget) -> Result<Sandbox, ScriptError> {
        let runtime = Runtime::new().map_err(|e| ScriptError::Load(e.to_string()))?;
        runtime.set_memory_limit(budget.memory_bytes);
        runtime.set_max_stack_size(STACK_BYTES);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let watched = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            watched.get().is_some_and(|d| Instant::now() >= d)
        })));
        let context = Context::full(&runtime).map_err(|e| ScriptError::Load(e.to_string()))?;
        let sandbox = Sandbox {
            version: script.version,
            deadline,
            context,
            runtime,
            held: 0,
            calls: 0,
        };
        sandbox.deadline.set(Some(Instant::now() + budget.time));
        let loaded = sandbox.context.with(|ctx| {
            ctx.eval::<(), _>(script.source.as_bytes())
                .map_err(|e| sandbox.failure(&ctx, e, "the script", budget))
        });
        sandbox.deadline.set(None);
        loaded.map_err(|e| match e {
            ScriptError::Threw { message, .. } => ScriptError::Load(message),
            other => other,
        })?;
        Ok(sandbox)
    }

    /// The entry points the script does not define as functions, as a JSON array.
    fn missing_functions(&self) -> serde_json::Value {
        self.context.with(|ctx| {
            let globals = ctx.globals();
            [UP, DOWN, TRANSFORM]
                .into_iter()
                .filter(|f| globals.get::<_, Function>(*f).is_err())
                .map(serde_json::Value::from)
                .collect()
        })
    }

    fn call(&self, call: &Call, budget: Budget) -> Result<Output, ScriptError> {
        let function = call.function();
        self.deadline.set(Some(Instant::now() + budget.time));
        let result = self.context.with(|ctx| {
            let entry: Function = ctx
                .globals()
                .get(function)
                .map_err(|_| ScriptError::Missing(function))?;
            let returned: rquickjs::Result<Value> = match call {
                Call::Up(bytes) => entry.call((signed(bytes),)),
                Call::Transform(topic, bytes) => entry.call((topic.as_str(), signed(bytes))),
                Call::Down(json) => ctx
                    .json_parse(json.to_string())
                    .and_then(|arg| entry.call((arg,))),
            };
            let value = returned.map_err(|e| self.failure(&ctx, e, function, budget))?;
            match call {
                Call::Down(_) => bytes_of(&value, function).map(Output::Bytes),
                _ => json_of(&ctx, value, function)
                    .map_err(|e| self.failure(&ctx, e, function, budget))?
                    .map(Output::Json),
            }
        });
        self.deadline.set(None);
        result
    }

    /// What an engine error means: the budget ran out, memory did, or the script threw.
    fn failure(
        &self,
        ctx: &Ctx<'_>,
        error: rquickjs::Error,
        function: &'static str,
        budget: Budget,
    ) -> ScriptError {
        if self.deadline.get().is_some_and(|d| Instant::now() >= d) {
            return ScriptError::TimeBudget(budget.time.as_millis());
        }
        let message = match error {
            rquickjs::Error::Exception => {
                let thrown = ctx.catch();
                match thrown.as_exception() {
                    Some(e) => e.message().unwrap_or_else(|| e.to_string()),
                    None if thrown.is_null() => "out of memory".to_owned(),
                    None => format!("{thrown:?}"),
                }
            }
            rquickjs::Error::Allocation => "out of memory".to_owned(),
            other => other.to_string(),
        };
        if message.contains("out of memory") {
            return ScriptError::Memory(budget.memory_bytes);
        }
        ScriptError::Threw { function, message }
    }
}

/// Bytes as Alibaba hands them to scripts: a Java `byte[]`, each a number from -128 to 127
/// (scripts mask them with `& 0xff`).
fn signed(bytes: &[u8]) -> Vec<i32> {
    bytes.iter().map(|b| i32::from(*b as i8)).collect()
}

/// An entry point's JSON result (objects and arrays; not `undefined`).
fn json_of<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    function: &'static str,
) -> rquickjs::Result<Result<serde_json::Value, ScriptError>> {
    if value.is_undefined() || value.is_null() {
        return Ok(Err(ScriptError::Output {
            function,
            what: "nothing (a JSON object is expected)".into(),
        }));
    }
    let Some(text) = ctx.json_stringify(value)? else {
        return Ok(Err(ScriptError::Output {
            function,
            what: "a value JSON cannot hold".into(),
        }));
    };
    let text = text.to_string()?;
    Ok(
        serde_json::from_str(&text).map_err(|e| ScriptError::Output {
            function,
            what: format!("invalid JSON: {e}"),
        }),
    )
}

/// A returned byte array (an Array or a typed array of numbers; each kept modulo 256, as a
/// Java byte cast does).
fn bytes_of(value: &Value<'_>, function: &'static str) -> Result<Vec<u8>, ScriptError> {
    let not_bytes = |what: &str| ScriptError::Output {
        function,
        what: format!("{what} (an array of bytes is expected)"),
    };
    let object: &Object = value.as_object().ok_or_else(|| not_bytes("no array"))?;
    let len: u32 = object
        .get("length")
        .map_err(|_| not_bytes("an object without length"))?;
    (0..len)
        .map(|i| {
            let n: f64 = object
                .get(i)
                .map_err(|_| not_bytes(&format!("a non-number at index {i}")))?;
            if !n.is_finite() {
                return Err(not_bytes(&format!("{n} at index {i}")));
            }
            Ok((n as i64) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scripts() -> Scripts {
        Scripts::start(
            1,
            Budget {
                time: Duration::from_millis(200),
                memory_bytes: 8 << 20,
                cache_bytes: 6 << 20,
            },
        )
    }

    fn script(version: u64, source: &str) -> Arc<Script> {
        Arc::new(Script {
            product_key: "a1".into(),
            version,
            source: source.into(),
        })
    }

    #[tokio::test]
    async fn entry_points_get_signed_bytes_and_give_json_and_bytes() {
        let s = scripts();
        let js = script(
            1,
            "function rawDataToProtocol(b) { return {sum: b[0] + b[1], masked: b[1] & 0xff}; }
             function protocolToRawData(j) { return [j.params.v, 300, -1]; }
             function transformPayload(t, b) { return {topic: t, n: b.length}; }",
        );
        assert_eq!(
            s.run(&js, Call::Up(vec![1, 0xff])).await,
            Ok(Output::Json(json!({"sum": 0, "masked": 255})))
        );
        assert_eq!(
            s.run(&js, Call::Down(json!({"params": {"v": 7}}))).await,
            Ok(Output::Bytes(vec![7, 44, 255]))
        );
        assert_eq!(
            s.run(&js, Call::Transform("/a/b/user/x".into(), vec![1, 2]))
                .await,
            Ok(Output::Json(json!({"topic": "/a/b/user/x", "n": 2})))
        );
        assert_eq!(s.check(&js).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn errors_name_what_went_wrong() {
        let s = scripts();
        let broken = script(1, "function rawDataToProtocol(b) { return ");
        assert!(matches!(s.check(&broken).await, Err(ScriptError::Load(_))));
        let partial = script(
            2,
            "function rawDataToProtocol(b) { throw new Error('bad frame'); }",
        );
        assert_eq!(s.check(&partial).await, Ok(vec![DOWN, TRANSFORM]));
        assert_eq!(
            s.run(&partial, Call::Up(vec![])).await,
            Err(ScriptError::Threw {
                function: UP,
                message: "bad frame".into()
            })
        );
        assert_eq!(
            s.run(&partial, Call::Down(json!({}))).await,
            Err(ScriptError::Missing(DOWN))
        );
        let shapes = script(
            3,
            "function rawDataToProtocol(b) { } function protocolToRawData(j) { return 'x'; }",
        );
        assert!(matches!(
            s.run(&shapes, Call::Up(vec![])).await,
            Err(ScriptError::Output { function: UP, .. })
        ));
        assert!(matches!(
            s.run(&shapes, Call::Down(json!({}))).await,
            Err(ScriptError::Output { function: DOWN, .. })
        ));
    }

    #[tokio::test]
    async fn endless_loops_and_allocations_are_stopped_and_the_worker_goes_on() {
        let s = scripts();
        let looping = script(1, "function rawDataToProtocol(b) { for (;;) {} }");
        assert_eq!(
            s.run(&looping, Call::Up(vec![])).await,
            Err(ScriptError::TimeBudget(200))
        );
        let hungry = Arc::new(Script {
            product_key: "a2".into(),
            version: 1,
            source: "function rawDataToProtocol(b) { var a = []; for (;;) a.push(new Array(4096).fill(b)); }"
                .into(),
        });
        assert!(matches!(
            s.run(&hungry, Call::Up(vec![1])).await,
            Err(ScriptError::Memory(_) | ScriptError::TimeBudget(_))
        ));
        let recursive = script(
            2,
            "function rawDataToProtocol(b) { return rawDataToProtocol(b); }",
        );
        assert!(matches!(
            s.run(&recursive, Call::Up(vec![])).await,
            Err(ScriptError::Threw { .. })
        ));
        let fine = script(3, "function rawDataToProtocol(b) { return {ok: true}; }");
        assert_eq!(
            s.run(&fine, Call::Up(vec![])).await,
            Ok(Output::Json(json!({"ok": true})))
        );
    }

    #[tokio::test]
    async fn the_sandbox_offers_no_io() {
        let s = scripts();
        let probe = script(
            1,
            "function rawDataToProtocol(b) {
                 return {
                     require: typeof require, os: typeof os, std: typeof std,
                     fetch: typeof fetch, timeout: typeof setTimeout,
                 };
             }",
        );
        let undefined = json!("undefined");
        assert_eq!(
            s.run(&probe, Call::Up(vec![])).await,
            Ok(Output::Json(json!({
                "require": undefined, "os": undefined, "std": undefined,
                "fetch": undefined, "timeout": undefined,
            })))
        );
    }

    #[tokio::test]
    async fn compiled_scripts_past_the_cache_bound_are_dropped() {
        let s = scripts();
        let counter = |pk: &str| {
            Arc::new(Script {
                product_key: pk.into(),
                version: 1,
                // Each load starts the count again: a count of 2 means it stayed compiled.
                source: "var n = 0; var big = new Array(300000).fill(1);
                         function rawDataToProtocol(b) { n++; return { n: n }; }"
                    .into(),
            })
        };
        let (a, b, c) = (counter("pa"), counter("pb"), counter("pc"));
        let n = async |script: &Arc<Script>| match s.run(script, Call::Up(vec![])).await {
            Ok(Output::Json(v)) => v["n"].as_u64(),
            other => panic!("{other:?}"),
        };
        assert_eq!(n(&a).await, Some(1));
        assert_eq!(
            n(&a).await,
            Some(2),
            "kept compiled while the cache has room"
        );
        n(&b).await;
        n(&c).await;
        assert_eq!(
            n(&a).await,
            Some(1),
            "dropped once two others filled the cache"
        );
    }
}
