//! Checks of the dataset export: only tasks with a trajectory, `(created_at, id)` order, a cursor that resumes
//! strictly after the last episode, and every filter.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::support::*;
use super::StoreHarness;
use crate::export::{problem_ids_for, Episode, ExportCursor, ExportFilter};
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{NewTask, Task, TaskId, TaskSpec, TaskStatus, TerminalStatus};
use crate::trajectory::{LlmCall, TokenUsage, Trajectory, TrajectoryMessage};
use crate::TaskType;

/// A small but complete trajectory whose content names `tag`.
pub fn sample_trajectory(tag: &str, reward: f64) -> Trajectory {
    Trajectory {
        task_id: TaskId::nil(),
        messages: vec![
            TrajectoryMessage::new("system", "You are an SRE agent."),
            TrajectoryMessage::new("user", format!("Problem {tag}: is there an anomaly?")),
            TrajectoryMessage::new("assistant", "exec_shell(\"kubectl get pods\")"),
            TrajectoryMessage::new("env", "NAME READY STATUS\nfrontend 1/1 Running"),
            TrajectoryMessage::new("assistant", "submit(\"Yes\")"),
        ],
        llm_calls: vec![LlmCall {
            step: Some(1),
            request: vec![TrajectoryMessage::new("user", "is there an anomaly?")],
            response: "submit(\"Yes\")".to_string(),
            model: Some("gpt-4o".to_string()),
            sampling: object(json!({"temperature": 0.7})),
            usage: Some(TokenUsage {
                prompt_tokens: 120,
                completion_tokens: 8,
                total_tokens: 128,
            }),
            latency_ms: 840,
            logprobs: Some(json!({"tokens": ["submit"], "token_logprobs": [-0.25]})),
            token_ids: Some(json!([9906, 1917])),
            prompt_token_ids: Some(json!([1, 2, 3])),
            model_version: None,
        }],
        reward: Some(reward),
        evaluation: object(json!({"Detection Accuracy": "Correct", "TTD": 12.5, "tag": tag})),
        metadata: object(json!({"simulated": true})),
        outcome: None,
        model_version: None,
    }
}

/// Creates a task from `spec`, claims it, saves a trajectory tagged with its problem, and finishes it with
/// `finish` (or leaves it running).
async fn episode<S: TaskStore>(store: &S, spec: TaskSpec, reward: f64, finish: Option<TerminalStatus>) -> Task {
    let task = create(store, spec).await;
    let claimed = claim_some(store, &request_task("exporter", task.id)).await;
    store
        .save_trajectory(claimed.lease_token(), sample_trajectory(&task.problem_id, reward))
        .await
        .expect("save_trajectory");
    match finish {
        Some(status) => store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("finish"),
        None => get(store, task.id).await,
    }
}

/// Each filter walks (in pages of 1 and of 100) exactly its expected tasks, in export order.
async fn expect_export_cases<S: TaskStore>(store: &S, cases: Vec<(ExportFilter, Vec<&Task>, &str)>) {
    for (filter, expected, what) in cases {
        let expected_ids = in_export_order(expected.into_iter().cloned().collect());
        for limit in [1, 100] {
            let got = walk(store, &filter, limit).await;
            assert_eq!(
                export_ids(&got),
                expected_ids,
                "{what} (pages of {limit}): wrong episodes for {filter:?}"
            );
        }
    }
}

/// Walks the whole export with pages of `limit`, checking each page's size and order.
async fn walk<S: TaskStore>(store: &S, filter: &ExportFilter, limit: u32) -> Vec<Episode> {
    let mut all: Vec<Episode> = Vec::new();
    let mut cursor: Option<ExportCursor> = None;
    for _ in 0..1000 {
        let page = store
            .export_episodes(&ExportRequest::new(filter.clone(), limit).after(cursor))
            .await
            .expect("export_episodes");
        assert!(page.len() <= limit as usize, "a page holds at most `limit` episodes");
        let Some(last) = page.last() else {
            return all;
        };
        cursor = Some(last.cursor());
        all.extend(page);
    }
    panic!("the export walk did not end");
}

fn export_ids(episodes: &[Episode]) -> Vec<TaskId> {
    episodes.iter().map(|e| e.task.id).collect()
}

