//! PostgreSQL's transient failures, caused for real: a read-only standby
//! after a fail-over, an administrator's shutdown of the connection, a
//! deadlock, a serialization failure, and a table lock held past the write
//! time limit. None answers 500 and none loses a message: each is retried
//! or spooled and applied once.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};

use crate::feedback::delivery;
use crate::helpers::{Backend, TestApp, assert_status, eventually, spawn_app_with, spooled_bytes};
use crate::signing::{Msg, TOPIC, now_text, unique_id};

async fn postgres() -> Option<Backend> {
    Backend::postgres().await
}

/// Another client's own connection to bouncer's database (not from the
/// test's pool, whose close would wait for it).
async fn other_client(app: &TestApp) -> PgConnection {
    PgConnection::connect(&app.db.url)
        .await
        .expect("another client")
}

/// Begins a transaction on `conn` that holds `tables` in ACCESS EXCLUSIVE
/// mode (an operator's `LOCK TABLE`, a `VACUUM FULL`, a migration's DDL)
/// until the test rolls it back.
async fn lock_out(conn: &mut PgConnection, tables: &str) {
    conn.execute("BEGIN").await.expect("begin");
    conn.execute(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"
    )))
    .await
    .expect("lock");
}

fn database_name(app: &TestApp) -> String {
    app.db
        .url
        .rsplit_once('/')
        .map(|(_, name)| name.to_owned())
        .unwrap_or_default()
}

/// A connection to the server's `postgres` database, for what a DBA does.
async fn dba(app: &TestApp) -> PgConnection {
    let server = app
        .db
        .url
        .rsplit_once('/')
        .map(|(s, _)| s)
        .unwrap_or_default();
    PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("DBA connection")
}

/// Ends every session bouncer holds on its database (what a fail-over or
/// `pg_terminate_backend` does to it).
async fn terminate_bouncer_sessions(app: &TestApp) {
    let mut dba = dba(app).await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name LIKE 'bouncer%'",
    )
    .bind(database_name(app))
    .execute(&mut dba)
    .await
    .expect("terminate");
}

async fn alter_database(app: &TestApp, setting: &str) {
    let mut dba = dba(app).await;
    dba.execute(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} {setting}",
        database_name(app)
    )))
    .await
    .expect("ALTER DATABASE");
}

pub async fn retries_metric(app: &TestApp) -> f64 {
    let (_, metrics) = app.admin_get("/metrics").await;
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("bouncer_write_retries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn messages(n: usize, tag: &str) -> Vec<Msg> {
    (0..n)
        .map(|i| Msg::notification(TOPIC, &format!("{tag} {i}")).sign())
        .collect()
}

async fn all_stored_once(app: &TestApp, msgs: &[Msg]) {
    for msg in msgs {
        let id = msg.id();
        eventually("the message reaches the database", || async {
            app.db.count_messages(&id).await == 1
        })
        .await;
    }
    eventually("the spool empties", || async {
        spooled_bytes(&app.settings.spool_path) == 0
    })
    .await;
    assert!(!app.settings.spool_path.join("set-aside.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_standby_after_a_fail_over_spools_until_writes_are_taken_again() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.database_write_timeout_ms = 2000).await;
    // The primary fails over to a standby that refuses writes (25006).
    alter_database(&app, "SET default_transaction_read_only = on").await;
    terminate_bouncer_sessions(&app).await;
    let during = messages(3, "read-only");
    for msg in &during {
        assert_status(&app.post(msg).await, 202, "spooled");
    }
    assert_eq!(app.db.total_messages().await, 0);
    assert_eq!(app.get("/readyz").await.0, 503);
    // A writable primary again.
    alter_database(&app, "RESET default_transaction_read_only").await;
    all_stored_once(&app, &during).await;
    app.stop().await;
}

/// A database that refuses new connections (`ALLOW_CONNECTIONS false`, as
/// before maintenance) is an outage, not the messages' fault: they wait in
/// the spool, none is set aside, and the API says 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refusing_connections_spools_and_sets_nothing_aside() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |_, _| {}).await;
    alter_database(&app, "ALLOW_CONNECTIONS false").await;
    terminate_bouncer_sessions(&app).await;
    let during = messages(8, "refusing");
    for msg in &during {
        assert_status(&app.post(msg).await, 202, "spooled");
    }
    // The drain has tried them against the refusing database by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.get("/readyz").await.0, 503);
    let (status, body) = app.admin_get("/v1/sending").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("database_unavailable"))
    );
    assert!(!app.settings.spool_path.join("set-aside.jsonl").exists());
    alter_database(&app, "ALLOW_CONNECTIONS true").await;
    all_stored_once(&app, &during).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_shutdown_of_the_connection_loses_nothing() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |_, _| {}).await;
    let before = messages(1, "before");
    assert_status(&app.post(&before[0]).await, 200, "stored");
    // 57P01 on the writer's connection.
    terminate_bouncer_sessions(&app).await;
    let after = messages(5, "after");
    let answers = futures_util::future::join_all(after.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert!(matches!(answer.0, 200 | 202), "{answer:?}");
    }
    all_stored_once(&app, &after).await;
    app.stop().await;
}

