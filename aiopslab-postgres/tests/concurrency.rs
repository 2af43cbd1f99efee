//! 32 workers drain 10,000 tasks: every task is claimed exactly once (attempt 1), by the worker it was handed to,
//! none is lost, and the finish counters add up. Twice: each worker on a PgStore of its own with a connection of its
//! own (as separate server replicas or direct workers would be), and all of them on one shared store (the server's
//! case), whose claims and finishes then share statements.

mod common;

use std::collections::HashSet;

use aiopslab_core::store::prelude::*;
use aiopslab_core::WorkerRegistration;
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::{PgStore, PgStoreOptions};
use common::*;

const CLAIMERS: usize = 32;
const TASKS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_claimers_claim_ten_thousand_tasks_exactly_once() {
    let db = TestDatabase::create().await;
    let admin = db.store(policy()).await;
    let mut stores = Vec::new();
    for _ in 0..CLAIMERS {
        // One store per claimer, each with a single connection: 32 connections claiming at once.
        stores.push(
            db.store_with(policy(), &PgStoreOptions::default().max_connections(1))
                .await,
        );
    }
    drain_exactly_once(&admin, stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_workers_on_one_store_share_statements_and_claim_each_task_exactly_once() {
    let db = TestDatabase::create().await;
    let store = db
        .store_with(policy(), &PgStoreOptions::default().max_connections(8))
        .await;
    drain_exactly_once(&store, vec![store.clone(); CLAIMERS]).await;
    let batches = store.write_batches();
    assert_eq!(batches.finishes.items, TASKS as u64);
    assert!(batches.claims.items >= TASKS as u64);
    assert!(
        batches.claims.mean_batch() > 1.5 && batches.finishes.mean_batch() > 1.5,
        "32 concurrent workers shared statements: {batches:?}"
    );
}

/// Creates the tasks through `admin`, runs one worker per store in `stores` until the queue is empty, and checks
/// that every task was claimed exactly once and counted once.
async fn drain_exactly_once(admin: &PgStore, stores: Vec<PgStore>) {
    let created: HashSet<uuid::Uuid> = create_tasks(admin, TASKS).await.into_iter().collect();
    assert_eq!(created.len(), TASKS);
    let mut handles = Vec::new();
    for (c, store) in stores.into_iter().enumerate() {
        let worker = format!("claimer-{c}");
        store
            .register_worker(WorkerRegistration::new(&worker, "default"))
            .await
            .unwrap();
        handles.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(task) = store.claim(&request(&worker)).await.unwrap() {
                assert_eq!(
                    task.worker_id.as_deref(),
                    Some(worker.as_str()),
                    "handed to its claimer"
                );
                let finished = store.finish(task.lease_token(), completed()).await.unwrap();
                assert_eq!(finished.id, task.id);
                claimed.push((task.id, task.attempt));
            }
            claimed
        }));
    }
    let mut seen = HashSet::with_capacity(TASKS);
    for handle in handles {
        for (id, attempt) in handle.await.unwrap() {
            assert_eq!(attempt, 1, "task {id} was claimed more than once");
            assert!(seen.insert(id), "task {id} was handed to two claimers");
        }
    }
    assert_eq!(seen, created, "every task was claimed, and only the tasks created");

    let counts = status_counts(admin).await;
    assert_eq!(counts.get("completed").copied(), Some(TASKS as i64), "{counts:?}");
    assert_eq!(counts.len(), 1, "nothing left pending or running: {counts:?}");
    let mut conn = admin.connection().await.unwrap();
    let (max_attempt, finished_by_workers): (i32, i64) =
        sqlx::query_as("SELECT (SELECT max(attempt) FROM tasks), (SELECT sum(tasks_completed)::bigint FROM workers)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(max_attempt, 1);
    assert_eq!(
        finished_by_workers, TASKS as i64,
        "each finish counted once for its worker"
    );
}
