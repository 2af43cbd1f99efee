//! The worker's preflight: on this machine (no Kind) it must name exactly
//! what is missing and how to install it; with the named fakes in place it
//! passes.

mod common;

use std::path::{Path, PathBuf};

use aiopslab_kind::{preflight, which, KindConfig, Requirement};
use common::{fakes_dir, Harness};

/// The interpreter's own executable (a pyenv shim would need bash on PATH).
fn real_python() -> PathBuf {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("the tests need python3 on PATH");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

#[test]
fn on_this_machine_preflight_names_each_missing_tool_and_how_to_install_it() {
    let work = tempfile::tempdir().unwrap();
    let config = KindConfig::builder("worker-001-kind").work_dir(work.path()).build();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let result = preflight(&config);
    let on_path = |tool: &str| which(Path::new(tool), &path).is_some();
    if on_path("kind") && on_path("kubectl") && on_path("helm") && result.is_ok() {
        return; // a fully equipped machine: nothing to name
    }
    let err = result.expect_err("something is missing on this machine");
    let message = err.to_string();
    println!("{message}");
    assert_eq!(err.concerns(Requirement::Kind), !on_path("kind"), "{message}");
    assert_eq!(err.concerns(Requirement::Helm), !on_path("helm"), "{message}");
    assert_eq!(err.concerns(Requirement::Kubectl), !on_path("kubectl"), "{message}");
    if !on_path("kind") {
        assert!(message.contains("`kind` not found on PATH"), "{message}");
        assert!(message.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"));
    }
    if !on_path("helm") {
        assert!(message.contains("https://helm.sh/docs/intro/install/"));
    }
}

#[test]
fn with_nothing_on_path_every_requirement_is_named_with_its_fix() {
    let empty = tempfile::tempdir().unwrap();
    let no_checkout = tempfile::tempdir().unwrap();
    let config = KindConfig::builder("worker-001-kind")
        .work_dir(empty.path().join("work"))
        .python(real_python())
        .aiopslab_dir(no_checkout.path())
        .env("PATH", empty.path().display().to_string())
        .build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    for requirement in [
        Requirement::Kind,
        Requirement::Kubectl,
        Requirement::Helm,
        Requirement::ContainerRuntime,
        Requirement::Aiopslab,
    ] {
        assert!(err.concerns(requirement), "{requirement:?} missing from: {message}");
    }
    assert!(!err.concerns(Requirement::Python), "{message}");
    assert!(
        message.contains("missing or wrong: kind, kubectl, helm, docker, aiopslab"),
        "{message}"
    );
    assert!(message.contains("has no `aiopslab` package directory"), "{message}");
    assert!(message.contains("fix: install kubectl"), "{message}");
}

#[tokio::test]
async fn with_the_fakes_in_place_preflight_passes() {
    let h = Harness::start().await;
    let config = h.builder().python(real_python()).build();
    preflight(&config).unwrap();
}

#[tokio::test]
async fn an_aiopslab_config_that_does_not_say_localhost_is_named() {
    let h = Harness::start().await;
    let checkout = tempfile::tempdir().unwrap();
    let package = checkout.path().join("aiopslab");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), "").unwrap();
    std::fs::write(package.join("config.yml"), "k8s_host: kind\nk8s_user: me\n").unwrap();
    let config = h.builder().python(real_python()).aiopslab_dir(checkout.path()).build();
    let err = preflight(&config).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(err.concerns(Requirement::AiopslabConfig));
    assert!(err.to_string().contains("set `k8s_host: localhost`"), "{err}");

    std::fs::remove_file(package.join("config.yml")).unwrap();
    let err = preflight(&config).unwrap_err();
    assert!(err.to_string().contains("config.yml.example"), "{err}");
}

#[test]
fn bad_cluster_names_and_missing_node_configs_are_named() {
    let work = tempfile::tempdir().unwrap();
    let config = KindConfig::builder("Worker_1")
        .work_dir(work.path())
        .node_config(work.path().join("missing.yaml"))
        .build();
    let err = preflight(&config).unwrap_err();
    assert!(
        err.concerns(Requirement::ClusterName) && err.concerns(Requirement::NodeConfig),
        "{err}"
    );
    let _ = fakes_dir();
}
