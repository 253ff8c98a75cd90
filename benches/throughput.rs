//! End to end, the way SNS delivers (SPEC §9): the release `bouncer serve`
//! binary in its own process, a load generator in this one, both on this
//! machine's cores. Every message is SignatureVersion 1, about 2 KB, unique,
//! verified (cached certificate) and durably stored before its 2xx.
//!
//! For SQLite and PostgreSQL, and for each workload (bounce storm, feed
//! mix): throughput with 64 in flight on one connection per message, and
//! the same with keep-alive beside it; the server's CPU per message; p99
//! at a steady 1,000 messages per second; the server's peak memory.
//!
//! cargo bench --bench throughput
//!   BENCH_MESSAGES=20000   messages per run
//!   BENCH_BACKENDS=sqlite,postgres
//!   BENCH_QUICK=1          only one connection per message (no keep-alive,
//!                          no steady rate): for side-by-side comparisons
//!   BENCH_STEADY=1         only the steady 1,000 msg/s (p50, p99): for
//!                          side-by-side comparisons of the tail
//!   BENCH_DUMP=path        writes the steady rate's latencies to `path`,
//!                          one line per message in send order:
//!                          `index ms sent_at`, `sent_at` the scheduled send
//!                          in ms of CLOCK_MONOTONIC (as `perf trace -T`)
//!   BENCH_FLOOR=health     the same connections to `/healthz` (HTTP alone)
//!   BENCH_FLOOR=badsig     the same messages with a broken signature
//!                          (HTTP, parsing and verification; nothing stored)
//!   BENCH_GENERATOR_THREADS=2  the generator's runtime threads (1: tokio's
//!                          current-thread runtime, as `wrk -t1`)
//!   BENCH_TLS=ecdsa|rsa    bouncer serves HTTPS itself (TLS_CERT_FILE) with
//!                          the TEST-ONLY ECDSA P-256 or RSA-2048 server
//!                          certificate; the cases are then one connection
//!                          per message with a full handshake each, the
//!                          same resuming the client's sessions, and
//!                          keep-alive; the steady rate does full handshakes
//!   BENCH_PEER=django-ses  the same messages, connections and steady rate
//!                          sent to django-ses's SNS webhook behind gunicorn
//!                          instead (`benches/peer/`; its virtualenv first:
//!                          python3 -m venv target/peer-venv &&
//!                          target/peer-venv/bin/pip install -r
//!                          benches/peer/requirements.txt); one connection
//!                          per message only (gunicorn's sync workers
//!                          close every connection), then the steady rate
//!   BENCH_PEER_WORKERS=5   the peer's gunicorn sync workers (default
//!                          2 × cores + 1, gunicorn's starting point)
//!   BENCH_PEER_VENV=target/peer-venv  the peer's virtualenv
//!   BENCH_BIN=/tmp/bouncer-a  run this copy of a `bouncer` build instead
//!                          of the one just built (rounds of two builds
//!                          alternated, side by side)
//! The steady rate always sends 10,000 messages (10 s at 1,000 a second),
//! whatever BENCH_MESSAGES says.

#[path = "common/mod.rs"]
mod common;
mod load;

use std::time::Duration;

use common::ScratchPostgres;
use load::http::{Connections, Outcome, Transport, closed_loop, open_loop, sns_request};
use load::server::{Server, cpu_seconds};
use load::ses::{Workload, envelopes};

/// What the server's own metrics say of the commits since `before`.
struct Commits {
    sizes: (f64, f64),
    seconds: (f64, f64),
}

impl Commits {
    fn read(server: &Server) -> Commits {
        Commits {
            sizes: server.histogram("bouncer_write_batch_size"),
            seconds: server.histogram("bouncer_write_batch_seconds"),
        }
    }

    fn since(&self, before: &Commits) -> String {
        let n = self.seconds.1 - before.seconds.1;
        if n == 0.0 {
            return "commits not reported (the peer has no metrics)".into();
        }
        format!(
            "{:.0} commits, {:.1} msg each, {:.2} ms each",
            n,
            (self.sizes.0 - before.sizes.0) / (self.sizes.1 - before.sizes.1).max(1.0),
            (self.seconds.0 - before.seconds.0) * 1e3 / n.max(1.0)
        )
    }
}

fn report(
    label: &str,
    what: &str,
    outcome: &Outcome,
    server_cpu: f64,
    own_cpu: f64,
    commits: &str,
) {
    let n = outcome.latencies.len() as f64;
    println!(
        "{label} | {what} | {:.0} msg/s | p50 {:.1} ms | p99 {:.1} ms | p99.9 {:.1} ms | max {:.1} ms | server CPU {:.0} µs/msg ({:.2} cores) | generator {:.0} µs/msg ({:.2} cores) | {commits} | answers {:?}",
        outcome.per_second(),
        outcome.percentile_ms(0.50),
        outcome.percentile_ms(0.99),
        outcome.percentile_ms(0.999),
        outcome.percentile_ms(1.0),
        server_cpu * 1e6 / n,
        server_cpu / outcome.elapsed.as_secs_f64(),
        own_cpu * 1e6 / n,
        own_cpu / outcome.elapsed.as_secs_f64(),
        outcome.statuses,
    );
}

