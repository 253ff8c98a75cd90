//! What the sending application and the operator use without the HTTP API:
//! the README's SQL in `sqlite3` and `psql` as written, the README's Python,
//! and the `bouncer suppressions` commands.

use std::process::Command;

use crate::cli::bouncer;
use crate::feedback::{bounce, is_suppressed};
use crate::helpers::{Backend, TempDir, TestApp, eventually_within, fixture, spawn_app_with};
use crate::on_both_databases;

/// The code block that follows `marker` in the README.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(fixture("README.md")).expect("README");
    let after = readme
        .split_once(marker)
        .map(|(_, a)| a)
        .expect("marker in README");
    let start = after.find("```").expect("code block");
    let body = &after[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_owned()
}

pub fn sqlite_path(app: &TestApp) -> String {
    app.db.url.trim_start_matches("sqlite:").to_owned()
}

/// Runs the README query (with its example address) in the database's own
/// command-line client, as the README says to run it, and returns what it
/// printed.
pub fn run_readme_query(app: &TestApp, sql: &str) -> String {
    let output = if app.db.url.starts_with("sqlite:") {
        // With the busy timeout the README tells a reader to set: in CI
        // the query, run the moment the service had started, was once
        // answered "database is locked" without one.
        Command::new("sqlite3")
            .args(["-cmd", ".timeout 5000"])
            .arg(sqlite_path(app))
            .arg(sql)
            .output()
    } else {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-d", &app.db.url, "-c", sql])
            .output()
    }
    .expect("the database's command-line client runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn the_readme_query_works_as_written(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let sql = readme_block("<!-- sender-query -->");
    assert!(
        sql.contains("'Jane@Example.com'"),
        "the README example address changed: {sql}"
    );
    let before = run_readme_query(&app, &sql);
    assert!(
        before == "active|0" || before == "active|f",
        "not suppressed yet: {before}"
    );
    app.post(&bounce(
        "Permanent",
        "General",
        "\"Jane\" <jane@example.com>",
        "2026-11-01T00:00:00Z",
    ))
    .await;
    let after = run_readme_query(&app, &sql);
    assert!(
        after == "active|1" || after == "active|t",
        "suppressed: {after}"
    );
    app.stop().await;
}

/// Runs the README's Python block, then its `is_suppressed_<db>` and
/// `may_send_<db>` for a bounced address written as a sender would
/// (display name, capitals) and for one never seen; prints the four answers
/// and, for SQLite, how many connections the calls left open (Python 3.13
/// warns of each: a sender checks before every send, so they add up).
fn readme_python(db: &str, target: &str) -> String {
    const COUNT_OPEN: &str = "import sqlite3 as _s\n_open = []\n_connect = _s.connect\nclass _Counted(_s.Connection):\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n        _open.append(self)\n    def close(self):\n        super().close()\n        _open.remove(self)\n_s.connect = lambda *a, **k: _connect(*a, factory=_Counted, **k)\n";
    let script = format!(
        "{}\n{COUNT_OPEN}import sys\nt = sys.argv[1]\nprint(is_suppressed_{db}(t, ' \"Jane\" <JANE@example.com> '), is_suppressed_{db}(t, 'john@example.com'), may_send_{db}(t, 'john@example.com'), may_send_{db}(t, 'jane@example.com'), *(['open:', len(_open)] if '{db}' == 'sqlite' else []))\n",
        readme_block("<!-- sender-python -->")
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(target)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The README's Python `normalize()` gives what bouncer stores, for every
/// address bouncer accepts: display names and angle brackets, white space
/// of every kind, and every letter that has a lower case, at the start, in
/// the middle and at the end of a word (Greek's final sigma). Letters the
/// running Python's Unicode does not know yet are left out: the README
/// says that those differ.
#[test]
fn the_readme_python_normalizes_as_bouncer_does() {
    use std::io::Write;
    let mut inputs: Vec<String> = [
        "  \"Jane Doe\" <Jane@Example.com>  ",
        "Jane <JANE@EXAMPLE.COM>",
        "<  Jane@Example.com  >",
        "\u{a0}jane@example.com\u{3000}",
        "\u{85}JANE@example.com\u{2028}",
        "\tJANE@EXAMPLE.COM\n",
        "ΟΔΥΣΣΕΑΣ@example.gr",
        "ΑΣ.Β@example.gr",
        "Σ@example.gr",
        "İSTANBUL@ÖRNEK.com.tr",
        "STRAẞE@example.de",
        "\u{212a}elvin@example.com",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Every character Rust counts as white space, and those Python's
    // `strip()` also takes (U+001C to U+001F, which bouncer refuses).
    let spaces = (0..0x11_0000)
        .filter_map(char::from_u32)
        .filter(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(c));
    for w in spaces {
        inputs.push(format!("{w}Jane@Example.com{w}"));
        inputs.push(format!("Jane <{w}JANE@EXAMPLE.COM{w}>{w}"));
    }
    for c in (0..0x11_0000).filter_map(char::from_u32) {
        if c.to_lowercase().ne(std::iter::once(c)) {
            inputs.push(format!("{c}x@Example.com"));
            inputs.push(format!("AB{c}@example.com"));
            inputs.push(format!("\"Name\" <A{c}B@EXAMPLE.COM>"));
        }
    }
    let script = format!(
        "{}\nimport json, sys, unicodedata\n\
         known = lambda s: all(unicodedata.category(ch) != 'Cn' for ch in s)\n\
         print(json.dumps([normalize(a) if known(a) else None for a in json.load(sys.stdin)]))\n",
        readme_block("<!-- sender-python -->")
    );
    let mut python = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&inputs).expect("json").as_bytes())
        .expect("write");
    let output = python.wait_with_output().expect("python3 ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let normalized: Vec<Option<String>> =
        serde_json::from_slice(&output.stdout).expect("a JSON list");
    assert_eq!(normalized.len(), inputs.len());
    let (mut compared, mut unknown_to_python, mut differ) = (0, 0, Vec::new());
    for (input, python) in inputs.iter().zip(&normalized) {
        let Ok(stored) = bouncer::address::EmailAddress::parse(input) else {
            continue;
        };
        match python {
            None => unknown_to_python += 1,
            Some(python) if python == stored.as_str() => compared += 1,
            Some(python) => differ.push(format!("{input:?}: Python {python:?}, bouncer {stored}")),
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Every letter with a lower case, three ways; only letters newer than
    // the oldest Python in use (3.9, Unicode 13) may be left out.
    assert!(compared > 4_000, "{compared} compared");
    assert!(unknown_to_python < 400, "{unknown_to_python} left out");
}

async fn jane_bounced(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |_, _| {}).await;
    app.post(&bounce(
        "Permanent",
        "General",
        "jane@example.com",
        "2026-11-01T00:00:00Z",
    ))
    .await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_check_works_on_sqlite() {
    let app = jane_bounced(Backend::Sqlite).await;
    assert_eq!(
        readme_python("sqlite", &sqlite_path(&app)),
        "True False True False open: 0"
    );
    app.stop().await;
}

/// The README's PostgreSQL functions, through psycopg as a sender would run
/// them (`.ci/run` installs it; outside CI a missing psycopg skips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_check_works_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let has_psycopg = Command::new("python3")
        .args(["-c", "import psycopg"])
        // Its traceback, when missing, would read like a failure in a
        // passing run; the notice below says it.
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_psycopg {
        assert!(
            std::env::var_os("CI").is_none(),
            "psycopg is missing under CI: .ci/run installs it"
        );
        eprintln!("SKIPPED: python3 has no psycopg (pip install \"psycopg[binary]\")");
        return;
    }
    let app = jane_bounced(backend).await;
    assert_eq!(
        readme_python("postgres", &app.db.url),
        "True False True False"
    );
    // Paused: nobody may be sent to.
    crate::ses_account::set_sending(&app, "paused").await;
    assert_eq!(
        readme_python("postgres", &app.db.url),
        "True False False False"
    );
    app.stop().await;
}

fn cli(app: &TestApp, dir: &TempDir, args: &[&str]) -> (bool, String) {
    let output = bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .env("USER", "ops")
        .args(args)
        .output()
        .expect("runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn every_suppressions_command_works_against_the_database(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let dir = TempDir::new();
    app.post(&bounce(
        "Permanent",
        "NoEmail",
        "bounced@example.com",
        "2026-11-01T00:00:00Z",
    ))
    .await;

    let (ok, out) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "add",
            "Quiet <Quiet@Example.com>",
            "--note",
            "asked",
        ],
    );
    assert!(
        ok && out.starts_with("added\tquiet@example.com\tmanual"),
        "{out}"
    );
    assert!(is_suppressed(&app, "quiet@example.com").await);
    let source = app
        .db
        .text(
            "SELECT source FROM suppressions WHERE email = $1",
            "quiet@example.com",
        )
        .await;
    assert_eq!(source.as_deref(), Some("cli:ops"));

    let (ok, out) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "check",
            "BOUNCED@example.com",
            "fine@example.com",
        ],
    );
    assert!(!ok, "exit 1 when one is suppressed");
    assert!(
        out.contains(
            "bounced@example.com\tsuppressed\tbounced@example.com\tbounce\tPermanent\tNoEmail"
        ),
        "{out}"
    );
    assert!(out.contains("fine@example.com\tnot suppressed"), "{out}");
    let (ok, _) = cli(&app, &dir, &["suppressions", "check", "fine@example.com"]);
    assert!(ok);

    let (ok, out) = cli(&app, &dir, &["suppressions", "list", "--reason", "bounce"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, all) = cli(&app, &dir, &["suppressions", "list"]);
    assert_eq!(all.lines().count(), 2, "{all}");

    let export = dir.path().join("list.csv");
    let (ok, _) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "export",
            "--output",
            export.to_str().unwrap_or_default(),
        ],
    );
    assert!(ok);
    let csv = std::fs::read_to_string(&export).expect("export");
    assert!(csv.starts_with("email,reason,bounce_type,bounce_subtype,complaint_feedback_type,diagnostic_code,first_seen_at,last_seen_at,event_count,"), "{csv}");
    assert!(
        csv.contains("bounced@example.com,bounce,Permanent,NoEmail,"),
        "{csv}"
    );

    let (ok, out) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "remove",
            "quiet@example.com",
            "--by",
            "alice",
            "--reason",
            "wants mail again",
        ],
    );
    assert!(ok, "{out}");
    assert!(!is_suppressed(&app, "quiet@example.com").await);
    let by = app
        .db
        .text(
            "SELECT removed_by FROM suppression_removals WHERE email = $1",
            "quiet@example.com",
        )
        .await;
    assert_eq!(by.as_deref(), Some("alice (cli:ops)"));
    let (ok, _) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "remove",
            "quiet@example.com",
            "--by",
            "alice",
            "--reason",
            "again",
        ],
    );
    assert!(!ok, "removing what is not listed fails");

    let import = dir.path().join("import.csv");
    std::fs::write(&import, "email,reason,note\nImported <one@example.com>,complaint,from the old system\ntwo@example.com,,\n").expect("write");
    let (ok, out) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "import",
            import.to_str().unwrap_or_default(),
        ],
    );
    assert!(ok && out.contains("imported 2 rows"), "{out}");
    let reason = app
        .db
        .text(
            "SELECT reason FROM suppressions WHERE email = $1",
            "one@example.com",
        )
        .await;
    assert_eq!(reason.as_deref(), Some("complaint"));
    let reason = app
        .db
        .text(
            "SELECT reason FROM suppressions WHERE email = $1",
            "two@example.com",
        )
        .await;
    assert_eq!(reason.as_deref(), Some("manual"));
    std::fs::write(&import, "email\nnot an address\n").expect("write");
    let before = app
        .db
        .scalar("SELECT COUNT(*) FROM suppressions", None)
        .await;
    let (ok, out) = cli(
        &app,
        &dir,
        &[
            "suppressions",
            "import",
            import.to_str().unwrap_or_default(),
        ],
    );
    assert!(!ok && out.contains("line 2"), "{out}");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM suppressions", None)
            .await,
        before,
        "a bad file changes nothing"
    );
    app.stop().await;
}

