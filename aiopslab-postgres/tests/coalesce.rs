//! Coalesced writes (group commit) against a real PostgreSQL: concurrent creates and finishes through one store
//! share statements, and still every call gets exactly its own answer — a spec the database refuses fails alone, a
//! stale lease fails alone, a replayed finish is acknowledged. (Claims shared by 32 workers over 10,000 tasks:
//! `tests/concurrency.rs`.)

mod common;

use aiopslab_core::store::prelude::*;
use aiopslab_core::{LeaseToken, NewTask, StoreError, TaskOutcome, TaskStatus, TerminalStatus, WorkerRegistration};
use aiopslab_postgres::testing::TestDatabase;
use common::*;

/// A spec the database refuses (here: a check constraint the test adds) fails alone; the creates that shared its
/// statement are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_fails_alone_and_its_batch_mates_are_created() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let mut conn = store.connection().await.unwrap();
    sqlx::query("ALTER TABLE tasks ADD CONSTRAINT test_refused CHECK (problem_id <> 'refused-by-test')")
        .execute(&mut conn)
        .await
        .unwrap();
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            let problem = if i % 6 == 0 {
                "refused-by-test".to_string()
            } else {
                format!("problem-{i}")
            };
            tokio::spawn(async move {
                (
                    problem.clone(),
                    store.create_task(NewTask::new(problem).validate().unwrap()).await,
                )
            })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        let (problem, result) = call.await.unwrap();
        match result {
            Ok(task) => {
                assert_ne!(problem, "refused-by-test");
                assert_eq!(task.problem_id, problem);
                created += 1;
            }
            Err(error) => {
                assert_eq!(problem, "refused-by-test", "only the refused spec fails: {error}");
                assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
            }
        }
    }
    assert_eq!(created, 50);
    assert_eq!(status_counts(&store).await.get("pending").copied(), Some(50));
    let creates = store.write_batches().creates;
    assert!(
        creates.items > creates.batches,
        "some creates shared a statement: {creates:?}"
    );
}

/// Finishes sharing statements: current leases finish (with a webhook delivery where the task has a callback URL),
/// a failure with retries left goes back to pending, stale leases fail with `LeaseLost`, a task reported twice is
/// finished once and the second report is acknowledged as a replay, an unknown task is `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_sharing_a_statement_each_get_their_own_answer() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    store
        .register_worker(WorkerRegistration::new("finisher", "default"))
        .await
        .unwrap();
    // Kinds of report, by task index modulo 6.
    const KINDS: [&str; 6] = ["done-hooked", "failed", "failed-retried", "stale", "twice", "done"];
    let specs = (0..48)
        .map(|i| {
            let task = NewTask::new(format!("problem-{i}"));
            match KINDS[i % 6] {
                "done-hooked" => NewTask {
                    callback_url: Some("http://127.0.0.1:9/hook".into()),
                    ..task
                },
                "failed-retried" => NewTask {
                    max_retries: Some(1),
                    ..task
                },
                _ => task,
            }
            .validate()
            .unwrap()
        })
        .collect();
    let created = store.create_tasks(specs).await.unwrap();
    let kind_of: std::collections::HashMap<uuid::Uuid, &str> =
        created.iter().enumerate().map(|(i, t)| (t.id, KINDS[i % 6])).collect();
    let mut tasks = Vec::new();
    while let Some(task) = store.claim(&request("finisher")).await.unwrap() {
        tasks.push(task);
    }
    assert_eq!(tasks.len(), 48);

    let failed = TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: None,
    };
    let mut reports: Vec<(LeaseToken, TaskOutcome, &str)> = Vec::new();
    for task in &tasks {
        let lease = task.lease_token();
        let kind = kind_of[&task.id];
        match kind {
            "failed" | "failed-retried" => reports.push((lease, failed.clone(), kind)),
            "stale" => {
                let stale = LeaseToken {
                    attempt: lease.attempt + 1,
                    ..lease
                };
                reports.push((stale, completed(), kind));
            }
            "twice" => {
                reports.push((lease, completed(), kind));
                reports.push((lease, completed(), kind));
            }
            _ => reports.push((lease, completed(), kind)),
        }
    }
    let unknown = LeaseToken {
        task_id: uuid::Uuid::now_v7(),
        attempt: 1,
    };
    reports.push((unknown, completed(), "unknown"));

    let calls: Vec<_> = reports
        .into_iter()
        .map(|(lease, outcome, kind)| {
            let store = store.clone();
            tokio::spawn(async move { (lease, kind, store.finish(lease, outcome).await) })
        })
        .collect();
    for call in calls {
        let (lease, kind, result) = call.await.unwrap();
        let expected = match kind {
            "failed" => Some(TaskStatus::Failed),
            "failed-retried" => Some(TaskStatus::Pending),
            "stale" | "unknown" => None,
            _ => Some(TaskStatus::Completed),
        };
        match (kind, result) {
            (_, Ok(task)) if Some(task.status) == expected => assert_eq!(task.id, lease.task_id),
            ("stale", Err(StoreError::LeaseLost { task_id, .. })) => assert_eq!(task_id, lease.task_id),
            ("unknown", Err(StoreError::NotFound { .. })) => {}
            (kind, other) => panic!("{kind} report for {}: unexpected {other:?}", lease.task_id),
        }
    }
    let counts = status_counts(&store).await;
    let expected: std::collections::BTreeMap<String, i64> =
        [("completed", 24), ("failed", 8), ("pending", 8), ("running", 8)]
            .into_iter()
            .map(|(status, n)| (status.to_string(), n))
            .collect();
    assert_eq!(
        counts, expected,
        "stale reports changed nothing; retried failures went back to pending"
    );
    let worker = store.get_worker("finisher").await.unwrap();
    assert_eq!(
        (worker.tasks_completed, worker.tasks_failed),
        (24, 16),
        "each report counted once"
    );
    let mut conn = store.connection().await.unwrap();
    let hooks: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_outbox")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(hooks, 8, "one delivery per finished task with a callback URL");
    let finishes = store.write_batches().finishes;
    assert!(
        finishes.items > finishes.batches,
        "reports shared statements: {finishes:?}"
    );
}

