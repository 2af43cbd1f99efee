//! `aiopslab workers` (the fleet, `GET /workers`) and `aiopslab problems` (the catalog, `GET /problems`), as
//! tables or, with `--json`, as the server's answer.

use std::process::ExitCode;

use aiopslab_core::catalog::{Application, TaskType};
use aiopslab_core::{WorkerFilter, WorkerStatus};
use clap::Args;

use super::output::{print_json, print_table, say, table, time};
use super::{parse, CliError, Connection};

/// `aiopslab workers --help`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Only workers in this status.
    #[arg(long, value_parser = parse::worker_status())]
    pub status: Option<WorkerStatus>,
    /// Only workers of this backend type.
    #[arg(long)]
    pub backend_type: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// Runs `aiopslab workers`.
pub async fn workers(args: WorkersArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let filter = WorkerFilter::default()
        .with_status(args.status)
        .with_backend_type(args.backend_type);
    let page = client.list_workers(&filter).await?;
    if args.connection.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.workers.is_empty() {
        say("no workers (is one running? `aiopslab serve --workers N` or `aiopslab worker`)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&[
        "ID",
        "STATUS",
        "BACKEND",
        "CURRENT TASK",
        "COMPLETED",
        "FAILED",
        "LAST HEARTBEAT",
    ]);
    for worker in &page.workers {
        rows.add_row(vec![
            worker.id.clone(),
            worker.status.as_str().to_string(),
            worker.backend_type.clone(),
            worker.current_task_id.map_or_else(|| "-".into(), |id| id.to_string()),
            worker.tasks_completed.to_string(),
            worker.tasks_failed.to_string(),
            time(worker.last_heartbeat),
        ]);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

/// `aiopslab problems --help`.
#[derive(Debug, Args)]
pub struct ProblemsArgs {
    /// Only problems of this task type.
    #[arg(long, value_parser = parse::task_type())]
    pub task_type: Option<TaskType>,
    /// Only problems of this application.
    #[arg(long, value_parser = parse::application())]
    pub application: Option<Application>,
    #[command(flatten)]
    pub connection: Connection,
}

/// Runs `aiopslab problems`.
pub async fn problems(args: ProblemsArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let problems = client.list_problems(args.task_type, args.application).await?;
    if args.connection.json {
        print_json(&problems)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&["ID", "APPLICATION", "TASK TYPE", "FAULT"]);
    for problem in &problems {
        rows.add_row(vec![
            problem.id.clone(),
            format!("{:?}", problem.application),
            problem.task_type.to_string(),
            problem.fault.clone(),
        ]);
    }
    print_table(&rows)?;
    say(format!("{} problems", problems.len()))?;
    Ok(ExitCode::SUCCESS)
}