/// Sorts tasks into export order.
fn in_export_order(mut tasks: Vec<Task>) -> Vec<TaskId> {
    tasks.sort_by_key(|t| (t.created_at, t.id));
    ids(&tasks)
}

/// The export holds exactly the tasks with a trajectory, whatever their status, in `(created_at, id)` order;
/// pages of any size resume strictly after the cursor with no gap and no repeat; each episode carries the task as
/// stored and its trajectory's messages, reward, evaluation and metadata, without the LLM calls.
pub async fn export_walks_episodes_in_order<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["exporter"]).await;
    let mut with_trajectory = Vec::new();
    for (i, finish) in [
        Some(TerminalStatus::Completed),
        None,
        Some(TerminalStatus::Failed),
        Some(TerminalStatus::Completed),
        Some(TerminalStatus::Timeout),
    ]
    .into_iter()
    .enumerate()
    {
        with_trajectory.push(episode(&store, plain(&format!("exp-{i}")), i as f64 / 4.0, finish).await);
        // Tasks without a trajectory, pending and finished, interleaved: never exported.
        create(&store, plain("no-trajectory")).await;
        if i == 2 {
            let bare = create(&store, plain("finished-bare")).await;
            let claimed = claim_some(&store, &request_task("exporter", bare.id)).await;
            store.finish(claimed.lease_token(), completed()).await.expect("finish");
        }
    }
    let mut current = Vec::new();
    for task in &with_trajectory {
        current.push(get(&store, task.id).await);
    }
    let expected = in_export_order(current.clone());

    let everything = walk(&store, &ExportFilter::default(), 1000).await;
    assert_eq!(
        export_ids(&everything),
        expected,
        "one page holds every task with a trajectory, in (created_at, id) order"
    );
    for limit in [1, 2, 3] {
        assert_eq!(
            export_ids(&walk(&store, &ExportFilter::default(), limit).await),
            expected,
            "pages of {limit} walk the same episodes in the same order"
        );
    }
    for episode in &everything {
        let stored = current
            .iter()
            .find(|t| t.id == episode.task.id)
            .expect("an expected task");
        assert_eq!(&episode.task, stored, "an exported task is the task as stored");
        let saved = sample_trajectory(&stored.problem_id, 0.0);
        let trajectory = &episode.trajectory;
        assert_eq!(trajectory.task_id, stored.id, "the trajectory names its task");
        assert_eq!(trajectory.messages, saved.messages, "every message, in order");
        assert_eq!(trajectory.evaluation, saved.evaluation, "the raw evaluation");
        assert_eq!(trajectory.metadata, saved.metadata, "the trajectory's metadata");
        assert!(trajectory.llm_calls.is_empty(), "the export leaves the LLM calls out");
        let full = store
            .get_trajectory(stored.id)
            .await
            .expect("get_trajectory")
            .expect("a trajectory");
        assert_eq!(trajectory.reward, full.reward, "the reward");
        assert_eq!(
            full.llm_calls, saved.llm_calls,
            "get_trajectory still has the LLM calls"
        );
    }

    // Resuming after each episode's cursor gives exactly the rest.
    for (i, episode) in everything.iter().enumerate() {
        let rest = store
            .export_episodes(&ExportRequest::new(ExportFilter::default(), 1000).after(Some(episode.cursor())))
            .await
            .expect("export_episodes");
        assert_eq!(
            export_ids(&rest),
            expected[i + 1..].to_vec(),
            "after episode {i} the walk resumes strictly after it"
        );
    }
    let last = everything.last().expect("episodes").cursor();
    let beyond = ExportCursor {
        created_at: last.created_at,
        id: TaskId::max(),
    };
    assert!(
        store
            .export_episodes(&ExportRequest::new(ExportFilter::default(), 10).after(Some(beyond)))
            .await
            .expect("export_episodes")
            .is_empty(),
        "nothing comes after the last episode"
    );
    assert!(
        store
            .export_episodes(&ExportRequest::new(ExportFilter::default(), 0))
            .await
            .expect("export_episodes")
            .is_empty(),
        "a page of 0 is empty"
    );
}

