//! Runs' final reports — each run's last log entries, its trajectory and its finish — written together: the
//! reports that arrive together (see the `coalesce` module) share one transaction, so a worker draining short
//! tasks on many slots pays one commit, and one update of its worker row, for the lot instead of three commits
//! per run ([`FinalReports`]).
//!
//! The transaction first locks, in id order, the tasks still running under the reports' leases; only those are
//! written — every log entry of the batch in one statement, every trajectory in another, then one finish
//! statement for all — so a report is written whole or not at all, in five round trips whatever the batch. A report whose lease is not held writes nothing, and the finish's follow-up read tells a replay
//! (the report already landed: the task is returned, nothing is appended twice) from a lost lease or an unknown
//! task. A batch the database refuses is rolled back and written report by report, so one bad report does not
//! sink the others.

use std::collections::{HashMap, HashSet};

use aiopslab_core::sanitize::sanitized;
use aiopslab_core::{FinalReport, FinalReports, LeaseToken, StoreError, StoreResult, Task, TaskId};
use async_trait::async_trait;
use sqlx::Connection;

use crate::jsonb::Jsonb;
use crate::lease::{attempt, finish_many_query};
use crate::rows::TaskRow;
use crate::sql;
use crate::trajectories::EncodedTrajectory;
use crate::PgStore;

/// One report on its way: its lease and the report, sanitized.
type Report = (LeaseToken, FinalReport);

#[async_trait]
impl FinalReports for PgStore {
    #[tracing::instrument(skip(self, report), fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?report.outcome.status))]
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        let mut report = sanitized(report);
        if let Some(trajectory) = &mut report.trajectory {
            trajectory.task_id = lease.task_id;
        }
        let (status, error) = (report.outcome.status, report.outcome.error.clone());
        let written = self
            .coalesced(
                &self.inner.final_reports,
                (lease, report),
                PgStore::flush_final_reports,
                PgStore::keep,
            )
            .await?;
        match written {
            Some(task) => {
                tracing::debug!(status = %task.status, "run reported");
                Ok(task)
            }
            None => self.finish_not_applied(lease, status, error.as_ref()).await,
        }
    }
}

impl PgStore {
    /// Writes one batch of reports: `Some(task)` for each written, `None` for each whose lease was not held. A task
    /// reported twice in the batch goes into a second transaction (each transaction finishes a task once).
    async fn flush_final_reports(self, reports: Vec<Report>) -> Vec<StoreResult<Option<Task>>> {
        let ids: Vec<TaskId> = reports.iter().map(|(lease, _)| lease.task_id).collect();
        write_in_rounds(&ids, |indices| self.write_final_reports(&reports, indices)).await
    }

    /// One transaction for the reports at `order` (no task twice): lock the held leases, then the held reports'
    /// log entries in one statement, their trajectories in another, and one finish statement for all of them.
    /// Returns the tasks finished.
    async fn write_final_reports(
        &self,
        reports: &[Report],
        mut order: Vec<usize>,
    ) -> StoreResult<HashMap<TaskId, Task>> {
        order.sort_by_key(|&i| reports[i].0.task_id);
        let ids: Vec<TaskId> = order.iter().map(|&i| reports[i].0.task_id).collect();
        let attempts: Vec<i32> = order.iter().map(|&i| attempt(reports[i].0)).collect();
        // Every trajectory is encoded before the transaction starts.
        let mut trajectories = Vec::new();
        for &i in &order {
            if let Some(trajectory) = &reports[i].1.trajectory {
                trajectories.push((i, EncodedTrajectory::of(trajectory)?));
            }
        }

        let mut conn = self.conn_planning_per_run("final_report").await?;
        let result = async {
            let mut tx = conn.raw().begin().await?;
            let held: HashSet<TaskId> = sqlx::query_scalar(sql::LOCK_HELD_LEASES)
                .bind(&ids)
                .bind(&attempts)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            let finishing: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| held.contains(&reports[i].0.task_id))
                .collect();
            if finishing.is_empty() {
                tx.rollback().await?;
                return Ok(Vec::new());
            }
            let logs = ReportedLogs::of(finishing.iter().map(|&i| &reports[i]));
            if !logs.task_ids.is_empty() {
                sqlx::query(sql::APPEND_REPORTED_LOGS)
                    .bind(&logs.task_ids)
                    .bind(&logs.levels)
                    .bind(&logs.messages)
                    .bind(&logs.contexts)
                    .execute(&mut *tx)
                    .await?;
            }
            let saved: Vec<&(usize, EncodedTrajectory)> = trajectories
                .iter()
                .filter(|(i, _)| held.contains(&reports[*i].0.task_id))
                .collect();
            if !saved.is_empty() {
                sqlx::query(sql::SAVE_REPORTED_TRAJECTORIES)
                    .bind(saved.iter().map(|(i, _)| reports[*i].0.task_id).collect::<Vec<_>>())
                    .bind(saved.iter().map(|(_, t)| &t.rest).collect::<Vec<_>>())
                    .bind(saved.iter().map(|(_, t)| t.reward).collect::<Vec<_>>())
                    .bind(saved.iter().map(|(_, t)| t.messages.as_str()).collect::<Vec<_>>())
                    .bind(saved.iter().map(|(_, t)| t.llm_calls.as_str()).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await?;
            }
            let rows: Vec<TaskRow> =
                finish_many_query(finishing.iter().map(|&i| (reports[i].0, &reports[i].1.outcome)))
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(rows)
        }
        .await;
        let rows = conn.done("final_report", result)?;
        rows.into_iter()
            .map(|row| Task::try_from(row).map(|task| (task.id, task)))
            .collect::<Result<_, StoreError>>()
    }
}

