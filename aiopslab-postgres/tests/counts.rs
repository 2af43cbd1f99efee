//! The maintained task counts (migration 005) and the listing totals read from them: exact under concurrent
//! creates, claims, finishes, requeues, cancels, sweeps, deletes and folds from two stores (as two server
//! replicas); backfilled when the migration runs on existing rows, by hand and again by the migrator; and above
//! the exact-count limit, an estimate that says so.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    NewTask, Page, TaskFilter, TaskOutcome, TaskQuery, TaskStatus, TerminalStatus, WorkerRegistration,
};
use aiopslab_postgres::testing::{advance_clock, TestDatabase};
use aiopslab_postgres::{PgStore, PgStoreOptions};
use common::*;
use sqlx::PgPool;

/// Counts per (status, backend type) as the table has them.
async fn real_counts(pool: &PgPool) -> BTreeMap<(String, String), i64> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT status, backend_type, count(*) FROM tasks GROUP BY status, backend_type")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().map(|(s, b, n)| ((s, b), n)).collect()
}

/// Checks every count the store reports against a real `GROUP BY`: stats, queue depth, and the listing totals of
/// each status and backend type.
async fn assert_counts_exact(store: &PgStore, pool: &PgPool, when: &str) {
    let real = real_counts(pool).await;
    let stats = store.stats().await.unwrap();
    for status in TaskStatus::ALL {
        let expected: i64 = real
            .iter()
            .filter(|((s, _), _)| s == status.as_str())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            stats.tasks_by_status[&status], expected as u64,
            "{when}: stats count of {status} (real counts {real:?})"
        );
        let listed = store
            .list_tasks(&TaskQuery::new(TaskFilter::default().with_status(Some(status))))
            .await
            .unwrap();
        assert_eq!(
            (listed.total, listed.total_is_estimate),
            (expected as u64, false),
            "{when}: total of status={status}"
        );
    }
    let depth: BTreeMap<String, u64> = real
        .iter()
        .filter(|((s, _), n)| s == "pending" && **n > 0)
        .map(|((_, b), n)| (b.clone(), *n as u64))
        .collect();
    assert_eq!(
        stats.queue_depth_by_backend, depth,
        "{when}: queue depth per backend type"
    );
    for backend in ["default", "gpu"] {
        let expected: i64 = real.iter().filter(|((_, b), _)| b == backend).map(|(_, n)| n).sum();
        let listed = store
            .list_tasks(&TaskQuery::new(
                TaskFilter::default().with_backend_type(Some(backend.into())),
            ))
            .await
            .unwrap();
        assert_eq!(listed.total, expected as u64, "{when}: total of backend_type={backend}");
    }
    let all: i64 = real.values().sum();
    let listed = store.list_tasks(&TaskQuery::new(TaskFilter::default())).await.unwrap();
    assert_eq!(
        (listed.total, listed.total_is_estimate),
        (all as u64, false),
        "{when}: total"
    );
}

fn spec(i: usize) -> aiopslab_core::TaskSpec {
    NewTask {
        backend_type: Some(if i % 4 == 0 { "gpu" } else { "default" }.into()),
        max_retries: Some(1),
        ..NewTask::new(format!("problem-{}", i % 7))
    }
    .validate()
    .unwrap()
}

