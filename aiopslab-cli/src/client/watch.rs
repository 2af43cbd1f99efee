//! `aiopslab watch [ID... | --group GID]`: follows tasks until every one is terminal, then exits 0 when all
//! completed and 1 when any ended failed, cancelled or timeout, so a script can wait on a batch.
//!
//! It polls the server every `--interval-ms`: the tasks' statuses (`GET /tasks/{id}`, or one `GET /tasks?group_id`
//! listing for a group), the new log entries of running tasks (`after_id`: each entry is read once) for the
//! agent step they reached, and each finished task's reward (its trajectory's, or the group summary's). What
//! changed goes to a [`View`]: progress bars on a terminal, plain lines otherwise, nothing but the final JSON
//! summary with `--json`. With no ids and no group it watches the tasks pending or running when it starts.
//!
//! A server that stops answering for a while (a restart) is waited for, up to [`PATIENCE`]; a refusal (an
//! unknown task: 404) ends the watch at once.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiopslab_core::{ErrorDetails, GroupId, LogQuery, Page, Task, TaskFilter, TaskId, TaskQuery, TaskSort, TaskStatus};
use aiopslab_http::client::ApiClient;
use clap::Args;
use serde::Serialize;

use super::error::EXIT_NOT_ALL_COMPLETED;
use super::output::{print_json, stdout_is_terminal};
use super::progress::{Bars, Lines, Quiet, View};
use super::tasks::task_reward;
use super::{CliError, Connection};

/// How long the watch waits for a server that stopped answering before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The most tasks a watch with no ids and no group picks up.
const MAX_DEFAULT_TASKS: u64 = 1_000;

/// The long help of `aiopslab watch --help`.
pub const LONG_ABOUT: &str = "Watch tasks live until every one is terminal.

On a terminal: a progress bar of the tasks that ended (with the counts per status and the mean reward), one bar \
per running episode (its agent steps out of max_steps), and a line per task as it ends with its status and \
reward. When stdout is not a terminal: one plain line per change (a task starting, a step, a task ending, the \
progress) and a summary line at the end. With --json: only a JSON summary at the end.

Exits 0 when every watched task completed, 1 when at least one ended failed, cancelled or timeout (see the \
exit codes below).";

/// `aiopslab watch --help`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Tasks to watch (default: every task pending or running now).
    #[arg(value_name = "ID", conflicts_with = "group")]
    pub ids: Vec<TaskId>,
    /// Watch every task of this batch group (as `aiopslab submit --count N` printed it).
    #[arg(long, value_name = "GROUP_ID")]
    pub group: Option<GroupId>,
    /// How often to ask the server, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub interval_ms: u64,
    #[command(flatten)]
    pub connection: Connection,
}

/// One watched task, as last read.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The task.
    pub task: Task,
    /// The last agent step its log reported.
    pub step: Option<u32>,
    /// Its reward, once it ended with one.
    pub reward: Option<f64>,
    /// The last log entry read.
    last_log_id: Option<i64>,
    /// Its reward was asked for (once, when it ended).
    reward_read: bool,
}

impl Tracked {
    fn new(task: Task) -> Self {
        Self {
            task,
            step: None,
            reward: None,
            last_log_id: None,
            reward_read: false,
        }
    }
}

/// What the watch is following.
enum Targets {
    /// These tasks.
    Ids(Vec<TaskId>),
    /// A batch group's tasks.
    Group(GroupId),
}

/// The end of a watch (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// How many tasks were watched.
    pub total: usize,
    /// How many ended in each status (and are still pending or running, while the watch goes on).
    pub by_status: BTreeMap<TaskStatus, usize>,
    /// Whether every task completed.
    pub all_completed: bool,
    /// The mean of the rewards there are.
    pub mean_reward: Option<f64>,
    /// Every task: id, problem, status, reward, steps, error.
    pub tasks: Vec<TaskLine>,
}

/// One task of a [`Summary`].
#[derive(Debug, Serialize)]
pub struct TaskLine {
    /// The task.
    pub id: TaskId,
    /// Its problem.
    pub problem_id: String,
    /// Its status.
    pub status: TaskStatus,
    /// Its reward, when it has one.
    pub reward: Option<f64>,
    /// The last agent step its log reported.
    pub steps: Option<u32>,
    /// Why it failed, timed out or was requeued.
    pub error: Option<ErrorDetails>,
}

