//! Whole episodes against a REAL Kubernetes: the worker prepares the
//! cluster (the shared infrastructure really installed, once, with a real
//! `kubectl` and `helm`), the driver runs the FAKE aiopslab package's
//! `k8s_target_port-misconfig-mitigation-1` on real objects (a busybox
//! Deployment and its Service, whose `targetPort` the fault really breaks),
//! the agent's shell really runs `kubectl` against the cluster and repairs
//! it, AIOpsLab's evaluation reads the Service back, and the verified reset
//! waits until the application's namespace is really gone. `kind` stays the
//! named fake (real-cluster mode) and the LLM the fake server.
//!
//! Needs `AIOPSLAB_TEST_KUBECONFIG` and `kubectl`/`helm` on `PATH` (`.ci/run`
//! provides both); without the kubeconfig it fails saying how to start the
//! local cluster.

mod common;
#[path = "common/real_k8s.rs"]
mod real_k8s;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aiopslab_core::{ClusterBackend, TerminalStatus};
use aiopslab_kind::{which, KubeApi};
use common::{action, context, prepared, task, Harness, LlmReply};
use real_k8s::*;
use serde_json::json;

const MITIGATION: &str = "k8s_target_port-misconfig-mitigation-1";
/// The namespaces AIOpsLab's fixed names give this run (and the shared infrastructure).
const FIXED_NAMESPACES: [&str; 3] = ["test-social-network", "observe", "openebs"];

/// `PATH` with the fake `kind` only (real `kubectl` and `helm` after it).
fn real_tools_path(h: &Harness) -> String {
    let bin = h.root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(common::fakes_dir().join("bin").join("kind"), bin.join("kind")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for tool in ["kubectl", "helm"] {
        assert!(
            which(Path::new(tool), path.as_ref()).is_some(),
            "`{tool}` is not on PATH: `DEST=DIR ../shared/tools/k8s/get-helm.sh` puts helm and kubectl in DIR (.ci/run does)"
        );
    }
    path
}

fn openebs_stand_in() -> PathBuf {
    common::fakes_dir().join("aiopslab/aiopslab-fake-apps/openebs/openebs-operator.yaml")
}

/// Runs `program args` with the real kubeconfig; its stdout.
fn run(program: &str, args: &[&str], kubeconfig: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes what an earlier (failed) run of this test may have left.
async fn start_clean(api: &KubeApi, kubeconfig: &Path) {
    run(
        "kubectl",
        &["delete", "storageclass", "openebs-hostpath", "--ignore-not-found"],
        kubeconfig,
    );
    let names: Vec<String> = FIXED_NAMESPACES.iter().map(|ns| ns.to_string()).collect();
    api.delete_namespaces_and_wait(&names, Duration::from_secs(180), Duration::from_millis(500))
        .await
        .expect("the fixed namespaces can be cleared");
}

#[tokio::test]
async fn a_fault_is_injected_and_repaired_on_real_objects_on_a_cluster_whose_infrastructure_is_installed_once() {
    let _time = WallTime::start("a_fault_is_injected_and_repaired_on_real_objects");
    let real = real_kubeconfig();
    let _lock = ClusterLock::exclusive().await;
    let api = real_api().await;
    start_clean(&api, &real).await;
    let _cleanup = Cleanup {
        namespaces: FIXED_NAMESPACES.iter().map(|ns| ns.to_string()).collect(),
        volumes: Vec::new(),
        validating_webhooks: Vec::new(),
        test_crd: false,
    };

    let h = Harness::start().await;
    let config = h
        .builder()
        .env("PATH", real_tools_path(&h))
        .env("FAKE_KIND_KUBECONFIG", real.display().to_string())
        .env("FAKE_AIOPSLAB_MAX_WAIT", "120")
        .openebs_manifest(openebs_stand_in().display().to_string())
        .node_ready_timeout(Duration::from_secs(60))
        .namespace_delete_timeout(Duration::from_secs(180))
        .poll_interval(Duration::from_millis(500))
        .build();
    let backend = prepared(&h, config).await;

    // The shared infrastructure is really there.
    assert!(api.namespace_exists("openebs").await.unwrap());
    let default_class = run(
        "kubectl",
        &[
            "get",
            "storageclass",
            "openebs-hostpath",
            "-o",
            "jsonpath={.metadata.annotations.storageclass\\.kubernetes\\.io/is-default-class}",
        ],
        &real,
    );
    assert_eq!(
        default_class.trim(),
        "true",
        "AIOpsLab's patch made openebs-hostpath the default class"
    );
    assert!(run("helm", &["status", "prometheus", "-n", "observe"], &real).contains("STATUS: deployed"));

    let get_port =
        r#"exec_shell("kubectl get svc user-service -n test-social-network -o jsonpath={.spec.ports[0].targetPort}")"#;
    let repair = r#"exec_shell("kubectl patch svc user-service -n test-social-network --type=json -p '[{\"op\": \"replace\", \"path\": \"/spec/ports/0/targetPort\", \"value\": 8080}]'")"#;
    for round in 1..=2 {
        h.llm.set_script(
            vec![action(get_port), action(repair), action(get_port), action("submit()")],
            LlmReply::Status(500),
        );
        let task = task(MITIGATION, json!({"model": "m"}), 8, 30);
        let (ctx, _logs) = context(&task, Duration::from_secs(600));

        let report = backend.run(&task, ctx).await;

        assert_eq!(
            report.status,
            TerminalStatus::Completed,
            "round {round}: {:?}",
            report.error
        );
        let metrics = report.result.as_ref().unwrap().metrics.clone();
        let trajectory = report.trajectory.unwrap();
        let env_after = |step: usize| trajectory.messages[2 + 2 * step].content.clone();
        assert!(
            env_after(1).starts_with("9999"),
            "the fault really broke the Service: {}",
            env_after(1)
        );
        assert!(
            env_after(2).contains("patched"),
            "the agent's kubectl really ran: {}",
            env_after(2)
        );
        assert!(env_after(3).starts_with("8080"), "and repaired it: {}", env_after(3));
        assert_eq!(
            metrics["success"], true,
            "AIOpsLab's evaluation read the repaired Service: {metrics:?}"
        );
        assert_eq!(trajectory.reward, Some(1.0));
        assert!(metrics["reset_seconds"].is_number(), "{metrics:?}");
        assert!(
            !api.namespace_exists("test-social-network").await.unwrap(),
            "the application's namespace is really gone before the report"
        );
        eprintln!(
            "[real-cluster] round {round} phases: {}",
            json!({"setup_seconds": metrics["setup_seconds"], "agent_seconds": metrics["agent_seconds"],
                   "eval_seconds": metrics["eval_seconds"], "cleanup_seconds": metrics["cleanup_seconds"],
                   "reset_seconds": metrics["reset_seconds"], "duration_seconds": metrics["duration_seconds"]})
        );
        backend.reset().await.unwrap();
    }

    // Two tasks, one installation: the Prometheus release has one revision, and nothing tore it down.
    let history: serde_json::Value = serde_json::from_str(&run(
        "helm",
        &["history", "prometheus", "-n", "observe", "-o", "json"],
        &real,
    ))
    .expect("helm history as JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(1), "installed once: {history}");
    assert!(api.namespace_exists("openebs").await.unwrap(), "OpenEBS stayed");
    assert_eq!(backend.infra_installs().await, 1);

    run(
        "kubectl",
        &["delete", "storageclass", "openebs-hostpath", "--ignore-not-found"],
        &real,
    );
}
