//! Checks of fair share between [experiments](crate::experiment): among tasks of one priority the claim serves
//! the experiments in turn (tasks without one as one more class), priority still wins, and no claim ever starts
//! a task of an experiment that runs its `max_running` tasks — under racing claimers too, with limits changed at
//! runtime; an experiment no one configured is unlimited.
//!
//! The limits need the [`Experiments`](crate::store::Experiments) capability: the harness's store must offer it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::support::*;
use super::StoreHarness;
use crate::error::StoreError;
use crate::experiment::{Experiment, ExperimentSettings};
use crate::query::{Page, TaskFilter, TaskSort};
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{NewTask, Task, TaskId, TaskSpec, TaskStatus};

/// A spec for `problem` in `experiment` (`None`: none) at `priority`.
pub fn in_experiment(problem: &str, experiment: Option<&str>, priority: i64) -> TaskSpec {
    spec(NewTask {
        priority: Some(priority),
        experiment: experiment.map(str::to_string),
        ..NewTask::new(problem)
    })
}

/// The store's [`Experiments`](crate::store::Experiments), which these checks need.
fn experiments<S: TaskStore>(store: &S) -> &dyn Experiments {
    store
        .experiments()
        .expect("the fair-share checks need a store that offers the Experiments capability")
}

/// Sets `name`'s limit (`None`: unlimited).
async fn limit<S: TaskStore>(store: &S, name: &str, max_running: Option<u32>) -> Experiment {
    let settings = max_running.map_or_else(ExperimentSettings::unlimited, ExperimentSettings::limited);
    experiments(store)
        .set_experiment(name, settings)
        .await
        .unwrap_or_else(|e| panic!("set_experiment {name}: {e}"))
}

/// Reads `name` with its counts.
async fn read<S: TaskStore>(store: &S, name: &str) -> Experiment {
    experiments(store)
        .get_experiment(name)
        .await
        .unwrap_or_else(|e| panic!("get_experiment {name}: {e}"))
}

/// Creates `count` tasks of `experiment`, one call each, named `{label}{i}`.
async fn create_in<S: TaskStore>(
    store: &S,
    label: &str,
    experiment: Option<&str>,
    priority: i64,
    count: usize,
) -> Vec<Task> {
    let mut created = Vec::with_capacity(count);
    for i in 0..count {
        created.push(create(store, in_experiment(&format!("{label}{i}"), experiment, priority)).await);
    }
    created
}

/// The class of a claimed task, as the checks name it: its experiment, or `-` for none.
fn class(task: &Task) -> &str {
    task.experiment.as_deref().unwrap_or("-")
}

/// `tasks` by (created_at, id): the order within an experiment.
fn by_age(tasks: &[Task]) -> Vec<TaskId> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by_key(|task| (task.created_at, task.id));
    sorted.into_iter().map(|task| task.id).collect()
}

/// Among tasks of one priority, single claims (each run finished before the next claim, as one worker would)
/// serve the experiments in turn — the one served least recently first, classes never served by their oldest
/// task — rather than oldest first; the tasks without an experiment take their turn as one class. Within an
/// experiment the oldest task goes first. Several slots claimed at once interleave the same way.
pub async fn fair_share_round_robin_between_experiments<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    // The big experiment submitted first: oldest first would run all six before anything else.
    let big = create_in(&store, "a", Some("big"), 5, 6).await;
    h.advance_clock(&store, secs(1)).await;
    let small = create_in(&store, "b", Some("small"), 5, 3).await;
    h.advance_clock(&store, secs(1)).await;
    let plain = create_in(&store, "n", None, 5, 2).await;

    let mut order = Vec::new();
    let mut claimed: HashMap<String, Vec<TaskId>> = HashMap::new();
    for _ in 0..11 {
        let task = claim_some(&store, &request("w1")).await;
        order.push(class(&task).to_string());
        claimed.entry(class(&task).to_string()).or_default().push(task.id);
        store
            .finish(task.lease_token(), completed())
            .await
            .expect("finish the claimed task");
    }
    claim_none(&store, &request("w1"), "every task was claimed").await;
    assert_eq!(
        order,
        ["big", "small", "-", "big", "small", "-", "big", "small", "big", "big", "big"],
        "equal priority: the experiments (and the tasks without one) take turns, least recently served first"
    );
    for (name, tasks) in [("big", &big), ("small", &small), ("-", &plain)] {
        assert_eq!(claimed[name], by_age(tasks), "within {name} the oldest task goes first");
    }

    // Four slots at once, nothing finished: two of each, the oldest of each.
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let first = create_in(&store, "a", Some("first"), 5, 4).await;
    h.advance_clock(&store, secs(1)).await;
    let second = create_in(&store, "b", Some("second"), 5, 4).await;
    let batch = store.claim_many(&request("w1").up_to(4)).await.expect("claim_many");
    let mut got: Vec<TaskId> = ids(&batch);
    got.sort();
    let mut expected: Vec<TaskId> = by_age(&first)[..2]
        .iter()
        .chain(&by_age(&second)[..2])
        .copied()
        .collect();
    expected.sort();
    assert_eq!(
        got, expected,
        "four slots over two experiments of one priority: the two oldest of each, not the four oldest"
    );
}

