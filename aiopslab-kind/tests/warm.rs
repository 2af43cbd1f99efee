//! Warm clusters and kept evaluations, through the real embedded driver
//! against the FAKE aiopslab package (which installs OpenEBS and Prometheus
//! in every `init_problem` and removes them after every run, as the real one
//! does) and the fake `kubectl`/`helm` argument logs.

mod common;

use std::time::Duration;

use aiopslab_core::{ClusterBackend, LogLevel, RunReport, TerminalStatus};
use aiopslab_kind::{KindBackend, KindConfigBuilder};
use common::{action, context, drain, prepared, task, Harness, LlmReply};
use serde_json::json;

const DETECTION: &str = "misconfig_app_hotel_res-detection-1";

/// The fake tools' calls that install the shared infrastructure.
fn infra_installs(h: &Harness) -> (usize, usize) {
    let calls = h.tool_calls();
    let openebs = calls
        .iter()
        .filter(|c| {
            c.starts_with("kubectl ") && c.contains("apply -f https://openebs.github.io/charts/openebs-operator.yaml")
        })
        .count();
    let prometheus = calls
        .iter()
        .filter(|c| c.starts_with("helm ") && c.contains(" install prometheus "))
        .count();
    (openebs, prometheus)
}

async fn run_detection(h: &Harness, backend: &KindBackend) -> RunReport {
    h.llm
        .set_script(vec![action(r#"submit("Yes")"#)], LlmReply::Status(500));
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));
    backend.run(&task, ctx).await
}

async fn ten_tasks(h: &Harness, builder: KindConfigBuilder) -> (usize, usize) {
    let backend = prepared(h, builder.build()).await;
    for n in 0..10 {
        let report = run_detection(h, &backend).await;
        assert_eq!(report.status, TerminalStatus::Completed, "task {n}: {:?}", report.error);
        assert_eq!(report.trajectory.unwrap().reward, Some(1.0));
        backend.reset().await.unwrap();
    }
    infra_installs(h)
}

#[tokio::test]
async fn ten_tasks_on_one_worker_install_openebs_and_prometheus_once() {
    let warm = Harness::start().await;
    let (openebs, prometheus) = ten_tasks(&warm, warm.builder()).await;
    let stock = Harness::start().await;
    let (stock_openebs, stock_prometheus) = ten_tasks(&stock, stock.builder().stock_orchestrator(true)).await;
    eprintln!(
        "{}",
        json!({"tasks": 10, "warm": {"openebs_applies": openebs, "prometheus_installs": prometheus},
               "stock_orchestrator": {"openebs_applies": stock_openebs, "prometheus_installs": stock_prometheus}})
    );
    assert_eq!(
        (openebs, prometheus),
        (1, 1),
        "installed once, when the worker prepared the cluster"
    );
    assert_eq!(
        (stock_openebs, stock_prometheus),
        (10, 10),
        "AIOpsLab's own orchestrator installs per task"
    );
    // Nothing was torn down between warm tasks either.
    assert!(!warm
        .tool_calls()
        .iter()
        .any(|c| c.contains("helm") && c.contains("uninstall prometheus")));
    assert!(!warm
        .tool_calls()
        .iter()
        .any(|c| c.contains("delete -f https://openebs")));
}

#[tokio::test]
async fn a_teardown_that_raises_after_a_correct_evaluation_keeps_the_evaluation_and_resets_the_cluster() {
    for stock in [true, false] {
        let h = Harness::start().await;
        let mut builder = h.builder().env("FAKE_AIOPSLAB_TEARDOWN_FAIL", "1");
        if stock {
            builder = builder.stock_orchestrator(true);
        } else {
            builder = builder.env("FAKE_AIOPSLAB_CLEANUP_FAIL", "1");
        }
        let backend = prepared(&h, builder.build()).await;
        h.kube
            .state
            .lock()
            .unwrap()
            .namespaces
            .insert("test-hotel-reservation".into(), common::Ns::Active);
        h.llm
            .set_script(vec![action(r#"submit("Yes")"#)], LlmReply::Status(500));
        let task = task(DETECTION, json!({"model": "m"}), 5, 30);
        let (ctx, mut logs) = context(&task, Duration::from_secs(60));

        let report = backend.run(&task, ctx).await;
        let logs = drain(&mut logs);

        assert_eq!(
            report.status,
            TerminalStatus::Completed,
            "stock={stock}: {:?}",
            report.error
        );
        let result = report.result.clone().unwrap();
        assert_eq!(result.metrics["Detection Accuracy"], "Correct");
        assert_eq!(report.trajectory.as_ref().unwrap().reward, Some(1.0));
        let stage = result.output["cleanup_error"]["stage"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!stage.is_empty(), "stock={stock}: {:?}", result.output);
        assert!(
            logs.iter()
                .any(|e| e.level == LogLevel::Warning && e.message.contains("failed") && e.message.contains(&stage)),
            "the log says what failed: {logs:?}"
        );
        // The cluster was reset before the report: the application's namespace is gone.
        assert!(result.metrics["reset_seconds"].is_number(), "{:?}", result.metrics);
        assert!(!h
            .kube
            .state
            .lock()
            .unwrap()
            .namespaces
            .contains_key("test-hotel-reservation"));
    }
}

/// The phases of one simulated-cost detection run (the fake sleeps in each
/// phase), on a warm cluster or with AIOpsLab's stock orchestrator.
async fn simulated_cost_phases(stock: bool) -> serde_json::Map<String, serde_json::Value> {
    let h = Harness::start().await;
    let config = h
        .builder()
        .env(
            "FAKE_AIOPSLAB_DELAYS",
            "deploy=0.4,inject=0.1,eval=0.2,cleanup=0.3,openebs=1,prometheus=1,teardown=1",
        )
        .stock_orchestrator(stock)
        .build();
    let backend = prepared(&h, config).await;
    h.llm.set_script(
        vec![
            action(r#"exec_shell("sleep 0.3; echo done")"#),
            action(r#"submit("Yes")"#),
        ],
        LlmReply::Status(500),
    );
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(
        report.status,
        TerminalStatus::Completed,
        "stock={stock}: {:?}",
        report.error
    );
    let metrics = report.result.unwrap().metrics;
    [
        "setup_seconds",
        "agent_seconds",
        "eval_seconds",
        "cleanup_seconds",
        "reset_seconds",
        "duration_seconds",
    ]
    .into_iter()
    .map(|key| {
        let value = metrics[key].as_f64().unwrap_or_else(|| panic!("{key}: {metrics:?}"));
        (key.to_string(), json!(value))
    })
    .collect()
}

#[tokio::test]
async fn every_task_reports_its_phases() {
    let warm = simulated_cost_phases(false).await;
    let stock = simulated_cost_phases(true).await;
    eprintln!(
        "{}",
        json!({"simulated_cost_run_phases": {"warm": warm, "stock_orchestrator": stock}})
    );
    let phase = |phases: &serde_json::Map<String, serde_json::Value>, key: &str| phases[key].as_f64().unwrap_or(-1.0);
    assert!(phase(&warm, "setup_seconds") >= 0.5, "deploy + inject: {warm:?}");
    assert!(phase(&warm, "agent_seconds") >= 0.3, "the shell step: {warm:?}");
    assert!(phase(&warm, "eval_seconds") >= 0.2, "{warm:?}");
    assert!(phase(&warm, "cleanup_seconds") >= 0.3, "{warm:?}");
    assert!(phase(&warm, "reset_seconds") >= 0.0, "{warm:?}");
    // The stock orchestrator pays OpenEBS and Prometheus in every setup, their teardown in every cleanup.
    assert!(
        phase(&stock, "setup_seconds") >= phase(&warm, "setup_seconds") + 1.8,
        "{stock:?} vs {warm:?}"
    );
    assert!(
        phase(&stock, "cleanup_seconds") >= phase(&warm, "cleanup_seconds") + 0.9,
        "{stock:?} vs {warm:?}"
    );
}

#[tokio::test]
async fn a_long_episode_trims_its_oldest_turns_to_the_budget_and_says_so() {
    let h = Harness::start().await;
    let backend = prepared(&h, h.builder().build()).await;
    h.llm.set_script(
        vec![
            action(r#"exec_shell("seq 1 2000")"#),
            action(r#"exec_shell("seq 1 2000")"#),
            action(r#"exec_shell("seq 1 2000")"#),
            action(r#"submit("Yes")"#),
        ],
        LlmReply::Status(500),
    );
    let task = task(DETECTION, json!({"model": "m", "max_context_tokens": 4000}), 10, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Completed, "{:?}", report.error);
    let trajectory = report.trajectory.unwrap();
    let trims = trajectory.metadata["context_trims"].as_array().expect("trims recorded");
    assert!(!trims.is_empty());
    assert!(trims[0]["dropped_messages"].as_u64().unwrap() >= 1, "{trims:?}");
    // What the endpoint really got (the proxy's record): the system prompt first, always.
    let last = trajectory.llm_calls.last().unwrap();
    assert_eq!(last.request[0].role, "system");
    let first_request = trajectory.llm_calls[0].request.len();
    assert!(last.request.len() < first_request + 6, "older turns were left out");
    // The whole conversation is still in the trajectory.
    assert!(trajectory.messages.len() >= 10);
}

#[tokio::test]
async fn aiopslabs_parser_rules_apply_and_label_the_steps() {
    let h = Harness::start().await;
    let backend = prepared(&h, h.builder().build()).await;
    h.llm.set_script(
        vec![
            action(r#"exec_shell(command="echo keyword-form")"#),
            action(r#"exec_shell("ls", timeout=60)"#),
            LlmReply::Text("two blocks\n```\nexec_shell(\"ls\")\n```\nand\n```\nsubmit()\n```".into()),
            action("submit()"),
        ],
        LlmReply::Status(500),
    );
    let task = task("misconfig_app_hotel_res-mitigation-1", json!({"model": "m"}), 6, 30);
    let (ctx, mut logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;
    let logs = drain(&mut logs);

    assert_eq!(report.status, TerminalStatus::Completed, "{:?}", report.error);
    let result = report.result.clone().unwrap();
    assert_eq!(result.output["solution"], json!([]), "submit() is recorded as []");
    let messages = report.trajectory.unwrap().messages;
    let env_after = |step: usize| messages[2 + 2 * step].content.clone();
    assert!(
        env_after(1).contains("keyword-form"),
        "exec_shell(command=...) runs: {}",
        env_after(1)
    );
    assert!(
        env_after(2).contains("quoted strings"),
        "exec_shell(\"ls\", timeout=60) is refused: {}",
        env_after(2)
    );
    assert!(
        env_after(3).contains("Format validation failure") || env_after(3).contains("one pair"),
        "{}",
        env_after(3)
    );
    let actions: Vec<Option<String>> = (1..=4)
        .map(|step| {
            logs.iter()
                .find(|e| e.context.step == Some(step) && e.context.action.is_some())
                .and_then(|e| e.context.action.clone())
        })
        .collect();
    assert_eq!(actions[0].as_deref(), Some("exec_shell"));
    assert_eq!(actions[3].as_deref(), Some("submit"));
    assert_eq!(
        actions[2].as_deref(),
        Some("(unparsable reply)"),
        "the parser refused it, so no label: {actions:?}"
    );
}
