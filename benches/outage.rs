//! The ingest path under faults (SPEC §9, issue 8), end to end against the
//! release binary:
//!
//! - intake into the spool while the database is down (SQLite locked by
//!   another process, PostgreSQL refusing connections): one connection per
//!   message, 64 in flight;
//! - resident memory while the server recovers a spool of `BENCH_SPOOL_MB`
//!   (default 1024) and how long it takes;
//! - resident memory after 40,000 malformed requests.
//!
//! cargo bench --bench outage
//!   BENCH_MESSAGES=20000  BENCH_SPOOL_MB=1024  BENCH_BACKENDS=sqlite,postgres
//!   BENCH_BIN=/tmp/bouncer-a  run this copy of a `bouncer` build instead of
//!                         the one just built (side by side)

#[path = "common/mod.rs"]
mod common;
mod load;

use std::time::{Duration, Instant};

use bouncer::ingest::spool::{Spool, SpoolRecord};
use bouncer::time::Timestamp;
use common::ScratchPostgres;
use load::http::{Connections, Transport, closed_loop, sns_request};
use load::server::{Server, cpu_seconds};
use load::ses::{Workload, envelopes};
use sqlx::{Connection, Executor};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bouncer-bench-outage-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn intake_while_down(label: &str, messages: usize, runtime: &tokio::runtime::Runtime) {
    let dir = scratch(&format!("intake-{label}"));
    let sqlite_url = format!("sqlite:{}", dir.join("down.db").display());
    // PostgreSQL "stopped": nothing listens on the port.
    let pg_down = "postgres://postgres@127.0.0.1:1/bouncer";
    let url = if label == "sqlite" {
        sqlite_url.as_str()
    } else {
        pg_down
    };
    let server = Server::start(url, &dir, &[("SQLITE_BUSY_TIMEOUT_MS", "1000")]);
    // SQLite: another process holds the write lock for the whole run.
    let _lock = (label == "sqlite").then(|| {
        runtime.block_on(async {
            let mut conn = sqlx::SqliteConnection::connect(&sqlite_url)
                .await
                .expect("connect");
            conn.execute("BEGIN EXCLUSIVE").await.expect("lock");
            conn
        })
    });
    let tag = format!("down-{label}-{}", std::process::id());
    let mut bodies = envelopes(Workload::FeedMix, messages + 1, &tag);
    // One message finds the outage (on SQLite after the busy time-out).
    let first = sns_request(server.addr, &bodies.remove(0), Connections::PerMessage);
    let found = runtime.block_on(closed_loop(
        server.addr,
        &Transport::Plain,
        vec![first],
        1,
        Connections::PerMessage,
    ));
    assert!(found.all_status(&[202]), "{:?}", found.statuses);
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| sns_request(server.addr, b, Connections::PerMessage))
        .collect();
    let cpu = server.cpu_seconds();
    let outcome = runtime.block_on(closed_loop(
        server.addr,
        &Transport::Plain,
        requests,
        64,
        Connections::PerMessage,
    ));
    let cpu = server.cpu_seconds() - cpu;
    assert!(outcome.all_status(&[202]), "{:?}", outcome.statuses);
    println!(
        "{label} | intake into the spool, database down, feed mix, one connection per message, 64 in flight | {:.0} msg/s | p50 {:.1} ms | p99 {:.1} ms | server CPU {:.0} µs/msg | peak RSS {:.1} MiB",
        outcome.per_second(),
        outcome.percentile_ms(0.50),
        outcome.percentile_ms(0.99),
        cpu * 1e6 / messages as f64,
        server.memory_mib("VmHWM:"),
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn segments(spool: &std::path::Path) -> usize {
    std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .unwrap_or(0)
}

/// An envelope of real size: the drain trusts the spool (it holds only
/// verified messages), so these need no signature.
fn spooled_envelope(i: usize, template: &serde_json::Value) -> String {
    let mut envelope = template.clone();
    envelope["MessageId"] = serde_json::json!(format!("spooled-{i}"));
    envelope["Message"] = serde_json::json!(
        envelope["Message"]
            .as_str()
            .unwrap_or_default()
            .replace("TEMPLATE", &format!("{i:09}"))
    );
    envelope.to_string()
}

fn recovery(label: &str, url: &str, megabytes: usize) {
    let dir = scratch(&format!("recovery-{label}"));
    let spool_path = dir.join("bench.spool");
    let template: serde_json::Value =
        serde_json::from_str(&envelopes(Workload::FeedMix, 1, "TEMPLATE")[0]).expect("an envelope");
    let received_at = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let mut spool = Spool::open(&spool_path).expect("spool");
    let mut written = 0usize;
    let mut count = 0usize;
    while written < megabytes << 20 {
        let records: Vec<SpoolRecord> = (count..count + 1000)
            .map(|i| SpoolRecord {
                received_at,
                body: spooled_envelope(i, &template),
                confirmed_mode: None,
                subscription_arn: None,
            })
            .collect();
        written += records.iter().map(|r| r.body.len() + 60).sum::<usize>();
        count += records.len();
        spool.append(&records).expect("append");
    }
    drop(spool);
    eprintln!("{label}: spooled {count} messages, about {megabytes} MiB; recovering...");
    let started = Instant::now();
    let server = Server::start(url, &dir, &[]);
    let mut peak_rss = 0.0f64;
    while segments(&spool_path) > 0 {
        peak_rss = peak_rss.max(server.memory_mib("VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "recovery took over an hour"
        );
    }
    let took = started.elapsed();
    println!(
        "{label} | recovering a spool of {megabytes} MiB ({count} messages) | {:.0} s, {:.0} msg/s | peak RSS {:.1} MiB (VmHWM {:.1} MiB)",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
        peak_rss,
        server.memory_mib("VmHWM:"),
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests that fail every which way: not JSON, wrong shape, a foreign
/// topic, a bad signature (verified, then refused), too large.
fn malformed(addr: std::net::SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let valid = envelopes(Workload::FeedMix, 1, "malformed")[0].clone();
    let forged = valid.replacen("\"Signature\": \"", "\"Signature\": \"AAAA", 1);
    let foreign = valid.replace(
        "arn:aws:sns:us-east-1:123456789012:ses-feedback",
        "arn:aws:sns:us-east-1:999999999999:somebody-else",
    );
    (0..n)
        .map(|i| match i % 20 {
            0 => sns_request(addr, &format!("{{not json {i}"), Connections::PerMessage),
            1 => sns_request(addr, &format!("{{\"Type\":\"Notification\",\"n\":{i}}}"), Connections::PerMessage),
            2..=9 => sns_request(addr, &foreign, Connections::PerMessage),
            10..=18 => sns_request(addr, &forged, Connections::PerMessage),
            _ => format!(
                "POST /sns HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nx-amz-sns-message-type: Notification\r\nContent-Length: 99999999\r\n\r\n"
            )
            .into_bytes(),
        })
        .collect()
}

fn malformed_requests(label: &str, url: &str, runtime: &tokio::runtime::Runtime) {
    let dir = scratch(&format!("malformed-{label}"));
    let server = Server::start(url, &dir, &[]);
    let before = server.memory_mib("VmRSS:");
    let cpu = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let outcome = runtime.block_on(closed_loop(
        server.addr,
        &Transport::Plain,
        malformed(server.addr, 40_000),
        64,
        Connections::PerMessage,
    ));
    assert!(
        outcome.all_status(&[400, 403, 413]),
        "{:?}",
        outcome.statuses
    );
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{label} | 40,000 malformed requests, one connection each, 64 in flight | {:.0} req/s | RSS before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB | server CPU {:.0} µs/req | answers {:?}",
        outcome.per_second(),
        before,
        server.memory_mib("VmRSS:"),
        server.memory_mib("VmHWM:"),
        (server.cpu_seconds() - cpu.0) * 1e6 / 40_000.0,
        outcome.statuses,
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    bouncer::outbound::install_default_provider();
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let megabytes: usize = std::env::var("BENCH_SPOOL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if backends.contains("sqlite") {
        intake_while_down("sqlite", messages, &runtime);
        let dir = scratch("sqlite-db");
        let url = format!("sqlite:{}", dir.join("bench.db").display());
        malformed_requests("sqlite", &url, &runtime);
        recovery(
            "sqlite",
            &format!("sqlite:{}", dir.join("recovery.db").display()),
            megabytes,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    if backends.contains("postgres") {
        intake_while_down("postgres", messages, &runtime);
        if let Some(pg) = ScratchPostgres::create("malformed") {
            malformed_requests("postgres", &pg.url, &runtime);
        }
        if let Some(pg) = ScratchPostgres::create("recovery") {
            recovery("postgres", &pg.url, megabytes);
        }
    }
}
