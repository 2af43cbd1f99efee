//! Checks of group-aware retry (see [`crate::group`]): an aborted member of a group that asks for refills is
//! replaced in the same step as its abort, by a pending task with its problem and parameters that names it in
//! `replaces`, while the group lacks `min_valid` hopeful members and refills remain; retries, timeouts and
//! cancels are never refilled; concurrent aborts never pass `max_refills`.

use std::collections::HashSet;
use std::sync::Arc;

use super::support::*;
use super::StoreHarness;
use crate::batch::{BatchSpec, GroupId};
use crate::group::{Group, GroupPolicy, GroupStatus};
use crate::query::{Page, TaskFilter, TaskSort};
use crate::store::prelude::*;
use crate::store::{FinalReport, TaskStore};
use crate::task::{NewTask, Task, TaskId, TaskStatus, TerminalStatus};
use crate::worker::WorkerRegistration;

/// A batch of `size` copies of `new` in a fresh group asking `min_valid` and `max_refills`.
fn refilled_batch(new: NewTask, size: usize, min_valid: Option<u32>, max_refills: u32) -> BatchSpec {
    BatchSpec {
        group_id: Some(GroupId::new_v4()),
        specs: vec![spec(new); size],
        policy: GroupPolicy { min_valid, max_refills },
    }
}

/// A task request with recognisable parameters, to check a replacement copies them.
fn distinctive(max_retries: i64) -> NewTask {
    NewTask {
        priority: Some(7),
        max_steps: Some(12),
        max_retries: Some(max_retries),
        metadata: Some(object(serde_json::json!({"sample": "grpo", "n": 1}))),
        agent_config: Some(object(serde_json::json!({"model": "m", "model_version": 3}))),
        ..NewTask::new("refilled-problem")
    }
}

/// Creates the batch, returning its group id and tasks in order.
async fn create_group<S: TaskStore>(store: &S, batch: BatchSpec) -> (GroupId, Vec<Task>) {
    let created = store.create_batch(batch, None).await.expect("create_batch");
    let group_id = created.group_id.expect("a batch with a group");
    (group_id, created.tasks)
}

/// A group's members (replacements included), oldest first.
async fn members<S: TaskStore>(store: &S, group_id: GroupId) -> Vec<Task> {
    let filter = TaskFilter::default().with_group_id(Some(group_id));
    let page = Page {
        limit: Page::MAX_LIMIT,
        offset: 0,
    };
    store
        .list_tasks(&TaskQuery::new(filter).sorted(TaskSort::CreatedAsc).page(page))
        .await
        .expect("list_tasks by group")
        .tasks
}

/// What the store keeps of the group (it must keep it).
async fn group<S: TaskStore>(store: &S, group_id: GroupId) -> Group {
    store
        .get_group(group_id)
        .await
        .expect("get_group")
        .unwrap_or_else(|| panic!("the store keeps no record of group {group_id}, which a batch created"))
}

/// Claims exactly `task_id` as `worker` and finishes it with `status`.
async fn run<S: TaskStore>(store: &S, worker: &str, task_id: TaskId, status: TerminalStatus) -> Task {
    let claimed = claim_some(store, &request_task(worker, task_id)).await;
    store
        .finish(claimed.lease_token(), outcome(status))
        .await
        .expect("finish")
}

/// The members that replace another, with whom they replace.
fn replacements(members: &[Task]) -> Vec<(TaskId, TaskId)> {
    members
        .iter()
        .filter_map(|task| task.replaces.map(|replaced| (task.id, replaced)))
        .collect()
}

#[track_caller]
fn assert_copied(replacement: &Task, aborted: &Task) {
    assert_eq!(
        replacement.problem_id, aborted.problem_id,
        "a replacement runs the same problem"
    );
    assert_eq!(
        replacement.parameters, aborted.parameters,
        "a replacement has the aborted member's parameters"
    );
    assert_eq!(
        replacement.group_id, aborted.group_id,
        "a replacement joins the same group"
    );
    assert_eq!(
        replacement.replaces,
        Some(aborted.id),
        "a replacement names the member it replaces"
    );
    assert_status(replacement, TaskStatus::Pending, "a replacement is a new pending task");
    assert_eq!(replacement.attempt, 0, "a replacement has not run yet");
    assert!(replacement.result.is_none() && replacement.error_details.is_none());
}

