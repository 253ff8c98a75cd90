-- A stored SNS message body (about 2 KB of JSON) passes PostgreSQL's TOAST
-- threshold, so every insert compresses it, and that insert is most of
-- PostgreSQL's work in a batch on the writer's serial path. lz4 compresses
-- in much less CPU than the default pglz (20,000 real-size bodies inserted
-- in one statement: 335 ms against 768 ms, BENCHMARKS.md). Rows stored
-- before keep pglz; both read back the same.
--
-- A server built without lz4 (feature_not_supported) or older than 14 (no
-- COMPRESSION clause: syntax_error) keeps pglz with a warning: start-up must
-- not stop for a matter of speed. Anything else (a lock held past a
-- lock_timeout, missing privileges) fails the migration, which is then
-- tried again, rather than being recorded as applied without effect.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE sns_messages ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE WARNING 'this PostgreSQL server cannot compress with lz4 (%); message bodies stay compressed with pglz, which costs more CPU per message', SQLERRM;
END
$$;
