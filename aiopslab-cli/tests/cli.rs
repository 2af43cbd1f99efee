//! The client commands end to end: the real `aiopslab` binary against a real `aiopslab serve` (embedded store,
//! two simulated workers, 3-step episodes), each command's output and exit code as a script sees them (stdout
//! is a pipe here, so tables and plain lines, no bars or colours unless forced).

mod support;

use serde_json::Value;
use support::{free_port, is_uuid, Server, PROBLEM};

/// A problem id the catalog does not have: the server accepts it, and a simulated worker fails it at once.
const UNKNOWN_PROBLEM: &str = "misconfig_app_hotel_res-detection-8";

#[test]
fn submit_prints_the_ids_single_and_batch() {
    let server = Server::with(&["--workers", "0"], &[]);
    let one = server.ok(&[
        "submit",
        PROBLEM,
        "--model",
        "gpt-4o-mini",
        "--priority",
        "7",
        "--metadata",
        "run=a",
    ]);
    assert_eq!(one.lines().len(), 1, "{one:?}");
    assert!(is_uuid(one.lines()[0]), "{one:?}");
    let task = server.json(&["show", one.lines()[0]]);
    assert_eq!(task["parameters"]["agent_config"]["model"], "gpt-4o-mini");
    assert_eq!(task["parameters"]["priority"], 7);
    assert_eq!(task["parameters"]["metadata"]["run"], "a");
    assert_eq!(task["status"], "pending");

    let batch = server.ok(&["submit", PROBLEM, "--count", "3"]);
    assert_eq!(batch.lines().len(), 3, "{batch:?}");
    assert!(batch.lines().iter().all(|line| is_uuid(line)), "{batch:?}");
    assert!(batch.stderr.contains("created 3 tasks in group"), "{batch:?}");

    let created = server.json(&["submit", PROBLEM, "--count", "2", "--max-steps", "5"]);
    let tasks = created["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2);
    let group = created["group_id"].as_str().expect("a batch is a group");
    assert!(tasks
        .iter()
        .all(|t| t["group_id"] == group && t["parameters"]["max_steps"] == 5));
    assert_eq!(created["replayed"], false);

    // An idempotency key: the same request again creates nothing; another request under it is refused.
    let first = server.ok(&["submit", PROBLEM, "--count", "2", "--idempotency-key", "k-1"]);
    let again = server.ok(&["submit", PROBLEM, "--count", "2", "--idempotency-key", "k-1"]);
    assert_eq!(first.stdout, again.stdout);
    assert!(again.stderr.contains("replayed"), "{again:?}");
    let other = server.run(&["submit", PROBLEM, "--count", "3", "--idempotency-key", "k-1"]);
    assert_eq!(other.code, 3, "{other:?}");
    assert!(
        other.stderr.contains("idempotency_conflict") && other.stderr.contains("HTTP 409"),
        "{other:?}"
    );
    assert!(other.stdout.is_empty(), "{other:?}");

    // A problem the catalog lacks is accepted, with a warning on stderr only.
    let unknown = server.ok(&["submit", UNKNOWN_PROBLEM]);
    assert!(is_uuid(unknown.stdout.trim()), "{unknown:?}");
    assert!(unknown.stderr.contains("not in the AIOpsLab catalog"), "{unknown:?}");
}

#[test]
fn tasks_lists_a_table_and_pages() {
    let server = Server::with(&["--workers", "0"], &[]);
    let ids: Vec<String> = (0..3).map(|_| server.submit(PROBLEM)).collect();
    let table = server.ok(&["tasks"]);
    let lines = table.lines();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PROBLEM", "STATUS", "PRI", "WORKER", "ATTEMPT", "CREATED", "GROUP"]
    );
    for id in &ids {
        let row = lines
            .iter()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} in {table:?}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[1..4], [PROBLEM, "pending", "5"], "{row}");
    }
    // Aligned: every row's status starts in the header's STATUS column.
    let column = lines[0].find("STATUS").expect("STATUS column");
    assert!(
        lines[1..4].iter().all(|l| l[column..].starts_with("pending")),
        "{table:?}"
    );
    assert_eq!(lines.last(), Some(&"tasks 1-3 of 3"));

    let page = server.ok(&["tasks", "--limit", "1", "--sort", "created_at"]);
    assert!(page.lines()[1].starts_with(ids[0].as_str()), "{page:?}");
    assert_eq!(page.lines().last(), Some(&"tasks 1-1 of 3 (next page: --offset 1)"));
    let listed = server.json(&["tasks", "--status", "pending", "--problem", PROBLEM]);
    assert_eq!(listed["total"], 3);
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(3));
    let none = server.ok(&["tasks", "--status", "completed"]);
    assert_eq!(none.stdout.trim(), "no tasks match (total 0)");
}