/// A bounce for two recipients: its two events are written in one
/// statement, in key order.
fn bounce_for_two(feedback_id: &str) -> Msg {
    let at = now_text();
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}],
            "timestamp": at, "feedbackId": feedback_id,
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "destination": ["a@example.com", "b@example.com"]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

async fn insert_event(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feedback_events (event_key, sns_message_id, event_type, format, ses_message_id, \
         action, occurred_at, received_at) VALUES ($1, 'other', 'Bounce', 'classic', 'other', 'suppress', now(), now())",
    )
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retried_as_a_batch() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |_, _| {}).await;
    let feedback_id = format!("fb-{}", unique_id());
    let msg = bounce_for_two(&feedback_id);
    // Another transaction holds the second event's key...
    let mut other = other_client(&app).await;
    other.execute("BEGIN").await.expect("begin");
    // ...and is not the one PostgreSQL picks to break the deadlock.
    other
        .execute("SET LOCAL deadlock_timeout = '10s'")
        .await
        .expect("deadlock_timeout");
    insert_event(&mut other, &format!("bounce:{feedback_id}:b@example.com"))
        .await
        .expect("hold b");
    let post = {
        let (address, body) = (app.address.clone(), msg.body());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{address}/sns"))
                .header("x-amz-sns-message-type", "Notification")
                .body(body)
                .send()
                .await
                .expect("request");
            crate::helpers::answer(response).await
        })
    };
    // The writer has taken a@ and waits for b@; taking a@ now closes the
    // cycle. The writer's session detects it first and loses (40P01).
    tokio::time::sleep(Duration::from_millis(300)).await;
    insert_event(&mut other, &format!("bounce:{feedback_id}:a@example.com"))
        .await
        .expect("the other transaction gets a@ once the writer's is rolled back");
    other.execute("ROLLBACK").await.expect("rollback");
    let answer = post.await.expect("answer");
    assert_status(&answer, 200, "stored");
    assert!(retries_metric(&app).await >= 1.0);
    assert!(crate::feedback::is_suppressed(&app, "a@example.com").await);
    assert!(crate::feedback::is_suppressed(&app, "b@example.com").await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_is_retried() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |_, _| {}).await;
    // Some operators run every transaction SERIALIZABLE.
    alter_database(&app, "SET default_transaction_isolation = 'serializable'").await;
    terminate_bouncer_sessions(&app).await;
    let first = delivery("one@example.com", &now_text());
    let answer = app.post(&first).await;
    assert!(matches!(answer.0, 200 | 202), "{answer:?}");
    eventually("the first delivery is stored", || async {
        app.db.count_messages(&first.id()).await == 1
    })
    .await;
    let mut other = other_client(&app).await;
    other
        .execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .await
        .expect("begin");
    other
        .execute("UPDATE rate_buckets SET sends = sends + 1")
        .await
        .expect("update the hour's counts");
    let second = delivery("two@example.com", &now_text());
    let post = {
        let (address, body) = (app.address.clone(), second.body());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{address}/sns"))
                .header("x-amz-sns-message-type", "Notification")
                .body(body)
                .send()
                .await
                .expect("request");
            crate::helpers::answer(response).await
        })
    };
    // The writer waits on the hour's row; the other commits first, so the
    // writer's transaction cannot be serialized (40001).
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.execute("COMMIT").await.expect("commit");
    assert_status(&post.await.expect("answer"), 200, "stored");
    assert!(retries_metric(&app).await >= 1.0);
    let sends = app
        .db
        .scalar("SELECT CAST(SUM(sends) AS BIGINT) FROM rate_buckets", None)
        .await;
    assert_eq!(sends, 3, "two deliveries and the other transaction's one");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_write_time_limit_spools_instead_of_hanging() {
    let Some(backend) = postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.database_write_timeout_ms = 1000).await;
    let mut other = other_client(&app).await;
    lock_out(&mut other, "sns_messages").await;
    let first = messages(1, "meets the lock");
    let started = Instant::now();
    assert_status(&app.post(&first[0]).await, 202, "spooled");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the first message waited {took:?}; SNS gives up after about 15 s"
    );
    let more = messages(10, "while locked");
    let started = Instant::now();
    for answer in futures_util::future::join_all(more.iter().map(|m| app.post(m))).await {
        assert_status(&answer, 202, "spooled");
    }
    assert!(started.elapsed() < Duration::from_millis(800));
    tokio::time::sleep(Duration::from_secs(2)).await;
    other.execute("ROLLBACK").await.expect("release");
    drop(other);
    all_stored_once(&app, &[first, more].concat()).await;
    app.stop().await;
}

