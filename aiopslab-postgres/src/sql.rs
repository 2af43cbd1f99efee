//! Every SQL statement the store runs, in one place.
//!
//! Statements are plain strings run with `sqlx::query`/`query_as` (no compile-time checked macros, so a fresh
//! clone builds without a database). Each is one atomic statement: state changes are conditional `UPDATE`s whose
//! `WHERE` carries the rule (a status, a lease token), so concurrent callers and server replicas never apply a
//! transition twice. Times are always the database's `now()`; durations are bound as `interval` parameters.
//!
//! Lookups by task id wrap their other conditions in `(...) IS TRUE`: the conditions still hold, but the planner
//! cannot use them to pick a status index over the primary key. (With the plain form it sometimes did, and then
//! walked every dead `running` entry of a partial index to find one row.)
//!
//! The only dynamic SQL is the task listing ([`list_tasks`]): its filters and sort are assembled here from fixed
//! fragments, and every value is a bind parameter.

use aiopslab_core::{TaskFilter, TaskSort};

/// The columns of `tasks`, in the order [`crate::rows::TaskRow`] reads them.
macro_rules! task_columns {
    () => {
        "id, problem_id, status, agent_config, max_steps, timeout_minutes, priority, callback_url, metadata, \
         backend_type, max_retries, worker_id, attempt, cancel_requested, created_at, updated_at, started_at, \
         completed_at, lease_expires_at, result, error_details, group_id, replaces, experiment"
    };
}

/// The columns of `workers`, in the order [`crate::rows::WorkerRow`] reads them.
macro_rules! worker_columns {
    () => {
        "id, backend_type, status, max_parallel_tasks, supported_problems, metadata, current_task_id, \
         tasks_completed, tasks_failed, instance_id, registered_at, last_heartbeat"
    };
}

// ---------------------------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------------------------

/// Inserts many pending tasks in one statement, from parallel arrays, all in group `$11` (NULL: no group): `$1` ids,
/// `$2` problem_ids, `$3` agent_configs, `$4` max_steps, `$5` timeout_minutes, `$6` priorities, `$7` callback_urls,
/// `$8` metadata, `$9` backend_types, `$10` max_retries, `$12` experiments. With a group, its row (migration 007)
/// is written in the same statement: `$13` min_valid, `$14` max_refills. Single creates arrive here too, coalesced.
pub(crate) const INSERT_TASKS: &str = concat!(
    "WITH new_group AS (\
        INSERT INTO task_groups (group_id, size, min_valid, max_refills) \
        SELECT $11::uuid, cardinality($1::uuid[]), $13::int4, $14::int4 \
        WHERE $11::uuid IS NOT NULL AND cardinality($1::uuid[]) > 0\
     ) \
     INSERT INTO tasks (id, problem_id, agent_config, max_steps, timeout_minutes, priority, callback_url, metadata, \
     backend_type, max_retries, experiment, group_id) \
     SELECT u.*, $11::uuid FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int4[], $5::int4[], $6::int2[], \
     $7::text[], $8::jsonb[], $9::text[], $10::int4[], $12::text[]) AS u RETURNING ",
    task_columns!()
);

/// [`INSERT_TASKS`] under an idempotency key, one statement: the key is recorded (`$13` key, `$14` fingerprint)
/// and the tasks (and their group's row: `$15` min_valid, `$16` max_refills) inserted only if the key was new. No
/// row when the key already existed (a concurrent request with the key waits for the first to commit, then finds
/// it).
pub(crate) const INSERT_TASKS_WITH_KEY: &str = concat!(
    "WITH new_key AS (\
        INSERT INTO idempotency_keys (key, fingerprint, group_id, task_ids) VALUES ($13, $14, $11::uuid, $1::uuid[]) \
        ON CONFLICT (key) DO NOTHING RETURNING key\
     ), new_group AS (\
        INSERT INTO task_groups (group_id, size, min_valid, max_refills) \
        SELECT $11::uuid, cardinality($1::uuid[]), $15::int4, $16::int4 \
        WHERE $11::uuid IS NOT NULL AND cardinality($1::uuid[]) > 0 AND EXISTS (SELECT 1 FROM new_key)\
     ) \
     INSERT INTO tasks (id, problem_id, agent_config, max_steps, timeout_minutes, priority, callback_url, metadata, \
     backend_type, max_retries, experiment, group_id) \
     SELECT u.*, $11::uuid FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int4[], $5::int4[], $6::int2[], \
     $7::text[], $8::jsonb[], $9::text[], $10::int4[], $12::text[]) AS u \
     WHERE EXISTS (SELECT 1 FROM new_key) RETURNING ",
    task_columns!()
);

/// What the store keeps of a batch group (migration 007). `$1` group id.
pub(crate) const SELECT_GROUP: &str =
    "SELECT group_id, size, min_valid, max_refills, refills FROM task_groups WHERE group_id = $1";

/// The first request of an idempotency key. `$1` key.
pub(crate) const SELECT_IDEMPOTENCY_KEY: &str =
    "SELECT fingerprint, group_id, task_ids FROM idempotency_keys WHERE key = $1";

/// Tasks by id, in the order of the ids given. `$1` ids.
pub(crate) const SELECT_TASKS_IN_ORDER: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks JOIN UNNEST($1::uuid[]) WITH ORDINALITY AS wanted(wanted_id, n) ON id = wanted.wanted_id \
     ORDER BY wanted.n"
);

/// Announces newly created tasks, after their INSERT committed: one notification per distinct backend type.
/// A statement of its own because a transaction that NOTIFYs holds a database-wide lock until its commit is
/// flushed; this one writes nothing, so it commits without waiting for a flush. `$1` backend types.
pub(crate) const NOTIFY_TASKS_AVAILABLE: &str =
    "SELECT pg_notify('aiopslab_task_available', b) FROM (SELECT DISTINCT unnest($1::text[]) AS b) AS types";

/// One task by id. `$1` id.
pub(crate) const SELECT_TASK: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");

/// Whether a task exists. `$1` id.
pub(crate) const TASK_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)";

/// Cancels a live task: pending becomes `cancelled` at once (and, with a `callback_url`, gets a webhook delivery in
/// the same statement), running gets `cancel_requested` (a trigger notifies `aiopslab_cancel`). Returns the new
/// status; no row when the task is unknown or already terminal. `$1` id.
pub(crate) const CANCEL_TASK: &str = "WITH changed AS (\
        UPDATE tasks SET \
            status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END, \
            completed_at = CASE WHEN status = 'pending' THEN now() ELSE completed_at END, \
            cancel_requested = CASE WHEN status = 'running' THEN true ELSE cancel_requested END, \
            updated_at = now() \
        WHERE id = $1 AND (status IN ('pending', 'running')) IS TRUE \
        RETURNING id, status, callback_url\
     ), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM changed \
        WHERE status = 'cancelled' AND callback_url IS NOT NULL\
     ) \
     SELECT status FROM changed";

/// The status of a task. `$1` id.
pub(crate) const SELECT_TASK_STATUS: &str = "SELECT status FROM tasks WHERE id = $1";

