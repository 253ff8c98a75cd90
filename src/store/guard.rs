//! The guard's tables: `rate_volume` (each send counted once),
//! hourly `rate_buckets`, and the one-row `sending_state` that the sender
//! reads. The decisions made from them live in `crate::guard`.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use sqlx::QueryBuilder;

use super::conn::Raw;
use super::keyed::KeyedInsert;
use super::messages::{key_order, rows_per_statement};
use super::text::storable;
use super::{DbResult, Store, Tx, on_db, on_tx};
use crate::time::Timestamp;

/// The counts in one hourly bucket (or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sends: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
    /// Sends known from Send events or deliveries.
    pub delivery_sends: i64,
}

impl Counts {
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    /// Less `other` (the counts of the resume hour at the resume), never
    /// below zero.
    pub fn minus(self, other: Counts) -> Counts {
        Counts {
            sends: (self.sends - other.sends).max(0),
            hard_bounces: (self.hard_bounces - other.hard_bounces).max(0),
            complaints: (self.complaints - other.complaints).max(0),
            delivery_sends: (self.delivery_sends - other.delivery_sends).max(0),
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.sends += other.sends;
        self.hard_bounces += other.hard_bounces;
        self.complaints += other.complaints;
        self.delivery_sends += other.delivery_sends;
    }
}

/// The pause state as the sender and the operator see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SendingState {
    pub state: String,
    pub changed_at: Timestamp,
    pub changed_by: String,
    pub reason: String,
    pub bounce_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    pub window_sends: Option<i64>,
    pub window_hard_bounces: Option<i64>,
    pub window_complaints: Option<i64>,
    pub counting_since: Timestamp,
    pub warned_at: Option<Timestamp>,
}

/// What the guard needs of `sending_state` to decide.
#[derive(Debug, Clone, Copy)]
pub struct GuardState {
    pub paused: bool,
    pub warned: bool,
    pub counting_since: Timestamp,
    /// The resume hour's counts at the resume: they do not count.
    pub baseline: Counts,
}

impl GuardState {
    /// From the row's `state`, `warned_at`, `counting_since` and baseline.
    fn of(
        state: &str,
        warned_at: Option<Timestamp>,
        counting_since: Timestamp,
        baseline: Counts,
    ) -> GuardState {
        GuardState {
            paused: state == "paused",
            warned: warned_at.is_some(),
            counting_since,
            baseline,
        }
    }
}

/// What says a (mail, recipient) pair was sent, or was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A Send event or a delivery: a send, and one known from deliveries.
    Delivery,
    /// A bounce: a send.
    Bounce,
    /// SES's word that the mail was not sent (an `OnAccountSuppressionList`
    /// bounce or complaint, a `Reject`, a `Rendering Failure`): the pair
    /// never counts, and a send counted for it before is taken back.
    NotSent,
}

impl Proof {
    /// The `counted` column of a pair this proof is the first word on.
    fn column(self) -> &'static str {
        match self {
            Proof::Delivery => "delivery",
            Proof::Bounce => "bounce",
            Proof::NotSent => "none",
        }
    }
}

/// What a batch changes in the rates' counts: its own hour's, and the
/// sends SES's word took back, each from the hour it was counted in.
#[derive(Debug, Clone, Default)]
pub struct CountChange {
    pub counted: Counts,
    /// When each send taken back was counted, and what it had counted.
    pub taken_back: Vec<(Timestamp, Counts)>,
}

