//! Groups and their refills: how many valid episodes a batch group needs ([`GroupPolicy`]), what a store keeps
//! of a group ([`Group`]), when an aborted member is replaced ([`Group::needs_refill`]) and where a group stands
//! ([`GroupStatus`]).
//!
//! Group-relative RL methods compare the rewards within a group, so a group of `n` samples of one problem is only
//! as useful as its valid episodes. An infrastructure failure (outcome `aborted`) says nothing about the policy,
//! so a group may ask the store to run an aborted member again: `POST /tasks/batch` takes `min_valid` (default:
//! every member) and `max_refills` (default 0, no refills). When a member aborts for good (status `failed`, its
//! own `max_retries` spent, and no client asked to cancel it), in the same atomic step the store creates a **replacement**: a new pending task with
//! the same problem and parameters, in the same group, whose `replaces` names the aborted member — as long as the
//! group still lacks `min_valid` members that are valid or may still become so (pending, running or completed),
//! and refills remain. A timeout, a cancel (the client's decision) or a failure that its retries requeue is never
//! refilled: only an abort is.
//!
//! The rule is written once here and applied by each store in its own atomic step: the memory store calls
//! [`Group::needs_refill`] under its lock; PostgreSQL applies the same rule in a trigger (migration 007).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::batch::GroupId;
use crate::error::ValidationError;
use crate::task::{Task, TaskId, TaskStatus};

/// The most refills one group may ask for.
pub const MAX_REFILLS: u32 = 1000;

/// What a batch asks of its group: how many valid members it needs and how many refills it may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPolicy {
    /// Valid members the group needs, 1 to its size; `None`: every member.
    #[serde(default)]
    pub min_valid: Option<u32>,
    /// Replacements of aborted members the store may create, 0 to [`MAX_REFILLS`].
    #[serde(default)]
    pub max_refills: u32,
}

impl GroupPolicy {
    /// Checks `min_valid` (1..=`size`) and `max_refills` (0..=[`MAX_REFILLS`]) as a client sent them; errors
    /// name the field.
    pub fn validate(min_valid: Option<i64>, max_refills: Option<i64>, size: usize) -> Result<Self, ValidationError> {
        let min_valid = match min_valid {
            None => None,
            Some(n) if n >= 1 && n <= size as i64 => Some(n as u32),
            Some(n) => {
                return Err(ValidationError::new(
                    "min_valid",
                    format!("must be between 1 and the group's size ({size}), got {n}"),
                ))
            }
        };
        let max_refills = match max_refills {
            None => 0,
            Some(n) if (0..=i64::from(MAX_REFILLS)).contains(&n) => n as u32,
            Some(n) => {
                return Err(ValidationError::new(
                    "max_refills",
                    format!("must be between 0 and {MAX_REFILLS}, got {n}"),
                ))
            }
        };
        Ok(Self { min_valid, max_refills })
    }

    /// The group a batch of `size` tasks with this policy starts as: no refill used yet.
    pub fn group(self, group_id: GroupId, size: u32) -> Group {
        Group {
            group_id,
            size,
            // Validation keeps it in 1..=size; a store called directly gets it clamped there too.
            min_valid: self.min_valid.unwrap_or(size).clamp(1.min(size), size),
            max_refills: self.max_refills,
            refills: 0,
        }
    }
}

/// What a store keeps of a batch group besides its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group.
    pub group_id: GroupId,
    /// How many tasks the batch created (replacements not counted).
    pub size: u32,
    /// Valid members the group needs.
    pub min_valid: u32,
    /// Replacements the store may create.
    pub max_refills: u32,
    /// Replacements created so far (never more than `max_refills`).
    pub refills: u32,
}

impl Group {
    /// What a group created before groups were recorded is taken to be: `size` members, all needed, no refills.
    pub fn unrecorded(group_id: GroupId, size: u32) -> Self {
        GroupPolicy::default().group(group_id, size)
    }

