//! Cluster management against the fake `kind` (which records its arguments)
//! and the fake Kubernetes API (which kube-rs talks to through the
//! kubeconfig the fake `kind get kubeconfig` prints).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use aiopslab_core::ClusterBackend;
use aiopslab_kind::{KindBackend, ResetPolicy};
use common::{Harness, Ns, WORKER};

#[tokio::test]
async fn prepare_uses_the_existing_cluster_writes_its_own_kubeconfig_and_waits_for_ready_nodes() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    h.kube.state.lock().unwrap().not_ready_polls = 3;
    let backend = KindBackend::new(h.builder().build());

    backend.prepare().await.unwrap();

    let calls = h.kind_calls();
    assert_eq!(calls[0], "get clusters");
    assert!(calls.contains(&format!("get kubeconfig --name {WORKER}")), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("create")),
        "must not create an existing cluster: {calls:?}"
    );

    let kubeconfig = backend.config().kubeconfig_path();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&h.kube.url) && text.contains(&format!("kind-{WORKER}")));
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        kubeconfig.starts_with(h.root.path()),
        "the kubeconfig is the worker's own file"
    );

    let node_lists = h.kube.requests().iter().filter(|r| *r == "GET /api/v1/nodes").count();
    assert!(node_lists >= 4, "waited through 3 NotReady answers: {node_lists}");
}

#[tokio::test]
async fn prepare_without_the_cluster_says_how_to_create_it() {
    let h = Harness::start().await;
    let backend = KindBackend::new(h.builder().build());
    let err = backend.prepare().await.unwrap_err();
    assert!(
        err.message.contains(&format!("kind create cluster --name {WORKER}")),
        "{err}"
    );
    assert!(!h.kind_calls().iter().any(|c| c.starts_with("create")));
}

#[tokio::test]
async fn prepare_creates_the_cluster_when_asked_with_the_node_config_and_own_kubeconfig() {
    let h = Harness::start().await;
    let node_config = h.root.path().join("kind-config.yaml");
    std::fs::write(&node_config, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap();
    let config = h.builder().create_cluster(true).node_config(&node_config).build();
    let kubeconfig = config.kubeconfig_path();
    let backend = KindBackend::new(config);

    backend.prepare().await.unwrap();

    let create = format!(
        "create cluster --name {WORKER} --config {} --kubeconfig {}",
        node_config.display(),
        kubeconfig.display()
    );
    assert!(h.kind_calls().contains(&create), "{:?}", h.kind_calls());
    assert!(h.cluster_exists(WORKER));
}

#[tokio::test]
async fn a_created_cluster_uses_aiopslabs_own_node_config_by_default() {
    let h = Harness::start().await;
    let config = h.builder().create_cluster(true).build();
    let expected = common::fakes_dir()
        .join("aiopslab")
        .join("kind")
        .join("kind-config-x86.yaml");
    assert_eq!(config.effective_node_config(), Some(expected.clone()));
    let backend = KindBackend::new(config);
    backend.prepare().await.unwrap();
    assert!(
        h.kind_calls()
            .iter()
            .any(|c| c.contains(&format!("--config {}", expected.display()))),
        "{:?}",
        h.kind_calls()
    );
}

#[tokio::test]
async fn prepare_refuses_a_root_driver_unless_allowed() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root, as CI has");
    let err = KindBackend::new(h.builder().allow_driver_as_root(false).build())
        .prepare()
        .await
        .unwrap_err();
    assert!(err.message.contains("--run-as"), "{err}");
}

#[tokio::test]
async fn the_verified_reset_deletes_what_the_run_left_keeps_the_baseline_and_waits_until_it_is_gone() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    {
        let mut state = h.kube.state.lock().unwrap();
        state.terminating_polls = 3;
        // Present when the worker prepared the cluster: the baseline, kept.
        for ns in ["observe", "openebs", "kube-system"] {
            state.namespaces.insert(ns.into(), Ns::Active);
        }
    }
    let backend = KindBackend::new(h.builder().build());
    backend.prepare().await.unwrap();
    // What a run leaves behind.
    for ns in ["test-hotel-reservation", "chaos-mesh"] {
        h.kube.state.lock().unwrap().namespaces.insert(ns.into(), Ns::Active);
    }

    let summary = backend.verified_reset().await.unwrap();

    assert!(summary.contains("test-hotel-reservation"), "{summary}");
    let requests = h.kube.requests();
    for ns in ["test-hotel-reservation", "chaos-mesh"] {
        assert!(
            requests.contains(&format!("DELETE /api/v1/namespaces/{ns}")),
            "{ns}: {requests:?}"
        );
    }
    let polls = requests
        .iter()
        .filter(|r| *r == "GET /api/v1/namespaces/test-hotel-reservation")
        .count();
    assert!(polls >= 3, "waited while it was Terminating: {polls}");
    let state = h.kube.state.lock().unwrap();
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        ["kube-system", "observe", "openebs"]
    );
    assert!(!requests
        .iter()
        .any(|r| r.starts_with("DELETE") && (r.contains("observe") || r.contains("openebs"))));
    assert!(!requests
        .iter()
        .any(|r| r.contains("kube-system") && r.starts_with("DELETE")));
}