/// The page opened while the database refuses connections says why, and
/// loads by itself once the database is back: a 503 means "retry", and a
/// person who opened the page then should not have to know to click
/// Refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_opened_during_an_outage_loads_once_the_database_is_back() {
    let Some(backend) = postgres().await else {
        return;
    };
    let Some(browser) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app_with(backend, |_, _| {}).await;
    crate::ses_suppressions::add(&app, "erin@example.com").await;
    alter_database(&app, "ALLOW_CONNECTIONS false").await;
    terminate_bouncer_sessions(&app).await;
    crate::page::open_page(&browser, &app).await;
    let shown = browser
        .wait_for(
            "the load error",
            "!document.getElementById('load-error').hidden && document.getElementById('load-error').textContent",
        )
        .await;
    assert!(
        shown
            .as_str()
            .unwrap_or_default()
            .starts_with("Could not load"),
        "{shown}"
    );
    alter_database(&app, "ALLOW_CONNECTIONS true").await;
    browser
        .wait_for(
            "the list, without a click",
            "document.getElementById('load-error').hidden \
             && document.querySelectorAll('#suppression-table tbody tr').length === 1",
        )
        .await;
    app.stop().await;
}

/// A lock that keeps readers out (an operator's `LOCK TABLE ... IN ACCESS
/// EXCLUSIVE MODE`, a `VACUUM FULL`, another replica's migration): every
/// API call answers 503 once it has waited as long as it would for a
/// connection, a removal `list_busy` after its second. An outside trial
/// saw a check and a removal wait for as long as the lock was held
/// (270 s), every later call queued behind; a single look-up and the page
/// waited too. All work again once the lock is gone, and the refused
/// calls changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_keeps_readers_out_is_answered_not_waited_out() {
    /// How long the test holds each lock at most: a call still waiting
    /// then is one that would have waited it out.
    const LOCK_HELD: Duration = Duration::from_secs(10);
    use reqwest::Method;
    let Some(backend) = postgres().await else {
        return;
    };
    let app = crate::suppression_api::app_with_token(backend).await;
    let check = || {
        app.api(
            Method::POST,
            "/v1/suppressions/check",
            Some(json!({"addresses": ["a@example.com", "b@example.com"]})),
        )
    };
    let add_b = || {
        app.api(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"email": "b@example.com"})),
        )
    };
    let (status, _) = app
        .api(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(status, 201);
    let mut dba = other_client(&app).await;
    lock_out(&mut dba, "suppressions").await;
    // Every call on the list at once: each is answered within the wait
    // for a connection (500 ms in the tests), none waits out the lock.
    let started = Instant::now();
    let all = async {
        tokio::join!(
            check(),
            app.api(Method::GET, "/v1/suppressions/a@example.com", None),
            app.api(Method::GET, "/v1/suppressions?limit=10", None),
            add_b(),
            app.api(
                Method::DELETE,
                "/v1/suppressions/a@example.com?reason=test",
                None
            ),
        )
    };
    let (checked, one, page, added, removal) = tokio::time::timeout(LOCK_HELD, all)
        .await
        .expect("every call answered while the lock was held");
    let waited = started.elapsed();
    for answer in [&checked, &one, &page, &added] {
        crate::helpers::assert_refused(answer, 503, "database_unavailable");
    }
    crate::helpers::assert_refused(&removal, 503, "list_busy");
    assert!(
        waited < Duration::from_secs(5),
        "answered while the lock was held: {waited:?}"
    );
    // A lock passes: the client is told to ask again in a second.
    assert_eq!(
        retry_after(&app, "/v1/suppressions/a@example.com").await,
        (503, Some("1".to_owned()))
    );
    // The operator's side, on the state row's table.
    dba.execute("ROLLBACK").await.expect("rollback");
    lock_out(&mut dba, "sending_state").await;
    let started = Instant::now();
    let both = async {
        tokio::join!(
            app.api(Method::GET, "/v1/sending", None),
            app.api(
                Method::PUT,
                "/v1/sending",
                Some(json!({"state": "paused", "reason": "test"})),
            ),
        )
    };
    let (state, paused) = tokio::time::timeout(LOCK_HELD, both)
        .await
        .expect("both calls answered while the lock was held");
    let waited = started.elapsed();
    crate::helpers::assert_refused(&state, 503, "database_unavailable");
    crate::helpers::assert_refused(&paused, 503, "database_unavailable");
    assert!(
        waited < Duration::from_secs(5),
        "answered while the lock was held: {waited:?}"
    );
    dba.execute("ROLLBACK").await.expect("rollback");

    // Nothing was changed by the refused calls, and all work again.
    let (status, body) = check().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suppressed"][0]["address"], "a@example.com");
    assert_eq!(body["suppressed"].as_array().map(Vec::len), Some(1));
    let (status, body) = app
        .api(Method::GET, "/v1/suppressions/a@example.com", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.api(Method::GET, "/v1/sending", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "active", "{body}");
    let (status, body) = add_b().await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

/// The pool's sessions give up on a lock after DATABASE_ACQUIRE_TIMEOUT_MS
/// (the test above); a migration does not: it waits for another replica's
/// migration, and for the readers its own DDL must outlast, as long as the
/// database's own `lock_timeout` lets it. Here the migrations table is
/// locked: a read gives up on a lock at once, a migration waits three
/// times as long and then finishes; with an operator's `lock_timeout` on
/// the database, the migration gives up on it and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_out_a_lock_that_a_read_gives_up_on() {
    use crate::helpers::{TempDir, TestDb, test_settings};
    use bouncer::address::EmailAddress;
    use bouncer::store::{Access, Store};
    let Some(backend) = postgres().await else {
        return;
    };
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    let settings = test_settings(&db.url, dir.path());
    let wait = Duration::from_millis(settings.database_acquire_timeout_ms);
    let store = Store::open(&settings, Access::Create)
        .await
        .expect("the store opens");
    store.migrate().await.expect("the first migration");
    // A pooled connection before the lock, so that the read below waits
    // for the lock, not for a connection.
    store.ping().await.expect("the pool connects");
    let mut dba = PgConnection::connect(&db.url)
        .await
        .expect("another client");
    let tables = "_sqlx_migrations, suppressions";
    lock_out(&mut dba, tables).await;
    let jane = EmailAddress::parse("jane@example.com").expect("an address");
    let read = tokio::time::timeout(wait * 3, store.suppression(&jane))
        .await
        .expect("the read gave up on the lock");
    assert!(
        read.as_ref().is_err_and(|e| e.is_lock_timeout()),
        "a read under the lock: {read:?}"
    );
    let migrating = store.migrate();
    tokio::pin!(migrating);
    assert!(
        tokio::time::timeout(wait * 3, migrating.as_mut())
            .await
            .is_err(),
        "the migration ended while the lock was held"
    );
    dba.execute("ROLLBACK").await.expect("rollback");
    let migrated = migrating.await.expect("migrates once the lock is gone");
    assert_eq!(migrated.applied, 0);
    assert_eq!(store.suppression(&jane).await.expect("a read"), None);

    // The operator's own limit for the database holds for migrations.
    let name = db
        .url
        .rsplit_once('/')
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default();
    dba.execute(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" SET lock_timeout = '200ms'"
    )))
    .await
    .expect("alter database");
    lock_out(&mut dba, tables).await;
    let refused = tokio::time::timeout(wait * 3, store.migrate())
        .await
        .expect("the migration gave up on the lock");
    dba.execute("ROLLBACK").await.expect("rollback");
    let told = format!("{:#}", refused.expect_err("the migration gave up"));
    assert!(told.contains("lock held elsewhere"), "{told}");
    store.close().await;
    drop(dba);
    drop(db);
}

