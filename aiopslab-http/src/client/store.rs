//! [`TaskStore`] for [`HttpStore`]: each store call is one HTTP request.

use std::collections::HashSet;

use aiopslab_core::batch::{BatchSpec, IdempotencyKey, MAX_BATCH_TASKS};
use aiopslab_core::webhook::{WebhookAttemptReport, WebhookDelivery};
use aiopslab_core::{
    CancelOutcome, ClaimRequest, CreatedBatch, Episode, ExportCursor, ExportFilter, HeartbeatAck, LeaseState,
    LeaseToken, LogEntry, LogQuery, NewBatch, NewLogEntry, Page, StoreError, StoreResult, StoreStats, SweepReport,
    Task, TaskFilter, TaskId, TaskOutcome, TaskPage, TaskSort, TaskSpec, TaskStore, Trajectory, ValidationError,
    Worker, WorkerFilter, WorkerHeartbeat, WorkerPage, WorkerRegistration,
};
use async_trait::async_trait;
use chrono::SecondsFormat;
use reqwest::{Method, StatusCode};

use super::error::{transport_error, Subject};
use super::wire::{
    new_task_body, AppendLogsBody, CancelResponse, ClaimResponse, EpisodeLine, FinishBody, LeaseBody, LogsResponse,
    SaveTrajectoryBody, WebhookListBody,
};
use super::{Guard, HttpStore};

/// Why `claim_webhooks` and `record_webhook_attempt` refuse over HTTP.
const WEBHOOKS_RUN_IN_THE_SERVER: &str =
    "webhook delivery runs in the server, beside its store, not through a remote HttpStore";
/// `Idempotency-Key`, sent with a create when the caller gives a key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `Idempotent-Replayed: true` marks a replayed create.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The largest `limit` the server accepts on a log read.
const MAX_LOG_LIMIT: usize = 100_000;

/// The wire spelling of a sort order (`-created_at`, ...).
fn sort_param(sort: TaskSort) -> &'static str {
    match sort {
        TaskSort::CreatedAsc => "created_at",
        TaskSort::CreatedDesc => "-created_at",
        TaskSort::PriorityAsc => "priority",
        TaskSort::PriorityDesc => "-priority",
    }
}

/// The `POST /tasks/batch` body listing `specs`, in order.
fn batch_body(specs: &[TaskSpec]) -> NewBatch {
    NewBatch {
        tasks: Some(specs.iter().map(new_task_body).collect()),
        task: None,
        count: None,
    }
}

