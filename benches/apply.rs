//! The writer's side alone: one batch of verified messages applied and
//! committed in one transaction on the writer's own connection (on SQLite
//! with the WAL's fsync that the service does beside the next batch), with no
//! HTTP in front and nothing else on the cores. The time per batch, and per
//! message, for both workloads and a few batch sizes, on SQLite and
//! PostgreSQL: what caps the throughput when requests wait on the writer.
//! A third workload, the listed storm, times batches that take sends back:
//! SES's `OnAccountSuppressionList` bounces for mails whose Send events were
//! applied before (not timed).
//!
//! cargo bench --bench apply          (BENCH_BATCHES=100 batches per case)
//!
//! BENCH_SIZES=1,32,128 the batch sizes (the default); BENCH_WORKLOADS=
//! storm,mix,listed the workloads (the default: all three), e.g. to
//! profile one case alone.
//!
//! BENCH_SOFT_BOUNCES=100000 starts from a lived-in database: that many
//! streaks of addresses that soft-bounced long ago and were never delivered
//! to again (nothing removes them but a delivery or an operator), so that
//! a statement that scans `soft_bounces` shows in the figures.
//!
//! BENCH_LIVED_IN=1000000 starts from that many SNS messages (2 KB bodies),
//! suppressions and counted sends (also in the guard's hourly counts), and
//! twice as many events, all with random keys as real ones are, received
//! over the last 180 days: the indexes a batch writes into are then larger
//! than any cache, as after months of service, instead of empty.

#[path = "common/mod.rs"]
mod common;
mod load;

use std::time::{Duration, Instant};

use bouncer::address::EmailAddress;
use bouncer::app::{Hooks, apply_policy, build_verifier};
use bouncer::config::Settings;
use bouncer::ingest::Accepted;
use bouncer::ingest::apply::apply_batch;
use bouncer::metrics::Metrics;
use bouncer::sns::envelope::Envelope;
use bouncer::store::Store;
use bouncer::store::soft_bounces::{self, Streak};
use common::ScratchPostgres;
use load::ses::{Workload, envelopes};
use load::signing::{TEST_CERT_FILE, TEST_CERT_URL, TOPIC};

fn settings(database_url: &str) -> Settings {
    let mut s = Settings::defaults();
    s.database_url = database_url.to_owned();
    s.sns_topic_arns = vec![TOPIC.to_owned()];
    s.sns_cert_pins = vec![format!(
        "{TEST_CERT_URL}={}/{TEST_CERT_FILE}",
        env!("CARGO_MANIFEST_DIR")
    )];
    s
}

fn run(label: &str, database_url: &str, batches: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let settings = settings(database_url);
    let verifier =
        build_verifier(&settings, &Hooks::default(), &Metrics::new(), false).expect("verifier");
    let policy = apply_policy(&settings).expect("policy");
    let store = runtime.block_on(async {
        let store = Store::connect(&settings).await.expect("store");
        store.migrate().await.expect("migrate");
        store
    });
    let stale = count_setting("BENCH_SOFT_BOUNCES", 0);
    if stale > 0 {
        runtime.block_on(stale_streaks(&store, stale));
    }
    let lived_in = count_setting("BENCH_LIVED_IN", 0);
    if lived_in > 0 {
        let started = Instant::now();
        runtime.block_on(fill_history(database_url, lived_in));
        eprintln!(
            "{label}: {lived_in} messages of history written in {:.0?}",
            started.elapsed()
        );
    }
    let verify = |bodies: Vec<String>| -> Vec<Accepted> {
        bodies
            .into_iter()
            .map(|body| {
                let envelope =
                    Envelope::parse(body.as_bytes(), Some("Notification")).expect("envelope");
                let verified = runtime
                    .block_on(verifier.verify(envelope, body.as_bytes()))
                    .expect("verifies");
                Accepted::new(verified, false)
            })
            .collect()
    };
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1,32,128".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SIZES: batch sizes, comma-separated")
        })
        .collect();
    let workloads = std::env::var("BENCH_WORKLOADS").unwrap_or_else(|_| "storm,mix,listed".into());
    let chosen = [(Workload::BounceStorm, "storm"), (Workload::FeedMix, "mix")]
        .into_iter()
        .filter(|(_, name)| workloads.split(',').any(|w| w.trim() == *name));
    for (workload, _) in chosen {
        for &size in &sizes {
            let n = size * batches;
            let tag = format!("apply-{label}-{workload:?}-{size}-{}", std::process::id());
            let accepted = verify(envelopes(workload, n, &tag));
            let timed = runtime.block_on(apply_in_batches(&store, &policy, &accepted, size));
            timed.print(label, workload.name(), size);
        }
    }
    // Take-backs: the Send events applied first (not timed), then SES's
    // word for each of those mails that it was not sent, in batches.
    let listed = workloads.split(',').any(|w| w.trim() == "listed");
    for &size in sizes.iter().filter(|_| listed) {
        let n = size * batches;
        let tag = format!("apply-{label}-listed-{size}-{}", std::process::id());
        let (sends, listed) = load::ses::listed_storm(n, &tag);
        let (sends, listed) = (verify(sends), verify(listed));
        runtime.block_on(apply_in_batches(&store, &policy, &sends, 128));
        let counted = runtime.block_on(window_sends(&store, &policy));
        let timed = runtime.block_on(apply_in_batches(&store, &policy, &listed, size));
        // What was timed took each send back (the window's sends, as
        // `GET /v1/sending` shows them), or the figure means nothing.
        let left = runtime.block_on(window_sends(&store, &policy));
        assert_eq!(counted - left, n as i64, "sends taken back of {tag}");
        timed.print(label, "listed storm (each a send taken back)", size);
    }
    runtime.block_on(store.close());
}

