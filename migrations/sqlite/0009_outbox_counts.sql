-- The outbox at a glance without counting it. `/metrics`, `GET
-- /v1/sending` (which a sender may ask before every send), the page and
-- `bouncer status` read the outbox's rows by state and its last push; both
-- were read from the whole outbox, which holds a week of pushes and any
-- backlog: at 1,000,000 rows 60 ms for the counts and 260 ms for the last
-- push on SQLite at every call. The counts are now kept by triggers in the
-- transaction of every change, and the last push has an index of its own.
CREATE TABLE ses_push_counts (
    state TEXT    NOT NULL PRIMARY KEY CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    n     INTEGER NOT NULL
);
INSERT INTO ses_push_counts (state, n)
SELECT s.state, (SELECT COUNT(*) FROM ses_suppression_sync WHERE state = s.state)
FROM (SELECT 'pending' AS state UNION ALL SELECT 'done' UNION ALL SELECT 'skipped' UNION ALL SELECT 'refused') AS s;

CREATE TRIGGER ses_push_counts_insert AFTER INSERT ON ses_suppression_sync
BEGIN
    UPDATE ses_push_counts SET n = n + 1 WHERE state = NEW.state;
END;

-- An upsert's DO UPDATE fires this too.
CREATE TRIGGER ses_push_counts_update AFTER UPDATE OF state ON ses_suppression_sync
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE ses_push_counts SET n = n + CASE WHEN state = NEW.state THEN 1 ELSE -1 END
    WHERE state IN (OLD.state, NEW.state);
END;

CREATE TRIGGER ses_push_counts_delete AFTER DELETE ON ses_suppression_sync
BEGIN
    UPDATE ses_push_counts SET n = n - 1 WHERE state = OLD.state;
END;

-- The newest confirmed push: the time index walked for `done` rows read
-- every other state's row first.
CREATE INDEX ses_suppression_sync_last_done ON ses_suppression_sync (done_at)
    WHERE state = 'done';
