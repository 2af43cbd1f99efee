-- aiopslab schema, version 1: tasks, their logs and trajectories, workers, and the webhook outbox.
--
-- This file works both ways the project runs it:
--   * by hand, as the quickstart shows:  createdb aiopslab_tasks && psql aiopslab_tasks < migrations/001_create_tables.sql
--   * through the embedded migrator of aiopslab-postgres (sqlx::migrate!), also on a database where it was already
--     run by hand.
-- So every statement is idempotent: CREATE ... IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF EXISTS before CREATE.
-- Requires PostgreSQL 13 or later (gen_random_uuid is built in).

-- Tasks: one AIOpsLab problem run. Status is plain text so the quickstart's debugging queries read naturally.
CREATE TABLE IF NOT EXISTS tasks (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    problem_id       text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    agent_config     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    max_steps        integer     NOT NULL DEFAULT 30,
    timeout_minutes  integer     NOT NULL DEFAULT 30,
    priority         smallint    NOT NULL DEFAULT 5,
    callback_url     text,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    backend_type     text        NOT NULL DEFAULT 'default',
    max_retries      integer     NOT NULL DEFAULT 0,
    worker_id        text,
    attempt          integer     NOT NULL DEFAULT 0,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    lease_expires_at timestamptz,
    result           jsonb,
    error_details    jsonb,
    CONSTRAINT tasks_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'timeout', 'cancelled')),
    CONSTRAINT tasks_problem_id_check CHECK (length(problem_id) BETWEEN 1 AND 256),
    CONSTRAINT tasks_backend_type_check CHECK (length(backend_type) BETWEEN 1 AND 256),
    CONSTRAINT tasks_max_steps_check CHECK (max_steps BETWEEN 1 AND 1000),
    CONSTRAINT tasks_timeout_minutes_check CHECK (timeout_minutes BETWEEN 1 AND 180),
    CONSTRAINT tasks_priority_check CHECK (priority BETWEEN 0 AND 10),
    CONSTRAINT tasks_max_retries_check CHECK (max_retries BETWEEN 0 AND 10),
    CONSTRAINT tasks_attempt_check CHECK (attempt >= 0),
    CONSTRAINT tasks_agent_config_check CHECK (jsonb_typeof(agent_config) = 'object'),
    CONSTRAINT tasks_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    -- A running task always has a worker holding it under a lease, and has been claimed at least once.
    CONSTRAINT tasks_running_check CHECK (
        status <> 'running'
        OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL AND started_at IS NOT NULL AND attempt >= 1)
    ),
    -- Only a running task holds a lease; a pending task is held by no one.
    CONSTRAINT tasks_lease_check CHECK (status = 'running' OR lease_expires_at IS NULL),
    CONSTRAINT tasks_pending_check CHECK (status <> 'pending' OR (worker_id IS NULL AND completed_at IS NULL)),
    -- Terminal tasks carry their completion time; live ones do not.
    CONSTRAINT tasks_completed_at_check CHECK (
        (status IN ('completed', 'failed', 'timeout', 'cancelled')) = (completed_at IS NOT NULL)
    )
);

-- A queue table churns: keep autovacuum close behind it so dead index entries do not pile up at the queue's head.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
                       autovacuum_analyze_scale_factor = 0.05);

-- Indexes. Every claim and finish rewrites the row and so inserts into every index whose key or predicate covers
-- it: the status-dependent indexes are partial, so each row version lands only in the ones that concern it.
-- The claim: the best pending task of a backend type, in claim order (priority desc, age, id).
CREATE INDEX IF NOT EXISTS tasks_pending_queue_idx
    ON tasks (backend_type, priority DESC, created_at, id) WHERE status = 'pending';
