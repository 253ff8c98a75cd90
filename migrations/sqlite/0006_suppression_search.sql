-- Searching the suppression list by address prefix: SQLite compares text
-- byte by byte, so the primary key serves the prefix range already
-- (PostgreSQL needs an index in byte order, see its 0013). Nothing to do;
-- the version is kept so that both backends number their schemas alike.
SELECT 1;