/// Counts each (mail, recipient) once in `rate_volume` (`proofs` in arrival
/// order): the first word on a pair decides, except that SES's word that it
/// was not sent wins over any other in the batch and takes back a send
/// counted before, once (the column changes in the same statement, so a
/// second word, here or on another replica, finds nothing to take back).
/// One statement per chunk of pairs in key order, whatever the words, as
/// every keyed write of the batch: two replicas' writers lock rows in the
/// same order and cannot deadlock on them.
pub async fn count_volume(
    tx: &mut Tx<'_>,
    proofs: &[(&str, &str, Proof)],
    now: Timestamp,
) -> DbResult<CountChange> {
    // The key is the pair; `\n` cannot occur in either half once stored.
    let keys: Vec<std::borrow::Cow<'_, str>> = proofs
        .iter()
        .map(|(m, r, _)| std::borrow::Cow::Owned(format!("{}\n{}", storable(m), storable(r))))
        .collect();
    let not_sent: HashSet<&str> = keys
        .iter()
        .zip(proofs)
        .filter(|(_, (_, _, p))| *p == Proof::NotSent)
        .map(|(k, _)| k.as_ref())
        .collect();
    let order = key_order(&keys);
    let proof_of = |i: usize| {
        if not_sent.contains(keys[i].as_ref()) {
            Proof::NotSent
        } else {
            proofs[i].2
        }
    };
    let mut change = CountChange::default();
    if not_sent.is_empty() {
        // The common case, and the cheap one: nothing to take back, so a
        // pair stored before stays as it is.
        let mut inserted = HashSet::new();
        for chunk in order.chunks(rows_per_statement(4)) {
            let rows = on_tx!(tx, conn => {
                let mut qb = QueryBuilder::new("INSERT INTO rate_volume (mail_id, recipient, seen_at, counted) ");
                push_pairs(&mut qb, chunk, proofs, &proof_of, now);
                qb.push(" ON CONFLICT (mail_id, recipient) DO NOTHING");
                conn.keyed_insert(qb, "rate_volume", "mail_id, recipient", chunk.len()).await
            })?;
            inserted.extend(rows.keys(
                chunk.iter().map(|i| keys[*i].as_ref()),
                |(m, r): (String, String)| format!("{m}\n{r}"),
            ));
        }
        for i in &order {
            if inserted.contains(keys[*i].as_ref()) {
                change.counted.add(sent(proof_of(*i) == Proof::Delivery));
            }
        }
        return Ok(change);
    }
    // Each row returned is one this statement inserted (what it counts is
    // its `counted`) or took back (`..._taken_back`, its `seen_at` the
    // hour it was counted in); a pair left as it was returns nothing.
    const TAKE_BACK: &str = " ON CONFLICT (mail_id, recipient) DO UPDATE SET counted = \
        CASE rate_volume.counted WHEN 'delivery' THEN 'delivery_taken_back' ELSE 'bounce_taken_back' END \
        WHERE excluded.counted = 'none' AND rate_volume.counted IN ('delivery', 'bounce') \
        RETURNING seen_at, counted";
    for chunk in order.chunks(rows_per_statement(4)) {
        let rows: Vec<(Timestamp, String)> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("INSERT INTO rate_volume (mail_id, recipient, seen_at, counted) ");
            push_pairs(&mut qb, chunk, proofs, &proof_of, now);
            qb.push(TAKE_BACK);
            qb.build_query_as().fetch_all(conn).await
        })?;
        for (seen_at, counted) in rows {
            match counted.as_str() {
                "delivery" => change.counted.add(sent(true)),
                "bounce" => change.counted.add(sent(false)),
                "delivery_taken_back" => change.taken_back.push((seen_at, sent(true))),
                "bounce_taken_back" => change.taken_back.push((seen_at, sent(false))),
                _ => {}
            }
        }
    }
    Ok(change)
}

/// One send, and whether deliveries knew it.
fn sent(delivery: bool) -> Counts {
    Counts {
        sends: 1,
        delivery_sends: i64::from(delivery),
        ..Counts::default()
    }
}

