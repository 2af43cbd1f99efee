//! Group refills on PostgreSQL beyond the conformance suite: the trigger of migration 007 announces a replacement
//! to listening workers, and aborts of members of many groups finished together (coalesced into shared finish
//! statements, touching the groups in every order) neither deadlock nor pass any group's `max_refills`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    BatchSpec, ErrorDetails, GroupId, GroupPolicy, NewTask, StoreEvent, TaskFilter, TaskOutcome, TaskStatus,
    TerminalStatus, WorkerRegistration,
};
use aiopslab_postgres::testing::TestDatabase;
use common::*;

fn aborted() -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: Some(ErrorDetails::new("backend_error", "the cluster went away")),
    }
}

fn refilled(size: usize, max_refills: u32) -> BatchSpec {
    BatchSpec {
        group_id: Some(GroupId::new_v4()),
        specs: vec![NewTask::new("p").validate().expect("valid"); size],
        policy: GroupPolicy {
            min_valid: None,
            max_refills,
        },
    }
}

#[tokio::test]
async fn a_replacement_wakes_listening_workers() {
    let db = TestDatabase::create().await;
    let store = db.store(policy()).await;
    store
        .register_worker(WorkerRegistration::new("w", "default"))
        .await
        .unwrap();
    let created = store.create_batch(refilled(1, 1), None).await.unwrap();
    let claimed = store.claim(&request("w")).await.unwrap().expect("the member");
    let mut events = store.subscribe().expect("PgStore offers notifications");
    // Let the listener connect before the abort (a notification before LISTEN is not heard).
    tokio::time::sleep(Duration::from_millis(500)).await;
    while events.try_recv().is_ok() {}
    store.finish(claimed.lease_token(), aborted()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the channel is open");
    assert_eq!(
        event,
        StoreEvent::TaskAvailable {
            backend_type: "default".into()
        }
    );
    let replacement = store
        .claim(&request("w"))
        .await
        .unwrap()
        .expect("the replacement is claimable");
    assert_eq!(replacement.replaces, Some(claimed.id));
    assert_eq!(replacement.group_id, created.group_id);
}

/// 8 groups of 8 (4 refills each); 64 workers each claim one member, then all fail at once, members of every
/// group interleaved, so the coalesced finish statements abort members of several groups each, in every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_aborts_across_groups_neither_deadlock_nor_over_refill() {
    let db = TestDatabase::create().await;
    let options = aiopslab_postgres::PgStoreOptions::default().max_connections(16);
    let store = Arc::new(db.store_with(policy(), &options).await);
    let mut groups = Vec::new();
    for _ in 0..8 {
        groups.push(store.create_batch(refilled(8, 4), None).await.unwrap());
    }
    // Member j of every group, then member j + 1 of every group in the other order...: each statement spans the
    // groups, in both orders.
    let mut order = Vec::new();
    for j in 0..8 {
        let mut row: Vec<_> = groups.iter().map(|group| group.tasks[j].id).collect();
        if j % 2 == 1 {
            row.reverse();
        }
        order.extend(row);
    }
    let mut leases = Vec::new();
    for (i, id) in order.iter().enumerate() {
        let worker = format!("w{i}");
        store
            .register_worker(WorkerRegistration::new(&worker, "default"))
            .await
            .unwrap();
        let claim = aiopslab_core::ClaimRequest::new(worker, "default").for_task(Some(*id));
        leases.push(store.claim(&claim).await.unwrap().expect("claimable").lease_token());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(leases.len()));
    let handles: Vec<_> = leases
        .into_iter()
        .map(|lease| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.finish(lease, aborted()).await
            })
        })
        .collect();
    for handle in handles {
        let task = handle.await.unwrap().expect("no finish fails (a deadlock would)");
        assert_eq!(task.status, TaskStatus::Failed);
    }
    for group in &groups {
        let group_id = group.group_id.expect("grouped");
        let recorded = store.get_group(group_id).await.unwrap().expect("recorded");
        assert_eq!(recorded.refills, 4, "exactly max_refills");
        let page = store
            .list_tasks(&TaskQuery::new(TaskFilter::default().with_group_id(Some(group_id))))
            .await
            .unwrap();
        let pending = page.tasks.iter().filter(|t| t.status == TaskStatus::Pending).count();
        assert_eq!((page.total, pending), (12, 4), "8 aborted members and 4 replacements");
    }
    let finishes = store.write_batches().finishes;
    // What the check is about: statements that each aborted members of several groups.
    assert!(
        finishes.items >= 64 && finishes.batches < finishes.items,
        "the finishes were coalesced: {finishes:?}"
    );
}
