//! [`ApiClient`]: the task API, the operator's reads and the export of an
//! aiopslab server, over its public API; each call is one HTTP request (the
//! export: one per page).

use std::collections::HashSet;
use std::time::Duration;

use aiopslab_core::batch::{BatchSpec, GroupId, IdempotencyKey, MAX_BATCH_TASKS};
use aiopslab_core::webhook::WebhookDelivery;
use aiopslab_core::{
    Application, CancelOutcome, CreatedBatch, Episode, EpisodeExport, ExportCursor, ExportFilter, ExportRequest,
    FleetView, GroupPolicy, LogEntry, LogQuery, NewBatch, StoreError, StoreResult, StoreStats, Task, TaskId, TaskPage,
    TaskQuery, TaskSort, TaskSpec, TaskType, Trajectory, ValidationError, Worker, WorkerFilter, WorkerPage,
};
use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};

use super::error::{transport_error, ApiError, ClientError, Subject};
use super::wire::{
    log_query_params, new_task_body, wire_time, CancelResponse, EpisodeLine, LogsResponse, ProblemInfo,
    ProblemListBody, WebhookListBody,
};
use super::{ApiResult, ExportQuery, Guard, Http, Outcomes};
use crate::server::wire::GroupSummary;

/// `Idempotency-Key`, sent with a create when the caller gives a key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `Idempotent-Replayed: true` marks a replayed create.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A Rust client of an aiopslab server's public API: the task calls
/// (create, batch, get, list, cancel, logs, trajectory, webhooks) as
/// methods, and the [`FleetView`] and [`EpisodeExport`] of the store behind
/// the server. Cheap to clone (the connection pool is shared).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use aiopslab_core::FleetView;
/// use aiopslab_http::client::ApiClient;
///
/// let api = ApiClient::new("http://127.0.0.1:8000", Some("client-secret".into()))?;
/// println!("{:?}", api.stats().await?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ApiClient {
    pub(super) http: Http,
}

impl ApiClient {
    /// A client of the server at `base_url` (`http://host:8000`, optionally
    /// with a path prefix). `client_token` is sent as `Authorization: Bearer`
    /// when the server requires one.
    pub fn new(base_url: &str, client_token: Option<String>) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(base_url, "aiopslab-client", client_token, Guard::Public)?,
        })
    }

    /// Sets how long one request may take end to end (default 30 s). A
    /// request that takes longer fails with `StoreError::Unavailable`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// The server URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.http.base
    }
}

/// The wire spelling of a sort order (`-created_at`, ...).
fn sort_param(sort: TaskSort) -> &'static str {
    match sort {
        TaskSort::CreatedAsc => "created_at",
        TaskSort::CreatedDesc => "-created_at",
        TaskSort::PriorityAsc => "priority",
        TaskSort::PriorityDesc => "-priority",
    }
}

/// The `POST /tasks/batch` body listing `specs`, in order, with the group's policy (its fields left out when at
/// their defaults, so the body, hence an idempotency fingerprint, is what it was before they existed).
fn batch_body(specs: &[TaskSpec], policy: GroupPolicy) -> NewBatch {
    NewBatch {
        tasks: Some(specs.iter().map(new_task_body).collect()),
        task: None,
        count: None,
        min_valid: policy.min_valid.map(i64::from),
        max_refills: (policy.max_refills > 0).then_some(i64::from(policy.max_refills)),
    }
}

/// The task API over HTTP. Not a [`TaskApi`](aiopslab_core::TaskApi) store: the
/// public batch endpoint always makes a group and computes idempotency
/// fingerprints itself, so `create_tasks` and `create_batch` cannot keep
/// that trait's rules; these are the same calls as a client makes them.
impl ApiClient {
    /// Creates a task (`POST /tasks`).
    pub async fn create_task(&self, spec: TaskSpec) -> ApiResult<Task> {
        let request = self.http.request(Method::POST, &["tasks"])?.json(&new_task_body(&spec));
        self.http.send_json(request, &Subject::none()).await
    }

