//! The served OpenAPI document and the server agree: for each value below the
//! document's verdict (the JSON Schema of the parameter, header or body it is
//! sent as) equals the server's (a 400 or not), over both stores. These are
//! the disagreements schemathesis found (`scripts/schemathesis.sh`): the
//! export's `metadata=key:value` filter, the `Idempotency-Key` character set,
//! batch bodies such as `{"task": null, "tasks": []}`, UUIDs and RFC 3339
//! instants (by what their parsers take, not `format`), the export's `after`
//! and `format`, and text filters' `maxLength` in characters.

mod api_support;

use api_support::{app, Backing};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const UUID: &str = "550e8400-e29b-41d4-a716-446655440000";

/// A small JSON Schema evaluator: the keywords the document uses on request
/// values (`format` is an annotation and ignored, as JSON Schema says).
struct Validator<'a> {
    doc: &'a Value,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
                self.resolve(&self.doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    fn is_valid(&self, schema: &Value, value: &Value) -> bool {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                other => panic!("unexpected type {other}"),
            };
            if !types.iter().any(|t| has_type(value, t)) {
                return false;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return false;
            }
        }
        if let Some(items) = schema.get("oneOf").and_then(Value::as_array) {
            if items.iter().filter(|item| self.is_valid(item, value)).count() != 1 {
                return false;
            }
        }
        if let Some(items) = schema.get("anyOf").and_then(Value::as_array) {
            if !items.iter().any(|item| self.is_valid(item, value)) {
                return false;
            }
        }
        if let Some(items) = schema.get("allOf").and_then(Value::as_array) {
            if !items.iter().all(|item| self.is_valid(item, value)) {
                return false;
            }
        }
        match value {
            Value::String(text) => self.string_is_valid(schema, text),
            Value::Number(_) => number_is_valid(schema, value),
            Value::Array(items) => {
                let len = items.len() as u64;
                if schema
                    .get("minItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|min| len < min)
                    || schema
                        .get("maxItems")
                        .and_then(Value::as_u64)
                        .is_some_and(|max| len > max)
                {
                    return false;
                }
                match schema.get("items") {
                    Some(item_schema) => items.iter().all(|item| self.is_valid(item_schema, item)),
                    None => true,
                }
            }
            Value::Object(object) => {
                let required = schema.get("required").and_then(Value::as_array);
                if required
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|name| !object.contains_key(name))
                {
                    return false;
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                object.iter().all(
                    |(name, item)| match properties.and_then(|properties| properties.get(name)) {
                        Some(property) => self.is_valid(property, item),
                        None => match schema.get("additionalProperties") {
                            Some(Value::Bool(allowed)) => *allowed,
                            Some(additional) => self.is_valid(additional, item),
                            None => true,
                        },
                    },
                )
            }
            Value::Null | Value::Bool(_) => true,
        }
    }

    fn string_is_valid(&self, schema: &Value, text: &str) -> bool {
        // JSON Schema counts characters (code points), not bytes.
        let len = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| len < min)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|max| len > max)
        {
            return false;
        }
        match schema.get("pattern").and_then(Value::as_str) {
            Some(pattern) => regex::Regex::new(pattern)
                .unwrap_or_else(|e| panic!("the document's pattern {pattern:?} does not compile: {e}"))
                .is_match(text),
            None => true,
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        // JSON Schema counts 3.0 as an integer.
        "integer" => {
            value.as_i64().is_some() || value.as_u64().is_some() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        other => panic!("unknown type {other}"),
    }
}

/// Compares as 128-bit integers where both sides are integers, so that
/// 2^63 is above a `maximum` of 2^63 - 1 (as floats they are equal).
fn number_is_valid(schema: &Value, value: &Value) -> bool {
    fn wide(n: &Value) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    let below = |bound: &Value| match (wide(value), wide(bound)) {
        (Some(v), Some(b)) => v < b,
        _ => value.as_f64() < bound.as_f64(),
    };
    let above = |bound: &Value| match (wide(value), wide(bound)) {
        (Some(v), Some(b)) => v > b,
        _ => value.as_f64() > bound.as_f64(),
    };
    !(schema.get("minimum").is_some_and(below) || schema.get("maximum").is_some_and(above))
}

/// One request, sent through the router in-process.
async fn send(router: &Router, method: &str, uri: &str, headers: &[(&str, &[u8])], body: Option<&Value>) -> StatusCode {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).expect("a valid request"))
        .await
        .expect("the router answers");
    let status = response.status();
    // Read the body to the end, so a streamed answer (the export) finishes.
    let _ = response.into_body().collect().await;
    status
}

/// The schema of parameter `name` of `method path`.
fn parameter_schema<'d>(doc: &'d Value, path: &str, method: &str, name: &str) -> &'d Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .and_then(|parameters| parameters.iter().find(|p| p["name"] == name))
        .map(|parameter| &parameter["schema"])
        .unwrap_or_else(|| panic!("{method} {path} documents no parameter {name}"))
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("encodable")
}

