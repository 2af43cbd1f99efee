//! One lock order everywhere: heartbeats and finishes of the same workers,
//! hammered concurrently on a real PostgreSQL, never deadlock.
//!
//! A heartbeat extends the leases of its worker's running tasks and records
//! the sign of life on the worker's row; a finish ends a task and bumps its
//! worker's counters. Both take the task rows first (in id order), then the
//! worker row. When the heartbeat took the worker row first, the two
//! deadlocked under load (issue 11: 1,808 deadlocks in a 20,000-task run).
//! The test reads PostgreSQL's own deadlock counter for its database.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{WorkerHeartbeat, WorkerRegistration, WorkerStatus};
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::PgStore;
use common::{completed, create_tasks, policy, request};

const WORKERS: usize = 4;
const SLOTS: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(4);

async fn deadlocks(db: &TestDatabase) -> i64 {
    let pool = sqlx::PgPool::connect_with(db.connect_options()).await.unwrap();
    // The statistics collector lags a little: ask it to forget its snapshot first.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    count
}

/// One slot of a worker: claims and finishes as fast as it can.
async fn slot(store: Arc<PgStore>, worker: String, until: Instant) -> u64 {
    let mut finished = 0;
    while Instant::now() < until {
        let Ok(Some(task)) = store.claim(&request(&worker)).await else {
            continue;
        };
        if store.finish(task.lease_token(), completed()).await.is_ok() {
            finished += 1;
        }
    }
    finished
}

/// A worker's heartbeats, with no pause between them.
async fn heartbeats(store: Arc<PgStore>, worker: String, until: Instant) -> u64 {
    let mut beats = 0;
    while Instant::now() < until {
        let beat = WorkerHeartbeat::new(&worker, WorkerStatus::Busy);
        store
            .heartbeat(&beat)
            .await
            .expect("a heartbeat never fails, let alone deadlocks");
        beats += 1;
    }
    beats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_and_finishes_of_the_same_workers_never_deadlock() {
    let db = TestDatabase::create().await;
    let store = Arc::new(db.store(policy()).await);
    create_tasks(&store, 20_000).await;
    let workers: Vec<String> = (1..=WORKERS).map(|n| format!("worker-{n:03}-lock")).collect();
    for worker in &workers {
        store
            .register_worker(WorkerRegistration::new(worker.clone(), "default"))
            .await
            .unwrap();
    }
    let before = deadlocks(&db).await;

    let until = Instant::now() + RUN_FOR;
    let mut slots = Vec::new();
    let mut beats = Vec::new();
    for worker in &workers {
        for _ in 0..SLOTS {
            slots.push(tokio::spawn(slot(Arc::clone(&store), worker.clone(), until)));
        }
        beats.push(tokio::spawn(heartbeats(Arc::clone(&store), worker.clone(), until)));
    }
    let mut finished = 0;
    for handle in slots {
        finished += handle.await.unwrap();
    }
    let mut beaten = 0;
    for handle in beats {
        beaten += handle.await.unwrap();
    }
    // The counter is updated when the deadlocked transaction reports; give it a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = deadlocks(&db).await;
    eprintln!(
        "{}",
        serde_json::json!({"finished": finished, "heartbeats": beaten, "deadlocks": after - before})
    );
    assert!(
        finished > 100 && beaten > 100,
        "the load ran: {finished} finishes, {beaten} heartbeats"
    );
    assert_eq!(
        after - before,
        0,
        "PostgreSQL detected deadlocks between heartbeats and finishes"
    );
}
