-- Sending volume, counted once per mail and recipient (a Send event, a
-- delivery or a bounce, whichever arrives first).
CREATE TABLE rate_volume (
    mail_id   TEXT NOT NULL,
    recipient TEXT NOT NULL,          -- '' when a Send event counted the whole mail
    seen_at   TEXT NOT NULL,
    PRIMARY KEY (mail_id, recipient)
);
CREATE INDEX rate_volume_seen_at ON rate_volume (seen_at);

-- Hourly counters behind the reputation rates: reading the rates reads at
-- most one row per hour of GUARD_MAX_AGE_DAYS, whatever the history.
CREATE TABLE rate_buckets (
    bucket_start TEXT    NOT NULL PRIMARY KEY,
    sends        INTEGER NOT NULL DEFAULT 0,
    hard_bounces INTEGER NOT NULL DEFAULT 0,
    complaints   INTEGER NOT NULL DEFAULT 0,
    -- sends known from Send events and deliveries (not only from bounces)
    delivery_sends INTEGER NOT NULL DEFAULT 0
);

-- Whether the sender may send: one row, a public contract.
CREATE TABLE sending_state (
    id                    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    state                 TEXT    NOT NULL CHECK (state IN ('active', 'paused')),
    changed_at            TEXT    NOT NULL,
    changed_by            TEXT    NOT NULL,
    reason                TEXT    NOT NULL,
    bounce_rate           REAL,
    complaint_rate        REAL,
    window_sends          INTEGER,
    window_hard_bounces   INTEGER,
    window_complaints     INTEGER,
    counting_since        TEXT    NOT NULL,
    baseline_sends        INTEGER NOT NULL DEFAULT 0,
    baseline_hard_bounces INTEGER NOT NULL DEFAULT 0,
    baseline_delivery_sends INTEGER NOT NULL DEFAULT 0,
    baseline_complaints   INTEGER NOT NULL DEFAULT 0,
    warned_at             TEXT
);
INSERT INTO sending_state (id, state, changed_at, changed_by, reason, counting_since)
VALUES (1, 'active', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'bouncer', 'initial state', '1970-01-01T00:00:00.000Z');

-- Admin alerts, written in the transaction of their cause.
CREATE TABLE alerts (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    details_json TEXT    NOT NULL,
    created_at   TEXT    NOT NULL
);

-- One delivery per alert and channel, retried until it goes through.
CREATE TABLE alert_deliveries (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id),
    channel         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    lease_until     TEXT,
    last_error      TEXT,
    delivered_at    TEXT,
    UNIQUE (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (delivered_at, next_attempt_at);