/// The wire spelling of an instant in a query string (RFC 3339, UTC `Z`).
fn wire_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[async_trait]
impl TaskStore for HttpStore {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        let request = self
            .request(Method::POST, &["tasks"], Guard::Public)?
            .json(&new_task_body(&spec));
        self.send_json(request, &Subject::none()).await
    }

    /// One `POST /tasks/batch`: atomic on the server (all or none). The
    /// tasks join a fresh group (their `group_id` is set), which
    /// `create_tasks` on a local store leaves unset. At most
    /// [`MAX_BATCH_TASKS`] per call, as the endpoint accepts.
    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        if specs.len() > MAX_BATCH_TASKS {
            return Err(StoreError::Invalid(ValidationError::new(
                "tasks",
                format!(
                    "at most {MAX_BATCH_TASKS} tasks per call over HTTP, got {}",
                    specs.len()
                ),
            )));
        }
        let request = self
            .request(Method::POST, &["tasks", "batch"], Guard::Public)?
            .json(&batch_body(&specs));
        let created: CreatedBatch = self.send_json(request, &Subject::none()).await?;
        Ok(created.tasks)
    }

    /// One task with no group: `POST /tasks`; otherwise `POST /tasks/batch`
    /// (atomic on the server). The key goes in the `Idempotency-Key` header;
    /// the server fingerprints the request itself (method, path and body), so
    /// `idempotency.fingerprint` is not sent — the same specs make the same
    /// body, hence a replay. The server gives a batch its own group id:
    /// `batch.group_id` is not sent, and a batch of several tasks always
    /// joins a (fresh) group.
    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        let single = batch.group_id.is_none() && batch.specs.len() == 1;
        let request = if single {
            self.request(Method::POST, &["tasks"], Guard::Public)?
                .json(&new_task_body(&batch.specs[0]))
        } else {
            self.request(Method::POST, &["tasks", "batch"], Guard::Public)?
                .json(&batch_body(&batch.specs))
        };
        let request = match &idempotency {
            Some(key) => request.header(IDEMPOTENCY_KEY, key.key.as_str()),
            None => request,
        };
        if !single {
            return self.send_json(request, &Subject::none()).await;
        }
        let response = self.send(request, &Subject::none()).await?;
        let replayed = response
            .headers()
            .get(IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let task: Task = super::decode(response).await?;
        Ok(CreatedBatch {
            group_id: None,
            tasks: vec![task],
            replayed,
        })
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        let request = self.request(Method::GET, &["tasks", &id.to_string()], Guard::Public)?;
        self.send_json(request, &Subject::task(id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter, sort: TaskSort, page: Page) -> StoreResult<TaskPage> {
        let mut query: Vec<(&str, String)> = vec![
            ("limit", page.limit.to_string()),
            ("offset", page.offset.to_string()),
            ("sort", sort_param(sort).to_string()),
        ];
        if let Some(status) = filter.status {
            query.push(("status", status.as_str().to_string()));
        }
        if let Some(group_id) = filter.group_id {
            query.push(("group_id", group_id.to_string()));
        }
        for (key, value) in [
            ("problem_id", &filter.problem_id),
            ("worker_id", &filter.worker_id),
            ("backend_type", &filter.backend_type),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        let request = self.request(Method::GET, &["tasks"], Guard::Public)?.query(&query);
        self.send_json(request, &Subject::none()).await
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        let request = self.request(Method::DELETE, &["tasks", &id.to_string()], Guard::Public)?;
        let response = self.send(request, &Subject::task(id)).await?;
        let accepted = response.status() == StatusCode::ACCEPTED;
        let body: CancelResponse = super::decode(response).await.unwrap_or_default();
        Ok(match body.status.as_deref() {
            Some("cancelled") if !accepted => CancelOutcome::Cancelled,
            _ => CancelOutcome::CancelRequested,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %request.worker_id))]
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        let http = self
            .request(Method::POST, &["workers", "claim"], Guard::Worker)?
            .json(request);
        let response: ClaimResponse = self.send_json(http, &Subject::worker(&request.worker_id)).await?;
        Ok(response.task)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt))]
    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let request = self
            .request(
                Method::POST,
                &["tasks", &lease.task_id.to_string(), "lease"],
                Guard::Worker,
            )?
            .json(&LeaseBody { attempt: lease.attempt });
        self.send_json(request, &Subject::lease(lease.task_id, lease.attempt))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt, entries = entries.len()))]
    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        let request = self
            .request(
                Method::POST,
                &["tasks", &lease.task_id.to_string(), "logs"],
                Guard::Worker,
            )?
            .json(&AppendLogsBody {
                attempt: lease.attempt,
                entries: &entries,
            });
        self.send_empty(request, &Subject::lease(lease.task_id, lease.attempt))
            .await?;
        Ok(())
    }

    /// Every filter is applied by the server (`level`, `since`, `after_id`,
    /// `limit`, the latter capped at the server's 100 000).
    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(level) = query.min_level {
            params.push(("level", level.as_str().to_string()));
        }
        if let Some(since) = query.since {
            params.push(("since", wire_time(since)));
        }
        if let Some(after_id) = query.after_id {
            params.push(("after_id", after_id.to_string()));
        }
        match query.limit {
            Some(0) => return Ok(Vec::new()),
            Some(limit) => params.push(("limit", limit.min(MAX_LOG_LIMIT).to_string())),
            None => {}
        }
        let request = self
            .request(Method::GET, &["tasks", &task_id.to_string(), "logs"], Guard::Public)?
            .query(&params);
        let response: LogsResponse = self.send_json(request, &Subject::task(task_id)).await?;
        let envelope_id = response.task_id;
        let entries = response
            .logs
            .into_iter()
            .map(|entry| entry.into_entry(envelope_id))
            .filter(|entry| query.after_id.is_none_or(|after| entry.id > after));
        Ok(match query.limit {
            Some(limit) => entries.take(limit).collect(),
            None => entries.collect(),
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt))]
    /// A trajectory grows with the square of its steps (every LLM call holds
    /// its whole request): over [`GZIP_ABOVE`] bytes of JSON it is sent
    /// gzip-encoded, and it gets [`TRAJECTORY_TIMEOUT`] at least.
    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        let attempt = lease.attempt;
        let body = tokio::task::spawn_blocking(move || {
            encode_trajectory(&SaveTrajectoryBody {
                attempt,
                trajectory: &trajectory,
            })
        })
        .await
        .map_err(|e| StoreError::Internal(format!("encoding the trajectory failed: {e}")))??;
        let mut request = self
            .request(
                Method::PUT,
                &["tasks", &lease.task_id.to_string(), "trajectory"],
                Guard::Worker,
            )?
            .timeout(self.timeout.max(TRAJECTORY_TIMEOUT))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if body.gzipped {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        self.send_empty(request.body(body.bytes), &Subject::lease(lease.task_id, lease.attempt))
            .await?;
        Ok(())
    }

    /// The server answers 404 both for an unknown task and for a task with
    /// no trajectory yet; the second is `Ok(None)`.
    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        let request = self.request(
            Method::GET,
            &["tasks", &task_id.to_string(), "trajectory"],
            Guard::Public,
        )?;
        match self.send_json(request, &Subject::task(task_id)).await {
            Ok(trajectory) => Ok(Some(trajectory)),
            Err(StoreError::NotFound { entity: "task", .. }) => Err(StoreError::task_not_found(task_id)),
            Err(StoreError::NotFound { .. }) => {
                // Not the task itself (or the server did not say): the task
                // exists iff it can be read.
                self.get_task(task_id).await.map(|_| None)
            }
            Err(other) => Err(other),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?outcome.status))]
    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let request = self
            .request(
                Method::POST,
                &["tasks", &lease.task_id.to_string(), "finish"],
                Guard::Worker,
            )?
            .json(&FinishBody {
                attempt: lease.attempt,
                outcome: &outcome,
            });
        self.send_json(request, &Subject::lease(lease.task_id, lease.attempt))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %registration.id))]
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        let request = self
            .request(Method::POST, &["workers", "register"], Guard::Worker)?
            .json(&registration);
        self.send_json(request, &Subject::worker(&registration.id)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %heartbeat.worker_id))]
    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let request = self
            .request(Method::POST, &["workers", "heartbeat"], Guard::Worker)?
            .json(heartbeat);
        self.send_json(request, &Subject::worker(&heartbeat.worker_id)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %worker_id))]
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        let request = self.request(Method::POST, &["workers", worker_id, "deregister"], Guard::Worker)?;
        self.send_empty(request, &Subject::worker(worker_id)).await?;
        Ok(())
    }

    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        let request = self.request(Method::GET, &["workers", worker_id], Guard::Public)?;
        self.send_json(request, &Subject::worker(worker_id)).await
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = filter.status {
            query.push(("status", status.as_str().to_string()));
        }
        if let Some(backend_type) = &filter.backend_type {
            query.push(("backend_type", backend_type.clone()));
        }
        let request = self.request(Method::GET, &["workers"], Guard::Public)?.query(&query);
        self.send_json(request, &Subject::none()).await
    }

    /// Pages through `GET /trajectories/export?format=episode`. The endpoint
    /// filters by one problem id; a longer `problem_ids` list is applied
    /// here, reading further pages until `limit` episodes match or the
    /// export ends.
    async fn export_episodes(
        &self,
        filter: &ExportFilter,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Episode>> {
        let (server_problem, local_problems): (Option<&str>, Option<HashSet<&str>>) = match &filter.problem_ids {
            None => (None, None),
            Some(ids) if ids.is_empty() => return Ok(Vec::new()),
            Some(ids) if ids.len() == 1 => (Some(ids[0].as_str()), None),
            Some(ids) => (None, Some(ids.iter().map(String::as_str).collect())),
        };
        let limit = limit as usize;
        let mut episodes = Vec::new();
        let mut cursor = after;
        while episodes.len() < limit {
            let wanted = limit - episodes.len();
            let page = self.export_page(filter, server_problem, cursor, wanted).await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            // A page shorter than asked for is the end of the export.
            let ended = page.len() < wanted;
            episodes.extend(page.into_iter().filter(|e| {
                local_problems
                    .as_ref()
                    .is_none_or(|ids| ids.contains(e.task.problem_id.as_str()))
            }));
            if local_problems.is_none() || ended {
                break;
            }
        }
        Ok(episodes)
    }

    /// Webhook delivery runs in the server, beside its store (the server's
    /// deliverer claims from the outbox directly): a remote client does not
    /// deliver webhooks. Always [`StoreError::Internal`] saying so.
    async fn claim_webhooks(&self, _limit: u32, _lease: std::time::Duration) -> StoreResult<Vec<WebhookDelivery>> {
        Err(StoreError::Internal(WEBHOOKS_RUN_IN_THE_SERVER.into()))
    }

    /// See [`claim_webhooks`](Self::claim_webhooks): always
    /// [`StoreError::Internal`].
    async fn record_webhook_attempt(
        &self,
        _delivery_id: i64,
        _report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        Err(StoreError::Internal(WEBHOOKS_RUN_IN_THE_SERVER.into()))
    }

    /// `GET /tasks/{id}/webhooks`.
    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        let request = self.request(Method::GET, &["tasks", &task_id.to_string(), "webhooks"], Guard::Public)?;
        let body: WebhookListBody = self.send_json(request, &Subject::task(task_id)).await?;
        Ok(body.deliveries)
    }

    /// A remote worker never sweeps: the server runs the sweeper beside its
    /// store. Always an empty report.
    async fn sweep(&self) -> StoreResult<SweepReport> {
        Ok(SweepReport::default())
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        let request = self.request(Method::GET, &["stats"], Guard::Public)?;
        self.send_json(request, &Subject::none()).await
    }
}

