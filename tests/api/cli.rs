//! The `bouncer` binary itself: `--help`, `migrate`, `replay`, and `serve`
//! stopping cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Backend, TempDir, TestDb, fixture, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{TEST_CERT_FILE, TEST_CERT_URL, TOPIC};

/// The binary with an empty environment, run in `dir` (so no stray `.env`).
pub fn bouncer(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bouncer"));
    cmd.env_clear()
        .current_dir(dir)
        // Tests run in parallel: any free port, not the default 8081.
        .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// What a run of the binary showed: exit code, stdout, stderr.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to the end.
pub fn run(cmd: &mut Command) -> Ran {
    let output = cmd.output().expect("the binary runs");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// As [`run`], for a command that may not exit (a `serve` that took what
/// it should have refused): killed after `limit`, its code -1 and the
/// time-out said in its stderr, so that the test fails rather than hangs.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Ran {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = std::time::Instant::now() + limit;
    let mut timed_out = false;
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the binary's output");
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if timed_out {
        stderr.push_str(&format!("\n[still running after {limit:?}: killed]"));
    }
    Ran {
        code: if timed_out {
            -1
        } else {
            output.status.code().unwrap_or(-1)
        },
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    }
}

/// The binary in `dir` against `db_url`, with `args`.
pub fn run_with(dir: &std::path::Path, db_url: &str, args: &[&str]) -> Ran {
    run(bouncer(dir).env("DATABASE_URL", db_url).args(args))
}

/// `bouncer migrate` on `db_url`, which must succeed.
pub fn migrate(dir: &std::path::Path, db_url: &str) {
    let ran = run_with(dir, db_url, &["migrate"]);
    assert_eq!(ran.code, 0, "{ran}");
}

/// Settings for the test key and topic, as environment variables.
pub fn test_env(cmd: &mut Command, db_url: &str, dir: &std::path::Path) {
    cmd.env("DATABASE_URL", db_url)
        .env("SPOOL_PATH", dir.join("cli.spool"))
        .env("SNS_TOPIC_ARNS", TOPIC)
        .env(
            "SNS_CERT_PINS",
            format!("{TEST_CERT_URL}={}", fixture(TEST_CERT_FILE).display()),
        );
}

fn signed_fixture_paths() -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(fixture("fixtures/signed"))
        .expect("signed fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    paths
}

#[test]
fn help_lists_every_setting_with_its_variable_and_default() {
    let dir = TempDir::new();
    let output = bouncer(dir.path()).arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(fixture("README.md")).expect("README");
    for (var, default) in [
        ("DATABASE_URL", Some("sqlite:bouncer.db")),
        ("DATABASE_MAX_CONNECTIONS", Some("8")),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", Some("3000")),
        ("SQLITE_BUSY_TIMEOUT_MS", Some("5000")),
        ("DATABASE_WRITE_TIMEOUT_MS", Some("5000")),
        ("LISTEN_ADDR", Some("127.0.0.1:8080")),
        ("ADMIN_LISTEN_ADDR", Some("127.0.0.1:8081")),
        ("TLS_CERT_FILE", None),
        ("TLS_KEY_FILE", None),
        ("SNS_TOPIC_ARNS", None),
        ("SNS_REQUIRE_SIGNATURE_V2", Some("false")),
        ("SNS_MAX_BODY_BYTES", Some("524288")),
        ("SNS_MAX_AGE_SECS", Some("7200")),
        ("SNS_MAX_FUTURE_SECS", Some("300")),
        ("SNS_CERT_PINS", None),
        ("SNS_CERT_FETCH_TIMEOUT_MS", Some("3000")),
        ("SNS_CERT_MAX_BYTES", Some("16384")),
        ("SNS_CERT_CACHE_SIZE", Some("32")),
        ("SPOOL_PATH", Some("bouncer.spool")),
        ("WRITE_BATCH_MAX", Some("512")),
        ("HTTP_BODY_TIMEOUT_MS", Some("10000")),
        ("HTTP_SEND_TIMEOUT_MS", Some("10000")),
        ("HTTP_MAX_CONNECTIONS", Some("1024")),
        ("HTTP_WORKERS", Some("0")),
        ("SHUTDOWN_TIMEOUT_SECS", Some("30")),
        ("LOG_LEVEL", Some("info")),
        ("LOG_FORMAT", Some("text")),
        ("SOFT_BOUNCE_LIMIT", Some("3")),
        ("SOFT_BOUNCE_WINDOW_DAYS", Some("14")),
        ("API_TOKENS", None),
        ("SNS_CONFIRM_MODE", Some("auto")),
        ("SNS_API_ENDPOINT", None),
        ("GUARD_WINDOW_SENDS", Some("10000")),
        ("GUARD_MAX_AGE_DAYS", Some("30")),
        ("GUARD_MIN_VOLUME", Some("1000")),
        ("GUARD_BOUNCE_PAUSE_PERCENT", Some("5")),
        ("GUARD_COMPLAINT_PAUSE_PERCENT", Some("0.1")),
        ("GUARD_BOUNCE_WARN_PERCENT", Some("2.5")),
        ("GUARD_COMPLAINT_WARN_PERCENT", Some("0.05")),
        ("GUARD_WARN", Some("true")),
        ("ALERT_WEBHOOK_URL", None),
        ("ALERT_EMAILS", None),
        ("SMTP_HOST", None),
        ("SMTP_PORT", Some("587")),
        ("SMTP_USER", None),
        ("SMTP_PASSWORD", None),
        ("SMTP_FROM_EMAIL", None),
        ("SMTP_FROM_NAME", Some("bouncer")),
        ("SMTP_TLS", Some("auto")),
        ("ALERT_RETRY_MIN_MS", Some("5000")),
        ("RETENTION_DAYS", Some("180")),
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help:\n{help}"
        );
        assert!(
            readme.contains(&format!("`{var}`")),
            "{var} is not documented in the README"
        );
        if let Some(default) = default {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "default of {var}:\n{help}"
            );
        }
    }
    // And every setting `--help` shows is in the README's table.
    for var in help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next().map(str::trim))
    {
        assert!(
            readme.contains(&format!("| `{var}`")) || readme.contains(&format!(", `{var}`")),
            "{var} from --help is not in the README's settings table"
        );
    }
}

