-- aiopslab schema, version 7: group-aware retry (refills of aborted group members).
--
-- Idempotent like 001-006: it runs by hand with psql after them, and the embedded migrator runs it again
-- afterwards without harm (ADD COLUMN IF NOT EXISTS, CREATE ... IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF
-- EXISTS before CREATE).
--
-- A batch group may declare `min_valid` (default: every member) and `max_refills` (default 0). When a member
-- aborts for good (status becomes `failed`: its own retries spent, no cancel asked), the group gets a replacement
-- in the same transaction as long as it lacks `min_valid` members that are valid or may still become so (pending,
-- running, completed) and refills remain: a new pending task with the aborted one's problem and parameters, in
-- the same group, `replaces` naming it. The rule is aiopslab_core::group's; the memory store applies it too.

-- The aborted member a refill replaces (NULL for every other task). No foreign key: it would add a key-share lock
-- on the aborted row to every insert, for a link the store writes itself.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS replaces uuid;

-- One row per batch group, written in the statement that creates the batch. Groups made before this migration
-- have none; they read as "size = their tasks, all needed, no refills".
CREATE TABLE IF NOT EXISTS task_groups (
    group_id    uuid        PRIMARY KEY,
    size        integer     NOT NULL,
    min_valid   integer     NOT NULL,
    max_refills integer     NOT NULL DEFAULT 0,
    refills     integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The API bounds (1000 tasks, 1000 refills) are checked before the store; these are the invariants.
    CONSTRAINT task_groups_size_check CHECK (size >= 1),
    CONSTRAINT task_groups_min_valid_check CHECK (min_valid BETWEEN 1 AND size),
    CONSTRAINT task_groups_max_refills_check CHECK (max_refills >= 0),
    CONSTRAINT task_groups_refills_check CHECK (refills BETWEEN 0 AND max_refills)
);

-- Why a trigger and not the statements: a member aborts through four statements today (a worker's finish, which
-- coalesces many finishes in one FINISH_MANY; the final report's transaction, which ends in the same statement;
-- the sweep's expired leases; a restarted worker's takeover in REGISTER_WORKER), and any future one would have to
-- remember the rule. A trigger runs in the transaction of whichever statement made the abort, so the refill
-- commits or rolls back with it, and no path can forget it. A CTE in each statement could not do it right anyway:
-- every part of a statement sees one snapshot, so two aborts of one group in one coalesced statement, or in two
-- concurrent ones, would each count the other as still running and could refill twice past `min_valid`.
--
-- It is a statement-level trigger, for the lock order: it first locks the group rows of every abort the statement
-- made, in group id order, and only then decides. Concurrent aborts of one group are thereby decided one after the
-- other, each seeing the last one's refill (under READ COMMITTED each statement of the function reads a fresh
-- snapshot, taken after the lock was granted), so `refills` never passes `max_refills` nor a group more refills
-- than it needs. A row-level trigger would take the group locks in the order the statement updated its rows, and
-- two coalesced finishes touching groups A and B in opposite orders could deadlock. A holder of a group lock
-- waits for no task row (it reads members without locks and inserts a new row), so the task rows the statement
-- holds and the group locks cannot form a cycle either.
--
-- The statement's transition tables are captured anyway for the count triggers of 005 (transition tables cannot
-- be combined with a column list, so those fire for every UPDATE); this one reads them once and returns at once
-- unless the statement failed a grouped task.
--
-- A replacement is announced from here (pg_notify on aiopslab_task_available, as the requeue trigger of 001 does):
-- it is rare, so the commit-flush lock a NOTIFY takes costs nothing that matters, and it wakes idle workers at once.
CREATE OR REPLACE FUNCTION aiopslab_refill_aborted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    aborted tasks;
    grp task_groups;
    hopeful bigint;
    aborted_id uuid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE status = 'failed' AND group_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    -- Lock every group concerned, in id order (ORDER BY is applied before the locks are taken).
    PERFORM 1 FROM task_groups
    WHERE group_id IN (
        SELECT n.group_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status = 'failed' AND o.status <> 'failed' AND n.group_id IS NOT NULL AND NOT n.cancel_requested
    ) AND max_refills > 0
    ORDER BY group_id FOR UPDATE;
    FOR aborted IN
        SELECT n.* FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status = 'failed' AND o.status <> 'failed' AND n.group_id IS NOT NULL AND NOT n.cancel_requested
        ORDER BY n.group_id, n.id
    LOOP
        SELECT * INTO grp FROM task_groups WHERE group_id = aborted.group_id;
        CONTINUE WHEN NOT FOUND OR grp.refills >= grp.max_refills;
        SELECT count(*) INTO hopeful FROM tasks
        WHERE group_id = aborted.group_id AND status IN ('pending', 'running', 'completed');
        CONTINUE WHEN hopeful >= grp.min_valid;
        UPDATE task_groups SET refills = refills + 1 WHERE group_id = aborted.group_id;
        -- The replacement is the aborted row with its run state reset, so every column of the task's request
        -- (including ones later migrations add) is copied as it is.
        aborted_id := aborted.id;
        aborted.id := gen_random_uuid();
        aborted.status := 'pending';
        aborted.worker_id := NULL;
        aborted.attempt := 0;
        aborted.cancel_requested := false;
        aborted.created_at := now();
        aborted.updated_at := now();
        aborted.started_at := NULL;
        aborted.completed_at := NULL;
        aborted.lease_expires_at := NULL;
        aborted.result := NULL;
        aborted.error_details := NULL;
        aborted.replaces := aborted_id;
        INSERT INTO tasks SELECT (aborted).*;
        PERFORM pg_notify('aiopslab_task_available', aborted.backend_type);
    END LOOP;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS tasks_refill_aborted ON tasks;
CREATE TRIGGER tasks_refill_aborted
    AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION aiopslab_refill_aborted();
