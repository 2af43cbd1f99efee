//! Checks under contention: many claimers never get the same task twice and
//! lose none, and concurrent sweeps never handle an expired lease twice nor
//! touch a fresh one.
//!
//! They spawn tokio tasks, so they are most telling on a multi-threaded
//! runtime (`#[tokio::test(flavor = "multi_thread")]`); on a current-thread
//! runtime they still check the bookkeeping.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::support::*;
use super::StoreHarness;
use crate::query::{Page, SweepReport, TaskFilter, TaskSort};
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{TaskId, TaskSpec, TaskStatus};

/// Creates `specs` in batches (a single huge insert is not what is tested).
async fn create_all<S: TaskStore>(store: &S, specs: Vec<TaskSpec>) -> Vec<TaskId> {
    let mut ids = Vec::with_capacity(specs.len());
    let mut specs = specs.into_iter().peekable();
    while specs.peek().is_some() {
        let batch: Vec<TaskSpec> = specs.by_ref().take(500).collect();
        let created = store.create_tasks(batch).await.expect("create_tasks");
        ids.extend(created.into_iter().map(|t| t.id));
    }
    ids
}

async fn count<S: TaskStore>(store: &S, status: TaskStatus) -> u64 {
    store
        .list_tasks(
            &TaskQuery::new(TaskFilter {
                status: Some(status),
                ..Default::default()
            })
            .sorted(TaskSort::CreatedAsc)
            .page(Page { limit: 1, offset: 0 }),
        )
        .await
        .expect("list_tasks")
        .total
}

/// Runs `claimers` concurrent workers that claim and (when `finish`) complete
/// tasks until none is left; returns every claimed task id with its attempt.
async fn drain<S: TaskStore>(store: &Arc<S>, claimers: usize, prefix: &str, finish: bool) -> Vec<(TaskId, u32)> {
    let mut handles = Vec::with_capacity(claimers);
    for c in 0..claimers {
        let store = Arc::clone(store);
        let worker = format!("{prefix}-{c}");
        handles.push(tokio::spawn(async move {
            register(store.as_ref(), &worker, "default").await;
            let mut claimed = Vec::new();
            while let Some(task) = store.claim(&request(&worker)).await.expect("claim") {
                // Only live workers claim: a long drain beats now and then, as a worker does.
                if claimed.len() % 100 == 99 {
                    let status = crate::worker::WorkerStatus::Busy;
                    store.heartbeat(&beat(&worker, status, None)).await.expect("heartbeat");
                }
                assert_eq!(
                    task.worker_id.as_deref(),
                    Some(worker.as_str()),
                    "the claim names its worker"
                );
                assert_eq!(task.status, TaskStatus::Running, "a claimed task is running");
                if finish {
                    let done = store.finish(task.lease_token(), completed()).await.unwrap_or_else(|e| {
                        panic!("finishing a task this claimer had just claimed failed (claimed twice?): {e}")
                    });
                    assert_eq!(done.status, TaskStatus::Completed, "the finish landed");
                }
                claimed.push((task.id, task.attempt));
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("a claimer panicked"));
    }
    all
}

fn assert_each_once(claimed: &[(TaskId, u32)], expected: &HashSet<TaskId>, what: &str) {
    let mut seen = HashSet::with_capacity(claimed.len());
    for (id, _) in claimed {
        assert!(seen.insert(*id), "{what}: task {id} was claimed twice");
    }
    assert_same_ids(&seen, expected, what);
}

/// Compares id sets, naming a few differences rather than printing thousands of ids.
fn assert_same_ids(got: &HashSet<TaskId>, expected: &HashSet<TaskId>, what: &str) {
    if got == expected {
        return;
    }
    let missing: Vec<&TaskId> = expected.difference(got).take(5).collect();
    let extra: Vec<&TaskId> = got.difference(expected).take(5).collect();
    panic!(
        "{what}: got {} ids, expected {}; {} missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
        got.len(),
        expected.len(),
        expected.difference(got).count(),
        got.difference(expected).count(),
    );
}

/// `claimers` concurrent workers drain `tasks` tasks: every task is claimed
/// exactly once (attempt 1) and completed; none is lost.
pub async fn concurrent_claims_exactly_once<H: StoreHarness>(h: &H, claimers: usize, tasks: usize) {
    let store = Arc::new(h.store(suite_policy()).await);
    let specs = (0..tasks)
        .map(|i| prioritized(&format!("problem-{}", i % 89), (i % 11) as i64))
        .collect();
    let created: HashSet<TaskId> = create_all(store.as_ref(), specs).await.into_iter().collect();
    assert_eq!(created.len(), tasks, "every task was created");
    let claimed = drain(&store, claimers, "claimer", true).await;
    assert_each_once(&claimed, &created, "concurrent claims");
    assert!(
        claimed.iter().all(|(_, attempt)| *attempt == 1),
        "no task needed a second attempt"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Completed).await,
        tasks as u64,
        "every task completed"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Pending).await,
        0,
        "no task left pending"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Running).await,
        0,
        "no task left running"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        stats.tasks_by_status.get(&TaskStatus::Completed).copied(),
        Some(tasks as u64),
        "stats agree"
    );
}

