//! `GET /trajectories/export`: the dataset for RL training, streamed as JSON
//! Lines — one [`ExportRecord`] (OpenAI chat `messages`, `reward`,
//! `problem_id`, `task_type`, `agent_config`, `metadata`, ...) per episode.
//!
//! The walk is keyset-paginated over `(created_at, id)` with
//! [`EpisodeExport::export_episodes`](aiopslab_core::EpisodeExport::export_episodes),
//! so it is as fast on the last page as on the first and holds only a few
//! pages in memory however many episodes match: a producer task fetches and
//! encodes a page while the previous one is being written to the client,
//! through a channel of [`PAGES_IN_FLIGHT`] pages. A client that disconnects
//! stops the walk.
//!
//! `limit` and `after` (`<created_at>,<task id>` of the last line read) page
//! through an export by hand; `format=episode` writes the store's episodes
//! (`{"task", "trajectory"}`) instead, which is how `HttpStore` implements
//! `export_episodes` over HTTP.

use std::io;
use std::sync::Arc;

use aiopslab_core::catalog::TaskType;
use aiopslab_core::export::{problem_ids_for, Episode, ExportCursor, ExportFilter, ExportRecord};
use aiopslab_core::{EpisodeExport, ExportRequest, Outcome, TaskStatus, ValidationError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::QueryParams;
use crate::server::patterns;
use crate::server::routes::system::parse_task_type;
use crate::server::state::ApiState;
use crate::server::wire::EpisodeLine;

/// Encoded pages buffered between the producer and the response body.
pub const PAGES_IN_FLIGHT: usize = 2;
/// Longest accepted text filter.
const MAX_FILTER_LEN: usize = 256;

fn invalid(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_query(&ValidationError::new(name, message))
}

/// The export filter of a query string.
fn export_filter(query: &QueryParams) -> ApiResult<ExportFilter> {
    let status = query.parsed::<TaskStatus>("status")?;
    let outcomes = outcomes_of(query, status.is_some())?;
    let version = |name: &str| -> ApiResult<Option<u64>> {
        match query.int(name)? {
            None => Ok(None),
            Some(n) if n >= 0 => Ok(Some(n as u64)),
            Some(n) => Err(invalid(name, format!("must be 0 or more, got {n}"))),
        }
    };
    let problem_id = query.bounded_text("problem_id", MAX_FILTER_LEN)?;
    let task_type: Option<TaskType> = query
        .typed("task_type")?
        .map(parse_task_type)
        .transpose()
        .map_err(|e| ApiError::invalid_query(&e))?;
    let metadata = match query.bounded_text("metadata", MAX_FILTER_LEN)? {
        None => None,
        Some(raw) => match raw.split_once(':') {
            Some((key, value)) if !key.is_empty() => Some((key.to_string(), value.to_string())),
            _ => return Err(invalid("metadata", format!("must be key:value, got {raw:?}"))),
        },
    };
    Ok(ExportFilter::default()
        .with_status(status)
        .with_problem_ids(problem_ids_for(problem_id.as_deref(), task_type))
        .with_model(query.bounded_text("model", MAX_FILTER_LEN)?)
        .with_metadata(metadata)
        .with_created_after(query.timestamp("created_after")?)
        .with_created_before(query.timestamp("created_before")?)
        .with_outcomes(outcomes)
        .with_model_version(version("model_version")?)
        .with_min_model_version(version("min_model_version")?))
}

/// The `outcome` parameter: a comma-separated list of outcomes, or `all`. Without it the export holds `valid`
/// episodes only (what a trainer may learn from), unless `status` already says which tasks to take.
fn outcomes_of(query: &QueryParams, status_given: bool) -> ApiResult<Option<Vec<Outcome>>> {
    match query.typed("outcome")? {
        None if status_given => Ok(None),
        None => Ok(Some(vec![Outcome::Valid])),
        Some("all") => Ok(None),
        Some(list) => list
            .split(',')
            .map(str::parse::<Outcome>)
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| {
                invalid(
                    "outcome",
                    format!(
                        "must be all or a comma-separated list of valid, aborted, timeout, cancelled; got {list:?}"
                    ),
                )
            }),
    }
}

/// How each line is written (the `format` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
enum Format {
    /// An [`ExportRecord`]: OpenAI chat messages, reward, problem, task type, ...
    OpenAi,
    /// `{"task": Task, "trajectory": Trajectory}` ([`EpisodeLine`]), as the
    /// store returns it: what `HttpStore::export_episodes` reads.
    Episode,
}

fn format_of(query: &QueryParams) -> ApiResult<Format> {
    match query.typed("format")? {
        None | Some("openai") => Ok(Format::OpenAi),
        Some("episode") => Ok(Format::Episode),
        Some(other) => Err(invalid("format", format!("must be openai or episode, got {other:?}"))),
    }
}

/// The schema of the `after` parameter: a string [`cursor_of`] reads (see
/// [`patterns::export_cursor`]).
struct AfterParam;

impl utoipa::PartialSchema for AfterParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(patterns::export_cursor()))
            .into()
    }
}

impl utoipa::ToSchema for AfterParam {}

/// `after=<created_at RFC 3339>,<task id>`: resume after this episode.
fn cursor_of(query: &QueryParams) -> ApiResult<Option<ExportCursor>> {
    let Some(raw) = query.typed("after")? else {
        return Ok(None);
    };
    let bad = || invalid("after", format!("must be <created_at RFC 3339>,<task id>, got {raw:?}"));
    let (at, id) = raw.rsplit_once(',').ok_or_else(bad)?;
    let created_at = chrono::DateTime::parse_from_rfc3339(at.trim()).map_err(|_| bad())?;
    let id = id.trim().parse().map_err(|_| bad())?;
    Ok(Some(ExportCursor {
        created_at: created_at.with_timezone(&chrono::Utc),
        id,
    }))
}

