-- What counted each (mail, recipient) pair in the rates' sends, so that
-- SES's word that the mail was not sent (an `OnAccountSuppressionList`
-- bounce or complaint, a `Reject`, a `Rendering Failure`) takes the send
-- back from the hour it was counted in, once:
--   delivery             counted in sends and delivery_sends (a Send event
--                        or a delivery proved it)
--   bounce               counted in sends only (a bounce proved it)
--   none                 never counted: SES said it was not sent first
--   delivery_taken_back  counted as `delivery`, then taken back
--   bounce_taken_back    counted as `bounce`, then taken back
-- Pairs counted before this column (or by a replica of the version before,
-- still running in a rolling upgrade) say `delivery`: the pairs SES later
-- says were not sent are those a Send event counted (a bounce of a pair
-- contradicts SES's word that it was not sent).
-- The column with a constant default changes no row; the check holds for
-- every row written from now on (`NOT VALID`: the rows before hold the
-- default), so the table, one row per recipient of every mail of the
-- guard's maximum age, is not scanned under an exclusive lock while other
-- replicas wait to write.
ALTER TABLE rate_volume ADD COLUMN counted TEXT NOT NULL DEFAULT 'delivery';
ALTER TABLE rate_volume ADD CONSTRAINT rate_volume_counted
    CHECK (counted IN ('delivery', 'bounce', 'none', 'delivery_taken_back', 'bounce_taken_back')) NOT VALID;
