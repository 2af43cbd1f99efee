//! The `fair` section of the benchmark: what the fair-share claim costs, side by side with today's claim.
//!
//! The loop is the queue section's (each worker creates a no-op task, claims one, finishes it), at 8 and 32
//! workers, over a standing backlog of 2,000 pending tasks (the fair claim's work grows with what is pending, not
//! with what the loop adds), in three variants measured in alternating slices so all see the same machine load.
//! Each variant has a backend type, workers and backlog of its own, so no variant's tasks reach another's claims:
//!
//! - `today`: tasks without an experiment, the claim as it was before fair share (the plain queue);
//! - `fair`: every worker's tasks in one of 8 experiments (`exp-0` … `exp-7`), no limits: the claim enumerates the
//!   experiments, takes the head of each and serves them in turn;
//! - `fair_limited`: the same over 8 other experiments that each have a `max_running` (a quarter of the workers,
//!   so the 8 limits together allow twice the workers: the fence — row lock, running count, `started` — runs on
//!   every claim, and a claim finds every experiment full only rarely; `empty_claims` says how often).
//!
//! Reported per worker count: tasks per second end to end, `claim_call_us` (the mean time of a claim call, the
//! wait to share a statement with other claims included), and `cost_ratio_*` — how much more a task (`per_task`:
//! today's rate ÷ the variant's) and a claim call (`per_claim`) cost than `today` (target ≤ 1.2). Through the
//! shared store (claims coalesced, the server's case) and through a second store with one statement per call
//! (every claim a statement of its own, racing the others in the database).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{ClaimRequest, ExperimentSettings, NewTask, TaskSpec, WorkerRegistration};
use aiopslab_postgres::{PgStore, PgStoreOptions};
use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnectOptions;

use crate::{live_worker_on, measure, noop_outcome, reset, round2, ROUNDS};

/// Worker counts measured.
const WORKERS: [usize; 2] = [8, 32];
/// Experiments the fair variants spread their tasks over.
const EXPERIMENTS: usize = 8;
/// Pending tasks each variant's queue holds throughout (the loop adds one and takes one).
const BACKLOG: usize = 2_000;
/// The variants, in the order of a round's first slot.
const VARIANTS: [Variant; 3] = [Variant::Today, Variant::Fair, Variant::FairLimited];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Today,
    Fair,
    FairLimited,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Today => "today",
            Variant::Fair => "fair",
            Variant::FairLimited => "fair_limited",
        }
    }

    /// The backend type of the variant's tasks and workers.
    fn backend(self) -> &'static str {
        match self {
            Variant::Today => "today",
            Variant::Fair => "fair",
            Variant::FairLimited => "limited",
        }
    }

    /// The variant's worker `i`.
    fn worker(self, i: usize) -> String {
        format!("{}-{i}", self.backend())
    }

    /// A task of the variant, in the experiment of worker (or backlog slot) `i`.
    fn spec(self, i: usize) -> anyhow::Result<TaskSpec> {
        Ok(NewTask {
            experiment: self.experiment(i),
            backend_type: Some(self.backend().into()),
            ..NewTask::new("noop")
        }
        .validate()?)
    }

    /// The experiment of worker `i`'s tasks.
    fn experiment(self, i: usize) -> Option<String> {
        match self {
            Variant::Today => None,
            Variant::Fair => Some(format!("exp-{}", i % EXPERIMENTS)),
            Variant::FairLimited => Some(format!("lim-{}", i % EXPERIMENTS)),
        }
    }
}

/// One variant's totals over its slices.
#[derive(Default)]
struct Totals {
    tasks: u64,
    time: Duration,
    claims: u64,
    claim_time: Duration,
    empty_claims: u64,
}

impl Totals {
    fn add(&mut self, slice: Slice) {
        self.tasks += slice.tasks;
        self.time += slice.time;
        self.claims += slice.claims;
        self.claim_time += slice.claim_time;
        self.empty_claims += slice.empty_claims;
    }

    fn rate(&self) -> f64 {
        self.tasks as f64 / self.time.as_secs_f64().max(f64::EPSILON)
    }

    fn claim_us(&self) -> f64 {
        self.claim_time.as_secs_f64() * 1e6 / self.claims.max(1) as f64
    }
}

/// What one measured slice counted.
struct Slice {
    tasks: u64,
    time: Duration,
    claims: u64,
    claim_time: Duration,
    empty_claims: u64,
}

