-- Acting at SES itself (SPEC §10): the pause carried out at SES, and the
-- suppression list pushed to the SES account-level suppression list.

-- One row: whether suppressions are pushed (set by `serve` at start-up and
-- read by the triggers below, so that every process that changes the list,
-- a CLI command included, queues the push), and the last permission check.
CREATE TABLE ses_settings (
    id                INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    push_suppressions INTEGER NOT NULL DEFAULT 0 CHECK (push_suppressions IN (0, 1)),
    updated_at        TEXT,
    checked_at        TEXT,
    check_json        TEXT
);
INSERT INTO ses_settings (id, push_suppressions) VALUES (1, 0);

-- What bouncer wants sending at SES to be, per target (`account`, or
-- `configuration-set:<name>`), written with the pause or resume that asks
-- for it, and what SES last confirmed. `seq` counts intents: the latest wins.
-- `idle`: no pause or resume since the target was set up (SES untouched).
CREATE TABLE ses_sending (
    target            TEXT    NOT NULL PRIMARY KEY,
    desired_enabled   INTEGER NOT NULL CHECK (desired_enabled IN (0, 1)),
    seq               INTEGER NOT NULL DEFAULT 1,
    state             TEXT    NOT NULL CHECK (state IN ('idle', 'pending', 'confirmed')),
    requested_at      TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,                       -- NULL: due now
    lease_until       TEXT,
    confirmed_enabled INTEGER CHECK (confirmed_enabled IN (0, 1)),
    confirmed_at      TEXT,
    last_error        TEXT,
    last_error_at     TEXT,
    alerted_seq       INTEGER NOT NULL DEFAULT 0  -- the intent whose failure was alerted
);

-- The push outbox: one row per address whose state at SES must follow
-- bouncer's list. A change while a call is in flight bumps `seq` and the
-- row is done again, so SES ends as the list is (ordered per address).
CREATE TABLE ses_suppression_sync (
    email           TEXT    NOT NULL PRIMARY KEY,
    action          TEXT    NOT NULL CHECK (action IN ('put', 'delete')),
    seq             INTEGER NOT NULL DEFAULT 1,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    changed_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,                         -- NULL: due now
    lease_until     TEXT,
    sent_reason     TEXT,                         -- BOUNCE | COMPLAINT, or why it was skipped
    done_at         TEXT,
    last_error      TEXT,
    last_error_at   TEXT
);
CREATE INDEX ses_suppression_sync_due ON ses_suppression_sync (state, changed_at);
CREATE INDEX ses_suppression_sync_done ON ses_suppression_sync (done_at);

-- When SES confirmed the removal (DeleteSuppressedDestination).
ALTER TABLE suppression_removals ADD COLUMN ses_removed_at TEXT;

-- Every change of the list queues its push in the same transaction.
-- Rows imported from SES (`ses-account`) are there already.
CREATE TRIGGER suppressions_ses_insert AFTER INSERT ON suppressions
WHEN NEW.source <> 'ses-account'
 AND (SELECT push_suppressions FROM ses_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO ses_suppression_sync (email, action, state, changed_at)
    VALUES (NEW.email, 'put', 'pending', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
        state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
END;

CREATE TRIGGER suppressions_ses_update AFTER UPDATE OF reason ON suppressions
WHEN OLD.reason IS NOT NEW.reason
 AND (SELECT push_suppressions FROM ses_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO ses_suppression_sync (email, action, state, changed_at)
    VALUES (NEW.email, 'put', 'pending', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
        state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
END;

CREATE TRIGGER suppressions_ses_delete AFTER DELETE ON suppressions
WHEN (SELECT push_suppressions FROM ses_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO ses_suppression_sync (email, action, state, changed_at)
    VALUES (OLD.email, 'delete', 'pending', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
        state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
END;
