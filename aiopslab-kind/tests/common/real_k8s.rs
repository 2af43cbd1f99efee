//! Helpers for the tests that run against a REAL Kubernetes (the single-node
//! v1.20 cluster of `shared/tools/k8s/local-k8s.sh`), named by the
//! kubeconfig in `AIOPSLAB_TEST_KUBECONFIG`. Without it the tests fail with
//! a message saying how to start one: never a silent skip.
//!
//! The cluster is shared (by the tests of this binary, which run in
//! parallel, and possibly by other test binaries or sessions): tests use
//! namespaces of their own (`aiopslab-rt-<what>-<random>`), clean up after
//! themselves even when they fail ([`Cleanup`]), and take the
//! [`ClusterLock`] — shared for a test that only touches its own objects,
//! exclusive for one that looks at the whole cluster (the verified reset
//! deletes everything that is not in its baseline).

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aiopslab_kind::KubeApi;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// The variable naming the real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "AIOPSLAB_TEST_KUBECONFIG";

/// The image pods run from (built locally by `local-k8s.sh start`).
pub const BUSYBOX: &str = "local/busybox:1";

/// The node of the local cluster.
pub const NODE: &str = "localhost";

/// The how-to printed when no real cluster is configured.
pub fn how_to_provide() -> String {
    format!(
        "these tests need a real Kubernetes: set {KUBECONFIG_ENV} to its kubeconfig. On this kind of \
         machine (as root) start the local single-node cluster with\n\
         \x20   bash /work/shared/tools/k8s/local-k8s.sh install && \
         bash /work/shared/tools/k8s/local-k8s.sh build && \
         bash /work/shared/tools/k8s/local-k8s.sh start\n\
         then\n\
         \x20   export {KUBECONFIG_ENV}=/var/tmp/local-k8s/pki/admin.kubeconfig\n\
         (.ci/run does both; `local-k8s.sh stop` takes it down again)"
    )
}

/// The kubeconfig path from the variable's value, or why it cannot be used
/// (with [`how_to_provide`]).
pub fn kubeconfig_from(value: Option<OsString>) -> Result<PathBuf, String> {
    let path = match value {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => return Err(format!("{KUBECONFIG_ENV} is not set: {}", how_to_provide())),
    };
    if !path.is_file() {
        return Err(format!(
            "{KUBECONFIG_ENV}={} is not a file: {}",
            path.display(),
            how_to_provide()
        ));
    }
    Ok(path)
}

/// [`kubeconfig_from`], panicking with its message.
pub fn require_kubeconfig(value: Option<OsString>) -> PathBuf {
    kubeconfig_from(value).unwrap_or_else(|message| panic!("{message}"))
}

/// The real cluster's kubeconfig; panics with the how-to when there is none.
pub fn real_kubeconfig() -> PathBuf {
    require_kubeconfig(std::env::var_os(KUBECONFIG_ENV))
}

/// The current context of a kubeconfig file.
pub fn current_context(path: &Path) -> String {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("readable kubeconfig");
    kubeconfig
        .current_context
        .expect("the kubeconfig has a current-context")
}

/// A client for the real cluster (its kubeconfig's current context).
pub async fn real_api() -> KubeApi {
    let path = real_kubeconfig();
    KubeApi::from_kubeconfig(&path, &current_context(&path))
        .await
        .expect("a client for the real cluster")
}

/// A namespace name of this test run: `aiopslab-rt-<what>-<8 hex>`.
pub fn unique(what: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("aiopslab-rt-{what}-{}", &id[..8])
}

/// Prints the test's wall time when dropped (at its end, or when it fails).
pub struct WallTime {
    name: &'static str,
    started: Instant,
}

impl WallTime {
    /// Starts the clock of test `name`.
    pub fn start(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for WallTime {
    fn drop(&mut self) {
        eprintln!(
            "[real-cluster] {}: {:.2} s wall time",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

// ----------------------------------------------------------------- the lock

/// A `flock` on `<tmp>/aiopslab-real-k8s.lock`, held until dropped: shared
/// by tests that touch only their own objects, exclusive for tests that
/// look at (or clean) the whole cluster or use AIOpsLab's fixed namespaces.
pub struct ClusterLock {
    _file: std::fs::File,
}

impl ClusterLock {
    /// The lock file every real-cluster test agrees on.
    pub fn path() -> PathBuf {
        std::env::temp_dir().join("aiopslab-real-k8s.lock")
    }

    async fn take(operation: libc::c_int) -> ClusterLock {
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(Self::path())
                .expect("open the cluster lock file");
            // SAFETY: flock on a file descriptor we own; it blocks until granted.
            let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
            assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
            ClusterLock { _file: file }
        })
        .await
        .expect("the lock task")
    }

    /// Shared with other tests holding it shared.
    pub async fn shared() -> ClusterLock {
        Self::take(libc::LOCK_SH).await
    }

    /// Alone on the cluster.
    pub async fn exclusive() -> ClusterLock {
        Self::take(libc::LOCK_EX).await
    }
}

// ----------------------------------------------------------------- cleanup

/// What a test created, deleted when the guard drops (even after a failed
/// assertion), without waiting: namespaces, persistent volumes, validating
/// webhook configurations, and the test CRD (whose objects' finalizers are
/// removed first, so it cannot stay Terminating).
pub struct Cleanup {
    pub namespaces: Vec<String>,
    pub volumes: Vec<String>,
    pub validating_webhooks: Vec<String>,
    pub test_crd: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut self.namespaces);
        let volumes = std::mem::take(&mut self.volumes);
        let webhooks = std::mem::take(&mut self.validating_webhooks);
        let test_crd = self.test_crd;
        // A runtime of its own: Drop cannot await, and the test's runtime may be gone.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let api = real_api().await;
                let client = api.client().clone();
                if test_crd {
                    strip_test_objects(&api).await;
                    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
                    let _ = crds.delete(TEST_CRD_NAME, &DeleteParams::background()).await;
                }
                for name in webhooks {
                    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
                for name in volumes {
                    let api: Api<PersistentVolume> = Api::all(client.clone());
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
                for name in namespaces {
                    let _ = api.delete_namespace(&name).await;
                }
            });
        });
        let _ = done.join();
    }
}

