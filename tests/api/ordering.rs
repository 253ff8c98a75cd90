//! A batch's events are applied in arrival order, and the guard's check
//! serializes with every concurrent writer, also when two replicas' batches
//! land in different hourly buckets.

use std::sync::Arc;

use bouncer::clock::Clock;
use bouncer::time::Timestamp;
use serde_json::json;
use sqlx::{Connection, Executor};

use crate::feedback::{delivery, is_suppressed};
use crate::guard::{deliveries, hard_bounces};
use crate::helpers::{
    Backend, Pool, TempDir, TestApp, assert_status, eventually, spawn_app_behind_forwarder,
    spawn_app_with, spooled_bytes, start, take_database_away, test_settings,
};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC, unique_id};

fn soft_bounce(recipient: &str, at: &str) -> Msg {
    bounce(("Transient", "MailboxFull"), recipient, at)
}

fn hard_bounce(recipient: &str, at: &str) -> Msg {
    bounce(("Permanent", "General"), recipient, at)
}

fn bounce((kind, sub): (&str, &str), recipient: &str, at: &str) -> Msg {
    let status = if kind == "Permanent" {
        "5.1.1"
    } else {
        "4.2.2"
    };
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind, "bounceSubType": sub,
            "bouncedRecipients": [{"emailAddress": recipient, "status": status}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

fn iso(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("time")
}

/// A delivery that arrived before a soft bounce, in the same batch, resets
/// the streak before the bounce counts (so the address is not suppressed).
async fn a_delivery_before_a_soft_bounce_in_one_batch_resets_first(backend: Backend) {
    let (app, outage) = spawn_app_behind_forwarder(backend, |_, _| {}).await;
    let who = "streak@example.com";
    let now = time::OffsetDateTime::now_utc();
    for minutes in [40, 30] {
        let at = iso(now - time::Duration::minutes(minutes));
        assert_status(&app.post(&soft_bounce(who, &at)).await, 200, "stored");
    }
    // The next two wait in the spool, so the drain applies them in one
    // batch, in the order they arrived.
    let away = take_database_away(&app, &outage).await;
    let delivered = delivery(who, &iso(now - time::Duration::minutes(20)));
    let bounced = soft_bounce(who, &iso(now - time::Duration::minutes(10)));
    assert_status(&app.post(&delivered).await, 202, "spooled");
    assert_status(&app.post(&bounced).await, 202, "spooled");
    away.give_back().await;
    eventually("the spool is applied", || async {
        spooled_bytes(&app.settings.spool_path) == 0 && app.db.total_messages().await == 4
    })
    .await;
    assert!(
        !is_suppressed(&app, who).await,
        "the delivery reset the streak before the third bounce"
    );
    assert_eq!(
        app.db
            .scalar("SELECT count FROM soft_bounces WHERE email = $1", Some(who))
            .await,
        1
    );
    app.stop().await;
}

on_both_databases!(a_delivery_before_a_soft_bounce_in_one_batch_resets_first);

/// Found by an outside trial: soft bounces that came in one batch
/// suppressed their address once, however many they were, so the row's
/// `event_count` (and a new row's note) depended on how messages happened
/// to share commits. One batch (the drain's) now gives what they would have
/// given one at a time, in the order they happened: six bounces of a new
/// address write the row at the third ("3 soft bounces") and count four
/// events; five more of an address already listed count five.
async fn soft_bounces_in_one_batch_count_as_they_would_one_at_a_time(backend: Backend) {
    let (app, outage) = spawn_app_behind_forwarder(backend, |_, _| {}).await;
    let now = time::OffsetDateTime::now_utc();
    let ago = |minutes: i64| iso(now - time::Duration::minutes(minutes));
    let (fresh, listed_before) = ("six@example.com", "listed@example.com");
    for minutes in [90, 80, 70] {
        assert_status(
            &app.post(&soft_bounce(listed_before, &ago(minutes))).await,
            200,
            "stored",
        );
    }
    let row = listed(&app, listed_before).await.expect("listed");
    assert_eq!(row["event_count"], 1);
    let away = take_database_away(&app, &outage).await;
    let mut spooled = 0;
    for minutes in (1..=6).rev() {
        assert_status(
            &app.post(&soft_bounce(fresh, &ago(minutes * 5))).await,
            202,
            "spooled",
        );
        spooled += 1;
    }
    for minutes in (1..=5).rev() {
        assert_status(
            &app.post(&soft_bounce(listed_before, &ago(minutes * 5)))
                .await,
            202,
            "spooled",
        );
        spooled += 1;
    }
    away.give_back().await;
    eventually("the spool is applied", || async {
        spooled_bytes(&app.settings.spool_path) == 0 && app.db.total_messages().await == 3 + spooled
    })
    .await;
    let row = listed(&app, fresh).await.expect("suppressed");
    assert_eq!(row["event_count"], 4, "{row}");
    assert_eq!(row["note"], "3 soft bounces within 14 days");
    let row = listed(&app, listed_before).await.expect("listed");
    assert_eq!(row["event_count"], 6, "{row}");
    app.stop().await;
}

on_both_databases!(soft_bounces_in_one_batch_count_as_they_would_one_at_a_time);

/// The row `GET /v1/suppressions/{email}` answers, or `None` (404).
pub(crate) async fn listed(app: &TestApp, email: &str) -> Option<serde_json::Value> {
    let (status, body) = app
        .api(
            reqwest::Method::GET,
            &format!("/v1/suppressions/{email}"),
            None,
        )
        .await;
    (status == 200)
        .then(|| body["suppression"].clone())
        .or_else(|| {
            assert_eq!(status, 404, "{body}");
            None
        })
}

/// Soft bounces count in the order they happened, whatever the order they
/// arrive in (a drained spool, SNS's retries, a replay): three spread over
/// two months never suppress, three within the window always do, with the
/// newest one's details, and a delivery resets those before it even when it
/// arrived first.
async fn soft_bounces_count_in_the_order_they_happened(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("nanos");
    let ago = |minutes: i64| iso(now - time::Duration::minutes(minutes));
    let day = 24 * 60;
    for minutes in [0, 30 * day, 60 * day] {
        let sent = app
            .post(&soft_bounce("span@example.com", &ago(minutes)))
            .await;
        assert_status(&sent, 200, "stored");
    }
    assert_eq!(
        listed(&app, "span@example.com").await,
        None,
        "two months apart"
    );
    for minutes in [0, 13 * day, 20 * day] {
        app.post(&soft_bounce("wide@example.com", &ago(minutes)))
            .await;
    }
    assert_eq!(
        listed(&app, "wide@example.com").await,
        None,
        "20 days apart"
    );

    for minutes in [8, 9, 10] {
        app.post(&soft_bounce("close@example.com", &ago(minutes)))
            .await;
    }
    let row = listed(&app, "close@example.com")
        .await
        .expect("three within the window");
    assert_eq!(
        row["first_seen_at"],
        Timestamp::parse_rfc3339(&ago(10)).expect("t").to_text()
    );
    assert_eq!(
        row["last_seen_at"],
        Timestamp::parse_rfc3339(&ago(8)).expect("t").to_text()
    );
    assert_eq!(row["note"], "3 soft bounces within 14 days");

    // The delivery (45 minutes ago) arrives before the bounces around it.
    app.post(&delivery("alive@example.com", &ago(45))).await;
    for minutes in [50, 40, 30] {
        app.post(&soft_bounce("alive@example.com", &ago(minutes)))
            .await;
    }
    assert_eq!(
        listed(&app, "alive@example.com").await,
        None,
        "two after the delivery"
    );
    app.post(&soft_bounce("alive@example.com", &ago(20))).await;
    let row = listed(&app, "alive@example.com")
        .await
        .expect("three after the delivery");
    assert_eq!(
        row["first_seen_at"],
        Timestamp::parse_rfc3339(&ago(40)).expect("t").to_text()
    );
    app.stop().await;
}

on_both_databases!(soft_bounces_count_in_the_order_they_happened);

/// An operator's removal ends a streak: three soft bounces list the
/// address, the operator takes it off, and one more soft bounce after the
/// removal is one in its streak, not four, so the address stays off.
async fn soft_bounces_before_a_removal_by_hand_do_not_count_again(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let who = "removed-streak@example.com";
    let now = time::OffsetDateTime::now_utc();
    for minutes in [50, 40, 30] {
        let at = iso(now - time::Duration::minutes(minutes));
        assert_status(&app.post(&soft_bounce(who, &at)).await, 200, "stored");
    }
    assert!(
        listed(&app, who).await.is_some(),
        "three soft bounces list it"
    );
    assert_eq!(remove_by_hand(&app, who).await, 200);
    assert_eq!(listed(&app, who).await, None);
    let after = iso(time::OffsetDateTime::now_utc() + time::Duration::seconds(1));
    assert_status(&app.post(&soft_bounce(who, &after)).await, 200, "stored");
    assert_eq!(
        listed(&app, who).await,
        None,
        "one soft bounce since the removal"
    );
    app.stop().await;
}

on_both_databases!(soft_bounces_before_a_removal_by_hand_do_not_count_again);

/// Three soft bounces within the window and a delivery dated after them
/// suppress the address whichever arrives first: applied in the order they
/// happened, the third bounce suppressed it before the delivery, and a
/// delivery does not lift a suppression (an outside trial found the
/// delivery arriving first kept the address off the list, and arriving
/// last did not).
async fn a_delivery_after_a_full_window_does_not_undo_it_in_any_order(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("nanos");
    let ago = |minutes: i64| iso(now - time::Duration::minutes(minutes));
    // The moment as a suppression row shows it.
    let shown = |minutes: i64| {
        Timestamp::parse_rfc3339(&ago(minutes))
            .expect("t")
            .to_text()
    };
    let bounces_first = "bounces-first@example.com";
    let delivery_first = "delivery-first@example.com";
    for minutes in [180, 160, 140] {
        assert_status(
            &app.post(&soft_bounce(bounces_first, &ago(minutes))).await,
            200,
            "stored",
        );
    }
    assert_status(
        &app.post(&delivery(bounces_first, &ago(20))).await,
        200,
        "stored",
    );
    assert_status(
        &app.post(&delivery(delivery_first, &ago(20))).await,
        200,
        "stored",
    );
    for minutes in [180, 160, 140] {
        assert_status(
            &app.post(&soft_bounce(delivery_first, &ago(minutes))).await,
            200,
            "stored",
        );
    }
    for who in [bounces_first, delivery_first] {
        let row = listed(&app, who).await.expect("suppressed");
        assert_eq!(row["note"], "3 soft bounces within 14 days", "{who}");
        assert_eq!(row["last_seen_at"], shown(140), "{who}");
    }
    // Bounces 15, 13, 2 and half a day old fill two windows: the row
    // begins with the earliest, whichever bounce arrives last.
    let day = 24 * 60;
    for (who, order) in [
        (
            "oldest-last@example.com",
            [13 * day, 2 * day, day / 2, 15 * day],
        ),
        (
            "middle-last@example.com",
            [15 * day, 2 * day, day / 2, 13 * day],
        ),
        (
            "newest-last@example.com",
            [15 * day, 13 * day, 2 * day, day / 2],
        ),
    ] {
        for minutes in order {
            app.post(&soft_bounce(who, &ago(minutes))).await;
        }
        let row = listed(&app, who).await.expect("suppressed");
        assert_eq!(
            (&row["first_seen_at"], &row["last_seen_at"]),
            (&json!(shown(15 * day)), &json!(shown(day / 2))),
            "{who}"
        );
    }
    // The delivery started a new streak: one more bounce counts alone.
    for who in [bounces_first, delivery_first] {
        app.post(&soft_bounce(who, &ago(10))).await;
        assert_eq!(
            app.db
                .scalar("SELECT count FROM soft_bounces WHERE email = $1", Some(who))
                .await,
            1,
            "{who}"
        );
    }
    app.stop().await;
}

on_both_databases!(a_delivery_after_a_full_window_does_not_undo_it_in_any_order);

/// An app and a second replica on the same PostgreSQL database, or none
/// without PostgreSQL.
async fn two_replicas() -> Option<(TestApp, TestApp)> {
    let backend = Backend::postgres().await?;
    let app = spawn_app_with(backend, |_, _| {}).await;
    let dir2 = Arc::new(TempDir::new());
    let settings2 = test_settings(&app.db.url, dir2.path());
    let replica = start(settings2, Default::default(), app.db.clone(), dir2).await;
    Some((app, replica))
}

/// Until two replicas' writers (`bouncer-writer` in pg_stat_activity) wait
/// on a lock the test holds: then they go on together when it is released.
async fn both_writers_wait_on_a_lock(pool: &sqlx::PgPool, what: &str) {
    eventually(what, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'bouncer-writer' AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("activity");
        waiting == 2
    })
    .await;
}

/// Neither replica retried a batch: PostgreSQL had no deadlock to break.
async fn no_batch_lost_a_deadlock(app: &TestApp, replica: &TestApp) {
    assert_eq!(
        (
            crate::pg_faults::retries_metric(app).await,
            crate::pg_faults::retries_metric(replica).await
        ),
        (0.0, 0.0),
        "no batch lost a deadlock"
    );
}

/// Two replicas whose batches fall in different hours (one just before the
/// turn, one just after) each add hard bounces that alone stay under the
/// pause line and together pass it. Their rate checks wait for each other,
/// so the second sees the first's counts and pauses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_crossing_the_turn_of_the_hour_pause_together() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let turn = now
        .replace_minute(0)
        .expect("minute")
        .replace_second(0)
        .expect("second")
        .replace_nanosecond(0)
        .expect("nanos")
        + time::Duration::HOUR;
    let before = Clock::fixed(Timestamp::from_datetime(turn - time::Duration::seconds(1)));
    let after = Clock::fixed(Timestamp::from_datetime(turn + time::Duration::seconds(1)));
    let guard = |s: &mut bouncer::config::Settings| {
        s.guard_min_volume = 10;
        s.guard_warn = false;
    };
    let app = spawn_app_with(backend, {
        let before = before.clone();
        move |s, hooks| {
            guard(s);
            hooks.clock = before;
        }
    })
    .await;
    let dir2 = Arc::new(TempDir::new());
    let mut settings2 = test_settings(&app.db.url, dir2.path());
    guard(&mut settings2);
    let hooks2 = bouncer::app::Hooks {
        clock: after,
        ..Default::default()
    };
    let replica = start(settings2, hooks2, app.db.clone(), dir2).await;
    // 100 sends; 3 hard bounces on each replica: 3 of 103 is under 5% on
    // its own, 6 of 106 is over.
    assert_status(&app.post(&deliveries(100)).await, 200, "stored");
    let Pool::Postgres(pool) = &app.db.pool else {
        unreachable!()
    };
    // Hold the state's table until both batches have added their counts
    // and wait to read it: then both check at once, as two replicas do.
    let mut dba = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    dba.execute("BEGIN").await.expect("begin");
    dba.execute("LOCK TABLE sending_state IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let (first, second) = (hard_bounces(3), hard_bounces(3));
    let posts = futures_util::future::join(app.post(&first), replica.post(&second));
    let release = async {
        both_writers_wait_on_a_lock(pool, "both batches wait to check the rates").await;
        dba.execute("COMMIT").await.expect("release");
    };
    let ((a, b), ()) = futures_util::future::join(posts, release).await;
    assert_status(&a, 200, "stored");
    assert_status(&b, 200, "stored");
    let buckets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_buckets")
        .fetch_one(pool)
        .await
        .expect("buckets");
    assert_eq!(buckets, 2, "the two batches counted in two hours");
    let state: String = sqlx::query_scalar("SELECT state FROM sending_state")
        .fetch_one(pool)
        .await
        .expect("state");
    assert_eq!(state, "paused");
    let pauses: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE kind = 'paused'")
        .fetch_one(pool)
        .await
        .expect("alerts");
    assert_eq!(pauses, 1);
    replica.stop().await;
    app.stop().await;
}

/// Two replicas given the same messages at once, one in the order sent and
/// the other in reverse, their batches released together: every message is
/// stored once, and both lock in key order, so PostgreSQL never has a
/// deadlock to break (no batch retried on either replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_given_the_same_messages_store_each_once_without_deadlock() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    let Pool::Postgres(pool) = &app.db.pool else {
        unreachable!()
    };
    let mut stored = 0;
    for _round in 0..4 {
        let msgs: Vec<Msg> = (0..64).map(|_| hard_bounces(1)).collect();
        // Hold inserts into sns_messages until both writers wait with
        // their batches, then let them go at once.
        let mut dba = sqlx::PgConnection::connect(&app.db.url)
            .await
            .expect("connect");
        dba.execute("BEGIN").await.expect("begin");
        dba.execute("LOCK TABLE sns_messages IN SHARE MODE")
            .await
            .expect("lock");
        let in_order = futures_util::future::join_all(msgs.iter().map(|m| app.post(m)));
        let reversed = futures_util::future::join_all(msgs.iter().rev().map(|m| replica.post(m)));
        let posts = futures_util::future::join(in_order, reversed);
        let release = async {
            both_writers_wait_on_a_lock(pool, "both writers wait with a batch").await;
            // The rest of each round queues up behind the first batch.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            dba.execute("COMMIT").await.expect("release");
        };
        let ((first, second), ()) = futures_util::future::join(posts, release).await;
        for (status, body) in first.iter().chain(&second) {
            assert_eq!(*status, 200, "{body}");
            match body["status"].as_str() {
                Some("stored") => stored += 1,
                Some("duplicate") => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert_eq!(stored, 256, "each message stored by exactly one replica");
    assert_eq!(app.db.total_messages().await, 256);
    no_batch_lost_a_deadlock(&app, &replica).await;
    replica.stop().await;
    app.stop().await;
}

/// Two replicas each store a soft bounce of the same address at once, the
/// third within the window with one stored before: whichever counts second
/// waits for the first's lock on the address and then reads its bounce
/// from the event log, so the address is suppressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_counting_one_address_at_once_see_each_others_bounces() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    let Pool::Postgres(pool) = &app.db.pool else {
        unreachable!()
    };
    let who = "twice@example.com";
    let now = time::OffsetDateTime::now_utc();
    let ago = |minutes: i64| iso(now - time::Duration::minutes(minutes));
    assert_status(&app.post(&soft_bounce(who, &ago(30))).await, 200, "stored");
    // Hold the address's streak row until both writers wait for it with
    // their bounce written to the log, then let them go together.
    let mut dba = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    dba.execute("BEGIN").await.expect("begin");
    dba.execute("SELECT 1 FROM soft_bounces WHERE email = 'twice@example.com' FOR UPDATE")
        .await
        .expect("lock");
    let (first, second) = (soft_bounce(who, &ago(20)), soft_bounce(who, &ago(10)));
    let posts = futures_util::future::join(app.post(&first), replica.post(&second));
    let release = async {
        both_writers_wait_on_a_lock(pool, "both writers wait for the streak").await;
        dba.execute("COMMIT").await.expect("release");
    };
    let ((a, b), ()) = futures_util::future::join(posts, release).await;
    assert_status(&a, 200, "stored");
    assert_status(&b, 200, "stored");
    let row = listed(&app, who)
        .await
        .expect("the third bounce suppresses");
    assert_eq!(row["note"], "3 soft bounces within 14 days");
    assert_eq!(
        row["last_seen_at"],
        Timestamp::parse_rfc3339(&ago(10)).expect("t").to_text()
    );
    replica.stop().await;
    app.stop().await;
}

