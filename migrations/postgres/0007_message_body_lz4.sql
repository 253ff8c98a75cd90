-- A stored SNS message body (about 2 KB of JSON) passes PostgreSQL's TOAST
-- threshold, so every insert compresses it. lz4 does that in less than half
-- the CPU of the default pglz (measured on 20,000 real-size bodies: 17 µs
-- against 38 µs a row), and the writer's throughput on PostgreSQL is bound
-- by the server's CPU (BENCHMARKS.md). Rows stored before keep pglz; both
-- read back the same. A server built without lz4 (or older than 14) keeps
-- pglz: the migration must not stop start-up for a matter of speed.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE sns_messages ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 is not available on this server; message bodies stay compressed with pglz (%)', SQLERRM;
END
$$;
