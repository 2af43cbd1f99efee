//! AIOpsLab runs through the real embedded driver and the real subprocess
//! handling, against the fake `aiopslab` package, the fake LLM server, the
//! fake `kind`/`kubectl`/`helm` and the fake Kubernetes API.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiopslab_core::{ClusterBackend, LogLevel, RunReport, TerminalStatus};
use aiopslab_kind::group_alive;
use common::{action, context, drain, pid_alive, prepared, task, Harness, LlmReply, WORKER};
use serde_json::{json, Value};

const DETECTION: &str = "misconfig_app_hotel_res-detection-1";

/// The driver led a process group of its own, and nothing of it is left.
fn assert_driver_group_gone(h: &Harness) {
    let env = h.aiopslab_env();
    let pgid = env["pgid"].as_i64().unwrap() as i32;
    assert_eq!(
        env["pid"].as_i64(),
        Some(i64::from(pgid)),
        "the driver leads its own process group"
    );
    // SAFETY: getpgrp has no preconditions.
    assert_ne!(pgid, unsafe { libc::getpgrp() }, "not the test's own group");
    assert!(!group_alive(pgid), "process group {pgid} is gone");
}

fn error_code(report: &RunReport) -> &str {
    report.error.as_ref().map(|e| e.code.as_str()).unwrap_or("")
}

