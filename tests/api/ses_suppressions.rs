//! One suppression list with SES (SPEC §10): every change of bouncer's list
//! is put on or deleted from the SES account-level list through the real
//! SDK and the local SESv2 stand-in, refusals are recorded, counted and
//! alerted (`ses_cli` has the commands that read the SES side back).

use bouncer::config::ManualAs;
use bouncer::store::{Access, Store};
use bouncer::time::Timestamp;
use serde_json::json;

use crate::cli::{migrate, run_with};
use crate::feedback::{bounce, complaint, is_suppressed};
use crate::guard::alert_kinds;
use crate::helpers::{
    Backend, Pool, TempDir, TestApp, TestDb, answer, assert_status, eventually, spawn_app_with,
    test_settings,
};
use crate::on_both_databases;
use crate::ses_account::{ACCESS_KEY, REGION, at_ses, checked, cli_status, metrics, ses_state};
use crate::ses_stand_in::SesApi;

const AT: &str = "2026-11-25T08:00:00.000Z";
pub const CHECK_ADDRESS: &str = "bouncer-permission-check@example.com";

async fn pushing(backend: Backend, api: &SesApi, manual_as: ManualAs) -> TestApp {
    spawn_app_with(backend, |s, h| {
        at_ses(s, h, api);
        s.ses_push_suppressions = true;
        s.ses_push_manual_as = manual_as;
    })
    .await
}

pub async fn add(app: &TestApp, email: &str) {
    let response = app
        .client
        .post(format!("{}/v1/suppressions", app.admin_address))
        .header("content-type", "application/json")
        .body(json!({"email": email, "note": "asked us to stop"}).to_string())
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert!(status == 201 || status == 200, "{body}");
}

async fn remove(app: &TestApp, email: &str) {
    let response = app
        .client
        .delete(format!(
            "{}/v1/suppressions/{email}?by=carol&reason=recipient%20asked",
            app.admin_address
        ))
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
}

/// The suppression-list calls about `email`, as (operation, reason).
fn calls_about(api: &SesApi, email: &str) -> Vec<(&'static str, Option<String>)> {
    api.calls()
        .into_iter()
        .filter(|c| c.email().as_deref() == Some(email))
        .map(|c| (c.operation, c.body["Reason"].as_str().map(str::to_owned)))
        .collect()
}

async fn nothing_pending(app: &TestApp) {
    eventually("the push outbox is empty", || async {
        ses_state(app).await["push"]["pending"] == 0
    })
    .await;
}

async fn each_change_of_the_list_is_put_or_deleted_at_ses_with_its_reason(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Bounce).await;
    checked(&app).await;
    let hard = "gone@example.net";
    let soft = "full@example.net";
    let angry = "angry@example.net";
    let manual = "asked@example.net";
    assert_status(
        &app.post(&bounce("Permanent", "General", hard, AT)).await,
        200,
        "stored",
    );
    for _ in 0..3 {
        assert_status(
            &app.post(&bounce("Transient", "MailboxFull", soft, AT))
                .await,
            200,
            "stored",
        );
    }
    assert_status(
        &app.post(&complaint(Some("abuse"), angry)).await,
        200,
        "stored",
    );
    add(&app, manual).await;
    nothing_pending(&app).await;
    assert_eq!(
        calls_about(&api, hard),
        [("PutSuppressedDestination", Some("BOUNCE".into()))]
    );
    assert_eq!(
        calls_about(&api, soft),
        [("PutSuppressedDestination", Some("BOUNCE".into()))],
        "soft bounces that suppress"
    );
    assert_eq!(
        calls_about(&api, angry),
        [("PutSuppressedDestination", Some("COMPLAINT".into()))]
    );
    assert_eq!(
        calls_about(&api, manual),
        [("PutSuppressedDestination", Some("BOUNCE".into()))],
        "manual rows as SES_PUSH_MANUAL_AS says"
    );
    let put = api
        .calls_of("PutSuppressedDestination")
        .pop()
        .expect("a put");
    assert_eq!(
        put.scope(),
        Some((ACCESS_KEY.into(), REGION.into(), "ses".into()))
    );
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", "/v2/email/suppression/addresses")
    );

    // A CSV import from the command line is pushed like the rest.
    let dir = crate::helpers::TempDir::new();
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, "email,reason\nimported@example.net,complaint\n").expect("write");
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .args(["suppressions", "import"])
        .arg(&csv)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    nothing_pending(&app).await;
    assert_eq!(
        calls_about(&api, "imported@example.net"),
        [("PutSuppressedDestination", Some("COMPLAINT".into()))]
    );

    remove(&app, manual).await;
    nothing_pending(&app).await;
    let delete = api
        .calls_of("DeleteSuppressedDestination")
        .into_iter()
        .find(|c| c.email().as_deref() == Some(manual))
        .expect("a delete");
    assert_eq!(delete.method, "DELETE");
    assert!(!api.listed().contains_key(manual));
    let audited = app
        .db
        .text(
            "SELECT CAST(ses_removed_at AS TEXT) FROM suppression_removals WHERE email = $1",
            manual,
        )
        .await;
    assert!(
        audited.is_some(),
        "the removal audit says when SES followed"
    );
    let listed = api.listed();
    assert_eq!(listed.get(hard).map(String::as_str), Some("BOUNCE"));
    assert_eq!(listed.get(angry).map(String::as_str), Some("COMPLAINT"));
    let push = &ses_state(&app).await["push"];
    assert_eq!(
        (
            push["enabled"].as_bool(),
            push["done"].as_i64(),
            push["refused"].as_i64()
        ),
        (Some(true), Some(5), Some(0)),
        "{push}"
    );
    let status = cli_status(&app);
    assert!(
        status.contains("SES push:       on: 0 pending, 5 done, 0 skipped, 0 refused"),
        "{status}"
    );
    assert!(
        metrics(&app)
            .await
            .contains("bouncer_ses_pushes{state=\"done\"} 5")
    );
    app.stop().await;
    api.stop().await;
}