#[test]
fn show_logs_and_a_followed_log_that_ends_at_the_end_event() {
    let server = Server::start();
    let id = server.submit(PROBLEM);
    // Followed from the start: every step, then the end event ends the command.
    let followed = server.ok(&["logs", &id, "--follow"]);
    for step in ["step 1/3", "step 2/3", "step 3/3"] {
        assert_eq!(followed.stdout.matches(step).count(), 1, "{step} in {followed:?}");
    }
    assert!(
        followed.stderr.contains(&format!("task {id} ended: completed")),
        "{followed:?}"
    );
    assert!(followed
        .lines()
        .iter()
        .all(|l| l.contains(" INFO ") || l.contains(" DEBUG ") || l.contains(" WARNING ")));
    assert!(!followed.stdout.contains('\u{1b}'), "no colour on a pipe: {followed:?}");

    // The same log read afterwards, plain and as JSON Lines.
    let read = server.ok(&["logs", &id]);
    assert_eq!(read.stdout, followed.stdout);
    let entries: Vec<Value> = server
        .ok(&["logs", &id, "--json"])
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(entries.len(), read.lines().len());
    assert!(entries.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    let followed_json = server.ok(&["logs", &id, "--follow", "--json"]);
    assert_eq!(followed_json.lines().len(), entries.len());
    let tail = server.ok(&["logs", &id, "--after-id", &entries[1]["id"].to_string()]);
    assert_eq!(tail.lines().len(), entries.len() - 2);
    // Coloured by level when asked to (CLICOLOR_FORCE stands in for a terminal).
    let coloured = server.run_with(&["logs", &id], &[("CLICOLOR_FORCE", "1")]);
    assert!(coloured.stdout.contains("\u{1b}[32mINFO"), "{coloured:?}");

    let shown = server.ok(&["show", &id, "--logs"]);
    let field = |name: &str| {
        shown
            .lines()
            .into_iter()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("{name} in {shown:?}"))
    };
    assert_eq!(field("id"), id);
    assert_eq!(field("status"), "completed");
    assert!(field("worker").starts_with("worker-00"), "{shown:?}");
    assert!(field("reward").parse::<f64>().is_ok(), "{shown:?}");
    assert!(field("metrics").contains("\"steps_taken\":3"), "{shown:?}");
    assert!(
        shown.stdout.contains("result log:") && shown.stdout.contains("step 3/3"),
        "{shown:?}"
    );
    let as_json = server.json(&["show", &id, "--logs"]);
    assert_eq!(as_json["id"], id.as_str());
    assert!(as_json["reward"].is_number(), "{as_json}");
    assert_eq!(as_json["logs"].as_array().map(Vec::len), Some(entries.len()));
    assert!(server.json(&["show", &id]).get("logs").is_none());

    // Following a task that does not exist: the server's 404.
    let missing = server.run(&["logs", "00000000-0000-0000-0000-0000000000aa", "--follow"]);
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(
        missing.stderr.contains("not found (HTTP 404, not_found)"),
        "{missing:?}"
    );
}

#[test]
fn a_followed_log_whose_server_dies_ends_as_a_connection_error() {
    let mut server = Server::with(
        &["--workers", "1", "--sim-steps", "3", "--sim-step-delay-ms", "1000"],
        &[],
    );
    let id = server.submit(PROBLEM);
    let mut follow = server.spawn(&["logs", &id, "--follow"]);
    // The first entry has been printed: the stream is open.
    let mut first = String::new();
    let stdout = follow.stdout.take().expect("piped stdout");
    let mut reader = std::io::BufReader::new(stdout);
    std::io::BufRead::read_line(&mut reader, &mut first).expect("a first log line");
    assert!(first.contains("Starting simulated run"), "{first:?}");
    server.kill();
    let run = support::finish(follow, std::time::Duration::from_secs(20));
    // The cut stream is reopened once, which finds nobody: exit 4, saying so.
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("reconnecting"), "{run:?}");
    assert!(
        run.stderr.contains("error: no answer from the server: cannot connect"),
        "{run:?}"
    );
}

