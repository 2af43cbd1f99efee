//! Tests against a REAL Kubernetes: the kube-rs calls of the backend (node
//! readiness over TLS with client certificates, namespace deletion waited
//! for through the real namespace controller) and the verified reset
//! (leftover namespaces, Chaos Mesh custom resources with and without a
//! stuck finalizer, a Released volume, an orphaned webhook, a broken
//! baseline). `kind` stays the named fake, in its real-cluster mode
//! (`FAKE_KIND_KUBECONFIG`), since Kind cannot run here.
//!
//! Needs `AIOPSLAB_TEST_KUBECONFIG` (see `common/real_k8s.rs`); without it
//! every test fails saying how to start the local cluster. Each test prints
//! its wall time (`cargo test ... -- --nocapture` shows it).

mod common;
#[path = "common/real_k8s.rs"]
mod real_k8s;

use std::time::{Duration, Instant};

use aiopslab_core::ClusterBackend;
use aiopslab_kind::{
    verified_reset, KindBackend, KubeApi, KubeError, LeftoverRules, WebhookConfiguration, WebhookKind,
};
use common::{Harness, WORKER};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::PersistentVolume;
use real_k8s::*;

#[tokio::test]
async fn prepare_against_the_real_cluster_writes_a_kind_context_and_sees_node_localhost_ready() {
    let _time = WallTime::start("prepare_against_the_real_cluster");
    let real = real_kubeconfig();
    let _lock = ClusterLock::shared().await;
    let h = Harness::start().await;
    h.with_cluster(WORKER);
    let backend = KindBackend::new(
        h.builder()
            .env("FAKE_KIND_KUBECONFIG", real.display().to_string())
            .node_ready_timeout(Duration::from_secs(60))
            .build(),
    );

    backend.prepare().await.expect("prepare against the real cluster");

    // The worker's own kubeconfig: the real server and credentials under the Kind context name.
    let own = backend.config().kubeconfig_path();
    let text = std::fs::read_to_string(&own).unwrap();
    let context = format!("kind-{WORKER}");
    assert!(text.contains(&format!("current-context: {context}")), "{text}");
    assert!(text.contains("server: https://"), "{text}");
    assert!(text.contains("client-certificate-data"), "client certificates kept");
    assert!(
        h.kube.requests().is_empty(),
        "nothing went to the fake API: {:?}",
        h.kube.requests()
    );

    let api = KubeApi::from_kubeconfig(&own, &context).await.unwrap();
    let readiness = api.node_readiness().await.unwrap();
    assert!(readiness.all_ready(), "{readiness}");
    assert!(readiness.ready.iter().any(|n| n == NODE), "{readiness:?}");
}