/// Every export filter (status, problem ids incl. a task type through the catalog, model, metadata key/value,
/// created range) selects exactly the matching episodes, alone and combined.
pub async fn export_filters<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["exporter"]).await;
    let detection = "k8s_target_port-misconfig-detection-1";
    let detection_2 = "revoke_auth_mongodb-detection-1";
    let mitigation = "k8s_target_port-misconfig-mitigation-1";
    let with = |problem: &str, model: Option<&str>, run: Option<serde_json::Value>| {
        let mut metadata = serde_json::Map::new();
        if let Some(run) = run {
            metadata.insert("run".into(), run);
        }
        spec(NewTask {
            agent_config: Some(match model {
                Some(model) => object(json!({"model": model, "temperature": 0.2})),
                None => object(json!({"temperature": 0.2})),
            }),
            metadata: Some(metadata),
            ..NewTask::new(problem)
        })
    };
    let a = episode(
        &store,
        with(detection, Some("gpt-4o"), Some(json!("r1"))),
        1.0,
        Some(TerminalStatus::Completed),
    )
    .await;
    let b = episode(
        &store,
        with(mitigation, Some("llama-3"), Some(json!("r1"))),
        0.0,
        Some(TerminalStatus::Failed),
    )
    .await;
    // The clock moves: c and d are created a minute after a and b.
    harness.advance_clock(&store, Duration::from_secs(60)).await;
    let c = episode(&store, with(detection_2, Some("gpt-4o"), Some(json!("r2"))), 1.0, None).await;
    let d = episode(
        &store,
        with("custom-problem", None, Some(json!(7))),
        0.0,
        Some(TerminalStatus::Completed),
    )
    .await;
    // A matching task with no trajectory is never exported.
    create(&store, with(detection, Some("gpt-4o"), Some(json!("r1")))).await;
    let (a, b, c, d) = (
        get(&store, a.id).await,
        get(&store, b.id).await,
        get(&store, c.id).await,
        get(&store, d.id).await,
    );
    assert!(b.created_at < c.created_at, "c was created after the clock moved");

    let cases: Vec<(ExportFilter, Vec<&Task>, &str)> = vec![
        (ExportFilter::default(), vec![&a, &b, &c, &d], "no filter"),
        (
            ExportFilter {
                status: Some(TaskStatus::Completed),
                ..Default::default()
            },
            vec![&a, &d],
            "status completed",
        ),
        (
            ExportFilter {
                status: Some(TaskStatus::Running),
                ..Default::default()
            },
            vec![&c],
            "status running",
        ),
        (
            ExportFilter {
                problem_ids: Some(vec![mitigation.to_string()]),
                ..Default::default()
            },
            vec![&b],
            "one problem id",
        ),
        (
            ExportFilter {
                problem_ids: Some(vec![detection.to_string(), "custom-problem".to_string()]),
                ..Default::default()
            },
            vec![&a, &d],
            "two problem ids",
        ),
        (
            ExportFilter {
                problem_ids: problem_ids_for(None, Some(TaskType::Detection)),
                ..Default::default()
            },
            vec![&a, &c],
            "task type detection (through the catalog)",
        ),
        (
            ExportFilter {
                problem_ids: Some(Vec::new()),
                ..Default::default()
            },
            vec![],
            "an empty problem list matches nothing",
        ),
        (
            ExportFilter {
                model: Some("gpt-4o".to_string()),
                ..Default::default()
            },
            vec![&a, &c],
            "model gpt-4o",
        ),
        (
            ExportFilter {
                model: Some("gpt".to_string()),
                ..Default::default()
            },
            vec![],
            "the model must match exactly",
        ),
        (
            ExportFilter {
                metadata: Some(("run".to_string(), "r1".to_string())),
                ..Default::default()
            },
            vec![&a, &b],
            "metadata run=r1",
        ),
        (
            ExportFilter {
                metadata: Some(("missing".to_string(), "r1".to_string())),
                ..Default::default()
            },
            vec![],
            "a metadata key no task has",
        ),
        (
            ExportFilter {
                created_after: Some(c.created_at),
                ..Default::default()
            },
            vec![&c, &d],
            "created at or after c (inclusive)",
        ),
        (
            ExportFilter {
                created_before: Some(c.created_at),
                ..Default::default()
            },
            vec![&a, &b],
            "created before c (exclusive)",
        ),
        (
            ExportFilter {
                created_after: Some(a.created_at),
                created_before: Some(d.created_at + chrono::TimeDelta::seconds(1)),
                model: Some("gpt-4o".to_string()),
                metadata: Some(("run".to_string(), "r2".to_string())),
                status: Some(TaskStatus::Running),
                problem_ids: problem_ids_for(None, Some(TaskType::Detection)),
                outcomes: None,
                model_version: None,
                min_model_version: None,
            },
            vec![&c],
            "every filter at once",
        ),
    ];
    expect_export_cases(&store, cases).await;
    // A cursor before the creation range starts the walk at the range.
    let after_range = store
        .export_episodes(
            &ExportRequest::new(
                ExportFilter {
                    created_after: Some(c.created_at),
                    ..Default::default()
                },
                100,
            )
            .after(Some(ExportCursor {
                created_at: a.created_at,
                id: a.id,
            })),
        )
        .await
        .expect("export_episodes");
    let got: HashSet<TaskId> = export_ids(&after_range).into_iter().collect();
    assert_eq!(got, HashSet::from([c.id, d.id]), "the range and the cursor both apply");
}

