//! The batch check: 10,000 addresses (1,000 of them suppressed) against a
//! list of 1,000,000 suppressions, as the store query and as the whole
//! `POST /v1/suppressions/check` call, on SQLite and (when it answers at
//! TEST_POSTGRES_URL) PostgreSQL.
//!
//! The list is written in an order unrelated to the key, as a real one
//! grows (addresses suppressed as they bounce): on PostgreSQL the table's
//! statistics then show no correlation between the key and the heap, which
//! is what made the planner scan the whole table for `email = ANY($1)`
//! (written in key order, the benchmark hid that). PostgreSQL plans a
//! prepared statement with its values for its first five runs on a
//! connection and may then keep a generic plan, so a benchmark that repeats
//! one statement sees only the generic plan; `any_array` times the former
//! statement planned with its values each time (an unnamed statement), as
//! every new pool connection ran it, and the store's statement planned the
//! same way, beside the store's as it runs.
//!
//! cargo bench --bench check

use std::time::Duration;

use actix_web::{App, test, web};
use bouncer::address::EmailAddress;
use bouncer::app::{Hooks, Pipeline, configure_admin};
use bouncer::config::Settings;
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::Connection;

#[path = "common/mod.rs"]
mod common;
use common::ScratchPostgres;

const ROWS: i64 = 1_000_000;

fn addresses() -> Vec<String> {
    // Every tenth address is on the list (rows are user0..user999999).
    (0..10_000)
        .map(|i| {
            if i % 10 == 0 {
                format!("user{}@example.com", i * 97)
            } else {
                format!("nobody{i}@example.net")
            }
        })
        .collect()
}

const FILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) \
    INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, first_seen_at, last_seen_at, event_count, source) \
    SELECT 'user' || i || '@example.com', 'bounce', 'Permanent', 'General', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1, 'bench' FROM n \
    ORDER BY (i * 7919) % 1000003";
const FILL_POSTGRES: &str = "INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, first_seen_at, last_seen_at, event_count, source) \
    SELECT 'user' || i || '@example.com', 'bounce', 'Permanent', 'General', now(), now(), 1, 'bench' FROM generate_series(0, 999999) AS i \
    ORDER BY md5(i::text)";

fn bench_backend(c: &mut Criterion, label: &str, database_url: &str, fill: &'static str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join(format!(
        "bouncer-bench-check-{}-{label}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut settings = Settings::defaults();
    settings.database_url = database_url.to_owned();
    settings.spool_path = dir.join("bench.spool");
    let pipeline = runtime
        .block_on(Pipeline::build(&settings, &Hooks::default()))
        .expect("pipeline");
    runtime.block_on(async {
        let started = std::time::Instant::now();
        if database_url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(database_url)
                .await
                .expect("connect");
            sqlx::query(fill).execute(&mut conn).await.expect("fill");
        } else {
            let mut conn = sqlx::PgConnection::connect(database_url)
                .await
                .expect("connect");
            sqlx::query(fill).execute(&mut conn).await.expect("fill");
            // As autovacuum would leave a table that has lived a while,
            // and so that autovacuum does not do it during the runs.
            sqlx::query("VACUUM (ANALYZE) suppressions")
                .execute(&mut conn)
                .await
                .expect("vacuum");
        }
        eprintln!(
            "{label}: {ROWS} suppressions written in {:?}",
            started.elapsed()
        );
    });
    let inputs = addresses();
    let emails: Vec<EmailAddress> = inputs
        .iter()
        .map(|a| EmailAddress::parse(a).expect("address"))
        .collect();
    let store = pipeline.state.store.clone();
    let found = runtime.block_on(store.check(&emails)).expect("check");
    assert_eq!(found.len(), 1_000);
    let data = web::Data::from(pipeline.state.clone());
    let service = runtime.block_on(test::init_service(
        App::new().configure(|cfg| configure_admin(cfg, data.clone())),
    ));
    let body = serde_json::json!({ "addresses": inputs }).to_string();
    let mut group = c.benchmark_group(format!("check_10k_of_1m_{label}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("store_query", |b| {
        b.iter(|| runtime.block_on(store.check(&emails)).expect("check"))
    });
    if !database_url.starts_with("sqlite:") {
        let pool = runtime
            .block_on(sqlx::PgPool::connect(database_url))
            .expect("pool");
        let list: Vec<&str> = emails.iter().map(EmailAddress::as_str).collect();
        let statements = [
            (
                "any_array",
                "SELECT * FROM suppressions WHERE email = ANY($1)",
            ),
            // The store's statement, in its shape (its text is private to
            // the store).
            (
                "lateral_planned_each_time",
                "SELECT s.* FROM unnest($1::text[]) AS wanted (address) CROSS JOIN LATERAL \
                 (SELECT * FROM suppressions WHERE email = wanted.address OFFSET 0) AS s",
            ),
        ];
        for (name, sql) in statements {
            group.bench_function(name, |b| {
                b.iter(|| {
                    runtime
                        .block_on(
                            sqlx::query(sql)
                                .bind(&list)
                                .persistent(false)
                                .fetch_all(&pool),
                        )
                        .expect(name)
                })
            });
        }
        runtime.block_on(pool.close());
    }
    group.bench_function("http_call", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let req = test::TestRequest::post()
                    .uri("/v1/suppressions/check")
                    .insert_header(("content-type", "application/json"))
                    // Without API_TOKENS the admin listener answers only
                    // requests addressed to a loopback name.
                    .insert_header(("host", "localhost:8081"))
                    .set_payload(body.clone())
                    .to_request();
                let resp = test::call_service(&service, req).await;
                let status = resp.status();
                let answer = test::read_body(resp).await;
                assert!(
                    status.is_success(),
                    "the check answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                answer
            })
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_check(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("bouncer-bench-check-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    bench_backend(
        c,
        "sqlite",
        &format!("sqlite:{}", dir.join("check.db").display()),
        FILL_SQLITE,
    );
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(pg) = ScratchPostgres::create("check") {
        bench_backend(c, "postgres", &pg.url, FILL_POSTGRES);
    }
}

criterion_group!(benches, bench_check);
criterion_main!(benches);
