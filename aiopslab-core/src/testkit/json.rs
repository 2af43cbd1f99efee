//! Checks that free-form JSON reads back exactly as it was accepted, from every store: the numbers at the edges
//! of `f64`, `i64` and `u64`, random documents (a seeded property check), and documents nested too deep.
//!
//! The rule: what [`NewTask::validate`] accepts, a store keeps and hands back equal — through create, get, list,
//! claim, finish, the trajectory and the export — and, serialized, to the same JSON text, number types included
//! (a float stays a float). The only rewrites are [`crate::sanitize`]'s, the same on every store. What could not
//! be read back (an `agent_config` or `metadata` nested deeper than
//! [`MAX_JSON_DEPTH`](crate::sanitize::MAX_JSON_DEPTH)) is refused by validation, naming the field, before
//! anything is written.
//!
//! The random documents come from a small seeded generator of this module rather than a property-testing crate:
//! the checks are part of the library (feature `testkit`), run by other crates' suites against real stores, so a
//! dev-only dependency cannot serve, and a fixed seed makes every run (and every failure) reproducible. Set
//! `AIOPSLAB_JSON_SEED` to explore other seeds; a failure names the seed and the case.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::support::*;
use super::StoreHarness;
use crate::export::{Episode, ExportCursor, ExportFilter};
use crate::log::{LogContext, LogLevel, NewLogEntry};
use crate::query::TaskFilter;
use crate::sanitize::{object_depth, MAX_JSON_DEPTH};
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{JsonObject, NewTask, Task, TaskId, TaskOutcome, TaskParameters, TaskResult, TerminalStatus};
use crate::trajectory::Trajectory;
use crate::worker::WorkerRegistration;

/// How many random documents [`random_json_round_trips`] tries.
pub const RANDOM_JSON_CASES: usize = 200;

/// The seed of [`random_json_round_trips`] unless `AIOPSLAB_JSON_SEED` says otherwise.
pub const DEFAULT_JSON_SEED: u64 = 0x0A10_B51A;

/// Numbers at the edges: the largest and smallest floats, subnormals, whole floats beyond 2^53 (which some stores
/// print back as integers), integers at the ends of `i64` and `u64`, negative zero. Issue 11's
/// `-1.7976931348623155e+308` first.
pub fn edge_numbers() -> Vec<Value> {
    let floats = [
        -1.7976931348623155e308,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        2.225073858507201e-308,
        1e16,
        -1e16,
        1e15,
        9007199254740993.0,
        9007199254740992.0,
        4.611686018427388e18,
        1.8446744073709552e19,
        -9.223372036854776e18,
        1e22,
        1e300,
        0.1,
        0.30000000000000004,
        1.5e-7,
        123456789.12345678,
        -2.5e-300,
        2.0,
        0.0,
        -0.0,
    ];
    let mut numbers: Vec<Value> = floats.iter().map(|f| json!(f)).collect();
    numbers.extend([
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i64::MAX as u64 + 1),
        json!(9007199254740993_u64),
    ]);
    numbers
}

/// What a store keeps of a JSON value: NUL → U+FFFD in strings and keys (a key already spelled with U+FFFD wins a
/// collision), `-0.0` → `0.0`. Written here again, apart from the stores' code, so the checks test it.
fn kept(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => json!(0.0),
        Value::Array(items) => Value::Array(items.iter().map(kept).collect()),
        Value::Object(map) => Value::Object(kept_object(map)),
        other => other.clone(),
    }
}

fn kept_object(map: &JsonObject) -> JsonObject {
    let mut out = Map::new();
    for (key, value) in map.iter().filter(|(key, _)| key.contains('\0')) {
        out.insert(key.replace('\0', "\u{FFFD}"), kept(value));
    }
    for (key, value) in map.iter().filter(|(key, _)| !key.contains('\0')) {
        out.insert(key.clone(), kept(value));
    }
    out
}