/// Found by an outside trial of three replicas: a batch deleted the streaks
/// its deliveries reset and then locked those of its soft bounces, each
/// statement in address order but not one order across both. One replica
/// given a soft bounce of `a` and a delivery to `b` in one batch, the other
/// a delivery to `a` and a soft bounce of `b`, each held the row the other
/// wanted next: PostgreSQL broke the deadlock after a second by failing a
/// batch, retried. Each round holds both writers' first batch (a hard
/// bounce) so that the pair queues into one batch, then holds both second
/// batches (one at the streaks' table, the other behind it) and lets them
/// go together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_resetting_and_counting_crosswise_never_deadlock() {
    let Some((app, replica)) = two_replicas().await else {
        return;
    };
    let Pool::Postgres(pool) = &app.db.pool else {
        unreachable!()
    };
    let now = time::OffsetDateTime::now_utc();
    let ago = |minutes: i64| iso(now - time::Duration::minutes(minutes));
    for round in 0..3 {
        let (a, b) = (
            format!("cross-a{round}@example.com"),
            format!("cross-b{round}@example.com"),
        );
        for who in [&a, &b] {
            assert_status(&app.post(&soft_bounce(who, &ago(30))).await, 200, "stored");
        }
        let connect = || sqlx::PgConnection::connect(&app.db.url);
        let (mut inserts, mut streaks) = (
            connect().await.expect("connect"),
            connect().await.expect("connect"),
        );
        inserts.execute("BEGIN").await.expect("begin");
        inserts
            .execute("LOCK TABLE sns_messages IN SHARE MODE")
            .await
            .expect("lock");
        let blockers = [
            hard_bounce(&format!("first-{round}-1@example.com"), &ago(5)),
            hard_bounce(&format!("first-{round}-2@example.com"), &ago(5)),
        ];
        let held = futures_util::future::join(app.post(&blockers[0]), replica.post(&blockers[1]));
        let pairs = async {
            both_writers_wait_on_a_lock(pool, "both writers hold a first batch").await;
            futures_util::future::join(
                futures_util::future::join(
                    app.post(&soft_bounce(&a, &ago(20))),
                    app.post(&delivery(&b, &ago(10))),
                ),
                futures_util::future::join(
                    replica.post(&delivery(&a, &ago(10))),
                    replica.post(&soft_bounce(&b, &ago(20))),
                ),
            )
            .await
        };
        let gates = async {
            both_writers_wait_on_a_lock(pool, "both writers hold a first batch").await;
            // The pairs queue up behind the first batches.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            streaks.execute("BEGIN").await.expect("begin");
            streaks
                .execute("LOCK TABLE soft_bounces IN SHARE MODE")
                .await
                .expect("lock");
            inserts.execute("COMMIT").await.expect("release");
            for blocker in &blockers {
                let id = blocker.id();
                eventually("the first batches commit", || async {
                    app.db.count_messages(&id).await == 1
                })
                .await;
            }
            both_writers_wait_on_a_lock(pool, "both second batches wait at the streaks").await;
            streaks.execute("COMMIT").await.expect("release");
        };
        let ((first, (ours, theirs)), ()) =
            futures_util::future::join(futures_util::future::join(held, pairs), gates).await;
        for answer in [first.0, first.1, ours.0, ours.1, theirs.0, theirs.1] {
            assert_status(&answer, 200, "stored");
        }
    }
    no_batch_lost_a_deadlock(&app, &replica).await;
    replica.stop().await;
    app.stop().await;
}

