//! The worker's preflight: on this machine (no Kind) it must name exactly
//! what is missing and how to install it; with the named fakes in place it
//! passes, and it checks AIOpsLab the way the driver runs it (cleared
//! environment, the driver's user, a throwaway `HOME`): the orchestrator
//! must import, tiktoken's data must be cached, the applications submodule
//! must be there, and a root worker needs `--run-as` (or an explicit
//! `--allow-root-driver`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aiopslab_kind::{preflight, resolve_user, running_as_root, which, KindConfig, Requirement};
use common::{ensure_driver_user, fakes_dir, uid_of, Harness, TIKTOKEN_CL100K_CACHE_FILE};

/// The interpreter's own executable (a pyenv shim would need bash on PATH).
fn real_python() -> PathBuf {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("the tests need python3 on PATH");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// An interpreter (3.11 or 3.12) that `user` can run with an empty
/// environment (the pyenv one under /root cannot be reached by others).
fn python_for(user: &str) -> PathBuf {
    use std::os::unix::process::CommandExt;
    let user = resolve_user(user).unwrap();
    let candidates = [
        real_python(),
        PathBuf::from("/usr/bin/python3.12"),
        PathBuf::from("/usr/bin/python3.11"),
        PathBuf::from("/usr/local/bin/python3.12"),
        PathBuf::from("/usr/local/bin/python3.11"),
        PathBuf::from("/usr/bin/python3"),
    ];
    for python in candidates {
        let output = std::process::Command::new(&python)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .env_clear()
            .current_dir("/")
            .uid(user.uid)
            .gid(user.gid)
            .output();
        if let Ok(output) = output {
            let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && (version == "3.11" || version == "3.12") {
                return python;
            }
        }
    }
    panic!("no Python 3.11/3.12 that user {} can run", user.name);
}

/// Whether `python` has a tiktoken of its own (then the fake tiktoken of the checkout is not the one imported).
fn has_own_tiktoken(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import tiktoken"])
        .env_remove("PYTHONPATH")
        .current_dir("/")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Fails unless the test runs as root (it checks the root-only policy).
fn require_root() {
    assert!(
        running_as_root(),
        "this test checks what a worker running as root must do and needs root (run `cargo test` as root, as CI does)"
    );
}

/// Copies a tree (without `skip` names and `__pycache__`).
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if skip.contains(&name_str.as_ref()) || name_str == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the fake checkout (`tests/fakes/aiopslab`) without `skip`.
fn fake_checkout_copy(skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fakes_dir().join("aiopslab"), dir.path(), skip);
    dir
}

fn tiktoken_file(h: &Harness) -> PathBuf {
    h.root.path().join("tiktoken").join(TIKTOKEN_CL100K_CACHE_FILE)
}

#[test]
fn the_cache_file_name_is_the_sha1_of_the_blob_url_tiktoken_uses() {
    let script = "import hashlib; \
        print(hashlib.sha1(b'https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken').hexdigest())";
    let output = std::process::Command::new(real_python())
        .args(["-c", script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        TIKTOKEN_CL100K_CACHE_FILE
    );
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
    assert_eq!(err.concerns(Requirement::DriverUser), running_as_root(), "{message}");
    if !on_path("kind") {
        assert!(message.contains("`kind` not found on PATH"), "{message}");
        assert!(message.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"));
    }
    if !on_path("helm") {
        assert!(message.contains("https://helm.sh/docs/intro/install/"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().collect();
    assert!(
        leftovers.is_empty(),
        "the throwaway directory is removed: {leftovers:?}"
    );
}

#[test]
fn with_nothing_on_path_every_requirement_is_named_with_its_fix() {
    let empty = tempfile::tempdir().unwrap();
    let no_checkout = tempfile::tempdir().unwrap();
    let config = KindConfig::builder("worker-001-kind")
        .work_dir(empty.path().join("work"))
        .python(real_python())
        .aiopslab_dir(no_checkout.path())
        .tiktoken_cache_dir(empty.path().join("no-tiktoken-cache"))
        .env("PATH", empty.path().display().to_string())
        .build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    let mut expected = vec![
        Requirement::Kind,
        Requirement::Kubectl,
        Requirement::Helm,
        Requirement::ContainerRuntime,
    ];
    if running_as_root() {
        expected.push(Requirement::DriverUser);
    }
    expected.extend([Requirement::Aiopslab, Requirement::TiktokenData]);
    let names: Vec<&str> = expected.iter().map(|r| r.as_str()).collect();
    assert!(
        message.contains(&format!("missing or wrong: {}\n", names.join(", "))),
        "{message}"
    );
    assert!(!err.concerns(Requirement::Python), "{message}");
    assert!(message.contains("has no `aiopslab` package directory"), "{message}");
    assert!(message.contains("fix: install kubectl"), "{message}");
}

#[tokio::test]
async fn with_the_fakes_in_place_preflight_passes_and_reports_how_the_driver_runs() {
    let h = Harness::start().await;
    let config = h.builder().python(real_python()).build();
    let report = preflight(&config).unwrap();
    assert_eq!(report.aiopslab_package, fakes_dir().join("aiopslab").join("aiopslab"));
    assert_eq!(report.tiktoken_cache_file, tiktoken_file(&h));
    assert_eq!(report.driver_user, None);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(report.driver_uid, unsafe { libc::geteuid() });
    assert_eq!(report.python, real_python());
    let leftovers: Vec<_> = std::fs::read_dir(&config.work_dir).unwrap().flatten().collect();
    assert!(
        leftovers.is_empty(),
        "the throwaway directory is removed: {leftovers:?}"
    );
}

#[tokio::test]
async fn missing_tiktoken_data_is_named_and_the_orchestrator_import_is_skipped() {
    let h = Harness::start().await;
    let cache = tempfile::tempdir().unwrap();
    let config = h
        .builder()
        .python(real_python())
        .tiktoken_cache_dir(cache.path())
        .build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 1, "{message}");
    let problem = &err.problems[0];
    assert_eq!(problem.requirement, Requirement::TiktokenData, "{message}");
    let file = cache.path().join(TIKTOKEN_CL100K_CACHE_FILE);
    assert!(
        problem.problem.contains(&format!("not cached at {}", file.display())),
        "{message}"
    );
    assert!(problem.problem.contains("from TIKTOKEN_CACHE_DIR"), "{message}");
    assert!(
        problem.problem.contains("the orchestrator import was not checked"),
        "{message}"
    );
    assert!(
        problem.fix.contains(&format!(
            "TIKTOKEN_CACHE_DIR={} python -c 'import tiktoken; tiktoken.get_encoding(\"cl100k_base\")'",
            cache.path().display()
        )),
        "{message}"
    );
    assert!(
        problem
            .fix
            .contains(&format!("--tiktoken-cache-dir {}", cache.path().display())),
        "{message}"
    );
    // Had the orchestrator been imported, the fake tiktoken would have raised ConnectionError.
    assert!(!err.concerns(Requirement::Aiopslab), "{message}");
}

#[tokio::test]
async fn without_a_cache_dir_tiktoken_s_default_is_looked_up_in_the_driver_s_environment() {
    if std::env::var_os("TIKTOKEN_CACHE_DIR").is_some() || std::env::var_os("DATA_GYM_CACHE_DIR").is_some() {
        eprintln!("skipped: this process sets tiktoken's cache variables");
        return;
    }
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = h
        .builder()
        .python(real_python())
        .env("TMPDIR", tmp.path().display().to_string())
        .build();
    config.tiktoken_cache_dir = None;
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 1, "{message}");
    let expected = tmp.path().join("data-gym-cache").join(TIKTOKEN_CL100K_CACHE_FILE);
    assert!(
        message.contains(&format!("not cached at {}", expected.display())),
        "{message}"
    );
    assert!(message.contains("tiktoken's default"), "{message}");
}

#[tokio::test]
async fn an_aiopslab_without_its_dependencies_is_named_with_the_pip_upgrade_fix() {
    let python = real_python();
    if has_own_tiktoken(&python) {
        eprintln!("skipped: {} has a tiktoken of its own", python.display());
        return;
    }
    let h = Harness::start().await;
    // `import aiopslab` works (its __init__.py is empty), tiktoken is missing.
    let checkout = fake_checkout_copy(&["tiktoken"]);
    let config = h.builder().python(&python).aiopslab_dir(checkout.path()).build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 1, "{message}");
    let problem = &err.problems[0];
    assert_eq!(problem.requirement, Requirement::Aiopslab, "{message}");
    assert!(problem.problem.contains("`import tiktoken` failed"), "{message}");
    assert!(problem.problem.contains("ModuleNotFoundError"), "{message}");
    assert!(
        problem.problem.contains("AIOpsLab's dependencies") && problem.problem.contains("not installed"),
        "{message}"
    );
    assert!(
        problem.fix.contains(&format!(
            "pip install -U pip setuptools wheel && pip install -e {}",
            checkout.path().display()
        )),
        "{message}"
    );
    assert!(problem.fix.contains("importlib==1.0.4"), "{message}");
}

#[tokio::test]
async fn an_orchestrator_that_cannot_import_is_named_with_the_exception_and_the_pip_upgrade_fix() {
    let h = Harness::start().await;
    let checkout = fake_checkout_copy(&[]);
    std::fs::write(
        checkout
            .path()
            .join("aiopslab")
            .join("orchestrator")
            .join("__init__.py"),
        "# a dependency AIOpsLab needs and this interpreter lacks\nimport aiopslab_test_missing_dependency\n",
    )
    .unwrap();
    let config = h.builder().python(real_python()).aiopslab_dir(checkout.path()).build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 1, "{message}");
    let problem = &err.problems[0];
    assert_eq!(problem.requirement, Requirement::Aiopslab, "{message}");
    assert!(
        problem
            .problem
            .contains("`from aiopslab.orchestrator import Orchestrator` failed (PYTHONPATH starts with"),
        "{message}"
    );
    assert!(
        problem
            .problem
            .ends_with("ModuleNotFoundError: No module named 'aiopslab_test_missing_dependency'"),
        "the exception's last line: {message}"
    );
    assert!(
        problem.fix.contains(&format!(
            "pip install -U pip setuptools wheel && pip install -e {}",
            checkout.path().display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn an_empty_or_missing_applications_submodule_is_named() {
    let h = Harness::start().await;
    let checkout = fake_checkout_copy(&["aiopslab-applications"]);
    let config = h.builder().python(real_python()).aiopslab_dir(checkout.path()).build();
    let apps = checkout.path().join("aiopslab-applications");

    let err = preflight(&config).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].requirement, Requirement::AiopslabApplications, "{err}");
    assert!(
        err.to_string().contains(&format!("{} is missing", apps.display())),
        "{err}"
    );

    std::fs::create_dir(&apps).unwrap();
    let err = preflight(&config).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let problem = &err.problems[0];
    assert_eq!(problem.requirement, Requirement::AiopslabApplications, "{err}");
    assert!(
        problem.problem.contains(&format!("{} is empty", apps.display())),
        "{err}"
    );
    assert!(
        problem.fix.contains(&format!(
            "git -C {} submodule update --init --recursive",
            checkout.path().display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn an_aiopslab_config_that_does_not_say_localhost_is_named() {
    let h = Harness::start().await;
    let checkout = fake_checkout_copy(&[]);
    let package = checkout.path().join("aiopslab");
    std::fs::write(
        package.join("config.yml"),
        "k8s_host: kind\nk8s_user: me\ndata_dir: data\n",
    )
    .unwrap();
    let config = h.builder().python(real_python()).aiopslab_dir(checkout.path()).build();
    let err = preflight(&config).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(err.concerns(Requirement::AiopslabConfig));
    assert!(err.to_string().contains("set `k8s_host: localhost`"), "{err}");

    std::fs::remove_file(package.join("config.yml")).unwrap();
    let err = preflight(&config).unwrap_err();
    assert!(err.concerns(Requirement::AiopslabConfig), "{err}");
    assert!(err.to_string().contains("config.yml.example"), "{err}");
}

#[tokio::test]
async fn a_root_worker_without_run_as_is_refused_with_the_fix() {
    require_root();
    let h = Harness::start().await;
    let config = h.builder().python(real_python()).allow_driver_as_root(false).build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 1, "{message}");
    let problem = &err.problems[0];
    assert_eq!(problem.requirement, Requirement::DriverUser, "{message}");
    assert!(problem.problem.contains("read every secret"), "{message}");
    assert!(
        problem
            .fix
            .contains("useradd --system --create-home --shell /usr/sbin/nologin aiopslab-driver"),
        "{message}"
    );
    assert!(problem.fix.contains("--run-as aiopslab-driver"), "{message}");
    assert!(problem.fix.contains("--allow-root-driver"), "{message}");
}

#[tokio::test]
async fn an_unknown_run_as_user_is_named() {
    let h = Harness::start().await;
    let config = h
        .builder()
        .python(real_python())
        .run_as(Some("no-such-aiopslab-user".into()))
        .build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    assert!(err.concerns(Requirement::DriverUser), "{message}");
    assert!(
        message.contains("there is no user \"no-such-aiopslab-user\""),
        "{message}"
    );
    assert!(
        message.contains("useradd --system --create-home --shell /usr/sbin/nologin no-such-aiopslab-user"),
        "{message}"
    );
}

#[tokio::test]
async fn as_an_unprivileged_run_as_user_the_probes_run_as_that_user_and_pass() {
    let user = ensure_driver_user();
    let h = Harness::start().await;
    h.open_to_driver_user();
    let python = python_for(&user);
    let config = h.builder().python(&python).run_as(Some(user.clone())).build();
    let report = preflight(&config).unwrap_or_else(|err| panic!("{err}"));
    let uid = uid_of(&user);
    assert_eq!(report.driver_uid, uid, "the import probe ran as {user}");
    assert_eq!(report.driver_user.as_ref().map(|u| u.uid), Some(uid));
    assert_eq!(report.python, python);
    // The work dir it made is the driver user's, and the throwaway directory is gone.
    let meta = std::fs::metadata(&config.work_dir).unwrap();
    assert_eq!(meta.uid(), uid);
    let leftovers: Vec<_> = std::fs::read_dir(&config.work_dir).unwrap().flatten().collect();
    assert!(
        leftovers.is_empty(),
        "the throwaway directory is removed: {leftovers:?}"
    );
}

#[tokio::test]
async fn a_run_as_user_that_cannot_write_the_work_dir_or_read_the_checkout_is_named() {
    let user = ensure_driver_user();
    let h = Harness::start().await;
    h.open_to_driver_user();
    let python = python_for(&user);
    // A work dir made by root beforehand (0755): the driver user cannot write it.
    let work_dir = h.root.path().join("work");
    std::fs::create_dir_all(&work_dir).unwrap();
    std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A checkout the driver user cannot read.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let checkout = private.path().join("AIOpsLab");
    copy_tree(&fakes_dir().join("aiopslab"), &checkout, &[]);
    std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = h
        .builder()
        .python(&python)
        .run_as(Some(user.clone()))
        .aiopslab_dir(&checkout)
        .build();
    let err = preflight(&config).unwrap_err();
    let message = err.to_string();
    let work = err
        .problems
        .iter()
        .find(|p| p.requirement == Requirement::WorkDir)
        .unwrap_or_else(|| panic!("no work dir problem: {message}"));
    assert!(
        work.problem.contains(&format!("the driver user {user}")) && work.problem.contains("cannot write"),
        "{message}"
    );
    assert!(
        work.fix.contains(&format!("chown -R {user} {}", work_dir.display())),
        "{message}"
    );
    let aiopslab = err
        .problems
        .iter()
        .find(|p| p.requirement == Requirement::Aiopslab)
        .unwrap_or_else(|| panic!("no aiopslab problem: {message}"));
    assert!(
        aiopslab.problem.contains(&format!("as the driver user {user}")),
        "{message}"
    );
    assert!(aiopslab.fix.contains(&format!("let {user} read")), "{message}");
    let leftovers: Vec<_> = std::fs::read_dir(&work_dir).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "nothing left in the work dir: {leftovers:?}");
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
}
