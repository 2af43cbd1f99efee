//! Faults: connections killed mid-transaction and a database restart during a run leave no task lost or stuck,
//! and the same PgStore recovers (calls fail as `Unavailable` meanwhile, then succeed) without a new process.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{StoreError, TaskStatus, WorkerRegistration};
use aiopslab_postgres::testing::{advance_clock, TestDatabase, TestServer};
use aiopslab_postgres::{PgStore, PgStoreOptions};
use common::*;
use sqlx::{Connection, Executor};

/// Terminates every store connection to the store's database (not the caller's own).
async fn terminate_store_connections(admin: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'aiopslab' AND pid <> pg_backend_pid()",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

/// After a fault: lost claims (committed, answer lost) hold their tasks `running` until the lease expires; move
/// the clock past it, sweep, and drain again. Then every task must be completed, none pending or running.
async fn recover_and_check(store: &PgStore, total: usize, faults: &Arc<Faults>) {
    advance_clock(store, policy().lease_duration + Duration::from_secs(1)).await;
    let report = retry(faults, Duration::from_secs(30), || store.sweep()).await.unwrap();
    assert!(report.failed.is_empty() && report.timed_out.is_empty(), "{report:?}");
    drain(store.clone(), "cleaner".into(), faults.clone(), Duration::from_secs(30)).await;
    let counts = status_counts(store).await;
    assert_eq!(
        counts.get("completed").copied(),
        Some(total as i64),
        "every task completed: {counts:?}"
    );
    assert_eq!(counts.len(), 1, "no task lost, stuck pending or running: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_mid_transaction() {
    let db = TestDatabase::create().await;
    let store = db
        .store_with(policy(), &PgStoreOptions::default().max_connections(4))
        .await;
    store
        .register_worker(WorkerRegistration::new("w0", "default"))
        .await
        .unwrap();
    create_tasks(&store, 1).await;
    let task = store.claim(&request("w0")).await.unwrap().unwrap();

    // Hold the task's row lock in an open transaction, so the finish below waits inside its statement.
    let mut holder = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(task.id)
        .execute(&mut holder)
        .await
        .unwrap();
    let lease = task.lease_token();
    let finishing = {
        let store = store.clone();
        tokio::spawn(async move { store.finish(lease, completed()).await })
    };
    // Kill the finishing connection while it waits on the lock, mid-transaction.
    let mut admin = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'aiopslab' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if killed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the finish never waited on the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let interrupted = finishing.await.unwrap();
    assert!(
        matches!(interrupted, Err(StoreError::Unavailable(_))),
        "a killed connection reads as unavailable: {interrupted:?}"
    );
    holder.execute("ROLLBACK").await.unwrap();
    // Nothing of the interrupted finish landed; the retry does, once.
    assert_eq!(store.get_task(task.id).await.unwrap().status, TaskStatus::Running);
    let done = store.finish(task.lease_token(), completed()).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(store.get_worker("w0").await.unwrap().tasks_completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_during_a_run_lose_no_task() {
    const TASKS: usize = 600;
    let db = TestDatabase::create().await;
    let store = db
        .store_with(policy(), &PgStoreOptions::default().max_connections(4))
        .await;
    create_tasks(&store, TASKS).await;
    let faults = Arc::new(Faults::default());

    // Slow workers, so the faults find them mid-statement and mid-run.
    let workers = spawn_workers(&store, &faults, Duration::from_secs(30), Duration::from_millis(2));
    let mut admin = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    let mut killed = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        killed += terminate_store_connections(&mut admin).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(killed > 0, "the killer found connections to terminate");
    assert!(faults.unavailable.load(Ordering::Relaxed) > 0, "workers saw the faults");
    recover_and_check(&store, TASKS, &faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_during_a_run_loses_no_task() {
    const TASKS: usize = 400;
    // A server of this test's own, since it is stopped and started again.
    let server = Arc::new(
        tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the restart test needs PostgreSQL server binaries (initdb, pg_ctl): {e}")),
    );
    let db = server.database().await;
    let store = db
        .store_with(
            policy(),
            &PgStoreOptions::default()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(1)),
        )
        .await;
    create_tasks(&store, TASKS).await;
    let mut events = store.subscribe().expect("PgStore offers notifications");
    let faults = Arc::new(Faults::default());

    let workers = spawn_workers(&store, &faults, Duration::from_secs(60), Duration::from_millis(15));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap().unwrap();
    // While the database is down, calls fail fast as unavailable.
    let down = store.get_task(uuid::Uuid::now_v7()).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.start_again())
        .await
        .unwrap()
        .unwrap();

    for worker in workers {
        worker.await.unwrap();
    }
    assert!(
        faults.unavailable.load(Ordering::Relaxed) > 0,
        "workers saw the restart"
    );
    recover_and_check(&store, TASKS, &faults).await;

    // The listener reconnected too: a new task wakes a subscriber.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while events.try_recv().is_ok() {}
        create_tasks(&store, 1).await;
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(Ok(_)) => break,
            _ => assert!(
                Instant::now() < deadline,
                "the listener never came back after the restart"
            ),
        }
    }
    drop(store);
}

/// Four workers that claim and finish until the queue is empty, retrying
/// through the faults for up to `patience` per call and holding each task
/// for `hold`; a finish refused for a lost lease is fine (the task was requeued).
fn spawn_workers(
    store: &PgStore,
    faults: &Arc<Faults>,
    patience: Duration,
    hold: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|i| {
            let store = store.clone();
            let faults = faults.clone();
            tokio::spawn(async move {
                let claim = request(&format!("w{i}"));
                register(&store, &claim.worker_id, &faults, patience).await;
                loop {
                    let Some(task) = retry(&faults, patience, || store.claim(&claim)).await.unwrap() else {
                        return;
                    };
                    tokio::time::sleep(hold).await;
                    match retry(&faults, patience, || store.finish(task.lease_token(), completed())).await {
                        Ok(_) | Err(StoreError::LeaseLost { .. }) => {}
                        Err(e) => panic!("finish failed for good: {e}"),
                    }
                }
            })
        })
        .collect()
}
