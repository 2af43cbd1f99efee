//! PgStore against a real PostgreSQL: the schema, each operation, and the rules of the lifecycle.
//!
//! Databases come from `aiopslab_postgres::testing` (DATABASE_URL, else a throwaway server).

use std::time::Duration;

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    CancelOutcome, ClaimRequest, ErrorDetails, LeasePolicy, LogLevel, LogQuery, NewLogEntry, NewTask, Page, StoreError,
    TaskFilter, TaskOutcome, TaskResult, TaskSort, TaskStatus, TerminalStatus, Trajectory, TrajectoryMessage,
    WorkerFilter, WorkerHeartbeat, WorkerRegistration, WorkerStatus,
};
use aiopslab_postgres::testing::{advance_clock, TestDatabase};
use aiopslab_postgres::PgStore;

fn policy() -> LeasePolicy {
    LeasePolicy::default()
        .with_lease_duration(Duration::from_secs(60))
        .with_worker_offline_after(Duration::from_secs(90))
        .with_timeout_grace(Duration::from_secs(60))
        .with_dispatch_delay(Duration::ZERO)
}

fn spec(problem: &str) -> aiopslab_core::TaskSpec {
    NewTask::new(problem).validate().unwrap()
}

fn with_priority(problem: &str, priority: i64) -> aiopslab_core::TaskSpec {
    NewTask {
        priority: Some(priority),
        ..NewTask::new(problem)
    }
    .validate()
    .unwrap()
}

fn claim_req(worker: &str) -> ClaimRequest {
    ClaimRequest::new(worker, "default")
}

fn completed() -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult {
            logs: vec!["done".into()],
            ..TaskResult::default()
        }),
        error: None,
    }
}

/// Registers each of `ids` (backend type `default`): only registered, live workers claim.
async fn live(store: &PgStore, ids: &[&str]) {
    for id in ids {
        store
            .register_worker(WorkerRegistration::new(*id, "default"))
            .await
            .unwrap();
    }
}

async fn fresh() -> (TestDatabase, PgStore) {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    (db, store)
}