fn push_pairs<DB>(
    qb: &mut QueryBuilder<DB>,
    chunk: &[usize],
    proofs: &[(&str, &str, Proof)],
    proof_of: &dyn Fn(usize) -> Proof,
    now: Timestamp,
) where
    DB: sqlx::Database,
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    Timestamp: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push_values(chunk, |mut row, i| {
        let (mail, recipient, _) = proofs[*i];
        row.push_bind(storable(mail).into_owned())
            .push_bind(storable(recipient).into_owned())
            .push_bind(now)
            .push_bind(proof_of(*i).column().to_owned());
    });
}

/// Changes the buckets of several hours by signed counts (sends taken
/// back are negative), never below zero; an hour whose bucket is gone
/// (pruned) and that would only lose is left alone. One statement, in
/// hour order: PostgreSQL takes every hour's row before the rows' AFTER
/// triggers take their days' (`rate_days`), so a writer holds no day while
/// it waits for an hour, and two replicas that touch several hours each
/// cannot deadlock (hour by hour in separate statements, one would hold a
/// day and wait for an hour the other holds while waiting for that day).
/// Returns the hours written.
///
/// The bucket's existence is read from the statement's snapshot: an hour
/// deleted by another transaction while the statement runs (by hand, or
/// by a prune with a shorter maximum age than this writer's) can come back
/// with negative sends.
pub async fn change_hours(
    tx: &mut Tx<'_>,
    changes: &[(Timestamp, Counts)],
) -> DbResult<Vec<Timestamp>> {
    const CLAMPED: &str = ") AS v WHERE (column2 >= 0 AND column5 >= 0) \
        OR EXISTS (SELECT 1 FROM rate_buckets b WHERE b.bucket_start = v.column1) \
        ORDER BY column1 \
        ON CONFLICT (bucket_start) DO UPDATE SET \
          sends = CASE WHEN rate_buckets.sends + excluded.sends > 0 \
            THEN rate_buckets.sends + excluded.sends ELSE 0 END, \
          hard_bounces = rate_buckets.hard_bounces + excluded.hard_bounces, \
          complaints = rate_buckets.complaints + excluded.complaints, \
          delivery_sends = CASE WHEN rate_buckets.delivery_sends + excluded.delivery_sends > 0 \
            THEN rate_buckets.delivery_sends + excluded.delivery_sends ELSE 0 END \
        RETURNING bucket_start";
    Ok(on_tx!(tx, conn => {
        let mut qb = QueryBuilder::new(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT column1, column2, column3, column4, column5 FROM (",
        );
        qb.push_values(changes, |mut row, (hour, c)| {
            row.push_bind(*hour)
                .push_bind(c.sends)
                .push_bind(c.hard_bounces)
                .push_bind(c.complaints)
                .push_bind(c.delivery_sends);
        });
        qb.push(CLAMPED);
        qb.build_query_scalar().fetch_all(conn).await
    })?)
}

/// Adds `c` to the bucket of the hour starting at `hour`.
pub async fn add_counts(tx: &mut Tx<'_>, hour: Timestamp, c: Counts) -> DbResult<()> {
    const SQL: &str = "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
        VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (bucket_start) DO UPDATE SET \
          sends = rate_buckets.sends + excluded.sends, \
          hard_bounces = rate_buckets.hard_bounces + excluded.hard_bounces, \
          complaints = rate_buckets.complaints + excluded.complaints, \
          delivery_sends = rate_buckets.delivery_sends + excluded.delivery_sends";
    on_tx!(tx, conn => sqlx::query(SQL)
        .bind(hour)
        .bind(c.sends)
        .bind(c.hard_bounces)
        .bind(c.complaints)
        .bind(c.delivery_sends)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// The `baseline_*` columns of `sending_state`.
#[derive(sqlx::FromRow)]
struct BaselineColumns {
    baseline_sends: i64,
    baseline_hard_bounces: i64,
    baseline_complaints: i64,
    baseline_delivery_sends: i64,
}

impl From<BaselineColumns> for Counts {
    fn from(b: BaselineColumns) -> Counts {
        Counts {
            sends: b.baseline_sends,
            hard_bounces: b.baseline_hard_bounces,
            complaints: b.baseline_complaints,
            delivery_sends: b.baseline_delivery_sends,
        }
    }
}

const STATE: &str = "SELECT state, warned_at, counting_since, baseline_sends, baseline_hard_bounces, \
    baseline_complaints, baseline_delivery_sends FROM sending_state WHERE id = 1";

/// Reads the guard's state; `lock` also locks the row until the end of the
/// transaction (PostgreSQL; SQLite's write transaction holds the database),
/// so that concurrent writers on any replica check the rates one at a time
/// and each sees the counts the others committed.
pub async fn guard_state(tx: &mut Tx<'_>, lock: bool) -> DbResult<GuardState> {
    #[derive(sqlx::FromRow)]
    struct Row {
        state: String,
        warned_at: Option<Timestamp>,
        counting_since: Timestamp,
        #[sqlx(flatten)]
        baseline: BaselineColumns,
    }
    let sql = if lock && !tx.is_sqlite() {
        const LOCKED: &str = concat!(
            "SELECT state, warned_at, counting_since, baseline_sends, baseline_hard_bounces, ",
            "baseline_complaints, baseline_delivery_sends FROM sending_state WHERE id = 1 FOR UPDATE"
        );
        LOCKED
    } else {
        STATE
    };
    let row: Row = on_tx!(tx, conn => sqlx::query_as(sql).fetch_one(conn).await)?;
    Ok(GuardState::of(
        &row.state,
        row.warned_at,
        row.counting_since,
        row.baseline.into(),
    ))
}

/// The state row whole, in one statement: what the sender and the
/// operator see, with what the guard needs of it.
pub async fn sending_state_in(tx: &mut Tx<'_>) -> DbResult<(SendingState, GuardState)> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        shown: SendingState,
        #[sqlx(flatten)]
        baseline: BaselineColumns,
    }
    const SQL: &str = "SELECT state, changed_at, changed_by, reason, bounce_rate, complaint_rate, window_sends, \
        window_hard_bounces, window_complaints, counting_since, warned_at, baseline_sends, baseline_hard_bounces, \
        baseline_complaints, baseline_delivery_sends FROM sending_state WHERE id = 1";
    let row: Row = on_tx!(tx, conn => sqlx::query_as(SQL).fetch_one(conn).await)?;
    let shown = row.shown;
    let guard = GuardState::of(
        &shown.state,
        shown.warned_at,
        shown.counting_since,
        row.baseline.into(),
    );
    Ok((shown, guard))
}

const DAY_MILLIS: i64 = 86_400_000;

/// The start of the UTC day of `at`, `days_back` days earlier.
pub fn day_of(at: Timestamp, days_back: i64) -> Timestamp {
    let millis = at.unix_millis();
    let start = millis - millis.rem_euclid(DAY_MILLIS) - days_back * DAY_MILLIS;
    Timestamp::from_unix_millis(start).unwrap_or(at)
}

/// The start of the first whole UTC day at or after `at` (`rate_days`
/// sum the hours of whole days).
pub fn first_whole_day(at: Timestamp) -> Timestamp {
    match day_of(at, 0) {
        start if start == at => at,
        _ => day_of(at, -1),
    }
}

/// Binds the resume's hour and its counts at the resume (`None` when that
/// hour is older than the cutoff): the totals' oldest hour is the oldest
/// that counts something, and the resume's hour counts only what came
/// after the resume, as in a full window's walk (`guard::window`).
fn bind_baseline<'q, DB, O>(
    query: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>,
    baseline: Option<(Timestamp, Counts)>,
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Option<Timestamp>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let counts = baseline.map(|(_, c)| c).unwrap_or_default();
    query
        .bind(baseline.map(|(hour, _)| hour))
        .bind(counts.sends)
        .bind(counts.hard_bounces)
        .bind(counts.complaints)
        .bind(counts.delivery_sends)
}

/// SQLite: every bucket from `cutoff` on, summed, with the oldest
/// bucket that counts something: whole days from `rate_days` and the hours before the
/// first of them (about 50 rows instead of 720 at the default maximum
/// age). PostgreSQL reads the same with its newest hours, in
/// [`totals_and_newest_hours`].
pub async fn totals_since(
    tx: &mut Tx<'_>,
    cutoff: Timestamp,
    baseline: Option<(Timestamp, Counts)>,
) -> DbResult<(Counts, Option<Timestamp>)> {
    const DAYS_AND_HOURS: &str = "SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT), CAST(COALESCE(SUM(hard_bounces), 0) AS BIGINT), \
        CAST(COALESCE(SUM(complaints), 0) AS BIGINT), CAST(COALESCE(SUM(delivery_sends), 0) AS BIGINT), \
        (SELECT MIN(bucket_start) FROM rate_buckets WHERE bucket_start >= $1 \
          AND (sends <> 0 OR hard_bounces <> 0 OR complaints <> 0 OR delivery_sends <> 0) \
          AND NOT ($3 IS NOT NULL AND bucket_start = $3 AND sends <= $4 AND hard_bounces <= $5 \
            AND complaints <= $6 AND delivery_sends <= $7)) \
        FROM (SELECT sends, hard_bounces, complaints, delivery_sends FROM rate_days WHERE day >= substr($2, 1, 10) \
        UNION ALL SELECT sends, hard_bounces, complaints, delivery_sends FROM rate_buckets \
        WHERE bucket_start >= $1 AND bucket_start < $2)";
    let Raw::Sqlite(conn) = tx.raw() else {
        return Err(
            sqlx::Error::Protocol("PostgreSQL reads totals_and_newest_hours".into()).into(),
        );
    };
    let (sends, hard_bounces, complaints, delivery_sends, oldest): (
        i64,
        i64,
        i64,
        i64,
        Option<Timestamp>,
    ) = bind_baseline(
        sqlx::query_as(DAYS_AND_HOURS)
            .bind(cutoff)
            .bind(first_whole_day(cutoff)),
        baseline,
    )
    .fetch_one(conn)
    .await?;
    Ok((
        Counts {
            sends,
            hard_bounces,
            complaints,
            delivery_sends,
        },
        oldest,
    ))
}

/// PostgreSQL: every bucket from `cutoff` on, summed (whole days from
/// `rate_days` and the hours before the first of them), with the oldest
/// bucket that counts something, and, in the same statement, the hours from
/// `newest_from` on, newest first, when the totals hold at least `full_at`
/// sends (the window is full: the caller reads it newest hour first). One
/// round trip instead of two for every check of a full window. The hours
/// are empty when the totals do not fill it.
pub async fn totals_and_newest_hours(
    tx: &mut Tx<'_>,
    cutoff: Timestamp,
    full_at: i64,
    newest_from: Timestamp,
    baseline: Option<(Timestamp, Counts)>,
) -> DbResult<(Counts, Option<Timestamp>, Vec<Span>)> {
    // The condition inside the lateral query is on the totals alone; its
    // plans apply it as a join filter, so the scan of the newest hours (a
    // few days of rows, cheap) runs either way, and its rows are dropped
    // when the window is not full.
    // The hour's counts are NOT NULL columns: COALESCE only fills the one
    // row without an hour (bucket_start NULL), which is dropped.
    const SQL: &str = "SELECT t.sends, t.hard_bounces, t.complaints, t.delivery_sends, t.oldest, \
        h.bucket_start, COALESCE(h.sends, 0), COALESCE(h.hard_bounces, 0), COALESCE(h.complaints, 0), \
        COALESCE(h.delivery_sends, 0) \
        FROM (SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT) AS sends, \
          CAST(COALESCE(SUM(hard_bounces), 0) AS BIGINT) AS hard_bounces, \
          CAST(COALESCE(SUM(complaints), 0) AS BIGINT) AS complaints, \
          CAST(COALESCE(SUM(delivery_sends), 0) AS BIGINT) AS delivery_sends, \
          (SELECT MIN(bucket_start) FROM rate_buckets WHERE bucket_start >= $1 \
            AND (sends <> 0 OR hard_bounces <> 0 OR complaints <> 0 OR delivery_sends <> 0) \
            AND NOT ($5::timestamptz IS NOT NULL AND bucket_start = $5 AND sends <= $6 AND hard_bounces <= $7 \
              AND complaints <= $8 AND delivery_sends <= $9)) AS oldest \
          FROM (SELECT sends, hard_bounces, complaints, delivery_sends FROM rate_days \
            WHERE day >= ($4 AT TIME ZONE 'UTC')::date \
            UNION ALL SELECT sends, hard_bounces, complaints, delivery_sends FROM rate_buckets \
            WHERE bucket_start >= $1 AND bucket_start < $4) s) t \
        LEFT JOIN LATERAL (SELECT bucket_start, sends, hard_bounces, complaints, delivery_sends \
          FROM rate_buckets WHERE t.sends >= $2 AND bucket_start >= $3) h ON true \
        ORDER BY h.bucket_start DESC";
    type Row = (
        i64,
        i64,
        i64,
        i64,
        Option<Timestamp>,
        Option<Timestamp>,
        i64,
        i64,
        i64,
        i64,
    );
    let Raw::Postgres(conn) = tx.raw() else {
        return Err(sqlx::Error::Protocol("a LATERAL join is PostgreSQL's".into()).into());
    };
    let rows: Vec<Row> = bind_baseline(
        sqlx::query_as(SQL)
            .bind(cutoff)
            .bind(full_at)
            .bind(newest_from)
            .bind(first_whole_day(cutoff)),
        baseline,
    )
    .fetch_all(conn)
    .await?;
    // An aggregate without GROUP BY always answers one row.
    let &(sends, hard_bounces, complaints, delivery_sends, oldest, ..) =
        rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let totals = Counts {
        sends,
        hard_bounces,
        complaints,
        delivery_sends,
    };
    let hours = rows
        .iter()
        .filter_map(
            |&(.., hour, sends, hard_bounces, complaints, delivery_sends)| {
                let counts = Counts {
                    sends,
                    hard_bounces,
                    complaints,
                    delivery_sends,
                };
                hour.map(|oldest| Span { oldest, counts })
            },
        )
        .collect();
    Ok((totals, oldest, hours))
}

/// A run of buckets, newest first, as read for a full window: one hourly
/// bucket, or one day's buckets summed.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// The oldest bucket in it.
    pub oldest: Timestamp,
    pub counts: Counts,
}

