//! The verified reset: after every run, prove the cluster holds nothing of
//! that run before the next one starts.
//!
//! Deleting AIOpsLab's fixed namespaces is not enough on its own: a run that
//! failed half-way can leave a namespace of another name, a Chaos Mesh
//! experiment whose finalizer nobody will ever remove (its controller was
//! deleted with the `chaos-mesh` namespace), an admission webhook whose
//! service is gone (which then refuses unrelated API calls), or a persistent
//! volume of a deleted claim. The next run would inherit them and its
//! evaluation would be wrong, silently.
//!
//! So the worker takes a [`ClusterBaseline`] once the cluster is prepared
//! (after the shared infrastructure is installed): everything present then is
//! "ours" and kept. After each run, [`verified_reset`] finds what is not in
//! the baseline ([`KubeApi::find_leftovers`]), cleans it
//! ([`KubeApi::clean_leftovers`]: webhooks, then custom resources — stripping
//! their finalizers when nobody removes them — then namespaces, waiting until
//! the API says they are really gone, then volumes), and checks again. When
//! the second check is not clean, or a baseline namespace has disappeared
//! (the shared infrastructure is broken), it fails with
//! [`KubeError::LeftoversRemain`] and the caller recreates the cluster.
//!
//! What counts as a leftover ([`LeftoverRules`]):
//! - a namespace not in the baseline, except the protected ones (`default`,
//!   `kube-system`, `kube-public`, `kube-node-lease`), which are never deleted;
//! - an object of a CustomResourceDefinition whose group is in
//!   [`LeftoverRules::crd_groups`] (default `chaos-mesh.org`) that was not
//!   there at baseline time, in any namespace (protected ones included: a
//!   chaos experiment the run left in `default` is removed, the namespace is not);
//! - a mutating or validating webhook configuration, not in the baseline,
//!   one of whose webhooks calls a service in a namespace outside the baseline;
//! - a persistent volume whose `claimRef` names a namespace outside the
//!   baseline (Released or Failed, or still Bound to a claim of a leftover
//!   namespace, which becomes Released once that namespace is deleted).
//!
//! A worker owns its cluster, so the check covers all of it by default;
//! [`LeftoverRules::namespace_prefix`] narrows it to namespaces of one prefix
//! for a cluster shared with others (the tests' one).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ServiceReference, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::kube_api::{KubeApi, KubeError};

/// The CRD groups whose objects are leftovers by default: Chaos Mesh's experiments.
pub const DEFAULT_CRD_GROUPS: [&str; 1] = ["chaos-mesh.org"];

/// The namespaces a reset never deletes, whatever the baseline says.
pub const PROTECTED_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// What the cluster held once it was prepared: all of it is kept by resets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBaseline {
    /// The namespaces (not being deleted) present then.
    pub namespaces: BTreeSet<String>,
    /// The objects of the [`LeftoverRules::crd_groups`] present then, by
    /// [`LeftoverResource::id`].
    pub custom_resources: BTreeSet<String>,
    /// The webhook configurations present then.
    pub webhook_configurations: BTreeSet<WebhookConfiguration>,
}

/// What the reset looks for, and what it never touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftoverRules {
    /// Groups of CustomResourceDefinitions whose objects are leftovers when
    /// they are not in the baseline; default [`DEFAULT_CRD_GROUPS`].
    pub crd_groups: Vec<String>,
    /// Namespaces never deleted (and never reported as leftovers); default
    /// [`PROTECTED_NAMESPACES`].
    pub protected_namespaces: Vec<String>,
    /// How long a deleted custom resource or volume may keep its finalizers
    /// (its controller finishing its work, e.g. Chaos Mesh recovering the
    /// fault) before the reset removes them itself; default 10 s.
    pub finalizer_grace: Duration,
    /// Limits the check to namespaces whose name starts with this prefix (and
    /// to the objects in them, the volumes claimed from them and the webhooks
    /// calling them; cluster-scoped custom resources are then left out).
    /// `None` (the default) checks the whole cluster, which a worker owns.
    /// For a cluster shared with others, such as the tests' one.
    pub namespace_prefix: Option<String>,
}

impl Default for LeftoverRules {
    fn default() -> Self {
        Self {
            crd_groups: DEFAULT_CRD_GROUPS.iter().map(|g| g.to_string()).collect(),
            protected_namespaces: PROTECTED_NAMESPACES.iter().map(|n| n.to_string()).collect(),
            finalizer_grace: Duration::from_secs(10),
            namespace_prefix: None,
        }
    }
}