/// The statements of one `GET /tasks` listing (see [`list_tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListSql {
    /// The page: the filters' parameters, then `limit` and `offset`.
    pub(crate) page: String,
    /// How many rows match, counted up to a cap: the filters' parameters, then the cap. Reads at most the cap's
    /// rows, however many match.
    pub(crate) capped_count: String,
    /// The planner's estimate of the matching rows, as `EXPLAIN (FORMAT JSON)`: the filters' parameters.
    pub(crate) estimate: String,
}

/// Builds the statements of `GET /tasks` for `filter`. The status, from a closed set, is written into the SQL as a
/// literal so the planner can use the partial index of that status; the other filters appear in the order
/// problem_id, worker_id, backend_type, experiment, group_id, each bound as the next parameter when present; the
/// page query then binds `limit` and `offset`, the capped count its cap. (Filters on status and backend type alone
/// are counted from [`COUNT_MAINTAINED`] instead.)
pub(crate) fn list_tasks(filter: &TaskFilter, sort: TaskSort) -> ListSql {
    let mut conditions = Vec::new();
    let mut n = 0;
    for (present, column) in [
        (filter.problem_id.is_some(), "problem_id"),
        (filter.worker_id.is_some(), "worker_id"),
        (filter.backend_type.is_some(), "backend_type"),
        (filter.experiment.is_some(), "experiment"),
        (filter.group_id.is_some(), "group_id"),
    ] {
        if present {
            n += 1;
            conditions.push(format!("{column} = ${n}"));
        }
    }
    if let Some(status) = filter.status {
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let order = match sort {
        TaskSort::CreatedAsc => "created_at ASC, id ASC",
        TaskSort::CreatedDesc => "created_at DESC, id DESC",
        TaskSort::PriorityAsc => "priority ASC, created_at ASC, id ASC",
        TaskSort::PriorityDesc => "priority DESC, created_at ASC, id ASC",
    };
    let page = format!(
        "SELECT {} FROM tasks{where_clause} ORDER BY {order} LIMIT ${} OFFSET ${}",
        task_columns!(),
        n + 1,
        n + 2
    );
    let capped_count = format!(
        "SELECT count(*) FROM (SELECT 1 FROM tasks{where_clause} LIMIT ${}) AS capped",
        n + 1
    );
    let estimate = format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM tasks{where_clause}");
    ListSql {
        page,
        capped_count,
        estimate,
    }
}

/// How many tasks match a status and a backend type, from the maintained counts (migration 005): exact, and a
/// read of a few rows whatever the table's size. `$1` status (NULL: any), `$2` backend type (NULL: any).
pub(crate) const COUNT_MAINTAINED: &str = "SELECT COALESCE(sum(n), 0)::int8 FROM (\
        SELECT status, backend_type, n FROM task_counts \
        UNION ALL SELECT status, backend_type, n FROM task_count_deltas\
     ) AS counted \
     WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR backend_type = $2::text)";

// ---------------------------------------------------------------------------------------------------------------
// Claim
// ---------------------------------------------------------------------------------------------------------------

/// The limited experiments among `$cond`, as the statement's snapshot sees them (a limit cannot change while a
/// claim runs: see [`LOCK_EXPERIMENTS`]): `limited_name`, `limited_max`, and `started_then`, the `started` counter
/// in the snapshot.
macro_rules! limited {
    ($cond:literal) => {
        concat!(
            "SELECT name AS limited_name, max_running AS limited_max, started AS started_then FROM experiments \
             WHERE max_running IS NOT NULL AND ",
            $cond
        )
    };
}

/// The running tasks of the `limited` experiments in the statement's snapshot, per experiment: `running_experiment`,
/// `running_n` (read from the running tasks, a fleet's worth).
macro_rules! running {
    () => {
        "SELECT experiment AS running_experiment, count(*) AS running_n FROM tasks \
         WHERE status = 'running' AND experiment IN (SELECT limited_name FROM limited) GROUP BY experiment"
    };
}

/// The claim's fence: the rows of the limited experiments among `$cond`, locked `FOR NO KEY UPDATE` in name order
/// (waiting for a claim that holds one; two claims locking several never deadlock, and a claim locks them before
/// any task), read as they are now — a lock returns the row's latest committed version, not the statement's
/// snapshot. `fenced_name`, and `started_now`, the `started` counter now.
macro_rules! fence {
    ($cond:literal) => {
        concat!(
            "SELECT name AS fenced_name, started AS started_now FROM experiments \
             WHERE max_running IS NOT NULL AND ",
            $cond,
            " ORDER BY name FOR NO KEY UPDATE"
        )
    };
}

/// How many more tasks a fenced experiment may start (`limited`, `running` and `fence` joined): its limit, less
/// its running tasks in the snapshot, less the tasks fenced claims started since the snapshot was taken (`started`
/// now less `started` then). Possibly negative.
macro_rules! allowed {
    () => {
        "limited.limited_max - COALESCE(running.running_n, 0) - (fence.started_now - limited.started_then)"
    };
}

/// Counts what `claimed` started into the `started` of each fenced experiment (a row this statement holds).
macro_rules! fenced {
    () => {
        "UPDATE experiments SET started = started + served.n \
         FROM (SELECT experiment AS served_experiment, count(*) AS n FROM claimed \
               WHERE experiment IS NOT NULL GROUP BY experiment) AS served \
         WHERE name = served.served_experiment AND name IN (SELECT fenced_name FROM fence)"
    };
}

/// `FROM tasks WHERE` the pending tasks of the claim's backend type (`$1`) in one class (`$class`: an
/// experiment, or none) that its claimers may take: `$problems` (the problem filter) and the dispatch delay (`$3`).
macro_rules! claimable {
    ($class:literal, $problems:literal) => {
        concat!(
            "FROM tasks WHERE status = 'pending' AND backend_type = $1 AND ",
            $class,
            " AND (",
            $problems,
            ") AND ($3::interval = interval '0' OR created_at <= now() - $3::interval)"
        )
    };
}

/// The claim (the text of [`CLAIM_MANY`] and [`CLAIM_MANY_ANY_PROBLEM`], `$problems` the problem filter), one
/// statement for any number of claimers of one backend type and problem set, with fair share between experiments. `$1` backend_type, `$2` supported problems (NULL: any), `$3` dispatch delay, `$4` claimer worker ids
/// (one per wanted task; a worker may appear more than once), `$5` lease duration, `$6` offline threshold, `$7` and
/// `$8` the rotation (experiments and when each was last served; absent: never), `$9` when the tasks without an
/// experiment were last served. Returns the claimed rows (fewer than the claimers when the queue runs short, a
/// claimer is not live, or the tasks left belong to experiments at their limit); each row's `worker_id` says whose.
/// Run on a session that plans it once (see `connections`).
///
/// - `named`: the experiments with pending tasks of this backend type, by a skip scan of
///   `tasks_pending_experiment_idx` (one probe per experiment). None: the statement is the plain claim of old —
///   the best tasks of `tasks_pending_plain_idx`, `FOR UPDATE SKIP LOCKED`, streamed past the rows other claimers
///   hold — and nothing else runs but two empty probes.
/// - `limited`, `running`, `room`: how many tasks each experiment may start, as the snapshot sees it.
/// - `pool`: the best `room` tasks of each experiment and the best tasks without one, numbered within their
///   experiment and priority; `ranked`: the best of them for the claimers, by priority, then that number (so
///   several slots interleave the experiments), then the rotation (least recently served first), then age.
/// - `slots`, `fence`, `take`: how many of the ranked slots each experiment fills; a limited one only as many as
///   its fence allows, once its row is locked (see the `claim` module for why this is exact).
/// - `candidate`: for each experiment its `take` best tasks, and as many tasks without an experiment as were
///   ranked, each streamed from its queue `FOR UPDATE SKIP LOCKED` (past the rows other claimers hold, so racing
///   claimers do not come back empty while tasks are left).
macro_rules! claim_many {
    ($problems:literal) => {
        concat!(
            "WITH RECURSIVE named AS (\
        (SELECT experiment AS named_experiment FROM tasks \
         WHERE status = 'pending' AND backend_type = $1 AND experiment IS NOT NULL \
         ORDER BY experiment LIMIT 1) \
        UNION ALL \
        SELECT (SELECT t.experiment FROM tasks t \
                WHERE t.status = 'pending' AND t.backend_type = $1 AND t.experiment > named.named_experiment \
                ORDER BY t.experiment LIMIT 1) \
        FROM named WHERE named.named_experiment IS NOT NULL\
     ), limited AS (",
            limited!("name IN (SELECT named_experiment FROM named)"),
            "), running AS (",
            running!(),
            "), room AS (\
        SELECT named_experiment AS room_experiment, \
            CASE WHEN limited.limited_name IS NULL THEN cardinality($4::text[]) \
                 ELSE least(cardinality($4::text[]), \
                            greatest(0, limited.limited_max - COALESCE(running.running_n, 0))) END AS room_size \
        FROM named LEFT JOIN limited ON limited.limited_name = named.named_experiment \
            LEFT JOIN running ON running.running_experiment = named.named_experiment \
        WHERE named.named_experiment IS NOT NULL\
     ), pool AS (\
        SELECT pooled.*, row_number() OVER (PARTITION BY pool_experiment, pool_priority \
                                            ORDER BY pool_created, pool_id) AS pool_n \
        FROM (\
            SELECT heads.* FROM room CROSS JOIN LATERAL (\
                SELECT id AS pool_id, priority AS pool_priority, created_at AS pool_created, \
                       experiment AS pool_experiment ",
            claimable!("experiment = room.room_experiment", $problems),
            " ORDER BY priority DESC, created_at, id LIMIT room.room_size\
            ) AS heads \
            UNION ALL \
            (SELECT id, priority, created_at, NULL::text ",
            claimable!("experiment IS NULL", $problems),
            " AND EXISTS (SELECT 1 FROM named WHERE named_experiment IS NOT NULL) \
             ORDER BY priority DESC, created_at, id LIMIT cardinality($4::text[]))\
        ) AS pooled\
     ), ranked AS (\
        SELECT pool_id, pool_experiment FROM pool \
        LEFT JOIN UNNEST($7::text[], $8::int8[]) AS turn(turn_experiment, turn_seq) \
            ON turn.turn_experiment = pool.pool_experiment \
        ORDER BY pool_priority DESC, pool_n, \
            CASE WHEN pool_experiment IS NULL THEN $9::int8 ELSE COALESCE(turn.turn_seq, 0) END, \
            pool_created, pool_id \
        LIMIT cardinality($4::text[])\
     ), slots AS (\
        SELECT pool_experiment AS slot_experiment, count(*) AS slot_n FROM ranked \
        WHERE pool_experiment IS NOT NULL GROUP BY pool_experiment\
     ), fence AS (",
            fence!("name IN (SELECT slot_experiment FROM slots)"),
            "), take AS (\
        SELECT slot_experiment AS take_experiment, \
            CASE WHEN limited.limited_name IS NULL THEN slot_n \
                 ELSE least(slot_n, greatest(0, ",
            allowed!(),
            ")) END AS take_n \
        FROM slots LEFT JOIN limited ON limited.limited_name = slots.slot_experiment \
            LEFT JOIN running ON running.running_experiment = slots.slot_experiment \
            LEFT JOIN fence ON fence.fenced_name = slots.slot_experiment\
     ), candidate AS (\
        SELECT fair.fair_id AS candidate_id FROM take CROSS JOIN LATERAL (\
            SELECT id AS fair_id ",
            claimable!("experiment = take.take_experiment", $problems),
            " ORDER BY priority DESC, created_at, id LIMIT take.take_n \
            FOR UPDATE SKIP LOCKED\
        ) AS fair \
        UNION ALL \
        SELECT plain_id FROM (\
            SELECT id AS plain_id ",
            claimable!("experiment IS NULL", $problems),
            " ORDER BY priority DESC, created_at, id \
            LIMIT CASE WHEN EXISTS (SELECT 1 FROM named WHERE named_experiment IS NOT NULL) \
                       THEN (SELECT count(*) FROM ranked WHERE pool_experiment IS NULL) \
                       ELSE cardinality($4::text[]) END \
            FOR UPDATE SKIP LOCKED\
        ) AS plain\
     ), assigned AS (\
        SELECT candidate_id, claimer_id \
        FROM (SELECT candidate_id, row_number() OVER () AS n FROM candidate) AS numbered \
        JOIN (\
            SELECT claimer_id, row_number() OVER (ORDER BY claimer.ord) AS n \
            FROM UNNEST($4::text[]) WITH ORDINALITY AS claimer(claimer_id, ord) \
            WHERE EXISTS (SELECT 1 FROM workers WHERE workers.id = claimer.claimer_id \
                AND workers.status <> 'offline' AND workers.last_heartbeat >= now() - $6::interval)\
        ) AS live USING (n)\
     ), claimed AS (\
        UPDATE tasks SET status = 'running', worker_id = assigned.claimer_id, started_at = now(), \
            attempt = attempt + 1, lease_expires_at = now() + $5::interval, cancel_requested = false, \
            completed_at = NULL, updated_at = now() \
        FROM assigned WHERE id = assigned.candidate_id \
        RETURNING ",
            task_columns!(),
            "), fenced AS (",
            fenced!(),
            ") SELECT * FROM claimed"
        )
    };
}

/// [`claim_many`] for claimers with a problem set (`$2`).
pub(crate) const CLAIM_MANY: &str = claim_many!("problem_id = ANY($2::text[])");

/// [`claim_many`] for claimers of any problem (`$2` NULL). The filter on problems, which only the heap holds, is
/// left out, so reading the experiments' heads (the pool) can stay in the index.
pub(crate) const CLAIM_MANY_ANY_PROBLEM: &str = claim_many!("$2::text[] IS NULL");

/// Hands a claimed task back to pending under its previous attempt, if it is still running under this claim: for
/// a claim whose caller gave up before it was delivered. `$1` task id, `$2` attempt.
pub(crate) const RELEASE_CLAIM: &str = "UPDATE tasks SET status = 'pending', worker_id = NULL, started_at = NULL, \
        lease_expires_at = NULL, attempt = attempt - 1, updated_at = now() \
     WHERE id = $1 AND (attempt = $2 AND status = 'running') IS TRUE";

/// Claims one given task if it is pending, matches, and its experiment (if any) has room, for a live worker. `$1`
/// backend_type, `$2` supported problems, `$3` dispatch delay, `$4` worker id, `$5` lease duration, `$6` task id, `$7`
/// offline threshold. The experiment's fence as in [`CLAIM_MANY`]. Run on a session that plans it once.
pub(crate) const CLAIM_BY_ID: &str = concat!(
    "WITH candidate AS (\
        SELECT id AS candidate_id, experiment AS candidate_experiment FROM tasks \
        WHERE id = $6 AND (status = 'pending' AND backend_type = $1) IS TRUE \
          AND ($2::text[] IS NULL OR problem_id = ANY($2::text[])) \
          AND ($3::interval = interval '0' OR created_at <= now() - $3::interval) \
          AND EXISTS (SELECT 1 FROM workers WHERE workers.id = $4 \
              AND workers.status <> 'offline' AND workers.last_heartbeat >= now() - $7::interval) \
        FOR UPDATE SKIP LOCKED\
     ), limited AS (",
    limited!("name = (SELECT candidate_experiment FROM candidate)"),
    "), running AS (",
    running!(),
    "), fence AS (",
    fence!("name IN (SELECT limited_name FROM limited)"),
    "), allowed AS (\
        SELECT candidate_id FROM candidate \
        WHERE NOT EXISTS (SELECT 1 FROM limited) \
           OR (SELECT ",
    allowed!(),
    " FROM limited JOIN fence ON fence.fenced_name = limited.limited_name \
               LEFT JOIN running ON running.running_experiment = limited.limited_name) >= 1\
     ), claimed AS (\
        UPDATE tasks SET status = 'running', worker_id = $4, started_at = now(), attempt = attempt + 1, \
            lease_expires_at = now() + $5::interval, cancel_requested = false, completed_at = NULL, \
            updated_at = now() \
        FROM allowed WHERE id = allowed.candidate_id \
        RETURNING ",
    task_columns!(),
    "), fenced AS (",
    fenced!(),
    ") SELECT * FROM claimed"
);

/// Which of some workers are live (not offline, heard from within the threshold); unknown workers have no row. `$1`
/// ids, `$2` offline threshold.
pub(crate) const WORKERS_LIVE: &str = "SELECT id, (status <> 'offline' AND last_heartbeat >= now() - $2::interval) \
     FROM workers WHERE id = ANY($1::text[])";

// ---------------------------------------------------------------------------------------------------------------
// Experiments
// ---------------------------------------------------------------------------------------------------------------

/// Taken before an experiment's limit changes, in the same transaction: `EXCLUSIVE` conflicts with the row locks
/// and writes every claim statement takes on `experiments` (it always names the table), so the change waits for
/// the claims in flight to commit, and the claims that follow wait for it — no claim runs under a limit another
/// claim does not see (see the `claim` module). Reads are not blocked.
pub(crate) const LOCK_EXPERIMENTS: &str = "LOCK TABLE experiments IN EXCLUSIVE MODE";

/// How long a limit change waits for the claims in flight before it gives up (and answers unavailable).
pub(crate) const EXPERIMENT_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";

/// Creates or replaces an experiment's settings. `$1` name, `$2` max_running (NULL: unlimited).
pub(crate) const UPSERT_EXPERIMENT: &str = "INSERT INTO experiments (name, max_running) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = now()";

/// Experiments with their limits and counts: every configured one and every one with pending or running tasks, by
/// name (`$1` NULL), or just `$1` (no row when it is neither configured nor has live tasks). `configured` says
/// whether it has a row.
pub(crate) const SELECT_EXPERIMENTS: &str = "WITH counted AS (\
        SELECT experiment AS counted_name, \
            count(*) FILTER (WHERE status = 'running') AS running, \
            count(*) FILTER (WHERE status = 'pending') AS pending \
        FROM tasks \
        WHERE status IN ('pending', 'running') AND experiment IS NOT NULL \
          AND ($1::text IS NULL OR experiment = $1::text) \
        GROUP BY experiment\
     ) \
     SELECT COALESCE(e.name, c.counted_name) AS name, e.max_running, \
        COALESCE(c.running, 0)::int8 AS running, COALESCE(c.pending, 0)::int8 AS pending \
     FROM (SELECT name, max_running FROM experiments WHERE $1::text IS NULL OR name = $1::text) AS e \
     FULL JOIN counted c ON c.counted_name = e.name \
     ORDER BY 1";

// ---------------------------------------------------------------------------------------------------------------
// Worker writes, fenced by the lease token (task id, attempt)
// ---------------------------------------------------------------------------------------------------------------

/// Extends one lease. `$1` task id, `$2` attempt, `$3` lease duration.
pub(crate) const EXTEND_LEASE: &str = "UPDATE tasks SET lease_expires_at = now() + $3::interval, updated_at = now() \
     WHERE id = $1 AND (attempt = $2 AND status = 'running') IS TRUE \
     RETURNING lease_expires_at, cancel_requested";

/// Finishes running tasks under their leases, any number in one statement: for each, the terminal status (or, for
/// a `failed` outcome with retries left and no cancel request, back to pending); the webhook delivery of each
/// terminal task with a `callback_url`; and the workers' counters. Parallel arrays, one entry per task (no task
/// twice): `$1` task ids, `$2` attempts, `$3` statuses, `$4` results, `$5` error details. Returns the rows that
/// changed; a task whose lease was not held is absent.
///
/// Each task is looked up and locked by its primary key (the `LATERAL` subquery), whatever the planner thinks of
/// the table's size. Run on a session that plans per run (see `connections`).
pub(crate) const FINISH_MANY: &str = concat!(
    "WITH held AS (\
        SELECT outcome.*, task.*, \
               (outcome_status = 'failed' AND task.held_attempt <= task.held_max_retries \
                AND NOT task.held_cancel_requested) AS requeue \
        FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::jsonb[], $5::jsonb[]) \
            AS outcome(outcome_id, outcome_attempt, outcome_status, outcome_result, outcome_error), \
        LATERAL (\
            SELECT id AS held_id, worker_id AS held_worker, attempt AS held_attempt, \
                   max_retries AS held_max_retries, cancel_requested AS held_cancel_requested \
            FROM tasks \
            WHERE id = outcome.outcome_id AND (attempt = outcome.outcome_attempt AND status = 'running') IS TRUE \
            FOR UPDATE\
        ) AS task\
     ), finished AS (\
        UPDATE tasks SET \
            status = CASE WHEN held.requeue THEN 'pending' ELSE held.outcome_status END, \
            result = CASE WHEN held.requeue THEN NULL ELSE held.outcome_result END, \
            error_details = held.outcome_error, \
            worker_id = CASE WHEN held.requeue THEN NULL ELSE worker_id END, \
            started_at = CASE WHEN held.requeue THEN NULL ELSE started_at END, \
            completed_at = CASE WHEN held.requeue THEN NULL ELSE now() END, \
            lease_expires_at = NULL, \
            updated_at = now() \
        FROM held WHERE id = ANY($1::uuid[]) AND id = held.held_id \
        RETURNING ",
    task_columns!(),
    "), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM finished \
        WHERE status <> 'pending' AND callback_url IS NOT NULL\
     ), counted AS (\
        UPDATE workers SET \
            tasks_completed = tasks_completed + per_worker.completed, \
            tasks_failed = tasks_failed + per_worker.failed \
        FROM (\
            SELECT held_worker, \
                   count(*) FILTER (WHERE outcome_status = 'completed') AS completed, \
                   count(*) FILTER (WHERE outcome_status IN ('failed', 'timeout')) AS failed \
            FROM held GROUP BY held_worker\
        ) AS per_worker \
        WHERE workers.id = per_worker.held_worker AND per_worker.completed + per_worker.failed > 0\
     ) \
     SELECT * FROM finished"
);

/// Appends a batch of log entries under a lease, one statement: the lease row is share-locked so a concurrent
/// finish waits for (or wins over) the batch. `$1` task id, `$2` attempt, `$3` levels, `$4` messages, `$5`
/// contexts.
pub(crate) const APPEND_LOGS: &str = "WITH lease AS (\
        SELECT id AS lease_task FROM tasks WHERE id = $1 AND (attempt = $2 AND status = 'running') IS TRUE FOR SHARE\
     ) \
     INSERT INTO task_logs (task_id, level, message, context) \
     SELECT lease.lease_task, entry.level, entry.message, entry.context \
     FROM lease, UNNEST($3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS entry(level, message, context, n) \
     ORDER BY entry.n";

/// Locks, in id order, the tasks still running under the given leases, and returns their ids: the first step of
/// a batch of final reports, so what follows in the transaction sees the leases held throughout. `$1` task ids,
/// `$2` attempts (same order).
pub(crate) const LOCK_HELD_LEASES: &str = "SELECT tasks.id FROM tasks \
     JOIN UNNEST($1::uuid[], $2::int4[]) AS lease(lease_id, lease_attempt) ON tasks.id = lease.lease_id \
     WHERE tasks.attempt = lease.lease_attempt AND tasks.status = 'running' \
     ORDER BY tasks.id FOR UPDATE OF tasks";

/// The log entries of several final reports, in order, in one statement; their tasks' leases are locked by
/// [`LOCK_HELD_LEASES`] in the same transaction. `$1` task ids, `$2` levels, `$3` messages, `$4` contexts (one
/// element per entry).
pub(crate) const APPEND_REPORTED_LOGS: &str = "INSERT INTO task_logs (task_id, level, message, context) \
     SELECT entry.task_id, entry.level, entry.message, entry.context \
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) WITH ORDINALITY \
        AS entry(task_id, level, message, context, n) \
     ORDER BY entry.n";

/// The trajectories of several final reports in one statement (replacing earlier saves); their tasks' leases are
/// locked by [`LOCK_HELD_LEASES`] in the same transaction. `$1` task ids, `$2` the rests (jsonb), `$3` rewards,
/// `$4` messages and `$5` LLM calls (JSON text).
pub(crate) const SAVE_REPORTED_TRAJECTORIES: &str = "INSERT INTO trajectories \
        (task_id, trajectory, reward, messages, llm_calls) \
     SELECT t.task_id, t.trajectory, t.reward, t.messages::json, t.llm_calls::json \
     FROM UNNEST($1::uuid[], $2::jsonb[], $3::float8[], $4::text[], $5::text[]) \
        AS t(task_id, trajectory, reward, messages, llm_calls) \
     ON CONFLICT (task_id) DO UPDATE SET trajectory = EXCLUDED.trajectory, reward = EXCLUDED.reward, \
        messages = EXCLUDED.messages, llm_calls = EXCLUDED.llm_calls, updated_at = now()";

/// Whether a lease token is current. `$1` task id, `$2` attempt.
pub(crate) const LEASE_HELD: &str =
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND (attempt = $2 AND status = 'running') IS TRUE)";