fn kept_parameters(parameters: &TaskParameters) -> TaskParameters {
    TaskParameters {
        agent_config: kept_object(&parameters.agent_config),
        metadata: kept_object(&parameters.metadata),
        ..parameters.clone()
    }
}

/// Asserts `got` equals `want` and serializes to the same text (so `1e16` did not come back `10000000000000000`,
/// nor `-0.0` as `0.0` on one store only).
#[track_caller]
fn assert_same<T: PartialEq + Serialize + std::fmt::Debug>(got: &T, want: &T, what: &str) {
    let got_text = serde_json::to_string(got).expect("serializes");
    let want_text = serde_json::to_string(want).expect("serializes");
    if got != want || got_text != want_text {
        let first = got_text
            .chars()
            .zip(want_text.chars())
            .position(|(a, b)| a != b)
            .unwrap_or(got_text.len().min(want_text.len()));
        let around = |text: &str| {
            text.chars()
                .skip(first.saturating_sub(40))
                .take(120)
                .collect::<String>()
        };
        panic!(
            "{what}: read back differently from what was accepted; first difference at character {first}:\n  \
             got:  …{}…\n  want: …{}…",
            around(&got_text),
            around(&want_text)
        );
    }
}

/// Runs one accepted task through every read and write that carries its JSON: create, get, list (by problem),
/// claim, a log entry, the trajectory and the finish; returns the finished task.
async fn round_trip<S: TaskStore>(store: &S, worker: &str, new: NewTask, what: &str) -> Task {
    let problem_id = new.problem_id.clone();
    let spec = spec(new);
    let want = kept_parameters(&spec.parameters);
    let raw_config = spec.parameters.agent_config.clone();
    let raw_metadata = spec.parameters.metadata.clone();
    let created = store
        .create_task(spec)
        .await
        .unwrap_or_else(|e| panic!("{what}: create_task of an accepted task failed: {e}"));
    assert_same(&created.parameters, &want, &format!("{what}: create_task"));
    assert_same(
        &get(store, created.id).await.parameters,
        &want,
        &format!("{what}: get_task"),
    );
    let page = store
        .list_tasks(&TaskQuery::new(TaskFilter {
            problem_id: Some(problem_id),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("{what}: list_tasks failed: {e}"));
    assert_eq!(page.tasks.len(), 1, "{what}: list_tasks finds the task");
    assert_same(&page.tasks[0].parameters, &want, &format!("{what}: list_tasks"));
    let claimed = store
        .claim(&request_task(worker, created.id))
        .await
        .unwrap_or_else(|e| panic!("{what}: claim failed: {e}"))
        .unwrap_or_else(|| panic!("{what}: the task was not claimable"));
    assert_same(&claimed.parameters, &want, &format!("{what}: claim"));

    let lease = claimed.lease_token();
    let details = Value::Object(raw_metadata.clone());
    let entry = NewLogEntry {
        level: LogLevel::Info,
        message: "round trip".into(),
        context: LogContext {
            step: Some(1),
            action: None,
            details: Some(details.clone()),
        },
    };
    store
        .append_logs(lease, vec![entry])
        .await
        .unwrap_or_else(|e| panic!("{what}: append_logs failed: {e}"));
    let logs = store
        .get_logs(created.id, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: get_logs failed: {e}"));
    assert_same(
        &logs[0].context.details,
        &Some(kept(&details)),
        &format!("{what}: a log entry's context"),
    );
    let trajectory = Trajectory {
        task_id: created.id,
        evaluation: raw_config.clone(),
        metadata: raw_metadata.clone(),
        reward: Some(1.0),
        ..Trajectory::default()
    };
    store
        .save_trajectory(lease, trajectory)
        .await
        .unwrap_or_else(|e| panic!("{what}: save_trajectory failed: {e}"));
    let saved = store
        .get_trajectory(created.id)
        .await
        .unwrap_or_else(|e| panic!("{what}: get_trajectory failed: {e}"))
        .unwrap_or_else(|| panic!("{what}: the trajectory is missing"));
    assert_same(
        &(&saved.evaluation, &saved.metadata),
        &(&kept_object(&raw_config), &kept_object(&raw_metadata)),
        &format!("{what}: the trajectory's evaluation and metadata"),
    );
    let outcome = TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult {
            logs: Vec::new(),
            metrics: raw_config.clone(),
            output: raw_metadata.clone(),
        }),
        error: None,
    };
    let finished = store
        .finish(lease, outcome)
        .await
        .unwrap_or_else(|e| panic!("{what}: finish failed: {e}"));
    let want_result = TaskResult {
        logs: Vec::new(),
        metrics: kept_object(&raw_config),
        output: kept_object(&raw_metadata),
    };
    assert_same(&finished.result, &Some(want_result.clone()), &format!("{what}: finish"));
    let read = get(store, created.id).await;
    assert_same(
        &(&read.parameters, &read.result),
        &(&want, &Some(want_result)),
        &format!("{what}: get_task after finish"),
    );
    read
}

/// Every episode of the export, in order.
async fn export_all<S: TaskStore>(store: &S) -> Vec<Episode> {
    let mut all = Vec::new();
    let mut cursor: Option<ExportCursor> = None;
    loop {
        let page = store
            .export_episodes(&ExportRequest::new(ExportFilter::default(), 100).after(cursor))
            .await
            .expect("export_episodes");
        let Some(last) = page.last() else {
            return all;
        };
        cursor = Some(last.cursor());
        all.extend(page);
    }
}

/// Asserts the export holds each of `tasks`, as stored, with its trajectory's evaluation and metadata.
async fn assert_exported<S: TaskStore>(store: &S, tasks: &[Task], what: &str) {
    let episodes = export_all(store).await;
    let by_id: std::collections::HashMap<TaskId, &Episode> = episodes.iter().map(|e| (e.task.id, e)).collect();
    for task in tasks {
        let episode = by_id
            .get(&task.id)
            .unwrap_or_else(|| panic!("{what}: task {} is missing from the export", task.id));
        assert_same(&episode.task, task, &format!("{what}: the exported task {}", task.id));
        let want = task.result.as_ref().expect("finished with a result");
        assert_same(
            &(&episode.trajectory.evaluation, &episode.trajectory.metadata),
            &(&want.metrics, &want.output),
            &format!("{what}: the exported trajectory of {}", task.id),
        );
    }
}

/// The numbers at the edges of `f64`, `i64` and `u64` (issue 11's `-1.7976931348623155e+308` among them), in
/// `agent_config` and `metadata`, in objects and arrays, read back identically everywhere: create, get, list,
/// claim, log context, trajectory, finish, export; and in a worker's registration metadata. `-0.0` is kept as
/// `0.0` (no store keeps the sign of zero alike).
pub async fn edge_numbers_read_back_identically<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let mut registration = WorkerRegistration::new("w-numbers", "default");
    registration.metadata = object(json!({"numbers": edge_numbers()}));
    let worker = store
        .register_worker(registration.clone())
        .await
        .expect("register_worker");
    assert_same(
        &worker.metadata,
        &kept_object(&registration.metadata),
        "a worker's metadata",
    );
    assert_same(
        &store.get_worker("w-numbers").await.expect("get_worker").metadata,
        &kept_object(&registration.metadata),
        "get_worker",
    );
    let mut finished = Vec::new();
    for (i, number) in edge_numbers().into_iter().enumerate() {
        let new = NewTask {
            agent_config: Some(object(
                json!({"temperature": number, "nested": {"list": [number, [number]]}}),
            )),
            metadata: Some(object(json!({"value": number}))),
            ..NewTask::new(format!("edge-number-{i}"))
        };
        finished.push(round_trip(&store, "w-numbers", new, &format!("the number {number}")).await);
    }
    let all = NewTask {
        agent_config: Some(object(json!({"all": edge_numbers()}))),
        metadata: Some(object(json!({"all": edge_numbers()}))),
        ..NewTask::new("edge-numbers-all")
    };
    finished.push(round_trip(&store, "w-numbers", all, "every edge number at once").await);
    assert_exported(&store, &finished, "edge numbers").await;
}