/// The outcome and policy-version filters: `outcomes` selects by what an episode is for training (each outcome
/// is one terminal status; a running task has none), `model_version` matches `agent_config.model_version`
/// exactly and `min_model_version` keeps that version and later ones, leaving unversioned episodes out.
pub async fn export_outcomes_and_policy_versions<H: StoreHarness>(harness: &H) {
    use crate::outcome::Outcome;
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["exporter"]).await;
    let versioned = |version: Option<u64>| {
        spec(NewTask {
            agent_config: Some(match version {
                Some(v) => object(json!({"model": "policy", "model_version": v})),
                None => object(json!({"model": "policy"})),
            }),
            // A failed run is not retried here: it stays failed, i.e. aborted.
            max_retries: Some(0),
            ..NewTask::new("k8s_target_port-misconfig-detection-1")
        })
    };
    let valid_1 = episode(&store, versioned(Some(1)), 1.0, Some(TerminalStatus::Completed)).await;
    let valid_2 = episode(&store, versioned(Some(2)), 0.0, Some(TerminalStatus::Completed)).await;
    let aborted_3 = episode(&store, versioned(Some(3)), 0.0, Some(TerminalStatus::Failed)).await;
    let timeout_2 = episode(&store, versioned(Some(2)), 0.0, Some(TerminalStatus::Timeout)).await;
    let cancelled = episode(&store, versioned(None), 0.0, Some(TerminalStatus::Cancelled)).await;
    let unversioned = episode(&store, versioned(None), 1.0, Some(TerminalStatus::Completed)).await;
    let running = episode(&store, versioned(Some(3)), 0.0, None).await;
    let filter = |outcomes: Option<Vec<Outcome>>, exact: Option<u64>, floor: Option<u64>| {
        ExportFilter::default()
            .with_outcomes(outcomes)
            .with_model_version(exact)
            .with_min_model_version(floor)
    };
    let all = [
        &valid_1,
        &valid_2,
        &aborted_3,
        &timeout_2,
        &cancelled,
        &unversioned,
        &running,
    ];
    let cases: Vec<(ExportFilter, Vec<&Task>, &str)> = vec![
        (filter(None, None, None), all.to_vec(), "no label filter"),
        (
            filter(Some(vec![Outcome::Valid]), None, None),
            vec![&valid_1, &valid_2, &unversioned],
            "valid only",
        ),
        (
            filter(Some(vec![Outcome::Aborted]), None, None),
            vec![&aborted_3],
            "aborted only",
        ),
        (
            filter(Some(vec![Outcome::Timeout, Outcome::Cancelled]), None, None),
            vec![&timeout_2, &cancelled],
            "timeout and cancelled",
        ),
        (
            filter(Some(Vec::new()), None, None),
            vec![],
            "no outcome at all matches nothing",
        ),
        (
            filter(None, Some(2), None),
            vec![&valid_2, &timeout_2],
            "model_version 2 exactly",
        ),
        (
            filter(None, None, Some(2)),
            vec![&valid_2, &aborted_3, &timeout_2, &running],
            "model_version 2 or later, unversioned left out",
        ),
        (
            filter(Some(vec![Outcome::Valid]), None, Some(2)),
            vec![&valid_2],
            "valid episodes of recent policies",
        ),
        (filter(None, Some(0), None), vec![], "a version no task has"),
    ];
    expect_export_cases(&store, cases).await;
}
