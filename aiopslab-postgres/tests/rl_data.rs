//! PgStore specifics of batches, idempotency keys, the export and the webhook outbox, beyond the core conformance
//! suite: a request waits on the holder of its idempotency key, a batch that breaks a constraint creates nothing
//! (and records no key), trajectories saved before version 3 of the schema are split by its migration and read back
//! whole, and the outbox row commits with the status change.

use std::time::Duration;

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    BatchSpec, ClaimRequest, ExportFilter, GroupId, IdempotencyKey, LeasePolicy, LlmCall, NewTask, StoreError, Task,
    TaskId, TaskOutcome, TaskSpec, TerminalStatus, Trajectory, TrajectoryMessage, WorkerRegistration,
};
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::PgStore;
use sqlx::Connection;

fn policy() -> LeasePolicy {
    LeasePolicy::default().with_dispatch_delay(Duration::ZERO)
}

fn spec(problem: &str) -> TaskSpec {
    NewTask::new(problem).validate().unwrap()
}

fn batch(specs: Vec<TaskSpec>) -> BatchSpec {
    BatchSpec {
        group_id: Some(GroupId::new_v4()),
        specs,
        policy: Default::default(),
    }
}

fn key(fingerprint: &str) -> IdempotencyKey {
    IdempotencyKey::new("held-key", fingerprint).unwrap()
}

/// Claims the task `task_id` (`None`: the next one) for worker `w`, registering it first if need be (only
/// registered workers claim).
async fn claim(store: &PgStore, task_id: Option<TaskId>) -> Task {
    match store.register_worker(WorkerRegistration::new("w", "default")).await {
        Ok(_) | Err(StoreError::WorkerAlive(_)) => {}
        Err(error) => panic!("register_worker: {error}"),
    }
    let request = ClaimRequest::new("w", "default").for_task(task_id);
    store.claim(&request).await.unwrap().expect("a task to claim")
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

/// A request whose key another transaction holds (uncommitted) waits for it: when the holder commits, the request
/// replays the holder's answer; when the holder rolls back, the request creates.
#[tokio::test]
async fn idempotency_key_requests_wait_for_the_holder() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    for commit in [true, false] {
        let mut holder = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
        let mut tx = holder.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, group_id, task_ids) VALUES ('held-key', 'fp', NULL, '{}')",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let racing = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .create_batch(batch(vec![spec("a"), spec("b")]), Some(key("fp")))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !racing.is_finished(),
            "the request waits while another transaction holds its key"
        );
        if commit {
            tx.commit().await.unwrap();
            let created = racing.await.unwrap().expect("the waiting request is answered");
            assert!(
                created.replayed,
                "the holder committed first: the request replays its answer"
            );
            assert!(created.tasks.is_empty(), "the holder's answer created no task");
            assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0, "nothing was created");
            sqlx::query("DELETE FROM idempotency_keys")
                .execute(&mut holder)
                .await
                .unwrap();
        } else {
            tx.rollback().await.unwrap();
            let created = racing.await.unwrap().expect("the waiting request is answered");
            assert!(!created.replayed, "the holder rolled back: the request creates");
            assert_eq!(created.tasks.len(), 2, "the whole batch");
            assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 2, "created once");
        }
    }
}

/// A batch with one task the schema refuses creates none of them, and records no idempotency key: the corrected
/// retry with the same key creates the batch.
#[tokio::test]
async fn a_refused_batch_creates_nothing_and_keeps_no_key() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let mut bad = spec("b");
    // Past the schema's bound (validation would refuse it; the store must not half-insert if it gets one).
    bad.parameters.max_steps = 5000;
    for key in [None, Some(key("fp"))] {
        let result = store
            .create_batch(batch(vec![spec("a"), bad.clone(), spec("c")]), key)
            .await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
        assert_eq!(
            count(&db, "SELECT count(*) FROM tasks").await,
            0,
            "no task of a refused batch"
        );
        assert_eq!(count(&db, "SELECT count(*) FROM idempotency_keys").await, 0, "no key");
    }
    let created = store
        .create_batch(batch(vec![spec("a"), spec("b"), spec("c")]), Some(key("fp")))
        .await
        .unwrap();
    assert!(!created.replayed, "the key was free");
    assert_eq!(created.tasks.len(), 3);
}

fn full_trajectory() -> Trajectory {
    Trajectory {
        task_id: uuid::Uuid::nil(),
        messages: vec![
            TrajectoryMessage::new("system", "You are an SRE agent."),
            TrajectoryMessage::new("user", "Is there an anomaly?"),
            TrajectoryMessage::new("assistant", "submit(\"Yes\")"),
        ],
        llm_calls: vec![LlmCall {
            step: Some(1),
            request: vec![TrajectoryMessage::new("user", "Is there an anomaly?")],
            response: "submit(\"Yes\")".into(),
            model: Some("gpt-4o".into()),
            latency_ms: 120,
            ..LlmCall::default()
        }],
        reward: Some(1.0),
        evaluation: serde_json::from_value(serde_json::json!({"Detection Accuracy": "Correct"})).unwrap(),
        metadata: serde_json::from_value(serde_json::json!({"simulated": true})).unwrap(),
        outcome: None,
        model_version: None,
    }
}

