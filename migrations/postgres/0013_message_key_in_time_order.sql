-- SQLite's 0013 keys `sns_messages` by `(sns_timestamp, message_id)`, in
-- time order. PostgreSQL keeps the id alone as its key: replicas of the
-- version before an upgrade go on writing (a rolling upgrade) with
-- `ON CONFLICT (message_id)`, which needs that key, and a message they
-- could not store would be set aside instead (docs/decisions.md, "A
-- dedupe key in time order"). The version is kept so that both backends
-- number their schemas alike.
SELECT 1;
