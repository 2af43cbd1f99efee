-- aiopslab schema, version 5: reads that do not grow with the table.
--
-- Idempotent like 001-004: it runs by hand with psql after them, and the embedded migrator runs it again
-- afterwards without harm (a second run recounts from scratch, which is exact; see the backfill at the end).
--
-- /stats, /metrics and the `total` of GET /tasks filtered by status and/or backend type read maintained counts
-- instead of counting the table (at 1,000,000 tasks a GROUP BY status took ~400 ms, a count(*) ~200 ms).
--
-- The counts are a ledger, not counters updated in place: statement-level triggers on `tasks` append one delta
-- row per (status, backend type) that a statement changed to `task_count_deltas` (an INSERT of 64 coalesced
-- creates appends one row; a claim of 64 tasks two: pending -64, running +64). Appends take no row lock, so
-- concurrent claims, finishes and sweeps never wait for each other on a counter row (a single counter row per
-- status would serialize every status-changing transaction behind the commit of the previous one). The store's
-- housekeeping (each sweep) folds the deltas into `task_counts`; a read sums both, which one snapshot sees
-- consistently whether or not a fold committed in between (a fold moves rows from one table to the other in one
-- statement).

CREATE TABLE IF NOT EXISTS task_counts (
    status       text   NOT NULL,
    backend_type text   NOT NULL,
    n            bigint NOT NULL,
    CONSTRAINT task_counts_pkey PRIMARY KEY (status, backend_type)
);

-- No index: rows are appended by the triggers and read whole (by a sum, or by the fold).
CREATE TABLE IF NOT EXISTS task_count_deltas (
    status       text   NOT NULL,
    backend_type text   NOT NULL,
    n            bigint NOT NULL
);
-- Every fold deletes what was appended since the last one: vacuum often so the table stays a few pages.
ALTER TABLE task_count_deltas SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                   autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000);

-- One function for the three statement triggers below; each statement sees only the transition tables its
-- trigger declares, so each branch reads only those. An UPDATE that changes no status (a lease extension, a
-- cancel request) nets out to nothing and appends nothing.
CREATE OR REPLACE FUNCTION aiopslab_count_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_count_deltas (status, backend_type, n)
        SELECT status, backend_type, count(*) FROM new_rows GROUP BY status, backend_type;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_count_deltas (status, backend_type, n)
        SELECT status, backend_type, -count(*) FROM old_rows GROUP BY status, backend_type;
    ELSE
        INSERT INTO task_count_deltas (status, backend_type, n)
        SELECT status, backend_type, sum(delta) FROM (
            SELECT status, backend_type, 1 AS delta FROM new_rows
            UNION ALL
            SELECT status, backend_type, -1 AS delta FROM old_rows
        ) AS changed
        GROUP BY status, backend_type HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION aiopslab_count_tasks_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_count_deltas;
    DELETE FROM task_counts;
    RETURN NULL;
END;
$$;

-- (Transition tables cannot be combined with a column list, so the UPDATE trigger fires for every UPDATE.)
DROP TRIGGER IF EXISTS tasks_count_insert ON tasks;
CREATE TRIGGER tasks_count_insert
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION aiopslab_count_tasks();
DROP TRIGGER IF EXISTS tasks_count_update ON tasks;
CREATE TRIGGER tasks_count_update
    AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION aiopslab_count_tasks();
DROP TRIGGER IF EXISTS tasks_count_delete ON tasks;
CREATE TRIGGER tasks_count_delete
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION aiopslab_count_tasks();
DROP TRIGGER IF EXISTS tasks_count_truncate ON tasks;
CREATE TRIGGER tasks_count_truncate
    AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION aiopslab_count_tasks_truncated();

-- Backfill: count the rows that exist, with writers to `tasks` held off (SHARE ROW EXCLUSIVE lets reads through)
-- until the transaction ends, so no write falls between the count and the triggers. One DO block, so it is one
-- transaction when run by hand with psql too. Recounting from scratch makes a second run exact as well.
DO $$
BEGIN
    LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM task_count_deltas;
    DELETE FROM task_counts;
    INSERT INTO task_counts (status, backend_type, n)
    SELECT status, backend_type, count(*) FROM tasks GROUP BY status, backend_type;
END;
$$;

-- GET /tasks?status=pending&sort=-priority: the pending tasks in that order across backend types. The claim's
-- index leads with backend_type, so without this one the listing read and sorted every pending row. Partial, so
-- only pending row versions land in it (one entry per create or requeue).
CREATE INDEX IF NOT EXISTS tasks_pending_priority_idx
    ON tasks (priority DESC, created_at, id) WHERE status = 'pending';

-- GET /tasks?status=pending (or running) in the default order, newest first (and oldest first). The indexes of 001
-- could not serve it: the planner walked the whole creation index backwards looking for pending rows among the
-- finished ones (612 ms at 1,000,000 tasks with a backlog of 10,000 old pending tasks). Together with
-- tasks_finished_status_idx every status now has its (status, created_at, id) index. Partial: only live row
-- versions land in it (one entry per create, claim or requeue), so its size follows the queue, not the history.
CREATE INDEX IF NOT EXISTS tasks_live_status_idx
    ON tasks (status, created_at, id) WHERE status IN ('pending', 'running');
