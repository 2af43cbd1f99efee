//! The views of `aiopslab watch`: what a watch shows as its tasks start, step and end.
//!
//! - [`Bars`] (stdout is a terminal): an overall bar of the tasks that ended with the counts per status and the
//!   mean reward, one bar per running episode (its agent steps out of `max_steps`), and a line printed above the
//!   bars as each task ends;
//! - [`Lines`] (stdout is a pipe or a file): the same events as plain lines, one per change, and a summary line,
//!   so scripts and tests can read them;
//! - [`Quiet`] (`--json`): nothing while watching; the caller prints the JSON summary.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aiopslab_core::{TaskId, TaskStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{count, paint, reward, say, status_counts, status_style};
use super::watch::{Summary, Tracked};
use super::CliError;

/// What a watch shows, event by event; a view shows nothing of what it does not implement.
pub trait View {
    /// The watch starts with these tasks.
    fn begin(&mut self, _tracked: &BTreeMap<TaskId, Tracked>) -> Result<(), CliError> {
        Ok(())
    }
    /// A task started running.
    fn started(&mut self, _task: &Tracked) -> Result<(), CliError> {
        Ok(())
    }
    /// A running task reached a new agent step.
    fn stepped(&mut self, _task: &Tracked) -> Result<(), CliError> {
        Ok(())
    }
    /// A task ended (its reward, when it has one, is known).
    fn ended(&mut self, _task: &Tracked) -> Result<(), CliError> {
        Ok(())
    }
    /// A task went back to the queue (its run was lost and it is retried).
    fn requeued(&mut self, _task: &Tracked) -> Result<(), CliError> {
        Ok(())
    }
    /// Where the watch stands after a read that changed something.
    fn progress(&mut self, _summary: &Summary) -> Result<(), CliError> {
        Ok(())
    }
    /// Something the person should know (the server does not answer): on stderr unless the view shows it.
    fn note(&mut self, message: &str) -> Result<(), CliError> {
        eprintln!("warning: {message}");
        Ok(())
    }
    /// Every task ended.
    fn end(&mut self, _summary: &Summary) -> Result<(), CliError> {
        Ok(())
    }
}

/// `running on worker-001 (problem)`.
fn started_text(t: &Tracked) -> String {
    format!(
        "{} {} on {} ({})",
        t.task.id,
        paint(status_style(TaskStatus::Running), "running"),
        t.task.worker_id.as_deref().unwrap_or("?"),
        t.task.problem_id
    )
}

/// `completed: reward 1.00, 3 steps`, or the error of a task that failed.
fn ended_text(t: &Tracked) -> String {
    let status = t.task.status;
    let mut text = format!("{} {}", t.task.id, paint(status_style(status), status.as_str()));
    let mut parts = Vec::new();
    if t.reward.is_some() {
        parts.push(format!("reward {}", reward(t.reward)));
    }
    if let Some(step) = t.step {
        parts.push(count(step as usize, "step"));
    }
    if let Some(error) = &t.task.error_details {
        // `cancelled: run cancelled ...` says its code twice.
        if error.code == status.as_str() {
            parts.push(error.message.clone());
        } else {
            parts.push(format!("{}: {}", error.code, error.message));
        }
    }
    if !parts.is_empty() {
        text.push_str(": ");
        text.push_str(&parts.join(", "));
    }
    text
}

/// `pending again (attempt 1)`.
fn requeued_text(t: &Tracked) -> String {
    let why = t
        .task
        .error_details
        .as_ref()
        .map_or_else(String::new, |e| format!(": {}: {}", e.code, e.message));
    format!("{} pending again after attempt {}{why}", t.task.id, t.task.attempt)
}

/// `2 completed, 1 running; mean reward 0.50 over 2`.
fn counts_text(summary: &Summary) -> String {
    let mut text = status_counts(|status| summary.count(status));
    if summary.mean_reward.is_some() {
        text.push_str(&format!(
            "; mean reward {} over {}",
            reward(summary.mean_reward),
            summary.rewards()
        ));
    }
    text
}

/// The last line of a watch: `done: 3 tasks: 2 completed, 1 cancelled; mean reward 1.00 over 2`.
fn done_text(summary: &Summary) -> String {
    format!("done: {}: {}", count(summary.total, "task"), counts_text(summary))
}

/// Plain lines, one per change: for pipes, files and tests.
pub struct Lines;

impl View for Lines {
    fn begin(&mut self, tracked: &BTreeMap<TaskId, Tracked>) -> Result<(), CliError> {
        let summary = Summary::of(tracked);
        say(format!(
            "watching {}: {}",
            count(summary.total, "task"),
            counts_text(&summary)
        ))?;
        for t in tracked.values().filter(|t| t.task.status == TaskStatus::Running) {
            say(started_text(t))?;
        }
        Ok(())
    }

