//! Checks of task listings and statistics: filters, the four sort orders,
//! pages with totals, and per-status counts.

use std::collections::BTreeMap;

use super::support::*;
use super::StoreHarness;
use crate::query::{Page, TaskFilter, TaskSort};
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{Task, TaskId, TaskStatus, TerminalStatus};
use crate::worker::WorkerStatus;

async fn listed<S: TaskStore>(store: &S, filter: TaskFilter, sort: TaskSort, page: Page) -> (Vec<TaskId>, u64) {
    let result = store
        .list_tasks(&TaskQuery::new(filter.clone()).sorted(sort).page(page))
        .await
        .expect("list_tasks");
    assert_eq!(result.limit, page.limit, "the page echoes its limit");
    assert_eq!(result.offset, page.offset, "the page echoes its offset");
    assert!(
        !result.total_is_estimate,
        "a total of a handful of tasks is counted exactly, and says so (total_is_estimate false)"
    );
    (ids(&result.tasks), result.total)
}

/// `list_tasks` filters by status, problem, worker, backend type and
/// experiment, alone and together, and counts the matches.
pub async fn list_tasks_filters<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["wk", "wd"]).await;
    let t1 = create(&store, on_backend("pa", "default")).await;
    let in_exp = |problem: &str, backend_type: &str| {
        spec(crate::task::NewTask {
            backend_type: Some(backend_type.into()),
            experiment: Some("exp-a".into()),
            ..crate::task::NewTask::new(problem)
        })
    };
    let t2 = create(&store, in_exp("pb", "kind")).await;
    let t3 = create(&store, on_backend("pa", "kind")).await;
    let t4 = create(&store, in_exp("pb", "default")).await;
    assert_eq!(t2.experiment.as_deref(), Some("exp-a"), "a task keeps its experiment");
    assert_eq!(t1.experiment, None, "no experiment by default");
    claim_some(
        &store,
        &crate::store::ClaimRequest {
            backend_type: "kind".into(),
            ..request_task("wk", t3.id)
        },
    )
    .await;
    let done = claim_some(&store, &request_task("wd", t4.id)).await;
    store.finish(done.lease_token(), completed()).await.expect("finish");

    let cases: Vec<(TaskFilter, Vec<&Task>, &str)> = vec![
        (TaskFilter::default(), vec![&t1, &t2, &t3, &t4], "no filter"),
        (
            TaskFilter {
                status: Some(TaskStatus::Pending),
                ..Default::default()
            },
            vec![&t1, &t2],
            "status pending",
        ),
        (
            TaskFilter {
                status: Some(TaskStatus::Running),
                ..Default::default()
            },
            vec![&t3],
            "status running",
        ),
        (
            TaskFilter {
                status: Some(TaskStatus::Completed),
                ..Default::default()
            },
            vec![&t4],
            "status completed",
        ),
        (
            TaskFilter {
                status: Some(TaskStatus::Failed),
                ..Default::default()
            },
            vec![],
            "status failed",
        ),
        (
            TaskFilter {
                problem_id: Some("pa".into()),
                ..Default::default()
            },
            vec![&t1, &t3],
            "problem pa",
        ),
        (
            TaskFilter {
                worker_id: Some("wk".into()),
                ..Default::default()
            },
            vec![&t3],
            "worker wk",
        ),
        (
            TaskFilter {
                worker_id: Some("wd".into()),
                ..Default::default()
            },
            vec![&t4],
            "worker wd (finished tasks keep their worker)",
        ),
        (
            TaskFilter {
                backend_type: Some("kind".into()),
                ..Default::default()
            },
            vec![&t2, &t3],
            "backend kind",
        ),
        (
            TaskFilter {
                problem_id: Some("pa".into()),
                backend_type: Some("kind".into()),
                status: Some(TaskStatus::Running),
                worker_id: Some("wk".into()),
                group_id: None,
                experiment: None,
            },
            vec![&t3],
            "all four filters",
        ),
        (
            TaskFilter {
                problem_id: Some("pa".into()),
                status: Some(TaskStatus::Completed),
                ..Default::default()
            },
            vec![],
            "problem pa and status completed",
        ),
        (
            TaskFilter::default().with_experiment(Some("exp-a".into())),
            vec![&t2, &t4],
            "experiment exp-a",
        ),
        (
            TaskFilter::default()
                .with_experiment(Some("exp-a".into()))
                .with_status(Some(TaskStatus::Completed)),
            vec![&t4],
            "experiment exp-a and status completed",
        ),
        (
            TaskFilter::default().with_experiment(Some("exp-b".into())),
            vec![],
            "experiment exp-b (no task)",
        ),
    ];
    for (filter, expected, what) in cases {
        let (mut got, total) = listed(&store, filter, TaskSort::CreatedAsc, Page::default()).await;
        got.sort();
        let mut expected: Vec<TaskId> = expected.into_iter().map(|t| t.id).collect();
        expected.sort();
        assert_eq!(got, expected, "list_tasks with filter {what}");
        assert_eq!(total, expected.len() as u64, "total with filter {what}");
    }
}

