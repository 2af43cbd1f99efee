//! `aiopslab tasks` (one page of `GET /tasks` as a table), `aiopslab show ID` (one task: parameters, result,
//! reward, error, optionally its log) and `aiopslab cancel ID...` (`DELETE /tasks/{id}`).

use std::process::ExitCode;

use aiopslab_core::{
    CancelOutcome, LogEntry, LogQuery, Page, Task, TaskFilter, TaskId, TaskQuery, TaskSort, TaskStatus,
};
use aiopslab_http::client::ApiClient;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::output::{log_line, maybe_time, print_json, print_table, reward, table, time};
use super::{parse, CliError, Connection};

/// `aiopslab tasks --help`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks in this status.
    #[arg(long, value_parser = parse::task_status())]
    pub status: Option<TaskStatus>,
    /// Only tasks of this problem.
    #[arg(long = "problem", value_name = "PROBLEM_ID")]
    pub problem_id: Option<String>,
    /// Only tasks held (or last held) by this worker.
    #[arg(long = "worker", value_name = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Only tasks of this batch group.
    #[arg(long = "group", value_name = "GROUP_ID")]
    pub group_id: Option<uuid::Uuid>,
    /// Only tasks of this backend type.
    #[arg(long)]
    pub backend_type: Option<String>,
    /// How many tasks, 1-100.
    #[arg(long, default_value_t = Page::DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=i64::from(Page::MAX_LIMIT)))]
    pub limit: u32,
    /// How many to skip (the next page: --offset LIMIT).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// The order.
    #[arg(long, default_value = "-created_at", value_parser = parse::task_sort())]
    pub sort: TaskSort,
    #[command(flatten)]
    pub connection: Connection,
}

/// Runs `aiopslab tasks`.
pub async fn list(args: TasksArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let filter = TaskFilter::default()
        .with_status(args.status)
        .with_problem_id(args.problem_id)
        .with_worker_id(args.worker_id)
        .with_group_id(args.group_id)
        .with_backend_type(args.backend_type);
    let page = Page {
        limit: args.limit,
        offset: args.offset,
    };
    let answer = client
        .list_tasks(&TaskQuery::new(filter).sorted(args.sort).page(page))
        .await?;
    if args.connection.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    if answer.tasks.is_empty() {
        println!("no tasks match (total {})", answer.total);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&[
        "ID", "PROBLEM", "STATUS", "PRI", "WORKER", "ATTEMPT", "CREATED", "GROUP",
    ]);
    for task in &answer.tasks {
        rows.add_row(vec![
            task.id.to_string(),
            task.problem_id.clone(),
            task.status.to_string(),
            task.parameters.priority.to_string(),
            task.worker_id.clone().unwrap_or_else(|| "-".into()),
            task.attempt.to_string(),
            time(task.created_at),
            task.group_id.map_or_else(|| "-".into(), |g| g.to_string()),
        ]);
    }
    print_table(&rows)?;
    let first = answer.offset + 1;
    let last = answer.offset + answer.tasks.len() as u64;
    let about = if answer.total_is_estimate { "about " } else { "" };
    let more = if last < answer.total {
        format!(" (next page: --offset {last})")
    } else {
        String::new()
    };
    println!("tasks {first}-{last} of {about}{}{more}", answer.total);
    Ok(ExitCode::SUCCESS)
}

/// `aiopslab show --help`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The task id.
    pub id: TaskId,
    /// Also print the task's log.
    #[arg(long)]
    pub logs: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `show --json`: the task as the API serves it, with its reward and (with --logs) its log.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    task: &'a Task,
    /// The trajectory's reward, once there is one.
    reward: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<&'a [LogEntry]>,
}