impl HttpStore {
    /// One page of the export in the store's episode form, at most `limit` lines.
    async fn export_page(
        &self,
        filter: &ExportFilter,
        problem_id: Option<&str>,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Episode>> {
        let mut params: Vec<(&str, String)> = vec![("format", "episode".into()), ("limit", limit.to_string())];
        if let Some(cursor) = after {
            params.push(("after", format!("{},{}", wire_time(cursor.created_at), cursor.id)));
        }
        if let Some(status) = filter.status {
            params.push(("status", status.as_str().to_string()));
        }
        if let Some(problem_id) = problem_id {
            params.push(("problem_id", problem_id.to_string()));
        }
        if let Some(model) = &filter.model {
            params.push(("model", model.clone()));
        }
        if let Some((key, value)) = &filter.metadata {
            params.push(("metadata", format!("{key}:{value}")));
        }
        if let Some(t) = filter.created_after {
            params.push(("created_after", wire_time(t)));
        }
        if let Some(t) = filter.created_before {
            params.push(("created_before", wire_time(t)));
        }
        let request = self
            .request(Method::GET, &["trajectories", "export"], Guard::Public)?
            .query(&params);
        let response = self.send(request, &Subject::none()).await?;
        let url = response.url().clone();
        // A stream cut short by a server-side failure fails here: transient.
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        body.split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| {
                serde_json::from_slice::<EpisodeLine>(line)
                    .map(|l| Episode {
                        task: l.task,
                        trajectory: l.trajectory,
                    })
                    .map_err(|e| StoreError::Internal(format!("unexpected export line from {url}: {e}")))
            })
            .collect()
    }
}

/// Trajectory bodies over this many bytes of JSON are sent gzip-encoded.
pub const GZIP_ABOVE: usize = 1024 * 1024;

/// The least time a trajectory upload gets: a 1000-step one is ~160 MB of
/// JSON, which the server decodes, parses and stores before it answers.
pub const TRAJECTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A request body, maybe gzip-encoded.
struct EncodedBody {
    bytes: Vec<u8>,
    gzipped: bool,
}

/// JSON, gzipped (fast level: most of a trajectory repeats itself) when large.
fn encode_trajectory<T: serde::Serialize>(body: &T) -> StoreResult<EncodedBody> {
    use std::io::Write;
    let json = serde_json::to_vec(body).map_err(|e| StoreError::Internal(format!("encoding the trajectory: {e}")))?;
    if json.len() <= GZIP_ABOVE {
        return Ok(EncodedBody {
            bytes: json,
            gzipped: false,
        });
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 8), flate2::Compression::fast());
    encoder
        .write_all(&json)
        .and_then(|()| encoder.finish())
        .map(|bytes| EncodedBody { bytes, gzipped: true })
        .map_err(|e| StoreError::Internal(format!("gzip-encoding the trajectory: {e}")))
}