/// Which buckets [`spans`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Spans {
    /// Hourly buckets from `cutoff` on, older than `older_than` when given.
    Hours {
        cutoff: Timestamp,
        older_than: Option<Timestamp>,
    },
    /// Whole UTC days from the day starting at `from` on, before the day
    /// starting at `before` when given: `rate_days`, the hours of each day
    /// summed by triggers.
    Days {
        from: Timestamp,
        before: Option<Timestamp>,
    },
}

/// Buckets, newest first, handed to `take` until it returns false.
///
/// PostgreSQL sends every row of a query even when the reader stops
/// early; see `guard::window` for what each database reads.
pub async fn spans(
    tx: &mut Tx<'_>,
    which: Spans,
    mut take: impl FnMut(Span) -> bool,
) -> DbResult<()> {
    // Both ends always bound (an open one as the last instant): a plan
    // made without the values (PostgreSQL's generic plans, which the rates
    // read asks for, and SQLite's) then scans just the range of the key,
    // where `$2 IS NULL OR ...` left it every row newer than the range.
    // The open end leaves out the day 9999-12-31, which no bucket reaches:
    // buckets are hours of the server's clock.
    const HOURS: &str = "SELECT bucket_start, sends, hard_bounces, complaints, delivery_sends FROM rate_buckets \
        WHERE bucket_start >= $1 AND bucket_start < $2 ORDER BY bucket_start DESC";
    const DAYS_SQLITE: &str = "SELECT day || 'T00:00:00.000Z', sends, hard_bounces, complaints, delivery_sends \
        FROM rate_days WHERE day >= substr($1, 1, 10) AND day < substr($2, 1, 10) \
        ORDER BY day DESC";
    const DAYS_POSTGRES: &str = "SELECT day::timestamp AT TIME ZONE 'UTC', sends, hard_bounces, complaints, \
        delivery_sends FROM rate_days WHERE day >= ($1 AT TIME ZONE 'UTC')::date \
        AND day < ($2 AT TIME ZONE 'UTC')::date ORDER BY day DESC";
    type SpanRow = (Timestamp, i64, i64, i64, i64);
    let days = if tx.is_sqlite() {
        DAYS_SQLITE
    } else {
        DAYS_POSTGRES
    };
    on_tx!(tx, conn => {
        let query = match which {
            Spans::Hours { cutoff, older_than } => sqlx::query_as::<_, SpanRow>(HOURS)
                .bind(cutoff)
                .bind(older_than.unwrap_or(Timestamp::LAST)),
            Spans::Days { from, before } => sqlx::query_as::<_, SpanRow>(days)
                .bind(from)
                .bind(before.unwrap_or(Timestamp::LAST)),
        };
        let mut rows = query.fetch(&mut *conn);
        while let Some((oldest, sends, hard_bounces, complaints, delivery_sends)) =
            rows.try_next().await?
        {
            let counts = Counts { sends, hard_bounces, complaints, delivery_sends };
            if !take(Span { oldest, counts }) {
                break;
            }
        }
        Ok::<(), sqlx::Error>(())
    })?;
    Ok(())
}

