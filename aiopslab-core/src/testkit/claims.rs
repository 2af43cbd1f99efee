//! Checks of who gets which task: claim order, routing by backend type and
//! supported problems, claims of a chosen task, and the dispatch delay.

use super::support::*;
use super::StoreHarness;
use crate::store::prelude::*;
use crate::store::ClaimRequest;
use crate::task::{TaskId, TaskStatus};

/// Claims go by priority (highest first), then age (oldest first).
pub async fn claim_order_priority_then_age<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let mut created = Vec::new();
    for (name, priority) in [("a", 5), ("b", 9), ("c", 5), ("d", 9), ("e", 0)] {
        created.push(create(&store, prioritized(name, priority)).await.id);
        h.advance_clock(&store, secs(1)).await;
    }
    let mut order = Vec::new();
    for _ in 0..created.len() {
        order.push(claim_some(&store, &request("w1")).await.problem_id);
    }
    assert_eq!(
        order,
        ["b", "d", "a", "c", "e"],
        "claim order must be priority desc, then created_at asc"
    );
    claim_none(&store, &request("w1"), "every task was claimed").await;
}

/// Tasks with the same priority and creation time are claimed in id order.
pub async fn claim_ties_break_on_id<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let specs = (0..6).map(|i| prioritized(&format!("p{i}"), 7)).collect();
    let created = store.create_tasks(specs).await.expect("create_tasks");
    assert!(
        created.iter().all(|t| t.created_at == created[0].created_at),
        "one create_tasks call stamps one creation time"
    );
    let mut expected = ids(&created);
    expected.sort();
    let mut order = Vec::new();
    for _ in 0..created.len() {
        order.push(claim_some(&store, &request("w1")).await.id);
    }
    assert_eq!(order, expected, "equal priority and age: claims go in id order");
}

/// `claim_many` hands out up to `max_tasks` tasks at once, best first (the order of single claims), each
/// running for the claimer; a limit outside 1..=64 is refused naming `max_tasks`; an empty queue gives none.
pub async fn claim_many_takes_the_best_up_to_its_limit<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    for (name, priority) in [("a", 5), ("b", 9), ("c", 5), ("d", 9), ("e", 0)] {
        create(&store, prioritized(name, priority)).await;
        h.advance_clock(&store, secs(1)).await;
    }
    let first = store.claim_many(&request("w1").up_to(3)).await.expect("claim_many");
    let names: Vec<&str> = first.iter().map(|t| t.problem_id.as_str()).collect();
    assert_eq!(names, ["b", "d", "a"], "the three best, best first");
    for task in &first {
        assert_eq!(task.status, TaskStatus::Running);
        assert_eq!(task.worker_id.as_deref(), Some("w1"));
        assert_eq!(task.attempt, 1);
        let stored = store.get_task(task.id).await.expect("get_task");
        assert_eq!(stored.status, TaskStatus::Running, "stored as running too");
    }
    let rest = store.claim_many(&request("w2").up_to(10)).await.expect("claim_many");
    let names: Vec<&str> = rest.iter().map(|t| t.problem_id.as_str()).collect();
    assert_eq!(names, ["c", "e"], "what is left, fewer than asked for");
    let none = store.claim_many(&request("w2").up_to(4)).await.expect("claim_many");
    assert!(none.is_empty(), "an empty queue gives no task, not an error: {none:?}");
    for limit in [0, crate::store::MAX_CLAIM_BATCH + 1] {
        match store.claim_many(&request("w1").up_to(limit)).await {
            Err(error @ crate::StoreError::Invalid(_)) => {
                assert!(error.to_string().contains("max_tasks"), "names max_tasks: {error}")
            }
            other => panic!("max_tasks {limit}: expected StoreError::Invalid, got {other:?}"),
        }
    }
}