async fn a_refused_push_is_recorded_counted_and_alerted_once(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Complaint).await;
    checked(&app).await;
    api.fail_always("PutSuppressedDestination", 400, "BadRequestException");
    add(&app, "first@example.net").await;
    add(&app, "second@example.net").await;
    eventually("both refused", || async {
        ses_state(&app).await["push"]["refused"] == 2
    })
    .await;
    assert!(
        is_suppressed(&app, "first@example.net").await,
        "bouncer's list keeps them"
    );
    let push = ses_state(&app).await["push"].clone();
    assert!(
        push["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("BadRequestException")),
        "{push}"
    );
    let kinds = alert_kinds(&app).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "ses_push_refused").count(),
        1,
        "at most one an hour: {kinds:?}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "bouncer_ses_calls_total{operation=\"PutSuppressedDestination\",outcome=\"refused\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("bouncer_ses_pushes{state=\"refused\"} 2"),
        "{text}"
    );
    assert_eq!(
        api.calls_of("PutSuppressedDestination")
            .iter()
            .filter(|c| c.email().as_deref() == Some("first@example.net"))
            .count(),
        1,
        "a refusal is not retried"
    );
    assert!(cli_status(&app).contains("2 refused"));
    app.stop().await;
    api.stop().await;
}

async fn ses_ends_as_the_latest_change_of_an_address(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Bounce).await;
    checked(&app).await;
    let email = "flaky@example.net";
    api.fail_always("PutSuppressedDestination", 503, "ServiceUnavailable");
    add(&app, email).await;
    eventually("a put is tried", || async {
        !calls_about(&api, email).is_empty()
    })
    .await;
    remove(&app, email).await;
    add(&app, email).await;
    remove(&app, email).await;
    api.heal("PutSuppressedDestination");
    nothing_pending(&app).await;
    assert!(!api.listed().contains_key(email), "removed, as in bouncer");
    assert_eq!(
        calls_about(&api, email).last().map(|c| c.0),
        Some("DeleteSuppressedDestination")
    );
    add(&app, email).await;
    nothing_pending(&app).await;
    assert_eq!(api.listed().get(email).map(String::as_str), Some("BOUNCE"));
    app.stop().await;
    api.stop().await;
}

const STATES: [&str; 4] = ["pending", "done", "skipped", "refused"];

