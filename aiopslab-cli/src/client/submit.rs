//! `aiopslab submit PROBLEM_ID`: create one task (`POST /tasks`), or with `--count N` a batch group of N runs
//! of the same problem (`POST /tasks/batch`, atomic: all or none), as RL training's group-relative methods want.
//!
//! stdout gets the task ids, one per line, so `aiopslab watch $(aiopslab submit ...)` works; what a person may
//! want besides (the group id, a replayed submission, a problem id the catalog does not know) goes to stderr.
//! The request is checked with the core's own rules before it is sent (a wrong value is a usage error, exit 2);
//! `--idempotency-key` makes a retried submission create nothing twice.

use std::process::ExitCode;

use aiopslab_core::batch::{BatchSpec, IdempotencyKey, MAX_BATCH_TASKS};
use aiopslab_core::task::limits;
use aiopslab_core::{catalog, JsonObject, NewTask};
use clap::Args;
use serde_json::Value;

use super::output::print_json;
use super::parse;
use super::{CliError, Connection};

/// `aiopslab submit --help`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The AIOpsLab problem to run (`aiopslab problems` lists them).
    pub problem_id: String,
    /// The model the agent uses (agent_config.model).
    #[arg(long)]
    pub model: Option<String>,
    /// The sampling temperature (agent_config.temperature).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// The whole agent_config as a JSON object; --model and --temperature override its keys.
    #[arg(long, value_name = "JSON", value_parser = parse_object)]
    pub agent_config: Option<JsonObject>,
    /// Most agent steps (server default 30).
    #[arg(long, value_parser = clap::value_parser!(i64).range(limits::MAX_STEPS.0..=limits::MAX_STEPS.1))]
    pub max_steps: Option<i64>,
    /// Minutes the run may take (server default 30).
    #[arg(long, value_parser = clap::value_parser!(i64).range(limits::TIMEOUT_MINUTES.0..=limits::TIMEOUT_MINUTES.1))]
    pub timeout_minutes: Option<i64>,
    /// Priority, higher first (server default 5).
    #[arg(long, value_parser = clap::value_parser!(i64).range(limits::PRIORITY.0..=limits::PRIORITY.1))]
    pub priority: Option<i64>,
    /// The backend type of the workers that may run it (server default "default").
    #[arg(long)]
    pub backend_type: Option<String>,
    /// How often a lost run is retried (server default 0).
    #[arg(long, value_parser = clap::value_parser!(i64).range(limits::MAX_RETRIES.0..=limits::MAX_RETRIES.1))]
    pub max_retries: Option<i64>,
    /// A URL the server POSTs the task to when it ends (a completion webhook).
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Metadata as KEY=VALUE (string values); repeat for more keys.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::key_equals_value)]
    pub metadata: Vec<(String, String)>,
    /// How many runs of the problem: more than 1 creates them as one batch group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH_TASKS as i64))]
    pub count: u32,
    /// Makes a retried submission safe: the same key with the same request creates nothing new and answers
    /// the first submission's tasks; with a different request the server refuses it.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// A JSON object.
fn parse_object(raw: &str) -> Result<JsonObject, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("expected a JSON object ({...})".to_string()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

impl SubmitArgs {
    /// The request body these flags describe.
    fn new_task(&self) -> NewTask {
        let mut agent_config = self.agent_config.clone().unwrap_or_default();
        if let Some(model) = &self.model {
            agent_config.insert("model".into(), Value::from(model.clone()));
        }
        if let Some(temperature) = self.temperature {
            agent_config.insert("temperature".into(), Value::from(temperature));
        }
        let mut new = NewTask::new(self.problem_id.clone());
        new.agent_config = (!agent_config.is_empty()).then_some(agent_config);
        new.max_steps = self.max_steps;
        new.timeout_minutes = self.timeout_minutes;
        new.priority = self.priority;
        new.backend_type = self.backend_type.clone();
        new.max_retries = self.max_retries;
        new.callback_url = self.callback_url.clone();
        new.metadata = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect()
        });
        new
    }
}

/// Runs `aiopslab submit`.
pub async fn run(args: SubmitArgs) -> Result<ExitCode, CliError> {
    let spec = args
        .new_task()
        .validate()
        .map_err(|e| CliError::Usage(format!("invalid {}: {}", e.field, e.message)))?;
    // The server fingerprints the request itself; the fingerprint here is never sent.
    let key = args
        .idempotency_key
        .as_deref()
        .map(|key| IdempotencyKey::new(key, ""))
        .transpose()
        .map_err(|e| CliError::Usage(format!("--idempotency-key {}", e.message)))?;
    if catalog::find(&spec.problem_id).is_none() {
        eprintln!(
            "warning: {:?} is not in the AIOpsLab catalog (see `aiopslab problems`): the server accepts it, but a \
             stock worker fails it with unknown_problem",
            spec.problem_id
        );
    }
    let client = args.connection.client()?;
    let batch = BatchSpec::ungrouped(vec![spec; args.count as usize]);
    let created = client.create_batch(batch, key).await?;
    if args.connection.json {
        print_json(&created)?;
    } else {
        for task in &created.tasks {
            println!("{}", task.id);
        }
        if let Some(group_id) = created.group_id {
            eprintln!(
                "created {} tasks in group {group_id} (follow them: aiopslab watch --group {group_id})",
                created.tasks.len()
            );
        }
    }
    if created.replayed {
        eprintln!("replayed: this idempotency key was used before with the same request; nothing new was created");
    }
    Ok(ExitCode::SUCCESS)
}