#[test]
fn watch_exits_0_when_all_completed_and_1_when_one_failed() {
    let server = Server::start();
    let batch = server.json(&["submit", PROBLEM, "--count", "3"]);
    let group = batch["group_id"].as_str().expect("group").to_string();
    let watched = server.run(&["watch", "--group", &group, "--interval-ms", "50"]);
    assert_eq!(watched.code, 0, "{watched:?}");
    let lines = watched.lines();
    assert!(lines[0].starts_with("watching 3 tasks: "), "{watched:?}");
    for task in batch["tasks"].as_array().expect("tasks") {
        let id = task["id"].as_str().expect("id");
        let ended = lines
            .iter()
            .find(|l| l.starts_with(&format!("{id} completed: reward ")))
            .unwrap_or_else(|| panic!("{id} completed in {watched:?}"));
        assert!(ended.ends_with("3 steps"), "{ended}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress: 3/3 ended (3 completed; mean reward ")),
        "{watched:?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("done: 3 tasks: 3 completed; mean reward ")),
        "{watched:?}"
    );

    // One of two fails (a problem the simulated backend does not know): exit 1, saying why.
    let good = server.submit(PROBLEM);
    let bad = server.submit(UNKNOWN_PROBLEM);
    let watched = server.run(&["watch", &good, &bad, "--interval-ms", "50"]);
    assert_eq!(watched.code, 1, "{watched:?}");
    assert!(watched.stdout.contains(&format!("{good} completed")), "{watched:?}");
    assert!(
        watched.stdout.contains(&format!("{bad} failed: unknown_problem: ")),
        "{watched:?}"
    );
    assert!(
        watched
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("done: 2 tasks: 1 completed, 1 failed")),
        "{watched:?}"
    );

    // --json: the summary only.
    let json = server.run(&["watch", &good, &bad, "--json"]);
    assert_eq!(json.code, 1, "{json:?}");
    let summary: Value = serde_json::from_str(&json.stdout).expect("a JSON summary and nothing else");
    assert_eq!(summary["all_completed"], false);
    assert_eq!(summary["by_status"]["completed"], 1);
    assert_eq!(summary["by_status"]["failed"], 1);
    let failed = summary["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == bad.as_str()).cloned());
    assert_eq!(
        failed.map(|t| t["error"]["code"].clone()),
        Some(Value::from("unknown_problem"))
    );

    // Nothing pending or running: nothing to watch.
    let idle = server.run(&["watch"]);
    assert_eq!(idle.code, 0, "{idle:?}");
    assert!(idle.stderr.contains("nothing to watch"), "{idle:?}");
    // An unknown group: the server's 404.
    let unknown = server.run(&["watch", "--group", "00000000-0000-0000-0000-0000000000bb"]);
    assert_eq!(unknown.code, 3, "{unknown:?}");
    assert!(unknown.stderr.contains("not_found"), "{unknown:?}");
}

