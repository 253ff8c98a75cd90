//! `sns_messages`: every accepted SNS message, once. A unique key is the
//! dedupe: a second delivery (even at the same moment on another
//! connection or another replica) inserts nothing.
//!
//! On SQLite the key is `(sns_timestamp, message_id)`, in time order.
//! SNS's MessageIds are UUIDs in no order: keyed by the id alone, each
//! message's index entry landed on a page of its own, anywhere in the
//! index, and SQLite writes every page a commit changes whole to its log
//! (and again at the checkpoint), on the writer's serial path: 5% of the
//! feed mix's throughput and 17% of the bounce storm's (BENCHMARKS.md,
//! "A dedupe key in time order"). Every copy of one SNS message, retries
//! and replays included, carries the same signed `Timestamp`, so the pair
//! names the message as the id does. PostgreSQL keeps the id alone as its
//! key: replicas of the version before an upgrade go on writing with it
//! (docs/decisions.md).

use std::borrow::Cow;
use std::collections::HashSet;

use sqlx::QueryBuilder;

use super::keyed::KeyedInsert;
use super::text::{storable, storable_opt};
use super::{DbResult, Store, Tx, on_db, on_tx};
use crate::time::Timestamp;

/// SQLite allows 32,766 bound parameters per statement; stay well below.
pub(crate) const MAX_PARAMS: usize = 30_000;

/// The most rows one writing statement of a batch carries, and the most
/// bytes of message text (bodies, diagnostic codes) past its first row.
/// Inside a transaction SQLite keeps the original of every existing page a
/// statement changes, so that it can undo that statement alone; the writer
/// keeps those in memory (`temp_store=MEMORY`, `open.rs`), where these two
/// bound them. A row changes a page of 4 KiB in its table and in each
/// index (and a trigger's table) it touches, up to a dozen for a
/// suppression with SES push on: about 12 MiB at 256 rows on a grown
/// database. Text longer than a page goes to pages of its own, which may
/// be pages freed by pruning and kept in full too: the byte bound caps
/// those. A batch of a dozen messages or so, the usual, is one statement a
/// table either way.
pub(crate) const MAX_ROWS: usize = 256;
pub(crate) const MAX_TEXT_BYTES: usize = 1 << 20;

/// How many rows of `columns` bound parameters each go in one writing
/// statement.
pub(crate) fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).min(MAX_ROWS)
}

/// `rows` cut into statements of at most `rows_per_statement(columns)`
/// rows and, past each statement's first row, `MAX_TEXT_BYTES` of
/// `text(row)`.
pub(crate) fn statements<T>(
    rows: &[T],
    columns: usize,
    text: impl Fn(&T) -> usize,
) -> impl Iterator<Item = &[T]> {
    let max_rows = rows_per_statement(columns);
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && n < max_rows {
            bytes += text(&rest[n]);
            if n > 0 && bytes > MAX_TEXT_BYTES {
                break;
            }
            n += 1;
        }
        let (chunk, after) = rest.split_at(n);
        rest = after;
        Some(chunk)
    })
}

/// One SNS message to record.
#[derive(Debug, Clone)]
pub struct MessageRow<'a> {
    pub message_id: &'a str,
    pub message_type: &'a str,
    pub topic_arn: &'a str,
    pub subject: Option<&'a str>,
    pub sns_timestamp: Timestamp,
    pub received_at: Timestamp,
    pub signature_version: i32,
    pub via_spool: bool,
    /// `stored`, `applied`, `recorded` or `unrecognized`.
    pub outcome: &'a str,
    pub outcome_detail: Option<&'a str>,
    /// The envelope exactly as received.
    pub body: &'a str,
}

/// A message's dedupe key as one string, the key its backend keeps (see
/// the module's comment): on SQLite its `Timestamp` (fixed-width text, so
/// that the string's order is time order) and its id, apart by a `\n`,
/// which neither holds; on PostgreSQL its id.
fn dedupe_key(sqlite: bool, sns_timestamp: Timestamp, message_id: &str) -> Cow<'_, str> {
    if sqlite {
        Cow::Owned(format!(
            "{}\n{}",
            sns_timestamp.to_text(),
            storable(message_id)
        ))
    } else {
        storable(message_id)
    }
}

/// The positions of `keys` in key order, each key once (its first
/// occurrence). Every keyed batch is written in key order, so that two
/// replicas writing overlapping batches lock the same rows in the same
/// order and cannot deadlock.
pub(crate) fn key_order<'k>(keys: &[Cow<'k, str>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // Stable: equal keys keep their arrival order, the first stays.
    order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
    order.dedup_by(|later, first| keys[*later] == keys[*first]);
    order
}

