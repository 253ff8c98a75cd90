//! `bouncer suppressions ...` as a script sees it: `check`'s exit codes,
//! `list` saying when it stops at `--limit`, and CSV export and import that
//! round-trip every column and merge without erasing.

use serde_json::Value;

use crate::cli::{migrate, run, run_with};
use crate::feedback::{bounce, complaint};
use crate::helpers::{Backend, TempDir, TestApp, TestDb, assert_status, spawn_app};
use crate::on_both_databases;

const AT: &str = "2026-11-25T08:00:00.000Z";

async fn check_exits_0_1_or_2_and_checks_every_valid_address(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    let added = run_with(
        dir.path(),
        &db.url,
        &["suppressions", "add", "x@example.com"],
    );
    assert_eq!(added.code, 0, "{added}");
    let check = |args: &[&str]| {
        let mut all = vec!["suppressions", "check"];
        all.extend_from_slice(args);
        run_with(dir.path(), &db.url, &all)
    };

    let none = check(&["a@example.com"]);
    assert_eq!(
        (none.code, none.stdout.as_str()),
        (0, "a@example.com\tnot suppressed\n"),
        "{none}"
    );
    let some = check(&["a@example.com", "X@Example.com"]);
    assert_eq!(some.code, 1, "{some}");
    let lines: Vec<&str> = some.stdout.lines().collect();
    assert_eq!(lines[0], "a@example.com\tnot suppressed", "{some}");
    assert!(
        lines[1].starts_with("x@example.com\tsuppressed\t"),
        "{some}"
    );

    // An invalid address is an error (2), and every valid one is checked.
    let error = check(&["not-an-address", "x@example.com", "a@example.com"]);
    assert_eq!(error.code, 2, "{error}");
    assert_eq!(
        error.stderr, "error: `not-an-address` is not an email address\n",
        "{error}"
    );
    let lines: Vec<&str> = error.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{error}");
    assert!(
        lines[0].starts_with("x@example.com\tsuppressed\t"),
        "{error}"
    );
    assert_eq!(lines[1], "a@example.com\tnot suppressed", "{error}");
}

async fn list_says_when_it_stops_at_the_limit(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    for address in ["a@example.com", "b@example.com", "c@example.com"] {
        let added = run_with(dir.path(), &db.url, &["suppressions", "add", address]);
        assert_eq!(added.code, 0, "{added}");
    }
    let list = |limit: &str| {
        run_with(
            dir.path(),
            &db.url,
            &["suppressions", "list", "--limit", limit],
        )
    };
    let cut = list("2");
    assert_eq!((cut.code, cut.stdout.lines().count()), (0, 2), "{cut}");
    assert_eq!(
        cut.stderr, "stopped at --limit 2: more rows match (--limit 0 lists them all)\n",
        "{cut}"
    );
    for limit in ["3", "0", "100"] {
        let all = list(limit);
        assert_eq!((all.code, all.stdout.lines().count()), (0, 3), "{all}");
        assert!(all.stderr.is_empty(), "--limit {limit}: {all}");
    }
}

on_both_databases!(
    check_exits_0_1_or_2_and_checks_every_valid_address,
    list_says_when_it_stops_at_the_limit,
);

/// `export > FILE` on a full disk names what it could not write, as
/// `--output FILE` does: the system's "No space left on device" alone
/// does not say which file. `/dev/full` answers every write that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_a_full_standard_output_says_so() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.path().join("b.db").display());
    migrate(dir.path(), &url);
    let added = run_with(dir.path(), &url, &["suppressions", "add", "a@example.com"]);
    assert_eq!(added.code, 0, "{added}");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let ran = run(crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &url)
        .args(["suppressions", "export"])
        .stdout(full));
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stderr
            .contains("cannot write the export to standard output: No space left on device"),
        "{ran}"
    );
}

/// `suppressions export` to stdout.
fn export(dir: &std::path::Path, url: &str) -> String {
    let ran = run_with(dir, url, &["suppressions", "export"]);
    assert_eq!(ran.code, 0, "{ran}");
    ran.stdout
}

fn import(dir: &std::path::Path, url: &str, file: &std::path::Path) -> crate::cli::Ran {
    run(crate::cli::bouncer(dir)
        .env("DATABASE_URL", url)
        .args(["suppressions", "import"])
        .arg(file))
}

async fn row(app: &TestApp, email: &str) -> Value {
    let (status, body) = app.admin_get(&format!("/v1/suppressions/{email}")).await;
    assert_eq!(status, 200, "{email}: {body}");
    body["suppression"].clone()
}

