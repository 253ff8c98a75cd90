//! `bouncer replay` as the fixtures README documents it: the command run
//! exactly as written, beside a running service; each line naming the file,
//! the message and what happened; `--ignore-age` refused with `--url`; and
//! the lines the writer sets aside read back as their envelope.

use std::path::{Path, PathBuf};

use crate::cli::{bouncer, run, test_env};
use crate::helpers::{Backend, TempDir, fixture, spawn_app, spawn_app_with};
use crate::on_both_databases;

/// The shell block that follows `marker` in `file`.
pub fn shell_block(file: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(fixture(file)).expect("readable");
    let after = text
        .split_once(marker)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{marker} not in {file}"));
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = after[start..].find("```").expect("the block ends") + start;
    after[start..end].to_owned()
}

/// `sh -c` in the repository's root with `bouncer` on the PATH.
fn shell_in_repository(script: &str) -> std::process::Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_bouncer"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let mut cmd = std::process::Command::new("sh");
    cmd.env_clear()
        .current_dir(fixture(""))
        .env("PATH", path)
        .env("LOG_LEVEL", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("-c")
        .arg(script);
    cmd
}

fn message_id(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read");
    serde_json::from_str::<serde_json::Value>(&text).expect("json")["MessageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn the_fixtures_readme_replay_works_beside_a_running_service(backend: Backend) {
    let app = spawn_app(backend).await;
    let script = shell_block("fixtures/README.md", "<!-- replay-fixtures -->");
    let mut cmd = shell_in_repository(&script);
    // The service's own database, and its spool (locked by the service):
    // a direct replay must not need it.
    cmd.env("DATABASE_URL", &app.db.url)
        .env("SPOOL_PATH", &app.settings.spool_path);
    let ran = run(&mut cmd);
    assert_eq!(ran.code, 0, "{ran}");

    let replayed: Vec<PathBuf> = std::fs::read_dir(fixture("fixtures/signed"))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("unsubscribe-"))
        })
        .collect();
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), replayed.len(), "{ran}");
    for file in &replayed {
        let name = format!(
            "fixtures/signed/{}",
            file.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no line for {name}: {ran}"));
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[1], message_id(file), "{line}");
        assert!(fields[2].starts_with("stored"), "{line}");
    }
    let says = |file: &str, what: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("fixtures/signed/{file}\t"))
                    && l.contains(&format!("\t{what}"))),
            "{file}: `{what}`: {ran}"
        )
    };
    says(
        "subscription-confirmation-v1.json",
        "stored: SubscriptionConfirmation recorded as pending (replay never confirms a subscription)",
    );
    says(
        "ses-bounce-permanent-general.json",
        "stored: Bounce suppress (suppressed)",
    );
    says(
        "not-ses-feedback.json",
        "stored: not SES feedback, kept for an operator (",
    );
    assert!(
        ran.stderr.contains(&format!(
            "replayed {n} messages: {n} stored, 0 duplicate, 0 spooled, 0 refused",
            n = replayed.len()
        )),
        "{ran}"
    );

    // The service sees the feed as it should: subscribed (pending), no alert.
    let (status, subscriptions) = app.admin_get("/v1/subscriptions").await;
    assert_eq!(status, 200, "{subscriptions}");
    assert_eq!(
        subscriptions["items"][0]["state"], "pending",
        "{subscriptions}"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM alerts", None).await, 0);
    assert_eq!(app.db.total_messages().await, replayed.len() as i64);

    // Again: every message is a duplicate, and the answer says so.
    let again = run(&mut cmd);
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(
        again
            .stdout
            .matches("\tduplicate: stored before; nothing changed\n")
            .count(),
        replayed.len(),
        "{again}"
    );
    app.stop().await;
}

on_both_databases!(the_fixtures_readme_replay_works_beside_a_running_service);

#[test]
fn ignore_age_is_refused_with_url() {
    let dir = TempDir::new();
    let ran = run(bouncer(dir.path())
        .args(["replay", "--ignore-age", "--url", "http://127.0.0.1:9/sns"])
        .arg(fixture("fixtures/signed/ses-delivery.json")));
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stderr.contains(
            "--ignore-age cannot be used with --url: the endpoint checks every message's age itself"
        ),
        "{ran}"
    );
}