impl LeftoverRules {
    fn protected(&self, namespace: &str) -> bool {
        self.protected_namespaces.iter().any(|p| p == namespace)
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.namespace_prefix
            .as_deref()
            .is_none_or(|prefix| namespace.starts_with(prefix))
    }
}

/// One custom resource object left behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeftoverResource {
    /// The API group, e.g. `chaos-mesh.org`.
    pub group: String,
    /// The version it was listed with (the CRD's storage version when served).
    pub version: String,
    /// The kind, e.g. `PodChaos`.
    pub kind: String,
    /// The plural resource name, e.g. `podchaos`.
    pub plural: String,
    /// Its namespace; `None` for a cluster-scoped resource.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl LeftoverResource {
    /// `plural.group/namespace/name` (`plural.group/name` when cluster-scoped):
    /// the object's identity, whatever version it is read with.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}.{}/{}/{}", self.plural, self.group, namespace, self.name),
            None => format!("{}.{}/{}", self.plural, self.group, self.name),
        }
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: format!("{}/{}", self.group, self.version),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// Which of the two admission webhook configuration kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WebhookKind {
    /// A `MutatingWebhookConfiguration`.
    Mutating,
    /// A `ValidatingWebhookConfiguration`.
    Validating,
}

/// A (cluster-scoped) admission webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WebhookConfiguration {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for WebhookConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            WebhookKind::Mutating => "mutatingwebhookconfiguration",
            WebhookKind::Validating => "validatingwebhookconfiguration",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// What a check found that the baseline does not account for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftovers {
    /// Namespaces not in the baseline (including ones still Terminating).
    pub namespaces: Vec<String>,
    /// Objects of the watched CRD groups not in the baseline.
    pub custom_resources: Vec<LeftoverResource>,
    /// Persistent volumes whose claim lived in a namespace outside the baseline.
    pub volumes: Vec<String>,
    /// Webhook configurations calling a service in a namespace outside the baseline.
    pub webhook_configurations: Vec<WebhookConfiguration>,
    /// Baseline namespaces that are gone or being deleted: the shared
    /// infrastructure is broken and cleaning cannot bring it back.
    pub missing_baseline: Vec<String>,
}

impl Leftovers {
    /// Nothing left behind and nothing of the baseline missing.
    pub fn is_clean(&self) -> bool {
        self.namespaces.is_empty()
            && self.custom_resources.is_empty()
            && self.volumes.is_empty()
            && self.webhook_configurations.is_empty()
            && self.missing_baseline.is_empty()
    }