/// Streams the episodes (tasks with a trajectory) that match as JSON Lines,
/// oldest task first.
#[utoipa::path(
    get, path = "/trajectories/export", tag = "tasks",
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this status (e.g. completed); given alone, it replaces the default outcome filter"),
        ("outcome" = Option<String>, Query, pattern = r"^(all|(valid|aborted|timeout|cancelled)(,(valid|aborted|timeout|cancelled))*)$",
         description = "Only episodes with one of these outcomes, comma-separated (valid, aborted, timeout, cancelled), or `all`. Default: `valid` (episodes that ran and were evaluated), unless `status` is given"),
        ("model_version" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_u64, description = "Only episodes whose agent_config.model_version is this"),
        ("min_model_version" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_u64, description = "Only episodes whose agent_config.model_version is at least this (unversioned episodes are left out)"),
        ("problem_id" = Option<String>, Query, max_length = 256, description = "Only tasks of this problem"),
        ("task_type" = Option<TaskType>, Query, description = "Only problems of this task type (detection, localization, analysis, mitigation), from the catalog"),
        ("model" = Option<String>, Query, max_length = 256, description = "Only tasks whose agent_config.model is this"),
        ("metadata" = Option<String>, Query, max_length = 256, pattern = r"^(?:[^:]+:[\s\S]*)?$",
         description = "Only tasks whose metadata has this string value, as `key:value` with a non-empty key (split at the first colon); empty: no filter"),
        ("created_after" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only tasks created at or after this RFC 3339 instant"),
        ("created_before" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only tasks created before this RFC 3339 instant"),
        ("after" = inline(Option<AfterParam>), Query, description = "Resume after this episode: `<created_at RFC 3339>,<task id>` of the last line read"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 9223372036854775807_u64, description = "At most this many lines (default: all)"),
        ("format" = inline(Option<Format>), Query, description = "`openai` (default): one ExportRecord per line; `episode`: one `{\"task\", \"trajectory\"}` per line, the store's own form (the trajectory without llm_calls, unlabelled: its stored reward, whatever the outcome; what HttpStore reads)"),
    ),
    responses(
        (status = 200, description = "One episode per line, in OpenAI chat format with its reward; ordered by (created_at, id). \
A store failure after the first line ends the stream early (the chunked body is cut, never completed)",
         body = ExportRecord, content_type = "application/x-ndjson"),
        (status = 400, description = "A query parameter is invalid (names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn export_trajectories(State(state): State<ApiState>, query: QueryParams) -> ApiResult<Response> {
    let filter = export_filter(&query)?;
    let format = format_of(&query)?;
    let after = cursor_of(&query)?;
    let limit = match query.int("limit")? {
        None => u64::MAX,
        Some(n) if n >= 1 => n as u64,
        Some(n) => return Err(invalid("limit", format!("must be 1 or more, got {n}"))),
    };
    let walk = Walk {
        store: state.export.clone(),
        filter,
        format,
        page_size: state.config.export_page_size.max(1),
        remaining: limit,
    };
    // The first page before the 200: a store that is down gets a proper status code.
    let first = walk.fetch(after).await?;
    let (sender, receiver) = mpsc::channel(PAGES_IN_FLIGHT);
    tokio::spawn(walk.produce(first, sender).instrument(tracing::info_span!("export")));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// One export walk.
struct Walk {
    store: Arc<dyn EpisodeExport>,
    filter: ExportFilter,
    format: Format,
    page_size: u32,
    /// Lines still to send.
    remaining: u64,
}

impl Walk {
    async fn fetch(&self, after: Option<ExportCursor>) -> aiopslab_core::StoreResult<Vec<Episode>> {
        if self.remaining == 0 {
            return Ok(Vec::new());
        }
        let limit = u64::from(self.page_size).min(self.remaining) as u32;
        self.store
            .export_episodes(&ExportRequest::new(self.filter.clone(), limit).after(after))
            .await
    }

    /// Walks the pages, sending each encoded; stops at the end, at the
    /// limit, when the client is gone, or on a store error (sent as a body
    /// error, which cuts the stream).
    async fn produce(mut self, first: Vec<Episode>, sender: mpsc::Sender<Result<Bytes, io::Error>>) {
        let mut page = first;
        let mut exported: u64 = 0;
        loop {
            page.truncate(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let Some(cursor) = page.last().map(Episode::cursor) else {
                tracing::debug!(exported, "export finished");
                return;
            };
            exported += page.len() as u64;
            self.remaining -= page.len() as u64;
            let chunk = encode(&page, self.format);
            drop(page);
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::error!(%error, "cannot encode an export page");
                    let _ = sender.send(Err(io::Error::other("export encoding failed"))).await;
                    return;
                }
            };
            if sender.send(Ok(chunk)).await.is_err() {
                tracing::debug!(exported, "export client went away");
                return;
            }
            page = match self.fetch(Some(cursor)).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, exported, "export stopped: store error");
                    let _ = sender.send(Err(io::Error::other("store error during export"))).await;
                    return;
                }
            };
        }
    }
}

/// One JSON line per episode.
fn encode(page: &[Episode], format: Format) -> serde_json::Result<Bytes> {
    let mut out = Vec::with_capacity(page.len() * 8192);
    for episode in page {
        match format {
            Format::OpenAi => serde_json::to_writer(&mut out, &ExportRecord::from_episode(episode))?,
            Format::Episode => serde_json::to_writer(
                &mut out,
                &EpisodeLine {
                    task: &episode.task,
                    trajectory: &episode.trajectory,
                },
            )?,
        }
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}
