-- Every SNS message bouncer accepted, exactly once per MessageId.
CREATE TABLE sns_messages (
    message_id        TEXT    NOT NULL PRIMARY KEY,
    message_type      TEXT    NOT NULL,
    topic_arn         TEXT    NOT NULL,
    subject           TEXT,
    sns_timestamp     TEXT    NOT NULL,
    received_at       TEXT    NOT NULL,
    stored_at         TEXT    NOT NULL,
    signature_version INTEGER NOT NULL,
    via_spool         INTEGER NOT NULL DEFAULT 0,
    outcome           TEXT    NOT NULL,
    body              TEXT    NOT NULL
);
CREATE INDEX sns_messages_received_at ON sns_messages (received_at);
