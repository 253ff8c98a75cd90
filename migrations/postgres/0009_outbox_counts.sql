-- The outbox at a glance without counting it. `/metrics`, `GET
-- /v1/sending` (which a sender may ask before every send), the page and
-- `bouncer status` read the outbox's rows by state and its last push; the
-- counts were read from the whole outbox, which holds a week of pushes and
-- any backlog: 130 ms at 1,000,000 rows at every call.
--
-- A count row updated by every change would hold its lock until the
-- change's transaction commits: one long transaction on the outbox (an
-- import while pushing is on) would hold up every writer batch with a
-- suppression, and two transactions changing two states in turn could
-- deadlock. So a statement's changes are appended as rows of their own,
-- which locks nothing another writer needs, and the push worker folds them
-- into the counts in short transactions of its own. A read sums both.
CREATE TABLE ses_push_counts (
    state TEXT   NOT NULL PRIMARY KEY CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    n     BIGINT NOT NULL
);

-- The same four states: a state without a count row would be folded away
-- and lost, so it fails here instead.
CREATE TABLE ses_push_count_changes (
    id    BIGSERIAL PRIMARY KEY,
    state TEXT   NOT NULL CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    n     BIGINT NOT NULL
);

-- A statement's changes by state, one row each.
CREATE FUNCTION ses_push_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ses_push_count_changes (state, n)
        SELECT state, COUNT(*) FROM new_rows GROUP BY state;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ses_push_count_changes (state, n)
        SELECT state, SUM(n) FROM (
            SELECT state, 1 AS n FROM new_rows
            UNION ALL SELECT state, -1 FROM old_rows) AS moved
        GROUP BY state HAVING SUM(n) <> 0;
    ELSE
        INSERT INTO ses_push_count_changes (state, n)
        SELECT state, -COUNT(*) FROM old_rows GROUP BY state;
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