/// Only workers of the task's backend type get it.
pub async fn claim_routes_by_backend_type<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w0", "wk", "wd"]).await;
    let default_task = create(&store, prioritized("x", 9)).await;
    let kind_task = create(&store, on_backend("y", "kind")).await;
    let kind = |worker: &str| ClaimRequest {
        backend_type: "kind".into(),
        ..request(worker)
    };
    claim_none(
        &store,
        &ClaimRequest {
            backend_type: "other".into(),
            ..request("w0")
        },
        "no task has backend type other",
    )
    .await;
    assert_eq!(
        claim_some(&store, &kind("wk")).await.id,
        kind_task.id,
        "a kind worker gets the kind task"
    );
    claim_none(&store, &kind("wk"), "a kind worker never gets a default task").await;
    assert_eq!(
        claim_some(&store, &request("wd")).await.id,
        default_task.id,
        "a default worker gets the default task"
    );
}

/// A worker's `supported_problems`, when given, must contain the problem.
pub async fn claim_respects_supported_problems<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let a = create(&store, prioritized("pa", 9)).await;
    let b = create(&store, prioritized("pb", 5)).await;
    let supporting = |problems: &[&str]| ClaimRequest {
        supported_problems: Some(problems.iter().map(|p| p.to_string()).collect()),
        ..request("w1")
    };
    claim_none(&store, &supporting(&[]), "an empty supported list matches nothing").await;
    claim_none(&store, &supporting(&["pc"]), "no task of problem pc").await;
    assert_eq!(
        claim_some(&store, &supporting(&["pb", "pc"])).await.id,
        b.id,
        "a worker supporting pb gets pb despite pa's higher priority"
    );
    assert_eq!(
        claim_some(&store, &request("w2")).await.id,
        a.id,
        "no list: any problem"
    );
}

/// `ClaimRequest::task_id` claims exactly that task, if it is pending and
/// matches; otherwise nothing.
pub async fn claim_specific_task<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let high = create(&store, prioritized("hi", 9)).await;
    let low = create(&store, prioritized("lo", 0)).await;
    let got = claim_some(&store, &request_task("w1", low.id)).await;
    assert_eq!(got.id, low.id, "a claim by id takes that task, whatever its priority");
    claim_none(
        &store,
        &request_task("w2", low.id),
        "the chosen task is already running",
    )
    .await;
    claim_none(
        &store,
        &ClaimRequest {
            backend_type: "kind".into(),
            ..request_task("w2", high.id)
        },
        "a claim by id still requires the backend type",
    )
    .await;
    claim_none(
        &store,
        &ClaimRequest {
            supported_problems: Some(vec!["zzz".into()]),
            ..request_task("w2", high.id)
        },
        "a claim by id still requires a supported problem",
    )
    .await;
    claim_none(
        &store,
        &request_task("w2", TaskId::new_v4()),
        "a claim of an unknown id",
    )
    .await;
    assert_status(
        &get(&store, high.id).await,
        TaskStatus::Pending,
        "refused claims leave the task pending",
    );
    assert_eq!(
        claim_some(&store, &request_task("w2", high.id)).await.id,
        high.id,
        "a matching claim by id"
    );
}

/// With a dispatch delay, a new task is claimable only once it is that old.
pub async fn dispatch_delay_holds_new_tasks<H: StoreHarness>(h: &H) {
    let store = h
        .store(crate::policy::LeasePolicy {
            dispatch_delay: secs(30),
            ..suite_policy()
        })
        .await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    claim_none(&store, &request("w1"), "a task younger than the dispatch delay").await;
    claim_none(
        &store,
        &request_task("w1", task.id),
        "a task younger than the dispatch delay, by id",
    )
    .await;
    assert_status(
        &get(&store, task.id).await,
        TaskStatus::Pending,
        "a held task stays pending",
    );
    h.advance_clock(&store, secs(31)).await;
    let claimed = claim_some(&store, &request("w1")).await;
    assert_eq!(claimed.id, task.id, "the task is claimable once the delay passed");
}
