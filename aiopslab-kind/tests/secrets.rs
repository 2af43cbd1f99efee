//! No secret reaches the agent: a whole episode through the real worker
//! runtime, the real embedded driver run as an unprivileged user, the
//! worker's LLM proxy and the FAKE aiopslab package, whose `exec_shell`
//! runs a real `sh -c` in the driver's process tree as the real one does.
//!
//! The agent (the fake LLM's script) runs `env`, `cat /proc/*/environ` and
//! `ps e` over every process; the worker process (this test) holds the
//! LLM key, the worker token and a database URL in its environment. The
//! test greps the stored trajectory, the log, the export and the run's
//! files for the actual values.
//!
//! Its own test binary: it puts the secrets into this process's environment.
//! It needs root (to create the driver's user and to switch to it), as CI has.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    DefaultScheduler, ExportFilter, ExportRecord, LogQuery, MemoryStore, NewTask, TaskStatus, TaskStore,
};
use aiopslab_kind::KindBackend;
use common::{action, ensure_driver_user, Harness, LlmReply, WORKER};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DETECTION: &str = "misconfig_app_hotel_res-detection-1";

#[test]
fn the_agent_sees_no_secret_and_none_is_stored_or_exported() {
    let user = ensure_driver_user();
    let api_key = format!("sk-test-{}", uuid::Uuid::new_v4().simple());
    let worker_token = format!("wt-{}", uuid::Uuid::new_v4().simple());
    let database_url = format!(
        "postgres://aiopslab:pw-{}@127.0.0.1:5432/aiopslab",
        uuid::Uuid::new_v4().simple()
    );
    // The worker's environment, as a real worker has it. Set before the
    // runtime's threads exist.
    std::env::set_var("OPENAI_API_KEY", &api_key);
    std::env::set_var("AIOPSLAB_WORKER_TOKEN", &worker_token);
    std::env::set_var("DATABASE_URL", &database_url);
    let secrets = [api_key.clone(), worker_token, database_url];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let h = Harness::start().await;
        h.open_to_driver_user();
        h.llm.set_script(
            vec![
                action(r#"exec_shell("env")"#),
                action(r#"exec_shell("cat /proc/*/environ | tr '\\0' '\\n'")"#),
                action(r#"exec_shell("ps e -A -ww")"#),
                action(r#"exec_shell("id -u")"#),
                action(r#"submit("Yes")"#),
            ],
            LlmReply::Status(500),
        );
        h.with_cluster(WORKER);
        let config = h
            .builder()
            .python("/usr/bin/python3")
            .allow_driver_as_root(false)
            .run_as(Some(user.clone()))
            .default_api_key_env(Some("OPENAI_API_KEY".into()))
            .build();
        let run_dir_root = config.runs_dir();
        let backend = Arc::new(KindBackend::new(config));
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
        let scheduler = Arc::new(DefaultScheduler::new(store.clone()));
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(
            WorkerRuntime::new(store.clone(), scheduler, backend, WorkerConfig::new(WORKER, "default"))
                .run(shutdown.clone()),
        );

        let mut new_task = NewTask::new(DETECTION);
        new_task.agent_config = Some(common::obj(json!({"model": "gpt-4o", "temperature": 0.0})));
        new_task.max_steps = Some(10);
        let task = store
            .create_task(new_task.validate().expect("a valid task"))
            .await
            .expect("created");
        let mut worker = worker;
        let done = tokio::select! {
            done = common::wait_terminal(store.as_ref(), task.id, Duration::from_secs(120)) => done,
            stopped = &mut worker => panic!("the worker stopped before the task ended: {stopped:?}"),
        };
        shutdown.cancel();
        let _ = worker.await;
        assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);

        let trajectory = store
            .get_trajectory(task.id)
            .await
            .expect("read")
            .expect("a trajectory");
        let trajectory_text = serde_json::to_string(&trajectory).expect("json");
        let logs = store.get_logs(task.id, &LogQuery::default()).await.expect("logs");
        let logs_text = serde_json::to_string(&logs).expect("json");
        let task_text = serde_json::to_string(&store.get_task(task.id).await.expect("task")).expect("json");
        let episodes = store
            .export_episodes(&ExportRequest::new(ExportFilter::default(), 100))
            .await
            .expect("export");
        assert_eq!(episodes.len(), 1);
        let export_text = serde_json::to_string(&ExportRecord::from_episode(&episodes[0])).expect("json");

        // The commands really ran, as the driver's user, and their output is in the record.
        let env_output = &trajectory.messages[4].content;
        assert!(
            env_output.contains("AIOPSLAB_CLUSTER=") && env_output.contains("KUBECONFIG="),
            "`env` ran in the driver's environment: {env_output}"
        );
        let uid = common::uid_of(&user);
        assert!(
            trajectory
                .messages
                .iter()
                .any(|m| m.content.contains(&format!("{uid}\n"))),
            "`id -u` printed the driver user's uid {uid}"
        );
        assert!(
            trajectory_text.contains("ps e") || trajectory_text.contains("PID"),
            "ps ran"
        );

        for secret in &secrets {
            for (what, text) in [
                ("trajectory", &trajectory_text),
                ("task log", &logs_text),
                ("task", &task_text),
                ("export", &export_text),
            ] {
                assert!(
                    !text.contains(secret.as_str()),
                    "the {what} holds a secret of the worker"
                );
            }
            for file in common::files_under(&run_dir_root) {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret.as_str()),
                    "{} holds a secret of the worker",
                    file.display()
                );
            }
        }
        // The key was used, by the worker's proxy only.
        let requests = h.llm.requests();
        assert_eq!(requests.len(), 5);
        assert!(requests
            .iter()
            .all(|(auth, _)| auth.as_deref() == Some(&*format!("Bearer {api_key}"))));
        assert_eq!(trajectory.llm_calls.len(), 5, "the proxy recorded every call");
        assert!(trajectory.llm_calls.iter().all(|call| call.usage.is_some()));
    });
}
