-- aiopslab schema, version 2: batch groups and idempotency keys, the export walk, and webhook delivery attempts.
--
-- Idempotent like 001 (it may run on a database where it already ran): ADD COLUMN IF NOT EXISTS,
-- CREATE ... IF NOT EXISTS, and a DO block for the one constraint added to an existing table. The embedded
-- migrator applies it after 001; it can also be run by hand with psql after 001.

-- Tasks created together in a batch share a group (group-relative RL methods compare rewards within a group).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS group_id uuid;
CREATE INDEX IF NOT EXISTS tasks_group_created_idx ON tasks (group_id, created_at, id) WHERE group_id IS NOT NULL;

-- Idempotency keys of batch requests: the first request's fingerprint, group and task ids, in request order. A
-- key is written in the same statement as its tasks, so a key exists exactly when its tasks do.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,
    group_id    uuid,
    task_ids    uuid[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255)
);

-- Webhook outbox: where a delivery stands. A pending delivery is due at next_attempt_at (a deliverer that claims
-- it pushes that forward by its lease); delivered and failed ones have none. The payload is the task as it ended;
-- the statement that ends the task leaves it NULL and the store renders it from the (from then on unchanging)
-- task row the first time the delivery is read.
ALTER TABLE webhook_outbox ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'pending';
DO $$
BEGIN
    ALTER TABLE webhook_outbox
        ADD CONSTRAINT webhook_outbox_status_check CHECK (status IN ('pending', 'delivered', 'failed'));
EXCEPTION WHEN duplicate_object THEN
    NULL;
END;
$$;
DO $$
BEGIN
    ALTER TABLE webhook_outbox
        ADD CONSTRAINT webhook_outbox_due_check CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL));
EXCEPTION WHEN duplicate_object THEN
    NULL;
END;
$$;
ALTER TABLE webhook_outbox ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE webhook_outbox ALTER COLUMN next_attempt_at DROP NOT NULL;
DROP INDEX IF EXISTS webhook_outbox_due_idx;
CREATE INDEX IF NOT EXISTS webhook_outbox_pending_idx ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';

-- Every try at delivering a webhook, numbered from 1 per delivery.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id  bigint      NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  bigint      NOT NULL DEFAULT 0,
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (delivery_id, attempt),
    CONSTRAINT webhook_attempts_attempt_check CHECK (attempt >= 1),
    CONSTRAINT webhook_attempts_duration_check CHECK (duration_ms >= 0)
);