async fn migrate_creates_the_schema(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    let ran = run_with(dir.path(), &db.url, &["migrate"]);
    assert_eq!(ran.code, 0, "{ran}");
    let (count, version) = backend.migrations();
    assert!(
        ran.stdout
            .starts_with(&format!("applied {count} migrations to the ")),
        "{ran}"
    );
    assert!(
        ran.stdout
            .ends_with(&format!("; its schema is now version {version}\n")),
        "{ran}"
    );
    assert_eq!(db.total_messages().await, 0, "sns_messages exists");
}

async fn replay_applies_stored_messages_through_the_pipeline(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    let mut cmd = bouncer(dir.path());
    test_env(&mut cmd, &db.url, dir.path());
    let output = cmd
        .arg("replay")
        .arg("--ignore-age")
        .args(signed_fixture_paths())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let fixtures = signed_fixture_paths().len() as i64;
    assert_eq!(db.total_messages().await, fixtures);
    // Without --ignore-age the fixtures are too old: refused, nothing added,
    // and the exit status says so.
    let mut cmd = bouncer(dir.path());
    test_env(&mut cmd, &db.url, dir.path());
    let again = cmd
        .env("SNS_MAX_AGE_SECS", "1")
        .arg("replay")
        .args(signed_fixture_paths())
        .output()
        .expect("runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("message_too_old"));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("(--ignore-age replays old messages)"),
        "the refusal names the way to replay old messages"
    );
    assert_eq!(db.total_messages().await, fixtures);
}

