//! `aiopslab export -o episodes.jsonl`: the RL dataset export (`GET /trajectories/export`, one episode per line
//! in OpenAI chat format with its reward), copied to a file or to stdout (`-o -`) as it streams: memory stays
//! flat however many episodes match.
//!
//! A file is written under a temporary name beside it and renamed once the export is whole, so an export the
//! server cut short (its store failed mid-way) never leaves a file that looks complete. A spinner on stderr
//! counts episodes and bytes while a person waits; the count is printed at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aiopslab_core::catalog::TaskType;
use aiopslab_core::TaskStatus;
use aiopslab_http::client::{ApiClient, ExportQuery, Outcomes};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::output::{count, print_json, say};
use super::{parse, CliError, Connection};

/// `aiopslab export --help`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the JSON Lines: a file, or `-` for stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Only tasks in this status (e.g. completed).
    #[arg(long, value_parser = parse::task_status())]
    pub status: Option<TaskStatus>,
    /// Only tasks of this problem.
    #[arg(long = "problem", value_name = "PROBLEM_ID")]
    pub problem_id: Option<String>,
    /// Only problems of this task type.
    #[arg(long, value_parser = parse::task_type())]
    pub task_type: Option<TaskType>,
    /// Only tasks whose agent_config.model is this.
    #[arg(long)]
    pub model: Option<String>,
    /// Only tasks whose metadata has this string value, as KEY:VALUE.
    #[arg(long, value_name = "KEY:VALUE", value_parser = parse::key_colon_value)]
    pub metadata: Option<(String, String)>,
    /// Only tasks created at or after this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339", value_parser = parse::instant)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339", value_parser = parse::instant)]
    pub created_before: Option<DateTime<Utc>>,
    /// Only episodes with these outcomes, comma-separated (valid, aborted, timeout, cancelled), or `all`.
    /// Default: the server's, `valid` episodes only (what a trainer may learn from), unless --status is given.
    #[arg(long, value_name = "OUTCOMES", value_parser = parse::outcomes)]
    pub outcome: Option<Outcomes>,
    /// Only episodes whose agent_config.model_version is this.
    #[arg(long, value_name = "N")]
    pub model_version: Option<u64>,
    /// Only episodes whose agent_config.model_version is at least this (unversioned ones are left out).
    #[arg(long, value_name = "N")]
    pub min_model_version: Option<u64>,
    /// At most this many episodes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub connection: Connection,
}

/// `export --json`: what was written.
#[derive(Serialize)]
struct Exported<'a> {
    /// Episodes (lines) written.
    episodes: u64,
    /// Bytes written.
    bytes: u64,
    /// The file.
    output: &'a Path,
}

/// Runs `aiopslab export`.
pub async fn run(args: ExportArgs) -> Result<ExitCode, CliError> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && args.connection.json {
        return Err(CliError::Usage(
            "--json needs -o FILE: with -o - stdout carries the episodes".into(),
        ));
    }
    let client = args.connection.client()?;
    let query = ExportQuery {
        status: args.status,
        problem_id: args.problem_id,
        task_type: args.task_type,
        model: args.model,
        metadata: args.metadata,
        created_after: args.created_after,
        created_before: args.created_before,
        outcomes: args.outcome.unwrap_or_default(),
        model_version: args.model_version,
        min_model_version: args.min_model_version,
        limit: args.limit,
    };
    let (episodes, bytes) = if to_stdout {
        copy(&client, &query, &mut std::io::stdout().lock()).await?
    } else {
        to_file(&client, &query, &args.output).await?
    };
    if to_stdout {
        eprintln!(
            "exported {} ({})",
            count(episodes as usize, "episode"),
            HumanBytes(bytes)
        );
    } else if args.connection.json {
        print_json(&Exported {
            episodes,
            bytes,
            output: &args.output,
        })?;
    } else {
        say(format!(
            "exported {} to {} ({})",
            count(episodes as usize, "episode"),
            args.output.display(),
            HumanBytes(bytes)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Exports into `path` through a temporary file beside it, renamed when the export is whole.
async fn to_file(client: &ApiClient, query: &ExportQuery, path: &Path) -> Result<(u64, u64), CliError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let copied = copy(client, query, &mut writer).await.and_then(|counts| {
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        Ok(counts)
    });
    let renamed = copied.and_then(|counts| {
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
        Ok(counts)
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    renamed
}

/// Copies the export to `out`, chunk by chunk, with a spinner on stderr; returns (episodes, bytes).
async fn copy(client: &ApiClient, query: &ExportQuery, out: &mut impl Write) -> Result<(u64, u64), CliError> {
    let mut stream = client.export_stream(query).await?;
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{spinner} exporting: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let (mut episodes, mut bytes) = (0u64, 0u64);
    let result = async {
        while let Some(chunk) = stream.chunk().await? {
            out.write_all(&chunk).context("cannot write the export")?;
            bytes += chunk.len() as u64;
            episodes += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            spinner.set_message(format!("{episodes} episodes, {}", HumanBytes(bytes)));
        }
        out.flush().context("cannot write the export")?;
        Ok::<_, CliError>((episodes, bytes))
    }
    .await;
    spinner.finish_and_clear();
    result
}