/// A seeded generator of JSON documents that lean towards what breaks stores: edge numbers, NUL and other
/// control characters, escapes, non-ASCII text, empty and colliding keys, and now and then nesting right at, or
/// just past, [`MAX_JSON_DEPTH`].
struct JsonGen {
    rng: SmallRng,
}

impl JsonGen {
    fn number(&mut self) -> Value {
        match self.rng.gen_range(0..6) {
            0 | 1 => {
                let edges = edge_numbers();
                edges[self.rng.gen_range(0..edges.len())].clone()
            }
            2 => loop {
                // Any finite float, bit pattern uniform.
                let f = f64::from_bits(self.rng.gen());
                if f.is_finite() {
                    break json!(f);
                }
            },
            3 => {
                // A whole float of any size.
                let digits: i64 = self.rng.gen_range(-(1 << 53)..(1 << 53));
                let scale = 10f64.powi(self.rng.gen_range(0..300));
                let f = digits as f64 * scale;
                json!(if f.is_finite() { f } else { 1e300 })
            }
            4 => json!(self.rng.gen::<i64>()),
            _ => json!(self.rng.gen::<u64>()),
        }
    }

    fn text(&mut self) -> String {
        const CHARS: &[char] = &[
            'a', 'b', 'Z', '0', ' ', '"', '\\', '/', '\0', '\0', '\n', '\t', '\u{1}', '\u{7f}', 'é', '€', '😀',
            '\u{FFFD}', '\u{2028}', '\u{feff}',
        ];
        let len = self.rng.gen_range(0..10);
        (0..len).map(|_| CHARS[self.rng.gen_range(0..CHARS.len())]).collect()
    }