/// What the closed-loop cases send (`BENCH_FLOOR`): the messages, or what
/// bounds their throughput from below on the same connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Messages,
    /// `GET /healthz`: accepting, reading and answering a connection.
    Health,
    /// The messages with their signature broken: everything before the
    /// writer (parsing, verification), answered 403.
    BadSignature,
}

impl Sent {
    fn from_env() -> Sent {
        match std::env::var("BENCH_FLOOR").as_deref() {
            Ok("health") => Sent::Health,
            Ok("badsig") => Sent::BadSignature,
            Ok(other) if !other.is_empty() => {
                panic!("BENCH_FLOOR is health or badsig, not {other}")
            }
            _ => Sent::Messages,
        }
    }

    fn request(self, addr: std::net::SocketAddr, body: &str, connections: Connections) -> Vec<u8> {
        match self {
            Sent::Messages => sns_request(addr, body, connections),
            Sent::Health => format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: {}\r\n\r\n",
                connections.header()
            )
            .into_bytes(),
            Sent::BadSignature => {
                let mut envelope: serde_json::Value =
                    serde_json::from_str(body).expect("a signed envelope");
                let signature = envelope["Signature"].as_str().expect("a signature");
                envelope["Signature"] = format!("AAAA{}", &signature[4..]).into();
                sns_request(addr, &envelope.to_string(), connections)
            }
        }
    }

    fn status(self) -> u16 {
        match self {
            Sent::Messages | Sent::Health => 200,
            Sent::BadSignature => 403,
        }
    }
}

