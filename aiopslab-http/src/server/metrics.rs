//! Prometheus metrics, in the text exposition format, from a small
//! hand-rolled registry (a few maps behind mutexes; no exporter crate).
//!
//! - `aiopslab_tasks{status}`, `aiopslab_queue_depth{backend_type}`,
//!   `aiopslab_workers{status}`: gauges read from `FleetView::stats` at
//!   scrape time, so every server replica reports the shared truth.
//! - `aiopslab_task_duration_seconds{status}`: histogram of
//!   `completed_at - started_at`, observed by the state's
//!   [`ObservedStore`](super::ObservedStore) when a task is finished through
//!   it (the HTTP worker protocol, or in-process workers given that store).
//! - `aiopslab_http_requests_total{method,route,status}` and
//!   `aiopslab_http_request_duration_seconds{method,route,status}`: labelled
//!   by the route *template* (`/tasks/{id}`), never the raw path, so label
//!   cardinality stays bounded.
//! - `aiopslab_webhook_attempts_total{outcome}`: completion-webhook attempts
//!   (`delivered`, `retry`, `failed`) made by this server's deliverer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use aiopslab_core::{StoreStats, Task};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::state::ApiState;

/// Latency buckets of HTTP requests, in seconds.
const HTTP_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of task run durations, in seconds (up to the 180-minute limit).
const TASK_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 10800.0,
];

/// A histogram: per-bucket counts (not cumulative), total count and sum.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// `(method, route template, status)`.
type HttpKey = (String, String, u16);

/// The server's own counters and histograms. Store-derived gauges are read at
/// scrape time by [`render`].
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<HttpKey, Histogram>>,
    task_durations: Mutex<BTreeMap<String, Histogram>>,
    webhook_attempts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Records one HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        http.entry((method.to_string(), route.to_string(), status))
            .or_insert_with(|| Histogram::new(&HTTP_BUCKETS))
            .observe(seconds);
    }

    /// Records the run time of a task that just reached a terminal status.
    pub fn observe_task(&self, task: &Task) {
        let (Some(started), Some(completed)) = (task.started_at, task.completed_at) else {
            return;
        };
        if !task.status.is_terminal() {
            return;
        }
        let seconds = (completed - started).num_milliseconds().max(0) as f64 / 1000.0;
        let mut durations = self.task_durations.lock().unwrap_or_else(PoisonError::into_inner);
        durations
            .entry(task.status.as_str().to_string())
            .or_insert_with(|| Histogram::new(&TASK_BUCKETS))
            .observe(seconds);
    }

    /// Records one webhook delivery attempt by its outcome: `delivered`,
    /// `retry` (failed, will be tried again) or `failed` (given up).
    pub fn observe_webhook_attempt(&self, outcome: &'static str) {
        let mut attempts = self.webhook_attempts.lock().unwrap_or_else(PoisonError::into_inner);
        *attempts.entry(outcome).or_insert(0) += 1;
    }

    fn render_own(&self, out: &mut String) {
        out.push_str(
            "# HELP aiopslab_webhook_attempts_total Webhook delivery attempts made by this server, by outcome.\n",
        );
        out.push_str("# TYPE aiopslab_webhook_attempts_total counter\n");
        let attempts = self.webhook_attempts.lock().unwrap_or_else(PoisonError::into_inner);
        for (outcome, count) in attempts.iter() {
            let _ = writeln!(out, "aiopslab_webhook_attempts_total{{outcome=\"{outcome}\"}} {count}");
        }
        drop(attempts);

        out.push_str("# HELP aiopslab_task_duration_seconds Run time of finished tasks (completed_at - started_at).\n");
        out.push_str("# TYPE aiopslab_task_duration_seconds histogram\n");
        let durations = self.task_durations.lock().unwrap_or_else(PoisonError::into_inner);
        for (status, histogram) in durations.iter() {
            histogram.render(
                out,
                "aiopslab_task_duration_seconds",
                &format!("status=\"{}\"", escape(status)),
            );
        }
        drop(durations);

        let http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# HELP aiopslab_http_requests_total HTTP requests by method, route template and status.\n");
        out.push_str("# TYPE aiopslab_http_requests_total counter\n");
        for ((method, route, status), histogram) in http.iter() {
            let _ = writeln!(
                out,
                "aiopslab_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(method),
                escape(route),
                histogram.count
            );
        }
        out.push_str("# HELP aiopslab_http_request_duration_seconds HTTP request latency by method, route template and status.\n");
        out.push_str("# TYPE aiopslab_http_request_duration_seconds histogram\n");
        for ((method, route, status), histogram) in http.iter() {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                escape(method),
                escape(route)
            );
            histogram.render(out, "aiopslab_http_request_duration_seconds", &labels);
        }
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_stats(out: &mut String, stats: &StoreStats) {
    out.push_str("# HELP aiopslab_tasks Tasks by status.\n# TYPE aiopslab_tasks gauge\n");
    for (status, count) in &stats.tasks_by_status {
        let _ = writeln!(out, "aiopslab_tasks{{status=\"{status}\"}} {count}");
    }
    out.push_str("# HELP aiopslab_queue_depth Pending tasks by backend type.\n# TYPE aiopslab_queue_depth gauge\n");
    for (backend, count) in &stats.queue_depth_by_backend {
        let _ = writeln!(
            out,
            "aiopslab_queue_depth{{backend_type=\"{}\"}} {count}",
            escape(backend)
        );
    }
    out.push_str("# HELP aiopslab_workers Workers by status.\n# TYPE aiopslab_workers gauge\n");
    for (status, count) in &stats.workers_by_status {
        let _ = writeln!(out, "aiopslab_workers{{status=\"{status}\"}} {count}");
    }
}

/// The whole exposition: store gauges (when the store answers) and the
/// server's own metrics. `aiopslab_store_up` says whether the store answered.
pub async fn render(state: &ApiState) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let stats = state.fleet.stats().await;
    out.push_str("# HELP aiopslab_store_up Whether the task store answered the last scrape.\n");
    out.push_str("# TYPE aiopslab_store_up gauge\n");
    match &stats {
        Ok(stats) => {
            out.push_str("aiopslab_store_up 1\n");
            render_stats(&mut out, stats);
        }
        Err(error) => {
            tracing::warn!(%error, "metrics scrape could not read store stats");
            out.push_str("aiopslab_store_up 0\n");
        }
    }
    state.metrics.render_own(&mut out);
    out
}

/// A bounded label for the request method (unknown methods share one label).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware recording every request under its route template
/// (`unmatched` when no route matched), inside a `request` tracing span
/// carrying the method and route (handlers add `task_id`/`worker_id` to
/// their own events).
pub async fn track(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let span = tracing::info_span!("request", method, route = %route);
    let start = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let seconds = start.elapsed().as_secs_f64();
    state.metrics.observe_request(method, &route, status, seconds);
    span.in_scope(|| tracing::debug!(status, elapsed_ms = seconds * 1000.0, "request done"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&HTTP_BUCKETS);
        h.observe(0.003);
        h.observe(0.2);
        h.observe(50.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 0"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.25\"} 2"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