/// The outbox's rows by state, counted, and the newest confirmed push.
async fn outbox_counted(app: &TestApp) -> (Vec<i64>, Option<String>) {
    let mut counts = Vec::new();
    for state in STATES {
        counts.push(
            app.db
                .scalar(
                    "SELECT COUNT(*) FROM ses_suppression_sync WHERE state = $1",
                    Some(state),
                )
                .await,
        );
    }
    let last = app
        .db
        .text(
            "SELECT CAST(MAX(done_at) AS TEXT) FROM ses_suppression_sync WHERE state = $1",
            "done",
        )
        .await;
    (counts, last)
}

/// What `GET /v1/sending`, `/metrics` and `bouncer status` say of the
/// outbox, asserted to agree with its rows.
async fn outbox_reported_as_it_is(app: &TestApp, when: &str) -> Vec<i64> {
    let (counted, last) = outbox_counted(app).await;
    let push = ses_state(app).await["push"].clone();
    let reported: Vec<i64> = STATES
        .iter()
        .map(|s| push[*s].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(reported, counted, "{when}: GET /v1/sending {push}");
    assert_eq!(
        push["last_done_at"].is_null(),
        last.is_none(),
        "{when}: {push}"
    );
    let text = metrics(app).await;
    for (state, n) in STATES.iter().zip(&counted) {
        assert!(
            text.contains(&format!("bouncer_ses_pushes{{state=\"{state}\"}} {n}\n")),
            "{when}: {text}"
        );
    }
    let status = cli_status(app);
    let line = format!(
        "{} pending, {} done, {} skipped, {} refused",
        counted[0], counted[1], counted[2], counted[3]
    );
    assert!(status.contains(&line), "{when}: {status}");
    counted
}

/// The outbox's counts are kept as it changes (not counted at every
/// read): they must agree with its rows after every kind of change, with
/// the writer and the push worker changing it at the same time.
async fn the_outbox_counts_agree_with_its_rows_after_every_change(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::None).await;
    checked(&app).await;
    outbox_reported_as_it_is(&app, "empty").await;

    api.fail_always("PutSuppressedDestination", 400, "BadRequestException");
    for i in 0..3 {
        assert_status(
            &app.post(&bounce(
                "Permanent",
                "General",
                &format!("refused{i}@example.net"),
                AT,
            ))
            .await,
            200,
            "stored",
        );
    }
    eventually("three refused", || async {
        ses_state(&app).await["push"]["refused"] == 3
    })
    .await;
    assert_eq!(
        outbox_reported_as_it_is(&app, "refused").await,
        [0, 0, 0, 3]
    );

    // Bounces in batches while the worker pushes the earlier ones;
    // manual rows are skipped (SES_PUSH_MANUAL_AS=none); a refused row
    // changed again is pending again.
    api.slow_down(
        "PutSuppressedDestination",
        std::time::Duration::from_millis(5),
    );
    api.heal("PutSuppressedDestination");
    let posts = (0..40).map(|i| {
        let app = &app;
        async move {
            let email = format!("storm{i}@example.net");
            app.post(&bounce("Permanent", "General", &email, AT)).await
        }
    });
    for answer in futures_util::future::join_all(posts).await {
        assert_status(&answer, 200, "stored");
    }
    for i in 0..3 {
        add(&app, &format!("manual{i}@example.net")).await;
    }
    assert_status(
        &app.post(&complaint(Some("abuse"), "refused0@example.net"))
            .await,
        200,
        "stored",
    );
    nothing_pending(&app).await;
    assert_eq!(
        outbox_reported_as_it_is(&app, "pushed").await,
        [0, 41, 3, 2]
    );

    // A removal makes a confirmed row pending, then done again.
    remove(&app, "storm0@example.net").await;
    remove(&app, "manual0@example.net").await;
    nothing_pending(&app).await;
    assert_eq!(
        outbox_reported_as_it_is(&app, "removed").await,
        [0, 42, 2, 2]
    );

    // A week after SES confirmed them, finished pushes are pruned.
    app.db
        .execute(if app.db.is_sqlite() {
            "UPDATE ses_suppression_sync SET done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days') \
             WHERE email LIKE 'storm1%' OR email = 'manual1@example.net'"
        } else {
            "UPDATE ses_suppression_sync SET done_at = now() - interval '8 days' \
             WHERE email LIKE 'storm1%' OR email = 'manual1@example.net'"
        })
        .await;
    let dir = crate::helpers::TempDir::new();
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .arg("prune")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("12 ses_pushes"),
        "{output:?}"
    );
    assert_eq!(
        outbox_reported_as_it_is(&app, "pruned").await,
        [0, 31, 1, 2]
    );
    app.stop().await;
    api.stop().await;
}

