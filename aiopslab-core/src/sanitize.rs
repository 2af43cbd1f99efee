//! What every store does to a value on its way in, so that it reads back the
//! same from any store.
//!
//! Some values a Rust program can hold have no faithful form in a durable
//! store: PostgreSQL's `text` and `jsonb` cannot hold the NUL character
//! (`\u0000`, which process output keeps through `String::from_utf8_lossy`),
//! `numeric` has no negative zero, and JSON has no NaN. A store that refused
//! them would lose a whole log batch or a finished result; one that kept
//! them (the in-memory store) would answer differently from the other. So
//! every store applies [`Sanitize`] to everything it persists, before it
//! writes anything, and they all keep the same thing:
//!
//! - NUL becomes U+FFFD (the replacement character), in every string, in
//!   every JSON string *and* object key, at any depth. (When a key so
//!   rewritten meets a key already spelled with U+FFFD, the latter wins.)
//! - A JSON `-0.0` becomes `0.0`; a non-finite `reward` becomes `None`.
//! - A JSON array or object nested more than [`MAX_JSON_DEPTH`] levels deep
//!   inside a field is replaced by its compact JSON text (a string), so no
//!   stored document is too deep to be read back inside a response (JSON
//!   parsers, serde_json's included, stop at 128 levels). Client input never
//!   gets that far: [`NewTask::validate`](crate::NewTask::validate) refuses
//!   an `agent_config` or `metadata` deeper than that, naming the field.
//!
//! Every implementation destructures its type completely, so a field added
//! later does not compile until someone decides how it is sanitized.

use serde_json::{Map, Value};
use std::borrow::Cow;

use crate::batch::{BatchSpec, IdempotencyKey};
use crate::export::ExportFilter;
use crate::log::{LogContext, NewLogEntry};
use crate::query::{TaskFilter, WorkerFilter};
use crate::store::ClaimRequest;
use crate::task::{ErrorDetails, TaskOutcome, TaskParameters, TaskResult, TaskSpec};
use crate::trajectory::{LlmCall, Trajectory, TrajectoryMessage};
use crate::webhook::WebhookAttemptReport;
use crate::worker::{WorkerCapabilities, WorkerRegistration};

/// What NUL is replaced by: U+FFFD REPLACEMENT CHARACTER.
pub const NUL_REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// How many levels of JSON arrays and objects a stored field may nest (the
/// field's own object or array counts as the first level).
pub const MAX_JSON_DEPTH: usize = 64;

/// A value a store persists, made storable the same way by every store.
pub trait Sanitize {
    /// Rewrites, in place, what no store could keep faithfully (see the module docs).
    fn sanitize(&mut self);
}

/// `value`, sanitized.
pub fn sanitized<T: Sanitize>(mut value: T) -> T {
    value.sanitize();
    value
}

/// `text` with every NUL replaced by U+FFFD; borrowed when it has none.
pub fn nul_free(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// How many levels of arrays and objects `value` nests (0 for a scalar).
pub fn json_depth(value: &Value) -> usize {
    // Iterative, so a hostile document cannot overflow the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

/// How many levels of arrays and objects a JSON object nests (at least 1).
pub fn object_depth(object: &Map<String, Value>) -> usize {
    1 + object.values().map(json_depth).max().unwrap_or(0)
}

impl Sanitize for String {
    fn sanitize(&mut self) {
        if self.contains('\0') {
            *self = self.replace('\0', "\u{FFFD}");
        }
    }
}

impl<T: Sanitize> Sanitize for Option<T> {
    fn sanitize(&mut self) {
        if let Some(value) = self {
            value.sanitize();
        }
    }
}

impl<T: Sanitize> Sanitize for Vec<T> {
    fn sanitize(&mut self) {
        for value in self {
            value.sanitize();
        }
    }
}

impl<A: Sanitize, B: Sanitize> Sanitize for (A, B) {
    fn sanitize(&mut self) {
        self.0.sanitize();
        self.1.sanitize();
    }
}

impl Sanitize for Value {
    fn sanitize(&mut self) {
        sanitize_value(self, 1, MAX_JSON_DEPTH);
    }
}

impl Sanitize for Map<String, Value> {
    fn sanitize(&mut self) {
        sanitize_map(self, 1, MAX_JSON_DEPTH);
    }
}

/// Sanitizes `value`, which sits at nesting `level` if it is a container; a
/// container deeper than `limit` becomes its JSON text.
fn sanitize_value(value: &mut Value, level: usize, limit: usize) {
    match value {
        Value::String(text) => text.sanitize(),
        Value::Number(number) => {
            if number.is_f64() && number.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) {
                *value = Value::from(0.0);
            }
        }
        Value::Array(_) | Value::Object(_) if level > limit => {
            // Sanitized whole first, so its text holds no NUL escape and no -0 either.
            sanitize_value(value, level, usize::MAX);
            *value = Value::String(value.to_string());
        }
        Value::Array(items) => {
            for item in items {
                sanitize_value(item, level + 1, limit);
            }
        }
        Value::Object(map) => sanitize_map(map, level, limit),
        Value::Null | Value::Bool(_) => {}
    }
}

/// Sanitizes the keys and values of `map`, an object at nesting `level`.
fn sanitize_map(map: &mut Map<String, Value>, level: usize, limit: usize) {
    if map.keys().any(|key| key.contains('\0')) {
        let entries = std::mem::take(map);
        let (clean, dirty): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(key, _)| !key.contains('\0'));
        // Rewritten keys first, so a key already spelled with U+FFFD wins a collision.
        for (mut key, value) in dirty {
            key.sanitize();
            map.insert(key, value);
        }
        map.extend(clean);
    }
    for value in map.values_mut() {
        sanitize_value(value, level + 1, limit);
    }
}

