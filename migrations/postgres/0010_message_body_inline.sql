-- A real SES notification in its SNS envelope is 3 to 10 KB of JSON (the
-- mail's headers, escaped twice). Compressed with lz4 it is still over
-- PostgreSQL's TOAST target of 2 KB a row, so by default every insert also
-- moved the body out of line: a second heap row and an index entry in the
-- TOAST table, on the writer's serial path. `MAIN` keeps the body
-- compressed in the row and moves it out of line only when the row would
-- not fit a page (about 8 KB after compression). Rows stored before stay
-- as they are; both read back the same.
ALTER TABLE sns_messages ALTER COLUMN body SET STORAGE MAIN;
