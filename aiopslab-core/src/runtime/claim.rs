//! The claim loops: take work while a slot is free.
//!
//! A worker runs one claim loop per slot (at most four), so claims overlap
//! under load. With a free slot a loop asks the scheduler for a task; when it gets
//! one it starts it and asks again at once, so a full queue is drained with
//! no waiting. Only an empty queue (or a failed claim) makes it wait: for
//! `poll_interval`, or less when a store event says work arrived. A claim in
//! flight is never abandoned, even at shutdown: the store could have handed
//! the task over already, and dropping it would leave it stranded until its
//! lease expired. Each claim holds the claim gate for reading, so no
//! heartbeat goes out while a claim is in flight (see `heartbeat.rs`).

use std::sync::Arc;

use tracing::Instrument;

use super::task_run::run_task;
use super::Shared;
use crate::retry::retry_transient;
use crate::store::ClaimRequest;

/// Most claims in flight at once. A claim is a round trip (over HTTP, a
/// few milliseconds); with one at a time a worker of many slots started at
/// most one task per round trip and its slots idled under load.
const MAX_CONCURRENT_CLAIMS: u32 = 4;

/// Runs one claim loop per slot, up to [`MAX_CONCURRENT_CLAIMS`], until
/// shutdown begins. Each loop takes a free slot before it claims, so claims
/// in flight never outnumber free slots.
pub(crate) async fn claim_loops(shared: Arc<Shared>) {
    let loops = shared
        .config
        .capabilities
        .max_parallel_tasks
        .clamp(1, MAX_CONCURRENT_CLAIMS);
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..loops {
        running.spawn(claim_loop(Arc::clone(&shared)).in_current_span());
    }
    while running.join_next().await.is_some() {}
}

/// Claims and starts tasks until shutdown begins.
async fn claim_loop(shared: Arc<Shared>) {
    let config = &shared.config;
    let request = ClaimRequest::new(config.worker_id.clone(), config.backend_type.clone())
        .for_problems(config.capabilities.supported_problems.clone());
    loop {
        let permit = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            permit = shared.slots.acquire() => permit,
        };
        let claimed = retry_transient(&config.retry, "claim", || async {
            // A heartbeat lists the tasks we hold and the store hands back any
            // other: no beat may pass between the store handing this task over
            // and our tracking it (see `Shared::claim_gate`).
            let _gate = shared.claim_gate.read().await;
            let task = shared.scheduler.next_task(&request).await?;
            Ok(task.map(|task| (shared.slots.track(task.id), task)))
        })
        .await;
        match claimed {
            Ok(Some((guard, task))) => {
                tokio::spawn(run_task(Arc::clone(&shared), task, Some(permit), guard));
                continue;
            }
            Ok(None) => drop(permit),
            Err(error) => {
                drop(permit);
                tracing::warn!(%error, "claim failed; trying again after the poll interval");
            }
        }
        tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}
