//! `subscriptions`: each SNS topic feeding bouncer and the state of its
//! subscription (pending, confirmed, unsubscribed), written in the same
//! transaction as the SNS message that changed it. A message older than the
//! one that set the current state changes nothing.

use serde::Serialize;

use super::text::storable;
use super::{DbResult, Store, Tx, on_db, on_tx};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub topic_arn: String,
    pub subscription_arn: Option<String>,
    pub state: String,
    pub confirm_mode: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
    pub unsubscribed_at: Option<Timestamp>,
    pub last_message_id: String,
    pub last_message_at: Timestamp,
}

pub struct SubscriptionChange<'a> {
    pub topic_arn: &'a str,
    pub subscription_arn: Option<&'a str>,
    pub state: &'a str,
    pub confirm_mode: Option<&'a str>,
    pub message_id: &'a str,
    pub message_at: Timestamp,
    pub now: Timestamp,
}

const UPSERT: &str = "INSERT INTO subscriptions \
    (topic_arn, subscription_arn, state, confirm_mode, created_at, updated_at, confirmed_at, \
     unsubscribed_at, last_message_id, last_message_at) \
    VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9) \
    ON CONFLICT (topic_arn) DO UPDATE SET \
      subscription_arn = COALESCE(excluded.subscription_arn, subscriptions.subscription_arn), \
      state = excluded.state, \
      confirm_mode = COALESCE(excluded.confirm_mode, subscriptions.confirm_mode), \
      updated_at = excluded.updated_at, \
      confirmed_at = COALESCE(excluded.confirmed_at, subscriptions.confirmed_at), \
      unsubscribed_at = excluded.unsubscribed_at, \
      last_message_id = excluded.last_message_id, \
      last_message_at = excluded.last_message_at \
    WHERE excluded.last_message_at >= subscriptions.last_message_at";

pub async fn record(tx: &mut Tx<'_>, change: &SubscriptionChange<'_>) -> DbResult<()> {
    let confirmed_at = (change.state == "confirmed").then_some(change.now);
    let unsubscribed_at = (change.state == "unsubscribed").then_some(change.now);
    on_tx!(tx, conn => sqlx::query(UPSERT)
        .bind(storable(change.topic_arn).as_ref())
        .bind(change.subscription_arn.map(|a| storable(a).into_owned()))
        .bind(change.state)
        .bind(change.confirm_mode)
        .bind(change.now)
        .bind(confirmed_at)
        .bind(unsubscribed_at)
        .bind(storable(change.message_id).as_ref())
        .bind(change.message_at)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

impl Store {
    pub async fn subscriptions(&self) -> DbResult<Vec<Subscription>> {
        const SQL: &str = "SELECT topic_arn, subscription_arn, state, confirm_mode, created_at, updated_at, \
            confirmed_at, unsubscribed_at, last_message_id, last_message_at FROM subscriptions ORDER BY topic_arn";
        Ok(on_db!(&self.db, pool => sqlx::query_as::<_, Subscription>(SQL).fetch_all(pool).await)?)
    }
}
