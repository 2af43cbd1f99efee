//! [`ApiClient::export_stream`]: the dataset export as the server writes it
//! (`GET /trajectories/export`, JSON Lines in OpenAI chat format), read chunk
//! by chunk so a caller can copy any number of episodes to a file without
//! holding them in memory. [`EpisodeExport`](aiopslab_core::EpisodeExport)
//! (in `api`) reads the store's episode form page by page instead.

use aiopslab_core::{Outcome, StoreError, TaskStatus, TaskType};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::{Method, Response};

use super::error::{transport_error, Subject};
use super::wire::wire_time;
use super::{ApiClient, ApiResult};

/// The filters of `GET /trajectories/export`; every one given must match, and
/// only tasks with a trajectory are exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportQuery {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this problem.
    pub problem_id: Option<String>,
    /// Only problems of this task type (the server looks it up in its catalog).
    pub task_type: Option<TaskType>,
    /// Only tasks whose `agent_config.model` is this.
    pub model: Option<String>,
    /// Only tasks whose `metadata[key]` is this string.
    pub metadata: Option<(String, String)>,
    /// Only tasks created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Which outcomes (`valid`, `aborted`, `timeout`, `cancelled`).
    pub outcomes: Outcomes,
    /// Only episodes whose `agent_config.model_version` is this.
    pub model_version: Option<u64>,
    /// Only episodes whose `agent_config.model_version` is at least this (unversioned ones are left out).
    pub min_model_version: Option<u64>,
    /// At most this many lines (all when `None`).
    pub limit: Option<u64>,
}

/// The `outcome` filter of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Outcomes {
    /// The server's default: `valid` episodes only (what a trainer may learn from), unless `status` is given,
    /// which then says alone which tasks to take.
    #[default]
    ServerDefault,
    /// Every outcome (`outcome=all`).
    All,
    /// Only these (`outcome=valid,aborted`); the server refuses an empty list.
    Only(Vec<Outcome>),
}

impl ExportQuery {
    /// The query string, in the server's spelling.
    pub(super) fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(status) = self.status {
            params.push(("status", status.as_str().to_string()));
        }
        if let Some(problem_id) = &self.problem_id {
            params.push(("problem_id", problem_id.clone()));
        }
        if let Some(task_type) = self.task_type {
            params.push(("task_type", task_type.as_str().to_string()));
        }
        if let Some(model) = &self.model {
            params.push(("model", model.clone()));
        }
        if let Some((key, value)) = &self.metadata {
            params.push(("metadata", format!("{key}:{value}")));
        }
        if let Some(t) = self.created_after {
            params.push(("created_after", wire_time(t)));
        }
        if let Some(t) = self.created_before {
            params.push(("created_before", wire_time(t)));
        }
        match &self.outcomes {
            Outcomes::ServerDefault => {}
            Outcomes::All => params.push(("outcome", "all".to_string())),
            Outcomes::Only(outcomes) => params.push((
                "outcome",
                outcomes.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(","),
            )),
        }
        if let Some(version) = self.model_version {
            params.push(("model_version", version.to_string()));
        }
        if let Some(floor) = self.min_model_version {
            params.push(("min_model_version", floor.to_string()));
        }
        if let Some(limit) = self.limit {
            params.push(("limit", limit.to_string()));
        }
        params
    }
}

/// An export being read: [`chunk`](ExportStream::chunk) until it returns
/// `None`. Chunks are cut wherever the network cut them, not at line ends.
#[derive(Debug)]
pub struct ExportStream {
    response: Response,
    /// How long one chunk may take to come.
    silence: std::time::Duration,
}

impl ExportStream {
    /// The next bytes of the export; `None` at its end. The server cuts the
    /// stream short when its store fails mid-export: that, a lost connection
    /// or a chunk that does not come within the request timeout fails with
    /// `StoreError::Unavailable`, so a caller never takes a cut export for a
    /// whole one.
    pub async fn chunk(&mut self) -> ApiResult<Option<Bytes>> {
        match tokio::time::timeout(self.silence, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(error)) => Err(transport_error(&error).into()),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the export stream was silent for {} s",
                self.silence.as_secs()
            ))
            .into()),
        }
    }
}

impl ApiClient {
    /// Starts the dataset export (`GET /trajectories/export`, one episode per
    /// line in OpenAI chat format with its reward, oldest task first). A
    /// refused filter fails here, before any line.
    pub async fn export_stream(&self, query: &ExportQuery) -> ApiResult<ExportStream> {
        let request = self
            .http
            .stream_request(Method::GET, &["trajectories", "export"])?
            .query(&query.params());
        let response = self.http.open_stream(request, &Subject::none()).await?;
        Ok(ExportStream {
            response,
            silence: self.http.timeout,
        })
    }
}