#[test]
fn cancel_a_pending_and_a_running_task() {
    // One worker and 1 s steps: the first task stays running long enough to be cancelled, the second waits.
    let server = Server::with(
        &["--workers", "1", "--sim-steps", "3", "--sim-step-delay-ms", "1000"],
        &[],
    );
    let running = server.submit(PROBLEM);
    server.wait_for_status(&running, "running");
    let pending = server.submit(PROBLEM);
    let cancelled = server.json(&["cancel", &pending]);
    assert_eq!(cancelled, serde_json::json!([{"id": pending, "outcome": "cancelled"}]));
    let requested = server.ok(&["cancel", &running]);
    assert_eq!(
        requested.stdout.trim(),
        format!("{running}: cancel requested: it is running, its worker stops it and reports it cancelled")
    );
    // The worker stops it; watch sees it end cancelled: not all completed.
    let watched = server.run(&["watch", &running, &pending, "--interval-ms", "50"]);
    assert_eq!(watched.code, 1, "{watched:?}");
    assert!(watched.stdout.contains(&format!("{running} cancelled")), "{watched:?}");
    assert!(
        watched
            .lines()
            .last()
            .is_some_and(|l| l == &"done: 2 tasks: 2 cancelled"),
        "{watched:?}"
    );
    // The cancelled run is an episode of its own outcome (the pending one never ran: no trajectory), which the
    // default export (valid episodes only) leaves out.
    let cancelled = server.ok(&["export", "-o", "-", "--outcome", "cancelled"]);
    let line: Value = serde_json::from_str(cancelled.stdout.trim()).expect("one JSON line");
    assert_eq!(line["task_id"], running.as_str());
    assert_eq!(line["outcome"], "cancelled");
    assert_eq!(line["reward"], Value::Null, "a cancelled episode is not scored");
    let default = server.ok(&["export", "-o", "-"]);
    assert!(default.stdout.is_empty(), "{default:?}");
    // A terminal task cannot be cancelled: the server's 409.
    let again = server.run(&["cancel", &running]);
    assert_eq!(again.code, 3, "{again:?}");
    assert!(
        again.stderr.contains(&format!(
            "task {running} is already cancelled (HTTP 409, already_terminal)"
        )),
        "{again:?}"
    );
}

#[test]
fn workers_and_problems() {
    let server = Server::start();
    let table = server.ok(&["workers"]);
    let lines = table.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID",
            "STATUS",
            "BACKEND",
            "CURRENT",
            "TASK",
            "COMPLETED",
            "FAILED",
            "LAST",
            "HEARTBEAT"
        ]
    );
    for id in ["worker-001-simulated", "worker-002-simulated"] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in {table:?}"));
        assert_eq!(row.split_whitespace().nth(2), Some("default"), "{row}");
    }
    let page = server.json(&["workers", "--status", "idle"]);
    assert_eq!(page["workers"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(
        server.json(&["workers", "--status", "offline"])["workers"],
        serde_json::json!([])
    );

    let detection = server.ok(&["problems", "--task-type", "detection"]);
    let expected = aiopslab_core::catalog::filter(None, Some(aiopslab_core::TaskType::Detection)).count();
    let rows = &detection.lines()[1..detection.lines().len() - 1];
    assert_eq!(rows.len(), expected, "{detection:?}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().nth(2) == Some("detection")),
        "{detection:?}"
    );
    assert!(rows.iter().any(|r| r.starts_with(PROBLEM)));
    assert_eq!(detection.lines().last(), Some(&format!("{expected} problems").as_str()));
    let all = server.json(&["problems"]);
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(aiopslab_core::catalog::PROBLEMS.len())
    );
    let hotel = server.json(&[
        "problems",
        "--application",
        "HotelReservation",
        "--task-type",
        "mitigation",
    ]);
    assert!(hotel.as_array().is_some_and(|p| !p.is_empty()
        && p.iter()
            .all(|p| p["application"] == "HotelReservation" && p["task_type"] == "mitigation")));
}

