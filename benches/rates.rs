//! Reading the current rates (`Store::current_rates`, what every guard
//! check, `bouncer status`, `/v1/sending` and `/metrics` do) against
//! histories of very different sizes, on SQLite and PostgreSQL:
//!
//! - `10k_events`: 10,000 events in the current hour;
//! - `10m_events_one_year`: 10,000,000 events spread over a year of hourly
//!   buckets (8,760 rows; the window fills within the newest few);
//! - `window_over_three_weeks`: 14,400 sends over 720 hours: the window
//!   fills after 500 of them, so it is read by days after its newest
//!   hours;
//! - `quiet_sender_30_days`: 7,200 sends over 720 hours, never filling the
//!   window: every bucket of the maximum age is summed.
//!
//! cargo bench --bench rates

use std::time::Duration;

use bouncer::app::{Hooks, Pipeline};
use bouncer::config::Settings;
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::Connection;

#[path = "common/mod.rs"]
mod common;
use common::ScratchPostgres;

struct History {
    name: &'static str,
    /// Number of hourly buckets ending with the current hour.
    hours: i64,
    sends: i64,
    hard_bounces: i64,
    complaints: i64,
}

const HISTORIES: [History; 4] = [
    History {
        name: "10k_events",
        hours: 1,
        sends: 9_700,
        hard_bounces: 250,
        complaints: 50,
    },
    History {
        name: "10m_events_one_year",
        hours: 8_760,
        sends: 1_100,
        hard_bounces: 40,
        complaints: 2,
    },
    History {
        name: "window_over_three_weeks",
        hours: 720,
        sends: 20,
        hard_bounces: 0,
        complaints: 0,
    },
    History {
        name: "quiet_sender_30_days",
        hours: 720,
        sends: 10,
        hard_bounces: 0,
        complaints: 0,
    },
];

fn fill_sql(sqlite: bool, h: &History) -> String {
    if sqlite {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT strftime('%Y-%m-%dT%H:00:00.000Z', 'now', '-' || i || ' hours'), {s}, {b}, {c}, {s} FROM n",
            last = h.hours - 1,
            s = h.sends,
            b = h.hard_bounces,
            c = h.complaints
        )
    } else {
        format!(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT date_trunc('hour', now()) - i * interval '1 hour', {s}, {b}, {c}, {s} \
             FROM generate_series(0, {last}) AS i",
            last = h.hours - 1,
            s = h.sends,
            b = h.hard_bounces,
            c = h.complaints
        )
    }
}

fn bench_one(c: &mut Criterion, backend: &str, url: &str, h: &History) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join(format!(
        "bouncer-bench-rates-{}-{backend}-{}",
        std::process::id(),
        h.name
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut settings = Settings::defaults();
    settings.database_url = url.to_owned();
    settings.spool_path = dir.join("s.spool");
    let pipeline = runtime
        .block_on(Pipeline::build(&settings, &Hooks::default()))
        .expect("pipeline");
    let sqlite = url.starts_with("sqlite:");
    runtime.block_on(async {
        let sql = fill_sql(sqlite, h);
        if sqlite {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("fill");
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("fill");
            sqlx::query("ANALYZE rate_buckets")
                .execute(&mut conn)
                .await
                .expect("analyze");
        }
    });
    let store = pipeline.state.store.clone();
    let policy = pipeline.state.guard.clone();
    let (_, rates) = runtime
        .block_on(bouncer::guard::current_rates(&store, &policy))
        .expect("rates");
    eprintln!(
        "{backend}/{}: {} events in history, window holds {} sends",
        h.name,
        h.hours * (h.sends + h.hard_bounces + h.complaints),
        rates.sends
    );
    let mut group = c.benchmark_group(format!("current_rates_{backend}"));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(h.name, |b| {
        b.iter(|| {
            runtime
                .block_on(bouncer::guard::current_rates(&store, &policy))
                .expect("rates")
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_rates(c: &mut Criterion) {
    for h in &HISTORIES {
        let dir = std::env::temp_dir().join(format!(
            "bouncer-bench-rates-db-{}-{}",
            std::process::id(),
            h.name
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        bench_one(
            c,
            "sqlite",
            &format!("sqlite:{}", dir.join("r.db").display()),
            h,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    for h in &HISTORIES {
        let Some(pg) = ScratchPostgres::create(&format!("rates_{}", h.name)) else {
            return;
        };
        bench_one(c, "postgres", &pg.url, h);
    }
}

criterion_group!(benches, bench_rates);
criterion_main!(benches);