#[tokio::test]
async fn schema_applied_by_hand_then_by_the_migrator() {
    let db = TestDatabase::create().await;
    let pool = db.pool(&Default::default());
    // The quickstart: `psql aiopslab_tasks < migrations/001_create_tables.sql`, twice for good measure.
    let sql = include_str!("../../migrations/001_create_tables.sql");
    let sql_002 = include_str!("../../migrations/002_batches_exports_webhooks.sql");
    sqlx::raw_sql(sql).execute(&pool).await.expect("001 runs by hand");
    sqlx::raw_sql(sql).execute(&pool).await.expect("001 runs by hand again");
    sqlx::raw_sql(sql_002).execute(&pool).await.expect("002 runs by hand");
    sqlx::raw_sql(sql_002)
        .execute(&pool)
        .await
        .expect("002 runs by hand again");
    // Then the embedded migrator, twice (it records both files).
    let store = PgStore::from_pool(&pool, policy()).unwrap();
    store.migrate().await.expect("migrator runs after a manual run");
    store.migrate().await.expect("migrator runs again");
    // And by hand once more, after the migrator.
    sqlx::raw_sql(sql)
        .execute(&pool)
        .await
        .expect("001 runs by hand after the migrator");

    // The quickstart's debugging queries work as written.
    let task = store.create_task(spec("p")).await.unwrap();
    store
        .register_worker(WorkerRegistration::new("worker-001-kind", "default"))
        .await
        .unwrap();
    store.claim(&claim_req("worker-001-kind")).await.unwrap().unwrap();
    let running: Vec<(uuid::Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, worker_id FROM tasks WHERE status='running';")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        running,
        vec![(task.id, "running".to_string(), Some("worker-001-kind".to_string()))]
    );
    let workers: Vec<(String, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, status, last_heartbeat FROM workers;")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].1, "idle");
}

#[tokio::test]
async fn constraints_keep_impossible_states_out() {
    let (db, _store) = fresh().await;
    let pool = &db.pool(&Default::default());
    for bad in [
        "INSERT INTO tasks (problem_id, status) VALUES ('p', 'done')",
        "INSERT INTO tasks (problem_id, max_steps) VALUES ('p', 0)",
        "INSERT INTO tasks (problem_id, max_steps) VALUES ('p', 1001)",
        "INSERT INTO tasks (problem_id, timeout_minutes) VALUES ('p', 181)",
        "INSERT INTO tasks (problem_id, priority) VALUES ('p', 11)",
        "INSERT INTO tasks (problem_id, attempt) VALUES ('p', -1)",
        "INSERT INTO tasks (problem_id, status) VALUES ('p', 'running')",
        "INSERT INTO tasks (problem_id, status, worker_id, attempt, started_at) VALUES ('p', 'running', 'w', 1, now())",
        "INSERT INTO tasks (problem_id, status) VALUES ('p', 'completed')",
        "INSERT INTO workers (id, status) VALUES ('w', 'asleep')",
    ] {
        let err = sqlx::query(bad).execute(pool).await.expect_err(bad);
        let code = err.as_database_error().and_then(|e| e.code()).unwrap_or_default();
        assert!(code.starts_with("23"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn create_get_list_and_stats() {
    let (_db, store) = fresh().await;
    let t1 = store.create_task(with_priority("a", 1)).await.unwrap();
    let t2 = store.create_task(with_priority("b", 9)).await.unwrap();
    let batch = store.create_tasks(vec![spec("c"), spec("d"), spec("e")]).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.problem_id.as_str()).collect::<Vec<_>>(),
        ["c", "d", "e"]
    );
    assert_eq!(store.get_task(t1.id).await.unwrap(), t1);
    assert_eq!(t1.status, TaskStatus::Pending);
    assert_eq!(t1.attempt, 0);
    assert!(matches!(
        store.get_task(uuid::Uuid::new_v4()).await,
        Err(StoreError::NotFound { entity: "task", .. })
    ));

    let page = store
        .list_tasks(
            &TaskQuery::new(TaskFilter::default())
                .sorted(TaskSort::PriorityDesc)
                .page(Page::new(Some(2), None).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(page.tasks.len(), 2);
    assert_eq!(page.tasks[0].id, t2.id);
    let page = store
        .list_tasks(
            &TaskQuery::new(TaskFilter::default())
                .sorted(TaskSort::CreatedAsc)
                .page(Page::new(Some(100), Some(4)).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(page.tasks.len(), 1);
    let filter = TaskFilter::default()
        .with_problem_id(Some("b".into()))
        .with_status(Some(TaskStatus::Pending));
    let page = store
        .list_tasks(&TaskQuery::new(filter.clone()).sorted(TaskSort::CreatedDesc))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.tasks[0].id, t2.id);

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.tasks_by_status[&TaskStatus::Pending], 5);
    assert_eq!(stats.tasks_by_status[&TaskStatus::Running], 0);
    assert_eq!(stats.queue_depth_by_backend["default"], 5);
    assert_eq!(stats.workers_by_status[&WorkerStatus::Idle], 0);
}

#[tokio::test]
async fn claim_order_backend_problems_and_task_id() {
    let (_db, store) = fresh().await;
    live(&store, &["w1", "w2", "w3", "w4"]).await;
    let low = store.create_task(with_priority("low", 1)).await.unwrap();
    let high_old = store.create_task(with_priority("high-old", 8)).await.unwrap();
    let high_new = store.create_task(with_priority("high-new", 8)).await.unwrap();
    let other = store
        .create_task(
            NewTask {
                backend_type: Some("gpu".into()),
                ..NewTask::new("gpu-task")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();

    let restricted = claim_req("w1").for_problems(Some(vec!["low".into()]));
    assert_eq!(store.claim(&restricted).await.unwrap().unwrap().id, low.id);
    let by_id = claim_req("w1").for_task(Some(high_new.id));
    let claimed = store.claim(&by_id).await.unwrap().unwrap();
    assert_eq!(claimed.id, high_new.id);
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.worker_id.as_deref(), Some("w1"));
    assert!(claimed.lease_expires_at.unwrap() > claimed.started_at.unwrap());
    assert!(
        store.claim(&by_id).await.unwrap().is_none(),
        "a claimed task is not claimed twice"
    );
    assert_eq!(store.claim(&claim_req("w2")).await.unwrap().unwrap().id, high_old.id);
    assert!(
        store.claim(&claim_req("w3")).await.unwrap().is_none(),
        "gpu task is not for default"
    );
    let gpu = ClaimRequest::new("w4", "gpu");
    assert_eq!(store.claim(&gpu).await.unwrap().unwrap().id, other.id);
}

#[tokio::test]
async fn dispatch_delay_holds_new_tasks_back() {
    let db = TestDatabase::create().await;
    let store = db.store(policy().with_dispatch_delay(Duration::from_secs(2))).await;
    live(&store, &["w"]).await;
    store.create_task(spec("p")).await.unwrap();
    assert!(store.claim(&claim_req("w")).await.unwrap().is_none());
    advance_clock(&store, Duration::from_secs(3)).await;
    assert!(store.claim(&claim_req("w")).await.unwrap().is_some());
}

#[tokio::test]
async fn worker_writes_are_fenced_by_the_lease() {
    let (_db, store) = fresh().await;
    live(&store, &["w"]).await;
    let task = store.create_task(spec("p")).await.unwrap();
    let claimed = store.claim(&claim_req("w")).await.unwrap().unwrap();
    let lease = claimed.lease_token();
    let stale = aiopslab_core::LeaseToken {
        attempt: lease.attempt + 1,
        ..lease
    };
    let unknown = aiopslab_core::LeaseToken {
        task_id: uuid::Uuid::new_v4(),
        attempt: 1,
    };

    let extended = store.extend_lease(lease).await.unwrap();
    assert!(!extended.cancel_requested);
    assert!(matches!(
        store.extend_lease(stale).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.extend_lease(unknown).await,
        Err(StoreError::NotFound { .. })
    ));

    let entries = vec![NewLogEntry::new(LogLevel::Info, "hello")];
    store.append_logs(lease, entries.clone()).await.unwrap();
    assert!(matches!(
        store.append_logs(stale, entries.clone()).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.append_logs(unknown, entries.clone()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.append_logs(stale, vec![]).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.append_logs(lease, vec![]).await.unwrap();

    let trajectory = Trajectory {
        messages: vec![TrajectoryMessage::new("system", "you are an SRE")],
        reward: Some(1.0),
        ..Trajectory::default()
    };
    store.save_trajectory(lease, trajectory.clone()).await.unwrap();
    assert!(matches!(
        store.save_trajectory(stale, trajectory.clone()).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let saved = store.get_trajectory(task.id).await.unwrap().unwrap();
    assert_eq!(saved.task_id, task.id);
    assert_eq!(saved.messages, trajectory.messages);
    assert!(matches!(
        store.get_trajectory(uuid::Uuid::new_v4()).await,
        Err(StoreError::NotFound { .. })
    ));

    let done = store.finish(lease, completed()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert!(done.completed_at.is_some());
    assert!(done.lease_expires_at.is_none());
    assert_eq!(done.result, completed().result);
    // A replay of the same finish is acknowledged with the task, unchanged.
    assert_eq!(store.finish(lease, completed()).await.unwrap(), done);
    // A different status for the same attempt is refused, as is every other write.
    let failed = TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: Some(ErrorDetails::new("backend_error", "x")),
    };
    assert!(matches!(
        store.finish(lease, failed).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.append_logs(lease, entries).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.extend_lease(lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.finish(unknown, completed()).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn failed_with_retries_requeues_and_counts() {
    let (_db, store) = fresh().await;
    store
        .register_worker(WorkerRegistration::new("w", "default"))
        .await
        .unwrap();
    let task = store
        .create_task(
            NewTask {
                max_retries: Some(1),
                ..NewTask::new("p")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    let failure = TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: Some(ErrorDetails::new("backend_error", "cluster gone")),
    };
    let first = store.claim(&claim_req("w")).await.unwrap().unwrap();
    let requeued = store.finish(first.lease_token(), failure.clone()).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Pending);
    assert_eq!(requeued.worker_id, None);
    assert_eq!(requeued.started_at, None);
    assert_eq!(requeued.error_details, failure.error);
    assert!(requeued.completed_at.is_none());
    // The replay of the requeueing finish is acknowledged too.
    assert_eq!(
        store.finish(first.lease_token(), failure.clone()).await.unwrap(),
        requeued
    );

    let second = store.claim(&claim_req("w")).await.unwrap().unwrap();
    assert_eq!(second.id, task.id);
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.error_details, failure.error,
        "earlier error kept until the task finishes"
    );
    let failed = store.finish(second.lease_token(), failure.clone()).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(failed.completed_at.is_some());

    let worker = store.get_worker("w").await.unwrap();
    assert_eq!(worker.tasks_failed, 2);
    assert_eq!(worker.tasks_completed, 0);
}

#[tokio::test]
async fn cancel_pending_running_terminal_unknown() {
    let (_db, store) = fresh().await;
    live(&store, &["w"]).await;
    let pending = store.create_task(spec("a")).await.unwrap();
    assert_eq!(store.cancel_task(pending.id).await.unwrap(), CancelOutcome::Cancelled);
    let cancelled = store.get_task(pending.id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.completed_at.is_some());
    assert!(matches!(
        store.cancel_task(pending.id).await,
        Err(StoreError::AlreadyTerminal {
            status: TaskStatus::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        store.cancel_task(uuid::Uuid::new_v4()).await,
        Err(StoreError::NotFound { .. })
    ));

    store.create_task(spec("b")).await.unwrap();
    let running = store.claim(&claim_req("w")).await.unwrap().unwrap();
    assert_eq!(
        store.cancel_task(running.id).await.unwrap(),
        CancelOutcome::CancelRequested
    );
    assert_eq!(
        store.cancel_task(running.id).await.unwrap(),
        CancelOutcome::CancelRequested
    );
    assert!(
        store
            .extend_lease(running.lease_token())
            .await
            .unwrap()
            .cancel_requested
    );
}

#[tokio::test]
async fn logs_read_back_in_order_with_filters() {
    let (_db, store) = fresh().await;
    live(&store, &["w"]).await;
    let task = store.create_task(spec("p")).await.unwrap();
    let lease = store.claim(&claim_req("w")).await.unwrap().unwrap().lease_token();
    let levels = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
    ];
    let batch: Vec<NewLogEntry> = (0..250)
        .map(|i| NewLogEntry::new(levels[i % 5], format!("line {i}")).at_step(i as u32))
        .collect();
    store.append_logs(lease, batch[..100].to_vec()).await.unwrap();
    store.append_logs(lease, batch[100..].to_vec()).await.unwrap();

    let all = store.get_logs(task.id, &LogQuery::default()).await.unwrap();
    assert_eq!(all.len(), 250);
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry.message, format!("line {i}"));
        assert_eq!(entry.context.step, Some(i as u32));
        assert_eq!(entry.task_id, task.id);
    }
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));

    let warn = store
        .get_logs(task.id, &LogQuery::default().with_min_level(Some(LogLevel::Error)))
        .await
        .unwrap();
    assert_eq!(warn.len(), 100);
    assert!(warn.iter().all(|e| e.level >= LogLevel::Error));

    let after = store
        .get_logs(
            task.id,
            &LogQuery::default()
                .with_after_id(Some(all[199].id))
                .with_limit(Some(10)),
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 10);
    assert_eq!(after[0].id, all[200].id);

    let since = store
        .get_logs(task.id, &LogQuery::default().with_since(Some(all[0].timestamp)))
        .await
        .unwrap();
    assert_eq!(since.len(), 250, "since is inclusive");
    let future = store
        .get_logs(
            task.id,
            &LogQuery::default().with_since(Some(all[249].timestamp + chrono::Duration::seconds(1))),
        )
        .await
        .unwrap();
    assert!(future.is_empty());

    assert!(matches!(
        store.get_logs(uuid::Uuid::new_v4(), &LogQuery::default()).await,
        Err(StoreError::NotFound { .. })
    ));
    let other = store.create_task(spec("q")).await.unwrap();
    assert!(store.get_logs(other.id, &LogQuery::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn workers_register_beat_and_go_offline() {
    let (_db, store) = fresh().await;
    let mut registration = WorkerRegistration::new("w1", "default");
    registration.capabilities.supported_problems = Some(vec!["p".into()]);
    let worker = store.register_worker(registration.clone()).await.unwrap();
    assert_eq!(worker.status, WorkerStatus::Idle);
    assert_eq!(worker.capabilities.supported_problems, Some(vec!["p".to_string()]));
    assert!(matches!(
        store.register_worker(registration.clone()).await,
        Err(StoreError::WorkerAlive(_))
    ));

    store.create_task(spec("p")).await.unwrap();
    let task = store.claim(&claim_req("w1")).await.unwrap().unwrap();
    store.cancel_task(task.id).await.unwrap();
    advance_clock(&store, Duration::from_secs(30)).await;
    let ack = store
        .heartbeat(&WorkerHeartbeat::new("w1", WorkerStatus::Busy).with_current_task_id(Some(task.id)))
        .await
        .unwrap();
    assert!(ack.acknowledged);
    assert_eq!(ack.cancelled_task_ids, vec![task.id]);
    let lease = ack.lease_expires_at.expect("the worker has a running task");
    let reread = store.get_task(task.id).await.unwrap();
    assert_eq!(reread.lease_expires_at, Some(lease));
    assert!(lease > task.lease_expires_at.unwrap() - chrono::Duration::seconds(30));
    let worker = store.get_worker("w1").await.unwrap();
    assert_eq!(worker.status, WorkerStatus::Busy);
    assert_eq!(worker.current_task_id, Some(task.id));

    assert!(matches!(
        store
            .heartbeat(&WorkerHeartbeat::new("nobody", WorkerStatus::Idle))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .heartbeat(&WorkerHeartbeat::new("w1", WorkerStatus::Offline))
            .await,
        Err(StoreError::Invalid(_))
    ));

    // Silent past the threshold: the sweep marks it offline, and the id can be registered again.
    advance_clock(&store, Duration::from_secs(91)).await;
    let report = store.sweep().await.unwrap();
    assert_eq!(report.workers_offline, vec!["w1".to_string()]);
    assert_eq!(store.get_worker("w1").await.unwrap().status, WorkerStatus::Offline);
    store.register_worker(registration).await.unwrap();

    store
        .register_worker(WorkerRegistration::new("w2", "gpu"))
        .await
        .unwrap();
    store.deregister_worker("w2").await.unwrap();
    assert!(matches!(
        store.deregister_worker("nobody").await,
        Err(StoreError::NotFound { .. })
    ));
    let page = store
        .list_workers(&WorkerFilter::default().with_status(Some(WorkerStatus::Offline)))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.workers[0].id, "w2");
    assert_eq!(store.list_workers(&WorkerFilter::default()).await.unwrap().total, 2);
}

#[tokio::test]
async fn sweep_requeues_fails_and_times_out() {
    let (_db, store) = fresh().await;
    live(&store, &["w"]).await;
    let retry = store
        .create_task(
            NewTask {
                max_retries: Some(1),
                priority: Some(10),
                ..NewTask::new("retry")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    let once = store.create_task(with_priority("once", 9)).await.unwrap();
    let short = store
        .create_task(
            NewTask {
                timeout_minutes: Some(1),
                priority: Some(8),
                ..NewTask::new("short")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        store.claim(&claim_req("w")).await.unwrap().unwrap();
    }
    assert!(store.sweep().await.unwrap().is_empty());

    // Keep the short task's lease alive; let the others expire.
    advance_clock(&store, Duration::from_secs(61)).await;
    store
        .extend_lease(store.get_task(short.id).await.unwrap().lease_token())
        .await
        .unwrap();
    let report = store.sweep().await.unwrap();
    assert_eq!(report.requeued, vec![retry.id]);
    assert_eq!(report.failed, vec![once.id]);
    assert!(report.timed_out.is_empty());
    let requeued = store.get_task(retry.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Pending);
    assert_eq!(requeued.error_details.unwrap().code, "worker_lost");
    let failed = store.get_task(once.id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(failed
        .error_details
        .unwrap()
        .message
        .contains("stopped renewing its lease"));

    // 1 minute + 60 s grace after the start, the short task times out (its lease still looks fresh).
    advance_clock(&store, Duration::from_secs(30)).await;
    store
        .extend_lease(store.get_task(short.id).await.unwrap().lease_token())
        .await
        .unwrap();
    advance_clock(&store, Duration::from_secs(30)).await;
    let report = store.sweep().await.unwrap();
    assert_eq!(report.timed_out, vec![short.id]);
    let timed_out = store.get_task(short.id).await.unwrap();
    assert_eq!(timed_out.status, TaskStatus::Timeout);
    assert_eq!(timed_out.error_details.unwrap().code, "timeout");
    assert!(store.sweep().await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_never_leak_sql() {
    let (_db, store) = fresh().await;
    // An out-of-range value that bypassed validation is refused by a constraint, named by field.
    let mut bad = spec("p");
    bad.parameters.max_steps = 5000;
    match store.create_task(bad).await {
        Err(StoreError::Invalid(e)) => {
            assert_eq!(e.field, "max_steps");
            assert!(!e.message.to_lowercase().contains("insert"), "{e}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}