/// Priority wins over fairness: a higher-priority experiment runs before the others however often it was
/// served; an experiment at its limit is passed over for lower-priority tasks, and gets the next slot again when
/// one of its runs ends.
pub async fn fair_share_priority_beats_fairness<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let low = create_in(&store, "l", Some("low"), 5, 2).await;
    let plain = create_in(&store, "n", None, 3, 1).await;
    h.advance_clock(&store, secs(1)).await;
    create_in(&store, "h", Some("high"), 8, 4).await;
    limit(&store, "high", Some(2)).await;

    let mut running = Vec::new();
    let mut order = Vec::new();
    for _ in 0..5 {
        let task = claim_some(&store, &request("w1")).await;
        order.push(format!("{}@{}", class(&task), task.parameters.priority));
        running.push(task);
    }
    assert_eq!(
        order,
        ["high@8", "high@8", "low@5", "low@5", "-@3"],
        "higher priority first (up to its limit), then the lower priorities in order"
    );
    assert_eq!(ids(&running[2..4]), by_age(&low));
    assert_eq!(running[4].id, plain[0].id);
    claim_none(
        &store,
        &request("w1"),
        "high is at its limit of 2 and nothing else is pending",
    )
    .await;
    store
        .finish(running[0].lease_token(), completed())
        .await
        .expect("finish a run of high");
    let next = claim_some(&store, &request("w1")).await;
    assert_eq!(
        (class(&next), next.parameters.priority),
        ("high", 8),
        "a slot of high freed: its next task starts"
    );
    claim_none(&store, &request("w1"), "high is at its limit again").await;
}

/// Limits set at runtime bind the next claim: lowered below what runs, no task of the experiment starts until
/// enough runs end (nothing running is stopped); raised, more start; set back to unlimited, all start. A claim of
/// one chosen task keeps the limit too.
pub async fn fair_share_limit_changes_take_effect<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let tasks = create_in(&store, "e", Some("exp"), 5, 8).await;
    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(claim_some(&store, &request("w1")).await);
    }
    let experiment = limit(&store, "exp", Some(2)).await;
    assert_eq!(
        (experiment.max_running, experiment.running, experiment.pending),
        (Some(2), 3, 5),
        "set_experiment answers the limit and the counts"
    );
    claim_none(&store, &request("w1"), "3 run and the limit was lowered to 2").await;
    let waiting = tasks
        .iter()
        .find(|task| running.iter().all(|r| r.id != task.id))
        .expect("a pending task of exp");
    claim_none(
        &store,
        &request_task("w1", waiting.id),
        "a claim of one chosen task keeps the limit too",
    )
    .await;
    assert_eq!(
        get(&store, running[0].id).await.status,
        TaskStatus::Running,
        "lowering a limit stops nothing"
    );
    store
        .finish(running.remove(0).lease_token(), completed())
        .await
        .expect("finish");
    claim_none(&store, &request("w1"), "2 run, the limit is 2").await;
    store
        .finish(running.remove(0).lease_token(), completed())
        .await
        .expect("finish");
    running.push(claim_some(&store, &request_task("w1", waiting.id)).await);
    claim_none(&store, &request("w1"), "back at the limit of 2").await;

    limit(&store, "exp", Some(4)).await;
    let more = store.claim_many(&request("w1").up_to(5)).await.expect("claim_many");
    assert_eq!(more.len(), 2, "the limit raised to 4: two more start, not five");
    assert_eq!(read(&store, "exp").await.running, 4);

    limit(&store, "exp", None).await;
    let rest = store.claim_many(&request("w1").up_to(10)).await.expect("claim_many");
    assert_eq!(rest.len(), 2, "unlimited again: every remaining task starts");
    let experiment = read(&store, "exp").await;
    assert_eq!(
        (experiment.max_running, experiment.running, experiment.pending),
        (None, 6, 0)
    );
}

