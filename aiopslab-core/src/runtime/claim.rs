//! The claim loop: take work while a slot is free.
//!
//! With a free slot the worker asks the scheduler for a task; when it gets
//! one it starts it and asks again at once, so a full queue is drained with
//! no waiting. Only an empty queue (or a failed claim) makes it wait: for
//! `poll_interval`, or less when a store event says work arrived. A claim in
//! flight is never abandoned, even at shutdown: the store could have handed
//! the task over already, and dropping it would leave it stranded until its
//! lease expired.

use std::sync::Arc;

use super::task_run::run_task;
use super::Shared;
use crate::retry::retry_transient;
use crate::store::ClaimRequest;

/// Claims and starts tasks until shutdown begins.
pub(crate) async fn claim_loop(shared: Arc<Shared>) {
    let config = &shared.config;
    let request = ClaimRequest {
        worker_id: config.worker_id.clone(),
        backend_type: config.backend_type.clone(),
        supported_problems: config.capabilities.supported_problems.clone(),
        task_id: None,
    };
    loop {
        let permit = tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => return,
            permit = shared.slots.acquire() => permit,
        };
        let claimed = retry_transient(&config.retry, "claim", || shared.scheduler.next_task(&request)).await;
        match claimed {
            Ok(Some(task)) => {
                let guard = shared.slots.track();
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