/// A task's log in append order. `$1` task id, `$2` accepted levels (NULL: all), `$3` since (inclusive), `$4`
/// after id (exclusive; 0 for all), `$5` limit (NULL: all).
pub(crate) const SELECT_LOGS: &str = "SELECT id, task_id, timestamp, level, message, context FROM task_logs \
     WHERE task_id = $1 AND id > $4 \
       AND ($2::text[] IS NULL OR level = ANY($2::text[])) \
       AND ($3::timestamptz IS NULL OR timestamp >= $3::timestamptz) \
     ORDER BY id LIMIT $5";

/// Saves (replaces) the trajectory of a running task under its lease, in its parts: the rest (task id, reward,
/// evaluation, metadata) as jsonb, the messages and the LLM calls as `json` text. `$1` task id, `$2` attempt, `$3`
/// rest, `$4` reward, `$5` messages, `$6` LLM calls.
pub(crate) const SAVE_TRAJECTORY: &str = "WITH lease AS (\
        SELECT id AS lease_task FROM tasks WHERE id = $1 AND (attempt = $2 AND status = 'running') IS TRUE FOR SHARE\
     ) \
     INSERT INTO trajectories (task_id, trajectory, reward, messages, llm_calls) \
     SELECT lease.lease_task, $3, $4, $5::text::json, $6::text::json FROM lease \
     ON CONFLICT (task_id) DO UPDATE SET trajectory = EXCLUDED.trajectory, reward = EXCLUDED.reward, \
        messages = EXCLUDED.messages, llm_calls = EXCLUDED.llm_calls, updated_at = now()";