on_both_databases!(
    the_readme_query_works_as_written,
    every_suppressions_command_works_against_the_database
);

/// `bouncer_sqlite_wal_bytes{file}` at this moment.
async fn wal_gauge(app: &TestApp) -> u64 {
    let text = crate::ses_account::metrics(app).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("bouncer_sqlite_wal_bytes{file=\""))
        .unwrap_or_else(|| panic!("no WAL gauge in {text}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a number: {line}"))
}

/// A sender that keeps a read transaction open on the SQLite file holds
/// every checkpoint short of the log's end, so the log grows with every
/// write (an outside trial: 30 to 285 MB in 25 s, and it stayed 285 MB
/// long after, with no word from bouncer). The gauge shows it while it
/// grows, and once the reader is gone the log is cut back to 64 MiB after
/// the next checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_holding_a_transaction_shows_in_the_wal_gauge_and_the_log_is_cut_back() {
    use sqlx::{Connection, Executor};
    const KEPT: u64 = 64 << 20;
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    let wal_file = format!("{}-wal", sqlite_path(&app));
    assert!(wal_gauge(&app).await < KEPT);

    let mut reader = sqlx::SqliteConnection::connect(&app.db.url)
        .await
        .expect("connect");
    reader.execute("BEGIN").await.expect("begin");
    reader
        .execute("SELECT COUNT(*) FROM suppressions")
        .await
        .expect("a snapshot");
    // 80 MB written meanwhile in 200 small commits (by another connection,
    // for speed; the service's own writes add to the log the same way).
    // Without the reader, the automatic checkpoints after each commit
    // would keep the log small.
    let mut other = sqlx::SqliteConnection::connect(&app.db.url)
        .await
        .expect("connect");
    other
        .execute("CREATE TABLE grown (b BLOB)")
        .await
        .expect("create");
    for _ in 0..200 {
        other
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                 INSERT INTO grown SELECT randomblob(4000) FROM n",
            )
            .await
            .expect("write");
    }
    let grown = wal_gauge(&app).await;
    assert!(grown > KEPT, "the gauge shows the log grown: {grown}");

    reader.execute("COMMIT").await.expect("end");
    drop(reader);
    // The log copied into the database now that nothing holds it back
    // (as the service's next commit would, which would then also have to
    // fit the 80 MB into its write time limit on a slow machine). PASSIVE
    // leaves the file as it is: cutting it back is the service's part.
    other
        .execute("PRAGMA wal_checkpoint(PASSIVE)")
        .await
        .expect("checkpoint");
    other.close().await.expect("close");
    assert!(std::fs::metadata(&wal_file).expect("the log").len() > KEPT);
    // The service's next commit starts the log again from the top and
    // cuts the file back.
    let mut sent = 0;
    eventually_within(
        "the log cut back to 64 MiB",
        std::time::Duration::from_secs(30),
        || {
            sent += 1;
            let msg = bounce(
                "Permanent",
                "General",
                &format!("after-{sent}@example.com"),
                "2026-11-01T00:00:00Z",
            );
            let app = &app;
            async move {
                app.post(&msg).await;
                wal_gauge(app).await <= KEPT
            }
        },
    )
    .await;
    let on_disk = std::fs::metadata(&wal_file).expect("the log").len();
    assert!(on_disk <= KEPT, "{on_disk} bytes on disk");
    app.stop().await;
}