async fn sweep_concurrently<S: TaskStore>(store: &Arc<S>, sweepers: usize, rounds: usize) -> Vec<SweepReport> {
    let mut handles = Vec::with_capacity(sweepers);
    for _ in 0..sweepers {
        let store = Arc::clone(store);
        handles.push(tokio::spawn(async move {
            let mut reports = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                reports.push(store.sweep().await.expect("sweep"));
                tokio::task::yield_now().await;
            }
            reports
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("a sweeper panicked"));
    }
    all
}

/// `tasks` leases expire at once (half the tasks may retry); concurrent
/// sweeps requeue or fail each exactly once. Then `claimers` workers drain
/// the requeued tasks while sweeps keep running: the sweeps must not touch
/// those fresh leases, and every requeued task completes on attempt 2.
pub async fn concurrent_sweeps_do_not_double_handle<H: StoreHarness>(h: &H, claimers: usize, tasks: usize) {
    let store = Arc::new(h.store(suite_policy()).await);
    let specs = (0..tasks)
        .map(|i| retrying(&format!("problem-{}", i % 89), (i % 2) as i64))
        .collect();
    let ids = create_all(store.as_ref(), specs).await;
    // Odd positions may retry once, even ones may not.
    let retrying_ids: HashSet<TaskId> = ids.iter().copied().skip(1).step_by(2).collect();
    let final_ids: HashSet<TaskId> = ids.iter().copied().step_by(2).collect();
    let all: HashSet<TaskId> = ids.iter().copied().collect();

    let doomed = drain(&store, claimers, "doomed", false).await;
    assert_each_once(&doomed, &all, "claims before the crash");
    h.advance_clock(store.as_ref(), secs(61)).await;

    let sweepers = (claimers / 4).max(2);
    let reports = sweep_concurrently(&store, sweepers, 3).await;
    let mut handled: HashMap<TaskId, usize> = HashMap::new();
    let mut requeued = HashSet::new();
    let mut failed = HashSet::new();
    for report in &reports {
        assert!(report.timed_out.is_empty(), "nothing is past its timeout: {report:?}");
        for id in &report.requeued {
            *handled.entry(*id).or_default() += 1;
            requeued.insert(*id);
        }
        for id in &report.failed {
            *handled.entry(*id).or_default() += 1;
            failed.insert(*id);
        }
    }
    if let Some((id, times)) = handled.iter().find(|(_, times)| **times > 1) {
        panic!("task {id} was handled by {times} sweeps; each expired lease must be handled once");
    }
    assert_same_ids(
        &requeued,
        &retrying_ids,
        "the requeued tasks are exactly those with a retry left",
    );
    assert_same_ids(
        &failed,
        &final_ids,
        "the failed tasks are exactly those without retries",
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Running).await,
        0,
        "no lease is left running"
    );

    let done = Arc::new(AtomicBool::new(false));
    let mut sweeping = Vec::with_capacity(sweepers);
    for _ in 0..sweepers {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        sweeping.push(tokio::spawn(async move {
            let mut reports = Vec::new();
            while !done.load(Ordering::Acquire) {
                reports.push(store.sweep().await.expect("sweep"));
                tokio::task::yield_now().await;
            }
            reports
        }));
    }
    let reclaimed = drain(&store, claimers, "rescuer", true).await;
    done.store(true, Ordering::Release);
    for handle in sweeping {
        for report in handle.await.expect("a sweeper panicked") {
            assert!(
                report.requeued.is_empty() && report.failed.is_empty() && report.timed_out.is_empty(),
                "a sweep touched a fresh lease: {report:?}"
            );
        }
    }
    assert_each_once(&reclaimed, &retrying_ids, "claims after the requeue");
    assert!(
        reclaimed.iter().all(|(_, attempt)| *attempt == 2),
        "every rescue is attempt 2"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Completed).await,
        retrying_ids.len() as u64,
        "every requeued task completed"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Failed).await,
        final_ids.len() as u64,
        "every task without retries failed"
    );
    assert_eq!(
        count(store.as_ref(), TaskStatus::Pending).await,
        0,
        "nothing left pending"
    );
}
