-- Every SNS message bouncer accepted, exactly once per MessageId.
CREATE TABLE sns_messages (
    message_id        TEXT        NOT NULL PRIMARY KEY,
    message_type      TEXT        NOT NULL,
    topic_arn         TEXT        NOT NULL,
    subject           TEXT,
    sns_timestamp     TIMESTAMPTZ NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL,
    stored_at         TIMESTAMPTZ NOT NULL,
    signature_version INTEGER     NOT NULL,
    via_spool         BOOLEAN     NOT NULL DEFAULT false,
    outcome           TEXT        NOT NULL,
    body              TEXT        NOT NULL
);
CREATE INDEX sns_messages_received_at ON sns_messages (received_at);
