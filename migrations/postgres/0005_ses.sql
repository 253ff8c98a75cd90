-- Acting at SES itself (SPEC §10): the pause carried out at SES, and the
-- suppression list pushed to the SES account-level suppression list.

-- One row: whether suppressions are pushed (set by `serve` at start-up and
-- read by the triggers below, so that every process that changes the list,
-- a CLI command included, queues the push), and the last permission check.
CREATE TABLE ses_settings (
    id                SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    push_suppressions BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at        TIMESTAMPTZ,
    checked_at        TIMESTAMPTZ,
    check_json        TEXT
);
INSERT INTO ses_settings (id, push_suppressions) VALUES (1, FALSE);

-- What bouncer wants sending at SES to be, per target (`account`, or
-- `configuration-set:<name>`), written with the pause or resume that asks
-- for it, and what SES last confirmed. `seq` counts intents: the latest wins.
-- `idle`: no pause or resume since the target was set up (SES untouched).
CREATE TABLE ses_sending (
    target            TEXT    NOT NULL PRIMARY KEY,
    desired_enabled   BOOLEAN NOT NULL,
    seq               BIGINT  NOT NULL DEFAULT 1,
    state             TEXT    NOT NULL CHECK (state IN ('idle', 'pending', 'confirmed')),
    requested_at      TIMESTAMPTZ NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ,                -- NULL: due now
    lease_until       TIMESTAMPTZ,
    confirmed_enabled BOOLEAN,
    confirmed_at      TIMESTAMPTZ,
    last_error        TEXT,
    last_error_at     TIMESTAMPTZ,
    alerted_seq       BIGINT  NOT NULL DEFAULT 0  -- the intent whose failure was alerted
);

-- The push outbox: one row per address whose state at SES must follow
-- bouncer's list. A change while a call is in flight bumps `seq` and the
-- row is done again, so SES ends as the list is (ordered per address).
CREATE TABLE ses_suppression_sync (
    email           TEXT    NOT NULL PRIMARY KEY,
    action          TEXT    NOT NULL CHECK (action IN ('put', 'delete')),
    seq             BIGINT  NOT NULL DEFAULT 1,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'skipped', 'refused')),
    changed_at      TIMESTAMPTZ NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,                  -- NULL: due now
    lease_until     TIMESTAMPTZ,
    sent_reason     TEXT,                         -- BOUNCE | COMPLAINT, or why it was skipped
    done_at         TIMESTAMPTZ,
    last_error      TEXT,
    last_error_at   TIMESTAMPTZ
);
CREATE INDEX ses_suppression_sync_due ON ses_suppression_sync (state, changed_at);
CREATE INDEX ses_suppression_sync_done ON ses_suppression_sync (done_at);

-- When SES confirmed the removal (DeleteSuppressedDestination).
ALTER TABLE suppression_removals ADD COLUMN ses_removed_at TIMESTAMPTZ;

-- Every change of the list queues its push in the same transaction.
-- Rows imported from SES (`ses-account`) are there already. Statement-level
-- triggers over transition tables: one call per statement (the writer
-- changes a whole batch in one), so a list that is not pushed pays almost
-- nothing.
CREATE FUNCTION ses_queue_suppression_push() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT COALESCE((SELECT push_suppressions FROM ses_settings WHERE id = 1), FALSE) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ses_suppression_sync (email, action, state, changed_at)
        SELECT email, 'put', 'pending', now() FROM new_rows
        WHERE source <> 'ses-account' ORDER BY email
        ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
            state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ses_suppression_sync (email, action, state, changed_at)
        SELECT n.email, 'put', 'pending', now() FROM new_rows n JOIN old_rows o ON o.email = n.email
        WHERE o.reason IS DISTINCT FROM n.reason ORDER BY n.email
        ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
            state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
    ELSE
        INSERT INTO ses_suppression_sync (email, action, state, changed_at)
        SELECT email, 'delete', 'pending', now() FROM old_rows ORDER BY email
        ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1,
            state = 'pending', changed_at = excluded.changed_at, attempts = 0, next_attempt_at = NULL;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_ses_insert AFTER INSERT ON suppressions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_queue_suppression_push();
CREATE TRIGGER suppressions_ses_update AFTER UPDATE ON suppressions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_queue_suppression_push();
CREATE TRIGGER suppressions_ses_delete AFTER DELETE ON suppressions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ses_queue_suppression_push();
