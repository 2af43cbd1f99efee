//! Runs' final reports — each run's last log entries, its trajectory and its finish — written together: the
//! reports that arrive together (see the `coalesce` module) share one transaction, so a worker draining short
//! tasks on many slots pays one commit, and one update of its worker row, for the lot instead of three commits
//! per run ([`FinalReports`]).
//!
//! The transaction first locks, in id order, the tasks still running under the reports' leases; only those get
//! their statements (the logs, the trajectory, then one finish statement for all), so a report is written whole
//! or not at all. A report whose lease is not held writes nothing, and the finish's follow-up read tells a replay
//! (the report already landed: the task is returned, nothing is appended twice) from a lost lease or an unknown
//! task. A batch the database refuses is rolled back and written report by report, so one bad report does not
//! sink the others.

use std::collections::HashMap;

use aiopslab_core::sanitize::sanitized;
use aiopslab_core::{FinalReport, FinalReports, LeaseToken, StoreError, StoreResult, Task, TaskId};
use async_trait::async_trait;
use sqlx::Connection;

use crate::lease::{attempt, finish_many_query};
use crate::logs::append_logs_query;
use crate::rows::TaskRow;
use crate::sql;
use crate::trajectories::save_trajectory_query;
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

    /// One transaction for the reports at `indices` (no task twice): lock the held leases, then each held
    /// report's logs and trajectory, then one finish statement for all of them. Returns the tasks finished.
    async fn write_final_reports(
        &self,
        reports: &[Report],
        mut order: Vec<usize>,
    ) -> StoreResult<HashMap<TaskId, Task>> {
        order.sort_by_key(|&i| reports[i].0.task_id);
        let ids: Vec<TaskId> = order.iter().map(|&i| reports[i].0.task_id).collect();
        let attempts: Vec<i32> = order.iter().map(|&i| attempt(reports[i].0)).collect();
        // Every statement is built (and every trajectory encoded) before the transaction starts.
        let mut writes = Vec::with_capacity(order.len());
        for &i in &order {
            let (lease, report) = &reports[i];
            let logs = (!report.logs.is_empty()).then(|| append_logs_query(*lease, report.logs.clone()));
            let trajectory = report
                .trajectory
                .as_ref()
                .map(|trajectory| save_trajectory_query(*lease, trajectory))
                .transpose()?;
            writes.push((i, logs, trajectory));
        }

        let mut conn = self.conn_planning_per_run("final_report").await?;
        let result = async {
            let mut tx = conn.raw().begin().await?;
            let held: Vec<TaskId> = sqlx::query_scalar(sql::LOCK_HELD_LEASES)
                .bind(&ids)
                .bind(&attempts)
                .fetch_all(&mut *tx)
                .await?;
            let mut finishing = Vec::with_capacity(held.len());
            for (i, logs, trajectory) in writes {
                if !held.contains(&reports[i].0.task_id) {
                    continue;
                }
                for statement in logs.into_iter().chain(trajectory) {
                    statement.execute(&mut *tx).await?;
                }
                finishing.push(i);
            }
            let rows: Vec<TaskRow> = if finishing.is_empty() {
                Vec::new()
            } else {
                finish_many_query(finishing.iter().map(|&i| (reports[i].0, &reports[i].1.outcome)))
                    .fetch_all(&mut *tx)
                    .await?
            };
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
