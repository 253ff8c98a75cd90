-- The dedupe key of `sns_messages` in time order: `(sns_timestamp,
-- message_id)` instead of the id alone. SNS's MessageIds are UUIDs in no
-- order, so each stored message's entry in the id's index landed on a
-- page of its own anywhere in the index, and SQLite writes every page a
-- commit changes whole to its log (and again at the checkpoint), on the
-- writer's serial path: 5% of the feed mix's throughput, 17% of the
-- bounce storm's (BENCHMARKS.md, "A dedupe key in time order"). Every copy
-- of one SNS message, retries and replays included, carries the same
-- signed Timestamp, so the pair names the message as the id does.
--
-- SQLite cannot drop a primary key: the table is made again, its rows
-- copied in their order (and with their rowids). This needs free room for
-- about two copies of the table while it runs (the new one goes to the
-- write-ahead log first, then into the file), and takes about 8 s per
-- 100,000 stored messages on a slow machine (README, "Upgrades").
CREATE TABLE sns_messages_keyed (
    message_id        TEXT    NOT NULL,
    message_type      TEXT    NOT NULL,
    topic_arn         TEXT    NOT NULL,
    subject           TEXT,
    sns_timestamp     TEXT    NOT NULL,
    received_at       TEXT    NOT NULL,
    stored_at         TEXT    NOT NULL,
    signature_version INTEGER NOT NULL,
    via_spool         INTEGER NOT NULL DEFAULT 0,
    outcome           TEXT    NOT NULL,
    body              TEXT    NOT NULL,
    outcome_detail    TEXT
);
INSERT INTO sns_messages_keyed (rowid, message_id, message_type, topic_arn, subject,
    sns_timestamp, received_at, stored_at, signature_version, via_spool, outcome, body,
    outcome_detail)
SELECT rowid, message_id, message_type, topic_arn, subject, sns_timestamp, received_at,
    stored_at, signature_version, via_spool, outcome, body, outcome_detail
FROM sns_messages ORDER BY rowid;
DROP TABLE sns_messages;
ALTER TABLE sns_messages_keyed RENAME TO sns_messages;
CREATE UNIQUE INDEX sns_messages_key ON sns_messages (sns_timestamp, message_id);
CREATE INDEX sns_messages_received_at ON sns_messages (received_at);
