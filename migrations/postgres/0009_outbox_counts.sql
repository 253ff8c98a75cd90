-- The outbox at a glance without counting it. `/metrics`, `GET
-- /v1/sending` (which a sender may ask before every send), the page and
-- `bouncer status` read the outbox's rows by state and its last push; the
-- counts were read from the whole outbox, which holds a week of pushes and
-- any backlog: 130 ms at 1,000,000 rows at every call. They are now kept
-- in the transaction of every change, by statement-level triggers (one
-- call per statement: the writer changes a whole batch in one).
CREATE TABLE ses_push_counts (
    state TEXT   NOT NULL PRIMARY KEY CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    n     BIGINT NOT NULL
);

-- A statement's changes by state, as {"state": change}.
CREATE FUNCTION ses_push_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changes JSONB;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_object_agg(state, n) INTO changes
        FROM (SELECT state, COUNT(*) AS n FROM new_rows GROUP BY state) AS c;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(state, n) INTO changes
        FROM (SELECT state, SUM(n) AS n FROM (
                  SELECT state, 1 AS n FROM new_rows
                  UNION ALL SELECT state, -1 FROM old_rows) AS moved
              GROUP BY state HAVING SUM(n) <> 0) AS c;
    ELSE
        SELECT jsonb_object_agg(state, -n) INTO changes
        FROM (SELECT state, COUNT(*) AS n FROM old_rows GROUP BY state) AS c;
    END IF;
    -- The counts a statement changes are locked in the order of their
    -- states: two transactions that change the same two (the writer making
    -- a pushed row pending again, the worker ending another) then wait for
    -- each other instead of deadlocking.
    IF changes IS NOT NULL THEN
        PERFORM 1 FROM ses_push_counts WHERE changes ? state ORDER BY state FOR UPDATE;
        UPDATE ses_push_counts SET n = n + (changes ->> state)::BIGINT WHERE changes ? state;
    END IF;
    RETURN NULL;
END
$$;

-- The table is locked against writes until this migration commits (the
-- triggers' creation takes that lock), so the counts start from what the
-- outbox holds and miss no change.
CREATE TRIGGER ses_push_counts_insert AFTER INSERT ON ses_suppression_sync
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_push_counts_changed();
CREATE TRIGGER ses_push_counts_update AFTER UPDATE ON ses_suppression_sync
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_push_counts_changed();
CREATE TRIGGER ses_push_counts_delete AFTER DELETE ON ses_suppression_sync
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_push_counts_changed();

INSERT INTO ses_push_counts (state, n)
SELECT s.state, (SELECT COUNT(*) FROM ses_suppression_sync AS o WHERE o.state = s.state)
FROM (VALUES ('pending'), ('done'), ('skipped'), ('refused')) AS s (state);

-- The newest confirmed push, read with the counts.
CREATE INDEX ses_suppression_sync_last_done ON ses_suppression_sync (done_at)
    WHERE state = 'done';
