//! `GET /groups/{group_id}`: a batch group's tasks and rewards together, for
//! group-relative RL methods (GRPO and the like compare rewards within a
//! group), with where the group stands: its status, valid and aborted
//! members, the refills of aborted members it used (see
//! [`aiopslab_core::group`]), and the mean and variance of the valid rewards.

use std::collections::BTreeMap;

use aiopslab_core::group::mean_and_variance;
use aiopslab_core::{Group, Page, Task, TaskFilter, TaskId, TaskQuery, TaskSort, TaskStatus};
use axum::extract::State;
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::GroupIdPath;
use crate::server::state::ApiState;
use crate::server::wire::{GroupSummary, GroupTask};

/// Page size of the walk over a group's tasks (the store's largest page).
const PAGE: u32 = 100;
/// Trajectories read at once for the rewards.
const CONCURRENT_READS: usize = 8;

/// Reads a batch group: its tasks, their statuses and rewards, where it stands (`status`, `valid`, `aborted`,
/// `refills` of aborted members against `max_refills`, `min_valid`), and the mean and population variance of the
/// valid members' rewards.
#[utoipa::path(
    get, path = "/groups/{group_id}", tag = "tasks",
    params(("group_id" = uuid::Uuid, Path, description = "The group id `POST /tasks/batch` answered")),
    responses(
        (status = 200, description = "The group", body = GroupSummary),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No task belongs to this group", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_group(
    State(state): State<ApiState>,
    GroupIdPath(group_id): GroupIdPath,
) -> ApiResult<Json<GroupSummary>> {
    let filter = TaskFilter::default().with_group_id(Some(group_id));
    let mut tasks: Vec<Task> = Vec::new();
    loop {
        let page = Page {
            limit: PAGE,
            offset: tasks.len() as u64,
        };
        let got = state
            .tasks
            .list_tasks(&TaskQuery::new(filter.clone()).sorted(TaskSort::CreatedAsc).page(page))
            .await?;
        let more = !got.tasks.is_empty() && (tasks.len() + got.tasks.len()) < got.total as usize;
        tasks.extend(got.tasks);
        if !more {
            break;
        }
    }
    if tasks.is_empty() {
        return Err(ApiError::not_found("group", &group_id.to_string()));
    }
    // A pending task has no trajectory yet: read only the others'.
    let wanted: Vec<(TaskId, bool)> = tasks
        .iter()
        .map(|task| (task.id, task.status == TaskStatus::Pending))
        .collect();
    let store = state.tasks.clone();
    let rewards: Vec<Option<f64>> = futures_util::stream::iter(wanted.into_iter().map(|(id, pending)| {
        let store = store.clone();
        async move {
            if pending {
                return Ok(None);
            }
            match store.get_trajectory(id).await {
                Ok(trajectory) => Ok(trajectory.and_then(|t| t.reward)),
                // Deleted meanwhile: no reward.
                Err(aiopslab_core::StoreError::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        }
    }))
    .buffered(CONCURRENT_READS)
    .try_collect()
    .await?;

    let mut by_status = BTreeMap::new();
    for task in &tasks {
        *by_status.entry(task.status).or_insert(0) += 1;
    }
    let count = |status: TaskStatus| by_status.get(&status).copied().unwrap_or(0);
    let (valid, aborted) = (count(TaskStatus::Completed), count(TaskStatus::Failed));
    let group = match state.tasks.get_group(group_id).await? {
        Some(group) => group,
        // Made before the store recorded groups: every task an original member, none replaced.
        None => Group::unrecorded(group_id, u32::try_from(tasks.len()).unwrap_or(u32::MAX)),
    };
    let status = group.status(&tasks);
    let present: Vec<f64> = rewards.iter().flatten().copied().collect();
    let valid_rewards: Vec<f64> = tasks
        .iter()
        .zip(&rewards)
        .filter(|(task, _)| task.status == TaskStatus::Completed)
        .filter_map(|(_, reward)| *reward)
        .collect();
    let (mean_reward, reward_variance) = mean_and_variance(&valid_rewards);
    Ok(Json(GroupSummary {
        group_id,
        total: tasks.len(),
        by_status,
        status,
        size: group.size,
        min_valid: group.min_valid,
        max_refills: group.max_refills,
        refills: group.refills,
        valid,
        aborted,
        reward_variance,
        tasks: tasks
            .into_iter()
            .zip(rewards)
            .map(|(task, reward)| GroupTask {
                id: task.id,
                problem_id: task.problem_id,
                status: task.status,
                reward,
                replaces: task.replaces,
            })
            .collect(),
        mean_reward,
        rewards: present,
    }))
}