/// The counts the outbox keeps, as the service reads them (on PostgreSQL
/// with the changes not folded yet).
async fn kept_counts(db: &crate::helpers::TestDb) -> Vec<i64> {
    let mut counts = Vec::new();
    for state in STATES {
        counts.push(
            db.scalar(
                if db.is_sqlite() {
                    "SELECT n FROM ses_push_counts WHERE state = $1"
                } else {
                    "SELECT CAST(SUM(n) AS BIGINT) FROM (SELECT state, n FROM ses_push_counts \
                     UNION ALL SELECT state, n FROM ses_push_count_changes) AS c WHERE state = $1"
                },
                Some(state),
            )
            .await,
        );
    }
    counts
}

/// A database upgraded with pushes in its outbox starts its counts from
/// them, and the triggers keep them through an upsert, a change that is
/// not one of state, and a delete.
async fn an_upgraded_outbox_starts_its_counts_from_its_rows(backend: Backend) {
    let dir = crate::helpers::TempDir::new();
    let db = crate::helpers::TestDb::create(&backend, dir.path()).await;
    crate::cli::migrate(dir.path(), &db.url);
    // Back to the schema before migration 0009, with rows in the outbox.
    for sql in [
        "DROP TRIGGER ses_push_counts_insert",
        "DROP TRIGGER ses_push_counts_update",
        "DROP TRIGGER ses_push_counts_delete",
    ] {
        db.execute(&if db.is_sqlite() {
            sql.to_owned()
        } else {
            format!("{sql} ON ses_suppression_sync")
        })
        .await;
    }
    if !db.is_sqlite() {
        db.execute("DROP FUNCTION ses_push_counts_changed()").await;
        db.execute("DROP TABLE ses_push_count_changes").await;
    }
    for sql in [
        "DROP TABLE ses_push_counts",
        "DROP INDEX ses_suppression_sync_last_done",
        "DELETE FROM _sqlx_migrations WHERE version = 9",
    ] {
        db.execute(sql).await;
    }
    db.execute(
        "INSERT INTO ses_suppression_sync (email, action, state, changed_at, done_at) VALUES \
         ('a@example.net', 'put', 'pending', '2026-11-25T08:00:00.000Z', NULL), \
         ('b@example.net', 'put', 'done', '2026-11-25T08:00:00.000Z', '2026-11-25T08:01:00.000Z'), \
         ('c@example.net', 'put', 'done', '2026-11-25T08:00:00.000Z', '2026-11-25T08:02:00.000Z'), \
         ('d@example.net', 'delete', 'skipped', '2026-11-25T08:00:00.000Z', '2026-11-25T08:03:00.000Z'), \
         ('e@example.net', 'put', 'refused', '2026-11-25T08:00:00.000Z', '2026-11-25T08:04:00.000Z')",
    )
    .await;
    // The upgrade says what it did: one migration, to the newest version.
    let ran = crate::cli::run_with(dir.path(), &db.url, &["migrate"]);
    assert_eq!(ran.code, 0, "{ran}");
    let (_, version) = backend.migrations();
    assert!(
        ran.stdout.starts_with("applied 1 migration to the "),
        "{ran}"
    );
    assert!(
        ran.stdout
            .ends_with(&format!("; its schema is now version {version}\n")),
        "{ran}"
    );
    assert_eq!(kept_counts(&db).await, [1, 2, 1, 1]);

    // As the triggers on `suppressions` queue a change: one row new, one
    // confirmed row pending again.
    db.execute(
        "INSERT INTO ses_suppression_sync (email, action, state, changed_at) VALUES \
         ('b@example.net', 'delete', 'pending', '2026-11-25T09:00:00.000Z'), \
         ('f@example.net', 'put', 'pending', '2026-11-25T09:00:00.000Z') \
         ON CONFLICT (email) DO UPDATE SET action = excluded.action, seq = ses_suppression_sync.seq + 1, \
         state = 'pending', changed_at = excluded.changed_at",
    )
    .await;
    assert_eq!(kept_counts(&db).await, [3, 1, 1, 1]);
    // A lease is not a change of state; a refusal ends one.
    db.execute("UPDATE ses_suppression_sync SET lease_until = changed_at, attempts = attempts + 1")
        .await;
    db.execute("UPDATE ses_suppression_sync SET state = 'refused' WHERE email = 'a@example.net'")
        .await;
    assert_eq!(kept_counts(&db).await, [2, 1, 1, 2]);
    db.execute("DELETE FROM ses_suppression_sync WHERE state IN ('done', 'skipped')")
        .await;
    assert_eq!(kept_counts(&db).await, [2, 0, 0, 2]);
}