/// Which of `keys` the database just inserted: those it returned, at their
/// first occurrence only.
pub(crate) fn new_flags(keys: &[Cow<'_, str>], inserted: &HashSet<String>) -> Vec<bool> {
    let mut seen = HashSet::new();
    keys.iter()
        .map(|k| inserted.contains(k.as_ref()) && seen.insert(k.as_ref()))
        .collect()
}

/// Inserts the rows (a known key inserts nothing); for each row, whether
/// it was new.
pub async fn insert_messages(
    tx: &mut Tx<'_>,
    rows: &[MessageRow<'_>],
    stored_at: Timestamp,
) -> DbResult<Vec<bool>> {
    // Each backend's rows in its own key's order: on PostgreSQL that is
    // the order replicas of the version before insert in too (a rolling
    // upgrade), so that overlapping batches cannot deadlock.
    let sqlite = tx.is_sqlite();
    let keys: Vec<Cow<'_, str>> = rows
        .iter()
        .map(|r| dedupe_key(sqlite, r.sns_timestamp, r.message_id))
        .collect();
    let order = key_order(&keys);
    let conflict = if sqlite {
        " ON CONFLICT (sns_timestamp, message_id) DO NOTHING"
    } else {
        " ON CONFLICT (message_id) DO NOTHING"
    };
    let mut inserted = HashSet::new();
    for chunk in statements(&order, 12, |i| rows[*i].body.len()) {
        let ids = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO sns_messages (message_id, message_type, topic_arn, subject, sns_timestamp, \
                 received_at, stored_at, signature_version, via_spool, outcome, outcome_detail, body) ",
            );
            qb.push_values(chunk, |mut row, i| {
                let r = &rows[*i];
                row.push_bind(storable(r.message_id).into_owned())
                    .push_bind(r.message_type.to_owned())
                    .push_bind(storable(r.topic_arn).into_owned())
                    .push_bind(storable_opt(r.subject))
                    .push_bind(r.sns_timestamp)
                    .push_bind(r.received_at)
                    .push_bind(stored_at)
                    .push_bind(r.signature_version)
                    .push_bind(r.via_spool)
                    .push_bind(r.outcome.to_owned())
                    .push_bind(storable_opt(r.outcome_detail))
                    .push_bind(storable(r.body).into_owned());
            });
            qb.push(conflict);
            conn.keyed_insert(qb, "sns_messages", "sns_timestamp, message_id", chunk.len()).await
        })?;
        inserted.extend(ids.keys(
            chunk.iter().map(|i| keys[*i].as_ref()),
            |(at, id): (Timestamp, String)| dedupe_key(sqlite, at, &id).into_owned(),
        ));
    }
    Ok(new_flags(&keys, &inserted))
}

impl Store {
    /// Whether this SNS message (its signed `Timestamp` and its id, the
    /// dedupe key) is stored already (a cheap look before confirming a
    /// subscription a second time).
    pub async fn message_seen(&self, sns_timestamp: Timestamp, message_id: &str) -> DbResult<bool> {
        const SQL: &str =
            "SELECT COUNT(*) FROM sns_messages WHERE sns_timestamp = $1 AND message_id = $2";
        let id = storable(message_id);
        let n: i64 = on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(sns_timestamp).bind(id.as_ref()).fetch_one(pool).await)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stop_at_their_rows_or_their_text_and_take_at_least_one_row() {
        let lens: Vec<usize> = [10, 20, MAX_TEXT_BYTES, 5, MAX_TEXT_BYTES * 3]
            .into_iter()
            .chain(std::iter::repeat_n(1, MAX_ROWS + 1))
            .collect();
        let sizes: Vec<usize> = statements(&lens, 2, |l| *l).map(<[usize]>::len).collect();
        // The third row would take the first statement past the bound; a
        // row at or past the bound goes alone; then rows stop at MAX_ROWS.
        assert_eq!(sizes, [2, 1, 1, 1, MAX_ROWS, 1]);
        assert_eq!(sizes.iter().sum::<usize>(), lens.len());
        assert_eq!(statements(&[0usize; 0], 2, |l| *l).count(), 0);
    }

    #[test]
    fn keys_go_in_order_once_and_the_first_copy_is_the_new_one() {
        let keys: Vec<Cow<str>> = ["b", "a", "b", "c"]
            .into_iter()
            .map(Cow::Borrowed)
            .collect();
        assert_eq!(key_order(&keys), [1, 0, 3]);
        let inserted: HashSet<String> = ["b".to_owned(), "c".to_owned()].into();
        assert_eq!(new_flags(&keys, &inserted), [true, false, false, true]);
    }
}