/// The rates and counts recorded with an automatic pause.
pub struct PauseRecord<'a> {
    pub reason: &'a str,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
    pub sends: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
}

/// Pauses if active; whether this call did it (the conditional update makes
/// concurrent transactions and replicas agree on one pause).
pub async fn pause_automatically(
    tx: &mut Tx<'_>,
    record: &PauseRecord<'_>,
    now: Timestamp,
) -> DbResult<bool> {
    const SQL: &str = "UPDATE sending_state SET state = 'paused', changed_at = $1, changed_by = 'bouncer', \
        reason = $2, bounce_rate = $3, complaint_rate = $4, window_sends = $5, window_hard_bounces = $6, \
        window_complaints = $7 WHERE id = 1 AND state = 'active'";
    let changed = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(now)
        .bind(record.reason)
        .bind(record.bounce_rate)
        .bind(record.complaint_rate)
        .bind(record.sends)
        .bind(record.hard_bounces)
        .bind(record.complaints)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(changed == 1)
}

/// Marks the warning as given; whether this call did it.
pub async fn mark_warned(tx: &mut Tx<'_>, now: Timestamp) -> DbResult<bool> {
    const SQL: &str = "UPDATE sending_state SET warned_at = $1 WHERE id = 1 AND warned_at IS NULL AND state = 'active'";
    let changed = on_tx!(tx, conn => sqlx::query(SQL).bind(now).execute(conn).await.map(|r| r.rows_affected()))?;
    Ok(changed == 1)
}