/// An experiment no one configured is unlimited and is served like any other; it is found and listed while it has
/// tasks pending or running. An experiment may be configured before it has tasks, and stays; an unknown one is
/// not found; names outside the pattern are refused naming `name`.
pub async fn fair_share_unknown_experiment_is_unlimited<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    create_in(&store, "u", Some("unconfigured"), 5, 5).await;
    let claimed = store.claim_many(&request("w1").up_to(10)).await.expect("claim_many");
    assert_eq!(claimed.len(), 5, "no limit: all five start");
    assert_eq!(
        read(&store, "unconfigured").await,
        Experiment {
            name: "unconfigured".into(),
            max_running: None,
            running: 5,
            pending: 0,
        }
    );
    match experiments(&store).get_experiment("nobody").await {
        Err(StoreError::NotFound {
            entity: "experiment", ..
        }) => {}
        other => panic!("an experiment never configured and without tasks: expected NotFound, got {other:?}"),
    }
    let fresh = limit(&store, "later", Some(3)).await;
    assert_eq!(
        (fresh.max_running, fresh.running, fresh.pending),
        (Some(3), 0, 0),
        "configured before it has tasks"
    );
    let names: Vec<String> = experiments(&store)
        .list_experiments()
        .await
        .expect("list_experiments")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["later", "unconfigured"], "listed by name");
    for bad in ["", "has space", "a/b"] {
        match experiments(&store)
            .set_experiment(bad, ExperimentSettings::limited(1))
            .await
        {
            Err(StoreError::Invalid(error)) => assert_eq!(error.field, "name", "{error}"),
            other => panic!("experiment name {bad:?}: expected Invalid naming name, got {other:?}"),
        }
    }
    for task in claimed {
        store.finish(task.lease_token(), completed()).await.expect("finish");
    }
    match experiments(&store).get_experiment("unconfigured").await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("an unconfigured experiment whose tasks all ended: expected NotFound, got {other:?}"),
    }
    let later = read(&store, "later").await;
    assert_eq!(later.max_running, Some(3), "a configured experiment stays");
}

/// How long a claimer of the racing check holds each task.
const HOLD: std::time::Duration = std::time::Duration::from_millis(3);

/// The experiments of the racing check: (name, limit, tasks out of every ten).
const RACED: [(&str, Option<u32>, usize); 4] = [
    ("one", Some(1), 1),
    ("three", Some(3), 2),
    ("free", None, 3),
    ("-", None, 4),
];

