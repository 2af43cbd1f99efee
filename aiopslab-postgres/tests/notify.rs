//! Wake-ups over LISTEN/NOTIFY: an idle subscriber hears new and requeued tasks and cancel requests, and the
//! listener reconnects by itself when its connection is killed.

mod common;

use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{CancelOutcome, ErrorDetails, NewTask, StoreEvent, TaskOutcome, TerminalStatus};
use aiopslab_postgres::testing::TestDatabase;
use aiopslab_postgres::PgStore;
use common::*;
use sqlx::Connection;
use tokio::sync::broadcast::Receiver;

/// Waits until a connection of this database is LISTENing and returns its pid.
async fn listening_pid(db: &TestDatabase, other_than: Option<i32>) -> i32 {
    let mut admin = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' \
             AND state = 'idle' AND pid IS DISTINCT FROM $1 ORDER BY backend_start DESC LIMIT 1",
        )
        .bind(other_than)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "no listener connection appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event, within two seconds.
async fn next_event(events: &mut Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("an event within 2 s")
        .expect("the event channel is open")
}

/// Asserts no event arrives for a short while.
async fn quiet(events: &mut Receiver<StoreEvent>) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

async fn subscribed() -> (TestDatabase, PgStore, Receiver<StoreEvent>) {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    let events = store.subscribe().expect("PgStore offers notifications");
    listening_pid(&db, None).await;
    (db, store, events)
}

#[tokio::test]
async fn idle_subscriber_hears_new_tasks_requeues_and_cancels() {
    let (_db, store, mut events) = subscribed().await;
    store
        .register_worker(aiopslab_core::WorkerRegistration::new("w", "default"))
        .await
        .unwrap();

    let task = store.create_task(NewTask::new("p").validate().unwrap()).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::TaskAvailable {
            backend_type: "default".into()
        }
    );
    store
        .create_tasks(vec![NewTask {
            backend_type: Some("gpu".into()),
            ..NewTask::new("q")
        }
        .validate()
        .unwrap()])
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::TaskAvailable {
            backend_type: "gpu".into()
        }
    );

    // Cancelling a running task tells its worker at once; a pending one needs no worker.
    let running = store.claim(&request("w")).await.unwrap().unwrap();
    assert_eq!(running.id, task.id);
    assert_eq!(
        store.cancel_task(task.id).await.unwrap(),
        CancelOutcome::CancelRequested
    );
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::CancelRequested { task_id: task.id }
    );
    assert_eq!(
        store.cancel_task(task.id).await.unwrap(),
        CancelOutcome::CancelRequested
    );
    quiet(&mut events).await;

    // A failed attempt with retries left puts the task back: that wakes workers too.
    let retried = store
        .create_task(
            NewTask {
                max_retries: Some(1),
                ..NewTask::new("r")
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    next_event(&mut events).await;
    let claimed = store
        .claim(&request("w").for_task(Some(retried.id)))
        .await
        .unwrap()
        .unwrap();
    let failure = TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: Some(ErrorDetails::new("backend_error", "boom")),
    };
    store.finish(claimed.lease_token(), failure).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::TaskAvailable {
            backend_type: "default".into()
        }
    );
}

#[tokio::test]
async fn listener_reconnects_after_its_connection_is_killed() {
    let (db, store, mut events) = subscribed().await;
    let first = listening_pid(&db, None).await;
    let mut admin = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    let second = listening_pid(&db, Some(first)).await;
    assert_ne!(first, second);

    // Notifications of the gap are lost, so the listener tells workers to check the queue.
    store.create_task(NewTask::new("p").validate().unwrap()).await.unwrap();
    let mut resyncs = 0;
    let after = loop {
        match next_event(&mut events).await {
            StoreEvent::Resync => resyncs += 1,
            other => break other,
        }
    };
    assert!(resyncs >= 1, "a resync after the connection was lost");
    assert_eq!(
        after,
        StoreEvent::TaskAvailable {
            backend_type: "default".into()
        }
    );
}
