//! Checks of what a run writes: log entries (order, ids, filters) and the
//! trajectory (save, replace, read), both guarded by the lease.

use serde_json::json;

use super::support::*;
use super::StoreHarness;
use crate::log::{LogLevel, LogQuery, NewLogEntry};
use crate::store::prelude::*;
use crate::task::TaskId;
use crate::trajectory::{LlmCall, TokenUsage, Trajectory, TrajectoryMessage};

/// Logs come back in append order with increasing ids, and `min_level`,
/// `since`, `after_id` and `limit` filter them; each task has its own log.
pub async fn logs_in_order_with_filters<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let task = create(&store, plain("p")).await;
    let other = create(&store, plain("q")).await;
    let lease = claim_some(&store, &request_task("w1", task.id)).await.lease_token();
    let other_lease = claim_some(&store, &request_task("w2", other.id)).await.lease_token();
    let first = vec![
        NewLogEntry::new(LogLevel::Debug, "d1").at_step(1),
        NewLogEntry::new(LogLevel::Info, "i1")
            .at_step(1)
            .with_action("exec_shell"),
        NewLogEntry::new(LogLevel::Warning, "w1"),
        NewLogEntry::new(LogLevel::Error, "e1"),
        NewLogEntry::new(LogLevel::Critical, "c1"),
    ];
    store.append_logs(lease, first.clone()).await.expect("append_logs");
    store
        .append_logs(other_lease, vec![NewLogEntry::new(LogLevel::Error, "other task")])
        .await
        .expect("append_logs to another task");
    store
        .append_logs(lease, Vec::new())
        .await
        .expect("an empty batch is accepted");
    h.advance_clock(&store, secs(10)).await;
    store
        .append_logs(
            lease,
            vec![
                NewLogEntry::new(LogLevel::Info, "i2"),
                NewLogEntry::new(LogLevel::Error, "e2"),
            ],
        )
        .await
        .expect("append_logs");

    let all = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    let messages = |entries: &[crate::log::LogEntry]| entries.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
    assert_eq!(
        messages(&all),
        ["d1", "i1", "w1", "e1", "c1", "i2", "e2"],
        "append order"
    );
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "ids increase in append order: {all:?}"
    );
    assert!(all.iter().all(|e| e.task_id == task.id), "entries belong to their task");
    assert_eq!(all[1].context, first[1].context, "the context is kept");
    assert_eq!(all[1].level, LogLevel::Info, "the level is kept");
    assert!(
        all[5].timestamp > all[4].timestamp,
        "the store stamps each batch with its clock"
    );
    let other_log = store.get_logs(other.id, &LogQuery::default()).await.expect("get_logs");
    assert_eq!(messages(&other_log), ["other task"], "each task has its own log");
    assert!(
        other_log[0].id > all[4].id && other_log[0].id < all[5].id,
        "ids increase in append order across the store"
    );

    let query = |min_level, since, after_id, limit| LogQuery {
        min_level,
        since,
        after_id,
        limit,
    };
    let read = |q: LogQuery| {
        let store = &store;
        async move { messages(&store.get_logs(task.id, &q).await.expect("get_logs")) }
    };
    assert_eq!(
        read(query(Some(LogLevel::Warning), None, None, None)).await,
        ["w1", "e1", "c1", "e2"],
        "min_level warning means warning or more severe"
    );
    assert_eq!(
        read(query(Some(LogLevel::Critical), None, None, None)).await,
        ["c1"],
        "min_level critical"
    );
    assert_eq!(
        read(query(None, Some(all[5].timestamp), None, None)).await,
        ["i2", "e2"],
        "since is inclusive"
    );
    assert_eq!(
        read(query(None, None, Some(all[2].id), None)).await,
        ["e1", "c1", "i2", "e2"],
        "after_id is exclusive"
    );
    assert_eq!(
        read(query(None, None, None, Some(2))).await,
        ["d1", "i1"],
        "limit keeps the first entries"
    );
    assert_eq!(
        read(query(Some(LogLevel::Error), None, Some(all[3].id), Some(1))).await,
        ["c1"],
        "filters combine before the limit"
    );
    assert!(
        read(query(None, None, Some(all[6].id), None)).await.is_empty(),
        "nothing after the last id"
    );
    let fresh = create(&store, plain("silent")).await;
    assert!(
        store
            .get_logs(fresh.id, &LogQuery::default())
            .await
            .expect("get_logs")
            .is_empty(),
        "a task without entries has an empty log"
    );
}

