//! `sns_messages`: every accepted SNS message, once per MessageId. The
//! primary key is the dedupe: a second delivery (even at the same moment on
//! another connection or another replica) inserts nothing.

use super::{Store, Timestamp, Tx, on_tx};
use crate::sns::verify::VerifiedMessage;

/// A verified message on its way into the database.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message: VerifiedMessage,
    /// It waited in the local spool while the database was unreachable.
    pub via_spool: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now, for the first time.
    Stored,
    /// The MessageId was stored before: nothing changed.
    Duplicate,
}

impl StoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOutcome::Stored => "stored",
            StoreOutcome::Duplicate => "duplicate",
        }
    }
}

/// What happened to one message of a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub outcome: StoreOutcome,
}

const INSERT_MESSAGE: &str = "INSERT INTO sns_messages \
     (message_id, message_type, topic_arn, subject, sns_timestamp, received_at, stored_at, \
      signature_version, via_spool, outcome, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (message_id) DO NOTHING";

/// Inserts the message; `false` when its MessageId was already there.
async fn insert_message(
    tx: &mut Tx,
    accepted: &Accepted,
    outcome: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let m = &accepted.message;
    let e = m.envelope();
    let rows = on_tx!(tx, conn => sqlx::query(INSERT_MESSAGE)
        .bind(m.message_id())
        .bind(e.message_type.as_str())
        .bind(m.topic_arn())
        .bind(e.subject())
        .bind(e.timestamp)
        .bind(m.received_at())
        .bind(now)
        .bind(m.signature_version().number())
        .bind(accepted.via_spool)
        .bind(outcome)
        .bind(m.raw_body())
        .execute(conn)
        .await?
        .rows_affected());
    Ok(rows == 1)
}

/// Applies one message inside an open transaction.
async fn apply_one(
    tx: &mut Tx,
    accepted: &Accepted,
    now: Timestamp,
) -> Result<Applied, sqlx::Error> {
    let outcome = if insert_message(tx, accepted, StoreOutcome::Stored.as_str(), now).await? {
        StoreOutcome::Stored
    } else {
        StoreOutcome::Duplicate
    };
    Ok(Applied { outcome })
}

impl Store {
    /// Applies `batch` in one transaction and one commit (group commit);
    /// each message is applied whole or, if the commit fails, not at all.
    pub async fn apply_batch(
        &self,
        batch: &[&Accepted],
        now: Timestamp,
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let mut applied = Vec::with_capacity(batch.len());
        for accepted in batch {
            applied.push(apply_one(&mut tx, accepted, now).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// How many messages with this id are stored (0 or 1): for tests and
    /// the CLI.
    pub async fn count_messages(&self, message_id: &str) -> Result<i64, sqlx::Error> {
        super::on_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sns_messages WHERE message_id = $1")
            .bind(message_id)
            .fetch_one(pool)
            .await)
    }
}