/// The log entries of several reports as the columns of one insert, in order.
#[derive(Default)]
struct ReportedLogs<'a> {
    task_ids: Vec<TaskId>,
    levels: Vec<&'a str>,
    messages: Vec<&'a str>,
    contexts: Vec<Jsonb<&'a aiopslab_core::LogContext>>,
}

impl<'a> ReportedLogs<'a> {
    fn of(reports: impl Iterator<Item = &'a Report>) -> Self {
        let mut logs = Self::default();
        for (lease, report) in reports {
            for entry in &report.logs {
                logs.task_ids.push(lease.task_id);
                logs.levels.push(entry.level.as_str());
                logs.messages.push(&entry.message);
                logs.contexts.push(Jsonb(&entry.context));
            }
        }
        logs
    }
}

/// Writes a batch of per-task items in rounds in which no task appears twice (`write` takes the indices of one
/// round and returns the tasks it changed): `Some(task)` for each item that changed its task, `None` for each that
/// did not (the caller finds out why). A round the database refuses is written again item by item, so one bad
/// item does not sink the others; a transient failure fails the whole round.
pub(crate) async fn write_in_rounds<'a, F, Fut>(task_ids: &[TaskId], write: F) -> Vec<StoreResult<Option<Task>>>
where
    F: Fn(Vec<usize>) -> Fut + 'a,
    Fut: std::future::Future<Output = StoreResult<HashMap<TaskId, Task>>> + 'a,
{
    let mut results: Vec<StoreResult<Option<Task>>> = task_ids.iter().map(|_| Ok(None)).collect();
    for round in rounds(task_ids.iter().copied()) {
        match write(round.clone()).await {
            Ok(mut changed) => {
                for &i in &round {
                    results[i] = Ok(changed.remove(&task_ids[i]));
                }
            }
            Err(error) if round.len() > 1 && !error.is_transient() => {
                for &i in &round {
                    results[i] = write(vec![i]).await.map(|mut changed| changed.remove(&task_ids[i]));
                }
            }
            Err(error) => {
                for &i in &round {
                    results[i] = Err(error.clone());
                }
            }
        }
    }
    results
}

/// Splits items into rounds in which no task appears twice, keeping their order: the first report of a task in
/// the first round, a second one in the next, and so on.
fn rounds(task_ids: impl Iterator<Item = TaskId>) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: Vec<Vec<TaskId>> = Vec::new();
    for (i, id) in task_ids.enumerate() {
        match seen.iter().position(|ids| !ids.contains(&id)) {
            Some(r) => {
                rounds[r].push(i);
                seen[r].push(id);
            }
            None => {
                rounds.push(vec![i]);
                seen.push(vec![id]);
            }
        }
    }
    rounds
}