    /// One `POST /tasks/batch`: atomic on the server (all or none). The
    /// tasks join a fresh group (their `group_id` is set), which
    /// `create_tasks` on a local store leaves unset. At most
    /// [`MAX_BATCH_TASKS`] per call, as the endpoint accepts.
    pub async fn create_tasks(&self, specs: Vec<TaskSpec>) -> ApiResult<Vec<Task>> {
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
            ))
            .into());
        }
        let request = self
            .http
            .request(Method::POST, &["tasks", "batch"])?
            .json(&batch_body(&specs, GroupPolicy::default()));
        let created: CreatedBatch = self.http.send_json(request, &Subject::none()).await?;
        Ok(created.tasks)
    }

    /// One task with no group: `POST /tasks`; otherwise `POST /tasks/batch`
    /// (atomic on the server). The key goes in the `Idempotency-Key` header;
    /// the server fingerprints the request itself (method, path and body), so
    /// `idempotency.fingerprint` is not sent — the same specs make the same
    /// body, hence a replay. The server gives a batch its own group id:
    /// `batch.group_id` is not sent, and a batch of several tasks always
    /// joins a (fresh) group. `batch.policy` (`min_valid`, `max_refills`) is
    /// sent when it asks for anything but the defaults.
    pub async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> ApiResult<CreatedBatch> {
        let single = batch.group_id.is_none() && batch.specs.len() == 1;
        let request = if single {
            self.http
                .request(Method::POST, &["tasks"])?
                .json(&new_task_body(&batch.specs[0]))
        } else {
            self.http
                .request(Method::POST, &["tasks", "batch"])?
                .json(&batch_body(&batch.specs, batch.policy))
        };
        let request = match &idempotency {
            Some(key) => request.header(IDEMPOTENCY_KEY, key.key.as_str()),
            None => request,
        };
        if !single {
            return self.http.send_json(request, &Subject::none()).await;
        }
        let response = self.http.send(request, &Subject::none()).await?;
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

    /// Reads a task (`GET /tasks/{id}`).
    pub async fn get_task(&self, id: TaskId) -> ApiResult<Task> {
        let request = self.http.request(Method::GET, &["tasks", &id.to_string()])?;
        self.http.send_json(request, &Subject::task(id)).await
    }

    /// One page of tasks (`GET /tasks`).
    pub async fn list_tasks(&self, query: &TaskQuery) -> ApiResult<TaskPage> {
        let TaskQuery { filter, sort, page, .. } = query;
        let mut params: Vec<(&str, String)> = vec![
            ("limit", page.limit.to_string()),
            ("offset", page.offset.to_string()),
            ("sort", sort_param(*sort).to_string()),
        ];
        if let Some(status) = filter.status {
            params.push(("status", status.as_str().to_string()));
        }
        if let Some(group_id) = filter.group_id {
            params.push(("group_id", group_id.to_string()));
        }
        for (key, value) in [
            ("problem_id", &filter.problem_id),
            ("worker_id", &filter.worker_id),
            ("backend_type", &filter.backend_type),
            ("experiment", &filter.experiment),
        ] {
            if let Some(value) = value {
                params.push((key, value.clone()));
            }
        }
        let request = self.http.request(Method::GET, &["tasks"])?.query(&params);
        self.http.send_json(request, &Subject::none()).await
    }

    /// Cancels a task (`DELETE /tasks/{id}`).
    pub async fn cancel_task(&self, id: TaskId) -> ApiResult<CancelOutcome> {
        let request = self.http.request(Method::DELETE, &["tasks", &id.to_string()])?;
        let response = self.http.send(request, &Subject::task(id)).await?;
        let accepted = response.status() == StatusCode::ACCEPTED;
        let body: CancelResponse = super::decode(response).await.unwrap_or_default();
        Ok(match body.status.as_deref() {
            Some("cancelled") if !accepted => CancelOutcome::Cancelled,
            _ => CancelOutcome::CancelRequested,
        })
    }

    /// Every filter is applied by the server (`level`, `since`, `after_id`,
    /// `limit`, the latter capped at the server's 100 000).
    pub async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> ApiResult<Vec<LogEntry>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let params = log_query_params(query);
        let request = self
            .http
            .request(Method::GET, &["tasks", &task_id.to_string(), "logs"])?
            .query(&params);
        let response: LogsResponse = self.http.send_json(request, &Subject::task(task_id)).await?;
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

    /// The server answers 404 both for an unknown task and for a task with
    /// no trajectory yet; the second is `Ok(None)`.
    pub async fn get_trajectory(&self, task_id: TaskId) -> ApiResult<Option<Trajectory>> {
        let request = self
            .http
            .request(Method::GET, &["tasks", &task_id.to_string(), "trajectory"])?;
        match self.http.send_json(request, &Subject::task(task_id)).await {
            Ok(trajectory) => Ok(Some(trajectory)),
            Err(ApiError {
                error: StoreError::NotFound { entity: "task", .. },
                server,
            }) => Err(ApiError {
                error: StoreError::task_not_found(task_id),
                server,
            }),
            Err(ApiError {
                error: StoreError::NotFound { .. },
                ..
            }) => {
                // Not the task itself (or the server did not say): the task
                // exists iff it can be read.
                self.get_task(task_id).await.map(|_| None)
            }
            Err(other) => Err(other),
        }
    }

    /// A batch group: its tasks with their statuses and rewards, and the mean
    /// reward (`GET /groups/{group_id}`); 404 when no task belongs to it.
    pub async fn get_group(&self, group_id: GroupId) -> ApiResult<GroupSummary> {
        let request = self.http.request(Method::GET, &["groups", &group_id.to_string()])?;
        let subject = Subject {
            entity: "group",
            id: group_id.to_string(),
            attempt: None,
        };
        self.http.send_json(request, &subject).await
    }

    /// The server's problem catalog (`GET /problems`), in AIOpsLab's registry
    /// order, optionally only one task type and/or application.
    pub async fn list_problems(
        &self,
        task_type: Option<TaskType>,
        application: Option<Application>,
    ) -> ApiResult<Vec<ProblemInfo>> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(task_type) = task_type {
            params.push(("task_type", task_type.as_str().to_string()));
        }
        if let Some(application) = application {
            // The server reads the serde spelling (`HotelReservation`).
            params.push(("application", format!("{application:?}")));
        }
        let request = self.http.request(Method::GET, &["problems"])?.query(&params);
        let body: ProblemListBody = self.http.send_json(request, &Subject::none()).await?;
        Ok(body.problems)
    }

    /// Every webhook delivery of a task, oldest first, with its attempts
    /// (`GET /tasks/{id}/webhooks`).
    pub async fn list_webhooks(&self, task_id: TaskId) -> ApiResult<Vec<WebhookDelivery>> {
        let request = self
            .http
            .request(Method::GET, &["tasks", &task_id.to_string(), "webhooks"])?;
        let body: WebhookListBody = self.http.send_json(request, &Subject::task(task_id)).await?;
        Ok(body.deliveries)
    }
}
#[async_trait]
impl FleetView for ApiClient {
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        Ok(ApiClient::get_worker(self, worker_id).await?)
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        Ok(ApiClient::list_workers(self, filter).await?)
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        Ok(ApiClient::stats(self).await?)
    }
}