#[test]
fn export_writes_one_json_line_per_episode() {
    let server = Server::start();
    let batch = server.json(&["submit", PROBLEM, "--count", "3", "--model", "m-export"]);
    let group = batch["group_id"].as_str().expect("group").to_string();
    server.ok(&["watch", "--group", &group, "--interval-ms", "50"]);

    let dir = std::env::temp_dir().join(format!("aiopslab-cli-export-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let file = dir.join("episodes.jsonl");
    let path = file.to_string_lossy().into_owned();
    let written = server.ok(&["export", "-o", &path, "--status", "completed", "--model", "m-export"]);
    assert!(
        written.stdout.starts_with(&format!("exported 3 episodes to {path} (")),
        "{written:?}"
    );
    let text = std::fs::read_to_string(&file).expect("the export");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["group_id"], group.as_str());
        assert_eq!(line["status"], "completed");
        assert!(
            line["reward"].is_number() && line["messages"].as_array().is_some_and(|m| m.len() > 2),
            "{line}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        [std::ffi::OsString::from("episodes.jsonl")],
        "no partial file left"
    );

    let summary = server.json(&["export", "-o", &path, "--task-type", "detection", "--limit", "2"]);
    assert_eq!(summary["episodes"], 2);
    assert_eq!(std::fs::read_to_string(&file).expect("the export").lines().count(), 2);
    // To stdout: the lines there, the count on stderr.
    let piped = server.ok(&["export", "-o", "-", "--metadata", "nobody:here"]);
    assert!(
        piped.stdout.is_empty() && piped.stderr.contains("exported 0 episodes"),
        "{piped:?}"
    );
    let piped = server.ok(&["export", "-o", "-", "--created-after", "2000-01-01T00:00:00Z"]);
    assert_eq!(piped.lines().len(), 3, "valid episodes only by default: {piped:?}");
    assert!(piped.lines().iter().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    let every = server.ok(&["export", "-o", "-", "--outcome", "all"]);
    assert_eq!(every.lines().len(), 3, "{every:?}");
    let two = server.ok(&["export", "-o", "-", "--outcome", "valid,aborted", "--limit", "2"]);
    assert_eq!(two.lines().len(), 2, "{two:?}");
    // A refused filter leaves no file behind.
    let refused = server.run(&[
        "export",
        "-o",
        &dir.join("no.jsonl").to_string_lossy(),
        "--problem",
        &"x".repeat(300),
    ]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("invalid_query"), "{refused:?}");
    assert!(!dir.join("no.jsonl").exists() && !dir.join("no.jsonl.partial").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refusals_usage_errors_and_an_unreachable_server() {
    let server = Server::with(&["--workers", "0"], &[("AIOPSLAB_CLIENT_TOKEN", "s3cret")]);
    // No token: the server's 401, with where the token comes from.
    let refused = server.run(&["tasks"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("HTTP 401"), "{refused:?}");
    assert!(refused.stderr.contains("set AIOPSLAB_CLIENT_TOKEN"), "{refused:?}");
    assert!(refused.stdout.is_empty());
    // The token from the environment: accepted, and never printed.
    let with_token = server.run_with(&["submit", PROBLEM, "--json"], &[("AIOPSLAB_CLIENT_TOKEN", "s3cret")]);
    assert_eq!(with_token.code, 0, "{with_token:?}");
    let created: Value = serde_json::from_str(&with_token.stdout).expect("JSON");
    assert!(!with_token.stdout.contains("s3cret") && !with_token.stderr.contains("s3cret"));
    let id = created["tasks"][0]["id"].as_str().expect("id").to_string();
    let wrong = server.run_with(&["show", &id], &[("AIOPSLAB_CLIENT_TOKEN", "nope")]);
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(
        wrong.stderr.contains("HTTP 401") && !wrong.stderr.contains("nope"),
        "{wrong:?}"
    );

    // An unknown task: the server's message and code.
    let open = Server::with(&["--workers", "0"], &[]);
    let missing = open.run(&["show", "00000000-0000-0000-0000-000000000001"]);
    assert_eq!(missing.code, 3, "{missing:?}");
    assert_eq!(
        missing.stderr.trim(),
        "error: task 00000000-0000-0000-0000-000000000001 not found (HTTP 404, not_found)"
    );

    // Usage errors: exit 2, nothing sent.
    for args in [
        vec!["submit", PROBLEM, "--max-steps", "0"],
        vec!["submit", PROBLEM, "--metadata", "novalue"],
        vec!["submit", PROBLEM, "--agent-config", "[1]"],
        vec!["tasks", "--status", "done"],
        vec!["tasks", "--limit", "101"],
        vec!["show", "not-a-uuid"],
        vec!["export", "-o", "-", "--json"],
        vec!["export", "-o", "-", "--created-after", "yesterday"],
        vec!["export", "-o", "-", "--outcome", "great"],
        vec![
            "logs",
            "00000000-0000-0000-0000-000000000001",
            "--follow",
            "--limit",
            "3",
        ],
    ] {
        let run = open.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    assert_eq!(
        open.json(&["tasks"])["total"],
        0,
        "nothing was created by the usage errors"
    );

    // Nobody listening: a connection error, exit 4.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let unreachable = open.run(&["tasks", "--server", &closed]);
    assert_eq!(unreachable.code, 4, "{unreachable:?}");
    let stderr = &unreachable.stderr;
    assert!(
        stderr.starts_with("error: no answer from the server: cannot connect"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Connection refused") && stderr.contains("--server"),
        "{stderr}"
    );
    let bad_url = open.run(&["workers", "--server", "ftp://example"]);
    assert_eq!(bad_url.code, 2, "{bad_url:?}");
}