impl Sanitize for TaskSpec {
    fn sanitize(&mut self) {
        let TaskSpec {
            problem_id,
            parameters,
            experiment,
        } = self;
        problem_id.sanitize();
        parameters.sanitize();
        experiment.sanitize();
    }
}

impl Sanitize for TaskParameters {
    fn sanitize(&mut self) {
        let TaskParameters {
            agent_config,
            max_steps: _,
            timeout_minutes: _,
            priority: _,
            callback_url,
            metadata,
            backend_type,
            max_retries: _,
        } = self;
        agent_config.sanitize();
        callback_url.sanitize();
        metadata.sanitize();
        backend_type.sanitize();
    }
}

impl Sanitize for BatchSpec {
    fn sanitize(&mut self) {
        let BatchSpec {
            group_id: _,
            specs,
            policy: _,
        } = self;
        specs.sanitize();
    }
}

impl Sanitize for IdempotencyKey {
    fn sanitize(&mut self) {
        let IdempotencyKey { key, fingerprint } = self;
        key.sanitize();
        fingerprint.sanitize();
    }
}

impl Sanitize for NewLogEntry {
    fn sanitize(&mut self) {
        let NewLogEntry {
            level: _,
            message,
            context,
        } = self;
        message.sanitize();
        context.sanitize();
    }
}

impl Sanitize for LogContext {
    fn sanitize(&mut self) {
        let LogContext {
            step: _,
            action,
            details,
        } = self;
        action.sanitize();
        details.sanitize();
    }
}

impl Sanitize for TrajectoryMessage {
    fn sanitize(&mut self) {
        let TrajectoryMessage { role, content } = self;
        role.sanitize();
        content.sanitize();
    }
}

impl Sanitize for LlmCall {
    fn sanitize(&mut self) {
        let LlmCall {
            step: _,
            request,
            response,
            model,
            sampling,
            usage: _,
            latency_ms: _,
            logprobs,
            token_ids,
            prompt_token_ids,
            model_version: _,
        } = self;
        request.sanitize();
        response.sanitize();
        model.sanitize();
        sampling.sanitize();
        logprobs.sanitize();
        token_ids.sanitize();
        prompt_token_ids.sanitize();
    }
}

impl Sanitize for Trajectory {
    fn sanitize(&mut self) {
        let Trajectory {
            task_id: _,
            messages,
            llm_calls,
            reward,
            evaluation,
            metadata,
            outcome,
            model_version,
        } = self;
        // The labels are the reader's, from the task (Trajectory::label): whatever a writer sent is not kept.
        *outcome = None;
        *model_version = None;
        messages.sanitize();
        llm_calls.sanitize();
        // JSON has no NaN or infinity (serde_json writes them as null), and no store keeps -0 alike.
        *reward = reward.filter(|r| r.is_finite()).map(|r| if r == 0.0 { 0.0 } else { r });
        evaluation.sanitize();
        metadata.sanitize();
    }
}

impl Sanitize for TaskOutcome {
    fn sanitize(&mut self) {
        let TaskOutcome {
            status: _,
            result,
            error,
        } = self;
        result.sanitize();
        error.sanitize();
    }
}

impl Sanitize for TaskResult {
    fn sanitize(&mut self) {
        let TaskResult { logs, metrics, output } = self;
        logs.sanitize();
        metrics.sanitize();
        output.sanitize();
    }
}

impl Sanitize for ErrorDetails {
    fn sanitize(&mut self) {
        let ErrorDetails { code, message } = self;
        code.sanitize();
        message.sanitize();
    }
}

impl Sanitize for WorkerRegistration {
    fn sanitize(&mut self) {
        let WorkerRegistration {
            id,
            backend_type,
            capabilities,
            metadata,
            instance_id,
        } = self;
        id.sanitize();
        instance_id.sanitize();
        backend_type.sanitize();
        capabilities.sanitize();
        metadata.sanitize();
    }
}

impl Sanitize for WorkerCapabilities {
    fn sanitize(&mut self) {
        let WorkerCapabilities {
            max_parallel_tasks: _,
            supported_problems,
        } = self;
        supported_problems.sanitize();
    }
}

impl Sanitize for crate::store::FinalReport {
    fn sanitize(&mut self) {
        let crate::store::FinalReport {
            logs,
            trajectory,
            outcome,
        } = self;
        logs.sanitize();
        if let Some(trajectory) = trajectory {
            trajectory.sanitize();
        }
        outcome.sanitize();
    }
}