    /// Whether a member that has just aborted is to be replaced: refills remain and the members that are valid
    /// or may still become so (pending, running, completed; the aborted one is no longer among them) are fewer
    /// than `min_valid`.
    pub fn needs_refill<'a>(&self, members: impl IntoIterator<Item = &'a Task>) -> bool {
        if self.refills >= self.max_refills {
            return false;
        }
        let hopeful = members
            .into_iter()
            .filter(|task| {
                matches!(
                    task.status,
                    TaskStatus::Pending | TaskStatus::Running | TaskStatus::Completed
                )
            })
            .count();
        hopeful < self.min_valid as usize
    }

    /// Where the group stands, given its members (replacements included).
    pub fn status(&self, members: &[Task]) -> GroupStatus {
        if members.iter().any(|task| !task.status.is_terminal()) {
            return GroupStatus::Running;
        }
        let valid = members.iter().filter(|t| t.status == TaskStatus::Completed).count();
        let replaced: HashSet<TaskId> = members.iter().filter_map(|task| task.replaces).collect();
        let standing: Vec<&Task> = members.iter().filter(|task| !replaced.contains(&task.id)).collect();
        if standing.len() == self.size as usize && standing.iter().all(|t| t.status == TaskStatus::Completed) {
            GroupStatus::Complete
        } else if valid >= self.min_valid as usize {
            GroupStatus::Partial
        } else {
            GroupStatus::Failed
        }
    }
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GroupStatus {
    /// Some member is pending or running.
    Running,
    /// Every member that was not replaced is valid, and they are as many as the batch created.
    Complete,
    /// Not complete, but at least `min_valid` members are valid.
    Partial,
    /// Fewer than `min_valid` members are valid and none is left to run.
    Failed,
}

/// The mean and the population variance of `rewards`; `None` for both when there are none.
pub fn mean_and_variance(rewards: &[f64]) -> (Option<f64>, Option<f64>) {
    if rewards.is_empty() {
        return (None, None);
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let variance = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    (Some(mean), Some(variance))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;
    use chrono::Utc;

    fn member(status: TaskStatus) -> Task {
        let spec = NewTask::new("p").validate().expect("valid");
        let mut task = Task::pending(spec, None, Utc::now());
        task.status = status;
        task
    }

    #[test]
    fn policies_are_checked_naming_the_field() {
        assert_eq!(GroupPolicy::validate(None, None, 8), Ok(GroupPolicy::default()));
        assert_eq!(
            GroupPolicy::validate(Some(8), Some(3), 8).map(|p| p.min_valid),
            Ok(Some(8))
        );
        for (min_valid, max_refills, field) in [
            (Some(0), None, "min_valid"),
            (Some(9), None, "min_valid"),
            (None, Some(-1), "max_refills"),
            (None, Some(1001), "max_refills"),
        ] {
            let error = GroupPolicy::validate(min_valid, max_refills, 8).expect_err("refused");
            assert_eq!(error.field, field);
        }
        assert_eq!(GroupPolicy::default().group(GroupId::nil(), 8).min_valid, 8);
    }

    #[test]
    fn refills_follow_the_hopeful_members_and_the_budget() {
        let mut group = GroupPolicy {
            min_valid: Some(3),
            max_refills: 1,
        }
        .group(GroupId::nil(), 4);
        let members = [
            TaskStatus::Completed,
            TaskStatus::Running,
            TaskStatus::Failed,
            TaskStatus::Failed,
        ]
        .map(member);
        assert!(group.needs_refill(&members), "2 hopeful of 3 needed");
        group.refills = 1;
        assert!(!group.needs_refill(&members), "no refill left");
        group.min_valid = 2;
        group.refills = 0;
        assert!(!group.needs_refill(&members), "enough hopeful");
    }

    #[test]
    fn status_and_statistics() {
        let group = GroupPolicy {
            min_valid: Some(1),
            max_refills: 1,
        }
        .group(GroupId::nil(), 2);
        let mut members = vec![member(TaskStatus::Completed), member(TaskStatus::Failed)];
        assert_eq!(group.status(&members), GroupStatus::Partial);
        let mut refill = member(TaskStatus::Pending);
        refill.replaces = Some(members[1].id);
        members.push(refill);
        assert_eq!(group.status(&members), GroupStatus::Running);
        members[2].status = TaskStatus::Completed;
        assert_eq!(group.status(&members), GroupStatus::Complete);
        let failed = [member(TaskStatus::Failed), member(TaskStatus::Timeout)];
        assert_eq!(group.status(&failed), GroupStatus::Failed);
        assert_eq!(mean_and_variance(&[]), (None, None));
        assert_eq!(mean_and_variance(&[1.0, 0.0, 1.0, 0.0]), (Some(0.5), Some(0.25)));
    }
}
