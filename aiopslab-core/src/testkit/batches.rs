//! Checks of batch creation: groups, atomic inserts and idempotency keys
//! (replay, conflict, and two requests with one key racing).

use std::collections::HashSet;
use std::sync::Arc;

use super::support::*;
use super::StoreHarness;
use crate::batch::{BatchSpec, CreatedBatch, GroupId, IdempotencyKey};
use crate::error::StoreError;
use crate::query::{Page, TaskFilter, TaskSort};
use crate::store::prelude::*;
use crate::store::{StoreResult, TaskStore};
use crate::task::{Task, TaskSpec, TaskStatus};

/// A batch of `specs` in a fresh group.
pub fn grouped(specs: Vec<TaskSpec>) -> BatchSpec {
    BatchSpec {
        group_id: Some(GroupId::new_v4()),
        specs,
        policy: Default::default(),
    }
}

/// An idempotency key (the suite's keys and fingerprints are always valid).
pub fn key(key: &str, fingerprint: &str) -> IdempotencyKey {
    IdempotencyKey::new(key, fingerprint).expect("the suite only builds valid idempotency keys")
}

async fn batch<S: TaskStore>(store: &S, spec: BatchSpec, key: Option<IdempotencyKey>) -> CreatedBatch {
    store.create_batch(spec, key).await.expect("create_batch failed")
}

/// Every task in the store, oldest first.
async fn all_tasks<S: TaskStore>(store: &S) -> Vec<Task> {
    store
        .list_tasks(
            &TaskQuery::new(TaskFilter::default())
                .sorted(TaskSort::CreatedAsc)
                .page(Page {
                    limit: Page::MAX_LIMIT,
                    offset: 0,
                }),
        )
        .await
        .expect("list_tasks")
        .tasks
}

/// The ids of a group's tasks, from `list_tasks` with a group filter, and the total it reports.
async fn group_members<S: TaskStore>(store: &S, group_id: GroupId) -> (HashSet<crate::task::TaskId>, u64) {
    let page = store
        .list_tasks(
            &TaskQuery::new(TaskFilter {
                group_id: Some(group_id),
                ..Default::default()
            })
            .sorted(TaskSort::CreatedAsc)
            .page(Page {
                limit: Page::MAX_LIMIT,
                offset: 0,
            }),
        )
        .await
        .expect("list_tasks by group");
    (page.tasks.iter().map(|t| t.id).collect(), page.total)
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, expected_key: &str, what: &str) {
    match result {
        Err(StoreError::IdempotencyConflict { key }) if key == expected_key => {}
        other => panic!("{what}: expected StoreError::IdempotencyConflict {{ key: {expected_key} }}, got {other:?}"),
    }
}

/// A batch creates pending tasks in request order, all in its group; the group filter of `list_tasks` finds
/// exactly them; tasks created one by one (or by `create_tasks`) belong to no group.
pub async fn batch_creates_a_group<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    let loner = create(&store, plain("solo")).await;
    assert_eq!(loner.group_id, None, "create_task makes a task of no group");
    let plain_batch = store
        .create_tasks(vec![plain("x"), plain("y")])
        .await
        .expect("create_tasks");
    assert!(
        plain_batch.iter().all(|t| t.group_id.is_none()),
        "create_tasks makes tasks of no group"
    );

    let spec = grouped(vec![plain("g-0"), prioritized("g-1", 9), retrying("g-2", 2)]);
    let group_id = spec.group_id.expect("grouped batches have a group");
    let created = batch(&store, spec, None).await;
    assert!(!created.replayed, "a first creation is not a replay");
    assert_eq!(created.group_id, Some(group_id), "the answer names the batch's group");
    let problems: Vec<&str> = created.tasks.iter().map(|t| t.problem_id.as_str()).collect();
    assert_eq!(problems, ["g-0", "g-1", "g-2"], "tasks come back in request order");
    assert_eq!(
        created.tasks[1].parameters.priority, 9,
        "each task keeps its own parameters"
    );
    assert_eq!(
        created.tasks[2].parameters.max_retries, 2,
        "each task keeps its own parameters"
    );
    for task in &created.tasks {
        assert_status(task, TaskStatus::Pending, "a batch task");
        assert_eq!(task.group_id, Some(group_id), "a batch task carries its group");
        assert_eq!(get(&store, task.id).await, *task, "a batch task reads back as created");
    }

    let other = batch(&store, grouped(vec![plain("h-0")]), None).await;
    let (members, total) = group_members(&store, group_id).await;
    assert_eq!(
        members,
        ids(&created.tasks).into_iter().collect(),
        "the group filter finds the batch's tasks and nothing else"
    );
    assert_eq!(total, 3, "the group filter's total counts the batch");
    let (members, _) = group_members(&store, other.group_id.expect("group")).await;
    assert_eq!(members.len(), 1, "a second batch is a group of its own");
    let (members, total) = group_members(&store, GroupId::new_v4()).await;
    assert!(members.is_empty() && total == 0, "an unknown group has no tasks");

    let ungrouped = batch(&store, BatchSpec::ungrouped(vec![plain("u")]), None).await;
    assert_eq!(ungrouped.group_id, None, "a batch may have no group");
    assert_eq!(ungrouped.tasks[0].group_id, None, "its tasks belong to no group");
    assert_eq!(
        all_tasks(&store).await.len(),
        8,
        "every creation above made its tasks once"
    );
}

