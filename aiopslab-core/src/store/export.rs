//! [`EpisodeExport`]: what the RL dataset export needs from the store.

use async_trait::async_trait;

use super::StoreResult;
use crate::export::{Episode, ExportCursor, ExportFilter};

/// One page of [`EpisodeExport::export_episodes`]: which episodes, after
/// which cursor, how many. Build it with [`ExportRequest::new`]
/// (non-exhaustive: it may gain fields).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExportRequest {
    /// Every given field must match; only tasks with a trajectory.
    pub filter: ExportFilter,
    /// Strictly after this episode (`None`: from the first).
    pub after: Option<ExportCursor>,
    /// At most this many episodes.
    pub limit: u32,
}

impl ExportRequest {
    /// The first `limit` episodes matching `filter`.
    pub fn new(filter: ExportFilter, limit: u32) -> Self {
        Self {
            filter,
            after: None,
            limit,
        }
    }

    /// The same request, continuing after `cursor`.
    pub fn after(mut self, cursor: Option<ExportCursor>) -> Self {
        self.after = cursor;
        self
    }
}

/// The RL dataset export's side of the store: a keyset walk over the tasks
/// that have a trajectory. Checked by the export conformance suite
/// (`testkit`, `export_conformance_suite!`).
#[async_trait]
pub trait EpisodeExport: Send + Sync + 'static {
    /// One page of the dataset export: tasks that have a trajectory and match
    /// `request.filter`, in `(created_at, id)` order, strictly after
    /// `request.after`, at most `request.limit` of them. An empty page means the walk is over; the next page
    /// starts after the last episode's [`Episode::cursor`].
    ///
    /// Episodes carry what an [`ExportRecord`](crate::ExportRecord) needs:
    /// the task as stored and its trajectory's messages, reward, evaluation
    /// and metadata. `llm_calls` is left empty: every call holds its whole
    /// request, so the calls are most of a trajectory's bytes and the export
    /// never uses them (read them with [`TaskApi::get_trajectory`](super::TaskApi::get_trajectory)).
    async fn export_episodes(&self, request: &ExportRequest) -> StoreResult<Vec<Episode>>;
}
