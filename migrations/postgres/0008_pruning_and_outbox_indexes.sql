-- Indexes found missing by reading every statement's plan on a lived-in
-- database (2,000,000 events, 200,000 pushes to SES, BENCHMARKS.md):
--
-- Retention deletes old events by `received_at`; without an index each
-- chunk read the whole table (250-400 ms at 2,000,000 events, on SQLite
-- with the write lock held, so ingest waited), and the hourly prune that
-- finds nothing did so too.
--
-- A plain CREATE INDEX (not CONCURRENTLY: that cannot run in a migration's
-- transaction) holds writes to the table while it builds: 1.2 s at
-- 2,000,000 events on the development machine. Replicas still running
-- the older version wait that long once, during the upgrade.
CREATE INDEX feedback_events_received_at ON feedback_events (received_at);
-- The newest push error, read at every /metrics scrape and `bouncer status`.
CREATE INDEX ses_suppression_sync_error ON ses_suppression_sync (last_error_at)
    WHERE last_error_at IS NOT NULL;
-- Alerts by age: the delivery planner (twice a second) and the SES
-- check's "alerted lately" look.
CREATE INDEX alerts_created_at ON alerts (created_at);
