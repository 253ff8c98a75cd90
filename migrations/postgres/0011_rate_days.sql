-- The guard's hourly buckets summed by UTC day, kept by triggers in the
-- transaction of every change of `rate_buckets` (the writer's, retention's,
-- or an operator's own SQL), as on SQLite since its 0011. A full window
-- that reaches back weeks then reads about twenty days and the hours of
-- one, instead of every hour: sqlx decodes each row it is sent (about
-- 1 µs), and a three-week window sent ~500 of them.
--
-- Unlike SQLite's triggers, which sum a changed day again from its hours,
-- these add the difference of the changed hour, always: several replicas
-- write at once, and a sum read from one transaction's snapshot could
-- overwrite a concurrent transaction's addition to the same day (an hour
-- begun on one replica while another still counts the hour before). An
-- addition is applied to the day's newest row under its lock.

-- Replicas may be writing while another migrates (a rolling upgrade): the
-- lock waits for every batch that has written an hour to commit and holds
-- new ones until the triggers exist, so no batch falls between the days'
-- first sum and the triggers (an addition missed then would stay missing).
LOCK TABLE rate_buckets IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE rate_days (
    day            DATE   NOT NULL PRIMARY KEY,  -- the UTC day of bucket_start
    sends          BIGINT NOT NULL DEFAULT 0,
    hard_bounces   BIGINT NOT NULL DEFAULT 0,
    complaints     BIGINT NOT NULL DEFAULT 0,
    delivery_sends BIGINT NOT NULL DEFAULT 0
);

INSERT INTO rate_days (day, sends, hard_bounces, complaints, delivery_sends)
SELECT (bucket_start AT TIME ZONE 'UTC')::date, SUM(sends), SUM(hard_bounces), SUM(complaints), SUM(delivery_sends)
FROM rate_buckets GROUP BY 1;

-- Adds an hour's counts to its day, with `sign` -1 to take them away. A
-- day's row exists exactly while the day has an hour: taking an hour away
-- removes the day with its last hour.
CREATE FUNCTION rate_days_add(hour TIMESTAMPTZ, sign BIGINT, by_sends BIGINT, by_hard_bounces BIGINT,
                              by_complaints BIGINT, by_delivery_sends BIGINT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d DATE := (hour AT TIME ZONE 'UTC')::date;
BEGIN
    INSERT INTO rate_days AS r (day, sends, hard_bounces, complaints, delivery_sends)
    VALUES (d, sign * by_sends, sign * by_hard_bounces, sign * by_complaints, sign * by_delivery_sends)
    ON CONFLICT (day) DO UPDATE SET
        sends = r.sends + excluded.sends,
        hard_bounces = r.hard_bounces + excluded.hard_bounces,
        complaints = r.complaints + excluded.complaints,
        delivery_sends = r.delivery_sends + excluded.delivery_sends;
    IF sign < 0 THEN
        DELETE FROM rate_days r WHERE r.day = d AND NOT EXISTS (
            SELECT 1 FROM rate_buckets b
            WHERE b.bucket_start >= d::timestamp AT TIME ZONE 'UTC'
              AND b.bucket_start < (d + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
END $$;

CREATE FUNCTION rate_days_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d DATE := (NEW.bucket_start AT TIME ZONE 'UTC')::date;  -- NULL for a DELETE
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.bucket_start AT TIME ZONE 'UTC')::date = d THEN
        -- The writer's upsert of the current hour, once a batch: one
        -- statement.
        UPDATE rate_days SET
            sends = rate_days.sends + NEW.sends - OLD.sends,
            hard_bounces = rate_days.hard_bounces + NEW.hard_bounces - OLD.hard_bounces,
            complaints = rate_days.complaints + NEW.complaints - OLD.complaints,
            delivery_sends = rate_days.delivery_sends + NEW.delivery_sends - OLD.delivery_sends
        WHERE day = d;
        IF NOT FOUND THEN
            -- The day's row was lost (deleted by hand, or hours written
            -- with the triggers off): the day summed again from its hours,
            -- this one included, rather than left out for good.
            INSERT INTO rate_days (day, sends, hard_bounces, complaints, delivery_sends)
            SELECT d, SUM(b.sends), SUM(b.hard_bounces), SUM(b.complaints), SUM(b.delivery_sends)
            FROM rate_buckets b
            WHERE b.bucket_start >= d::timestamp AT TIME ZONE 'UTC'
              AND b.bucket_start < (d + 1)::timestamp AT TIME ZONE 'UTC'
            ON CONFLICT (day) DO NOTHING;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM rate_days_add(OLD.bucket_start, -1, OLD.sends, OLD.hard_bounces, OLD.complaints, OLD.delivery_sends);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM rate_days_add(NEW.bucket_start, 1, NEW.sends, NEW.hard_bounces, NEW.complaints, NEW.delivery_sends);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER rate_days_follow AFTER INSERT OR UPDATE OR DELETE ON rate_buckets
FOR EACH ROW EXECUTE FUNCTION rate_days_follow();

CREATE FUNCTION rate_days_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE rate_days;
    RETURN NULL;
END $$;

CREATE TRIGGER rate_days_truncate AFTER TRUNCATE ON rate_buckets
FOR EACH STATEMENT EXECUTE FUNCTION rate_days_truncate();