/// An app on PostgreSQL with `who` suppressed by a hard bounce dated
/// `minutes` ago, and a session of the test's own holding `lock` in an open
/// transaction; none without PostgreSQL.
async fn listed_and_held(
    who: &str,
    minutes: i64,
    lock: &'static str,
) -> Option<(TestApp, sqlx::PgConnection)> {
    let backend = Backend::postgres().await?;
    let app = spawn_app_with(backend, |_, _| {}).await;
    let at = iso(time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes));
    assert_status(&app.post(&hard_bounce(who, &at)).await, 200, "stored");
    assert!(listed(&app, who).await.is_some());
    let mut dba = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    dba.execute("BEGIN").await.expect("begin");
    dba.execute(lock).await.expect("lock");
    Some((app, dba))
}

/// `DELETE /v1/suppressions/{who}`, as an operator removes an address.
async fn remove_by_hand(app: &TestApp, who: &str) -> u16 {
    app.client
        .delete(format!(
            "{}/v1/suppressions/{who}?by=carol&reason=asked",
            app.admin_address
        ))
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

/// An address removed by hand while an older bounce of it is being
/// stored (PostgreSQL, where the two run at once): the bounce happened
/// before the removal, so whichever commits first, the address stays off
/// the list and the bounce is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_racing_an_older_bounce_keeps_the_address_off() {
    let who = "raced@example.com";
    // Hold the address's row so that the removal and the late bounce both
    // wait for it, the removal first; then let them go.
    let lock = "SELECT 1 FROM suppressions WHERE email = 'raced@example.com' FOR UPDATE";
    let Some((app, mut dba)) = listed_and_held(who, 30, lock).await else {
        return;
    };
    let Pool::Postgres(pool) = &app.db.pool else {
        unreachable!()
    };
    let late_at = iso(time::OffsetDateTime::now_utc() - time::Duration::minutes(20));
    let waiting = |n: i64| {
        eventually("sessions wait on a lock", move || async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .expect("activity");
            waiting == n
        })
    };
    let removal = remove_by_hand(&app, who);
    let late = async {
        waiting(1).await;
        app.post(&hard_bounce(who, &late_at)).await
    };
    let release = async {
        waiting(2).await;
        dba.execute("COMMIT").await.expect("release");
    };
    let (removed, stored, ()) = futures_util::future::join3(removal, late, release).await;
    assert_eq!(removed, 200);
    assert_status(&stored, 200, "stored");
    assert_eq!(
        listed(&app, who).await,
        None,
        "the bounce happened before the removal"
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE email = $1",
                Some(who)
            )
            .await,
        2,
        "both bounces are in the log"
    );
    app.stop().await;
}

/// Writers queue behind a removal that waits for its lock, so it does not
/// wait long: behind a long transaction on the list (a CSV import, say) it
/// is answered 503, to retry, and the address stays listed until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_behind_a_long_transaction_is_answered_503_to_retry() {
    let who = "held@example.com";
    let lock = "LOCK TABLE suppressions IN ROW EXCLUSIVE MODE";
    let Some((app, mut dba)) = listed_and_held(who, 5, lock).await else {
        return;
    };
    let (status, body) = app
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/suppressions/{who}?by=carol&reason=asked"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("list_busy")),
        "{body}"
    );
    assert!(listed(&app, who).await.is_some());
    dba.execute("COMMIT").await.expect("release");
    assert_eq!(remove_by_hand(&app, who).await, 200);
    assert_eq!(listed(&app, who).await, None);
    app.stop().await;
}