impl Summary {
    /// The summary of `tracked` as it stands.
    pub fn of(tracked: &BTreeMap<TaskId, Tracked>) -> Self {
        let mut by_status = BTreeMap::new();
        for t in tracked.values() {
            *by_status.entry(t.task.status).or_insert(0) += 1;
        }
        let rewards: Vec<f64> = tracked.values().filter_map(|t| t.reward).collect();
        Self {
            total: tracked.len(),
            all_completed: tracked.values().all(|t| t.task.status == TaskStatus::Completed),
            mean_reward: (!rewards.is_empty()).then(|| rewards.iter().sum::<f64>() / rewards.len() as f64),
            by_status,
            tasks: tracked
                .values()
                .map(|t| TaskLine {
                    id: t.task.id,
                    problem_id: t.task.problem_id.clone(),
                    status: t.task.status,
                    reward: t.reward,
                    steps: t.step,
                    error: t.task.error_details.clone(),
                })
                .collect(),
        }
    }

    /// How many tasks are in `status`.
    pub fn count(&self, status: TaskStatus) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// How many tasks ended.
    pub fn ended(&self) -> usize {
        self.by_status
            .iter()
            .filter(|(status, _)| status.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// How many rewards there are.
    pub fn rewards(&self) -> usize {
        self.tasks.iter().filter(|t| t.reward.is_some()).count()
    }
}

/// Runs `aiopslab watch`.
pub async fn run(args: WatchArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let targets = match (args.group, args.ids.is_empty()) {
        (Some(group), _) => Targets::Group(group),
        (None, false) => Targets::Ids(args.ids),
        (None, true) => Targets::Ids(active_tasks(&client).await?),
    };
    let mut tracked = BTreeMap::new();
    read_statuses(&client, &targets, &mut tracked).await?;
    if tracked.is_empty() {
        if !args.connection.json {
            eprintln!("nothing to watch: no task is pending or running");
        }
        return finish(&mut Quiet, &tracked, args.connection.json);
    }
    let mut view: Box<dyn View> = if args.connection.json {
        Box::new(Quiet)
    } else if stdout_is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    };
    view.begin(&tracked)?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut first = true;
    let mut failing_since: Option<Instant> = None;
    loop {
        let before = tracked.clone();
        let polled = if first {
            Ok(())
        } else {
            read_statuses(&client, &targets, &mut tracked).await
        };
        first = false;
        let polled = match polled {
            Ok(()) => read_progress(&client, &targets, &mut tracked).await,
            Err(error) => Err(error),
        };
        match polled {
            Ok(()) => failing_since = None,
            Err(CliError::Unreachable(error)) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(CliError::Unreachable(error));
                }
                view.note(&format!("the server does not answer ({error}); trying again"))?;
            }
            Err(other) => return Err(other),
        }
        report_changes(view.as_mut(), &before, &tracked)?;
        if tracked.values().all(|t| t.task.status.is_terminal() && t.reward_read) {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    finish(view.as_mut(), &tracked, args.connection.json)
}

/// Ends the view, prints the JSON summary when asked, and picks the exit code.
fn finish(view: &mut dyn View, tracked: &BTreeMap<TaskId, Tracked>, json: bool) -> Result<ExitCode, CliError> {
    let summary = Summary::of(tracked);
    view.end(&summary)?;
    if json {
        print_json(&summary)?;
    }
    Ok(if summary.all_completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_ALL_COMPLETED)
    })
}

/// Tells the view what changed between two reads.
fn report_changes(
    view: &mut dyn View,
    before: &BTreeMap<TaskId, Tracked>,
    after: &BTreeMap<TaskId, Tracked>,
) -> Result<(), CliError> {
    let mut changed = false;
    for (id, now) in after {
        let Some(was) = before.get(id) else { continue };
        let ended = now.task.status.is_terminal() && now.reward_read;
        let had_ended = was.task.status.is_terminal() && was.reward_read;
        if now.task.status == TaskStatus::Running && (was.task.status != TaskStatus::Running) {
            view.started(now)?;
            changed = true;
        }
        if now.step != was.step && !ended {
            view.stepped(now)?;
            changed = true;
        }
        if ended && !had_ended {
            view.ended(now)?;
            changed = true;
        } else if now.task.status == TaskStatus::Pending && was.task.status != TaskStatus::Pending {
            view.requeued(now)?;
            changed = true;
        }
    }
    if changed {
        view.progress(&Summary::of(after))?;
    }
    Ok(())
}