/// The same key with the same fingerprint replays the first answer: the same tasks (in their current state, in
/// the first order, in the first group), `replayed = true`, and nothing new. Another key creates anew.
pub async fn idempotent_batch_replays<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["w"]).await;
    let first = batch(
        &store,
        grouped(vec![plain("idem-a"), plain("idem-b")]),
        Some(key("retry-1", "fp-1")),
    )
    .await;
    assert!(!first.replayed, "the first use of a key creates");
    let claimed = claim_some(&store, &request_task("w", first.tasks[1].id)).await;

    // A retried request: same key and fingerprint; its batch was rebuilt, so it carries a new group id.
    let replay = batch(
        &store,
        grouped(vec![plain("idem-a"), plain("idem-b")]),
        Some(key("retry-1", "fp-1")),
    )
    .await;
    assert!(replay.replayed, "the same key and fingerprint replay");
    assert_eq!(replay.group_id, first.group_id, "a replay answers with the first group");
    assert_eq!(
        ids(&replay.tasks),
        ids(&first.tasks),
        "a replay returns the same tasks in order"
    );
    assert_eq!(
        replay.tasks[0],
        get(&store, first.tasks[0].id).await,
        "replayed tasks are read fresh"
    );
    assert_status(
        &replay.tasks[1],
        TaskStatus::Running,
        "a replayed task shows its current state",
    );
    assert_eq!(
        replay.tasks[1].attempt, claimed.attempt,
        "a replayed task shows its current state"
    );
    assert_eq!(all_tasks(&store).await.len(), 2, "a replay creates nothing");
    let (members, _) = group_members(&store, replay.group_id.expect("group")).await;
    assert_eq!(members.len(), 2, "the first group still holds exactly its tasks");

    let fresh = batch(&store, grouped(vec![plain("idem-a")]), Some(key("retry-2", "fp-1"))).await;
    assert!(!fresh.replayed, "another key (even with the same fingerprint) creates");
    assert_eq!(all_tasks(&store).await.len(), 3, "the new key created one task");
    let again = batch(&store, grouped(vec![plain("idem-a")]), Some(key("retry-2", "fp-1"))).await;
    assert_eq!(ids(&again.tasks), ids(&fresh.tasks), "keys are independent");
}

/// The same key with a different fingerprint is refused with [`StoreError::IdempotencyConflict`] and creates
/// nothing; the key keeps answering its first request.
pub async fn idempotency_key_conflict<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    let first = batch(&store, grouped(vec![plain("conf-a")]), Some(key("k-1", "fp-a"))).await;
    assert_conflict(
        store
            .create_batch(
                grouped(vec![plain("conf-b"), plain("conf-c")]),
                Some(key("k-1", "fp-b")),
            )
            .await,
        "k-1",
        "the same key with another request",
    );
    let tasks = all_tasks(&store).await;
    assert_eq!(ids(&tasks), ids(&first.tasks), "a conflict creates nothing");
    let replay = batch(&store, grouped(vec![plain("conf-a")]), Some(key("k-1", "fp-a"))).await;
    assert!(
        replay.replayed && ids(&replay.tasks) == ids(&first.tasks),
        "after a conflict the key still replays its first request"
    );
}

/// Many requests racing with one key create the batch once: exactly one creates, every other replays the same
/// tasks (same fingerprint) or is refused (another fingerprint); no duplicate is ever created.
pub async fn concurrent_idempotent_batches_create_once<H: StoreHarness>(harness: &H) {
    let store = Arc::new(harness.store(suite_policy()).await);
    for round in 0..3 {
        let key_name = format!("race-{round}");
        let mut handles = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(&store);
            let key_name = key_name.clone();
            // Rounds 0 and 1: everyone sends the same request; round 2: two different requests share the key.
            let fingerprint = if round == 2 && i % 2 == 1 { "other" } else { "same" };
            handles.push(tokio::spawn(async move {
                let specs = (0..5).map(|n| plain(&format!("race-{n}"))).collect();
                let result = store
                    .create_batch(grouped(specs), Some(key(&key_name, fingerprint)))
                    .await;
                (fingerprint, result)
            }));
        }
        let mut creators = Vec::new();
        let mut answers = Vec::new();
        for handle in handles {
            let (fingerprint, result) = handle.await.expect("a racing request panicked");
            match result {
                Ok(created) => {
                    if !created.replayed {
                        creators.push((fingerprint, ids(&created.tasks)));
                    }
                    answers.push((fingerprint, ids(&created.tasks)));
                }
                Err(StoreError::IdempotencyConflict { key }) => {
                    assert_eq!(key, key_name, "a conflict names the key");
                    assert_eq!(round, 2, "round {round}: identical requests never conflict");
                }
                Err(other) => panic!("round {round}: a racing create_batch failed: {other}"),
            }
        }
        assert_eq!(
            creators.len(),
            1,
            "round {round}: exactly one racing request creates the batch, got {creators:?}"
        );
        let (winner, created) = &creators[0];
        assert_eq!(created.len(), 5, "round {round}: the winner created the whole batch");
        for (fingerprint, answer) in &answers {
            assert_eq!(
                fingerprint, winner,
                "round {round}: only the winner's request is answered"
            );
            assert_eq!(answer, created, "round {round}: every answer names the created tasks");
        }
        if round < 2 {
            assert_eq!(answers.len(), 8, "round {round}: every identical request is answered");
        }
    }
    let tasks = all_tasks(store.as_ref()).await;
    assert_eq!(
        tasks.len(),
        15,
        "three races created three batches of five, no duplicates"
    );
}
