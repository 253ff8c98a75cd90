-- The newest confirmed push, read with the outbox's counts at every
-- `GET /v1/sending`, `/metrics`, page and `bouncer status`.
--
-- SQLite keeps the counts themselves in a table maintained by triggers
-- (its migration 0009). PostgreSQL does not: a count row updated by every
-- change holds its lock until the change's transaction commits, so one long
-- transaction on the outbox (a `bouncer suppressions import` while pushing
-- is on) would make every writer batch with a suppression wait behind it,
-- past its write time limit, into the spool, and two transactions changing
-- two states in turn could deadlock. SQLite has one writer at a time, so
-- there the counts cost no new waiting. See docs/decisions.md.
CREATE INDEX ses_suppression_sync_last_done ON ses_suppression_sync (done_at)
    WHERE state = 'done';