/// How the generator's connections reach the server (`BENCH_TLS`), as
/// (connections, transport, what the report calls them), the first being
/// the one of quick runs and the steady rate; and the server's settings for
/// it.
type Case = (Connections, Transport, &'static str);

fn cases_from_env() -> (Vec<Case>, Vec<(&'static str, String)>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let files = match std::env::var("BENCH_TLS").as_deref() {
        Ok("ecdsa") => Some((
            "tls-ecdsa-cert",
            "tls-ecdsa-key",
            "HTTPS, ECDSA P-256 certificate",
        )),
        Ok("rsa") => Some(("tls-cert", "tls-key", "HTTPS, RSA-2048 certificate")),
        Ok(other) if !other.is_empty() => panic!("BENCH_TLS is ecdsa or rsa, not {other}"),
        _ => None,
    };
    let Some((cert, key, _)) = files else {
        return (
            vec![
                (
                    Connections::PerMessage,
                    Transport::Plain,
                    "one connection per message",
                ),
                (Connections::KeepAlive, Transport::Plain, "keep-alive"),
            ],
            Vec::new(),
        );
    };
    let ca = format!("{root}/fixtures/test-only/TEST-ONLY-ca-cert.pem");
    let resumed = Transport::tls(&ca, true);
    (
        vec![
            (
                Connections::PerMessage,
                Transport::tls(&ca, false),
                "one HTTPS connection per message, full handshake each",
            ),
            (
                Connections::PerMessage,
                resumed.clone(),
                "one HTTPS connection per message, sessions resumed",
            ),
            (Connections::KeepAlive, resumed, "HTTPS keep-alive"),
        ],
        vec![
            (
                "TLS_CERT_FILE",
                format!("{root}/fixtures/test-only/TEST-ONLY-{cert}.pem"),
            ),
            (
                "TLS_KEY_FILE",
                format!("{root}/fixtures/test-only/TEST-ONLY-{key}.pem"),
            ),
        ],
    )
}

/// Whether the peer (`BENCH_PEER=django-ses`) is measured instead of
/// bouncer.
fn peer_from_env() -> bool {
    match std::env::var("BENCH_PEER").as_deref() {
        Ok("django-ses") => true,
        Ok(other) if !other.is_empty() => panic!("BENCH_PEER is django-ses, not {other}"),
        _ => false,
    }
}

/// The rows of the peer's blacklist: what it keeps of the messages, read
/// after each workload so that its 200s are seen to have stored something.
fn peer_blacklist_rows(runtime: &tokio::runtime::Runtime, database_url: &str) -> i64 {
    use sqlx::Connection;
    let count = "SELECT COUNT(*) FROM django_ses_blacklistedemail";
    runtime
        .block_on(async {
            if database_url.starts_with("sqlite:") {
                let mut db = sqlx::SqliteConnection::connect(database_url).await?;
                sqlx::query_scalar(count).fetch_one(&mut db).await
            } else {
                let mut db = sqlx::PgConnection::connect(database_url).await?;
                sqlx::query_scalar(count).fetch_one(&mut db).await
            }
        })
        .expect("the peer's blacklist can be read")
}

fn run(label: &str, database_url: &str, messages: usize) {
    let sent = Sent::from_env();
    let peer = peer_from_env();
    assert!(
        !(peer && sent != Sent::Messages),
        "BENCH_FLOOR measures bouncer's own floors, not the peer's"
    );
    let (cases, tls_settings) = cases_from_env();
    assert!(
        !peer || tls_settings.is_empty(),
        "BENCH_TLS measures bouncer's own HTTPS, not the peer's"
    );
    let quick = peer || std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let steady_only = std::env::var("BENCH_STEADY").is_ok_and(|v| v == "1");
    let dir =
        std::env::temp_dir().join(format!("bouncer-bench-e2e-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (server, label) = if peer {
        (
            Server::start_peer(database_url),
            format!("django-ses {label}"),
        )
    } else {
        let extra: Vec<(&str, &str)> = tls_settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        (Server::start(database_url, &dir, &extra), label.to_owned())
    };
    let label = label.as_str();
    let threads: usize = std::env::var("BENCH_GENERATOR_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let tag = format!("{label}{}", std::process::id());
    let workloads = if steady_only {
        &[][..]
    } else {
        &[Workload::BounceStorm, Workload::FeedMix][..]
    };
    for &workload in workloads {
        for (case, (connections, transport, how)) in cases.iter().enumerate() {
            if quick && case > 0 {
                continue;
            }
            let connections = *connections;
            let tag = format!("{tag}-{workload:?}-{case}");
            eprintln!(
                "{label}: signing {messages} messages ({})...",
                workload.name()
            );
            let requests: Vec<Vec<u8>> = envelopes(workload, messages, &tag)
                .iter()
                .map(|body| sent.request(server.addr, body, connections))
                .collect();
            let (server_cpu, own_cpu) = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
            let commits = Commits::read(&server);
            let outcome = runtime.block_on(closed_loop(
                server.addr,
                transport,
                requests,
                64,
                connections,
            ));
            let commits = Commits::read(&server).since(&commits);
            let server_cpu = server.cpu_seconds() - server_cpu;
            let own_cpu = cpu_seconds("/proc/self/stat") - own_cpu;
            assert!(
                outcome.all_status(&[sent.status()]),
                "{:?}",
                outcome.statuses
            );
            let commits = if peer {
                format!(
                    "blacklist rows in all {}",
                    peer_blacklist_rows(&runtime, database_url)
                )
            } else {
                commits
            };
            report(
                label,
                &format!("{}, {how}, 64 in flight", workload.name()),
                &outcome,
                server_cpu,
                own_cpu,
                &commits,
            );
        }
    }

    if (steady_only || !quick || peer) && sent == Sent::Messages {
        let (_, transport, how) = &cases[0];
        steady_rate(label, &tag, &server, &runtime, transport, how);
    }
    println!(
        "{label} | server peak resident memory | {:.1} MiB (summed over its processes; proportional set now {:.1} MiB)",
        server.memory_mib("VmHWM:"),
        server.proportional_mib()
    );
    drop(server);
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The steady rate's messages a second.
const STEADY_PER_SECOND: u64 = 1000;

/// A steady 1,000 messages per second for 10 s, one connection each.
fn steady_rate(
    label: &str,
    tag: &str,
    server: &Server,
    runtime: &tokio::runtime::Runtime,
    transport: &Transport,
    how: &str,
) {
    let requests: Vec<Vec<u8>> = envelopes(Workload::FeedMix, 10_000, &format!("{tag}-rate"))
        .iter()
        .map(|body| sns_request(server.addr, body, Connections::PerMessage))
        .collect();
    let (server_cpu, own_cpu) = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let commits = Commits::read(server);
    let started_at = monotonic_ms();
    let outcome = runtime.block_on(open_loop(
        server.addr,
        transport,
        requests,
        STEADY_PER_SECOND,
    ));
    if let Ok(path) = std::env::var("BENCH_DUMP") {
        let text: String = outcome
            .latencies
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let sent_at = started_at + i as f64 * 1e3 / STEADY_PER_SECOND as f64;
                format!("{i} {:.3} {sent_at:.3}\n", d.as_secs_f64() * 1e3)
            })
            .collect();
        std::fs::write(path, text).expect("dump");
    }
    let commits = Commits::read(server).since(&commits);
    let server_cpu = server.cpu_seconds() - server_cpu;
    let own_cpu = cpu_seconds("/proc/self/stat") - own_cpu;
    assert!(outcome.all_status(&[200]), "{:?}", outcome.statuses);
    report(
        label,
        &format!("feed mix at a steady 1,000 msg/s, {how}"),
        &outcome,
        server_cpu,
        own_cpu,
        &commits,
    );
}

/// CLOCK_MONOTONIC in ms, the clock `perf trace -T` prints, so that a dump
/// lines up with a trace of the same run (std's `Instant` hides its value).
fn monotonic_ms() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 * 1e3 + now.tv_nsec as f64 / 1e6
}

fn main() {
    bouncer::outbound::install_default_provider();
    if peer_from_env() {
        // Before anything is made that a missing peer would leave behind.
        load::server::peer_venv();
    }
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    if backends.contains("sqlite") {
        let dir = std::env::temp_dir().join(format!("bouncer-bench-e2e-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        run(
            "sqlite",
            &format!("sqlite:{}", dir.join("e2e.db").display()),
            messages,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    if backends.contains("postgres")
        && let Some(pg) = ScratchPostgres::create("e2e")
    {
        run("postgres", &pg.url, messages);
    }
}