async fn export_and_import_round_trip_every_column(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    assert_status(
        &app.post(&bounce("Permanent", "General", "jane@example.com", AT))
            .await,
        200,
        "stored",
    );
    assert_status(
        &app.post(&complaint(Some("abuse"), "joe@example.com")).await,
        200,
        "stored",
    );
    let dir = TempDir::new();
    let added = run_with(
        dir.path(),
        &app.db.url,
        &[
            "suppressions",
            "add",
            "ann@example.com",
            "--note",
            "asked by phone, \"twice\"",
        ],
    );
    assert_eq!(added.code, 0, "{added}");
    let original = export(dir.path(), &app.db.url);
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(
        lines[0],
        "email,reason,bounce_type,bounce_subtype,complaint_feedback_type,diagnostic_code,first_seen_at,last_seen_at,event_count,last_ses_message_id,last_sns_message_id,source,note"
    );
    assert_eq!(lines.len(), 4, "{original}");
    let file = dir.path().join("list.csv");
    std::fs::write(&file, &original).expect("write");

    // Into a fresh database: the same rows, every column.
    let fresh_dir = TempDir::new();
    let fresh = TestDb::create(&backend, fresh_dir.path()).await;
    migrate(fresh_dir.path(), &fresh.url);
    let ran = import(fresh_dir.path(), &fresh.url, &file);
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(
        ran.stdout, "imported 3 rows: 3 new, 0 merged into rows already listed\n",
        "{ran}"
    );
    assert_eq!(export(fresh_dir.path(), &fresh.url), original);

    // Into the same database: nothing changes.
    let ran = import(dir.path(), &app.db.url, &file);
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.stdout.contains("0 new, 3 merged"), "{ran}");
    assert_eq!(export(dir.path(), &app.db.url), original);
    app.stop().await;
}

async fn import_merges_like_add_and_a_bad_line_imports_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_status(
        &app.post(&bounce("Permanent", "General", "jane@example.com", AT))
            .await,
        200,
        "stored",
    );
    let before = row(&app, "jane@example.com").await;
    let dir = TempDir::new();
    let file = dir.path().join("old-tool.csv");
    std::fs::write(
        &file,
        "Email,reason,source,note,first_seen_at,event_count,colour\n\
         jane@example.com,manual,spreadsheet,from the old tool,2020-01-01,7,red\n\
         new@example.com,complaint,,,,,blue\n",
    )
    .expect("write");
    let ran = import(dir.path(), &app.db.url, &file);
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(
        ran.stdout, "imported 2 rows: 1 new, 1 merged into rows already listed\n",
        "{ran}"
    );
    assert!(
        ran.stderr
            .contains("columns not in the suppressions table are ignored: colour"),
        "{ran}"
    );
    let jane = row(&app, "jane@example.com").await;
    // What the row knew stays; what it lacked is filled in.
    for kept in [
        "reason",
        "bounce_type",
        "bounce_subtype",
        "diagnostic_code",
        "last_seen_at",
        "last_ses_message_id",
        "last_sns_message_id",
        "source",
    ] {
        assert_eq!(jane[kept], before[kept], "{kept}: {jane}");
    }
    assert_eq!(jane["note"], "from the old tool");
    assert_eq!(jane["first_seen_at"], "2020-01-01T00:00:00.000Z");
    assert_eq!(jane["event_count"], 7);
    let new = row(&app, "new@example.com").await;
    assert_eq!(new["reason"], "complaint");
    assert_eq!(new["event_count"], 1);
    assert_eq!(new["source"], format!("import:{}", file.display()));

    // All or nothing: a bad line names itself, and nothing is imported.
    for (content, says) in [
        (
            "email,reason\nok@example.com,manual\nbroken,manual\n",
            "line 3: `broken` is not an email address; nothing imported",
        ),
        (
            "email,reason\nok@example.com,spam\n",
            "line 2: reason `spam` is not bounce, complaint or manual; nothing imported",
        ),
        (
            "email,last_seen_at\nok@example.com,yesterday\n",
            "line 2: last_seen_at `yesterday` is not an ISO 8601 time; nothing imported",
        ),
        (
            "address,reason\nok@example.com,manual\n",
            "the CSV header has no `email` column",
        ),
    ] {
        std::fs::write(&file, content).expect("write");
        let ran = import(dir.path(), &app.db.url, &file);
        assert_eq!(ran.code, 2, "{ran}");
        assert!(ran.stderr.contains(says), "`{says}`: {ran}");
        let (status, _) = app.admin_get("/v1/suppressions/ok@example.com").await;
        assert_eq!(status, 404, "{content}");
    }
    app.stop().await;
}

on_both_databases!(
    export_and_import_round_trip_every_column,
    import_merges_like_add_and_a_bad_line_imports_nothing,
);
