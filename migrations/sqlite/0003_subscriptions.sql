-- The SNS subscriptions that feed bouncer, one per topic, and their state.
CREATE TABLE subscriptions (
    topic_arn        TEXT NOT NULL PRIMARY KEY,
    subscription_arn TEXT,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'unsubscribed')),
    confirm_mode     TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    confirmed_at     TEXT,
    unsubscribed_at  TEXT,
    last_message_id  TEXT NOT NULL,
    last_message_at  TEXT NOT NULL
);