/// Every table dropped and made again by `bouncer migrate` under the
/// running service, as after `DROP DATABASE` and `CREATE DATABASE` (the
/// service's connections stay open here, which only makes it harder).
async fn made_again(app: &TestApp) {
    match &app.db.pool {
        Pool::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            let drops: String = tables.iter().map(|t| format!("DROP TABLE {t};")).collect();
            // One connection for the pragma and the drops.
            app.db
                .execute(&format!("PRAGMA foreign_keys = OFF; {drops}"))
                .await;
        }
        Pool::Postgres(_) => {
            app.db
                .execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                .await;
        }
    }
    let (dir, url) = (app.dir.path().to_owned(), app.db.url.clone());
    tokio::task::spawn_blocking(move || crate::cli::migrate(&dir, &url))
        .await
        .expect("migrate ran");
}

/// A database dropped and made again under a running `serve` (then
/// migrated, as the README says) holds only the migrations' defaults:
/// pushing off, no rules recorded. The service writes its settings back
/// within seconds, so pushing resumes by itself, what the list changed in
/// between reaches SES too, and `bouncer status` reads the service's rules.
/// (Before: pushing stayed off, silently, until a restart.)
async fn a_database_made_again_under_the_service_gets_its_settings_back(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Bounce).await;
    checked(&app).await;
    made_again(&app).await;
    // Most likely before the service has looked (every 2 s): these are
    // queued when it writes the setting back.
    add(&app, "meanwhile@example.net").await;
    add(&app, "changed-mind@example.net").await;
    remove(&app, "changed-mind@example.net").await;
    assert_status(
        &app.post(&bounce("Permanent", "General", "bounced@example.net", AT))
            .await,
        200,
        "stored",
    );
    eventually("the suppressions made meanwhile are put at SES", || async {
        ["meanwhile@example.net", "bounced@example.net"]
            .iter()
            .all(|email| {
                calls_about(&api, email)
                    .iter()
                    .any(|(operation, _)| *operation == "PutSuppressedDestination")
            })
    })
    .await;
    eventually("the removal made meanwhile is deleted at SES", || async {
        calls_about(&api, "changed-mind@example.net")
            .last()
            .is_some_and(|(operation, _)| *operation == "DeleteSuppressedDestination")
    })
    .await;
    assert_eq!(ses_state(&app).await["push"]["enabled"], true);
    eventually("the rules are recorded again", || async {
        app.db
            .scalar("SELECT COUNT(*) FROM apply_settings", None)
            .await
            == 1
    })
    .await;
    let status = cli_status(&app);
    assert!(
        !status.contains("no bouncer serve has recorded"),
        "{status}"
    );
    app.stop().await;
    api.stop().await;
}