/// Runs `aiopslab show`.
pub async fn show(args: ShowArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let task = client.get_task(args.id).await?;
    let reward = task_reward(&client, &task).await?;
    let logs = if args.logs {
        Some(client.get_logs(task.id, &LogQuery::default()).await?)
    } else {
        None
    };
    if args.connection.json {
        print_json(&Shown {
            task: &task,
            reward,
            logs: logs.as_deref(),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&task_fields(&task, reward))?;
    if let Some(result) = &task.result {
        if !result.logs.is_empty() {
            println!("\nresult log:");
            for line in &result.logs {
                println!("  {line}");
            }
        }
    }
    if let Some(logs) = logs {
        println!("\nlog ({} entries):", logs.len());
        for entry in &logs {
            anstream::println!("  {}", log_line(entry));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A task's reward: its trajectory's, when it has one (a pending task has none yet).
pub async fn task_reward(client: &ApiClient, task: &Task) -> Result<Option<f64>, CliError> {
    if task.status == TaskStatus::Pending {
        return Ok(None);
    }
    Ok(client.get_trajectory(task.id).await?.and_then(|t| t.reward))
}

/// The fields of a task as a two-column table.
fn task_fields(task: &Task, reward_value: Option<f64>) -> comfy_table::Table {
    let p = &task.parameters;
    let mut fields = table(&[]);
    let mut add = |name: &str, value: String| {
        fields.add_row(vec![name.to_string(), value]);
    };
    add("id", task.id.to_string());
    add("problem", task.problem_id.clone());
    add("status", task.status.to_string());
    add("group", task.group_id.map_or_else(|| "-".into(), |g| g.to_string()));
    add("worker", task.worker_id.clone().unwrap_or_else(|| "-".into()));
    add(
        "attempt",
        format!("{} (retries allowed: {})", task.attempt, p.max_retries),
    );
    add("agent config", Value::Object(p.agent_config.clone()).to_string());
    add("max steps", p.max_steps.to_string());
    add("timeout", format!("{} min", p.timeout_minutes));
    add("priority", p.priority.to_string());
    add("backend type", p.backend_type.clone());
    if !p.metadata.is_empty() {
        add("metadata", Value::Object(p.metadata.clone()).to_string());
    }
    if let Some(url) = &p.callback_url {
        add("callback url", url.clone());
    }
    add("created", time(task.created_at));
    add("started", maybe_time(task.started_at));
    add("completed", maybe_time(task.completed_at));
    if task.cancel_requested && !task.status.is_terminal() {
        add("cancel", "requested; the worker is stopping it".into());
    }
    add("reward", reward(reward_value));
    if let Some(result) = &task.result {
        if !result.output.is_empty() {
            add("output", Value::Object(result.output.clone()).to_string());
        }
        if !result.metrics.is_empty() {
            add("metrics", Value::Object(result.metrics.clone()).to_string());
        }
    }
    if let Some(error) = &task.error_details {
        add("error", format!("{}: {}", error.code, error.message));
    }
    fields
}

/// `aiopslab cancel --help`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The tasks to cancel.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<TaskId>,
    #[command(flatten)]
    pub connection: Connection,
}

/// One line of `cancel --json`.
#[derive(Serialize)]
struct Cancelled {
    id: TaskId,
    /// `cancelled` (it was pending) or `cancel_requested` (it is running; its worker stops it).
    outcome: CancelOutcome,
}

/// Runs `aiopslab cancel`: each task in turn; the first refusal (a terminal task: 409) stops there.
pub async fn cancel(args: CancelArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let mut done = Vec::new();
    for id in args.ids {
        let outcome = client.cancel_task(id).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                if args.connection.json && !done.is_empty() {
                    print_json(&done)?;
                }
                return Err(error.into());
            }
        };
        if !args.connection.json {
            let human = match outcome {
                CancelOutcome::Cancelled => "cancelled (it was pending)",
                CancelOutcome::CancelRequested => {
                    "cancel requested: it is running, its worker stops it and reports it cancelled"
                }
            };
            println!("{id}: {human}");
        }
        done.push(Cancelled { id, outcome });
    }
    if args.connection.json {
        print_json(&done)?;
    }
    Ok(ExitCode::SUCCESS)
}