/// The case: a group of 8 (every member needed, 2 refills) where two members abort ends with 8 valid
/// members and 2 refills, `complete`; each replacement links to the member it replaces and copies its problem
/// and parameters; a batch's members and plain tasks name nothing in `replaces`.
pub async fn aborted_members_are_refilled<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;
    let loner = create(&store, plain("solo")).await;
    assert_eq!(loner.replaces, None, "a plain task replaces nothing");
    let (group_id, tasks) = create_group(&store, refilled_batch(distinctive(0), 8, None, 2)).await;
    assert!(
        tasks.iter().all(|t| t.replaces.is_none()),
        "batch members replace nothing"
    );
    let recorded = group(&store, group_id).await;
    assert_eq!(
        (
            recorded.size,
            recorded.min_valid,
            recorded.max_refills,
            recorded.refills
        ),
        (8, 8, 2, 0),
        "the group as created: size 8, min_valid defaults to its size"
    );
    for (i, task) in tasks.iter().enumerate() {
        let status = if i == 2 || i == 5 {
            TerminalStatus::Failed
        } else {
            TerminalStatus::Completed
        };
        let finished = run(&store, "w", task.id, status).await;
        assert_status(&finished, TaskStatus::from(status), "the member's own finish");
    }
    let all = members(&store, group_id).await;
    let pairs = replacements(&all);
    assert_eq!(pairs.len(), 2, "two aborts, two replacements: {all:?}");
    let replaced: HashSet<TaskId> = pairs.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        replaced,
        HashSet::from([tasks[2].id, tasks[5].id]),
        "each replacement names an aborted member"
    );
    for (id, replaced) in &pairs {
        let replacement = all.iter().find(|t| t.id == *id).expect("listed");
        let aborted = all.iter().find(|t| t.id == *replaced).expect("listed");
        assert_status(aborted, TaskStatus::Failed, "the replaced member stays failed");
        assert_copied(replacement, aborted);
    }
    assert_eq!(group(&store, group_id).await.refills, 2, "two refills used");
    assert_eq!(recorded.status(&all), GroupStatus::Running, "replacements still to run");
    for (id, _) in &pairs {
        run(&store, "w", *id, TerminalStatus::Completed).await;
    }
    let all = members(&store, group_id).await;
    let group = group(&store, group_id).await;
    let valid = all.iter().filter(|t| t.status == TaskStatus::Completed).count();
    assert_eq!(
        (all.len(), valid, group.refills),
        (10, 8, 2),
        "8 valid members and 2 refills"
    );
    assert_eq!(group.status(&all), GroupStatus::Complete, "every standing member valid");
}

/// Refills run out: a group needing every member with one refill fails when two members abort (the second is
/// not replaced; `failed`); a group of 4 needing 3 with one refill skips the first abort (3 hopeful remain),
/// replaces the second, and ends `partial` with 3 valid.
pub async fn refills_run_out<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;

    let (strict, tasks) = create_group(&store, refilled_batch(NewTask::new("strict"), 2, None, 1)).await;
    run(&store, "w", tasks[0].id, TerminalStatus::Failed).await;
    let refill = members(&store, strict)
        .await
        .into_iter()
        .find(|t| t.replaces == Some(tasks[0].id))
        .expect("the first abort is replaced");
    run(&store, "w", refill.id, TerminalStatus::Failed).await;
    run(&store, "w", tasks[1].id, TerminalStatus::Completed).await;
    let all = members(&store, strict).await;
    assert_eq!(
        all.len(),
        3,
        "the replacement's abort is not replaced: no refill left ({all:?})"
    );
    let recorded = group(&store, strict).await;
    assert_eq!(recorded.refills, 1, "never more than max_refills");
    assert_eq!(recorded.status(&all), GroupStatus::Failed, "1 valid of 2 needed");

    let (loose, tasks) = create_group(&store, refilled_batch(NewTask::new("loose"), 4, Some(3), 1)).await;
    run(&store, "w", tasks[0].id, TerminalStatus::Failed).await;
    assert_eq!(
        members(&store, loose).await.len(),
        4,
        "3 hopeful members remain for min_valid 3: no refill"
    );
    run(&store, "w", tasks[1].id, TerminalStatus::Failed).await;
    let all = members(&store, loose).await;
    let pairs = replacements(&all);
    assert_eq!(pairs.len(), 1, "2 hopeful of 3 needed: one refill ({all:?})");
    assert_eq!(
        pairs[0].1, tasks[1].id,
        "the refill replaces the abort that left the group short"
    );
    for id in [tasks[2].id, tasks[3].id, pairs[0].0] {
        run(&store, "w", id, TerminalStatus::Completed).await;
    }
    let all = members(&store, loose).await;
    let recorded = group(&store, loose).await;
    assert_eq!((recorded.min_valid, recorded.refills), (3, 1));
    assert_eq!(recorded.status(&all), GroupStatus::Partial, "3 valid of 4, min_valid 3");
}