/// What applying a workload in batches took.
struct Timed {
    times: Vec<Duration>,
    cpu: f64,
    wall: Duration,
    messages: usize,
}

impl Timed {
    fn print(mut self, label: &str, workload: &str, size: usize) {
        self.times.sort();
        let median = self.times[self.times.len() / 2];
        println!(
            "{label} | {workload}, {size} per batch | median {:.2} ms per batch, {:.0} µs per message | p90 {:.2} ms | at most {:.0} msg/s | CPU {:.0}% of the time, {:.0} µs per message",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6 / size as f64,
            self.times[self.times.len() * 9 / 10].as_secs_f64() * 1e3,
            size as f64 / median.as_secs_f64(),
            self.cpu * 100.0 / self.wall.as_secs_f64(),
            self.cpu * 1e6 / self.messages as f64,
        );
    }
}

/// Applies `accepted` in batches of `size` on the writer's own connection,
/// each batch committed and made durable before the next.
async fn apply_in_batches(
    store: &Store,
    policy: &bouncer::ingest::ApplyPolicy,
    accepted: &[Accepted],
    size: usize,
) -> Timed {
    let cpu = load::server::cpu_seconds("/proc/self/stat");
    let wall = Instant::now();
    let mut conn = store.connect_writer().await.expect("writer connection");
    let mut times = Vec::with_capacity(accepted.len().div_ceil(size));
    for batch in accepted.chunks(size) {
        let refs: Vec<&Accepted> = batch.iter().collect();
        let started = Instant::now();
        let now = bouncer::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
        let mut tx = conn.begin().await.expect("begin");
        apply_batch(&mut tx, &refs, policy, now)
            .await
            .expect("apply");
        tx.commit().await.expect("commit");
        // Durable, as the service answers only then: on SQLite the
        // writer's commit leaves the WAL's fsync to a thread beside the
        // next batch; here it is done in line.
        if let Some(wal) = store.writer_wal() {
            std::fs::File::open(wal)
                .and_then(|f| f.sync_data())
                .expect("sync the WAL");
        }
        times.push(started.elapsed());
    }
    Timed {
        times,
        cpu: load::server::cpu_seconds("/proc/self/stat") - cpu,
        wall: wall.elapsed(),
        messages: accepted.len(),
    }
}

/// The sends the guard's window counts now.
async fn window_sends(store: &Store, policy: &bouncer::ingest::ApplyPolicy) -> i64 {
    let (_, rates) = bouncer::guard::current_rates(store, &policy.guard)
        .await
        .expect("rates");
    rates.sends
}

/// `n` soft-bounce streaks of other addresses, a year old.
async fn stale_streaks(store: &Store, n: usize) {
    let long_ago = bouncer::time::Timestamp::from_datetime(
        time::OffsetDateTime::now_utc() - time::Duration::days(365),
    );
    let streak = Streak {
        count: 1,
        first_at: long_ago,
        last_at: long_ago,
    };
    let emails: Vec<EmailAddress> = (0..n)
        .map(|i| EmailAddress::parse(&format!("stale{i}@example.net")).expect("address"))
        .collect();
    let rows: Vec<(&EmailAddress, Option<Streak>)> =
        emails.iter().map(|e| (e, Some(streak))).collect();
    let mut conn = store.connect_writer().await.expect("writer connection");
    let mut tx = conn.begin().await.expect("begin");
    soft_bounces::write(&mut tx, &rows).await.expect("streaks");
    tx.commit().await.expect("commit");
}