/// A task's trajectory in its parts; one row when the task exists (the parts NULL when it has none). `$1` task id.
pub(crate) const SELECT_TRAJECTORY: &str = "SELECT tr.trajectory, tr.messages, tr.llm_calls FROM tasks t \
     LEFT JOIN trajectories tr ON tr.task_id = t.id WHERE t.id = $1";

// ---------------------------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------------------------

/// Registers a worker, or replaces a registration that is offline, silent for longer than the threshold, or
/// named an instance when this one names one too (counters are kept). No row when a live worker holds the id and
/// the instances cannot tell the registrations apart. `$1` id, `$2` backend_type, `$3` max_parallel_tasks, `$4`
/// supported_problems, `$5` metadata, `$6` offline threshold, `$7` instance id (NULL: none).
///
/// A takeover by another instance (the live registration named a different one) takes the previous instance's
/// running tasks back in the same statement, as a lost lease would: requeued while retries remain, `failed`
/// otherwise (error code `worker_lost`), `cancelled` when a client asked, with a webhook delivery for the terminal
/// ones. Lock order as everywhere: the task rows (in id order), then the worker row — the `INSERT` reads its
/// values from `released`, so the task rows are locked before it touches the worker row.
pub(crate) const REGISTER_WORKER: &str = concat!(
    "WITH prior AS (\
        SELECT instance_id AS prior_instance FROM workers \
        WHERE id = $1 AND status <> 'offline' AND last_heartbeat >= now() - $6::interval \
            AND $7::text IS NOT NULL AND instance_id IS NOT NULL AND instance_id <> $7::text\
     ), taken AS (\
        SELECT id AS taken_id, \
            CASE WHEN cancel_requested THEN 'cancelled' \
                 WHEN attempt <= max_retries THEN 'pending' ELSE 'failed' END AS next_status \
        FROM tasks WHERE worker_id = $1 AND status = 'running' AND EXISTS (SELECT 1 FROM prior) \
        ORDER BY id FOR UPDATE\
     ), released AS (\
        UPDATE tasks SET \
            status = taken.next_status, \
            worker_id = CASE WHEN taken.next_status = 'pending' THEN NULL ELSE worker_id END, \
            started_at = CASE WHEN taken.next_status = 'pending' THEN NULL ELSE started_at END, \
            completed_at = CASE WHEN taken.next_status = 'pending' THEN NULL ELSE now() END, \
            lease_expires_at = NULL, updated_at = now(), \
            error_details = CASE WHEN taken.next_status = 'cancelled' THEN error_details ELSE \
                jsonb_build_object('code', 'worker_lost', 'message', \
                    format('worker %s restarted (instance %s replaced %s) during attempt %s', \
                        $1::text, $7::text, (SELECT prior_instance FROM prior), attempt)) END \
        FROM taken WHERE id = taken.taken_id \
        RETURNING id, status, callback_url\
     ), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM released \
        WHERE status <> 'pending' AND callback_url IS NOT NULL\
     ) \
     INSERT INTO workers AS w (id, backend_type, status, max_parallel_tasks, supported_problems, metadata, \
        current_task_id, instance_id, registered_at, last_heartbeat) \
     SELECT $1, $2, 'idle', $3, $4, $5, NULL, $7::text, now(), now() FROM (SELECT count(*) FROM released) AS forced \
     ON CONFLICT (id) DO UPDATE SET backend_type = EXCLUDED.backend_type, status = 'idle', \
        max_parallel_tasks = EXCLUDED.max_parallel_tasks, supported_problems = EXCLUDED.supported_problems, \
        metadata = EXCLUDED.metadata, current_task_id = NULL, instance_id = EXCLUDED.instance_id, \
        registered_at = now(), last_heartbeat = now() \
     WHERE w.status = 'offline' OR w.last_heartbeat < now() - $6::interval \
        OR (EXCLUDED.instance_id IS NOT NULL AND w.instance_id IS NOT NULL) \
     RETURNING ",
    worker_columns!()
);

