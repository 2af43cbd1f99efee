//! The claim loops: take work while a slot is free.
//!
//! A worker runs one claim loop per slot (at most four), so claims overlap
//! under load. With a free slot a loop takes every other slot free at that
//! moment too and asks the scheduler for that many tasks in one call
//! (`Scheduler::next_tasks`, one statement or one request for the lot); it
//! starts what it gets and asks again at once, so a full queue is drained with
//! no waiting and a worker of many slots fills them in few round trips. Only an empty queue (or a failed claim) makes it wait: for
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
use crate::store::{ClaimRequest, MAX_CLAIM_BATCH};

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
    // Set when the last wait ended on a wake-up: a woken claim that finds nothing looks again after the usual
    // poll interval, not the long one of a pushed worker, since the task it was woken for may not be claimable
    // yet (the store's dispatch delay holds new tasks back for a moment). A failed claim is retried as soon.
    let mut look_again_soon = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            permit = shared.slots.acquire() => permit,
        };
        // Every slot free right now goes into the same claim.
        let mut permits = vec![first];
        while permits.len() < MAX_CLAIM_BATCH as usize {
            match shared.slots.try_acquire() {
                Some(permit) => permits.push(permit),
                None => break,
            }
        }
        let wanted = request.clone().up_to(permits.len() as u32);
        let claimed = retry_transient(&config.retry, "claim", || async {
            // A heartbeat lists the tasks we hold and the store hands back any
            // other: no beat may pass between the store handing these tasks over
            // and our tracking them (see `Shared::claim_gate`).
            let _gate = shared.claim_gate.read().await;
            let tasks = if wanted.max_tasks > 1 {
                shared.scheduler.next_tasks(&wanted).await?
            } else {
                shared.scheduler.next_task(&wanted).await?.into_iter().collect()
            };
            Ok(tasks
                .into_iter()
                .map(|task| (shared.slots.track(task.id), task))
                .collect::<Vec<_>>())
        })
        .await;
        match claimed {
            Ok(tasks) if !tasks.is_empty() => {
                // A scheduler that handed out more than asked for still has every task run: the
                // extra ones wait for a slot like a task a heartbeat hands over.
                for (guard, task) in tasks {
                    let permit = match permits.pop() {
                        Some(permit) => permit,
                        None => shared.slots.acquire().await,
                    };
                    tokio::spawn(run_task(Arc::clone(&shared), task, Some(permit), guard));
                }
                // Slots the store had no task for are free again at once.
                drop(permits);
                look_again_soon = false;
                continue;
            }
            Ok(_) => drop(permits),
            Err(error) => {
                drop(permits);
                tracing::warn!(%error, "claim failed; trying again after the poll interval");
                look_again_soon = true;
            }
        }
        let wait = if look_again_soon {
            config.poll_interval
        } else {
            poll_interval(&shared)
        };
        look_again_soon = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            _ = shared.wake.notified() => true,
            _ = tokio::time::sleep(wait) => false,
        };
    }
}

/// How long an empty queue waits: long while the store pushes wake-ups (polling is only the safety net then),
/// the usual interval otherwise.
fn poll_interval(shared: &Shared) -> std::time::Duration {
    if shared.pushed.load(std::sync::atomic::Ordering::SeqCst) {
        shared.config.pushed_poll_interval.max(shared.config.poll_interval)
    } else {
        shared.config.poll_interval
    }
}
