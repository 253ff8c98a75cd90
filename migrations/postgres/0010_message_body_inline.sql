-- A real SES notification in its SNS envelope is 3 to 10 KB of JSON (the
-- mail's headers, escaped twice). Compressed with lz4 it is still over
-- PostgreSQL's TOAST target of 2 KB a row, so by default every insert also
-- moved the body out of line: a second heap row and an index entry in the
-- TOAST table, on the writer's serial path. `MAIN` keeps the body
-- compressed in the row and moves it out of line only when the row would
-- not fit a page (about 8 KB after compression). Rows stored before stay
-- as they are; both read back the same.
--
-- The change is to the catalog only, but takes the table's exclusive lock,
-- and every writer queues behind a lock that waits. Another replica still
-- serving, or a session left idle in a transaction that read the table,
-- would hold it up without end, and the writers behind it with it: after
-- 2 s the migration gives up instead (under the writers' own 5 s limit)
-- and is tried again, as any failed migration is: `serve` keeps messages in
-- its spool meanwhile, `bouncer migrate` says why it failed.
SET LOCAL lock_timeout = '2s';
ALTER TABLE sns_messages ALTER COLUMN body SET STORAGE MAIN;
