//! Trajectories: saved under the lease in three parts (messages, LLM calls, and the small rest: reward,
//! evaluation, metadata), so the export can read the messages without the LLM calls, which hold every call's whole
//! request and are most of a trajectory's bytes. Replaced on each save.

use aiopslab_core::{LeaseToken, LlmCall, StoreError, StoreResult, TaskId, Trajectory, TrajectoryMessage};
use sqlx::types::Json;

use crate::jsonb::Jsonb;
use crate::lease::attempt;
use crate::logs::PgQuery;
use crate::rows::TrajectoryRest;
use crate::sql;
use crate::PgStore;

/// The parts of a stored trajectory, all NULL when the task has none.
type TrajectoryParts = (
    Option<Json<TrajectoryRest>>,
    Option<Json<Vec<TrajectoryMessage>>>,
    Option<Json<Vec<LlmCall>>>,
);

fn encode<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("the trajectory's {what} did not serialize: {e}")))
}

/// A trajectory encoded for its columns: the small rest (jsonb), the reward, and the messages and LLM calls as
/// JSON text.
pub(crate) struct EncodedTrajectory {
    pub(crate) rest: Jsonb<TrajectoryRestOwned>,
    pub(crate) reward: Option<f64>,
    pub(crate) messages: String,
    pub(crate) llm_calls: String,
}

/// The owned JSON of the rest, so an encoded trajectory outlives the trajectory.
pub(crate) type TrajectoryRestOwned = serde_json::Value;

impl EncodedTrajectory {
    /// Encodes `trajectory` (which must carry its task's id).
    pub(crate) fn of(trajectory: &Trajectory) -> StoreResult<Self> {
        let rest = serde_json::to_value(TrajectoryRest::of(trajectory))
            .map_err(|e| StoreError::Internal(format!("the trajectory did not serialize: {e}")))?;
        Ok(Self {
            rest: Jsonb(rest),
            reward: trajectory.reward,
            messages: encode("messages", &trajectory.messages)?,
            llm_calls: encode("LLM calls", &trajectory.llm_calls)?,
        })
    }
}

/// The statement saving (replacing) the trajectory of the task under `lease`; it writes nothing unless the lease
/// is held.
pub(crate) fn save_trajectory_query(lease: LeaseToken, trajectory: EncodedTrajectory) -> PgQuery<'static> {
    sqlx::query(sql::SAVE_TRAJECTORY)
        .bind(lease.task_id)
        .bind(attempt(lease))
        .bind(trajectory.rest)
        .bind(trajectory.reward)
        .bind(trajectory.messages)
        .bind(trajectory.llm_calls)
}

impl PgStore {
    /// Saves (replaces) the trajectory of a running task.
    #[tracing::instrument(skip(self, trajectory), fields(task_id = %lease.task_id, attempt = lease.attempt))]
    pub(crate) async fn upsert_trajectory(&self, lease: LeaseToken, mut trajectory: Trajectory) -> StoreResult<()> {
        trajectory.task_id = lease.task_id;
        let query = save_trajectory_query(lease, EncodedTrajectory::of(&trajectory)?);
        let mut conn = self.conn("save_trajectory").await?;
        let result = query.execute(conn.raw()).await;
        let saved = conn.done("save_trajectory", result)?.rows_affected();
        if saved == 0 {
            return Err(self.why_not_held(lease, "save_trajectory").await);
        }
        Ok(())
    }

    /// Reads a task's trajectory; `None` when the task has none.
    pub(crate) async fn select_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        let mut conn = self.conn("get_trajectory").await?;
        let result: Result<Option<TrajectoryParts>, sqlx::Error> = sqlx::query_as(sql::SELECT_TRAJECTORY)
            .bind(task_id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("get_trajectory", result)?;
        match row {
            None => Err(StoreError::task_not_found(task_id)),
            Some((Some(rest), messages, llm_calls)) => Ok(Some(rest.0.into_trajectory(
                task_id,
                messages.map(|m| m.0).unwrap_or_default(),
                llm_calls.map(|c| c.0).unwrap_or_default(),
            ))),
            Some((None, _, _)) => Ok(None),
        }
    }
}