impl Sanitize for ClaimRequest {
    fn sanitize(&mut self) {
        let ClaimRequest {
            worker_id,
            backend_type,
            supported_problems,
            task_id: _,
            max_tasks: _,
        } = self;
        worker_id.sanitize();
        backend_type.sanitize();
        supported_problems.sanitize();
    }
}

impl Sanitize for WebhookAttemptReport {
    fn sanitize(&mut self) {
        let WebhookAttemptReport {
            status_code: _,
            error,
            duration_ms: _,
            retry_after: _,
        } = self;
        error.sanitize();
    }
}

impl Sanitize for TaskFilter {
    fn sanitize(&mut self) {
        let TaskFilter {
            status: _,
            problem_id,
            worker_id,
            backend_type,
            group_id: _,
            experiment,
        } = self;
        problem_id.sanitize();
        worker_id.sanitize();
        backend_type.sanitize();
        experiment.sanitize();
    }
}

impl Sanitize for WorkerFilter {
    fn sanitize(&mut self) {
        let WorkerFilter {
            status: _,
            backend_type,
        } = self;
        backend_type.sanitize();
    }
}

impl Sanitize for ExportFilter {
    fn sanitize(&mut self) {
        let ExportFilter {
            status: _,
            problem_ids,
            model,
            metadata,
            created_after: _,
            created_before: _,
            outcomes: _,
            model_version: _,
            min_model_version: _,
        } = self;
        problem_ids.sanitize();
        model.sanitize();
        metadata.sanitize();
    }
}

/// Borrows `value` when it needs no change, else sanitizes a copy (for the
/// read paths, whose arguments arrive by reference and rarely hold a NUL).
pub fn sanitized_ref<'a, T: Sanitize + Clone + PartialEq>(value: &'a T) -> Cow<'a, T> {
    let clean = sanitized(value.clone());
    if &clean == value {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        let mut text = String::from("a\0b\0");
        text.sanitize();
        assert_eq!(text, "a\u{FFFD}b\u{FFFD}");
        assert_eq!(nul_free("plain"), Cow::Borrowed("plain"));
        assert_eq!(nul_free("x\0"), "x\u{FFFD}");

        let mut value = json!({"k\u{0}ey": ["v\u{0}", {"deep\u{0}": "x\u{0}y"}], "ok": 1});
        value.sanitize();
        assert_eq!(
            value,
            json!({"k\u{FFFD}ey": ["v\u{FFFD}", {"deep\u{FFFD}": "x\u{FFFD}y"}], "ok": 1})
        );
    }

    #[test]
    fn a_key_spelled_with_the_replacement_wins_a_collision() {
        let mut value = json!({"a\u{0}": 1, "a\u{FFFD}": 2});
        value.sanitize();
        assert_eq!(value, json!({"a\u{FFFD}": 2}));
    }

    #[test]
    fn negative_zero_and_non_finite_rewards() {
        let mut value = json!([-0.0, 0.0, -1.5, 0, -0]);
        value.sanitize();
        assert_eq!(value.to_string(), "[0.0,0.0,-1.5,0,0]");
        let mut trajectory = Trajectory {
            reward: Some(f64::NAN),
            ..Trajectory::default()
        };
        trajectory.sanitize();
        assert_eq!(trajectory.reward, None);
        trajectory.reward = Some(-0.0);
        trajectory.sanitize();
        assert!(trajectory.reward.is_some_and(|r| r.is_sign_positive()));
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("leaf\u{0}"), |inner, _| json!([inner]))
    }

    #[test]
    fn depth_is_counted_in_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert_eq!(json_depth(&nested(1000)), 1000);
        assert_eq!(object_depth(&Map::new()), 1);
    }

    #[test]
    fn too_deep_subtrees_become_their_text() {
        let mut ok = nested(MAX_JSON_DEPTH);
        ok.sanitize();
        assert_eq!(json_depth(&ok), MAX_JSON_DEPTH, "{MAX_JSON_DEPTH} levels are kept");

        let mut deep = nested(MAX_JSON_DEPTH + 3);
        deep.sanitize();
        assert_eq!(json_depth(&deep), MAX_JSON_DEPTH, "deeper levels are cut");
        let mut cursor = &deep;
        for _ in 0..MAX_JSON_DEPTH {
            cursor = &cursor[0];
        }
        assert_eq!(
            cursor,
            &json!("[[[\"leaf\u{FFFD}\"]]]"),
            "the cut subtree is kept as text"
        );
    }

    #[test]
    fn borrowed_when_clean() {
        let filter = TaskFilter {
            problem_id: Some("p".into()),
            ..TaskFilter::default()
        };
        assert!(matches!(sanitized_ref(&filter), Cow::Borrowed(_)));
        let dirty = TaskFilter {
            problem_id: Some("p\0".into()),
            ..TaskFilter::default()
        };
        assert_eq!(sanitized_ref(&dirty).problem_id.as_deref(), Some("p\u{FFFD}"));
    }
}