/// A heartbeat, one statement: records the sign of life, extends the leases of the worker's running tasks, hands
/// back the ones it did not list, and reports which were cancelled and which listed ones it no longer holds
/// (`lost`). Always one row; `found` is false for an
/// unknown worker, `current` false when `$6` names an instance the id has been taken over from (nothing changes
/// then; `current_instance` names the instance holding it). `$1` worker id, `$2` status, `$3` current task id,
/// `$4` lease duration, `$5` the tasks the worker holds (NULL: renew every task under the id), `$6` instance id
/// (NULL: not checked).
///
/// A running task under the id that `$5` does not list goes back to the queue whatever its retries (its claim
/// reply never reached the worker, so it never ran; error code `not_held`), or becomes `cancelled` (with its
/// webhook delivery) when a client asked.
///
/// Lock order: the worker's task rows first, in id order, then its worker row — the order `finish` and the claim
/// take them in (task, then the worker's counters). The other way round, a heartbeat and a finish of the same
/// worker deadlocked (issue 11: 1,808 deadlocks in a 20,000-task run). `beat` reads `leases` and `released` in its
/// WHERE, so the task rows are updated before the worker row.
pub(crate) const HEARTBEAT: &str = "WITH me AS (\
        SELECT (($6::text IS NULL OR instance_id IS NULL OR instance_id = $6::text)) AS current, instance_id \
        FROM workers WHERE id = $1\
     ), held AS (\
        SELECT id AS held_id, ($5::uuid[] IS NULL OR id = ANY($5::uuid[])) AS listed, \
            cancel_requested AS cancelling \
        FROM tasks WHERE worker_id = $1 AND status = 'running' \
            AND EXISTS (SELECT 1 FROM me WHERE current) \
        ORDER BY id FOR UPDATE\
     ), leases AS (\
        UPDATE tasks SET lease_expires_at = now() + $4::interval, updated_at = now() \
        FROM held WHERE tasks.id = held.held_id AND held.listed \
        RETURNING tasks.id, tasks.cancel_requested, tasks.lease_expires_at\
     ), released AS (\
        UPDATE tasks SET \
            status = CASE WHEN held.cancelling THEN 'cancelled' ELSE 'pending' END, \
            worker_id = CASE WHEN held.cancelling THEN worker_id ELSE NULL END, \
            started_at = CASE WHEN held.cancelling THEN started_at ELSE NULL END, \
            completed_at = CASE WHEN held.cancelling THEN now() ELSE NULL END, \
            lease_expires_at = NULL, updated_at = now(), \
            error_details = CASE WHEN held.cancelling THEN error_details ELSE \
                jsonb_build_object('code', 'not_held', 'message', \
                    format('worker %s''s heartbeat did not list this task (its claim never reached the worker): \
handed back to the queue', $1::text)) END \
        FROM held WHERE tasks.id = held.held_id AND NOT held.listed \
        RETURNING tasks.id, tasks.status, tasks.callback_url\
     ), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM released \
        WHERE status <> 'pending' AND callback_url IS NOT NULL\
     ), beat AS (\
        UPDATE workers SET status = $2, current_task_id = $3, last_heartbeat = now() \
        WHERE id = $1 AND EXISTS (SELECT 1 FROM me WHERE current) \
            AND (SELECT count(*) FROM leases) + (SELECT count(*) FROM released) >= 0 RETURNING id\
     ) \
     SELECT EXISTS (SELECT 1 FROM me) AS found, \
        COALESCE((SELECT current FROM me), true) AS current, \
        (SELECT instance_id FROM me) AS current_instance, \
        COALESCE((SELECT array_agg(id ORDER BY id) FROM leases WHERE cancel_requested), '{}'::uuid[]) AS cancelled, \
        (SELECT max(lease_expires_at) FROM leases) AS lease_expires_at, \
        COALESCE((SELECT array_agg(id ORDER BY id) FROM released), '{}'::uuid[]) AS requeued, \
        COALESCE((SELECT array_agg(listed_id ORDER BY listed_id) FROM unnest($5::uuid[]) AS listed_id \
            WHERE listed_id NOT IN (SELECT held_id FROM held)), '{}'::uuid[]) AS lost";