#[tokio::test]
async fn a_kubeconfig_with_a_wrong_ca_fails_with_a_clear_tls_error() {
    let _time = WallTime::start("a_kubeconfig_with_a_wrong_ca");
    let real = real_kubeconfig();
    let _lock = ClusterLock::shared().await;
    let h = Harness::start().await;
    let bad = h.root.path().join("wrong-ca.kubeconfig");
    wrong_ca_kubeconfig(&real, &bad);

    // Straight through kube-rs: the error names the certificate problem.
    let api = KubeApi::from_kubeconfig(&bad, &current_context(&bad)).await.unwrap();
    let err = api.node_readiness().await.unwrap_err();
    assert!(matches!(err, KubeError::Api(_)), "{err:?}");
    let message = err.to_string();
    eprintln!("[real-cluster] wrong CA: {message}");
    assert!(
        message.contains("certificate") && message.contains("UnknownIssuer"),
        "a clear TLS error: {message}"
    );

    // Through the backend (fake kind handing out that kubeconfig): prepare fails and says why.
    h.with_cluster(WORKER);
    let backend = KindBackend::new(
        h.builder()
            .env("FAKE_KIND_KUBECONFIG", bad.display().to_string())
            .node_ready_timeout(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(200))
            .recreate_when_unhealthy(false)
            .build(),
    );
    let err = backend.prepare().await.unwrap_err();
    assert!(
        err.message.contains("nodes not Ready") && err.message.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn namespace_reset_returns_only_once_the_api_says_the_namespace_is_gone() {
    let _time = WallTime::start("namespace_reset_waits_for_real_deletion");
    let _lock = ClusterLock::shared().await;
    let api = real_api().await;
    let ns = unique("nsdel");
    let _cleanup = Cleanup {
        namespaces: vec![ns.clone()],
        volumes: Vec::new(),
        validating_webhooks: Vec::new(),
        test_crd: false,
    };
    create_namespace(&api, &ns).await;
    // `sleep` as PID 1 ignores SIGTERM: the pod takes its whole grace period to die.
    let grace = 3;
    run_sleeping_pod(&api, &ns, "sleeper", grace).await;

    // Deletion has begun but takes time: the namespace is Terminating.
    assert!(api.delete_namespace(&ns).await.unwrap());
    let state = api.namespaces().await.unwrap().into_iter().find(|n| n.name == ns);
    assert!(
        state.as_ref().is_some_and(|n| n.terminating),
        "Terminating right after the delete: {state:?}"
    );

    // The reset deletes it again (a Terminating namespace is fine) and waits.
    let started = Instant::now();
    let deleted = api
        .delete_namespaces_and_wait(
            std::slice::from_ref(&ns),
            Duration::from_secs(120),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(deleted, std::slice::from_ref(&ns));
    assert!(!api.namespace_exists(&ns).await.unwrap(), "gone when the call returns");
    assert!(
        !api.namespaces().await.unwrap().iter().any(|n| n.name == ns),
        "not listed either"
    );
    assert!(
        took >= Duration::from_secs(1),
        "waited for the pod's {grace} s grace period: {took:?}"
    );
    eprintln!("[real-cluster] namespace with a running pod deleted in {took:?}");

    // Nothing to delete: returns at once.
    let again = api
        .delete_namespaces_and_wait(&[ns], Duration::from_secs(5), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(again.is_empty());
}

#[tokio::test]
async fn verified_reset_finds_and_cleans_what_a_run_left_and_reports_a_broken_baseline() {
    let _time = WallTime::start("verified_reset");
    // Exclusive: the test CRD is cluster-wide and installed and removed by name.
    let _lock = ClusterLock::exclusive().await;
    let api = real_api().await;
    // Everything this test checks and cleans is under a prefix of its own,
    // so whatever else uses the cluster at the same time is left alone.
    let prefix = format!("{}-", unique("reset"));
    let kept = format!("{prefix}kept");
    let run = format!("{prefix}run");
    let volume = unique("pv");
    let webhook = unique("webhook");
    let _cleanup = Cleanup {
        namespaces: vec![kept.clone(), run.clone()],
        volumes: vec![volume.clone()],
        validating_webhooks: vec![webhook.clone()],
        test_crd: true,
    };
    let rules = LeftoverRules {
        finalizer_grace: Duration::from_secs(2),
        namespace_prefix: Some(prefix.clone()),
        ..LeftoverRules::default()
    };

    // The prepared cluster: shared infrastructure (a namespace with a chaos object of its own).
    install_test_crd(&api).await;
    create_namespace(&api, &kept).await;
    create_test_object(&api, &kept, "infra", &[]).await;
    let baseline = api.capture_baseline(&rules).await.unwrap();
    for ns in ["default", "kube-system", kept.as_str()] {
        assert!(baseline.namespaces.contains(ns), "{ns}: {baseline:?}");
    }
    let infra_id = format!("aiopslabtestchaos.chaos-mesh.org/{kept}/infra");
    assert!(baseline.custom_resources.contains(&infra_id), "{baseline:?}");

    // The run: its namespace with two experiments (one with a finalizer no
    // controller will remove), an experiment in the shared namespace, a
    // Released volume of its claim, a webhook calling its service.
    let stuck = "aiopslab.test/never-removed";
    create_namespace(&api, &run).await;
    create_test_object(&api, &run, "fault", &[]).await;
    create_test_object(&api, &run, "stuck", &[stuck]).await;
    create_test_object(&api, &kept, "late", &[stuck]).await;
    create_released_volume(&api, &volume, &run).await;
    create_webhook(&api, &webhook, &run).await;

    let found = api.find_leftovers(&baseline, &rules).await.unwrap();
    eprintln!("[real-cluster] found: {}", found.summary());
    assert_eq!(found.namespaces, std::slice::from_ref(&run), "{}", found.summary());
    let ids: Vec<String> = found.custom_resources.iter().map(|r| r.id()).collect();
    let expected: Vec<String> = [format!("{kept}/late"), format!("{run}/fault"), format!("{run}/stuck")]
        .iter()
        .map(|name| format!("aiopslabtestchaos.chaos-mesh.org/{name}"))
        .collect();
    assert_eq!(ids, expected, "baseline objects are kept");
    let fault = found.custom_resources.iter().find(|r| r.name == "fault").unwrap();
    assert_eq!(
        (
            fault.group.as_str(),
            fault.version.as_str(),
            fault.kind.as_str(),
            fault.plural.as_str()
        ),
        ("chaos-mesh.org", "v1alpha1", "AiopslabTestChaos", "aiopslabtestchaos")
    );
    assert_eq!(fault.namespace.as_deref(), Some(run.as_str()));
    assert_eq!(found.volumes, std::slice::from_ref(&volume), "{}", found.summary());
    let orphan = WebhookConfiguration {
        kind: WebhookKind::Validating,
        name: webhook.clone(),
    };
    assert_eq!(found.webhook_configurations, [orphan], "{}", found.summary());
    assert!(found.missing_baseline.is_empty(), "{}", found.summary());
    assert!(!found.is_clean());

    let started = Instant::now();
    let outcome = reset_within(&api, &baseline, &rules, 120)
        .await
        .unwrap_or_else(|err| panic!("verified reset: {err}"));
    eprintln!("[real-cluster] verified reset cleaned in {:?}", started.elapsed());
    assert!(outcome.cleaned);
    assert_eq!(outcome.found.namespaces, found.namespaces);

    let again = api.find_leftovers(&baseline, &rules).await.unwrap();
    assert!(again.is_clean(), "{}", again.summary());
    assert!(!api.namespace_exists(&run).await.unwrap());
    assert!(
        api.namespace_exists(&kept).await.unwrap(),
        "baseline namespace untouched"
    );
    assert!(
        test_object_exists(&api, &kept, "infra").await,
        "baseline object untouched"
    );
    assert!(
        !test_object_exists(&api, &kept, "late").await,
        "its finalizer was removed"
    );
    assert!(!cluster_object_exists::<PersistentVolume>(&api, &volume).await);
    assert!(!cluster_object_exists::<ValidatingWebhookConfiguration>(&api, &webhook).await);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(api.namespace_exists(ns).await.unwrap(), "{ns}");
    }

    // A clean cluster: the reset has nothing to do.
    let outcome = reset_within(&api, &baseline, &rules, 30).await.unwrap();
    assert!(!outcome.cleaned && outcome.found.is_clean());

    // Shared infrastructure deleted by hand: reported, and the reset fails (recreate the cluster).
    api.delete_namespaces_and_wait(
        std::slice::from_ref(&kept),
        Duration::from_secs(60),
        Duration::from_millis(250),
    )
    .await
    .unwrap();
    let broken = api.find_leftovers(&baseline, &rules).await.unwrap();
    assert_eq!(
        broken.missing_baseline,
        std::slice::from_ref(&kept),
        "{}",
        broken.summary()
    );
    assert!(!broken.is_clean());
    let err = reset_within(&api, &baseline, &rules, 30).await.unwrap_err();
    match &err {
        KubeError::LeftoversRemain { remaining } => assert_eq!(remaining.missing_baseline, std::slice::from_ref(&kept)),
        other => panic!("expected LeftoversRemain, got {other:?}"),
    }
    assert!(err.to_string().contains(&kept), "{err}");
}

#[test]
fn without_a_kubeconfig_the_helper_fails_saying_how_to_start_the_local_cluster() {
    let _time = WallTime::start("missing_kubeconfig_message");
    let how_to = how_to_provide();
    for needed in [
        KUBECONFIG_ENV,
        "local-k8s.sh install",
        "local-k8s.sh build",
        "local-k8s.sh start",
        "export AIOPSLAB_TEST_KUBECONFIG=/var/tmp/local-k8s/pki/admin.kubeconfig",
        ".ci/run",
    ] {
        assert!(how_to.contains(needed), "{needed:?} in {how_to}");
    }

    for unset in [None, Some("".into())] {
        let panic = std::panic::catch_unwind(|| require_kubeconfig(unset)).unwrap_err();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("is not set") && message.contains(&how_to), "{message}");
    }

    let missing = std::panic::catch_unwind(|| require_kubeconfig(Some("/nonexistent/admin.kubeconfig".into())))
        .unwrap_err()
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        missing.contains("/nonexistent/admin.kubeconfig")
            && missing.contains("is not a file")
            && missing.contains(&how_to),
        "{missing}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(require_kubeconfig(Some(file.path().into())), file.path());
}

/// The verified reset with at most `seconds` for the deletions, polling every 250 ms.
async fn reset_within(
    api: &KubeApi,
    baseline: &aiopslab_kind::ClusterBaseline,
    rules: &LeftoverRules,
    seconds: u64,
) -> Result<aiopslab_kind::ResetOutcome, KubeError> {
    verified_reset(
        api,
        baseline,
        rules,
        Duration::from_secs(seconds),
        Duration::from_millis(250),
    )
    .await
}
