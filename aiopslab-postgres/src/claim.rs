//! The claim: pending → running for a worker, in one statement, with fair share between experiments.
//!
//! The statement ([`sql::CLAIM_MANY`]) picks the best matching pending tasks and locks them with `FOR UPDATE SKIP
//! LOCKED`, so concurrent claimers never wait on each other for a task and never get the same row; the `UPDATE`
//! then sets the worker, a new attempt and the lease, and returns the rows. Claims that arrive together (see the
//! `coalesce` module) share one statement per backend type and problem set: it takes as many tasks as the claimers
//! asked for in all (a claimer with several free slots asks for several, `ClaimRequest::max_tasks`) and hands each
//! its share.
//!
//! **The best tasks.** Highest priority first; among tasks of one priority, the experiments in turn (least recently
//! served first, by the store's [`Rotation`], which it passes to the statement; tasks without an experiment are one
//! class of it), within each the oldest; never beyond an experiment's `max_running`. Without pending tasks of an
//! experiment the statement is the plain claim of before (one index walk of `tasks_pending_plain_idx`).
//!
//! **Why a limit holds under racing claimers (READ COMMITTED, `SKIP LOCKED`).** Counting an experiment's running
//! tasks in the claim's own snapshot is not enough: two claims whose snapshots were taken before either committed
//! would both see room for the last slot (the conformance check `fair_share_limits_hold_under_racing_claimers`
//! catches exactly that when the fence below is left out). So:
//!
//! 1. Once a claim has ranked the tasks it wants, it locks the rows of the limited experiments among them (`FOR NO
//!    KEY UPDATE`, in name order, waiting). No claim ever waits for a task's lock (those are all `SKIP LOCKED`),
//!    so these waits cannot deadlock. Claims that start tasks of one limited experiment are thereby serialized
//!    from that lock to their commit. A lock that waited returns the row as its holder committed it, not as the
//!    statement's snapshot saw it.
//! 2. The row carries `started`, which every such claim increases, in the same statement, by the tasks it started.
//!    So the claims that started tasks of the experiment after this statement's snapshot was taken — invisible to
//!    the snapshot's count of running tasks — are exactly `started` as locked less `started` as in the snapshot.
//!    The statement reads both (the locking read and a plain read of the same row) and starts at most
//!    `max_running - running_in_snapshot - (started_now - started_in_snapshot)` of the experiment's tasks. Runs that
//!    ended after the snapshot are not seen, which can only make it start fewer: never more than the limit.
//! 3. A limit itself changes only under `LOCK TABLE experiments IN EXCLUSIVE MODE` (`PUT /experiments/{name}`),
//!    which conflicts with the lock every claim statement takes on the table when it starts (it always names the
//!    table). A relation lock is taken before the statement's snapshot, so the change waits for the claims in
//!    flight, and the claims that follow see it: no claim runs under a limit that a concurrent claim does not see.
//!
//! Claims of unlimited experiments and of tasks without one lock nothing but their tasks (`SKIP LOCKED`, streamed
//! past the rows other claimers hold), as before. A claim that waited for an experiment's row and then finds its
//! last slot taken starts fewer tasks than it ranked (the next claim ranks again). The statement is planned once
//! per connection (see the `connections` module).
//!
//! Only registered, live workers claim: the statements hand tasks to live claimers only, and a claimer that got
//! nothing is then looked up, so an unknown worker gets `NotFound` and an offline one its refusal rather than an
//! empty answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::PoisonError;

use aiopslab_core::rotation::Rotation;
use aiopslab_core::sanitize::sanitized_ref;
use aiopslab_core::{ClaimRequest, StoreError, StoreResult, Task, TaskId};

use crate::lease::attempt;
use crate::rows::TaskRow;
use crate::sql;
use crate::PgStore;

/// What a claimer wants: a backend type and, optionally, a set of problems.
type ClaimKind<'a> = (&'a str, Option<&'a Vec<String>>);

/// Claimed tasks best first: priority, then age, then id (a statement returns its rows in no set order).
fn claim_order(a: &Task, b: &Task) -> std::cmp::Ordering {
    b.parameters
        .priority
        .cmp(&a.parameters.priority)
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}

/// How many experiments of the rotation a claim passes to the statement (the most recently served; the others
/// count as never served, which is nearly what they are).
const ROTATION_SENT: usize = 256;

/// The rotation as the claim statement binds it: experiments and their turns, and the turn of the tasks without one.
struct Turns {
    experiments: Vec<String>,
    turns: Vec<i64>,
    plain: i64,
}