fn error_message(report: &RunReport) -> String {
    report.error.as_ref().map(|e| e.message.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_detection_run_that_submits_correctly_completes_with_metrics_and_a_full_trajectory() {
    let h = Harness::start().await;
    h.llm.set_script(
        vec![
            action(r#"exec_shell("echo pods-listed; kubectl get pods -n test-hotel-reservation")"#),
            action(r#"submit("Yes")"#),
        ],
        LlmReply::Status(500),
    );
    let config = h.builder().env("FAKE_LLM_KEY", "sk-fake-secret").build();
    let backend = prepared(&h, config.clone()).await;
    let task = task(
        DETECTION,
        json!({"model": "gpt-4", "temperature": 0.2, "top_p": 0.9, "max_tokens": 256,
               "api_key_env": "FAKE_LLM_KEY", "logprobs": true}),
        10,
        30,
    );
    let (ctx, mut logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;
    let logs = drain(&mut logs);

    assert_eq!(report.status, TerminalStatus::Completed, "{:?}", report.error);
    let result = report.result.clone().unwrap();
    assert_eq!(result.metrics["Detection Accuracy"], "Correct");
    assert!(result.metrics["TTD"].as_f64().unwrap() >= 0.0);
    assert_eq!(result.metrics["steps_taken"], 2);
    assert_eq!(result.metrics["steps"], 2);
    assert!(result.metrics["in_tokens"].is_u64() && result.metrics["out_tokens"].is_u64());
    assert!(result.metrics["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(result.metrics["llm_calls"], 2);
    assert_eq!(result.output["solution"], "Yes");
    assert_eq!(result.output["final_state"], "VALID_SUBMISSION");
    assert!(!result.logs.is_empty());

    let trajectory = report.trajectory.unwrap();
    assert_eq!(trajectory.task_id, task.id);
    assert_eq!(trajectory.reward, Some(1.0));
    assert_eq!(trajectory.evaluation["Detection Accuracy"], "Correct");
    let roles: Vec<&str> = trajectory.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "env", "assistant", "env", "assistant", "env"]);
    let system = &trajectory.messages[0].content;
    assert!(
        system.contains("Service Name: Hotel Reservation"),
        "description in the system prompt"
    );
    assert!(system.contains("exec_shell") && system.contains("get_traces") && system.contains("submit"));
    assert!(
        trajectory.messages[1].content.contains(r#"submit("Yes")"#),
        "instructions as the task message"
    );
    assert_eq!(trajectory.messages[2].content, "Please take the next action");
    assert!(
        trajectory.messages[4].content.starts_with("pods-listed\n"),
        "the agent's command really ran: {}",
        trajectory.messages[4].content
    );
    assert!(trajectory.messages[4].content.ends_with("Please take the next action"));
    assert_eq!(trajectory.messages[6].content, "VALID_SUBMISSION");
    assert_eq!(trajectory.llm_calls.len(), 2);
    let call = &trajectory.llm_calls[1];
    assert_eq!(call.step, Some(2));
    assert_eq!(call.model.as_deref(), Some("gpt-4-fake"));
    assert_eq!(call.sampling["temperature"], 0.2);
    assert_eq!(call.sampling["top_p"], 0.9);
    assert_eq!(call.sampling["max_tokens"], 256);
    assert_eq!(call.usage.unwrap().completion_tokens, 7);
    assert!(call.logprobs.is_some());
    assert_eq!(call.request.len(), 5, "system, task, input, reply, input");
    assert_eq!(trajectory.metadata["cluster"], WORKER);
    assert_eq!(trajectory.metadata["task_type"], "detection");

    // The endpoint got the key from the named variable; the key never hit the run's files.
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].0.as_deref(), Some("Bearer sk-fake-secret"));
    assert_eq!(requests[0].1["model"], "gpt-4");
    let run_dir = aiopslab_kind::run_dir(&config, &task);
    let agent_json = std::fs::read_to_string(run_dir.join("agent.json")).unwrap();
    assert!(
        !agent_json.contains("sk-fake-secret")
            && !agent_json.contains("FAKE_LLM_KEY")
            && !agent_json.contains(&h.llm.base_url),
        "the driver knows neither the key, nor its variable, nor the real endpoint: {agent_json}"
    );
    assert!(
        agent_json.contains("http://127.0.0.1:") && agent_json.contains("/t/"),
        "{agent_json}"
    );
    assert!(run_dir.join("aiopslab_driver.py").is_file());
    let sessions: Vec<_> = std::fs::read_dir(run_dir.join("results")).unwrap().collect();
    assert_eq!(sessions.len(), 1, "AIOpsLab's session file is in the run's results dir");

    // Isolation: own HOME, KUBECONFIG, AIOPSLAB_CLUSTER, working directory.
    let env = h.aiopslab_env();
    assert_eq!(env["HOME"], json!(config.home_dir()));
    assert_eq!(env["KUBECONFIG"], json!(config.kubeconfig_path()));
    assert_eq!(env["AIOPSLAB_CLUSTER"], WORKER);
    assert_eq!(PathBuf::from(env["cwd"].as_str().unwrap()), run_dir);
    let kubeconfig = config.kubeconfig_path().display().to_string();
    let tools = h.tool_calls();
    assert!(
        tools
            .iter()
            .any(|c| c.starts_with(&format!("kubectl KUBECONFIG={kubeconfig} apply"))
                && c.contains("-n test-hotel-reservation")),
        "AIOpsLab deployed the application with the worker's kubeconfig: {tools:?}"
    );
    assert!(tools
        .iter()
        .any(|c| c.starts_with(&format!("helm KUBECONFIG={kubeconfig} install prometheus"))));

    // The fake's workload generator, left running by AIOpsLab, went with the group.
    let workload = h.workload_pid().unwrap();
    assert!(!pid_alive(workload), "leftover workload {workload} was killed");
    assert!(h.aiopslab_calls().contains(&format!("recover_fault {DETECTION}")));

    // Logs: steps with their action, the evaluation.
    let step = logs
        .iter()
        .find(|e| e.context.step == Some(1) && e.level == LogLevel::Info)
        .unwrap();
    assert_eq!(step.context.action.as_deref(), Some("exec_shell"));
    assert!(logs.iter().any(|e| e.message.contains("evaluation:")));
    assert!(!logs.iter().any(|e| e.level == LogLevel::Warning), "{logs:?}");
    // The verified reset ran before the report.
    assert!(
        result.metrics["reset_seconds"].as_f64().is_some(),
        "{:?}",
        result.metrics
    );
    assert!(
        logs.iter().any(|e| e.message.starts_with("verified reset in")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_wrong_answer_completes_with_reward_zero() {
    let h = Harness::start().await;
    h.llm.set_script(vec![action(r#"submit("No")"#)], LlmReply::Status(500));
    let backend = prepared(&h, h.builder().build()).await;
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Completed, "{:?}", report.error);
    let result = report.result.unwrap();
    assert_eq!(result.metrics["Detection Accuracy"], "Incorrect");
    assert_eq!(result.output["solution"], "No");
    assert_eq!(report.trajectory.unwrap().reward, Some(0.0));
}

#[tokio::test]
async fn running_out_of_steps_without_submitting_is_still_evaluated() {
    let h = Harness::start().await;
    h.llm.set_script(
        vec![
            LlmReply::Text("no code block at all".into()),
            action(r#"exec_shell("kubectl get pods")"#),
        ],
        LlmReply::Status(500),
    );
    let backend = prepared(&h, h.builder().build()).await;
    let task = task(DETECTION, json!({"model": "m"}), 2, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Completed, "{:?}", report.error);
    let result = report.result.unwrap();
    assert_eq!(result.metrics["Detection Accuracy"], "Invalid Format");
    assert_eq!(result.output["solution"], Value::Null);
    let trajectory = report.trajectory.unwrap();
    assert_eq!(trajectory.reward, Some(0.0));
    assert!(trajectory.messages[4].content.contains("Error parsing response"));
}

#[tokio::test]
async fn localization_analysis_and_mitigation_report_their_keys() {
    let h = Harness::start().await;
    let backend = prepared(&h, h.builder().build()).await;
    let cases = [
        (
            "misconfig_app_hotel_res-localization-1",
            r#"submit(["geo"])"#,
            "Localization Accuracy",
            1.0,
        ),
        (
            "misconfig_app_hotel_res-analysis-1",
            r#"submit({"system_level": "Application", "fault_type": "Wrong"})"#,
            "fault_type_correct",
            0.0,
        ),
        ("misconfig_app_hotel_res-mitigation-1", "submit()", "TTM", 1.0),
    ];
    for (problem, call, key, reward) in cases {
        h.llm.set_script(vec![action(call)], LlmReply::Status(500));
        let task = task(problem, json!({"model": "m"}), 3, 30);
        let (ctx, _logs) = context(&task, Duration::from_secs(60));
        let report = backend.run(&task, ctx).await;
        assert_eq!(
            report.status,
            TerminalStatus::Completed,
            "{problem}: {:?}",
            report.error
        );
        assert!(report.result.unwrap().metrics.contains_key(key), "{problem}");
        assert_eq!(report.trajectory.unwrap().reward, Some(reward), "{problem}");
    }
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_fails_the_task() {
    let h = Harness::start().await;
    h.llm.set_script(Vec::new(), LlmReply::Status(500));
    let backend = prepared(&h, h.builder().build()).await;
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, mut logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Failed);
    assert_eq!(error_code(&report), "llm_endpoint_error");
    assert!(
        error_message(&report).contains("HTTP 500"),
        "{}",
        error_message(&report)
    );
    assert_eq!(h.llm.requests().len(), 3, "one call and two retries");
    assert!(
        h.aiopslab_calls().contains(&format!("recover_fault {DETECTION}")),
        "AIOpsLab recovered the fault"
    );
    let logs = drain(&mut logs);
    assert_eq!(logs.iter().filter(|e| e.message.contains("LLM call failed")).count(), 2);
}

#[tokio::test]
async fn a_run_past_its_deadline_times_out_and_its_process_group_is_gone() {
    let h = Harness::start().await;
    h.llm.set_script(Vec::new(), LlmReply::Hang);
    let config = h.builder().kill_grace(Duration::from_secs(3)).build();
    let backend = prepared(&h, config).await;
    let task = task(DETECTION, json!({"model": "m"}), 5, 1);
    // Long enough for the driver to start and deploy (init_problem) even on a loaded machine.
    let deadline = Duration::from_secs(5);
    let (ctx, _logs) = context(&task, deadline);
    let started = Instant::now();

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Timeout);
    assert_eq!(error_code(&report), "timeout");
    let limit = deadline + Duration::from_secs(3 + 5);
    assert!(started.elapsed() < limit, "ended {:?} after start", started.elapsed());
    assert!(started.elapsed() >= deadline);
    let workload = h.workload_pid().expect("init_problem ran before the deadline");
    assert!(
        !pid_alive(workload),
        "the fake's workload child {workload} must be gone"
    );
    assert_driver_group_gone(&h);
    let run = aiopslab_kind::run_dir(backend.config(), &task);
    assert!(run.join("driver.stderr.log").exists());
    // SIGTERM became SystemExit in the driver: AIOpsLab's atexit recovery ran.
    assert!(h
        .aiopslab_calls()
        .contains(&format!("recover_fault_atexit {DETECTION}")));
    // The LLM call that was in flight is in the partial trajectory's messages.
    assert!(report.trajectory.is_some());
    assert_eq!(report.trajectory.unwrap().reward, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_run_and_its_process_group() {
    let h = Harness::start().await;
    h.llm.set_script(Vec::new(), LlmReply::Hang);
    let backend = std::sync::Arc::new(prepared(&h, h.builder().build()).await);
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(120));
    let cancel = ctx.cancel.clone();
    let run = {
        let backend = backend.clone();
        let task = task.clone();
        tokio::spawn(async move { backend.run(&task, ctx).await })
    };
    // Wait until the agent is waiting on the LLM.
    let waited = Instant::now();
    while h.llm.requests().is_empty() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the driver never called the LLM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled_at = Instant::now();
    cancel.cancel();
    let report = run.await.unwrap();

    assert_eq!(report.status, TerminalStatus::Cancelled);
    assert_eq!(error_code(&report), "cancelled");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(8),
        "{:?}",
        cancelled_at.elapsed()
    );
    let workload = h.workload_pid().unwrap();
    assert!(!pid_alive(workload));
    assert_driver_group_gone(&h);
}

#[tokio::test]
async fn a_driver_that_dies_fails_with_the_reason() {
    let h = Harness::start().await;
    let config = h.builder().env("FAKE_AIOPSLAB_CRASH", "init_problem").build();
    let backend = prepared(&h, config).await;
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Failed);
    assert_eq!(error_code(&report), "driver_crashed");
    let message = error_message(&report);
    assert!(message.contains("signal 9"), "{message}");
    assert!(message.contains("simulated crash in init_problem"), "{message}");
    let workload = h.workload_pid().unwrap();
    assert!(!pid_alive(workload), "the dead driver's children are killed too");
}

#[tokio::test]
async fn a_driver_that_prints_garbage_fails_with_the_reason() {
    let h = Harness::start().await;
    let garbage = common::fakes_dir().join("bin").join("fake-python-garbage");
    let backend = prepared(&h, h.builder().python(garbage).build()).await;
    let task = task(DETECTION, json!({"model": "m"}), 5, 30);
    let (ctx, mut logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Failed);
    assert_eq!(error_code(&report), "driver_protocol");
    let message = error_message(&report);
    assert!(message.contains("without reporting a result"), "{message}");
    assert!(message.contains("3 malformed event lines"), "{message}");
    assert!(message.contains("no driver ran"), "stderr tail: {message}");
    let warnings = drain(&mut logs)
        .into_iter()
        .filter(|e| e.level == LogLevel::Warning && e.message.contains("malformed"))
        .count();
    assert_eq!(warnings, 3);
}

#[tokio::test]
async fn an_unknown_problem_fails_fast_without_starting_anything() {
    let h = Harness::start().await;
    let backend = prepared(&h, h.builder().build()).await;
    let infra_calls = h.aiopslab_calls().len();
    let task = task("no-such-problem-detection-9", json!({"model": "m"}), 5, 30);
    let (ctx, _logs) = context(&task, Duration::from_secs(60));

    let report = backend.run(&task, ctx).await;

    assert_eq!(report.status, TerminalStatus::Failed);
    assert_eq!(error_code(&report), "unknown_problem");
    assert!(error_message(&report).contains("no-such-problem-detection-9"));
    assert!(!aiopslab_kind::run_dir(backend.config(), &task).exists());
    assert_eq!(h.aiopslab_calls().len(), infra_calls, "AIOpsLab was not started");
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn secrets_in_agent_config_and_unset_key_variables_fail_fast() {
    let h = Harness::start().await;
    let backend = prepared(&h, h.builder().build()).await;
    let infra_calls = h.aiopslab_calls().len();
    let task1 = task(DETECTION, json!({"model": "m", "api_key": "sk-x"}), 5, 30);
    let (ctx, _logs) = context(&task1, Duration::from_secs(60));
    let report = backend.run(&task1, ctx).await;
    assert_eq!(error_code(&report), "invalid_agent_config");

    let task2 = task(
        DETECTION,
        json!({"model": "m", "api_key_env": "SURELY_UNSET_KEY_VAR_1234"}),
        5,
        30,
    );
    let (ctx, _logs) = context(&task2, Duration::from_secs(60));
    let report = backend.run(&task2, ctx).await;
    assert_eq!(error_code(&report), "missing_api_key");
    assert_eq!(h.aiopslab_calls().len(), infra_calls, "AIOpsLab was not started");
}
