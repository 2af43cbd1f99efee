-- aiopslab schema, version 3: trajectories stored in parts, so the dataset export reads only what it exports.
--
-- Idempotent like 001 and 002: it runs by hand with psql after them, and the embedded migrator runs it again
-- afterwards without harm.
--
-- A trajectory's LLM calls each carry their whole request (the conversation so far), so they are most of its
-- bytes: a 30-step episode is ~10 KiB of messages and ~160 KiB of calls. Kept in one jsonb document, every export
-- row would detoast, decompress and convert all of it to read the messages. Version 3 keeps:
--   messages   (json)   every message in order: what the export reads;
--   llm_calls  (json)   every LLM call: read only by GET /tasks/{id}/trajectory;
--   trajectory (jsonb)  the small rest: task_id, reward, evaluation, metadata;
--   reward              as before.
-- messages and llm_calls are `json`, which PostgreSQL keeps as the text it was given and sends back unchanged (no
-- jsonb-to-text conversion on every read), compressed with lz4 where the server supports it (several times
-- faster to decompress than the default pglz).

ALTER TABLE trajectories ADD COLUMN IF NOT EXISTS messages json;
ALTER TABLE trajectories ADD COLUMN IF NOT EXISTS llm_calls json;

-- Rows saved before version 3 hold everything in `trajectory`: split them in place (once; later runs find none).
UPDATE trajectories SET
    messages = COALESCE(trajectory -> 'messages', '[]'::jsonb)::json,
    llm_calls = COALESCE(trajectory -> 'llm_calls', '[]'::jsonb)::json,
    trajectory = trajectory - 'messages' - 'llm_calls'
WHERE messages IS NULL OR llm_calls IS NULL;

ALTER TABLE trajectories ALTER COLUMN messages SET DEFAULT '[]'::json;
ALTER TABLE trajectories ALTER COLUMN messages SET NOT NULL;
ALTER TABLE trajectories ALTER COLUMN llm_calls SET DEFAULT '[]'::json;
ALTER TABLE trajectories ALTER COLUMN llm_calls SET NOT NULL;

-- lz4 for new values of the large columns; a server built without lz4 keeps its default compression.
DO $$
BEGIN
    ALTER TABLE trajectories ALTER COLUMN messages SET COMPRESSION lz4;
    ALTER TABLE trajectories ALTER COLUMN llm_calls SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 compression is not available on this server; trajectories keep the default compression';
END;
$$;