/// The four sort orders. Ties break on id: ascending, except `-created_at`,
/// which is the exact reverse of `created_at` (id descending).
pub async fn list_tasks_sorts<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let a = create(&store, prioritized("a", 5)).await.id;
    h.advance_clock(&store, secs(1)).await;
    let b = create(&store, prioritized("b", 9)).await.id;
    h.advance_clock(&store, secs(1)).await;
    let c = create(&store, prioritized("c", 1)).await.id;
    h.advance_clock(&store, secs(1)).await;
    let batch = store
        .create_tasks(vec![prioritized("d", 5), prioritized("e", 5)])
        .await
        .expect("create_tasks");
    let mut tied = ids(&batch);
    tied.sort();
    let (d, e) = (tied[0], tied[1]);
    for (sort, expected) in [
        (TaskSort::CreatedAsc, [a, b, c, d, e]),
        (TaskSort::CreatedDesc, [e, d, c, b, a]),
        (TaskSort::PriorityAsc, [c, a, d, e, b]),
        (TaskSort::PriorityDesc, [b, a, d, e, c]),
    ] {
        let (got, total) = listed(&store, TaskFilter::default(), sort, Page::default()).await;
        assert_eq!(got, expected, "order of sort {sort:?} (ties on id)");
        assert_eq!(total, 5, "total with sort {sort:?}");
    }
}

/// `limit` and `offset` cut pages out of the sorted list; `total` always
/// counts every match.
pub async fn list_tasks_pages<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(create(&store, plain(&format!("p{i}"))).await.id);
        h.advance_clock(&store, secs(1)).await;
    }
    let page = |limit, offset| Page { limit, offset };
    let mut seen = Vec::new();
    for (offset, len) in [(0, 3), (3, 3), (6, 1)] {
        let (got, total) = listed(&store, TaskFilter::default(), TaskSort::CreatedAsc, page(3, offset)).await;
        assert_eq!(got.len(), len, "page at offset {offset} with limit 3");
        assert_eq!(total, 7, "total at offset {offset}");
        seen.extend(got);
    }
    assert_eq!(seen, all, "consecutive pages cover every task once, in order");
    let (got, total) = listed(&store, TaskFilter::default(), TaskSort::CreatedAsc, page(3, 10)).await;
    assert!(got.is_empty(), "a page past the end is empty");
    assert_eq!(total, 7, "a page past the end still reports the total");
    let (got, _) = listed(&store, TaskFilter::default(), TaskSort::CreatedDesc, page(2, 1)).await;
    assert_eq!(got, [all[5], all[4]], "pages of a descending sort");
    let (got, total) = listed(&store, TaskFilter::default(), TaskSort::CreatedAsc, page(100, 0)).await;
    assert_eq!((got.len(), total), (7, 7), "a large page holds everything");
}

