//! Helpers shared by the PostgreSQL integration tests: a worker loop that retries transient failures the way the
//! worker runtime does, and checks over the whole task table.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    ClaimRequest, LeasePolicy, NewTask, StoreError, StoreResult, TaskOutcome, TaskResult, TerminalStatus,
    WorkerRegistration,
};
use aiopslab_postgres::PgStore;

/// The policy of these tests: long leases (nothing expires unless a test moves the clock), no dispatch delay.
pub fn policy() -> LeasePolicy {
    LeasePolicy::default()
        .with_lease_duration(Duration::from_secs(60))
        .with_worker_offline_after(Duration::from_secs(90))
        .with_timeout_grace(Duration::from_secs(60))
        .with_dispatch_delay(Duration::ZERO)
}

/// A claim request of `worker` for backend `default`.
pub fn request(worker: &str) -> ClaimRequest {
    ClaimRequest::new(worker, "default")
}

/// A completed outcome.
pub fn completed() -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult::default()),
        error: None,
    }
}

/// Creates `n` default tasks in batches.
pub async fn create_tasks(store: &PgStore, n: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = (ids.len()..n.min(ids.len() + 500))
            .map(|i| NewTask::new(format!("problem-{}", i % 89)).validate().unwrap())
            .collect();
        ids.extend(store.create_tasks(batch).await.unwrap().into_iter().map(|t| t.id));
    }
    ids
}

/// Counts of transient failures seen by workers.
#[derive(Debug, Default)]
pub struct Faults {
    pub unavailable: AtomicU64,
}

/// Retries `call` while it fails as unavailable, for at most `patience`, counting the failures.
pub async fn retry<T, F, Fut>(faults: &Faults, patience: Duration, mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match call().await {
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                faults.unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Registers `worker` (backend `default`) so it may claim, retrying transient failures; a registration that
/// already landed (its answer lost to a fault, or an earlier call) is fine.
pub async fn register(store: &PgStore, worker: &str, faults: &Faults, patience: Duration) {
    let registration = WorkerRegistration::new(worker, "default");
    match retry(faults, patience, || store.register_worker(registration.clone())).await {
        Ok(_) | Err(StoreError::WorkerAlive(_)) => {}
        Err(e) => panic!("{worker}: register failed for good: {e}"),
    }
}

/// A worker that registers, then claims and completes tasks until a claim finds nothing, retrying transient
/// failures. Returns how many tasks it completed. A finish refused with `LeaseLost` (the lease moved on) is not
/// counted.
pub async fn drain(store: PgStore, worker: String, faults: Arc<Faults>, patience: Duration) -> u64 {
    register(&store, &worker, &faults, patience).await;
    let mut done = 0;
    let claim = request(&worker);
    loop {
        let claimed = retry(&faults, patience, || store.claim(&claim))
            .await
            .unwrap_or_else(|e| panic!("{worker}: claim failed for good: {e}"));
        let Some(task) = claimed else {
            return done;
        };
        match retry(&faults, patience, || store.finish(task.lease_token(), completed())).await {
            Ok(_) => done += 1,
            Err(StoreError::LeaseLost { .. }) => {}
            Err(e) => panic!("{worker}: finish failed for good: {e}"),
        }
    }
}

/// Task counts by status, straight from the table.
pub async fn status_counts(store: &PgStore) -> std::collections::BTreeMap<String, i64> {
    let mut conn = store.connection().await.unwrap();
    sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM tasks GROUP BY status")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}