async fn replay_posts_to_a_running_endpoint(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.sns_max_age_secs = 100 * 365 * 86400).await;
    let dir = TempDir::new();
    // One file in JSON-lines form, the way a dead-letter queue dump looks.
    let lines: Vec<String> = signed_fixture_paths()
        .iter()
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json");
            v.to_string()
        })
        .collect();
    let dump = dir.path().join("dlq.jsonl");
    std::fs::write(&dump, lines.join("\n")).expect("write");
    let url = format!("{}/sns", app.address);
    let ran = run(bouncer(dir.path())
        .args(["replay", "--url", &url])
        .arg(&dump));
    assert_eq!(ran.code, 0, "{ran}");
    // One line per message: where it came from, its id, the answer.
    let answers: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(answers.len(), lines.len(), "{ran}");
    for (i, (answer, line)) in answers.iter().zip(&lines).enumerate() {
        let id = serde_json::from_str::<serde_json::Value>(line).expect("json")["MessageId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let expected = format!("{}:{}\t{id}\t200 stored", dump.display(), i + 1);
        assert!(answer.starts_with(&expected), "{expected}: {ran}");
    }
    assert!(
        ran.stderr.contains(&format!(
            "replayed {n} messages: {n} stored, 0 duplicate, 0 spooled, 0 refused",
            n = lines.len()
        )),
        "{ran}"
    );
    assert_eq!(app.db.total_messages().await, lines.len() as i64);
    app.stop().await;
}

on_both_databases!(
    migrate_creates_the_schema,
    replay_applies_stored_messages_through_the_pipeline,
    replay_posts_to_a_running_endpoint,
);

/// `serve` with no DATABASE_URL: a SQLite file in the working directory,
/// named in the log with what start-up applied to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_sqlite_by_default_logs_without_colour_and_stops_on_sigterm() {
    let dir = TempDir::new();
    let port = crate::helpers::free_port();
    let admin = crate::helpers::free_port();
    // Logs written to a file, at the default level.
    let log = dir.path().join("serve.log");
    let mut child = bouncer(dir.path())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin}"))
        .env("SNS_TOPIC_ARNS", TOPIC)
        .env("SNS_CONFIRM_MODE", "off")
        .env("LOG_LEVEL", "info")
        .arg("serve")
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    assert!(
        crate::helpers::answers(port, "/readyz").await,
        "the service did not become ready"
    );
    assert!(
        dir.path().join("bouncer.db").exists(),
        "the SQLite file is created on first start"
    );
    let pid = child.id().to_string();
    // What only `main` sets up, which the in-process tests never run: the
    // process refuses transparent huge pages (its allocator's memory
    // would otherwise grow past SPEC's 64 MiB; where the kernel reports
    // the flag at all), and a check of more than 1,000 addresses hands
    // memory back through the allocator's own call afterwards.
    let thp = |status: String| {
        status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_owned())
    };
    let ours = thp(std::fs::read_to_string("/proc/self/status").unwrap_or_default());
    if ours.is_some() {
        let served = thp(std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status"));
        assert_eq!(
            served.as_deref(),
            Some("0"),
            "transparent huge pages refused"
        );
    }
    let addresses: Vec<String> = (0..2000).map(|i| format!("r{i}@example.com")).collect();
    let checked = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin}/v1/suppressions/check"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "addresses": addresses }).to_string())
        .send()
        .await
        .expect("an answer");
    assert_eq!(checked.status(), 200);
    let checked: serde_json::Value =
        serde_json::from_str(&checked.text().await.expect("a body")).expect("JSON");
    assert_eq!(checked["checked"], 2000, "{checked}");
    assert!(
        crate::helpers::answers(admin, "/v1/sending").await,
        "the service lives on after handing memory back"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("bouncer did not stop on SIGTERM")
    });
    assert!(status.success(), "{status}");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("serving plain HTTP"), "{logged}");
    // Which database it runs on, and what start-up did to it.
    let (count, version) = Backend::Sqlite.migrations();
    let db = std::fs::canonicalize(dir.path().join("bouncer.db")).expect("the file");
    assert!(
        logged.contains(&format!(
            "applied {count} migrations to the SQLite database {}; its schema is now version {version}",
            db.display()
        )),
        "{logged}"
    );
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a log file: {logged}"
    );
}
