//! End to end: the release `bouncer serve` binary in its own process, fed
//! signed SES Delivery notifications over HTTP by a load generator in this
//! process (both on this machine's two cores). Every message is verified
//! (SignatureVersion 2, cached certificate) and durably stored before its
//! 2xx. Reports, for SQLite and PostgreSQL:
//!
//! - throughput with 128 concurrent requests (closed loop);
//! - latency percentiles at a fixed 1,000 messages per second (open loop);
//! - the server's peak resident memory (VmHWM).
//!
//! cargo bench --bench throughput            (BENCH_MESSAGES to change the count)

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;

#[path = "common/mod.rs"]
mod common;
use common::ScratchPostgres;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-feedback";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bouncer-TEST-ONLY.pem";

fn sign_all(n: usize, tag: &str) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let der = PrivatePkcs8KeyDer::from_pem_file(format!(
        "{root}/fixtures/test-only/TEST-ONLY-sns-signing-key.pem"
    ))
    .expect("key");
    let key = Arc::new(ring::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("pkcs8"));
    let threads = 2;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let key = key.clone();
                scope.spawn(move || {
                    let rng = ring::rand::SystemRandom::new();
                    (0..n)
                        .filter(|i| i % threads == t)
                        .map(|i| one(&key, &rng, tag, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer"))
            .collect()
    })
}

fn one(key: &ring::rsa::KeyPair, rng: &ring::rand::SystemRandom, tag: &str, i: usize) -> String {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now");
    let id = format!("bench-{tag}-{i}");
    let rcpt = format!("user{i}@example.com");
    let message = serde_json::json!({
        "notificationType": "Delivery",
        "mail": {"timestamp": now, "messageId": format!("ses-{tag}-{i}"), "source": "a@signals.example",
                 "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/signals.example",
                 "sendingAccountId": "123456789012", "destination": [rcpt],
                 "headersTruncated": false, "commonHeaders": {"from": ["a@signals.example"], "to": [rcpt], "subject": "Your weekly signals"}},
        "delivery": {"timestamp": now, "processingTimeMillis": 420, "recipients": [rcpt],
                     "smtpResponse": "250 2.0.0 OK", "remoteMtaIp": "198.51.100.30", "reportingMTA": "a8-70.smtp-out.amazonses.com"}
    })
    .to_string();
    let signed = format!(
        "Message\n{message}\nMessageId\n{id}\nTimestamp\n{now}\nTopicArn\n{TOPIC}\nType\nNotification\n"
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        rng,
        signed.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    serde_json::json!({
        "Type": "Notification", "MessageId": id, "TopicArn": TOPIC, "Message": message, "Timestamp": now,
        "SignatureVersion": "2", "Signature": base64::engine::general_purpose::STANDARD.encode(sig),
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    })
    .to_string()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database_url: &str, dir: &std::path::Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let root = env!("CARGO_MANIFEST_DIR");
        let child = Command::new(env!("CARGO_BIN_EXE_bouncer"))
            .env_clear()
            .current_dir(dir)
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
            .env("SPOOL_PATH", dir.join("bench.spool"))
            .env("SNS_TOPIC_ARNS", TOPIC)
            .env(
                "SNS_CERT_PINS",
                format!("{CERT_URL}={root}/fixtures/test-only/TEST-ONLY-sns-signing-cert.pem"),
            )
            .env("SNS_CONFIRM_MODE", "off")
            .env("LOG_LEVEL", "warn")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("x-amz-sns-message-type", "Notification")
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_success(), "{}", response.status());
    let _ = response.bytes().await;
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn run(label: &str, database_url: &str, messages: usize) {
    let dir =
        std::env::temp_dir().join(format!("bouncer-bench-e2e-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server = Server::start(database_url, &dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let url = format!("{}/sns", server.base);
    runtime.block_on(async {
        for _ in 0..100 {
            if client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not start");
    });
    eprintln!("{label}: signing {messages} messages...");
    let bodies = sign_all(messages, &format!("{label}-{}", std::process::id()));

    // Closed loop: 128 requests in flight.
    let (server_cpu, own_cpu) = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let queue = Arc::new(tokio::sync::Mutex::new(bodies.into_iter()));
        let tasks: Vec<_> = (0..128)
            .map(|_| {
                let (queue, client, url) = (queue.clone(), client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let next = queue.lock().await.next();
                        let Some(body) = next else { break };
                        mine.push(post(&client, &url, body).await);
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let elapsed = started.elapsed();
    let server_cpu = server.cpu_seconds() - server_cpu;
    let own_cpu = cpu_seconds("/proc/self/stat") - own_cpu;
    latencies.sort();
    println!(
        "{label}: closed loop, 128 in flight: {messages} messages in {:.2} s = {:.0} msg/s; latency p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "{label}: CPU during that run: server {:.2} s ({:.0} µs per message), load generator {:.2} s, of {:.2} s x 2 cores",
        server_cpu,
        server_cpu * 1e6 / messages as f64,
        own_cpu,
        elapsed.as_secs_f64()
    );

    // Open loop: 1,000 messages per second for 10 seconds.
    let rate_bodies = sign_all(10_000, &format!("{label}-rate-{}", std::process::id()));
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = rate_bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(i as u64)).await;
                    post(&client, &url, body).await
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("task"));
        }
        all
    });
    latencies.sort();
    println!(
        "{label}: open loop, 1,000 msg/s for 10 s: latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0),
    );
    println!(
        "{label}: server peak resident memory {:.1} MiB",
        server.peak_rss_kib() as f64 / 1024.0
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    bouncer::outbound::install_default_provider();
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let dir = std::env::temp_dir().join(format!("bouncer-bench-e2e-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    run(
        "sqlite",
        &format!("sqlite:{}", dir.join("e2e.db").display()),
        messages,
    );
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(pg) = ScratchPostgres::create("e2e") {
        run("postgres", &pg.url, messages);
    }
}