    fn key(&mut self) -> String {
        // Few distinct keys, so NUL and U+FFFD spellings of one key meet now and then.
        const KEYS: &[&str] = &["k", "k\0", "k\u{FFFD}", "", "\0", "temperature", "model"];
        if self.rng.gen_bool(0.5) {
            KEYS[self.rng.gen_range(0..KEYS.len())].to_string()
        } else {
            self.text()
        }
    }

    fn value(&mut self, depth_left: usize) -> Value {
        let containers = if depth_left > 0 { 8 } else { 6 };
        match self.rng.gen_range(0..containers) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.gen()),
            2 | 3 => self.number(),
            4 | 5 => Value::String(self.text()),
            6 => Value::Array(
                (0..self.rng.gen_range(0..4))
                    .map(|_| self.value(depth_left - 1))
                    .collect(),
            ),
            _ => Value::Object(self.object(depth_left - 1)),
        }
    }

    fn object(&mut self, depth_left: usize) -> JsonObject {
        let mut object = Map::new();
        for _ in 0..self.rng.gen_range(0..5) {
            let key = self.key();
            let value = self.value(depth_left);
            object.insert(key, value);
        }
        object
    }

    /// A top-level document: usually small; one in ten nested to about [`MAX_JSON_DEPTH`].
    fn document(&mut self) -> JsonObject {
        let mut object = self.object(4);
        if self.rng.gen_ratio(1, 10) {
            // A chain giving the object a depth of MAX_JSON_DEPTH - 1 ..= MAX_JSON_DEPTH + 1.
            let levels = MAX_JSON_DEPTH - 2 + self.rng.gen_range(0..3);
            let leaf = self.value(0);
            let chain = (0..levels).fold(leaf, |inner, i| {
                if i % 2 == 0 {
                    Value::Array(vec![inner])
                } else {
                    json!({ "d": inner })
                }
            });
            object.insert("deep".into(), chain);
        }
        object
    }
}