-- The sweep (expired leases) and heartbeats (a worker's running tasks).
CREATE INDEX IF NOT EXISTS tasks_running_lease_idx ON tasks (lease_expires_at, worker_id) WHERE status = 'running';
-- GET /tasks?status=...: finished tasks by status in the default order (pending and running tasks are listed from
-- the two indexes above, which hold few rows).
CREATE INDEX IF NOT EXISTS tasks_finished_status_idx ON tasks (status, created_at, id)
    WHERE status IN ('completed', 'failed', 'timeout', 'cancelled');
-- GET /tasks?problem_id= / worker_id= / backend_type=, each in the default order; and the two sorts alone.
CREATE INDEX IF NOT EXISTS tasks_problem_created_idx ON tasks (problem_id, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_worker_created_idx ON tasks (worker_id, created_at, id) WHERE worker_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_backend_created_idx ON tasks (backend_type, created_at, id);
CREATE INDEX IF NOT EXISTS tasks_created_idx ON tasks (created_at, id);
CREATE INDEX IF NOT EXISTS tasks_priority_created_idx ON tasks (priority, created_at, id);

-- Task logs: append-only, ordered by id (a global sequence, so ids increase in append order). Read per task, so
-- the key is (task_id, id): one index serves both uniqueness and every read.
CREATE TABLE IF NOT EXISTS task_logs (
    id        bigint      GENERATED ALWAYS AS IDENTITY,
    task_id   uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    timestamp timestamptz NOT NULL DEFAULT now(),
    level     text        NOT NULL,
    message   text        NOT NULL,
    context   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT task_logs_pkey PRIMARY KEY (task_id, id),
    CONSTRAINT task_logs_level_check CHECK (level IN ('debug', 'info', 'warning', 'error', 'critical'))
);

-- Trajectories: the reinforcement-learning record of one episode, one per task, replaced on each save.
CREATE TABLE IF NOT EXISTS trajectories (
    task_id    uuid        PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    trajectory jsonb       NOT NULL,
    reward     double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Workers: one process per cluster. last_heartbeat is the store's clock at the last sign of life.
CREATE TABLE IF NOT EXISTS workers (
    id                 text        PRIMARY KEY,
    backend_type       text        NOT NULL DEFAULT 'default',
    status             text        NOT NULL DEFAULT 'idle',
    max_parallel_tasks integer     NOT NULL DEFAULT 1,
    supported_problems text[],
    metadata           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    current_task_id    uuid,
    tasks_completed    bigint      NOT NULL DEFAULT 0,
    tasks_failed       bigint      NOT NULL DEFAULT 0,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workers_status_check CHECK (status IN ('idle', 'busy', 'offline')),
    CONSTRAINT workers_id_check CHECK (length(id) BETWEEN 1 AND 256),
    CONSTRAINT workers_max_parallel_tasks_check CHECK (max_parallel_tasks BETWEEN 1 AND 64),
    CONSTRAINT workers_counters_check CHECK (tasks_completed >= 0 AND tasks_failed >= 0)
);
CREATE INDEX IF NOT EXISTS workers_backend_idx ON workers (backend_type, id);
CREATE INDEX IF NOT EXISTS workers_live_heartbeat_idx ON workers (last_heartbeat) WHERE status <> 'offline';

-- Webhook outbox: one row per delivery of a task's terminal state to its callback_url. Written in the same
-- transaction as the status change; delivered (and retried with backoff) by any server replica, which claims rows
-- with FOR UPDATE SKIP LOCKED.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id         uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_outbox_attempts_check CHECK (attempts >= 0)
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due_idx ON webhook_outbox (next_attempt_at, id) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS webhook_outbox_task_idx ON webhook_outbox (task_id);

-- Wake-ups: LISTEN aiopslab_task_available (payload: backend_type) and aiopslab_cancel (payload: task id).
-- A task put back in the queue (a failed attempt with retries left, a lost worker) and a cancel request for a
-- running task notify from a trigger, inside the writing transaction, so every writer wakes the workers.
-- A newly inserted task is announced by the store right after its INSERT commits, as a statement of its own: a
-- transaction that NOTIFYs holds a database-wide lock until its commit is flushed, so notifying inside every
-- INSERT would serialize all task creation behind one WAL flush at a time. (Rows inserted by hand are found by
-- the workers' polling.)
CREATE OR REPLACE FUNCTION aiopslab_notify_task_available() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aiopslab_task_available', NEW.backend_type);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION aiopslab_notify_cancel() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aiopslab_cancel', NEW.id::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS tasks_notify_requeue ON tasks;
CREATE TRIGGER tasks_notify_requeue
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
    EXECUTE FUNCTION aiopslab_notify_task_available();

DROP TRIGGER IF EXISTS tasks_notify_cancel ON tasks;
CREATE TRIGGER tasks_notify_cancel
    AFTER UPDATE OF cancel_requested ON tasks
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested AND NEW.status = 'running')
    EXECUTE FUNCTION aiopslab_notify_cancel();