/// Marks a worker offline. `$1` id.
pub(crate) const DEREGISTER_WORKER: &str =
    "UPDATE workers SET status = 'offline', current_task_id = NULL WHERE id = $1 RETURNING id";

/// One worker. `$1` id.
pub(crate) const SELECT_WORKER: &str = concat!("SELECT ", worker_columns!(), " FROM workers WHERE id = $1");

/// Workers by id, optionally filtered. `$1` status (NULL: any), `$2` backend_type (NULL: any).
pub(crate) const LIST_WORKERS: &str = concat!(
    "SELECT ",
    worker_columns!(),
    " FROM workers WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR backend_type = $2::text) \
     ORDER BY id"
);

// ---------------------------------------------------------------------------------------------------------------
// Sweep: conditional bulk updates; rows another sweeper or a finishing worker holds are skipped this round.
// ---------------------------------------------------------------------------------------------------------------

/// Running tasks past `started_at + timeout_minutes + grace` become `timeout` (with a webhook delivery when they
/// have a `callback_url`). `$1` grace.
pub(crate) const SWEEP_TIMEOUTS: &str = "WITH overdue AS (\
        SELECT id AS overdue_id FROM tasks \
        WHERE status = 'running' AND started_at + timeout_minutes * interval '1 minute' + $1::interval < now() \
        FOR UPDATE SKIP LOCKED\
     ), swept AS (\
        UPDATE tasks SET status = 'timeout', completed_at = now(), lease_expires_at = NULL, updated_at = now(), \
            error_details = jsonb_build_object('code', 'timeout', 'message', \
                format('the run exceeded its %s-minute limit and its worker did not report', timeout_minutes)) \
        FROM overdue WHERE id = overdue.overdue_id \
        RETURNING id, callback_url\
     ), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM swept WHERE callback_url IS NOT NULL\
     ) \
     SELECT id FROM swept";