/// With `min_valid` below the size, refilling stops once enough members are valid: 2 of 4 needed, 2 completed,
/// then 2 aborts are not replaced however many refills are allowed; the group is `partial`.
pub async fn enough_valid_members_stop_refilling<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;
    let (group_id, tasks) = create_group(&store, refilled_batch(NewTask::new("p"), 4, Some(2), 4)).await;
    run(&store, "w", tasks[0].id, TerminalStatus::Completed).await;
    run(&store, "w", tasks[1].id, TerminalStatus::Completed).await;
    run(&store, "w", tasks[2].id, TerminalStatus::Failed).await;
    run(&store, "w", tasks[3].id, TerminalStatus::Failed).await;
    let all = members(&store, group_id).await;
    assert!(
        replacements(&all).is_empty(),
        "2 valid of 2 needed: no refill ({all:?})"
    );
    let recorded = group(&store, group_id).await;
    assert_eq!(recorded.refills, 0);
    assert_eq!(recorded.status(&all), GroupStatus::Partial);
}

/// A member whose failure its own retries requeue is not refilled (it is pending again, the same task); when
/// its last retry fails too it is. A member aborted by the sweep (its worker's lease expired, `worker_lost`) is
/// refilled like one a worker failed.
pub async fn retries_come_before_refills<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;
    let (group_id, tasks) = create_group(&store, refilled_batch(distinctive(1), 2, None, 2)).await;
    let requeued = run(&store, "w", tasks[0].id, TerminalStatus::Failed).await;
    assert_status(
        &requeued,
        TaskStatus::Pending,
        "a failure with a retry left is requeued",
    );
    assert!(
        replacements(&members(&store, group_id).await).is_empty(),
        "a requeued member is not refilled"
    );
    assert_eq!(group(&store, group_id).await.refills, 0);
    let failed = run(&store, "w", tasks[0].id, TerminalStatus::Failed).await;
    assert_status(&failed, TaskStatus::Failed, "the last retry failed");
    let all = members(&store, group_id).await;
    let pairs = replacements(&all);
    assert_eq!(pairs.len(), 1, "an abort for good is refilled");
    let replacement = all.iter().find(|t| t.id == pairs[0].0).expect("listed");
    assert_copied(replacement, &failed);

    // The sweep: the lease of a claimed member expires with no retry left (after its retry is spent).
    for attempt in 1..=2 {
        claim_some(&store, &request_task("w", tasks[1].id)).await;
        harness.advance_clock(&store, secs(61)).await;
        let report = store.sweep().await.expect("sweep");
        let expected = if attempt == 1 { &report.requeued } else { &report.failed };
        assert_eq!(expected, &vec![tasks[1].id], "sweep {attempt}: {report:?}");
        store
            .heartbeat(&beat("w", crate::worker::WorkerStatus::Idle, None))
            .await
            .expect("heartbeat");
    }
    let lost = get(&store, tasks[1].id).await;
    assert_eq!(
        lost.error_details.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost")
    );
    let all = members(&store, group_id).await;
    let pairs = replacements(&all);
    assert_eq!(pairs.len(), 2, "the sweep's abort is refilled too ({all:?})");
    assert!(pairs.iter().any(|(_, replaced)| *replaced == tasks[1].id));
    assert_eq!(group(&store, group_id).await.refills, 2);
}

/// Every path that aborts a member refills it: a worker's final report (when the store offers final reports), a
/// new instance taking the worker's id over, and the sweep of an expired lease.
pub async fn every_abort_path_refills<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;
    let (group_id, tasks) = create_group(&store, refilled_batch(distinctive(0), 3, None, 3)).await;

    let claimed = claim_some(&store, &request_task("w", tasks[0].id)).await;
    let reported = match store.final_reports() {
        Some(reports) => reports
            .finish_run(claimed.lease_token(), FinalReport::new(failed("backend_error")))
            .await
            .expect("finish_run"),
        None => store
            .finish(claimed.lease_token(), failed("backend_error"))
            .await
            .expect("finish"),
    };
    assert_status(&reported, TaskStatus::Failed, "the reported abort");

    let first = WorkerRegistration::new("taken", "default").with_instance_id("instance-a");
    store.register_worker(first).await.expect("register instance a");
    claim_some(&store, &request_task("taken", tasks[1].id)).await;
    let second = WorkerRegistration::new("taken", "default").with_instance_id("instance-b");
    store
        .register_worker(second)
        .await
        .expect("instance b takes the id over");
    assert_status(
        &get(&store, tasks[1].id).await,
        TaskStatus::Failed,
        "the taken-over run",
    );

    claim_some(&store, &request_task("w", tasks[2].id)).await;
    harness.advance_clock(&store, secs(61)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(report.failed, vec![tasks[2].id], "the sweep aborted the last member");

    let all = members(&store, group_id).await;
    let replaced: HashSet<TaskId> = replacements(&all).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        replaced,
        tasks.iter().map(|t| t.id).collect::<HashSet<_>>(),
        "each abort path refilled its member ({all:?})"
    );
    for task in all.iter().filter(|t| t.replaces.is_some()) {
        let aborted = all.iter().find(|t| Some(t.id) == task.replaces).expect("listed");
        assert_copied(task, aborted);
    }
    assert_eq!(group(&store, group_id).await.refills, 3);
}