/// The write-back alone, since the test above cannot tell whether the
/// service looked before or after its changes were made: in a database
/// whose setting no `serve` wrote (made again, then changed from the CLI,
/// which follows the database: off), turning pushing back on queues a put
/// for each suppression but SES's own, and a delete for each removal of an
/// address not listed again; the kept counts follow. A second write-back
/// (another replica that saw the same) queues nothing.
async fn writing_pushing_back_queues_what_the_list_changed_meanwhile(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    for args in [
        &["suppressions", "add", "kept@example.net"][..],
        &["suppressions", "add", "gone@example.net"],
        &[
            "suppressions",
            "remove",
            "gone@example.net",
            "--by",
            "carol",
            "--reason",
            "asked",
        ],
        &["suppressions", "add", "back@example.net"],
        &[
            "suppressions",
            "remove",
            "back@example.net",
            "--by",
            "carol",
            "--reason",
            "asked",
        ],
        &["suppressions", "add", "back@example.net"],
    ] {
        let ran = run_with(dir.path(), &db.url, args);
        assert_eq!(ran.code, 0, "{args:?}: {ran}");
    }
    db.execute(
        "INSERT INTO suppressions (email, reason, first_seen_at, last_seen_at, event_count, source) \
         VALUES ('listed@example.net', 'bounce', '2026-11-25T08:00:00.000Z', '2026-11-25T08:00:00.000Z', 1, 'ses-account')",
    )
    .await;
    let outbox = "SELECT COUNT(*) FROM ses_suppression_sync";
    assert_eq!(db.scalar(outbox, None).await, 0, "pushing was off");
    let store = Store::open(&test_settings(&db.url, dir.path()), Access::Write)
        .await
        .expect("the store opens");
    let now = Timestamp::parse_rfc3339("2026-11-25T09:00:00Z").expect("time");
    assert_eq!(
        store.restore_ses_push(now).await.expect("written back"),
        Some((2, 1))
    );
    assert!(store.ses_push_on().await.expect("read"));
    for (email, action) in [
        ("kept@example.net", Some("put")),
        ("back@example.net", Some("put")),
        ("gone@example.net", Some("delete")),
        ("listed@example.net", None),
    ] {
        assert_eq!(
            db.text(
                "SELECT action FROM ses_suppression_sync WHERE email = $1 AND state = 'pending'",
                email
            )
            .await
            .as_deref(),
            action,
            "{email}"
        );
    }
    assert_eq!(kept_counts(&db).await, [3, 0, 0, 0]);
    assert_eq!(store.restore_ses_push(now).await.expect("read"), None);
    assert_eq!(db.scalar(outbox, None).await, 3);
}

on_both_databases!(
    writing_pushing_back_queues_what_the_list_changed_meanwhile,
    a_database_made_again_under_the_service_gets_its_settings_back,
    each_change_of_the_list_is_put_or_deleted_at_ses_with_its_reason,
    a_refused_push_is_recorded_counted_and_alerted_once,
    ses_ends_as_the_latest_change_of_an_address,
    the_outbox_counts_agree_with_its_rows_after_every_change,
    an_upgraded_outbox_starts_its_counts_from_its_rows,
);

/// On PostgreSQL a transaction that changes the outbox and stays open (a
/// `bouncer suppressions import` while pushing is on, a DBA's session)
/// holds nothing the writer needs: a bounce for another address is stored
/// as ever, not held past its write time limit into the spool. (Counts
/// updated in place by the triggers locked them until that commit: an
/// independent review found it before it landed.) The worker folds the
/// changes into the counts as it goes, and they still agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outbox_transaction_does_not_hold_up_intake() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::None).await;
    checked(&app).await;
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .expect("another client");
    sqlx::Executor::execute(&mut other, "BEGIN")
        .await
        .expect("begin");
    for sql in [
        "INSERT INTO ses_suppression_sync (email, action, state, changed_at) \
         VALUES ('held@example.net', 'put', 'pending', now())",
        "UPDATE ses_suppression_sync SET state = 'done', done_at = now() \
         WHERE email = 'held@example.net'",
    ] {
        sqlx::Executor::execute(&mut other, sql)
            .await
            .expect("an open change of the outbox");
    }
    let started = std::time::Instant::now();
    assert_status(
        &app.post(&bounce("Permanent", "General", "meanwhile@example.net", AT))
            .await,
        200,
        "stored",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the bounce waited {:?} behind another transaction",
        started.elapsed()
    );
    eventually("its push is confirmed meanwhile", || async {
        app.db
            .scalar(
                "SELECT COUNT(*) FROM ses_suppression_sync WHERE email = $1 AND state = 'done'",
                Some("meanwhile@example.net"),
            )
            .await
            == 1
    })
    .await;
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["ses"]["push"]["done"], 1, "{sending}");
    sqlx::Executor::execute(&mut other, "COMMIT")
        .await
        .expect("commit");
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["ses"]["push"]["done"], 2, "{sending}");
    eventually("the worker folds the changes", || async {
        app.db
            .scalar("SELECT COUNT(*) FROM ses_push_count_changes", None)
            .await
            == 0
    })
    .await;
    assert_eq!(outbox_reported_as_it_is(&app, "folded").await, [0, 2, 0, 0]);
    app.stop().await;
    api.stop().await;
}