/// Property: random JSON in `agent_config` and `metadata` ([`RANDOM_JSON_CASES`] documents from a seeded
/// generator) is either refused by validation — only for nesting deeper than [`MAX_JSON_DEPTH`], naming the
/// field — or read back identically through create → get → list → claim → log → trajectory → finish → export.
pub async fn random_json_round_trips<H: StoreHarness>(h: &H) {
    let seed = std::env::var("AIOPSLAB_JSON_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_JSON_SEED);
    let store = h.store(suite_policy()).await;
    store
        .register_worker(WorkerRegistration::new("w-random", "default"))
        .await
        .expect("register_worker");
    let mut generator = JsonGen {
        rng: SmallRng::seed_from_u64(seed),
    };
    let (mut refused, mut finished) = (0, Vec::new());
    for case in 0..RANDOM_JSON_CASES {
        let what = format!("seed {seed} (AIOPSLAB_JSON_SEED), case {case}");
        let (config, metadata) = (generator.document(), generator.document());
        let too_deep = [("agent_config", &config), ("metadata", &metadata)]
            .into_iter()
            .find(|(_, object)| object_depth(object) > MAX_JSON_DEPTH)
            .map(|(field, _)| field);
        let new = NewTask {
            agent_config: Some(config),
            metadata: Some(metadata),
            ..NewTask::new(format!("random-json-{case}"))
        };
        match (new.clone().validate(), too_deep) {
            (Err(error), Some(field)) => {
                assert_eq!(error.field, field, "{what}: the refusal names the field");
                refused += 1;
            }
            (Err(error), None) => panic!("{what}: a document within the limits was refused: {error}\n{new:?}"),
            (Ok(_), Some(field)) => panic!("{what}: {field} deeper than {MAX_JSON_DEPTH} levels was accepted"),
            (Ok(_), None) => finished.push(round_trip(&store, "w-random", new, &what).await),
        }
    }
    assert!(
        refused > 0 && refused < RANDOM_JSON_CASES / 4,
        "seed {seed}: the generator should produce a few too-deep documents, made {refused}"
    );
    assert_exported(&store, &finished, &format!("seed {seed}")).await;
}

/// JSON that a worker writes (a log context, a result, a trajectory) nested deeper than [`MAX_JSON_DEPTH`] is
/// not refused (a run's output must not be lost) but cut alike by every store: the levels past the limit are
/// kept as their JSON text, a string.
pub async fn deep_json_from_workers_is_cut_alike<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("deep")).await;
    let lease = claim_some(&store, &request_task("w1", task.id)).await.lease_token();
    let nested = |levels: usize| (0..levels).fold(json!("leaf\u{0}"), |inner, _| json!([inner]));
    let deep = nested(MAX_JSON_DEPTH + 5);
    // What every store keeps: MAX_JSON_DEPTH levels, then the rest as text.
    let cut = (0..MAX_JSON_DEPTH).fold(
        Value::String(nested(5).to_string().replace("\\u0000", "\u{FFFD}")),
        |inner, _| json!([inner]),
    );
    let entry = NewLogEntry {
        level: LogLevel::Info,
        message: "deep".into(),
        context: LogContext {
            step: None,
            action: None,
            details: Some(deep.clone()),
        },
    };
    store.append_logs(lease, vec![entry]).await.expect("append_logs");
    let logs = store.get_logs(task.id, &Default::default()).await.expect("get_logs");
    assert_same(&logs[0].context.details, &Some(cut.clone()), "a deep log context");
    let mut metrics = Map::new();
    metrics.insert("deep".into(), deep);
    let outcome = TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult {
            metrics,
            ..TaskResult::default()
        }),
        error: None,
    };
    let finished = store.finish(lease, outcome).await.expect("finish");
    // The field is `metrics`, an object: its own level counts, so its value keeps one level less.
    let cut_in_object = (0..MAX_JSON_DEPTH - 1).fold(
        Value::String(nested(6).to_string().replace("\\u0000", "\u{FFFD}")),
        |inner, _| json!([inner]),
    );
    let kept_metrics = finished.result.as_ref().map(|r| r.metrics["deep"].clone());
    assert_same(&kept_metrics, &Some(cut_in_object), "a deep result metric");
    assert_eq!(get(&store, task.id).await, finished, "the task reads back");
}