// ----------------------------------------------------------------- objects

/// Polls `check` every 200 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(err) => last = err,
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last error: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates namespace `name`.
pub async fn create_namespace(api: &KubeApi, name: &str) {
    let namespaces: Api<Namespace> = Api::all(api.client().clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"aiopslab-test": "real-cluster"}},
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("create namespace {name}: {err}"));
}

/// Starts a busybox pod that sleeps (as PID 1 it ignores SIGTERM, so its
/// deletion takes the whole `grace_seconds`) and waits until it is Running.
pub async fn run_sleeping_pod(api: &KubeApi, namespace: &str, name: &str, grace_seconds: i64) {
    let pods: Api<Pod> = Api::namespaced(api.client().clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": grace_seconds,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "sleep", "image": BUSYBOX, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .unwrap();
    // A new namespace's `default` service account appears a moment after it;
    // until then the ServiceAccount admission refuses pods.
    eventually("the pod to be accepted", Duration::from_secs(30), || async {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(response)) if response.code == 409 => Ok(Some(())),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
    eventually("the pod to be Running", Duration::from_secs(60), || async {
        let pod = pods.get(name).await.map_err(|err| err.to_string())?;
        let phase = pod.status.and_then(|status| status.phase).unwrap_or_default();
        Ok((phase == "Running").then_some(()))
    })
    .await;
}

/// The test CRD, in Chaos Mesh's group so the verified reset watches it.
/// Its own kind, so it never collides with a real Chaos Mesh CRD another
/// test may install.
pub const TEST_CRD_NAME: &str = "aiopslabtestchaos.chaos-mesh.org";

/// How to reach the test CRD's objects.
pub fn test_resource() -> ApiResource {
    ApiResource {
        group: "chaos-mesh.org".into(),
        version: "v1alpha1".into(),
        api_version: "chaos-mesh.org/v1alpha1".into(),
        kind: "AiopslabTestChaos".into(),
        plural: "aiopslabtestchaos".into(),
    }
}

/// Removes the finalizers of every object of the test CRD.
async fn strip_test_objects(api: &KubeApi) {
    let all: Api<DynamicObject> = Api::all_with(api.client().clone(), &test_resource());
    let Ok(list) = all.list(&ListParams::default()).await else {
        return;
    };
    for object in list.items {
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(api.client().clone(), &namespace, &test_resource());
        let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let _ = api.patch(&object.name_any(), &PatchParams::default(), &patch).await;
    }
}

/// Installs the test CRD (namespaced, v1alpha1, any content) and waits until
/// it is Established and its objects can be listed. A CRD left Terminating
/// by an earlier, interrupted run is first let go.
pub async fn install_test_crd(api: &KubeApi) {
    let crds: Api<CustomResourceDefinition> = Api::all(api.client().clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": TEST_CRD_NAME},
        "spec": {
            "group": "chaos-mesh.org",
            "scope": "Namespaced",
            "names": {"kind": "AiopslabTestChaos", "plural": "aiopslabtestchaos",
                      "singular": "aiopslabtestchaos", "listKind": "AiopslabTestChaosList"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    eventually("the test CRD to be created", Duration::from_secs(60), || async {
        match crds.get_opt(TEST_CRD_NAME).await.map_err(|err| err.to_string())? {
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                strip_test_objects(api).await;
                Err("an earlier test CRD is still being deleted".to_string())
            }
            Some(_) => Ok(Some(())),
            None => match crds.create(&PostParams::default(), &crd).await {
                Ok(_) => Ok(Some(())),
                Err(err) => Err(err.to_string()),
            },
        }
    })
    .await;
    eventually("the test CRD to be Established", Duration::from_secs(60), || async {
        let crd = crds.get(TEST_CRD_NAME).await.map_err(|err| err.to_string())?;
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            return Ok(None);
        }
        let all: Api<DynamicObject> = Api::all_with(api.client().clone(), &test_resource());
        all.list(&ListParams::default())
            .await
            .map(|_| Some(()))
            .map_err(|err| err.to_string())
    })
    .await;
}

/// Creates an object of the test CRD in `namespace`, with these finalizers.
pub async fn create_test_object(api: &KubeApi, namespace: &str, name: &str, finalizers: &[&str]) {
    let objects: Api<DynamicObject> = Api::namespaced_with(api.client().clone(), namespace, &test_resource());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "AiopslabTestChaos",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"action": "pod-kill", "selector": {"namespaces": [namespace]}},
    }))
    .unwrap();
    eventually("the test object to be created", Duration::from_secs(30), || async {
        match objects.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(Some(())),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
}

/// Whether the test object `namespace/name` exists.
pub async fn test_object_exists(api: &KubeApi, namespace: &str, name: &str) -> bool {
    let objects: Api<DynamicObject> = Api::namespaced_with(api.client().clone(), namespace, &test_resource());
    objects.get_opt(name).await.unwrap().is_some()
}

/// Creates a Retain persistent volume whose claim (`claim_namespace/data`,
/// with a uid) does not exist, and waits until the PV controller marks it
/// Released — what a run's volume looks like once its namespace is gone.
pub async fn create_released_volume(api: &KubeApi, name: &str, claim_namespace: &str) {
    let volumes: Api<PersistentVolume> = Api::all(api.client().clone());
    let volume: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": format!("/tmp/{name}")},
            "claimRef": {"namespace": claim_namespace, "name": "data",
                         "uid": "00000000-0000-4000-8000-000000000001"},
        },
    }))
    .unwrap();
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .unwrap_or_else(|err| panic!("create pv {name}: {err}"));
    eventually("the volume to be Released", Duration::from_secs(60), || async {
        let volume = volumes.get(name).await.map_err(|err| err.to_string())?;
        let phase = volume.status.and_then(|status| status.phase).unwrap_or_default();
        Ok((phase == "Released").then_some(()))
    })
    .await;
}