fn turn(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Turns {
    /// The rotation for a statement that starts while `concurrent` other claim statements of this store run: the
    /// `concurrent` classes served least recently (those the others are about to serve) count as served last, so
    /// racing statements of one store spread over the experiments instead of all ranking the same one first.
    fn of(rotation: &Rotation, concurrent: usize) -> Self {
        let mut recent = rotation.recent(ROTATION_SENT);
        if concurrent > 0 && recent.len() > 1 {
            recent.sort_by_key(|(_, served)| *served);
            let last = recent.last().map_or(0, |(_, served)| *served);
            let shifted = concurrent % recent.len();
            for (i, (_, served)) in recent.iter_mut().take(shifted).enumerate() {
                *served = last + 1 + i as u64;
            }
        }
        let mut turns = Self {
            experiments: Vec::new(),
            turns: Vec::new(),
            plain: turn(rotation.turn(&None)),
        };
        for (class, served) in recent {
            match class {
                Some(name) => {
                    turns.experiments.push(name);
                    turns.turns.push(turn(served));
                }
                None => turns.plain = turn(served),
            }
        }
        turns
    }
}

/// Counts a claim statement of this store as running while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Enters; returns how many others were running.
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        let others = counter.fetch_add(1, Ordering::AcqRel);
        (Self(counter), others)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PgStore {
    /// Claims up to `request.max_tasks` of the best matching pending tasks for `request.worker_id`, best first.
    #[tracing::instrument(skip_all, fields(worker_id = %request.worker_id, backend_type = %request.backend_type))]
    pub(crate) async fn claim_tasks(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        request.validate()?;
        let request = &*sanitized_ref(request);
        let tasks = match request.task_id {
            Some(task_id) => self.claim_by_id(request, task_id).await?.into_iter().collect(),
            None => {
                self.coalesced(
                    &self.inner.claims,
                    request.clone(),
                    PgStore::flush_claims,
                    PgStore::release,
                )
                .await?
            }
        };
        for task in &tasks {
            tracing::debug!(task_id = %task.id, attempt = task.attempt, "task claimed");
        }
        Ok(tasks)
    }

    /// Claims one given task if it is pending and matches.
    async fn claim_by_id(&self, request: &ClaimRequest, task_id: TaskId) -> StoreResult<Option<Task>> {
        let intervals = self.intervals();
        let query = sqlx::query_as::<_, TaskRow>(sql::CLAIM_BY_ID)
            .bind(&request.backend_type)
            .bind(&request.supported_problems)
            .bind(intervals.dispatch_delay)
            .bind(&request.worker_id)
            .bind(intervals.lease)
            .bind(task_id)
            .bind(intervals.worker_offline_after);
        let mut conn = self.conn_planning_once("claim").await?;
        let result = query.fetch_optional(conn.raw()).await;
        let row = conn.done("claim", result)?;
        match row {
            Some(row) => {
                let task = Task::try_from(row)?;
                self.served(std::slice::from_ref(&task));
                Ok(Some(task))
            }
            None => {
                let mut refused = self.refusals(&[request.worker_id.as_str()]).await?;
                refused.remove(request.worker_id.as_str()).map_or(Ok(None), Err)
            }
        }
    }

    /// Why each of `workers` (claimers that got nothing) may not claim: `NotFound` for an unknown worker, the
    /// offline refusal for one that is not live. Live workers are absent: nothing matched for them.
    async fn refusals(&self, workers: &[&str]) -> StoreResult<HashMap<String, StoreError>> {
        let mut conn = self.conn("claim").await?;
        let result: Result<Vec<(String, bool)>, sqlx::Error> = sqlx::query_as(sql::WORKERS_LIVE)
            .bind(workers)
            .bind(self.intervals().worker_offline_after)
            .fetch_all(conn.raw())
            .await;
        let live: HashMap<String, bool> = conn.done("claim", result)?.into_iter().collect();
        let offline_after = self.policy().worker_offline_after;
        Ok(workers
            .iter()
            .filter_map(|&id| match live.get(id) {
                Some(true) => None,
                Some(false) => Some((id.to_string(), StoreError::worker_offline(id, offline_after))),
                None => Some((id.to_string(), StoreError::worker_not_found(id))),
            })
            .collect())
    }

    /// Hands back a task claimed for a caller that gave up before the claim reached it: back to pending under its
    /// previous attempt number (the lease was never handed out, so no retry is spent), in the background.
    fn release(&self, tasks: Vec<Task>) {
        for task in tasks {
            self.release_one(task);
        }
    }

    /// Hands back one such task (see [`PgStore::release`]).
    fn release_one(&self, task: Task) {
        let store = self.clone();
        tokio::spawn(async move {
            let lease = task.lease_token();
            let result = match store.conn("release_claim").await {
                Ok(mut conn) => {
                    let result = sqlx::query(sql::RELEASE_CLAIM)
                        .bind(lease.task_id)
                        .bind(attempt(lease))
                        .execute(conn.raw())
                        .await;
                    conn.done("release_claim", result).map(|_| ())
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => tracing::debug!(task_id = %lease.task_id, "claim handed back: its caller gave up"),
                Err(error) => tracing::warn!(
                    task_id = %lease.task_id, %error,
                    "could not hand back a claim whose caller gave up; the sweep requeues it when its lease expires"
                ),
            }
        });
    }

    /// Writes one batch of claims: one statement per distinct (backend type, problem set), each claimer getting at
    /// most the `max_tasks` it asked for.
    async fn flush_claims(self, requests: Vec<ClaimRequest>) -> Vec<StoreResult<Vec<Task>>> {
        let mut results: Vec<StoreResult<Vec<Task>>> = requests.iter().map(|_| Ok(Vec::new())).collect();
        // Claimers that want the same tasks: (backend type, problem set) → indices of their requests.
        let mut groups: Vec<(ClaimKind, Vec<usize>)> = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let kind = (request.backend_type.as_str(), request.supported_problems.as_ref());
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, members)) => members.push(i),
                None => groups.push((kind, vec![i])),
            }
        }
        for ((backend_type, problems), members) in groups {
            // One claimer slot per task asked for: the statement hands one task to each slot, in this order.
            let workers: Vec<&str> = members
                .iter()
                .flat_map(|&i| std::iter::repeat_n(requests[i].worker_id.as_str(), requests[i].max_tasks as usize))
                .collect();
            match self.claim_next(backend_type, problems, &workers).await {
                Ok(tasks) => {
                    // Best first for each worker: the statement returns rows in no set order.
                    let mut by_worker: HashMap<String, Vec<Task>> = HashMap::new();
                    for task in tasks {
                        by_worker
                            .entry(task.worker_id.clone().unwrap_or_default())
                            .or_default()
                            .push(task);
                    }
                    for tasks in by_worker.values_mut() {
                        tasks.sort_by(claim_order);
                    }
                    for &i in &members {
                        let wanted = requests[i].max_tasks as usize;
                        let share = by_worker
                            .get_mut(&requests[i].worker_id)
                            .map_or_else(Vec::new, |tasks| {
                                let take = wanted.min(tasks.len());
                                tasks.drain(..take).collect()
                            });
                        results[i] = Ok(share);
                    }
                    // Claimers that got nothing: not live, or nothing matched.
                    let empty: Vec<&str> = members
                        .iter()
                        .filter(|&&i| matches!(&results[i], Ok(tasks) if tasks.is_empty()))
                        .map(|&i| requests[i].worker_id.as_str())
                        .collect();
                    if !empty.is_empty() {
                        match self.refusals(&empty).await {
                            Ok(refused) => {
                                for &i in &members {
                                    if let (Ok(tasks), Some(error)) = (&results[i], refused.get(&requests[i].worker_id))
                                    {
                                        if tasks.is_empty() {
                                            results[i] = Err(error.clone());
                                        }
                                    }
                                }
                            }
                            Err(error) => {
                                for &i in &members {
                                    if matches!(&results[i], Ok(tasks) if tasks.is_empty()) {
                                        results[i] = Err(error.clone());
                                    }
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    for &i in &members {
                        results[i] = Err(error.clone());
                    }
                }
            }
        }
        results
    }

    /// One claim statement: up to one task for each entry of `workers` (a worker named n times gets up to n).
    #[tracing::instrument(skip(self, problems), fields(claimers = workers.len()))]
    async fn claim_next(
        &self,
        backend_type: &str,
        problems: Option<&Vec<String>>,
        workers: &[&str],
    ) -> StoreResult<Vec<Task>> {
        let intervals = self.intervals();
        let (_in_flight, concurrent) = InFlight::enter(&self.inner.claims_in_flight);
        let turns = Turns::of(&self.rotation(), concurrent);
        let statement = match problems {
            Some(_) => sql::CLAIM_MANY,
            None => sql::CLAIM_MANY_ANY_PROBLEM,
        };
        let query = sqlx::query_as::<_, TaskRow>(statement)
            .bind(backend_type)
            .bind(problems)
            .bind(intervals.dispatch_delay)
            .bind(workers)
            .bind(intervals.lease)
            .bind(intervals.worker_offline_after)
            .bind(&turns.experiments)
            .bind(&turns.turns)
            .bind(turns.plain);
        let mut conn = self.conn_planning_once("claim").await?;
        let result = query.fetch_all(conn.raw()).await;
        let rows = conn.done("claim", result)?;
        let tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<StoreResult<Vec<Task>>>()?;
        self.served(&tasks);
        Ok(tasks)
    }

    /// The store's rotation, locked (a poisoned lock still holds a usable rotation: it is only a preference).
    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        self.inner.rotation.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the rotation on by the tasks a statement started, in claim order (priority, then age), so the class
    /// served last in the statement is the most recently served.
    fn served(&self, tasks: &[Task]) {
        if tasks.is_empty() {
            return;
        }
        let mut order: Vec<&Task> = tasks.iter().collect();
        order.sort_by(|a, b| claim_order(a, b));
        let mut rotation = self.rotation();
        for task in order {
            rotation.serve(&task.experiment);
        }
    }
}