/// Runs the section; returns its figures.
pub async fn run(store: &PgStore, options: &PgConnectOptions, admin: &mut sqlx::PgConnection) -> anyhow::Result<Value> {
    let single_options = PgStoreOptions::default().max_connections(40).coalesce_writes(false);
    let single = PgStore::from_options(single_options.apply(options.clone()), *store.policy(), &single_options)?;
    let mut shared = Map::new();
    let mut separate = Map::new();
    let mut limits = Map::new();
    for workers in WORKERS {
        reset(admin).await?;
        for variant in VARIANTS {
            for i in 0..workers {
                store
                    .register_worker(WorkerRegistration::new(variant.worker(i), variant.backend()))
                    .await?;
            }
            let backlog = (0..BACKLOG)
                .map(|i| variant.spec(i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for chunk in backlog.chunks(500) {
                store.create_tasks(chunk.to_vec()).await?;
            }
        }
        let max_running = (workers / 4).max(1) as u32;
        let experiments = store
            .experiments()
            .ok_or_else(|| anyhow::anyhow!("PgStore offers experiments"))?;
        for e in 0..EXPERIMENTS {
            experiments
                .set_experiment(&format!("lim-{e}"), ExperimentSettings::limited(max_running))
                .await?;
        }
        limits.insert(workers.to_string(), json!(max_running));
        let mut totals: Vec<Totals> = VARIANTS.iter().map(|_| Totals::default()).collect();
        let mut single_totals: Vec<Totals> = VARIANTS.iter().map(|_| Totals::default()).collect();
        for round in 0..ROUNDS {
            // Each variant takes each position of a round equally often (see the queue section).
            for slot in 0..VARIANTS.len() {
                let v = (round + slot) % VARIANTS.len();
                totals[v].add(slice(store, workers, VARIANTS[v]).await?);
                single_totals[v].add(slice(&single, workers, VARIANTS[v]).await?);
            }
        }
        shared.insert(workers.to_string(), figures(&totals));
        separate.insert(workers.to_string(), figures(&single_totals));
        eprintln!(
            "fair share, {workers:>2} workers: {} tasks/s today, {} fair, {} fair with limits (one statement per \
             call: {}, {}, {})",
            totals[0].rate().round(),
            totals[1].rate().round(),
            totals[2].rate().round(),
            single_totals[0].rate().round(),
            single_totals[1].rate().round(),
            single_totals[2].rate().round(),
        );
    }
    single.close().await;
    Ok(json!({
        "experiments": EXPERIMENTS,
        "backlog": BACKLOG,
        "max_running_per_experiment": limits,
        "measure_seconds_per_point": crate::MEASURE.as_secs_f64() * ROUNDS as f64,
        "coalesced": shared,
        "one_statement_per_call": separate,
        "target_cost_ratio_max": 1.2,
    }))
}

/// One worker count's figures: rates, claim times and the cost ratios against `today`.
fn figures(totals: &[Totals]) -> Value {
    let today = &totals[0];
    let mut out = Map::new();
    for (variant, total) in VARIANTS.iter().zip(totals) {
        out.insert(
            variant.name().into(),
            json!({
                "tasks_per_sec": total.rate().round(),
                "claim_call_us": total.claim_us().round(),
                "empty_claims": total.empty_claims,
            }),
        );
    }
    for (variant, total) in VARIANTS.iter().zip(totals).skip(1) {
        out.insert(
            format!("cost_ratio_{}", variant.name()),
            json!({
                "per_task": round2(today.rate() / total.rate().max(f64::EPSILON)),
                "per_claim": round2(total.claim_us() / today.claim_us().max(f64::EPSILON)),
            }),
        );
    }
    Value::Object(out)
}

/// One measured slice of `variant` at `n` workers through `store`.
async fn slice(store: &PgStore, n: usize, variant: Variant) -> anyhow::Result<Slice> {
    let claims = Arc::new(AtomicU64::new(0));
    let claim_nanos = Arc::new(AtomicU64::new(0));
    let empty = Arc::new(AtomicU64::new(0));
    let store = store.clone();
    let counters = (claims.clone(), claim_nanos.clone(), empty.clone());
    let (tasks, time) = measure(n, move |i, stop, count| {
        let store = store.clone();
        let (claims, claim_nanos, empty) = counters.clone();
        async move {
            let spec = variant.spec(i)?;
            let request = ClaimRequest::new(variant.worker(i), variant.backend());
            live_worker_on(&store, &request.worker_id, variant.backend()).await?;
            while !stop.load(Ordering::Relaxed) {
                store.create_task(spec.clone()).await?;
                let started = Instant::now();
                let claimed = store.claim(&request).await?;
                claim_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                claims.fetch_add(1, Ordering::Relaxed);
                match claimed {
                    Some(task) => {
                        store.finish(task.lease_token(), noop_outcome()).await?;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        empty.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        }
    })
    .await?;
    // The claim counters include the warmup's calls: a mean per call all the same.
    Ok(Slice {
        tasks,
        time,
        claims: claims.load(Ordering::Relaxed),
        claim_time: Duration::from_nanos(claim_nanos.load(Ordering::Relaxed)),
        empty_claims: empty.load(Ordering::Relaxed),
    })
}