/// Creates a validating webhook configuration calling service
/// `service_namespace/webhook` — for a resource nobody creates, failure
/// ignored, so it never gets in another test's way.
pub async fn create_webhook(api: &KubeApi, name: &str, service_namespace: &str) {
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(api.client().clone());
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "nothing.aiopslab.test",
            "clientConfig": {"service": {"namespace": service_namespace, "name": "webhook"}},
            "rules": [{"apiGroups": ["aiopslab.test"], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["nothings"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    webhooks
        .create(&PostParams::default(), &config)
        .await
        .unwrap_or_else(|err| panic!("create webhook {name}: {err}"));
}

/// Whether a cluster-scoped object of type `K` named `name` exists.
pub async fn cluster_object_exists<K>(api: &KubeApi, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let objects: Api<K> = Api::all(api.client().clone());
    objects.get_opt(name).await.unwrap().is_some()
}

/// A copy of kubeconfig `real` at `dest` whose clusters trust a CA that did
/// not sign the API server's certificate.
pub fn wrong_ca_kubeconfig(real: &Path, dest: &Path) {
    let ca = dest.with_extension("wrong-ca.crt");
    std::fs::write(&ca, WRONG_CA_PEM).unwrap();
    let text = std::fs::read_to_string(real).unwrap();
    let mut replaced = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("certificate-authority-data:") || trimmed.starts_with("certificate-authority:") {
                replaced += 1;
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}certificate-authority: {}", ca.display())
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(replaced > 0, "{} names no certificate authority", real.display());
    std::fs::write(dest, lines.join("\n") + "\n").unwrap();
}

/// A self-signed CA (P-256, valid until 2126) unrelated to any cluster.
pub const WRONG_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAT+gAwIBAgIUdRYaWoztOgIMvKoAjv+lUL0xFrYwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWYWlvcHNsYWItdGVzdC13cm9uZy1jYTAgFw0yNjEyMDEwOTM4
NDBaGA8yMTI2MTEwNzA5Mzg0MFowITEfMB0GA1UEAwwWYWlvcHNsYWItdGVzdC13
cm9uZy1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABF2lVli31e6fc/azthbD
4Vh6imHp6JD3N8fit0CFktAyPicJQ904z/G72WSqjwgBwvaaTGR8zBcwU2oUEzad
IXijUzBRMB0GA1UdDgQWBBStR1rTcnlnvXYgTQCmbfbehlX2GDAfBgNVHSMEGDAW
gBStR1rTcnlnvXYgTQCmbfbehlX2GDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0kAMEYCIQCa9cp+LaRDua7tzxSFihefp+abGpcPBvVD6oqNu9DfgQIhAIGx
rkB/I6RQxeCVPBHyN385SyDm+XaAH+AzZG6NiTdP
-----END CERTIFICATE-----
";
