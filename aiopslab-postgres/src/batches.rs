//! Batches: many tasks created atomically in one statement, optionally as a group, optionally under an
//! idempotency key.
//!
//! A batch with a group writes the group's row (its size, `min_valid` and `max_refills`, see
//! `aiopslab_core::group`) in the same statement, so a group is recorded exactly when its tasks are.
//!
//! With a key, the key row (its fingerprint, group and the task ids in request order) is inserted in the same
//! statement as the tasks, with `ON CONFLICT DO NOTHING`: exactly one request creates. A request whose key already
//! exists (including one that raced the creator and waited for it to commit) reads the key back: the same
//! fingerprint replays the first answer with the tasks as they are now, another one is refused with
//! [`StoreError::IdempotencyConflict`].

use std::collections::HashMap;

use aiopslab_core::{BatchSpec, CreatedBatch, Group, GroupId, IdempotencyKey, StoreError, StoreResult, Task};
use uuid::Uuid;

use crate::jsonb::Jsonb;
use crate::rows::TaskRow;
use crate::sql;
use crate::tasks::to_i32;
use crate::PgStore;

/// An idempotency key's first request: fingerprint, group, task ids in order.
type KeyRow = (String, Option<GroupId>, Vec<Uuid>);

/// A group's row: id, size, min_valid, max_refills, refills.
type GroupRow = (GroupId, i32, i32, i32, i32);

/// A request whose key existed and then vanished (its creator rolled back) is retried this many times.
const KEY_RACE_RETRIES: usize = 3;

impl PgStore {
    /// Creates `batch` (all or none), or replays the first request of `key`.
    #[tracing::instrument(skip_all, fields(count = batch.specs.len(), group_id = ?batch.group_id))]
    pub(crate) async fn insert_batch(
        &self,
        batch: BatchSpec,
        key: Option<IdempotencyKey>,
    ) -> StoreResult<CreatedBatch> {
        if batch.specs.is_empty() && key.is_none() {
            return Ok(CreatedBatch {
                group_id: batch.group_id,
                tasks: Vec::new(),
                replayed: false,
            });
        }
        for _ in 0..KEY_RACE_RETRIES {
            if let Some(tasks) = self.try_insert(&batch, key.as_ref()).await? {
                self.announce(tasks.iter().map(|t| t.parameters.backend_type.as_str()));
                return Ok(CreatedBatch {
                    group_id: batch.group_id,
                    tasks,
                    replayed: false,
                });
            }
            // The key exists: replay or refuse.
            let Some(key) = &key else {
                return Err(StoreError::Internal("a batch without a key created nothing".into()));
            };
            if let Some(replay) = self.replay(key).await? {
                return Ok(replay);
            }
        }
        Err(StoreError::Unavailable(
            "the idempotency key kept changing; retry".into(),
        ))
    }

    /// Inserts `batch` without an idempotency key and announces the new tasks.
    pub(crate) async fn insert_unkeyed(&self, batch: &BatchSpec) -> StoreResult<Vec<Task>> {
        let tasks = self
            .try_insert(batch, None)
            .await?
            .ok_or_else(|| StoreError::Internal("a batch without a key created nothing".into()))?;
        self.announce(tasks.iter().map(|t| t.parameters.backend_type.as_str()));
        Ok(tasks)
    }

