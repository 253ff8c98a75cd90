-- Sending volume, counted once per mail and recipient (a Send event, a
-- delivery or a bounce, whichever arrives first).
CREATE TABLE rate_volume (
    mail_id   TEXT NOT NULL,
    recipient TEXT NOT NULL,          -- '' when a Send event counted the whole mail
    seen_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (mail_id, recipient)
);
CREATE INDEX rate_volume_seen_at ON rate_volume (seen_at);

-- Hourly counters behind the reputation rates: reading the rates reads at
-- most one row per hour of GUARD_MAX_AGE_DAYS, whatever the history.
CREATE TABLE rate_buckets (
    bucket_start TIMESTAMPTZ NOT NULL PRIMARY KEY,
    sends        BIGINT NOT NULL DEFAULT 0,
    hard_bounces BIGINT NOT NULL DEFAULT 0,
    complaints   BIGINT NOT NULL DEFAULT 0,
    -- sends known from Send events and deliveries (not only from bounces)
    delivery_sends BIGINT NOT NULL DEFAULT 0
);

-- Whether the sender may send: one row, a public contract.
CREATE TABLE sending_state (
    id                    SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    state                 TEXT    NOT NULL CHECK (state IN ('active', 'paused')),
    changed_at            TIMESTAMPTZ NOT NULL,
    changed_by            TEXT    NOT NULL,
    reason                TEXT    NOT NULL,
    bounce_rate           DOUBLE PRECISION,
    complaint_rate        DOUBLE PRECISION,
    window_sends          BIGINT,
    window_hard_bounces   BIGINT,
    window_complaints     BIGINT,
    counting_since        TIMESTAMPTZ NOT NULL,
    baseline_sends        BIGINT NOT NULL DEFAULT 0,
    baseline_hard_bounces BIGINT NOT NULL DEFAULT 0,
    baseline_delivery_sends BIGINT NOT NULL DEFAULT 0,
    baseline_complaints   BIGINT NOT NULL DEFAULT 0,
    warned_at             TIMESTAMPTZ
);
INSERT INTO sending_state (id, state, changed_at, changed_by, reason, counting_since)
VALUES (1, 'active', now(), 'bouncer', 'initial state', '1970-01-01T00:00:00Z');

-- Admin alerts, written in the transaction of their cause.
CREATE TABLE alerts (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    details_json TEXT    NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

-- One delivery per alert and channel, retried until it goes through.
CREATE TABLE alert_deliveries (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        BIGINT NOT NULL REFERENCES alerts (id),
    channel         TEXT    NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    UNIQUE (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (delivered_at, next_attempt_at);