/// What the writer sets aside (`{"body": "<envelope>", ...}` per line) is
/// replayed as the envelope it holds.
async fn replay_reads_the_lines_bouncer_set_aside(backend: Backend) {
    let dir = TempDir::new();
    let db = crate::helpers::TestDb::create(&backend, dir.path()).await;
    crate::cli::migrate(dir.path(), &db.url);
    let names = ["ses-delivery.json", "ses-complaint-abuse.json"];
    let lines: Vec<String> = names
        .iter()
        .map(|n| {
            let body =
                std::fs::read_to_string(fixture(&format!("fixtures/signed/{n}"))).expect("read");
            serde_json::json!({
                "error": "the database refused it",
                "received_at": "2026-11-25T08:00:01.000Z",
                "body": body,
            })
            .to_string()
        })
        .collect();
    let file = dir.path().join("set-aside.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let mut cmd = bouncer(dir.path());
    test_env(&mut cmd, &db.url, dir.path());
    let ran = run(cmd.args(["replay", "--ignore-age"]).arg(&file));
    assert_eq!(ran.code, 0, "{ran}");
    for (i, n) in names.iter().enumerate() {
        let id = message_id(&fixture(&format!("fixtures/signed/{n}")));
        let start = format!("{}:{}\t{id}\tstored: ", file.display(), i + 1);
        assert!(
            ran.stdout.lines().any(|l| l.starts_with(&start)),
            "{start}: {ran}"
        );
    }
    assert_eq!(db.total_messages().await, 2);
}

on_both_databases!(replay_reads_the_lines_bouncer_set_aside);

/// A file of two envelopes, one a line: a delivery whose SES message id is
/// too long for PostgreSQL's index, then the signed delivery fixture.
fn poison_then_delivery(dir: &Path) -> (PathBuf, serde_json::Value, serde_json::Value) {
    let line = |body: &str| serde_json::from_str::<serde_json::Value>(body).expect("json");
    let poison = line(&crate::poison::delivery_with_huge_message_id("poison@example.com").body());
    let delivery =
        line(&std::fs::read_to_string(fixture("fixtures/signed/ses-delivery.json")).expect("read"));
    let file = dir.join("two.jsonl");
    std::fs::write(&file, format!("{poison}\n{delivery}\n")).expect("write");
    (file, poison, delivery)
}

/// A message PostgreSQL refuses (an SES message id too long for its index)
/// is refused by replay too, with a code like every other refusal, and the
/// rest of the file is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_names_a_refusal_by_the_database_with_a_code() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let dir = TempDir::new();
    let db = crate::helpers::TestDb::create(&backend, dir.path()).await;
    crate::cli::migrate(dir.path(), &db.url);
    let (file, poison, _) = poison_then_delivery(dir.path());
    let mut cmd = bouncer(dir.path());
    test_env(&mut cmd, &db.url, dir.path());
    let ran = run(cmd.args(["replay", "--ignore-age"]).arg(&file));
    let refused = format!(
        "{}:1\t{}\trefused database_refused: the database refused the data",
        file.display(),
        poison["MessageId"].as_str().unwrap_or_default()
    );
    assert!(
        ran.stdout.lines().any(|l| l.starts_with(&refused)),
        "{refused}: {ran}"
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{}:2\t", file.display())) && l.contains("\tstored: ")),
        "{ran}"
    );
    assert_eq!(db.total_messages().await, 1);
}

/// `replay --url` counts a message the service set aside (`202
/// set_aside`: taken, but refused by the database, so not stored) as
/// refused, and says so in its exit code; the rest of the file is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_http_counts_a_message_set_aside_as_refused() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.sns_max_age_secs = 100 * 365 * 86400).await;
    let dir = TempDir::new();
    let (file, poison, delivery) = poison_then_delivery(dir.path());
    let ran = run(bouncer(dir.path())
        .args(["replay", "--url", &format!("{}/sns", app.address)])
        .arg(&file));
    assert_eq!(ran.code, 1, "a message not stored fails the run: {ran}");
    let id = |v: &serde_json::Value| v["MessageId"].as_str().unwrap_or_default().to_owned();
    let first = format!("{}:1\t{}\t202 set_aside", file.display(), id(&poison));
    let second = format!("{}:2\t{}\t200 stored", file.display(), id(&delivery));
    assert!(
        ran.stdout.lines().any(|l| l.starts_with(&first)),
        "{first}: {ran}"
    );
    assert!(
        ran.stdout.lines().any(|l| l.starts_with(&second)),
        "{second}: {ran}"
    );
    assert!(
        ran.stderr
            .contains("replayed 2 messages: 1 stored, 0 duplicate, 0 spooled, 1 refused"),
        "{ran}"
    );
    assert_eq!(app.db.total_messages().await, 1);
    app.stop().await;
}

/// `--ignore-age` replays old messages; one dated in the future is still
/// refused (found by an outside trial: it was stored, and its 2099 date held
/// the row's details against every real event).
async fn ignore_age_still_refuses_a_message_from_the_future(backend: Backend) {
    let dir = TempDir::new();
    let db = crate::helpers::TestDb::create(&backend, dir.path()).await;
    crate::cli::migrate(dir.path(), &db.url);
    let old = crate::signing::Msg::notification(crate::signing::TOPIC, "x")
        .set("Timestamp", "2020-06-01T00:00:00.000Z")
        .sign();
    let future = crate::signing::Msg::notification(crate::signing::TOPIC, "x")
        .set("Timestamp", "2099-06-01T00:00:00.000Z")
        .sign();
    let (old_file, future_file) = (dir.path().join("old.json"), dir.path().join("future.json"));
    std::fs::write(&old_file, old.body()).expect("write");
    std::fs::write(&future_file, future.body()).expect("write");
    let mut cmd = bouncer(dir.path());
    test_env(&mut cmd, &db.url, dir.path());
    let ran = run(cmd
        .args(["replay", "--ignore-age"])
        .arg(&old_file)
        .arg(&future_file));
    assert_eq!(ran.code, 1, "{ran}");
    assert!(
        ran.stdout.contains(
            "2099-06-01T00:00:00.000Z is further in the future than SNS_MAX_FUTURE_SECS allows"
        ),
        "{ran}"
    );
    assert_eq!(db.total_messages().await, 1, "the old one is replayed");
}

on_both_databases!(ignore_age_still_refuses_a_message_from_the_future);
