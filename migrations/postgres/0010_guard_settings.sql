-- The guard's settings as the last `bouncer serve` to start wrote them, so
-- that `bouncer status`, run from a shell without the service's GUARD_*
-- settings, reports the rates with the thresholds the service acts on.
-- One row, written at every start-up; none until a service has started.
CREATE TABLE guard_settings (
    id          SMALLINT    NOT NULL PRIMARY KEY CHECK (id = 1),
    policy_json TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