    /// One line for logs and errors: `clean`, or each non-empty category with its items.
    pub fn summary(&self) -> String {
        fn part(parts: &mut Vec<String>, what: &str, items: Vec<String>) {
            if !items.is_empty() {
                parts.push(format!("{what} ({}): {}", items.len(), items.join(", ")));
            }
        }
        let mut parts = Vec::new();
        part(&mut parts, "namespaces", self.namespaces.clone());
        part(
            &mut parts,
            "custom resources",
            self.custom_resources.iter().map(LeftoverResource::id).collect(),
        );
        part(&mut parts, "persistent volumes", self.volumes.clone());
        part(
            &mut parts,
            "webhook configurations",
            self.webhook_configurations.iter().map(ToString::to_string).collect(),
        );
        part(&mut parts, "missing baseline namespaces", self.missing_baseline.clone());
        if parts.is_empty() {
            "clean".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// What [`verified_reset`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOutcome {
    /// What the first check found (clean when the run left nothing).
    pub found: Leftovers,
    /// Whether anything had to be cleaned (the second check was then clean).
    pub cleaned: bool,
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(response) if response.code == 404)
}

/// The version to list a CRD's objects with: its storage version when
/// served, else its first served one. Listing every served version would
/// return every object once per version.
fn listing_version(crd: &CustomResourceDefinition) -> Option<String> {
    let versions = &crd.spec.versions;
    versions
        .iter()
        .find(|v| v.storage && v.served)
        .or_else(|| versions.iter().find(|v| v.served))
        .map(|v| v.name.clone())
}

/// An object to delete, its finalizers to strip when it lingers.
struct Doomed<K> {
    api: Api<K>,
    name: String,
    label: String,
}

/// Deletes every object, waits up to `grace` for them to go, strips the
/// finalizers of those still there, and waits until `deadline`. Returns the
/// labels of those still present then.
async fn delete_strip_and_wait<K>(
    items: Vec<Doomed<K>>,
    grace: Duration,
    deadline: Instant,
    poll: Duration,
) -> Result<Vec<String>, KubeError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut present = Vec::new();
    for item in items {
        match item.api.delete(&item.name, &DeleteParams::background()).await {
            Ok(_) => present.push(item),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let grace_end = (Instant::now() + grace).min(deadline);
    let mut stripped = false;
    loop {
        let mut still = Vec::new();
        for item in present {
            if item.api.get_opt(&item.name).await?.is_some() {
                still.push(item);
            }
        }
        present = still;
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        if !stripped && now >= grace_end {
            for item in &present {
                tracing::warn!(object = %item.label, "still present after the finalizer grace: removing its finalizers");
                let patch = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
                match item.api.patch(&item.name, &PatchParams::default(), &patch).await {
                    Ok(_) => {}
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            stripped = true;
            continue;
        }
        if now + poll > deadline {
            return Ok(present.into_iter().map(|item| item.label).collect());
        }
        tokio::time::sleep(poll).await;
    }
}

impl KubeApi {
    /// The objects of the CRDs in `groups`, cluster-wide.
    async fn custom_resources(&self, groups: &[String]) -> Result<Vec<LeftoverResource>, KubeError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client().clone());
        let mut found = Vec::new();
        for crd in crds.list(&ListParams::default()).await?.items {
            let spec = &crd.spec;
            if !groups.contains(&spec.group) {
                continue;
            }
            let Some(version) = listing_version(&crd) else {
                continue;
            };
            let resource = ApiResource {
                group: spec.group.clone(),
                api_version: format!("{}/{}", spec.group, version),
                version: version.clone(),
                kind: spec.names.kind.clone(),
                plural: spec.names.plural.clone(),
            };
            let namespaced = spec.scope == "Namespaced";
            let api: Api<DynamicObject> = Api::all_with(self.client().clone(), &resource);
            let objects = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                // The CRD is being deleted or not yet established.
                Err(err) if is_not_found(&err) => continue,
                Err(err) => return Err(err.into()),
            };
            for object in objects {
                found.push(LeftoverResource {
                    group: resource.group.clone(),
                    version: version.clone(),
                    kind: resource.kind.clone(),
                    plural: resource.plural.clone(),
                    namespace: if namespaced { object.namespace() } else { None },
                    name: object.name_any(),
                });
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every webhook configuration, with the namespaces of the services it calls.
    async fn webhook_configurations(&self) -> Result<Vec<(WebhookConfiguration, Vec<String>)>, KubeError> {
        let entry = |kind, name, services: Vec<Option<&ServiceReference>>| {
            let namespaces = services.into_iter().flatten().map(|s| s.namespace.clone()).collect();
            (WebhookConfiguration { kind, name }, namespaces)
        };
        let mut found = Vec::new();
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client().clone());
        for config in mutating.list(&ListParams::default()).await?.items {
            let services = config
                .webhooks
                .iter()
                .flatten()
                .map(|w| w.client_config.service.as_ref())
                .collect();
            found.push(entry(WebhookKind::Mutating, config.name_any(), services));
        }
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client().clone());
        for config in validating.list(&ListParams::default()).await?.items {
            let services = config
                .webhooks
                .iter()
                .flatten()
                .map(|w| w.client_config.service.as_ref())
                .collect();
            found.push(entry(WebhookKind::Validating, config.name_any(), services));
        }
        Ok(found)
    }

    /// Records what the prepared cluster holds (namespaces not being deleted,
    /// objects of `rules.crd_groups`, webhook configurations): a reset keeps all of it.
    pub async fn capture_baseline(&self, rules: &LeftoverRules) -> Result<ClusterBaseline, KubeError> {
        let namespaces = self
            .namespaces()
            .await?
            .into_iter()
            .filter(|ns| !ns.terminating)
            .map(|ns| ns.name)
            .collect();
        let custom_resources = self
            .custom_resources(&rules.crd_groups)
            .await?
            .iter()
            .map(LeftoverResource::id)
            .collect();
        let webhook_configurations = self
            .webhook_configurations()
            .await?
            .into_iter()
            .map(|(config, _)| config)
            .collect();
        Ok(ClusterBaseline {
            namespaces,
            custom_resources,
            webhook_configurations,
        })
    }

    /// Compares the cluster with `baseline`: what a run left behind, and
    /// what of the baseline is gone. Reads only.
    pub async fn find_leftovers(
        &self,
        baseline: &ClusterBaseline,
        rules: &LeftoverRules,
    ) -> Result<Leftovers, KubeError> {
        let mut leftovers = Leftovers::default();
        let namespaces = self.namespaces().await?;
        for ns in &namespaces {
            if !baseline.namespaces.contains(&ns.name) && !rules.protected(&ns.name) && rules.in_scope(&ns.name) {
                leftovers.namespaces.push(ns.name.clone());
            }
        }
        for name in baseline.namespaces.iter().filter(|name| rules.in_scope(name)) {
            let alive = namespaces.iter().any(|ns| ns.name == *name && !ns.terminating);
            if !alive {
                leftovers.missing_baseline.push(name.clone());
            }
        }
        leftovers.custom_resources = self
            .custom_resources(&rules.crd_groups)
            .await?
            .into_iter()
            .filter(|resource| match &resource.namespace {
                Some(namespace) => rules.in_scope(namespace),
                None => rules.namespace_prefix.is_none(),
            })
            .filter(|resource| !baseline.custom_resources.contains(&resource.id()))
            .collect();
        // A namespace outside the baseline, within the scope: the run's.
        let the_runs = |namespace: &str| !baseline.namespaces.contains(namespace) && rules.in_scope(namespace);
        for (config, service_namespaces) in self.webhook_configurations().await? {
            if !baseline.webhook_configurations.contains(&config) && service_namespaces.iter().any(|ns| the_runs(ns)) {
                leftovers.webhook_configurations.push(config);
            }
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client().clone());
        for volume in volumes.list(&ListParams::default()).await?.items {
            let claim_namespace = volume
                .spec
                .as_ref()
                .and_then(|spec| spec.claim_ref.as_ref())
                .and_then(|claim| claim.namespace.as_deref());
            if claim_namespace.is_some_and(the_runs) {
                leftovers.volumes.push(volume.name_any());
            }
        }
        leftovers.namespaces.sort();
        leftovers.volumes.sort();
        leftovers.webhook_configurations.sort();
        Ok(leftovers)
    }

    /// Removes what `leftovers` lists, in this order, all within `timeout`:
    /// webhook configurations (a webhook whose service is gone can refuse the
    /// calls that follow); custom resources (their controllers get
    /// `rules.finalizer_grace` to finish, then their finalizers are removed);
    /// namespaces, waiting until the API no longer lists them; persistent
    /// volumes (finalizers removed after the same grace). Protected
    /// namespaces are never deleted, whatever `leftovers` says.
    ///
    /// Fails with [`KubeError::LeftoversRemain`] (custom resources or
    /// volumes) or [`KubeError::NamespacesRemain`] when something is still
    /// there at the deadline, or with the API's error.
    pub async fn clean_leftovers(
        &self,
        leftovers: &Leftovers,
        rules: &LeftoverRules,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(), KubeError> {
        let deadline = Instant::now() + timeout;
        let client = self.client().clone();

        for config in &leftovers.webhook_configurations {
            let deleted = match config.kind {
                WebhookKind::Mutating => Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .delete(&config.name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
                WebhookKind::Validating => Api::<ValidatingWebhookConfiguration>::all(client.clone())
                    .delete(&config.name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
            };
            match deleted {
                Ok(()) => tracing::info!(%config, "reset: webhook configuration deleted"),
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(err.into()),
            }
        }

        let doomed = leftovers
            .custom_resources
            .iter()
            .map(|resource| {
                let api_resource = resource.api_resource();
                let api = match &resource.namespace {
                    Some(namespace) => Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &api_resource),
                    None => Api::<DynamicObject>::all_with(client.clone(), &api_resource),
                };
                Doomed {
                    api,
                    name: resource.name.clone(),
                    label: resource.id(),
                }
            })
            .collect();
        let still = delete_strip_and_wait(doomed, rules.finalizer_grace, deadline, poll).await?;
        if !still.is_empty() {
            let remaining: Vec<_> = leftovers
                .custom_resources
                .iter()
                .filter(|resource| still.contains(&resource.id()))
                .cloned()
                .collect();
            return Err(KubeError::LeftoversRemain {
                remaining: Box::new(Leftovers {
                    custom_resources: remaining,
                    ..Leftovers::default()
                }),
            });
        }

        let namespaces: Vec<String> = leftovers
            .namespaces
            .iter()
            .filter(|ns| !rules.protected(ns))
            .cloned()
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let deleted = self.delete_namespaces_and_wait(&namespaces, left, poll).await?;
        if !deleted.is_empty() {
            tracing::info!(?deleted, "reset: namespaces deleted and gone");
        }

        let volumes = leftovers
            .volumes
            .iter()
            .map(|name| Doomed {
                api: Api::<PersistentVolume>::all(client.clone()),
                name: name.clone(),
                label: name.clone(),
            })
            .collect();
        let still = delete_strip_and_wait(volumes, rules.finalizer_grace, deadline, poll).await?;
        if !still.is_empty() {
            return Err(KubeError::LeftoversRemain {
                remaining: Box::new(Leftovers {
                    volumes: still,
                    ..Leftovers::default()
                }),
            });
        }
        Ok(())
    }
}

/// The reset after a run: find what the run left ([`KubeApi::find_leftovers`]),
/// clean it ([`KubeApi::clean_leftovers`], within `timeout`), and check again.
///
/// `Ok` only when the cluster matches `baseline` (at once, or after
/// cleaning); [`KubeError::LeftoversRemain`] with what the last check found
/// when it does not (something could not be removed in time, or a baseline
/// namespace is gone); the caller then recreates the cluster. Other errors
/// are the API's.
pub async fn verified_reset(
    api: &KubeApi,
    baseline: &ClusterBaseline,
    rules: &LeftoverRules,
    timeout: Duration,
    poll: Duration,
) -> Result<ResetOutcome, KubeError> {
    let found = api.find_leftovers(baseline, rules).await?;
    if found.is_clean() {
        return Ok(ResetOutcome { found, cleaned: false });
    }
    tracing::info!(leftovers = %found.summary(), "reset: cleaning what the run left");
    match api.clean_leftovers(&found, rules, timeout, poll).await {
        Ok(()) => {}
        Err(err @ (KubeError::LeftoversRemain { .. } | KubeError::NamespacesRemain { .. })) => {
            tracing::warn!(%err, "reset: cleaning did not finish");
        }
        Err(err) => return Err(err),
    }
    let after = api.find_leftovers(baseline, rules).await?;
    if after.is_clean() {
        Ok(ResetOutcome { found, cleaned: true })
    } else {
        Err(KubeError::LeftoversRemain {
            remaining: Box::new(after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(namespace: Option<&str>) -> LeftoverResource {
        LeftoverResource {
            group: "chaos-mesh.org".into(),
            version: "v1alpha1".into(),
            kind: "PodChaos".into(),
            plural: "podchaos".into(),
            namespace: namespace.map(str::to_string),
            name: "kill".into(),
        }
    }

    #[test]
    fn ids_name_the_object_without_its_version() {
        assert_eq!(resource(Some("app")).id(), "podchaos.chaos-mesh.org/app/kill");
        assert_eq!(resource(None).id(), "podchaos.chaos-mesh.org/kill");
    }

    #[test]
    fn summary_lists_each_category_and_clean_when_empty() {
        let mut leftovers = Leftovers::default();
        assert!(leftovers.is_clean());
        assert_eq!(leftovers.summary(), "clean");
        leftovers.namespaces = vec!["a".into(), "b".into()];
        leftovers.custom_resources = vec![resource(Some("a"))];
        leftovers.missing_baseline = vec!["observe".into()];
        assert!(!leftovers.is_clean());
        assert_eq!(
            leftovers.summary(),
            "namespaces (2): a, b; custom resources (1): podchaos.chaos-mesh.org/a/kill; \
             missing baseline namespaces (1): observe"
        );
    }

    #[test]
    fn default_rules_watch_chaos_mesh_and_protect_the_system_namespaces() {
        let rules = LeftoverRules::default();
        assert_eq!(rules.crd_groups, ["chaos-mesh.org"]);
        for ns in PROTECTED_NAMESPACES {
            assert!(rules.protected(ns));
        }
        assert!(!rules.protected("test-social-network"));
        assert!(rules.in_scope("anything"));
    }

    #[test]
    fn a_prefix_limits_the_scope() {
        let rules = LeftoverRules {
            namespace_prefix: Some("aiopslab-rt-".into()),
            ..LeftoverRules::default()
        };
        assert!(rules.in_scope("aiopslab-rt-run-1"));
        assert!(!rules.in_scope("openebs"));
    }
}