/// Schema version 3 by hand after 1 and 2 (twice), then the migrator: a trajectory saved as one document by
/// version 2 is split into its parts and reads back whole; the export reads its messages.
#[tokio::test]
async fn version_3_splits_trajectories_saved_before_it() {
    let db = TestDatabase::create().await;
    let pool = db.pool(&Default::default());
    let v1 = include_str!("../../migrations/001_create_tables.sql");
    let v2 = include_str!("../../migrations/002_batches_exports_webhooks.sql");
    let v3 = include_str!("../../migrations/003_trajectory_parts.sql");
    sqlx::raw_sql(v1).execute(&pool).await.expect("001 by hand");
    sqlx::raw_sql(v2).execute(&pool).await.expect("002 by hand");
    // A completed task with a trajectory as version 2 stored it: one jsonb document.
    let mut trajectory = full_trajectory();
    let task_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO tasks (problem_id, status, worker_id, attempt, started_at, completed_at) \
         VALUES ('p', 'completed', 'w', 1, now(), now()) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    trajectory.task_id = task_id;
    sqlx::query("INSERT INTO trajectories (task_id, trajectory, reward) VALUES ($1, $2, 1.0)")
        .bind(task_id)
        .bind(sqlx::types::Json(&trajectory))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(v3).execute(&pool).await.expect("003 by hand");
    sqlx::raw_sql(v3).execute(&pool).await.expect("003 by hand again");
    let store = PgStore::from_pool(&pool, policy()).unwrap();
    store.migrate().await.expect("the migrator after a manual run");
    sqlx::raw_sql(v3)
        .execute(&pool)
        .await
        .expect("003 by hand after the migrator");

    let rest: serde_json::Value = sqlx::query_scalar("SELECT trajectory FROM trajectories WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        rest.get("messages").is_none() && rest.get("llm_calls").is_none(),
        "the document keeps only the rest: {rest}"
    );
    let read = store.get_trajectory(task_id).await.unwrap().expect("a trajectory");
    assert_eq!(read, trajectory, "the split trajectory reads back whole");
    let page = store
        .export_episodes(&ExportRequest::new(ExportFilter::default(), 10))
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        page[0].trajectory.messages, trajectory.messages,
        "the export reads the messages"
    );
    assert!(page[0].trajectory.llm_calls.is_empty(), "and not the LLM calls");

    // Saved through the store from now on, in parts.
    let new = store.create_task(spec("q")).await.unwrap();
    let claimed = claim(&store, Some(new.id)).await;
    store
        .save_trajectory(claimed.lease_token(), full_trajectory())
        .await
        .unwrap();
    let parts: (i32, i32) = sqlx::query_as(
        "SELECT json_array_length(messages), json_array_length(llm_calls) FROM trajectories WHERE task_id = $1",
    )
    .bind(new.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(parts, (3, 1), "messages and calls in their own columns");
    let mut expected = full_trajectory();
    expected.task_id = new.id;
    assert_eq!(store.get_trajectory(new.id).await.unwrap(), Some(expected));
}

/// The delivery row is written by the statement that ends the task: a finish whose transaction cannot commit
/// leaves neither the terminal status nor a delivery.
#[tokio::test]
async fn a_finish_that_does_not_commit_leaves_no_delivery() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let task = store
        .create_task(
            NewTask {
                callback_url: Some("https://hooks.example.com/x".into()),
                ..NewTask::new("p")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    let claimed = claim(&store, None).await;
    // The outbox refuses rows for a moment: the finish fails as a whole.
    let mut admin = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    sqlx::query("ALTER TABLE webhook_outbox ADD CONSTRAINT test_no_rows CHECK (false) NOT VALID")
        .execute(&mut admin)
        .await
        .unwrap();
    let outcome = TaskOutcome {
        status: TerminalStatus::Completed,
        result: None,
        error: None,
    };
    let refused = store.finish(claimed.lease_token(), outcome.clone()).await;
    assert!(refused.is_err(), "{refused:?}");
    let still = store.get_task(task.id).await.unwrap();
    assert_eq!(
        still.status,
        aiopslab_core::TaskStatus::Running,
        "the status change rolled back with it"
    );
    assert!(store.list_webhooks(task.id).await.unwrap().is_empty(), "no delivery");
    sqlx::query("ALTER TABLE webhook_outbox DROP CONSTRAINT test_no_rows")
        .execute(&mut admin)
        .await
        .unwrap();
    let done = store.finish(claimed.lease_token(), outcome).await.unwrap();
    assert_eq!(done.status, aiopslab_core::TaskStatus::Completed);
    assert_eq!(
        store.list_webhooks(task.id).await.unwrap().len(),
        1,
        "one delivery with the status change"
    );
}

/// The export reads the tasks window by window: episodes far apart (thousands of tasks without a trajectory
/// between them, more than one window holds) all come back, in order, whatever the page size, with and without
/// filters.
#[tokio::test]
async fn export_pages_span_windows() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let specs: Vec<TaskSpec> = (0..1000)
            .map(|i| spec(if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        let created = store.create_tasks(specs).await.unwrap();
        ids.extend(created.iter().map(|t| t.id));
    }
    // Trajectories on a few tasks far apart.
    let chosen = [ids[3], ids[2_200], ids[2_201], ids[4_998]];
    for id in chosen {
        let claimed = claim(&store, Some(id)).await;
        store
            .save_trajectory(claimed.lease_token(), full_trajectory())
            .await
            .unwrap();
    }
    for (filter, expected) in [
        (ExportFilter::default(), chosen.to_vec()),
        (
            ExportFilter::default().with_problem_ids(Some(vec!["even".into()])),
            vec![ids[2_200], ids[4_998]],
        ),
        (
            ExportFilter::default().with_problem_ids(Some(vec!["none".into()])),
            vec![],
        ),
    ] {
        for limit in [1, 2, 500] {
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .export_episodes(&ExportRequest::new(filter.clone(), limit).after(cursor))
                    .await
                    .unwrap();
                assert!(page.len() <= limit as usize);
                let Some(last) = page.last() else { break };
                cursor = Some(last.cursor());
                got.extend(page.iter().map(|e| e.task.id));
            }
            assert_eq!(got, expected, "pages of {limit} with {filter:?}");
        }
    }
}
