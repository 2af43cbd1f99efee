//! Checks of text a store cannot keep as it is: a NUL (`\u0000`) anywhere is stored as U+FFFD, the write
//! succeeds, and every store reads back the same thing (see [`crate::sanitize`]).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::support::*;
use super::StoreHarness;
use crate::export::ExportFilter;
use crate::log::{LogContext, LogLevel, NewLogEntry};
use crate::query::{TaskFilter, WorkerFilter};
use crate::store::prelude::*;
use crate::store::ClaimRequest;
use crate::task::{ErrorDetails, NewTask, TaskOutcome, TaskResult, TerminalStatus};
use crate::trajectory::{LlmCall, Trajectory, TrajectoryMessage};
use crate::webhook::WebhookAttemptReport;
use crate::worker::{WorkerCapabilities, WorkerRegistration};

/// What a store keeps of `value`: every NUL in its JSON form (strings and keys) replaced by U+FFFD. Computed
/// through the JSON text, independently of the stores' own code.
fn replaced<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).expect("serializes");
    serde_json::from_str(&text.replace("\\u0000", "\u{FFFD}")).expect("parses back")
}

/// A NUL in any text a store persists — task parameters, worker registrations, log messages and contexts,
/// trajectories, outcomes — does not fail the write; it reads back as U+FFFD everywhere it is read (get, list,
/// claim, logs, trajectory, export), and lookups with a NUL find what was stored under U+FFFD.
pub async fn nul_in_text_is_stored_as_replacement<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let registration = WorkerRegistration {
        id: "w-nul".into(),
        backend_type: "default".into(),
        capabilities: WorkerCapabilities {
            max_parallel_tasks: 1,
            supported_problems: Some(vec!["nul-other\u{0}".into(), "nul-text".into()]),
        },
        metadata: object(json!({"host\u{0}": "node\u{0}1", "list": ["a\u{0}", {"k\u{0}": "v\u{0}"}]})),
        instance_id: None,
    };
    let worker = store
        .register_worker(registration.clone())
        .await
        .expect("a registration with NUL in its metadata and supported problems is stored");
    let kept = replaced(&registration);
    assert_eq!(worker.metadata, kept.metadata, "worker metadata: NUL becomes U+FFFD");
    assert_eq!(
        worker.capabilities, kept.capabilities,
        "supported problems: NUL becomes U+FFFD"
    );
    assert_eq!(
        store.get_worker("w-nul").await.expect("get_worker"),
        worker,
        "get_worker"
    );
    assert_invalid(
        store
            .register_worker(WorkerRegistration::new("w-nul-2", "default\u{0}"))
            .await,
        "a NUL in a backend type (no control characters there)",
    );

    let new = NewTask {
        agent_config: Some(object(json!({
            "model\u{0}": "gpt\u{0}4o",
            "nested": [{"k\u{0}": ["\u{0}", "x\u{0}y"]}, "\u{0}\u{0}"],
            "plain": "unchanged",
        }))),
        metadata: Some(object(json!({"note": "a\u{0}b", "n\u{0}": 1}))),
        callback_url: Some("https://example.com/hook/\u{0}path".into()),
        ..NewTask::new("nul-hook")
    };
    let with_hook = create(&store, spec(new.clone())).await;
    let kept_parameters = replaced(&spec(new).parameters);
    assert_eq!(with_hook.parameters, kept_parameters, "create_task: NUL becomes U+FFFD");
    assert_eq!(get(&store, with_hook.id).await.parameters, kept_parameters, "get_task");
    assert!(
        !kept_parameters.agent_config.contains_key("model\u{0}")
            && kept_parameters.agent_config.contains_key("model\u{FFFD}"),
        "keys are rewritten too"
    );

    let new = NewTask {
        agent_config: Some(object(json!({"prompt": "say \u{0}"}))),
        metadata: Some(object(json!({"run\u{0}": "r\u{0}1"}))),
        ..NewTask::new("nul-text")
    };
    let task = create(&store, spec(new.clone())).await;
    let kept_parameters = replaced(&spec(new).parameters);
    assert_eq!(task.parameters, kept_parameters, "create_task");
    let claim = ClaimRequest {
        supported_problems: Some(vec!["nul-text".into()]),
        ..request("w-nul")
    };
    let claimed = claim_some(&store, &claim).await;
    assert_eq!(claimed.id, task.id, "the task is claimed");
    assert_eq!(
        claimed.parameters, kept_parameters,
        "claim returns the stored parameters"
    );

    let entries = vec![
        NewLogEntry::new(LogLevel::Info, "stdout: a\u{0}b\u{0}"),
        NewLogEntry {
            level: LogLevel::Warning,
            message: "\u{0}".into(),
            context: LogContext {
                step: Some(1),
                action: Some("exec\u{0}shell".into()),
                details: Some(json!({"out\u{0}": ["x\u{0}", {"y\u{0}": "z\u{0}"}]})),
            },
        },
    ];
    store
        .append_logs(claimed.lease_token(), entries.clone())
        .await
        .expect("append_logs with NUL succeeds (the whole batch)");
    let logs = store.get_logs(task.id, &Default::default()).await.expect("get_logs");
    let kept_entries = replaced(&entries);
    assert_eq!(logs.len(), 2, "both entries were stored");
    for (log, kept) in logs.iter().zip(&kept_entries) {
        assert_eq!(log.message, kept.message, "log message: NUL becomes U+FFFD");
        assert_eq!(log.context, kept.context, "log context: NUL becomes U+FFFD");
    }

    let trajectory = Trajectory {
        task_id: task.id,
        messages: vec![
            TrajectoryMessage::new("user\u{0}", "what is \u{0}?"),
            TrajectoryMessage::new("env", "output\u{0}\u{0}"),
        ],
        llm_calls: vec![LlmCall {
            step: Some(1),
            request: vec![TrajectoryMessage::new("user", "q\u{0}")],
            response: "a\u{0}".into(),
            model: Some("m\u{0}".into()),
            sampling: object(json!({"stop\u{0}": ["\u{0}"]})),
            logprobs: Some(json!({"tokens": ["\u{0}"]})),
            token_ids: Some(json!([0, 1])),
            ..LlmCall::default()
        }],
        reward: Some(1.0),
        evaluation: object(json!({"Detection Accuracy": "Correct\u{0}", "k\u{0}": 1})),
        metadata: object(json!({"driver\u{0}": "v\u{0}1"})),
        outcome: None,
        model_version: None,
    };
    store
        .save_trajectory(claimed.lease_token(), trajectory.clone())
        .await
        .expect("save_trajectory with NUL succeeds");
    let kept_trajectory = replaced(&trajectory);
    assert_eq!(
        store.get_trajectory(task.id).await.expect("get_trajectory"),
        Some(kept_trajectory.clone()),
        "get_trajectory: NUL becomes U+FFFD in messages, calls, evaluation and metadata"
    );

    let outcome = TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult {
            logs: vec!["summary\u{0}".into()],
            metrics: object(json!({"duration_seconds": 1.5, "note\u{0}": "x\u{0}"})),
            output: object(json!({"solution": "Yes\u{0}"})),
        }),
        error: Some(ErrorDetails::new("code\u{0}", "message\u{0}")),
    };
    let finished = store
        .finish(claimed.lease_token(), outcome.clone())
        .await
        .expect("finish with NUL in its result succeeds");
    let kept_outcome = replaced(&outcome);
    assert_eq!(finished.result, kept_outcome.result, "finish: the result is stored");
    assert_eq!(
        finished.error_details, kept_outcome.error,
        "finish: the error details are stored"
    );
    assert_eq!(get(&store, task.id).await, finished, "get_task after finish");
    let replay = store
        .finish(claimed.lease_token(), outcome)
        .await
        .expect("a replayed finish with NUL is acknowledged");
    assert_eq!(replay, finished, "the replay returns the task unchanged");

    let page = store
        .list_tasks(&TaskQuery::new(TaskFilter {
            worker_id: Some("w-nul".into()),
            ..Default::default()
        }))
        .await
        .expect("list_tasks");
    assert_eq!(page.tasks, vec![finished.clone()], "list_tasks shows the stored task");
    let episodes = store
        .export_episodes(&ExportRequest::new(
            ExportFilter {
                metadata: Some(("run\u{0}".into(), "r\u{0}1".into())),
                ..Default::default()
            },
            10,
        ))
        .await
        .expect("export_episodes");
    assert_eq!(
        episodes.len(),
        1,
        "an export filter with NUL matches what was stored under U+FFFD"
    );
    assert_eq!(episodes[0].task, finished, "the exported task");
    assert_eq!(
        episodes[0].trajectory.messages, kept_trajectory.messages,
        "exported messages"
    );
    assert_eq!(
        (&episodes[0].trajectory.evaluation, &episodes[0].trajectory.metadata),
        (&kept_trajectory.evaluation, &kept_trajectory.metadata),
        "exported evaluation and metadata"
    );

    // Lookups with a NUL look for U+FFFD, as the writes stored it; a NUL never fails a read.
    let page = store
        .list_workers(&WorkerFilter {
            backend_type: Some("default\u{0}".into()),
            ..Default::default()
        })
        .await
        .expect("list_workers with a NUL");
    assert_eq!(page.total, 0, "no worker has that backend type");
    assert_not_found(store.get_worker("w-nul\u{0}").await, "get_worker with a NUL");
    let page = store
        .list_tasks(&TaskQuery::new(TaskFilter {
            problem_id: Some("nul-text\u{0}".into()),
            ..Default::default()
        }))
        .await
        .expect("list_tasks with a NUL");
    assert_eq!(page.total, 0, "no task has that problem id");
}

/// A NUL in a webhook attempt's error is stored as U+FFFD (the deliverer records whatever the receiver or the
/// network said).
pub async fn nul_in_webhook_attempt_is_replaced<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    let task = create(&store, super::webhooks::with_callback("hook-nul", 0)).await;
    store.cancel_task(task.id).await.expect("cancel_task");
    let due = store.claim_webhooks(1, secs(30)).await.expect("claim_webhooks");
    let delivery = due.first().expect("the cancel wrote a delivery");
    let updated = store
        .record_webhook_attempt(
            delivery.id,
            WebhookAttemptReport {
                status_code: Some(502),
                error: Some("bad gateway: \u{0}\u{0}".into()),
                duration_ms: 3,
                retry_after: Some(secs(5)),
            },
        )
        .await
        .expect("record_webhook_attempt with NUL succeeds");
    assert_eq!(
        updated.attempts[0].error.as_deref(),
        Some("bad gateway: \u{FFFD}\u{FFFD}"),
        "the attempt's error: NUL becomes U+FFFD"
    );
    let listed = store.list_webhooks(task.id).await.expect("list_webhooks");
    assert_eq!(listed, vec![updated], "list_webhooks shows the stored attempt");
}
