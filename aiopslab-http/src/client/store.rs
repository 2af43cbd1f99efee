//! [`WorkerQueue`] for [`HttpStore`]: each call is one request of the worker protocol.

use std::sync::atomic::Ordering;

use aiopslab_core::{
    ClaimRequest, FinalReport, FinalReports, HeartbeatAck, LeaseState, LeaseToken, NewLogEntry, StoreError, StoreEvent,
    StoreResult, Task, TaskOutcome, Trajectory, Worker, WorkerHeartbeat, WorkerQueue, WorkerRegistration,
};
use async_trait::async_trait;
use reqwest::Method;

use super::error::Subject;
use super::events::Listener;
use super::wire::{AppendLogsBody, ClaimResponse, FinalReportBody, FinishBody, LeaseBody, SaveTrajectoryBody};
use super::HttpStore;

/// `POST /tasks/{id}/final-report`: the run's last logs, trajectory and outcome in one request (gzipped when
/// large, like a trajectory). A server that cannot take it (older, or its store lacks the capability) is
/// remembered, and the error makes the runtime send the parts.
#[async_trait]
impl FinalReports for HttpStore {
    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?report.outcome.status))]
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        let attempt = lease.attempt;
        let body = encode_off_thread(move || {
            encode_trajectory(&FinalReportBody {
                attempt,
                logs: &report.logs,
                trajectory: report.trajectory.as_ref(),
                outcome: &report.outcome,
            })
        })
        .await?;
        let request = self.upload(Method::POST, lease, "final-report", body)?;
        let answer = self
            .http
            .send_json(request, &Subject::lease(lease.task_id, lease.attempt))
            .await
            .map_err(StoreError::from);
        if let Err(StoreError::Internal(message)) = &answer {
            tracing::info!(%message, "the server takes no final reports; this worker sends the parts from now on");
            self.no_final_reports.store(true, Ordering::Relaxed);
        }
        answer
    }
}

impl HttpStore {
    /// A request to `tasks/{id}/{what}` carrying an encoded body, with the trajectory timeout.
    fn upload(
        &self,
        method: Method,
        lease: LeaseToken,
        what: &str,
        body: EncodedBody,
    ) -> StoreResult<reqwest::RequestBuilder> {
        let mut request = self
            .http
            .request(method, &["tasks", &lease.task_id.to_string(), what])?
            .timeout(self.http.timeout.max(TRAJECTORY_TIMEOUT))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if body.gzipped {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        Ok(request.body(body.bytes))
    }
}

/// Encodes a body off the async threads (a trajectory can be hundreds of megabytes).
async fn encode_off_thread<F>(encode: F) -> StoreResult<EncodedBody>
where
    F: FnOnce() -> StoreResult<EncodedBody> + Send + 'static,
{
    tokio::task::spawn_blocking(encode)
        .await
        .map_err(|e| StoreError::Internal(format!("encoding the body failed: {e}")))?
}

#[async_trait]
impl WorkerQueue for HttpStore {
    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %registration.id))]
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        let request = self
            .http
            .request(Method::POST, &["workers", "register"])?
            .json(&registration);
        let worker: Worker = self.http.send_json(request, &Subject::worker(&registration.id)).await?;
        // Subscriptions read this worker's events from now on.
        self.registered.send_replace(Some(Listener {
            worker_id: worker.id.clone(),
            backend_type: worker.backend_type.clone(),
        }));
        Ok(worker)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %heartbeat.worker_id))]
    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let request = self
            .http
            .request(Method::POST, &["workers", "heartbeat"])?
            .json(heartbeat);
        self.http
            .send_json(request, &Subject::worker(&heartbeat.worker_id))
            .await
            .map_err(StoreError::from)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %worker_id))]
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        let request = self.http.request(Method::POST, &["workers", worker_id, "deregister"])?;
        self.http.send_empty(request, &Subject::worker(worker_id)).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %request.worker_id))]
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        // One task, whatever the request says: more would run under our name unseen.
        let one = request.clone().up_to(1);
        let http = self.http.request(Method::POST, &["workers", "claim"])?.json(&one);
        let response: ClaimResponse = self.http.send_json(http, &Subject::worker(&request.worker_id)).await?;
        Ok(response.task)
    }

    /// One request for up to `max_tasks` tasks (an older server answers with one).
    #[tracing::instrument(level = "debug", skip_all, fields(worker_id = %request.worker_id, max_tasks = request.max_tasks))]
    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        request.validate()?;
        let http = self.http.request(Method::POST, &["workers", "claim"])?.json(request);
        let response: ClaimResponse = self.http.send_json(http, &Subject::worker(&request.worker_id)).await?;
        Ok(response.task.into_iter().chain(response.more_tasks).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt))]
    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let request = self
            .http
            .request(Method::POST, &["tasks", &lease.task_id.to_string(), "lease"])?
            .json(&LeaseBody { attempt: lease.attempt });
        self.http
            .send_json(request, &Subject::lease(lease.task_id, lease.attempt))
            .await
            .map_err(StoreError::from)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt, entries = entries.len()))]
    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        let request = self
            .http
            .request(Method::POST, &["tasks", &lease.task_id.to_string(), "logs"])?
            .json(&AppendLogsBody {
                attempt: lease.attempt,
                entries: &entries,
            });
        self.http
            .send_empty(request, &Subject::lease(lease.task_id, lease.attempt))
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt))]
    /// A trajectory grows with the square of its steps (every LLM call holds
    /// its whole request): over [`GZIP_ABOVE`] bytes of JSON it is sent
    /// gzip-encoded, and it gets [`TRAJECTORY_TIMEOUT`] at least.
    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        let attempt = lease.attempt;
        let body = encode_off_thread(move || {
            encode_trajectory(&SaveTrajectoryBody {
                attempt,
                trajectory: &trajectory,
            })
        })
        .await?;
        let request = self.upload(Method::PUT, lease, "trajectory", body)?;
        self.http
            .send_empty(request, &Subject::lease(lease.task_id, lease.attempt))
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?outcome.status))]
    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let request = self
            .http
            .request(Method::POST, &["tasks", &lease.task_id.to_string(), "finish"])?
            .json(&FinishBody {
                attempt: lease.attempt,
                outcome: &outcome,
            });
        self.http
            .send_json(request, &Subject::lease(lease.task_id, lease.attempt))
            .await
            .map_err(StoreError::from)
    }

    fn final_reports(&self) -> Option<&dyn FinalReports> {
        (!self.no_final_reports.load(Ordering::Relaxed)).then_some(self as &dyn FinalReports)
    }

    /// The worker's events over `GET /workers/{id}/events`, once this store
    /// has registered a worker (see the `events` module); `None` outside a
    /// tokio runtime.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        super::events::subscribe(self.http.clone(), self.registered.subscribe())
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
