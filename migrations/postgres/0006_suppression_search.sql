-- Searching the suppression list by address prefix (the page, and
-- `GET /v1/suppressions?q=`): a prefix is one range of the key only in byte
-- order. The primary key follows the database's collation, which may be
-- linguistic (en_US.UTF-8), so the search has its own index in byte order.
CREATE INDEX suppressions_email_bytes ON suppressions (email COLLATE "C");
