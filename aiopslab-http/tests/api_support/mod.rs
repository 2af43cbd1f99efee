//! Shared by the `api_*` test files: a store-agnostic way to build the
//! router ([`app`], [`app_with`]), a tiny request helper driving it through
//! `tower::ServiceExt::oneshot` (no network), and the suite itself
//! ([`suite`]), which every store variant expands with [`api_tests!`].

#![allow(dead_code)]

pub mod experiments;
pub mod suite;

use std::any::Any;
use std::sync::Arc;

use aiopslab_core::TaskStore;
use aiopslab_http::server::{router, ApiConfig, ApiState};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A store under test, plus whatever must live as long as it (a test database).
pub struct Backing {
    /// The store.
    pub store: Arc<dyn TaskStore>,
    /// Dropped at the end of the test.
    pub guard: Option<Box<dyn Any + Send>>,
}

impl Backing {
    /// A store that needs nothing kept alive.
    pub fn new(store: Arc<dyn TaskStore>) -> Self {
        Self { store, guard: None }
    }

    /// The embedded `MemoryStore`.
    pub async fn memory() -> Self {
        Self::new(Arc::new(aiopslab_core::MemoryStore::new()))
    }

    /// A `PgStore` on a fresh database of the real PostgreSQL (kept as the guard).
    pub async fn postgres() -> Self {
        use aiopslab_postgres::{testing::TestDatabase, PgStoreOptions};
        let database = TestDatabase::create().await;
        let store = database
            .store_with(
                aiopslab_core::LeasePolicy::default(),
                &PgStoreOptions::default().max_connections(4),
            )
            .await;
        Self {
            store: Arc::new(store),
            guard: Some(Box::new(database)),
        }
    }
}

/// The router over `store` with the default configuration.
pub fn app(store: Arc<dyn TaskStore>) -> Router {
    app_with(store, ApiConfig::default())
}

/// The router over `store` with `config`.
pub fn app_with(store: Arc<dyn TaskStore>, config: ApiConfig) -> Router {
    router(ApiState::with_default_scheduler(store, config))
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The content type.
    pub fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts the status and the error shape with `code`; returns the body.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert!(
            self.content_type().starts_with("application/json"),
            "{:?}",
            self.headers
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        assert!(body["details"].is_object(), "{body}");
        body
    }

    /// Asserts the status; returns the JSON body.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

/// Drives a router in-process.
#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub token: Option<String>,
}

impl Api {
    /// A client of `router` with no token.
    pub fn new(router: Router) -> Self {
        Self { router, token: None }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            router: self.router.clone(),
            token: Some(token.to_string()),
        }
    }

    /// Sends a request with a raw body.
    pub async fn raw(&self, method: &str, path: &str, body: impl Into<Body>) -> Resp {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, Body::empty()).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Resp {
        self.raw("DELETE", path, Body::empty()).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.raw("POST", path, body.to_string()).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.raw("PUT", path, body.to_string()).await
    }
}

/// Expands the whole API suite as `#[tokio::test]`s over the stores that
/// `$factory` (an async expression yielding a [`Backing`]) makes, one per test.
#[macro_export]
macro_rules! api_tests {
    ($factory:expr) => {
        $crate::api_tests!(@each $factory; suite;
            create_task_applies_defaults,
            create_task_rejects_bad_bodies,
            unknown_and_malformed_ids,
            list_tasks_filters_sorts_and_pages,
            list_tasks_rejects_bad_queries,
            cancel_pending_running_and_terminal,
            logs_filter_by_level_and_since,
            include_logs_adds_the_log,
            follow_streams_until_the_task_ends,
            follow_of_a_finished_task_ends_at_once,
            register_and_list_workers,
            heartbeat_hands_out_the_next_task,
            heartbeat_respects_backend_and_problems,
            worker_protocol_under_the_lease,
            failed_with_retries_requeues,
            trajectory_and_export,
            oversized_bodies_get_413,
            unknown_routes_and_methods,
            metrics_use_route_templates,
            openapi_lists_every_route,
            tokens_guard_the_right_routes,
            docs_pages_are_local,
            problems_stats_and_health,
            in_process_finishes_are_measured,
            follow_ends_when_the_server_stops,
        );
        $crate::api_tests!(@each $factory; experiments;
            tasks_carry_their_experiment,
            experiments_reject_bad_input,
            experiments_limit_the_claim,
            experiments_without_the_capability_are_501,
        );
    };
    (@each $factory:expr; $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let backing: $crate::api_support::Backing = $factory.await;
                $crate::api_support::$module::$name(backing.store.clone()).await;
                drop(backing);
            }
        )*
    };
}
