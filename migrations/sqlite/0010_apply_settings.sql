-- The rules `bouncer serve` applies messages with (the guard's window and
-- thresholds, the soft-bounce rule) as the last one to start wrote them, so
-- that `bouncer status` and `bouncer replay`, run from a shell without the
-- service's GUARD_* and SOFT_BOUNCE_* settings, report and apply as the
-- service does. One row, written at every start-up; none until a service
-- has started.
CREATE TABLE apply_settings (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    policy_json TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL
);