fn failed() -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_under_concurrent_traffic_from_two_replicas() {
    let db = TestDatabase::create().await;
    let shared = db
        .store_with(policy(), &PgStoreOptions::default().max_connections(8))
        .await;
    // A second replica, writing one statement per call.
    let replica = db
        .store_with(
            policy(),
            &PgStoreOptions::default().max_connections(4).coalesce_writes(false),
        )
        .await;
    let pool = db.pool(&PgStoreOptions::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();

    // Creators: single creates (coalesced on the shared store) and batches, on both replicas.
    for c in 0..6 {
        let store = if c % 2 == 0 { shared.clone() } else { replica.clone() };
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                if c < 4 {
                    store.create_task(spec(i)).await.unwrap();
                } else {
                    store.create_tasks((i..i + 20).map(spec).collect()).await.unwrap();
                }
                i += 6;
                // Leave the workers room: the point is every kind of transition, not a long queue.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Workers: claim, then complete, fail (requeued once: max_retries 1), or abandon (left running for the sweep).
    for w in 0..8 {
        let store = if w % 2 == 0 { shared.clone() } else { replica.clone() };
        let backend = if w % 4 == 0 { "gpu" } else { "default" };
        let worker = format!("worker-{w}");
        store
            .register_worker(WorkerRegistration::new(&worker, backend))
            .await
            .unwrap();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = aiopslab_core::ClaimRequest::new(&worker, backend);
                let Some(task) = store.claim(&request).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                n += 1;
                match n % 5 {
                    0 => {}
                    1 | 2 => {
                        store.finish(task.lease_token(), failed()).await.unwrap();
                    }
                    _ => {
                        store.finish(task.lease_token(), completed()).await.unwrap();
                    }
                }
            }
        }));
    }
    // Cancels of whatever is newest (pending → cancelled; running → cancel requested), sweeps, folds from both
    // replicas, and a retention purge by hand (DELETE of finished tasks, which the counts must follow too).
    {
        let store = shared.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let page = store
                    .list_tasks(&TaskQuery::new(TaskFilter::default()).page(Page::new(Some(3), None).unwrap()))
                    .await
                    .unwrap();
                for task in page.tasks {
                    // Terminal by now is fine: the cancel is refused and changes nothing.
                    let _ = store.cancel_task(task.id).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for store in [shared.clone(), replica.clone()] {
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.sweep().await.unwrap();
                store.fold_task_counts().await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    {
        let pool = pool.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query(
                    "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE status IN ('completed', 'cancelled') \
                     ORDER BY created_at LIMIT 10)",
                )
                .execute(&pool)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.unwrap();
    }
    let real = real_counts(&pool).await;
    let finished: i64 = real
        .iter()
        .filter(|((s, _), _)| s != "pending" && s != "running")
        .map(|(_, n)| n)
        .sum();
    assert!(
        real.get(&("running".into(), "default".into())).copied().unwrap_or(0) > 0 && finished >= 20,
        "the traffic moved tasks through every kind of transition: {real:?}"
    );
    assert_counts_exact(&shared, &pool, "after the traffic").await;
    // Writes after the last fold leave deltas the reads must add.
    let late = shared.create_task(spec(3)).await.unwrap();
    shared.cancel_task(late.id).await.unwrap();
    let unfolded: i64 = sqlx::query_scalar("SELECT count(*) FROM task_count_deltas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(unfolded >= 2, "the create and the cancel appended deltas: {unfolded}");
    assert_counts_exact(&shared, &pool, "with deltas unfolded").await;

    // The abandoned runs: their leases expire, and a sweep requeues or fails them.
    advance_clock(&shared, Duration::from_secs(120)).await;
    let swept = replica.sweep().await.unwrap();
    assert!(!swept.requeued.is_empty() || !swept.failed.is_empty(), "{swept:?}");
    assert_counts_exact(&replica, &pool, "after the sweep").await;
    while shared.fold_task_counts().await.unwrap() > 0 {}
    let unfolded: i64 = sqlx::query_scalar("SELECT count(*) FROM task_count_deltas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unfolded, 0, "a fold moves every delta");
    assert_counts_exact(&shared, &pool, "after the last fold").await;

    // TRUNCATE resets them.
    sqlx::query("TRUNCATE tasks CASCADE").execute(&pool).await.unwrap();
    assert_counts_exact(&shared, &pool, "after TRUNCATE").await;
    shared.create_task(spec(1)).await.unwrap();
    assert_counts_exact(&shared, &pool, "after TRUNCATE and a create").await;
}

#[tokio::test]
async fn the_migration_counts_the_rows_that_exist_by_hand_and_again_by_the_migrator() {
    let db = TestDatabase::create().await;
    let pool = db.pool(&PgStoreOptions::default());
    for sql in [
        include_str!("../../migrations/001_create_tables.sql"),
        include_str!("../../migrations/002_batches_exports_webhooks.sql"),
        include_str!("../../migrations/003_trajectory_parts.sql"),
        include_str!("../../migrations/004_worker_instances.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    // Rows from before version 5: pending, running and finished, on two backend types.
    sqlx::raw_sql(
        "INSERT INTO tasks (problem_id, backend_type) SELECT 'p', CASE WHEN i % 3 = 0 THEN 'gpu' ELSE 'default' END \
         FROM generate_series(1, 30) AS i; \
         UPDATE tasks SET status = 'completed', worker_id = 'w', attempt = 1, started_at = now(), \
            completed_at = now() WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT 12); \
         UPDATE tasks SET status = 'running', worker_id = 'w', attempt = 1, started_at = now(), \
            lease_expires_at = now() + interval '1 minute' \
         WHERE id IN (SELECT id FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 5);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let version_5 = include_str!("../../migrations/005_task_counts.sql");
    sqlx::raw_sql(version_5).execute(&pool).await.expect("005 runs by hand");
    // The store reads the columns the later versions add (006: `experiment`, 007: `replaces`), so they run by hand
    // too.
    for later in [
        include_str!("../../migrations/006_experiments.sql"),
        include_str!("../../migrations/007_group_refills.sql"),
    ] {
        sqlx::raw_sql(later)
            .execute(&pool)
            .await
            .expect("a later version runs by hand");
    }
    let store = PgStore::from_pool(&pool, policy()).unwrap();
    assert_counts_exact(&store, &pool, "after 005 by hand").await;
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.tasks_by_status[&TaskStatus::Pending],
            stats.tasks_by_status[&TaskStatus::Running],
            stats.tasks_by_status[&TaskStatus::Completed]
        ),
        (13, 5, 12)
    );
    // Writes between the manual run and the migrator's are counted by the triggers; the migrator's run of 005
    // recounts, and must not count anything twice.
    store.create_task(spec(0)).await.unwrap();
    store.migrate().await.expect("the migrator runs after a manual run");
    assert_counts_exact(&store, &pool, "after the migrator").await;
    sqlx::raw_sql(version_5)
        .execute(&pool)
        .await
        .expect("005 runs by hand again");
    assert_counts_exact(&store, &pool, "after 005 by hand again").await;
    assert_eq!(store.stats().await.unwrap().tasks_by_status[&TaskStatus::Pending], 14);
}

#[tokio::test]
async fn totals_past_the_exact_count_limit_are_estimates_that_say_so() {
    let db = TestDatabase::create().await;
    let store = db
        .store_with(policy(), &PgStoreOptions::default().exact_count_limit(50))
        .await;
    let pool = db.pool(&PgStoreOptions::default());
    let specs = (0..130)
        .map(|i| {
            NewTask::new(if i < 120 { "popular" } else { "rare" })
                .validate()
                .unwrap()
        })
        .collect();
    store.create_tasks(specs).await.unwrap();
    sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
    let list = |filter: TaskFilter, offset: i64| {
        let store = store.clone();
        async move {
            let page = store
                .list_tasks(&TaskQuery::new(filter).page(Page::new(Some(10), Some(offset)).unwrap()))
                .await
                .unwrap();
            (page.tasks.len(), page.total, page.total_is_estimate)
        }
    };
    let problem = |p: &str| TaskFilter::default().with_problem_id(Some(p.into()));

    // Below the limit: counted.
    assert_eq!(list(problem("rare"), 0).await, (10, 10, false));
    assert_eq!(list(problem("none"), 0).await, (0, 0, false));
    // Above it: the planner's estimate (after ANALYZE, the real 120), flagged.
    let (n, total, estimate) = list(problem("popular"), 0).await;
    assert_eq!(n, 10);
    assert!(estimate, "past the limit the total is an estimate");
    assert!((51..=240).contains(&total), "a sensible estimate of 120: {total}");
    // Never below what the page proves: offset 115 + 5 tasks.
    let (n, total, estimate) = list(problem("popular"), 115).await;
    assert_eq!((n, estimate), (5, true));
    assert!(total >= 120, "{total}");
    // Status and backend type are read from the maintained counts: exact at any size.
    assert_eq!(list(TaskFilter::default(), 0).await, (10, 130, false));
    assert_eq!(
        list(TaskFilter::default().with_status(Some(TaskStatus::Pending)), 0).await,
        (10, 130, false)
    );
    // A problem with a status is counted from rows, not the maintained counts: all 120 are pending, so an estimate.
    let (_, total, estimate) = list(problem("popular").with_status(Some(TaskStatus::Pending)), 0).await;
    assert!(estimate && total > 50, "{total}");
}
