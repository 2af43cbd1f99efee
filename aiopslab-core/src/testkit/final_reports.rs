//! Checks of [`FinalReports`](crate::FinalReports): a run's last log entries, trajectory and outcome written in
//! one step, all or nothing, fenced by the lease, and safe to replay.

use super::logs::sample_trajectory;
use super::support::*;
use super::StoreHarness;
use crate::log::{LogLevel, LogQuery, NewLogEntry};
use crate::store::prelude::*;
use crate::store::FinalReport;
use crate::task::TaskStatus;
use crate::worker::{WorkerHeartbeat, WorkerStatus};

fn texts(entries: &[crate::log::LogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.as_str()).collect()
}

/// A final report appends its entries after those already stored, saves the trajectory and finishes the task;
/// replaying it returns the task unchanged and appends nothing again.
pub async fn final_report_writes_logs_trajectory_and_outcome<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let reports = store.final_reports().expect("this store offers final reports");
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    let lease = claim_some(&store, &request("w1")).await.lease_token();
    store
        .append_logs(lease, vec![NewLogEntry::new(LogLevel::Info, "live")])
        .await
        .expect("append_logs");
    let trajectory = sample_trajectory(task.id, 1.0, 2);
    let report = FinalReport::new(completed())
        .with_logs(vec![
            NewLogEntry::new(LogLevel::Info, "tail 1"),
            NewLogEntry::new(LogLevel::Warning, "tail 2"),
        ])
        .with_trajectory(Some(trajectory.clone()));
    let finished = reports.finish_run(lease, report.clone()).await.expect("finish_run");
    assert_eq!(finished.status, TaskStatus::Completed);
    assert_eq!(finished.attempt, 1);
    let logs = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    assert_eq!(
        texts(&logs),
        ["live", "tail 1", "tail 2"],
        "the tail follows the live log, in order"
    );
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        Some(trajectory),
        "the trajectory is saved"
    );
    assert_eq!(
        store.get_task(task.id).await.expect("get_task").status,
        TaskStatus::Completed
    );

    let replayed = reports
        .finish_run(lease, report)
        .await
        .expect("a replay is acknowledged");
    assert_eq!(replayed.status, TaskStatus::Completed);
    assert_eq!(
        replayed.completed_at, finished.completed_at,
        "the replay changes nothing"
    );
    let logs = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    assert_eq!(
        texts(&logs).len(),
        3,
        "a replay appends nothing again: {:?}",
        texts(&logs)
    );
}

/// A final report under a lease no longer held is `LeaseLost` and writes nothing: no entry, no trajectory.
pub async fn final_report_of_a_lost_lease_writes_nothing<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let reports = store.final_reports().expect("this store offers final reports");
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    let lease = claim_some(&store, &request("w1")).await.lease_token();
    // The worker's heartbeat lists nothing: the store hands the task back (pending, `not_held`). Busy, so a
    // server's scheduler hands nothing over in the answer.
    store
        .heartbeat(&WorkerHeartbeat::new("w1", WorkerStatus::Busy).with_running_task_ids(Some(Vec::new())))
        .await
        .expect("heartbeat");
    let report = FinalReport::new(completed())
        .with_logs(vec![NewLogEntry::new(LogLevel::Info, "late")])
        .with_trajectory(Some(sample_trajectory(task.id, 1.0, 1)));
    assert_lease_lost(
        reports.finish_run(lease, report).await,
        "finish_run after the hand-back",
    );
    let logs = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    assert!(
        !texts(&logs).contains(&"late"),
        "nothing of the refused report is stored: {:?}",
        texts(&logs)
    );
    assert_eq!(store.get_trajectory(task.id).await.expect("get_trajectory"), None);
    assert_eq!(
        store.get_task(task.id).await.expect("get_task").status,
        TaskStatus::Pending
    );
}

/// A failed run reported with retries left is requeued, its log tail kept, like a failed `finish`.
pub async fn final_report_of_a_failure_with_retries_requeues<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let reports = store.final_reports().expect("this store offers final reports");
    register_all(&store, &["w1"]).await;
    let task = create(&store, retrying("p", 1)).await;
    let lease = claim_some(&store, &request("w1")).await.lease_token();
    let report = FinalReport::new(failed("boom")).with_logs(vec![NewLogEntry::new(LogLevel::Error, "it broke")]);
    let requeued = reports.finish_run(lease, report.clone()).await.expect("finish_run");
    assert_eq!(requeued.status, TaskStatus::Pending, "retries left: requeued");
    let replayed = reports
        .finish_run(lease, report)
        .await
        .expect("a replay is acknowledged");
    assert_eq!(replayed.status, TaskStatus::Pending);
    let logs = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    assert_eq!(
        texts(&logs).iter().filter(|m| **m == "it broke").count(),
        1,
        "{:?}",
        texts(&logs)
    );
}