/// `n` messages of history: SNS messages, suppressions, counted sends and
/// twice as many events, with random keys, over the last 180 days. Written
/// in SQL on a connection of its own (millions of rows through the writer
/// would take longer than the benchmark).
async fn fill_history(database_url: &str, n: usize) {
    use sqlx::Connection;
    const TOPIC_ARN: &str = "arn:aws:sns:eu-west-1:123456789012:ses-feedback";
    let sqlite = database_url.starts_with("sqlite:");
    // Each dialect's row source (`i` counting from 0, `t` a time within 180
    // days), random key, random address, ~2 KB body and false.
    let rows = |count: usize, select: &str, into: &str| {
        let source = if sqlite {
            format!(
                "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {count} - 1) \
                 SELECT i, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (i * 7919 % 15552000) || ' seconds') AS t FROM n)"
            )
        } else {
            format!(
                "(SELECT i, now() - (i * 7919 % 15552000) * interval '1 second' AS t \
                 FROM generate_series(0::bigint, {count} - 1) AS i)"
            )
        };
        format!("INSERT INTO {into} SELECT {select} FROM {source} AS n")
    };
    // Hex bodies compress about as well as real ones do (PostgreSQL's lz4).
    let (key, email, body, no) = if sqlite {
        (
            "lower(hex(randomblob(16)))",
            "lower(hex(randomblob(6))) || '@example.org'",
            "hex(randomblob(1000))".to_owned(),
            "0",
        )
    } else {
        (
            "md5(random()::text)",
            "left(md5(random()::text), 12) || '@example.org'",
            vec!["md5(random()::text)"; 62].join(" || "),
            "false",
        )
    };
    let mut statements = vec![
        rows(
            n,
            &format!(
                "{key}, 'Notification', '{TOPIC_ARN}', NULL, t, t, t, 1, {no}, 'applied', {body}"
            ),
            "sns_messages (message_id, message_type, topic_arn, subject, sns_timestamp, received_at, stored_at, signature_version, via_spool, outcome, body)",
        ),
        rows(
            n,
            &format!(
                "{email}, 'bounce', 'Permanent', 'General', 'smtp; 550 5.1.1 user unknown', t, t, 1, {key}, {key}, 'sns:{TOPIC_ARN}'"
            ),
            "suppressions (email, reason, bounce_type, bounce_subtype, diagnostic_code, first_seen_at, last_seen_at, event_count, last_ses_message_id, last_sns_message_id, source)",
        ),
        rows(
            2 * n,
            &format!(
                "{key}, {key}, 'Delivery', 'notification', {key}, {email}, NULL, NULL, NULL, NULL, NULL, NULL, 'recorded', t, t"
            ),
            "feedback_events (event_key, sns_message_id, event_type, format, ses_message_id, email, feedback_id, bounce_type, bounce_subtype, complaint_feedback_type, status, diagnostic_code, action, occurred_at, received_at)",
        ),
        rows(
            n,
            &format!("{key}, {email}, t"),
            "rate_volume (mail_id, recipient, seen_at)",
        ),
    ];
    // The guard's hourly counts of the same sends: one bucket for each
    // hour of the 180 days, so that the guard's check reads a window full
    // of history, not one the benchmark's own batches fill.
    let hours = 180 * 24;
    let per_hour = (n / hours).max(1);
    let bounces = per_hour / 100;
    statements.push(if sqlite {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {hours}) \
             INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT strftime('%Y-%m-%dT%H:00:00.000Z', 'now', '-' || i || ' hours'), {per_hour}, {bounces}, 0, {per_hour} FROM n"
        )
    } else {
        format!(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT date_trunc('hour', now()) - i * interval '1 hour', {per_hour}, {bounces}, 0, {per_hour} \
             FROM generate_series(1, {hours}) AS i"
        )
    });
    if !sqlite {
        statements.push("ANALYZE".to_owned());
    }
    // The same loop for either connection type.
    macro_rules! run_on {
        ($connection:ty) => {{
            let mut conn = <$connection>::connect(database_url)
                .await
                .expect("connect for the fill");
            for sql in &statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
            let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM feedback_events")
                .fetch_one(&mut conn)
                .await
                .expect("count the history");
            assert!(events >= 2 * n as i64, "the fill wrote {events} events");
        }};
    }
    if sqlite {
        run_on!(sqlx::SqliteConnection);
    } else {
        run_on!(sqlx::PgConnection);
    }
}

/// A count given in the environment, or `default`.
fn count_setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    bouncer::outbound::install_default_provider();
    let batches = count_setting("BENCH_BATCHES", 100);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    if backends.contains("sqlite") {
        let dir = std::env::temp_dir().join(format!("bouncer-bench-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        run(
            "sqlite",
            &format!("sqlite:{}", dir.join("apply.db").display()),
            batches,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    if backends.contains("postgres")
        && let Some(pg) = ScratchPostgres::create("apply")
    {
        run("postgres", &pg.url, batches);
    }
}