/// Asserts that the server refuses a value with a 400 exactly when the
/// document says it is invalid.
#[track_caller]
fn agree(what: &str, documented_valid: bool, status: StatusCode) {
    let accepted = status != StatusCode::BAD_REQUEST;
    assert_eq!(
        documented_valid,
        accepted,
        "{what}: the document says {}, the server answered {status}",
        if documented_valid { "valid" } else { "invalid" }
    );
}

async fn the_document_describes_what_the_server_does(backing: Backing) {
    let router = app(backing.store.clone());
    let doc: Value = {
        let response = router
            .clone()
            .oneshot(Request::get("/openapi.json").body(Body::empty()).expect("a request"))
            .await
            .expect("an answer");
        serde_json::from_slice(&response.into_body().collect().await.expect("a body").to_bytes()).expect("JSON")
    };
    let validator = Validator { doc: &doc };

    // The export's query parameters.
    let cursor = format!("2025-09-12T10:00:00Z,{UUID}");
    let padded_cursor = format!(" 2025-09-12T10:00:00.5+01:00 , {{{UUID}}} ");
    let bad_day_cursor = format!("2025-02-30T10:00:00Z,{UUID}");
    for (name, value) in [
        ("metadata", ""),
        ("metadata", "run:7"),
        ("metadata", "k:a:b"),
        ("metadata", "k:"),
        ("metadata", "novalue"),
        ("metadata", ":v"),
        ("format", "openai"),
        ("format", "episode"),
        ("format", ""),
        ("format", "csv"),
        ("after", cursor.as_str()),
        ("after", padded_cursor.as_str()),
        ("after", bad_day_cursor.as_str()),
        ("after", ""),
        ("after", "x"),
        ("created_after", "2025-09-12 10:00:00+02:00"),
        ("created_after", "\u{3000}2024-02-29t10:00:60z "),
        ("created_after", "2023-02-29T10:00:00Z"),
        ("created_after", "2025-13-01T00:00:00Z"),
        ("created_after", "yesterday"),
        ("created_after", ""),
        ("problem_id", ""),
    ] {
        let schema = parameter_schema(&doc, "/trajectories/export", "get", name);
        let status = send(
            &router,
            "GET",
            &format!("/trajectories/export?{}", query(&[(name, value)])),
            &[],
            None,
        )
        .await;
        agree(
            &format!("export {name}={value:?}"),
            validator.is_valid(schema, &json!(value)),
            status,
        );
    }
    let limit = parameter_schema(&doc, "/trajectories/export", "get", "limit");
    for value in ["9223372036854775807", "9223372036854775808"] {
        let number: Value = serde_json::from_str(value).expect("a number");
        let status = send(
            &router,
            "GET",
            &format!("/trajectories/export?limit={value}"),
            &[],
            None,
        )
        .await;
        agree(
            &format!("export limit={value}"),
            validator.is_valid(limit, &number),
            status,
        );
    }

    // Text filters count characters, as `maxLength` does.
    let problem_id = parameter_schema(&doc, "/tasks", "get", "problem_id");
    for value in ["é".repeat(256), "é".repeat(257)] {
        let status = send(
            &router,
            "GET",
            &format!("/tasks?{}", query(&[("problem_id", &value)])),
            &[],
            None,
        )
        .await;
        agree(
            &format!("problem_id of {} characters", value.chars().count()),
            validator.is_valid(problem_id, &json!(value)),
            status,
        );
    }

    // UUIDs by what uuid::Uuid parses; query values trimmed.
    let group_id = parameter_schema(&doc, "/tasks", "get", "group_id");
    for value in [
        UUID.to_string(),
        format!(" {UUID}\u{a0}"),
        UUID.replace('-', ""),
        "nope".to_string(),
    ] {
        let status = send(
            &router,
            "GET",
            &format!("/tasks?{}", query(&[("group_id", &value)])),
            &[],
            None,
        )
        .await;
        agree(
            &format!("group_id={value:?}"),
            validator.is_valid(group_id, &json!(value)),
            status,
        );
    }
    let id = parameter_schema(&doc, "/tasks/{id}", "get", "id");
    for value in [
        UUID.to_string(),
        UUID.to_uppercase(),
        UUID.replace('-', ""),
        format!("%7B{UUID}%7D"),
        format!("urn:uuid:{UUID}"),
        "not-a-uuid".to_string(),
        format!("{UUID}0"),
    ] {
        let decoded = value.replace("%7B", "{").replace("%7D", "}");
        let status = send(&router, "GET", &format!("/tasks/{value}"), &[], None).await;
        agree(
            &format!("GET /tasks/{decoded}"),
            validator.is_valid(id, &json!(decoded)),
            status,
        );
    }

    // The Idempotency-Key header: a string (never null) of visible ASCII.
    for path in ["/tasks", "/tasks/batch"] {
        let key = parameter_schema(&doc, path, "post", "Idempotency-Key");
        assert_eq!(key["type"], "string", "POST {path}: a header is never null: {key}");
        let body = match path {
            "/tasks" => json!({"problem_id": "misconfig_app_hotel_res-detection-1"}),
            _ => json!({"task": {"problem_id": "misconfig_app_hotel_res-detection-1"}, "count": 2}),
        };
        for value in [
            format!("retry-{path}"),
            format!("!~{path}"),
            format!("{path}{}", "x".repeat(255 - path.len())),
            "x".repeat(256),
            String::new(),
            "has space".to_string(),
            "caf\u{e9}".to_string(),
        ] {
            let status = send(
                &router,
                "POST",
                path,
                &[("idempotency-key", value.as_bytes())],
                Some(&body),
            )
            .await;
            agree(
                &format!("POST {path} Idempotency-Key {value:?}"),
                validator.is_valid(key, &json!(value)),
                status,
            );
        }
    }

    // Batch bodies: `tasks`, or `task` with `count`; the rest absent or null.
    let batch = &doc["paths"]["/tasks/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let task = json!({"problem_id": "misconfig_app_hotel_res-detection-1"});
    for body in [
        json!({"task": null, "tasks": []}),
        json!({"count": 0, "task": null, "tasks": []}),
        json!({"tasks": []}),
        json!({"tasks": [task]}),
        json!({"tasks": [task], "task": null, "count": null}),
        json!({"tasks": [task], "count": 1}),
        json!({"tasks": [task], "task": task}),
        json!({"task": task, "count": 2}),
        json!({"task": task, "count": 2.0, "tasks": null}),
        json!({"task": task, "count": 0}),
        json!({"task": task, "count": 1001}),
        json!({"task": task}),
        json!({"count": 2}),
        json!({"task": null, "count": 2}),
        json!({}),
        json!({"tasks": null, "task": null, "count": null}),
        json!({"tasks": [task], "extra": 1}),
    ] {
        let status = send(&router, "POST", "/tasks/batch", &[], Some(&body)).await;
        agree(
            &format!("POST /tasks/batch {body}"),
            validator.is_valid(batch, &body),
            status,
        );
    }

    // A claim's task_id is a UUID as uuid::Uuid parses it (an unknown
    // worker is a 404, which the document lists).
    let claim = &doc["paths"]["/workers/claim"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert!(
        doc["paths"]["/workers/claim"]["post"]["responses"].get("404").is_some(),
        "POST /workers/claim documents its 404"
    );
    for task_id in [
        json!(""),
        json!(UUID),
        json!(format!("{{{UUID}}}")),
        json!("nope"),
        Value::Null,
    ] {
        let body = json!({"worker_id": "worker-001-sim", "backend_type": "default", "task_id": task_id});
        let status = send(&router, "POST", "/workers/claim", &[], Some(&body)).await;
        agree(
            &format!("POST /workers/claim {body}"),
            validator.is_valid(claim, &body),
            status,
        );
    }
    let long_backend = "é".repeat(256);
    let too_long_backend = "é".repeat(257);
    for backend_type in [
        "default",
        "a\u{1}b",
        " ",
        long_backend.as_str(),
        too_long_backend.as_str(),
    ] {
        let body = json!({"worker_id": "worker-001-sim", "backend_type": backend_type});
        let status = send(&router, "POST", "/workers/claim", &[], Some(&body)).await;
        agree(
            &format!("POST /workers/claim backend_type {backend_type:?}"),
            validator.is_valid(claim, &body),
            status,
        );
    }

    // Task fields count characters too.
    let new_task = &doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let long_url = format!("https://example.com/{}", "é".repeat(2048 - 20));
    let too_long_url = format!("{long_url}é");
    for body in [
        json!({"problem_id": "é".repeat(256)}),
        json!({"problem_id": "é".repeat(257)}),
        json!({"problem_id": "p", "backend_type": "é".repeat(256)}),
        json!({"problem_id": "p", "callback_url": long_url}),
        json!({"problem_id": "p", "callback_url": too_long_url}),
    ] {
        let status = send(&router, "POST", "/tasks", &[], Some(&body)).await;
        let what = format!("POST /tasks with {} characters", body.to_string().chars().count());
        agree(&what, validator.is_valid(new_task, &body), status);
    }
    drop(backing);
}

#[tokio::test]
async fn the_document_describes_what_the_memory_server_does() {
    the_document_describes_what_the_server_does(Backing::memory().await).await;
}

#[tokio::test]
async fn the_document_describes_what_the_postgres_server_does() {
    the_document_describes_what_the_server_does(Backing::postgres().await).await;
}