/// The tasks pending or running now, oldest first (at most [`MAX_DEFAULT_TASKS`]).
async fn active_tasks(client: &ApiClient) -> Result<Vec<TaskId>, CliError> {
    let mut ids = Vec::new();
    for status in [TaskStatus::Running, TaskStatus::Pending] {
        let filter = TaskFilter::default().with_status(Some(status));
        ids.extend(list_all(client, filter).await?.into_iter().map(|t| t.id));
    }
    Ok(ids)
}

/// Every task `filter` matches, oldest first, page by page (at most [`MAX_DEFAULT_TASKS`]).
async fn list_all(client: &ApiClient, filter: TaskFilter) -> Result<Vec<Task>, CliError> {
    let mut tasks: Vec<Task> = Vec::new();
    loop {
        let page = Page {
            limit: Page::MAX_LIMIT,
            offset: tasks.len() as u64,
        };
        let query = TaskQuery::new(filter.clone()).sorted(TaskSort::CreatedAsc).page(page);
        let got = client.list_tasks(&query).await?;
        let done = got.tasks.len() < Page::MAX_LIMIT as usize;
        tasks.extend(got.tasks);
        if done || tasks.len() as u64 >= MAX_DEFAULT_TASKS {
            return Ok(tasks);
        }
    }
}

/// Reads the statuses of the tasks not known to have ended.
async fn read_statuses(
    client: &ApiClient,
    targets: &Targets,
    tracked: &mut BTreeMap<TaskId, Tracked>,
) -> Result<(), CliError> {
    match targets {
        Targets::Ids(ids) => {
            for id in ids {
                if tracked.get(id).is_some_and(|t| t.task.status.is_terminal()) {
                    continue;
                }
                let task = client.get_task(*id).await?;
                update(tracked, task);
            }
        }
        Targets::Group(group) => {
            let tasks = list_all(client, TaskFilter::default().with_group_id(Some(*group))).await?;
            if tasks.is_empty() {
                // No task has this group id: the server's own 404 says so.
                client.get_group(*group).await?;
            }
            for task in tasks {
                update(tracked, task);
            }
        }
    }
    Ok(())
}

fn update(tracked: &mut BTreeMap<TaskId, Tracked>, task: Task) {
    match tracked.get_mut(&task.id) {
        Some(known) => known.task = task,
        None => {
            tracked.insert(task.id, Tracked::new(task));
        }
    }
}

/// Reads the new log entries of the tasks that ran since the last read (their step), and the reward of each
/// task that just ended.
async fn read_progress(
    client: &ApiClient,
    targets: &Targets,
    tracked: &mut BTreeMap<TaskId, Tracked>,
) -> Result<(), CliError> {
    for t in tracked.values_mut() {
        let ran = t.task.status == TaskStatus::Running || (t.task.status.is_terminal() && !t.reward_read);
        if !ran || t.task.started_at.is_none() {
            continue;
        }
        let query = LogQuery::default().with_after_id(t.last_log_id);
        for entry in client.get_logs(t.task.id, &query).await? {
            t.last_log_id = Some(entry.id);
            if let Some(step) = entry.context.step {
                t.step = Some(t.step.map_or(step, |s| s.max(step)));
            }
        }
    }
    let ended: Vec<TaskId> = tracked
        .values()
        .filter(|t| t.task.status.is_terminal() && !t.reward_read)
        .map(|t| t.task.id)
        .collect();
    if ended.is_empty() {
        return Ok(());
    }
    match targets {
        Targets::Group(group) => {
            // One request for the whole group's rewards.
            let summary = client.get_group(*group).await?;
            let rewards: BTreeMap<TaskId, Option<f64>> = summary.tasks.iter().map(|t| (t.id, t.reward)).collect();
            for id in &ended {
                if let Some(t) = tracked.get_mut(id) {
                    t.reward = rewards.get(id).copied().flatten();
                }
            }
        }
        Targets::Ids(_) => {
            for id in &ended {
                if let Some(t) = tracked.get_mut(id) {
                    t.reward = task_reward(client, &t.task).await?;
                }
            }
        }
    }
    for id in &ended {
        if let Some(t) = tracked.get_mut(id) {
            t.reward_read = true;
        }
    }
    Ok(())
}