    fn started(&mut self, task: &Tracked) -> Result<(), CliError> {
        say(started_text(task))
    }

    fn stepped(&mut self, task: &Tracked) -> Result<(), CliError> {
        say(format!(
            "{} step {} of at most {}",
            task.task.id,
            task.step.unwrap_or(0),
            task.task.parameters.max_steps
        ))
    }

    fn ended(&mut self, task: &Tracked) -> Result<(), CliError> {
        say(ended_text(task))
    }

    fn requeued(&mut self, task: &Tracked) -> Result<(), CliError> {
        say(requeued_text(task))
    }

    fn progress(&mut self, summary: &Summary) -> Result<(), CliError> {
        say(format!(
            "progress: {}/{} ended ({})",
            summary.ended(),
            summary.total,
            counts_text(summary)
        ))
    }

    fn end(&mut self, summary: &Summary) -> Result<(), CliError> {
        say(done_text(summary))
    }
}

/// Nothing while watching (`--json`: the summary comes at the end).
pub struct Quiet;

impl View for Quiet {}

/// Live progress bars on a terminal (indicatif, drawn on stdout).
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    episodes: HashMap<TaskId, ProgressBar>,
    episode_style: ProgressStyle,
}

/// A bar style from a template, or indicatif's plain bar should the template not parse.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    /// Bars on stdout (indicatif draws nothing when stdout is not a terminal).
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(
            ProgressBar::new(0)
                .with_style(style(
                    "{spinner} {prefix:<8} [{bar:30.green/white}] {pos}/{len} ended  {msg}  ({elapsed})",
                ))
                .with_prefix("tasks"),
        );
        overall.enable_steady_tick(Duration::from_millis(120));
        Self {
            multi,
            overall,
            episodes: HashMap::new(),
            episode_style: style("  {prefix:<8} [{bar:30.cyan/blue}] step {pos}/{len}  {msg}"),
        }
    }

    /// The bar of a running episode, made when first needed.
    fn episode(&mut self, t: &Tracked) -> &ProgressBar {
        let (multi, style) = (&self.multi, &self.episode_style);
        self.episodes.entry(t.task.id).or_insert_with(|| {
            let id = t.task.id.to_string();
            let bar = multi.add(
                ProgressBar::new(u64::from(t.task.parameters.max_steps))
                    .with_style(style.clone())
                    .with_prefix(id.chars().take(8).collect::<String>())
                    .with_message(format!(
                        "{} on {}",
                        t.task.problem_id,
                        t.task.worker_id.as_deref().unwrap_or("?")
                    )),
            );
            // Drawn now, not at its first step.
            bar.tick();
            bar
        })
    }

    /// Removes a task's episode bar, if it has one.
    fn drop_episode(&mut self, id: TaskId) {
        if let Some(bar) = self.episodes.remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// A line above the bars.
    fn line(&self, text: &str) -> Result<(), CliError> {
        self.multi.println(text)?;
        Ok(())
    }
}

impl View for Bars {
    fn begin(&mut self, tracked: &BTreeMap<TaskId, Tracked>) -> Result<(), CliError> {
        let summary = Summary::of(tracked);
        self.overall.set_length(summary.total as u64);
        self.progress(&summary)?;
        for t in tracked.values().filter(|t| t.task.status == TaskStatus::Running) {
            self.episode(t);
        }
        Ok(())
    }

    fn started(&mut self, task: &Tracked) -> Result<(), CliError> {
        self.episode(task);
        Ok(())
    }

    fn stepped(&mut self, task: &Tracked) -> Result<(), CliError> {
        let step = u64::from(task.step.unwrap_or(0));
        self.episode(task).set_position(step);
        Ok(())
    }

    fn ended(&mut self, task: &Tracked) -> Result<(), CliError> {
        self.drop_episode(task.task.id);
        let mark = match task.task.status {
            TaskStatus::Completed => "✔",
            _ => "✘",
        };
        self.line(&format!(
            "{} {}",
            paint(status_style(task.task.status), mark),
            ended_text(task)
        ))
    }

    fn requeued(&mut self, task: &Tracked) -> Result<(), CliError> {
        self.drop_episode(task.task.id);
        self.line(&requeued_text(task))
    }

    fn progress(&mut self, summary: &Summary) -> Result<(), CliError> {
        self.overall.set_position(summary.ended() as u64);
        self.overall.set_message(counts_text(summary));
        Ok(())
    }

    fn note(&mut self, message: &str) -> Result<(), CliError> {
        self.line(&format!("warning: {message}"))
    }

    fn end(&mut self, summary: &Summary) -> Result<(), CliError> {
        for (_, bar) in self.episodes.drain() {
            bar.finish_and_clear();
        }
        self.overall.finish_with_message(counts_text(summary));
        say(done_text(summary))
    }
}