/// Running tasks whose lease expired: a task a client asked to cancel becomes `cancelled`; otherwise it goes back
/// to pending (retries left) or becomes `failed`, with error code `worker_lost`. The terminal ones get a webhook
/// delivery when they have a `callback_url`.
pub(crate) const SWEEP_EXPIRED_LEASES: &str = "WITH lost AS (\
        SELECT id AS lost_id, \
            CASE WHEN cancel_requested THEN 'cancelled' \
                 WHEN attempt <= max_retries THEN 'pending' ELSE 'failed' END AS next_status \
        FROM tasks \
        WHERE status = 'running' AND lease_expires_at < now() \
        FOR UPDATE SKIP LOCKED\
     ), swept AS (\
        UPDATE tasks SET \
            status = lost.next_status, \
            worker_id = CASE WHEN lost.next_status = 'pending' THEN NULL ELSE worker_id END, \
            started_at = CASE WHEN lost.next_status = 'pending' THEN NULL ELSE started_at END, \
            completed_at = CASE WHEN lost.next_status = 'pending' THEN NULL ELSE now() END, \
            lease_expires_at = NULL, updated_at = now(), \
            error_details = CASE WHEN lost.next_status = 'cancelled' THEN error_details ELSE \
                jsonb_build_object('code', 'worker_lost', 'message', \
                    format('worker %s stopped renewing its lease on attempt %s', worker_id, attempt)) END \
        FROM lost WHERE id = lost.lost_id \
        RETURNING id, status, callback_url\
     ), hook AS (\
        INSERT INTO webhook_outbox (task_id, url, status, next_attempt_at, created_at) \
        SELECT id, callback_url, 'pending', now(), now() FROM swept \
        WHERE status <> 'pending' AND callback_url IS NOT NULL\
     ) \
     SELECT id, status FROM swept";

/// Live workers silent past the threshold become offline. `$1` threshold.
pub(crate) const SWEEP_WORKERS: &str = "UPDATE workers SET status = 'offline' \
     WHERE status <> 'offline' AND last_heartbeat < now() - $1::interval RETURNING id";

// ---------------------------------------------------------------------------------------------------------------
// Webhook outbox
// ---------------------------------------------------------------------------------------------------------------

/// The columns of `webhook_outbox`, in the order [`crate::rows::DeliveryRow`] reads them.
macro_rules! delivery_columns {
    () => {
        "id, task_id, url, payload, status, created_at, next_attempt_at, delivered_at"
    };
}

/// Leases up to `$1` due deliveries, oldest first, by pushing their due time to now + `$2`; rows another
/// deliverer is claiming are skipped. Returns their ids.
pub(crate) const CLAIM_WEBHOOKS: &str = "WITH due AS (\
        SELECT id AS due_id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= now() \
        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED\
     ) \
     UPDATE webhook_outbox SET next_attempt_at = now() + $2::interval FROM due WHERE id = due.due_id RETURNING id";

/// Records attempt number attempts + 1 of delivery `$1` and moves the delivery on: no error (`$3` NULL) →
/// delivered; an error with a retry delay `$5` → pending, due after it; an error without → failed. A late report
/// never undoes an outcome: a delivered delivery stays delivered, a failed one is only ever moved to delivered.
/// `$2` status code, `$4` duration in ms. No row for an unknown delivery.
pub(crate) const RECORD_WEBHOOK_ATTEMPT: &str = "WITH delivery AS (\
        SELECT id AS delivery_id, attempts AS tried FROM webhook_outbox WHERE id = $1 FOR UPDATE\
     ), attempt AS (\
        INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, error, duration_ms) \
        SELECT delivery_id, tried + 1, now(), $2, $3::text, $4 FROM delivery\
     ) \
     UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $3::text, \
        status = CASE WHEN status = 'delivered' OR $3::text IS NULL THEN 'delivered' \
                      WHEN status = 'pending' AND $5::interval IS NOT NULL THEN 'pending' ELSE 'failed' END, \
        delivered_at = CASE WHEN status = 'delivered' THEN delivered_at WHEN $3::text IS NULL THEN now() END, \
        next_attempt_at = CASE WHEN status = 'pending' AND $3::text IS NOT NULL AND $5::interval IS NOT NULL \
                               THEN now() + $5::interval END \
     FROM delivery WHERE id = delivery.delivery_id RETURNING id";

/// Deliveries by id, oldest first. `$1` ids.
pub(crate) const SELECT_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_outbox WHERE id = ANY($1::int8[]) ORDER BY id"
);

/// A task's deliveries, oldest first. `$1` task id.
pub(crate) const SELECT_TASK_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_outbox WHERE task_id = $1 ORDER BY id"
);

/// The attempts of some deliveries, in order. `$1` delivery ids.
pub(crate) const SELECT_ATTEMPTS: &str = "SELECT delivery_id, attempt, attempted_at, status_code, error, duration_ms \
     FROM webhook_attempts WHERE delivery_id = ANY($1::int8[]) ORDER BY delivery_id, attempt";

/// Tasks by id (to render webhook payloads). `$1` ids.
pub(crate) const SELECT_TASKS_BY_ID: &str =
    concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ANY($1::uuid[])");

/// Stores rendered payloads of deliveries that had none yet. `$1` delivery ids, `$2` payloads.
pub(crate) const STORE_PAYLOADS: &str = "UPDATE webhook_outbox SET payload = rendered.payload \
     FROM UNNEST($1::int8[], $2::jsonb[]) AS rendered(delivery_id, payload) \
     WHERE id = rendered.delivery_id AND webhook_outbox.payload IS NULL";

// ---------------------------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------------------------

/// Which filters an export page applies besides the walk itself; each present one is bound, in this order, after
/// the walk's parameters (see [`export_window`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExportFilters {
    /// `$n` status.
    pub(crate) status: bool,
    /// `$n` problem ids.
    pub(crate) problem_ids: bool,
    /// `$n` model.
    pub(crate) model: bool,
    /// `$n` metadata key, `$n+1` its value.
    pub(crate) metadata: bool,
    /// `$n` created before (this one bounds the window itself).
    pub(crate) created_before: bool,
    /// `$n` the statuses of the outcomes asked for.
    pub(crate) statuses: bool,
    /// `$n` exact policy version.
    pub(crate) model_version: bool,
    /// `$n` lowest policy version.
    pub(crate) min_model_version: bool,
}