/// A `GET` of `path` on the admin API: its status and `Retry-After`.
async fn retry_after(app: &crate::helpers::TestApp, path: &str) -> (u16, Option<String>) {
    let answer = app
        .client
        .get(format!("{}{path}", app.admin_address))
        .bearer_auth(crate::suppression_api::TOKEN)
        .send()
        .await
        .expect("an answer");
    let hint = answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (answer.status().as_u16(), hint)
}

/// PostgreSQL hangs (its connections open, nothing answered): every API
/// call answers 503 `database_unavailable` in bounded time, not as long as
/// the hang lasts, and nothing refused is changed; all work again once the
/// database answers. What bounds them is the pool: it tries an idle
/// connection before handing it out, within DATABASE_ACQUIRE_TIMEOUT_MS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_during_a_hang_are_answered_not_held() {
    use reqwest::Method;
    /// How long the test keeps the database hung at most.
    const HUNG: Duration = Duration::from_secs(20);
    let Some(backend) = postgres().await else {
        return;
    };
    let (app, outage) = crate::helpers::spawn_app_behind_forwarder(backend, |s, _| {
        s.api_tokens = vec![format!("backend:{}", crate::suppression_api::TOKEN)];
    })
    .await;
    let (status, _) = app
        .api(
            Method::POST,
            "/v1/suppressions",
            Some(json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(status, 201);
    outage.hang();
    let started = Instant::now();
    let all = async {
        tokio::join!(
            app.api(
                Method::POST,
                "/v1/suppressions/check",
                Some(json!({"addresses": ["a@example.com"]})),
            ),
            app.api(Method::GET, "/v1/suppressions/a@example.com", None),
            app.api(Method::GET, "/v1/suppressions?limit=10", None),
            app.api(
                Method::POST,
                "/v1/suppressions",
                Some(json!({"email": "b@example.com"})),
            ),
            app.api(
                Method::DELETE,
                "/v1/suppressions/a@example.com?reason=test",
                None
            ),
            app.api(Method::GET, "/v1/sending", None),
            app.api(Method::GET, "/v1/rates/history", None),
            app.api(Method::GET, "/v1/alerts", None),
        )
    };
    let answers = tokio::time::timeout(HUNG, all)
        .await
        .expect("every call answered while the database hung");
    let waited = started.elapsed();
    let (checked, one, page, added, removal, sending, history, alerts) = answers;
    for answer in [
        &checked, &one, &page, &added, &removal, &sending, &history, &alerts,
    ] {
        crate::helpers::assert_refused(answer, 503, "database_unavailable");
    }
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // An outage gives no hint: the client's own backoff is the guide.
    assert_eq!(
        retry_after(&app, "/v1/suppressions/a@example.com").await,
        (503, None)
    );
    outage.restore();
    crate::helpers::eventually("the list answers again", || async {
        app.api(Method::GET, "/v1/suppressions/a@example.com", None)
            .await
            .0
            == 200
    })
    .await;
    let (status, body) = app
        .api(Method::GET, "/v1/suppressions/b@example.com", None)
        .await;
    assert_eq!(status, 404, "{body}");
    app.stop().await;
}

/// An export to a file that fails halfway (here on a lock held elsewhere)
/// leaves the file an earlier export wrote as it was, and no partial file
/// beside it; it said why in one line. Writing the file directly had cut
/// it to its header. To standard output it writes nothing, not a header
/// that reads as an empty list. Once the lock is gone the export replaces
/// the file: through its symlink, keeping its mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_the_earlier_export_as_it_was() {
    use crate::cli::{bouncer, run, test_env};
    let Some(backend) = postgres().await else {
        return;
    };
    let app = crate::suppression_api::app_with_token(backend).await;
    let (status, _) = app
        .api(
            reqwest::Method::POST,
            "/v1/suppressions",
            Some(json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(status, 201);
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::helpers::TempDir::new();
    let path = dir.path().join("list.csv");
    let real = dir.path().join("real.csv");
    let earlier = "email,reason\nearlier@example.com,bounce\n";
    std::fs::write(&real, earlier).expect("the earlier export");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::symlink(&real, &path).expect("a link");
    let export_to = |output: &str| {
        let mut cmd = bouncer(dir.path());
        test_env(&mut cmd, &app.db.url, dir.path());
        cmd.env("DATABASE_ACQUIRE_TIMEOUT_MS", "500").args([
            "suppressions",
            "export",
            "--output",
            output,
        ]);
        run(&mut cmd)
    };
    let export = || export_to(path.to_str().unwrap_or_default());
    let mut dba = other_client(&app).await;
    lock_out(&mut dba, "suppressions").await;
    let refused = export();
    let to_stdout = export_to("-");
    dba.execute("ROLLBACK").await.expect("rollback");
    assert_ne!(to_stdout.code, 0, "{to_stdout}");
    assert_eq!(to_stdout.stdout, "", "{to_stdout}");
    assert_ne!(refused.code, 0, "{refused}");
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused}");
    assert!(refused.stderr.contains("lock held elsewhere"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("the file"),
        earlier,
        "{refused}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let exported = export();
    assert_eq!(exported.code, 0, "{exported}");
    assert_eq!(exported.stderr.trim(), "exported 1 row", "{exported}");
    let csv = std::fs::read_to_string(&path).expect("the file");
    assert!(csv.contains("\na@example.com,manual,"), "{csv}");
    assert!(!csv.contains("earlier@example.com"), "{csv}");
    let link = std::fs::symlink_metadata(&path).expect("the link");
    assert!(link.file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&real).expect("the target"), csv);
    let mode = std::fs::metadata(&real)
        .expect("the target")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let to_stdout = export_to("-");
    assert_eq!(to_stdout.code, 0, "{to_stdout}");
    assert_eq!(to_stdout.stdout, csv);
    // Not a file: written directly, nothing replaced.
    let through_dev = export_to("/dev/stdout");
    assert_eq!(through_dev.code, 0, "{through_dev}");
    assert_eq!(through_dev.stdout, csv);
    let dangling = dir.path().join("dangling.csv");
    let missing = dir.path().join("missing.csv");
    std::os::unix::fs::symlink(&missing, &dangling).expect("a link");
    let through_link = export_to(dangling.to_str().unwrap_or_default());
    assert_eq!(through_link.code, 0, "{through_link}");
    assert!(
        std::fs::symlink_metadata(&dangling)
            .expect("the link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(&missing).expect("written through"),
        csv
    );
    app.stop().await;
}

/// `serve` starting while a lock held elsewhere keeps its migration
/// waiting (a long transaction on `_sqlx_migrations`; the same for any
/// table a migration changes): it gives up on the lock after a second,
/// answers, and spools what SNS sends; its writer migrates and applies
/// the spool once the lock is gone. Before, it waited for as long as the
/// lock was held, answering nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_whose_migration_waits_starts_and_spools() {
    let Some(backend) = postgres().await else {
        return;
    };
    let (db, dir, settings, hooks) = crate::helpers::spawn_app(backend).await.stop().await;
    let mut dba = PgConnection::connect(&db.url)
        .await
        .expect("another client");
    lock_out(&mut dba, "_sqlx_migrations").await;
    let started = Instant::now();
    let app = tokio::time::timeout(
        Duration::from_secs(20),
        crate::helpers::start(settings, hooks, db, dir),
    )
    .await
    .expect("serve started while the lock was held");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let msg = delivery("waiting@example.com", &now_text());
    assert_status(&app.post(&msg).await, 202, "spooled");
    dba.execute("ROLLBACK").await.expect("rollback");
    eventually("the spool is applied", || async {
        app.db.count_messages(&msg.id()).await == 1
    })
    .await;
    app.stop().await;
}