/// The rates fell back: the next crossing warns again.
pub async fn rearm_warning(tx: &mut Tx<'_>) -> DbResult<()> {
    const SQL: &str =
        "UPDATE sending_state SET warned_at = NULL WHERE id = 1 AND warned_at IS NOT NULL";
    on_tx!(tx, conn => sqlx::query(SQL).execute(conn).await.map(|_| ()))?;
    Ok(())
}

/// Pauses by hand, if active; whether this call did it.
pub async fn pause_by_hand(
    tx: &mut Tx<'_>,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> DbResult<bool> {
    const SQL: &str = "UPDATE sending_state SET state = 'paused', changed_at = $1, changed_by = $2, reason = $3 \
        WHERE id = 1 AND state = 'active'";
    let changed = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(now)
        .bind(storable(by).as_ref())
        .bind(storable(reason).as_ref())
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(changed == 1)
}

/// Adds `c` to the resume's baseline: counts of the resume's hour that
/// came before the resume but were written by a batch that committed
/// after it (`guard::check`).
pub async fn add_to_baseline(tx: &mut Tx<'_>, c: Counts) -> DbResult<()> {
    const SQL: &str = "UPDATE sending_state SET baseline_sends = baseline_sends + $1, \
        baseline_hard_bounces = baseline_hard_bounces + $2, baseline_complaints = baseline_complaints + $3, \
        baseline_delivery_sends = baseline_delivery_sends + $4 WHERE id = 1";
    on_tx!(tx, conn => sqlx::query(SQL)
        .bind(c.sends)
        .bind(c.hard_bounces)
        .bind(c.complaints)
        .bind(c.delivery_sends)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Resumes, if paused: counting starts afresh at `now`, and the counts the
/// hour starting at `hour` holds now are recorded to be subtracted.
pub async fn resume(
    tx: &mut Tx<'_>,
    by: &str,
    reason: &str,
    now: Timestamp,
    hour: Timestamp,
) -> DbResult<bool> {
    // The row first, then the baseline in a statement of its own: on
    // PostgreSQL an UPDATE's subqueries read the snapshot the statement
    // began with, so an UPDATE that waited for a batch holding the row
    // would take the baseline from before that batch's counts and
    // take-backs, and the new window would count them (or miss them).
    guard_state(tx, true).await?;
    const SQL: &str = "UPDATE sending_state SET state = 'active', changed_at = $1, changed_by = $2, reason = $3, \
        counting_since = $1, warned_at = NULL, \
        baseline_sends = COALESCE((SELECT sends FROM rate_buckets WHERE bucket_start = $4), 0), \
        baseline_hard_bounces = COALESCE((SELECT hard_bounces FROM rate_buckets WHERE bucket_start = $4), 0), \
        baseline_complaints = COALESCE((SELECT complaints FROM rate_buckets WHERE bucket_start = $4), 0), \
        baseline_delivery_sends = COALESCE((SELECT delivery_sends FROM rate_buckets WHERE bucket_start = $4), 0) \
        WHERE id = 1 AND state = 'paused'";
    let changed = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(now)
        .bind(storable(by).as_ref())
        .bind(storable(reason).as_ref())
        .bind(hour)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(changed == 1)
}

impl Store {
    /// Writes the rules messages are applied with as the service's (`serve`
    /// at start-up) and returns what was recorded before.
    pub async fn record_apply_settings(
        &self,
        json: &str,
        now: Timestamp,
    ) -> DbResult<Option<(String, Timestamp)>> {
        let before = self.recorded_apply_settings().await?;
        const SQL: &str = "INSERT INTO apply_settings (id, policy_json, recorded_at) VALUES (1, $1, $2) \
            ON CONFLICT (id) DO UPDATE SET policy_json = excluded.policy_json, recorded_at = excluded.recorded_at";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(json).bind(now).execute(pool).await.map(|_| ()))?;
        Ok(before)
    }

    /// The rules messages are applied with, as the last `serve` to start
    /// recorded them.
    pub async fn recorded_apply_settings(&self) -> DbResult<Option<(String, Timestamp)>> {
        const SQL: &str = "SELECT policy_json, recorded_at FROM apply_settings WHERE id = 1";
        Ok(on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_optional(pool).await)?)
    }
}