/// One window of the dataset export: the next `$3` tasks in `(created_at, id)` order strictly after the cursor
/// (`$1` created_at, `$2` id), walked on `tasks_created_idx`; of those, the ones with a trajectory that pass the
/// filters, in order, at most `$4`. A window bounds the work of one statement whatever the filters' selectivity (a
/// plan that sorts every match after the cursor would make a walk quadratic), and the SQL names only the filters
/// given, so no plan (custom or generic) has to guess around `$n IS NULL OR ...` branches. Reads the trajectory's
/// messages and its small rest, never its LLM calls (a column of their own, most of a trajectory's bytes).
pub(crate) fn export_window(filters: ExportFilters) -> String {
    let mut n = 4;
    let mut next = || {
        n += 1;
        n
    };
    let mut window = String::from("(created_at, id) > ($1::timestamptz, $2::uuid)");
    let mut conditions = Vec::new();
    // Bound in the order ExportFilters documents.
    if filters.status {
        conditions.push(format!("t.status = ${}::text", next()));
    }
    if filters.problem_ids {
        conditions.push(format!("t.problem_id = ANY(${}::text[])", next()));
    }
    if filters.model {
        conditions.push(format!("t.agent_config -> 'model' = to_jsonb(${}::text)", next()));
    }
    if filters.metadata {
        let key = next();
        let value = next();
        conditions.push(format!("t.metadata -> ${key}::text = to_jsonb(${value}::text)"));
    }
    if filters.created_before {
        window.push_str(&format!(" AND created_at < ${}::timestamptz", next()));
    }
    if filters.statuses {
        conditions.push(format!("t.status = ANY(${}::text[])", next()));
    }
    // A policy version is a non-negative integer (checked at create); the type test keeps a row written before
    // that check, with some other value, out of the cast instead of failing the whole export.
    if filters.model_version {
        conditions.push(format!(
            "t.agent_config -> 'model_version' = to_jsonb(${}::int8)",
            next()
        ));
    }
    if filters.min_model_version {
        conditions.push(format!(
            "jsonb_typeof(t.agent_config -> 'model_version') = 'number' \
             AND (t.agent_config ->> 'model_version')::numeric >= ${}::int8",
            next()
        ));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT t.*, tr.trajectory AS trajectory_rest, tr.messages AS trajectory_messages \
         FROM (SELECT * FROM tasks WHERE {window} ORDER BY created_at, id LIMIT $3) AS t \
         JOIN trajectories tr ON tr.task_id = t.id{filter} \
         ORDER BY t.created_at, t.id LIMIT $4"
    )
}

/// Where an export window ends: its last task, `$3` - 1 tasks after the first one past the cursor (`$1`, `$2`);
/// no row when fewer remain (the walk reached the end). `$4` created before (NULL: no bound).
pub(crate) const EXPORT_WINDOW_END: &str = "SELECT created_at, id FROM tasks \
     WHERE (created_at, id) > ($1::timestamptz, $2::uuid) \
       AND ($4::timestamptz IS NULL OR created_at < $4::timestamptz) \
     ORDER BY created_at, id OFFSET $3 - 1 LIMIT 1";

// ---------------------------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------------------------

/// Tasks per status and backend type, from the maintained counts (migration 005): the folded counts plus the
/// deltas appended since the last fold, in one snapshot. Pairs that net to zero are left out.
pub(crate) const TASK_COUNTS: &str = "SELECT status, backend_type, sum(n)::int8 FROM (\
        SELECT status, backend_type, n FROM task_counts \
        UNION ALL SELECT status, backend_type, n FROM task_count_deltas\
     ) AS counted \
     GROUP BY status, backend_type HAVING sum(n) <> 0";

/// Folds the appended count deltas into `task_counts`, at most `$1` of them, in one statement. Deltas another fold
/// is moving are skipped (`SKIP LOCKED`), so concurrent folds (one per server replica) never wait for each other
/// and move each delta once; the counters are written in key order, so two folds cannot deadlock. Returns how
/// many deltas it moved.
pub(crate) const FOLD_TASK_COUNTS: &str = "WITH moved AS (\
        DELETE FROM task_count_deltas \
        WHERE ctid = ANY(ARRAY(SELECT ctid FROM task_count_deltas LIMIT $1 FOR UPDATE SKIP LOCKED)) \
        RETURNING status, backend_type, n\
     ), folded AS (\
        INSERT INTO task_counts AS c (status, backend_type, n) \
        SELECT status, backend_type, sum(n) FROM moved GROUP BY status, backend_type ORDER BY status, backend_type \
        ON CONFLICT (status, backend_type) DO UPDATE SET n = c.n + EXCLUDED.n\
     ) \
     SELECT count(*) FROM moved";

/// Workers per status.
pub(crate) const WORKERS_BY_STATUS: &str = "SELECT status, count(*) FROM workers GROUP BY status";

// ---------------------------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------------------------

/// Channel notified (payload: backend type) when a task becomes claimable.
pub const TASK_AVAILABLE_CHANNEL: &str = "aiopslab_task_available";

/// Channel notified (payload: task id) when a client asks to cancel a running task.
pub const CANCEL_CHANNEL: &str = "aiopslab_cancel";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_window_names_only_the_given_filters() {
        let plain = export_window(ExportFilters::default());
        assert!(!plain.contains("WHERE t."), "{plain}");
        assert!(plain.contains("ORDER BY t.created_at, t.id LIMIT $4"), "{plain}");
        let all = export_window(ExportFilters {
            status: true,
            problem_ids: true,
            model: true,
            metadata: true,
            created_before: true,
            statuses: true,
            model_version: true,
            min_model_version: true,
        });
        for fragment in [
            "t.status = $5::text",
            "t.problem_id = ANY($6::text[])",
            "to_jsonb($7::text)",
            "t.metadata -> $8::text = to_jsonb($9::text)",
            "created_at < $10::timestamptz ORDER BY created_at, id LIMIT $3",
            "t.status = ANY($11::text[])",
            "to_jsonb($12::int8)",
            "::numeric >= $13::int8",
        ] {
            assert!(all.contains(fragment), "{fragment} in {all}");
        }
        let some = export_window(ExportFilters {
            model: true,
            created_before: true,
            ..ExportFilters::default()
        });
        assert!(
            some.contains("to_jsonb($5::text)") && some.contains("created_at < $6"),
            "{some}"
        );
    }

    #[test]
    fn list_query_numbers_its_parameters() {
        let filter = TaskFilter::default()
            .with_status(Some(aiopslab_core::TaskStatus::Failed))
            .with_worker_id(Some("w".into()));
        let sql = list_tasks(&filter, TaskSort::PriorityDesc);
        assert!(
            sql.page.contains("WHERE worker_id = $1 AND status = 'failed'"),
            "{}",
            sql.page
        );
        assert!(
            sql.page
                .ends_with("ORDER BY priority DESC, created_at ASC, id ASC LIMIT $2 OFFSET $3"),
            "{}",
            sql.page
        );
        assert_eq!(
            sql.capped_count,
            "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE worker_id = $1 AND status = 'failed' LIMIT $2) AS capped"
        );
        assert_eq!(
            sql.estimate,
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM tasks WHERE worker_id = $1 AND status = 'failed'"
        );
        let sql = list_tasks(&TaskFilter::default(), TaskSort::CreatedDesc);
        assert!(
            sql.page
                .ends_with("FROM tasks ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"),
            "{}",
            sql.page
        );
        assert_eq!(
            sql.capped_count,
            "SELECT count(*) FROM (SELECT 1 FROM tasks LIMIT $1) AS capped"
        );
    }
}
