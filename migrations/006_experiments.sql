-- aiopslab schema, version 6: experiments, and the fair-share claim between them.
--
-- Idempotent like 001-005: it runs by hand with psql after them, and the embedded migrator runs it again
-- afterwards without harm.
--
-- A task may name an experiment (NULL: none). The claim serves, among the pending tasks of the highest priority,
-- the experiments in turn instead of the oldest task overall, and never starts a task of an experiment that runs
-- its max_running tasks (see aiopslab-postgres/src/claim.rs for how that stays exact under racing claimers).

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS experiment text;
DO $$
BEGIN
    ALTER TABLE tasks ADD CONSTRAINT tasks_experiment_check
        CHECK (experiment IS NULL OR experiment ~ '^[A-Za-z0-9._-]{1,128}$');
EXCEPTION WHEN duplicate_object THEN
    NULL;
END;
$$;

-- The claim's queues. Each pending task lands in exactly one of the two, so a claim and a create cost what they
-- cost before: tasks without an experiment in the queue of 001 (rebuilt with that predicate, under a new name),
-- tasks of an experiment in one ordered per experiment. The claim reads the head of the first, and the heads of
-- the experiments that have pending tasks of its backend type (found by a skip scan of the second).
CREATE INDEX IF NOT EXISTS tasks_pending_plain_idx
    ON tasks (backend_type, priority DESC, created_at, id) WHERE status = 'pending' AND experiment IS NULL;
CREATE INDEX IF NOT EXISTS tasks_pending_experiment_idx
    ON tasks (backend_type, experiment, priority DESC, created_at, id)
    WHERE status = 'pending' AND experiment IS NOT NULL;
DROP INDEX IF EXISTS tasks_pending_queue_idx;
-- (A limited experiment's running tasks are counted from the running tasks, a fleet's worth, on the indexes of 001
-- and 005: an index of their own would cost every claim and finish of an experiment's task one more entry.)
-- GET /tasks?experiment=, in the default order.
CREATE INDEX IF NOT EXISTS tasks_experiment_created_idx ON tasks (experiment, created_at, id)
    WHERE experiment IS NOT NULL;

-- Experiments an operator configured (PUT /experiments/{name}); one no one configured is unlimited and has no row.
-- `started` counts the tasks the claim ever started for the experiment while it had a limit: the claim's fence
-- (see claim.rs). Only claims write it, and only for limited experiments.
CREATE TABLE IF NOT EXISTS experiments (
    name        text        PRIMARY KEY,
    max_running integer,
    started     bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT experiments_name_check CHECK (name ~ '^[A-Za-z0-9._-]{1,128}$'),
    CONSTRAINT experiments_max_running_check CHECK (max_running IS NULL OR max_running >= 1)
);