/// The operator's reads with the server's answer on failure: what the [`FleetView`] methods of the same names
/// return with the [`StoreError`] alone (a method call on an `ApiClient` finds these first).
impl ApiClient {
    /// One worker (`GET /workers/{id}`).
    pub async fn get_worker(&self, worker_id: &str) -> ApiResult<Worker> {
        let request = self.http.request(Method::GET, &["workers", worker_id])?;
        self.http.send_json(request, &Subject::worker(worker_id)).await
    }

    /// The workers, optionally only one status and/or backend type (`GET /workers`).
    pub async fn list_workers(&self, filter: &WorkerFilter) -> ApiResult<WorkerPage> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = filter.status {
            query.push(("status", status.as_str().to_string()));
        }
        if let Some(backend_type) = &filter.backend_type {
            query.push(("backend_type", backend_type.clone()));
        }
        let request = self.http.request(Method::GET, &["workers"])?.query(&query);
        self.http.send_json(request, &Subject::none()).await
    }

    /// Tasks per status, pending tasks per backend type, workers per status (`GET /stats`).
    pub async fn stats(&self) -> ApiResult<StoreStats> {
        let request = self.http.request(Method::GET, &["stats"])?;
        self.http.send_json(request, &Subject::none()).await
    }
}

#[async_trait]
impl EpisodeExport for ApiClient {
    /// Pages through `GET /trajectories/export?format=episode`. The endpoint
    /// filters by one problem id; a longer `problem_ids` list is applied
    /// here, reading further pages until `limit` episodes match or the
    /// export ends.
    async fn export_episodes(&self, request: &ExportRequest) -> StoreResult<Vec<Episode>> {
        let ExportRequest {
            filter, after, limit, ..
        } = request;
        let (server_problem, local_problems): (Option<&str>, Option<HashSet<&str>>) = match &filter.problem_ids {
            None => (None, None),
            Some(ids) if ids.is_empty() => return Ok(Vec::new()),
            Some(ids) if ids.len() == 1 => (Some(ids[0].as_str()), None),
            Some(ids) => (None, Some(ids.iter().map(String::as_str).collect())),
        };
        let limit = *limit as usize;
        let mut episodes = Vec::new();
        let mut cursor = *after;
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
}

impl ApiClient {
    /// One page of the export in the store's episode form, at most `limit` lines.
    async fn export_page(
        &self,
        filter: &ExportFilter,
        problem_id: Option<&str>,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> ApiResult<Vec<Episode>> {
        if filter.outcomes.as_ref().is_some_and(Vec::is_empty) {
            // No outcome at all matches nothing (the query string cannot say "none").
            return Ok(Vec::new());
        }
        // The server's default is `valid` alone; the library's (no outcome filter) is every outcome.
        let outcomes = match &filter.outcomes {
            None if filter.status.is_some() => Outcomes::ServerDefault,
            None => Outcomes::All,
            Some(outcomes) => Outcomes::Only(outcomes.clone()),
        };
        let query = ExportQuery {
            status: filter.status,
            problem_id: problem_id.map(str::to_string),
            task_type: None,
            model: filter.model.clone(),
            metadata: filter.metadata.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            outcomes,
            model_version: filter.model_version,
            min_model_version: filter.min_model_version,
            limit: Some(limit as u64),
        };
        let mut params = query.params();
        params.push(("format", "episode".into()));
        if let Some(cursor) = after {
            params.push(("after", format!("{},{}", wire_time(cursor.created_at), cursor.id)));
        }
        let request = self
            .http
            .request(Method::GET, &["trajectories", "export"])?
            .query(&params);
        let response = self.http.send(request, &Subject::none()).await?;
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
                    .map_err(|e| StoreError::Internal(format!("unexpected export line from {url}: {e}")).into())
            })
            .collect()
    }
}