#[tokio::test]
async fn reset_between_tasks_is_a_no_op_after_a_passed_check_and_cleans_otherwise() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let backend = KindBackend::new(h.builder().build());
    backend.prepare().await.unwrap();
    let before = h.kube.requests().len();
    backend.reset().await.unwrap();
    assert_eq!(
        h.kube.requests().len(),
        before,
        "prepare verified the cluster: nothing to do"
    );
}

#[tokio::test]
async fn a_reset_that_cannot_finish_recreates_the_cluster() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let backend = KindBackend::new(h.builder().namespace_delete_timeout(Duration::from_millis(300)).build());
    backend.prepare().await.unwrap();
    {
        let mut state = h.kube.state.lock().unwrap();
        state.terminating_polls = 1_000_000; // stuck Terminating
        state.namespaces.insert("test-social-network".into(), Ns::Active);
    }

    let summary = backend.verified_reset().await.unwrap();

    assert!(summary.contains("recreated"), "{summary}");
    let calls = h.kind_calls();
    let delete = calls
        .iter()
        .position(|c| c.starts_with(&format!("delete cluster --name {WORKER}")));
    let create = calls
        .iter()
        .position(|c| c.starts_with(&format!("create cluster --name {WORKER}")));
    assert!(delete.is_some() && create.is_some() && delete < create, "{calls:?}");
}

#[tokio::test]
async fn a_reset_that_cannot_finish_fails_when_recreation_is_off() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let config = h
        .builder()
        .namespace_delete_timeout(Duration::from_millis(300))
        .recreate_when_unhealthy(false)
        .build();
    let backend = KindBackend::new(config);
    backend.prepare().await.unwrap();
    {
        let mut state = h.kube.state.lock().unwrap();
        state.terminating_polls = 1_000_000;
        state.namespaces.insert("test-social-network".into(), Ns::Active);
    }
    let err = backend.verified_reset().await.unwrap_err();
    assert!(err.message.contains("test-social-network"), "{err}");
}

#[tokio::test]
async fn an_unhealthy_cluster_is_recreated() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    // NotReady until the cluster is recreated.
    h.kube.state.lock().unwrap().broken_until_created = Some(h.kind_state.join("calls.log"));
    let backend = KindBackend::new(h.builder().node_ready_timeout(Duration::from_millis(200)).build());

    backend.prepare().await.unwrap();

    let calls = h.kind_calls();
    assert!(calls.iter().any(|c| c.starts_with("delete cluster")), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("create cluster")), "{calls:?}");
}

#[tokio::test]
async fn an_unhealthy_cluster_fails_prepare_when_recreation_is_off() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    h.kube.state.lock().unwrap().not_ready_polls = 1_000;
    let config = h
        .builder()
        .node_ready_timeout(Duration::from_millis(200))
        .recreate_when_unhealthy(false)
        .build();
    let err = KindBackend::new(config).prepare().await.unwrap_err();
    assert!(err.message.contains("nodes not Ready"), "{err}");
}

#[tokio::test]
async fn recreate_policy_deletes_and_creates_the_cluster_between_tasks() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let backend = KindBackend::new(h.builder().reset_policy(ResetPolicy::RecreateCluster).build());
    backend.prepare().await.unwrap();
    backend.verified_reset().await.unwrap();
    let calls = h.kind_calls();
    assert!(calls.iter().any(|c| c.starts_with("delete cluster")), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("create cluster")), "{calls:?}");
    assert!(h.cluster_exists(WORKER));
    assert!(!h.kube.requests().iter().any(|r| r.starts_with("DELETE")));
}

#[tokio::test]
async fn shutdown_deletes_the_cluster_only_when_configured() {
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let backend = KindBackend::new(h.builder().build());
    backend.prepare().await.unwrap();
    backend.shutdown().await.unwrap();
    assert!(h.cluster_exists(WORKER));

    let backend = KindBackend::new(h.builder().delete_on_shutdown(true).build());
    backend.prepare().await.unwrap();
    backend.shutdown().await.unwrap();
    assert!(!h.cluster_exists(WORKER));
    assert!(h
        .kind_calls()
        .iter()
        .any(|c| c.starts_with(&format!("delete cluster --name {WORKER}"))));
}