/// A claim whose caller gives up while its shared statement runs is handed back: the task returns to pending with
/// its attempt unspent, and nobody holds it. (The first claim is held up by a table lock the test takes, so the
/// next two queue behind it and share a statement; the third caller is cancelled meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_caller_gave_up_goes_back_to_pending() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let created = create_tasks(&store, 3).await;
    for worker in ["first", "second", "third"] {
        store
            .register_worker(WorkerRegistration::new(worker, "default"))
            .await
            .unwrap();
    }
    let mut blocker = store.connection().await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE tasks IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let claim = |worker: &'static str| {
        let store = store.clone();
        tokio::spawn(async move { store.claim(&request(worker)).await })
    };
    let first = claim("first");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = claim("second");
    let third = claim("third");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    third.abort();
    assert!(third.await.is_err(), "the third caller was cancelled");
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();

    let first = first.await.unwrap().unwrap().expect("the first claim got a task");
    let second = second.await.unwrap().unwrap().expect("the second claim got a task");
    assert_eq!(store.write_batches().claims.items, 3);
    let mut handed_back = None;
    for _ in 0..100 {
        let pending: Vec<(uuid::Uuid, i32, Option<String>)> =
            sqlx::query_as("SELECT id, attempt, worker_id FROM tasks WHERE status = 'pending'")
                .fetch_all(&mut blocker)
                .await
                .unwrap();
        if let [task] = pending.as_slice() {
            handed_back = Some(task.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (id, attempt, worker) = handed_back.expect("the abandoned claim's task came back to pending");
    assert!(created.contains(&id) && id != first.id && id != second.id);
    assert_eq!((attempt, worker), (0, None), "no attempt spent, held by nobody");
    let counts = status_counts(&store).await;
    assert_eq!(counts.get("running").copied(), Some(2), "{counts:?}");
}

/// One worker with 32 slots claims them in one call and reports all 32 runs at once: the claims share one
/// statement, the reports share transactions (fewer than the reports), and every run lands whole — its tail of
/// log entries after the live one, its trajectory, its completion — counted once for the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_many_at_once_and_its_final_reports_share_transactions() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    create_tasks(&store, 40).await;
    store
        .register_worker(WorkerRegistration::new("drainer", "default"))
        .await
        .unwrap();
    let claimed = store.claim_many(&request("drainer").up_to(32)).await.unwrap();
    assert_eq!(claimed.len(), 32, "32 free slots, 40 pending tasks");
    assert_eq!(
        store.write_batches().claims,
        aiopslab_postgres::BatchCounts { batches: 1, items: 1 }
    );
    let mut unique: Vec<_> = claimed.iter().map(|t| t.id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 32, "no task handed out twice");

    let reports: Vec<_> = claimed
        .iter()
        .map(|task| {
            let store = store.clone();
            let lease = task.lease_token();
            tokio::spawn(async move {
                store
                    .append_logs(
                        lease,
                        vec![aiopslab_core::NewLogEntry::new(aiopslab_core::LogLevel::Info, "live")],
                    )
                    .await
                    .unwrap();
                let report = aiopslab_core::FinalReport::new(completed())
                    .with_logs(vec![aiopslab_core::NewLogEntry::new(
                        aiopslab_core::LogLevel::Info,
                        "tail",
                    )])
                    .with_trajectory(Some(aiopslab_core::Trajectory {
                        task_id: lease.task_id,
                        ..Default::default()
                    }));
                let reports = store.final_reports().expect("PgStore takes final reports");
                reports.finish_run(lease, report).await
            })
        })
        .collect();
    for report in reports {
        assert_eq!(report.await.unwrap().unwrap().status, TaskStatus::Completed);
    }
    for task in &claimed {
        let logs = store.get_logs(task.id, &Default::default()).await.unwrap();
        let messages: Vec<&str> = logs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["live", "tail"], "task {}", task.id);
        assert!(store.get_trajectory(task.id).await.unwrap().is_some());
    }
    let worker = store.get_worker("drainer").await.unwrap();
    assert_eq!(worker.tasks_completed, 32, "each report counted once");
    let batches = store.write_batches().final_reports;
    assert_eq!(batches.items, 32);
    assert!(batches.batches < 32, "reports shared transactions: {batches:?}");
}