/// `claimers` concurrent claimers (each on a replica of its own when the harness offers them, and each seeing its
/// own part of the queue: a third claim only two of its four problems, a third the other two) drain tasks spread
/// over experiments limited to 1 and 3, an unlimited one and tasks without one: at every step — as each claimer
/// counts what it holds, as the store reports its counts right after each claim, and as a monitor polls them — no
/// experiment runs more than its limit; the limits do bind (some claim found only tasks of a full experiment);
/// every task is claimed exactly once and completes.
pub async fn fair_share_limits_hold_under_racing_claimers<H: StoreHarness>(h: &H, claimers: usize, tasks: usize) {
    let tasks = tasks.clamp(100, 4_000);
    let store = Arc::new(h.store(suite_policy()).await);
    for (name, max_running, _) in RACED {
        if let Some(max) = max_running {
            limit(store.as_ref(), name, Some(max)).await;
        }
    }
    let pick = |i: usize| {
        let mut slot = i % 10;
        RACED
            .iter()
            .find(|(_, _, share)| {
                let found = slot < *share;
                slot = slot.saturating_sub(*share);
                found
            })
            .map_or("-", |(name, _, _)| *name)
    };
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|i| {
            let name = pick(i);
            let experiment = (name != "-").then_some(name);
            in_experiment(&format!("race-p{}", i % 4), experiment, (i % 3) as i64 + 4)
        })
        .collect();
    let mut created = HashSet::with_capacity(tasks);
    for chunk in specs.chunks(500) {
        for task in store.create_tasks(chunk.to_vec()).await.expect("create_tasks") {
            created.insert(task.id);
        }
    }
    let limits: Arc<HashMap<String, u32>> = Arc::new(
        RACED
            .iter()
            .filter_map(|(name, max, _)| max.map(|max| (name.to_string(), max)))
            .collect(),
    );
    let held: Arc<HashMap<String, AtomicU64>> =
        Arc::new(limits.keys().map(|name| (name.clone(), AtomicU64::new(0))).collect());
    let full_experiment_waits = Arc::new(AtomicU64::new(0));

    let mut handles_to = h.replicas(store.as_ref(), claimers).await.into_iter().map(Arc::new);
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let store = Arc::clone(&store);
        let limits = Arc::clone(&limits);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut polls = 0u64;
            while !done.load(Ordering::Acquire) {
                for experiment in experiments(store.as_ref())
                    .list_experiments()
                    .await
                    .expect("list_experiments")
                {
                    if let Some(max) = limits.get(&experiment.name) {
                        assert!(
                            experiment.running <= u64::from(*max),
                            "the store reports {} running tasks of {}, over its limit of {max}",
                            experiment.running,
                            experiment.name
                        );
                    }
                }
                polls += 1;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            polls
        })
    };
    let mut handles = Vec::with_capacity(claimers);
    for c in 0..claimers {
        let store = handles_to.next().unwrap_or_else(|| Arc::clone(&store));
        let (limits, held, waits) = (
            Arc::clone(&limits),
            Arc::clone(&held),
            Arc::clone(&full_experiment_waits),
        );
        let worker = format!("racer-{c}");
        // Claimers that see different parts of the queue: a third take only two of the four problems, a third the
        // other two, a third any (a limit must hold however the claimers' views of the queue differ).
        let problems = match c % 3 {
            0 => Some(vec!["race-p0".to_string(), "race-p1".to_string()]),
            1 => Some(vec!["race-p2".to_string(), "race-p3".to_string()]),
            _ => None,
        };
        handles.push(tokio::spawn(async move {
            register(store.as_ref(), &worker, "default").await;
            let claim = request(&worker).for_problems(problems);
            let mut claimed: Vec<(TaskId, u32)> = Vec::new();
            loop {
                let Some(task) = store.claim(&claim).await.expect("claim") else {
                    let pending = pending_count(store.as_ref()).await;
                    if pending == 0 {
                        break;
                    }
                    // Only tasks of full experiments (or of other claimers' statements) are left: wait for a slot.
                    waits.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                };
                if claimed.len() % 50 == 49 {
                    store
                        .heartbeat(&beat(&worker, crate::worker::WorkerStatus::Busy, None))
                        .await
                        .expect("heartbeat");
                }
                if let Some(name) = task.experiment.as_deref() {
                    if let (Some(max), Some(count)) = (limits.get(name), held.get(name)) {
                        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
                        assert!(
                            now <= u64::from(*max),
                            "{now} tasks of {name} run at once, over its limit of {max}"
                        );
                        let stored = read(store.as_ref(), name).await;
                        assert!(
                            stored.running <= u64::from(*max),
                            "right after a claim the store counts {} running tasks of {name}, over its limit of {max}",
                            stored.running
                        );
                    }
                }
                // Hold the task a while (longer than a claim takes), so the limits bind and every claim that
                // overlapped a run of the same experiment is counted against it above.
                tokio::time::sleep(HOLD).await;
                if let Some(count) = task.experiment.as_deref().and_then(|name| held.get(name)) {
                    count.fetch_sub(1, Ordering::AcqRel);
                }
                let done = store
                    .finish(task.lease_token(), completed())
                    .await
                    .unwrap_or_else(|e| panic!("finishing a task this claimer had just claimed failed: {e}"));
                assert_eq!(done.status, TaskStatus::Completed);
                claimed.push((task.id, task.attempt));
            }
            claimed
        }));
    }
    let mut seen = HashSet::with_capacity(tasks);
    for handle in handles {
        for (id, attempt) in handle.await.expect("a claimer panicked") {
            assert!(seen.insert(id), "task {id} was claimed twice");
            assert_eq!(attempt, 1, "task {id} needed a second attempt");
        }
    }
    done.store(true, Ordering::Release);
    let polls = monitor.await.expect("the monitor found an experiment over its limit");
    assert!(polls > 0, "the monitor read the counts at least once");
    assert_eq!(seen, created, "every task was claimed exactly once");
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        assert_eq!(count_of(store.as_ref(), status).await, 0, "no task left {status}");
    }
    assert_eq!(count_of(store.as_ref(), TaskStatus::Completed).await, tasks as u64);
    for (name, max, _) in RACED {
        if max.is_some() {
            let experiment = read(store.as_ref(), name).await;
            assert_eq!((experiment.running, experiment.pending), (0, 0), "{name}: nothing left");
        }
    }
    assert!(
        full_experiment_waits.load(Ordering::Relaxed) > 0,
        "with a limit of 1 and 32 claimers some claim must have found only a full experiment's tasks"
    );
}

/// Tasks pending now.
async fn pending_count<S: TaskStore>(store: &S) -> u64 {
    count_of(store, TaskStatus::Pending).await
}

/// Tasks in `status` now.
async fn count_of<S: TaskStore>(store: &S, status: TaskStatus) -> u64 {
    store
        .list_tasks(
            &TaskQuery::new(TaskFilter::default().with_status(Some(status)))
                .sorted(TaskSort::CreatedAsc)
                .page(Page { limit: 1, offset: 0 }),
        )
        .await
        .expect("list_tasks")
        .total
}
