-- The suppression list: a public contract read by the sending application.
CREATE TABLE suppressions (
    email                   TEXT    NOT NULL PRIMARY KEY,  -- normalized: no display name, trimmed, lower-case
    reason                  TEXT    NOT NULL CHECK (reason IN ('bounce', 'complaint', 'manual')),
    bounce_type             TEXT,                          -- Permanent | Transient | Undetermined
    bounce_subtype          TEXT,
    complaint_feedback_type TEXT,
    diagnostic_code         TEXT,
    first_seen_at           TIMESTAMPTZ NOT NULL,
    last_seen_at            TIMESTAMPTZ NOT NULL,
    event_count             BIGINT  NOT NULL DEFAULT 1,
    last_ses_message_id     TEXT,
    last_sns_message_id     TEXT,
    source                  TEXT    NOT NULL,              -- sns:<topic arn> | api:<caller> | cli:<user> | import:<file>
    note                    TEXT
);
CREATE INDEX suppressions_reason ON suppressions (reason, email);
CREATE INDEX suppressions_last_seen ON suppressions (last_seen_at);

-- Every removal, with who and why, and the row as it was.
CREATE TABLE suppression_removals (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        TEXT    NOT NULL,
    removed_at   TIMESTAMPTZ NOT NULL,
    removed_by   TEXT    NOT NULL,
    why          TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    row_json     TEXT    NOT NULL
);
CREATE INDEX suppression_removals_email ON suppression_removals (email);

-- Every SES event bouncer applied, once per event (feedbackId and recipient).
CREATE TABLE feedback_events (
    id                      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key               TEXT    NOT NULL UNIQUE,
    sns_message_id          TEXT    NOT NULL,
    event_type              TEXT    NOT NULL,
    format                  TEXT    NOT NULL,
    ses_message_id          TEXT    NOT NULL,
    email                   TEXT,
    feedback_id             TEXT,
    bounce_type             TEXT,
    bounce_subtype          TEXT,
    complaint_feedback_type TEXT,
    status                  TEXT,
    diagnostic_code         TEXT,
    action                  TEXT    NOT NULL,
    occurred_at             TIMESTAMPTZ NOT NULL,
    received_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX feedback_events_email ON feedback_events (email, occurred_at);

-- Soft bounces counted per address, reset by a delivery.
CREATE TABLE soft_bounces (
    email    TEXT    NOT NULL PRIMARY KEY,
    count    BIGINT  NOT NULL,
    first_at TIMESTAMPTZ NOT NULL,
    last_at  TIMESTAMPTZ NOT NULL
);

ALTER TABLE sns_messages ADD COLUMN outcome_detail TEXT;