/// `stats` counts tasks and workers per status (every status present, zero
/// when none) and pending tasks per backend type; the listing totals of each
/// status and backend type agree with those counts, exactly.
pub async fn stats_counts<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let empty = store.stats().await.expect("stats");
    assert_eq!(
        empty.tasks_by_status,
        TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect::<BTreeMap<_, _>>(),
        "an empty store reports every task status with 0"
    );
    assert_eq!(
        empty.workers_by_status,
        WorkerStatus::ALL
            .into_iter()
            .map(|s| (s, 0))
            .collect::<BTreeMap<_, _>>(),
        "an empty store reports every worker status with 0"
    );
    assert!(empty.queue_depth_by_backend.values().all(|n| *n == 0), "an empty queue");

    for _ in 0..3 {
        create(&store, plain("queued")).await;
    }
    for _ in 0..2 {
        create(&store, on_backend("queued", "kind")).await;
    }
    register(&store, "idle", "default").await;
    register(&store, "busy", "default").await;
    register(&store, "gone", "default").await;
    let running = create(&store, plain("running")).await;
    claim_some(&store, &request_task("busy", running.id)).await;
    for status in [
        TerminalStatus::Completed,
        TerminalStatus::Failed,
        TerminalStatus::Timeout,
    ] {
        let task = create(&store, plain("finished")).await;
        let claimed = claim_some(&store, &request_task("busy", task.id)).await;
        store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("finish");
    }
    let cancelled = create(&store, plain("cancelled")).await;
    store.cancel_task(cancelled.id).await.expect("cancel_task");
    store
        .heartbeat(&beat("busy", WorkerStatus::Busy, None))
        .await
        .expect("heartbeat");
    store.deregister_worker("gone").await.expect("deregister_worker");

    let stats = store.stats().await.expect("stats");
    let expected: BTreeMap<TaskStatus, u64> = [
        (TaskStatus::Pending, 5),
        (TaskStatus::Running, 1),
        (TaskStatus::Completed, 1),
        (TaskStatus::Failed, 1),
        (TaskStatus::Timeout, 1),
        (TaskStatus::Cancelled, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(stats.tasks_by_status, expected, "tasks per status");
    let depth = |backend: &str| stats.queue_depth_by_backend.get(backend).copied().unwrap_or(0);
    assert_eq!(
        depth("default"),
        3,
        "pending default tasks (running and finished ones excluded)"
    );
    assert_eq!(depth("kind"), 2, "pending kind tasks");
    assert_eq!(depth("other"), 0, "no task of backend other");
    let expected: BTreeMap<WorkerStatus, u64> = [
        (WorkerStatus::Idle, 1),
        (WorkerStatus::Busy, 1),
        (WorkerStatus::Offline, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(stats.workers_by_status, expected, "workers per status");

    // The listings' totals are the same counts (a store that maintains its counts keeps both in step).
    for status in TaskStatus::ALL {
        let (_, total) = listed(
            &store,
            TaskFilter::default().with_status(Some(status)),
            TaskSort::default(),
            Page::default(),
        )
        .await;
        assert_eq!(
            total, stats.tasks_by_status[&status],
            "total of status={status} and its stats count"
        );
    }
    let pending_on = |backend: &str| {
        TaskFilter::default()
            .with_status(Some(TaskStatus::Pending))
            .with_backend_type(Some(backend.to_string()))
    };
    let (_, total) = listed(&store, pending_on("kind"), TaskSort::default(), Page::default()).await;
    assert_eq!(total, depth("kind"), "total of pending kind tasks and the queue depth");
    let (_, total) = listed(&store, TaskFilter::default(), TaskSort::default(), Page::default()).await;
    assert_eq!(
        total,
        stats.tasks_by_status.values().sum::<u64>(),
        "total of every task"
    );
}
