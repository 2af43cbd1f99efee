//! The retention bound of the embedded store ([`MemoryOptions::max_finished_tasks`]): past it the tasks that
//! finished first are dropped with their logs, trajectories and webhook deliveries; the newest finished ones and
//! every pending and running task stay, and the counts (stats, listing totals, the export) follow what is kept.

use std::collections::BTreeMap;

use aiopslab_core::store::prelude::*;
use aiopslab_core::testkit::support::*;
use aiopslab_core::{
    LogLevel, LogQuery, MemoryOptions, MemoryStore, NewLogEntry, NewTask, StoreError, TaskFilter, TaskStatus,
    TerminalStatus, Trajectory,
};

fn not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound { .. })),
        "{what}: expected not found, got {result:?}"
    );
}

#[tokio::test]
async fn the_oldest_finished_tasks_are_dropped_past_the_bound_and_live_ones_never() {
    let store = MemoryStore::with_options(
        suite_policy(),
        MemoryOptions::default().with_max_finished_tasks(Some(5)),
    );
    register(&store, "w", "default").await;
    // Live tasks created first, so they are the oldest of all: a bound by age would drop them.
    let pending: Vec<_> = [
        create(&store, plain("pending-1")).await,
        create(&store, plain("pending-2")).await,
    ]
    .into_iter()
    .map(|t| t.id)
    .collect();
    let running = create(&store, plain("running")).await;
    claim_some(&store, &request_task("w", running.id)).await;

    // Eight tasks end, in this order: seven runs (with a log line, a trajectory and a webhook each), and the
    // fourth a cancel of a pending task. Bound 5: the first three to end are dropped.
    let mut finished = Vec::new();
    for i in 0..8 {
        let task = create(
            &store,
            spec(NewTask {
                callback_url: Some("http://127.0.0.1:9/hook".into()),
                ..NewTask::new(format!("finished-{i}"))
            }),
        )
        .await;
        if i == 3 {
            store.cancel_task(task.id).await.unwrap();
        } else {
            let claimed = claim_some(&store, &request_task("w", task.id)).await;
            store
                .append_logs(claimed.lease_token(), vec![NewLogEntry::new(LogLevel::Info, "step")])
                .await
                .unwrap();
            store
                .save_trajectory(claimed.lease_token(), Trajectory::default())
                .await
                .unwrap();
            let status = if i % 2 == 0 {
                TerminalStatus::Completed
            } else {
                TerminalStatus::Failed
            };
            store.finish(claimed.lease_token(), outcome(status)).await.unwrap();
        }
        finished.push(task.id);
    }
    let (dropped, kept) = finished.split_at(3);

    for id in dropped {
        not_found(store.get_task(*id).await, "a dropped task");
        not_found(store.get_logs(*id, &LogQuery::default()).await, "its logs");
        not_found(store.get_trajectory(*id).await, "its trajectory");
        not_found(store.list_webhooks(*id).await, "its webhooks");
    }
    for id in kept {
        assert!(
            get(&store, *id).await.status.is_terminal(),
            "the newest finished tasks stay"
        );
        assert_eq!(store.list_webhooks(*id).await.unwrap().len(), 1, "with their webhook");
    }
    let newest = kept[kept.len() - 1];
    assert_eq!(store.get_logs(newest, &LogQuery::default()).await.unwrap().len(), 1);
    assert!(store.get_trajectory(newest).await.unwrap().is_some());
    for id in &pending {
        assert_status(
            &get(&store, *id).await,
            TaskStatus::Pending,
            "pending tasks are never dropped",
        );
    }
    assert_status(
        &get(&store, running.id).await,
        TaskStatus::Running,
        "running tasks are never dropped",
    );

    // Counts follow what is kept: the 5 newest finished, 2 pending, 1 running.
    let stats = store.stats().await.unwrap();
    let kept_tasks: Vec<_> = {
        let mut all = Vec::new();
        for id in kept {
            all.push(get(&store, *id).await);
        }
        all
    };
    let mut expected: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    for task in &kept_tasks {
        *expected.entry(task.status).or_default() += 1;
    }
    *expected.entry(TaskStatus::Pending).or_default() += 2;
    *expected.entry(TaskStatus::Running).or_default() += 1;
    assert_eq!(stats.tasks_by_status, expected, "stats count what the store keeps");
    assert_eq!(stats.queue_depth_by_backend.get("default"), Some(&2));
    let all = store.list_tasks(&TaskQuery::new(TaskFilter::default())).await.unwrap();
    assert_eq!((all.total, all.total_is_estimate, all.tasks.len()), (8, false, 8));
    let exported = store
        .export_episodes(&ExportRequest::new(Default::default(), 100))
        .await
        .unwrap();
    let exported: Vec<_> = exported.into_iter().map(|e| e.task.id).collect();
    assert!(
        dropped.iter().all(|id| !exported.contains(id)),
        "dropped episodes are not exported"
    );
    assert_eq!(
        exported.len(),
        4,
        "the kept runs' episodes (the cancelled task has none)"
    );

    // The bound holds as more tasks end: the running one ends and pushes the oldest kept one out.
    store
        .finish(get(&store, running.id).await.lease_token(), completed())
        .await
        .unwrap();
    not_found(
        store.get_task(kept[0]).await,
        "the oldest kept task, once one more ended",
    );
    assert_status(
        &get(&store, running.id).await,
        TaskStatus::Completed,
        "the newest finished task",
    );
    let stats = store.stats().await.unwrap();
    let finished_now: u64 = stats
        .tasks_by_status
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum();
    assert_eq!(finished_now, 5, "never more finished tasks than the bound");
}

#[tokio::test]
async fn no_bound_keeps_everything_and_the_default_is_documented() {
    assert_eq!(
        MemoryOptions::default().max_finished_tasks,
        Some(MemoryOptions::DEFAULT_MAX_FINISHED_TASKS)
    );
    let store = MemoryStore::with_options(suite_policy(), MemoryOptions::default().with_max_finished_tasks(None));
    let mut ids = Vec::new();
    for i in 0..20 {
        let task = create(&store, plain(&format!("p{i}"))).await;
        store.cancel_task(task.id).await.unwrap();
        ids.push(task.id);
    }
    for id in ids {
        assert_status(&get(&store, id).await, TaskStatus::Cancelled, "kept without a bound");
    }
}