/// Log entries are accepted only under a live lease; the log stays readable
/// after the task ends.
pub async fn log_writes_need_a_lease<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    let early = crate::task::LeaseToken {
        task_id: task.id,
        attempt: 1,
    };
    assert_lease_lost(
        store
            .append_logs(early, vec![NewLogEntry::new(LogLevel::Info, "too early")])
            .await,
        "append_logs to a pending task",
    );
    let lease = claim_some(&store, &request("w1")).await.lease_token();
    let wrong_attempt = crate::task::LeaseToken {
        task_id: task.id,
        attempt: 2,
    };
    assert_lease_lost(
        store
            .append_logs(wrong_attempt, vec![NewLogEntry::new(LogLevel::Info, "wrong attempt")])
            .await,
        "append_logs with an attempt that does not match",
    );
    store
        .append_logs(lease, vec![NewLogEntry::new(LogLevel::Info, "during the run")])
        .await
        .expect("append_logs under the lease");
    store.finish(lease, completed()).await.expect("finish");
    assert_lease_lost(
        store
            .append_logs(lease, vec![NewLogEntry::new(LogLevel::Info, "too late")])
            .await,
        "append_logs after finish",
    );
    let log = store.get_logs(task.id, &LogQuery::default()).await.expect("get_logs");
    assert_eq!(
        log.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["during the run"],
        "only the entry written under the lease is kept, and it outlives the run"
    );
}

pub(super) fn sample_trajectory(task_id: TaskId, reward: f64, turns: usize) -> Trajectory {
    let mut messages = vec![
        TrajectoryMessage::new("system", "You are an SRE agent."),
        TrajectoryMessage::new("user", "Detect anomalies in the hotel reservation app."),
    ];
    for turn in 0..turns {
        messages.push(TrajectoryMessage::new(
            "assistant",
            format!("exec_shell(\"kubectl get pods\") #{turn}"),
        ));
        messages.push(TrajectoryMessage::new("env", "NAME READY STATUS"));
    }
    Trajectory {
        task_id,
        llm_calls: vec![LlmCall {
            step: Some(1),
            request: messages[..2].to_vec(),
            response: "exec_shell(\"kubectl get pods\")".into(),
            model: Some("gpt-4o-mini".into()),
            sampling: object(json!({"temperature": 0.5, "max_tokens": 1024})),
            usage: Some(TokenUsage {
                prompt_tokens: 120,
                completion_tokens: 30,
                total_tokens: 150,
            }),
            latency_ms: 840,
            logprobs: None,
            token_ids: None,
            prompt_token_ids: None,
            model_version: None,
        }],
        messages,
        reward: Some(reward),
        evaluation: object(json!({"Detection Accuracy": "Correct", "TTD": 12.5, "steps": 3})),
        metadata: object(json!({"simulated": true})),
        outcome: None,
        model_version: None,
    }
}

/// A trajectory is saved under the lease, replaced by a later save, read
/// back intact, and kept after the task ends.
pub async fn trajectory_save_replace_get<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        None,
        "a task without a trajectory reads as None"
    );
    let lease = claim_some(&store, &request("w1")).await.lease_token();
    let first = sample_trajectory(task.id, 0.0, 1);
    store
        .save_trajectory(lease, first.clone())
        .await
        .expect("save_trajectory");
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        Some(first),
        "the saved trajectory reads back intact"
    );
    let second = sample_trajectory(task.id, 1.0, 3);
    store
        .save_trajectory(lease, second.clone())
        .await
        .expect("save_trajectory again");
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        Some(second.clone()),
        "a second save replaces the first"
    );
    store.finish(lease, completed()).await.expect("finish");
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        Some(second),
        "the trajectory outlives the run"
    );
    assert_lease_lost(
        store.save_trajectory(lease, sample_trajectory(task.id, 0.0, 0)).await,
        "save_trajectory after finish",
    );
}