    /// One insert; `None` when the key already existed.
    async fn try_insert(&self, batch: &BatchSpec, key: Option<&IdempotencyKey>) -> StoreResult<Option<Vec<Task>>> {
        let n = batch.specs.len();
        let mut ids = Vec::with_capacity(n);
        let mut problems = Vec::with_capacity(n);
        let mut agent_configs = Vec::with_capacity(n);
        let mut max_steps = Vec::with_capacity(n);
        let mut timeouts = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut callbacks = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut backends = Vec::with_capacity(n);
        let mut retries = Vec::with_capacity(n);
        let mut experiments = Vec::with_capacity(n);
        for spec in &batch.specs {
            let p = &spec.parameters;
            ids.push(Uuid::now_v7());
            problems.push(spec.problem_id.as_str());
            agent_configs.push(Jsonb(&p.agent_config));
            max_steps.push(to_i32(p.max_steps));
            timeouts.push(to_i32(p.timeout_minutes));
            priorities.push(i16::from(p.priority));
            callbacks.push(p.callback_url.as_deref());
            metadata.push(Jsonb(&p.metadata));
            backends.push(p.backend_type.as_str());
            retries.push(to_i32(p.max_retries));
            experiments.push(spec.experiment.as_deref());
        }
        let statement = if key.is_some() {
            sql::INSERT_TASKS_WITH_KEY
        } else {
            sql::INSERT_TASKS
        };
        let mut query = sqlx::query_as::<_, TaskRow>(statement)
            .bind(&ids)
            .bind(problems)
            .bind(agent_configs)
            .bind(max_steps)
            .bind(timeouts)
            .bind(priorities)
            .bind(callbacks)
            .bind(metadata)
            .bind(backends)
            .bind(retries)
            .bind(batch.group_id)
            .bind(experiments);
        if let Some(key) = key {
            query = query.bind(&key.key).bind(&key.fingerprint);
        }
        let group = batch
            .group_id
            .map(|id| batch.policy.group(id, u32::try_from(n).unwrap_or(u32::MAX)));
        query = query
            .bind(group.map(|g| to_i32(g.min_valid)))
            .bind(group.map(|g| to_i32(g.max_refills)));
        let mut conn = self.conn("create_batch").await?;
        let result = query.fetch_all(conn.raw()).await;
        let rows = conn.done("create_batch", result)?;
        if rows.is_empty() {
            // Tasks were to be inserted and none was: the key already existed.
            return Ok(None);
        }
        let mut by_id: HashMap<Uuid, Task> = HashMap::with_capacity(rows.len());
        for row in rows {
            let task = Task::try_from(row)?;
            by_id.insert(task.id, task);
        }
        ids.iter()
            .map(|id| {
                by_id
                    .remove(id)
                    .ok_or_else(|| StoreError::Internal("a created task was not returned".into()))
            })
            .collect::<StoreResult<Vec<Task>>>()
            .map(Some)
    }

    /// What the store keeps of group `group_id`; `None` when it has no row (no batch made it, or one made it
    /// before migration 007).
    pub(crate) async fn select_group(&self, group_id: GroupId) -> StoreResult<Option<Group>> {
        let mut conn = self.conn("get_group").await?;
        let result: Result<Option<GroupRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_GROUP)
            .bind(group_id)
            .fetch_optional(conn.raw())
            .await;
        let Some((group_id, size, min_valid, max_refills, refills)) = conn.done("get_group", result)? else {
            return Ok(None);
        };
        let count = |what: &str, n: i32| {
            u32::try_from(n).map_err(|_| StoreError::Internal(format!("corrupted {what} of group {group_id}")))
        };
        Ok(Some(Group {
            group_id,
            size: count("size", size)?,
            min_valid: count("min_valid", min_valid)?,
            max_refills: count("max_refills", max_refills)?,
            refills: count("refills", refills)?,
        }))
    }

    /// The first answer of `key`, read fresh; `IdempotencyConflict` for another fingerprint; `None` when the key
    /// does not exist (any more).
    async fn replay(&self, key: &IdempotencyKey) -> StoreResult<Option<CreatedBatch>> {
        let mut conn = self.conn("create_batch").await?;
        let result: Result<Option<KeyRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_IDEMPOTENCY_KEY)
            .bind(&key.key)
            .fetch_optional(conn.raw())
            .await;
        let Some((fingerprint, group_id, task_ids)) = conn.done("create_batch", result)? else {
            return Ok(None);
        };
        if fingerprint != key.fingerprint {
            return Err(StoreError::IdempotencyConflict { key: key.key.clone() });
        }
        let mut conn = self.conn("create_batch").await?;
        let result: Result<Vec<TaskRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_TASKS_IN_ORDER)
            .bind(&task_ids)
            .fetch_all(conn.raw())
            .await;
        let rows = conn.done("create_batch", result)?;
        tracing::debug!(key = %key.key, "idempotent batch replayed");
        Ok(Some(CreatedBatch {
            group_id,
            tasks: rows.into_iter().map(Task::try_from).collect::<StoreResult<_>>()?,
            replayed: true,
        }))
    }
}