/// Timeouts and cancels are not refilled: a pending member cancelled, a running one whose client asked to cancel
/// (whether its worker then reports `cancelled` or `failed`), one a worker reports `timeout`, and one the sweep
/// times out.
pub async fn timeouts_and_cancels_are_not_refilled<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register(&store, "w", "default").await;
    let short = NewTask {
        timeout_minutes: Some(1),
        ..NewTask::new("p")
    };
    let (group_id, tasks) = create_group(&store, refilled_batch(short, 5, None, 5)).await;
    store.cancel_task(tasks[0].id).await.expect("cancel pending");
    for (task, status) in [
        (&tasks[1], TerminalStatus::Cancelled),
        (&tasks[2], TerminalStatus::Failed),
    ] {
        let claimed = claim_some(&store, &request_task("w", task.id)).await;
        store.cancel_task(task.id).await.expect("cancel running");
        store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("finish after a cancel request");
    }
    run(&store, "w", tasks[3].id, TerminalStatus::Timeout).await;
    claim_some(&store, &request_task("w", tasks[4].id)).await;
    harness.advance_clock(&store, secs(121)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(report.timed_out, vec![tasks[4].id], "the sweep timed the member out");
    let all = members(&store, group_id).await;
    assert_eq!(all.len(), 5, "no refill for a cancel or a timeout: {all:?}");
    assert!(replacements(&all).is_empty());
    let recorded = group(&store, group_id).await;
    assert_eq!(recorded.refills, 0);
    assert_eq!(recorded.status(&all), GroupStatus::Failed, "no valid member");
}

/// Concurrent aborts in one group never pass `max_refills` nor refill more than the group needs: 16 members each
/// claimed by its own worker, all failed at once (every member needed, 4 refills) give exactly 4 replacements of
/// 4 distinct members; 8 members needing 6 (8 refills allowed), all failed at once, give exactly 6 whatever the
/// order the aborts are decided in (the first two leave 6 hopeful, each later one leaves 5 and is replaced); the
/// replacements failing at once are replaced no further past the budget.
pub async fn concurrent_aborts_never_exceed_max_refills<H: StoreHarness>(harness: &H) {
    let store = Arc::new(harness.store(suite_policy()).await);
    let (tight, tight_tasks) = create_group(store.as_ref(), refilled_batch(NewTask::new("tight"), 16, None, 4)).await;
    let (needy, needy_tasks) = create_group(store.as_ref(), refilled_batch(NewTask::new("needy"), 8, Some(6), 8)).await;
    let all_tasks: Vec<TaskId> = tight_tasks.iter().chain(&needy_tasks).map(|t| t.id).collect();
    fail_at_once(&store, &all_tasks, "first").await;

    let tight_members = members(store.as_ref(), tight).await;
    let pairs = replacements(&tight_members);
    let replaced: HashSet<TaskId> = pairs.iter().map(|(_, r)| *r).collect();
    assert_eq!(pairs.len(), 4, "exactly max_refills replacements ({tight_members:?})");
    assert_eq!(replaced.len(), 4, "of 4 distinct members");
    assert_eq!(group(store.as_ref(), tight).await.refills, 4);
    let needy_members = members(store.as_ref(), needy).await;
    assert_eq!(
        replacements(&needy_members).len(),
        6,
        "as many replacements as bring 6 hopeful members back ({needy_members:?})"
    );
    assert_eq!(group(store.as_ref(), needy).await.refills, 6);

    let second: Vec<TaskId> = pairs.iter().map(|(id, _)| *id).collect();
    fail_at_once(&store, &second, "second").await;
    let tight_members = members(store.as_ref(), tight).await;
    assert_eq!(tight_members.len(), 20, "no refill left for the replacements' aborts");
    let recorded = group(store.as_ref(), tight).await;
    assert_eq!(recorded.refills, 4);
    assert_eq!(recorded.status(&tight_members), GroupStatus::Failed);
}

/// Claims each of `ids` with a worker of its own, then fails them all at once.
async fn fail_at_once<S: TaskStore>(store: &Arc<S>, ids: &[TaskId], round: &str) {
    let mut leases = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let worker = format!("{round}-{i}");
        register(store.as_ref(), &worker, "default").await;
        leases.push(
            claim_some(store.as_ref(), &request_task(&worker, *id))
                .await
                .lease_token(),
        );
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(leases.len()));
    let handles: Vec<_> = leases
        .into_iter()
        .map(|lease| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.finish(lease, failed("backend_error")).await.expect("finish")
            })
        })
        .collect();
    for handle in handles {
        let task = handle.await.expect("a finishing task panicked");
        assert_status(&task, TaskStatus::Failed, "no retries: the abort is for good");
    }
}
