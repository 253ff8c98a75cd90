//! Mail SES did not send (event publishing): a `Send` event counts every
//! recipient of the mail, and SES's later word that a recipient was on the
//! account's suppression list (an `OnAccountSuppressionList` bounce or
//! complaint), or that the whole mail was rejected (`Reject`) or its
//! template did not render (`Rendering Failure`), takes the send back,
//! once, from the hour it was counted in. SES counts none of them.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::guard::days_unlike_their_hours;
use crate::helpers::{
    Backend, TempDir, TestApp, assert_status, spawn_app_with, start, test_settings,
};
use crate::on_both_databases;
use crate::page::{hour_ago, time_literal};
use crate::ses_account::{metrics, set_sending};
use crate::signing::{Msg, TOPIC, unique_id};

const AT: &str = "2026-11-25T08:00:00.000Z";

/// One mail: its SES message id and its recipients.
struct Mail {
    id: String,
    to: Vec<String>,
}

impl Mail {
    fn new(recipients: usize) -> Mail {
        let tag = unique_id();
        Mail {
            id: format!("ses-{tag}"),
            to: (0..recipients)
                .map(|i| format!("r{i}-{tag}@example.com"))
                .collect(),
        }
    }

    /// An event of this mail as a configuration set publishes it; every
    /// call is a new SNS message.
    fn event(&self, event_type: &str, detail: (&str, Value)) -> Msg {
        let mut ses = json!({
            "eventType": event_type,
            "mail": {"timestamp": AT, "messageId": self.id, "source": "a@signals.example", "destination": self.to},
        });
        ses[detail.0] = detail.1;
        Msg::notification(TOPIC, &ses.to_string()).sign()
    }

    /// The Send event: every recipient sent to. `at` is the event's own
    /// time (SES's copies of one event share it).
    fn sent(&self, at: &str) -> Msg {
        self.event("Send", ("send", json!({"timestamp": at})))
    }

    /// A bounce of `who`, under a feedbackId of its own.
    fn bounce(&self, subtype: &str, who: &[String]) -> Msg {
        let kind = if subtype == "OnAccountSuppressionList" || subtype == "General" {
            "Permanent"
        } else {
            "Transient"
        };
        let recipients: Vec<Value> = who
            .iter()
            .map(|r| json!({"emailAddress": r, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1"}))
            .collect();
        self.event(
            "Bounce",
            (
                "bounce",
                json!({"bounceType": kind, "bounceSubType": subtype, "bouncedRecipients": recipients,
                       "timestamp": AT, "feedbackId": format!("fb-{}", unique_id())}),
            ),
        )
    }

    /// SES's word that `who` is on the account's suppression list.
    fn listed(&self, who: &[String]) -> Msg {
        self.bounce("OnAccountSuppressionList", who)
    }

    fn listed_complaint(&self, who: &str) -> Msg {
        self.event(
            "Complaint",
            (
                "complaint",
                json!({"complainedRecipients": [{"emailAddress": who}], "timestamp": AT,
                       "feedbackId": format!("fb-{}", unique_id()), "complaintSubType": "OnAccountSuppressionList"}),
            ),
        )
    }

    /// A Reject of the whole mail; `at` is the event's own time.
    fn rejected(&self, at: &str) -> Msg {
        self.event(
            "Reject",
            ("reject", json!({"reason": "Bad content", "timestamp": at})),
        )
    }

    fn not_rendered(&self) -> Msg {
        self.event(
            "Rendering Failure",
            (
                "failure",
                json!({"templateName": "welcome", "errorMessage": "Attribute 'name' is not present in the rendering data."}),
            ),
        )
    }

    fn delivered(&self, who: &[String]) -> Msg {
        self.event(
            "Delivery",
            (
                "delivery",
                json!({"timestamp": AT, "recipients": who, "smtpResponse": "250 ok"}),
            ),
        )
    }
}

async fn post_ok(app: &TestApp, msg: &Msg) {
    assert_status(&app.post(msg).await, 200, "stored");
}

/// The window's sends and whether deliveries made the volume known, as
/// `GET /v1/sending` shows them.
async fn sends(app: &TestApp) -> (i64, bool) {
    let (status, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{sending}");
    (
        sending["rates"]["sends"].as_i64().unwrap_or(-1),
        sending["rates"]["volume_known"].as_bool().unwrap_or(false),
    )
}

async fn state_of(app: &TestApp) -> Value {
    app.admin_get("/v1/sending").await.1
}

/// No hour or day holds a negative count, and every day is the sum of its
/// hours.
async fn counts_are_whole(app: &TestApp) {
    let negative = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM rate_buckets WHERE sends < 0 OR delivery_sends < 0",
            None,
        )
        .await;
    assert_eq!(negative, 0, "hours with negative counts");
    assert_eq!(
        days_unlike_their_hours(&app.db).await,
        0,
        "days unlike their hours"
    );
}

/// The trial's case: 1,000 real sends, 500 to listed addresses, 60 hard
/// bounces. SES reads 6%, over the 5% line; counting the listed mail as
/// sent read 4.0% and never paused.
async fn mail_to_the_accounts_suppression_list_is_not_counted_as_sent(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let mail = Mail::new(1500);
    let (real, listed) = mail.to.split_at(1000);
    post_ok(&app, &mail.sent(AT)).await;
    assert_eq!(sends(&app).await, (1500, true));
    post_ok(&app, &mail.listed(listed)).await;
    assert_eq!(
        sends(&app).await,
        (1000, true),
        "the 500 listed were never sent"
    );
    post_ok(&app, &mail.listed_complaint(&listed[0])).await;
    assert_eq!(sends(&app).await, (1000, true), "taken back once");
    // The operator sees how many: mail that went to listed addresses.
    let text = metrics(&app).await;
    assert!(
        text.lines()
            .any(|l| l == "bouncer_sends_taken_back_total 500"),
        "{text}"
    );
    post_ok(&app, &mail.bounce("General", &real[..50])).await;
    assert_eq!(state_of(&app).await["state"], "active", "50 of 1,000 is 5%");
    post_ok(&app, &mail.bounce("General", &real[50..60])).await;
    let sending = state_of(&app).await;
    assert_eq!(sending["state"], "paused", "{sending}");
    assert_eq!(
        (
            sending["at_last_pause"]["sends"].as_i64(),
            sending["at_last_pause"]["hard_bounces"].as_i64()
        ),
        (Some(1000), Some(60)),
        "{sending}"
    );
    counts_are_whole(&app).await;
    app.stop().await;
}

/// Every order and every repeat of SES's words: a send is taken back once,
/// a pair SES said was not sent never counts, and a mail rejected whole
/// takes back what its Send event counted.
async fn a_send_is_taken_back_once_whatever_the_order(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let mail = Mail::new(3);
    post_ok(&app, &mail.sent(AT)).await;
    assert_eq!(sends(&app).await, (3, true));
    let first = mail.to[..1].to_vec();
    post_ok(&app, &mail.listed(&first)).await;
    assert_eq!(sends(&app).await, (2, true));
    // The same word again under a new feedbackId, as a complaint, and
    // with the whole mail rejected: only the two still counted go.
    post_ok(&app, &mail.listed(&first)).await;
    post_ok(&app, &mail.listed_complaint(&first[0])).await;
    assert_eq!(sends(&app).await, (2, true), "the first recipient once");
    post_ok(&app, &mail.rejected(AT)).await;
    assert_eq!(
        sends(&app).await,
        (0, false),
        "nothing sent, and no delivery known"
    );
    // Another Reject event (its own time): a new event, nothing to take.
    post_ok(&app, &mail.rejected("2026-11-25T08:00:02.000Z")).await;
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE event_type = 'Reject'",
                None
            )
            .await,
        2
    );
    // A later Send event of the mail (another of its own time) and a
    // delivery do not count what SES said was not sent.
    post_ok(&app, &mail.sent("2026-11-25T08:00:01.000Z")).await;
    post_ok(&app, &mail.delivered(&mail.to[1..2])).await;
    assert_eq!(sends(&app).await, (0, false));

    // The word first, the Send event after it.
    let other = Mail::new(2);
    post_ok(&app, &other.listed(&other.to[..1])).await;
    assert_eq!(sends(&app).await, (0, false));
    post_ok(&app, &other.sent(AT)).await;
    assert_eq!(
        sends(&app).await,
        (1, true),
        "only the recipient not listed"
    );
    post_ok(&app, &other.delivered(&other.to)).await;
    assert_eq!(sends(&app).await, (1, true));

    // A template that did not render: the mail was not sent.
    let templated = Mail::new(2);
    post_ok(&app, &templated.sent(AT)).await;
    assert_eq!(sends(&app).await, (3, true));
    post_ok(&app, &templated.not_rendered()).await;
    assert_eq!(sends(&app).await, (1, true));

    // Both at once: however the writer batches them, the same.
    let both = Mail::new(4);
    let (sent, listed) = (both.sent(AT), both.listed(&both.to[..2]));
    let (a, b) = tokio::join!(app.post(&sent), app.post(&listed));
    assert_status(&a, 200, "stored");
    assert_status(&b, 200, "stored");
    assert_eq!(sends(&app).await, (3, true));
    counts_are_whole(&app).await;
    app.stop().await;
}

/// Moves everything counted so far into the hour `hour` (text), as if it
/// had arrived then (`rate_volume` and `rate_buckets` are documented
/// tables): the hours counted so far (two, if the test ran across the turn
/// of an hour) become that one.
async fn age_counts(app: &TestApp, hour: &str) {
    let hour = time_literal(&app.db, hour);
    app.db
        .execute(&format!("UPDATE rate_volume SET seen_at = {hour}"))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             SELECT {hour}, CAST(SUM(sends) AS BIGINT), CAST(SUM(hard_bounces) AS BIGINT), \
             CAST(SUM(complaints) AS BIGINT), CAST(SUM(delivery_sends) AS BIGINT) FROM rate_buckets"
        ))
        .await;
    app.db
        .execute(&format!(
            "DELETE FROM rate_buckets WHERE bucket_start <> {hour}"
        ))
        .await;
}

/// The sends and delivery sends of the hour `hour` (text), as
/// `sends/delivery`.
async fn hour_sends(app: &TestApp, hour: &str) -> Option<String> {
    let sql = if app.db.is_sqlite() {
        "SELECT CAST(sends AS TEXT) || '/' || CAST(delivery_sends AS TEXT) FROM rate_buckets \
         WHERE bucket_start = $1"
    } else {
        "SELECT CAST(sends AS TEXT) || '/' || CAST(delivery_sends AS TEXT) FROM rate_buckets \
         WHERE bucket_start = CAST($1 AS timestamptz)"
    };
    app.db.text(sql, hour).await
}

/// A send counted hours ago is taken back from its own hour, and the
/// guard asks the rates again: a take-back alone can push them over the
/// line.
async fn a_send_counted_hours_ago_is_taken_back_from_its_hour(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let mail = Mail::new(1030);
    let (real, listed) = mail.to.split_at(1010);
    post_ok(&app, &mail.sent(AT)).await;
    post_ok(&app, &mail.bounce("General", &real[..51])).await;
    assert_eq!(
        state_of(&app).await["state"],
        "active",
        "51 of 1,030 is 4.95%"
    );
    let aged = hour_ago(2);
    age_counts(&app, &aged).await;
    assert_eq!(hour_sends(&app, &aged).await.as_deref(), Some("1030/1030"));
    post_ok(&app, &mail.listed(listed)).await;
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM rate_buckets", None)
            .await,
        1,
        "no bucket for this hour: nothing was counted in it"
    );
    assert_eq!(hour_sends(&app, &aged).await.as_deref(), Some("1010/1010"));
    let sending = state_of(&app).await;
    assert_eq!(
        sending["state"], "paused",
        "51 of 1,010 is 5.05%: {sending}"
    );
    assert_eq!(sending["at_last_pause"]["sends"], 1010, "{sending}");
    counts_are_whole(&app).await;
    // The hour's bucket gone (pruned, or deleted by hand): a take-back
    // writes no bucket of its own, and no negative count.
    app.db.execute("DELETE FROM rate_buckets").await;
    post_ok(&app, &mail.listed(&real[100..110])).await;
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM rate_buckets", None)
            .await,
        0
    );
    counts_are_whole(&app).await;
    app.stop().await;
}

/// The guard's window reaches back to the hour of its maximum age: a send
/// counted in that hour is taken back, one counted before it is in no
/// window and stays as it was.
async fn a_take_back_reaches_back_as_far_as_the_window(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.guard_warn = false;
        s.guard_max_age_days = 1;
    })
    .await;
    let (oldest, older) = (hour_ago(24), hour_ago(26));
    let old = Mail::new(10);
    post_ok(&app, &old.sent(AT)).await;
    age_counts(&app, &older).await;
    let edge = Mail::new(10);
    post_ok(&app, &edge.sent(AT)).await;
    let at = time_literal(&app.db, &oldest);
    let aged = time_literal(&app.db, &older);
    app.db
        .execute(&format!(
            "UPDATE rate_volume SET seen_at = {at} WHERE mail_id = '{}'",
            edge.id
        ))
        .await;
    app.db
        .execute(&format!(
            "UPDATE rate_buckets SET bucket_start = {at} WHERE bucket_start <> {aged}"
        ))
        .await;
    assert_eq!(sends(&app).await, (10, true), "the window's oldest hour");
    post_ok(&app, &edge.listed(&edge.to)).await;
    post_ok(&app, &old.listed(&old.to)).await;
    assert_eq!(hour_sends(&app, &oldest).await.as_deref(), Some("0/0"));
    assert_eq!(hour_sends(&app, &older).await.as_deref(), Some("10/10"));
    assert_eq!(sends(&app).await, (0, false));
    counts_are_whole(&app).await;
    app.stop().await;
}

/// Counting starts afresh at a resume; a send counted before it is in no
/// window since, so taking it back would undercount the new one.
async fn a_send_counted_before_a_resume_stays_out_of_the_new_count(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let before = Mail::new(2);
    post_ok(&app, &before.sent(AT)).await;
    set_sending(&app, "paused").await;
    set_sending(&app, "active").await;
    assert_eq!(sends(&app).await.0, 0, "counting starts afresh");
    let after = Mail::new(1000);
    post_ok(&app, &after.sent(AT)).await;
    assert_eq!(sends(&app).await, (1000, true));
    post_ok(&app, &before.listed(&before.to)).await;
    assert_eq!(sends(&app).await, (1000, true));
    post_ok(&app, &after.listed(&after.to[..10])).await;
    assert_eq!(sends(&app).await, (990, true), "sends since the resume go");
    counts_are_whole(&app).await;
    app.stop().await;
}

/// The service's store, opened beside it as another process would (to
/// hold a resume's transaction open).
async fn store_beside(app: &TestApp) -> (TempDir, bouncer::store::Store) {
    use bouncer::store::{Access, Store};
    let dir = TempDir::new();
    let store = Store::open(&test_settings(&app.db.url, dir.path()), Access::Create)
        .await
        .expect("the store opens");
    (dir, store)
}

/// When a resume held open beside the service makes its change, against
/// a message posted meanwhile.
enum Resume {
    /// Resumed before the message is posted; committed once the batch
    /// waits for the state row.
    Before,
    /// The state row held before; resumed and committed once the batch
    /// waits for it.
    After,
}

/// Pauses, then posts `msg` while a resume by hand, in a transaction of a
/// store opened beside the service, holds the state row (`when` says at
/// which moment it resumes), and commits the resume once the message's
/// batch waits for the row.
async fn post_beside_a_resume(app: &TestApp, msg: &Msg, when: Resume) {
    set_sending(app, "paused").await;
    let (_dir, store) = store_beside(app).await;
    let mut conn = store.connect_writer().await.expect("a connection");
    let mut tx = conn.begin().await.expect("begin");
    match when {
        Resume::Before => resume_now(&mut tx).await,
        Resume::After => {
            bouncer::store::guard::guard_state(&mut tx, true)
                .await
                .expect("the resume holds the state row");
        }
    }
    let (answer, ()) = tokio::join!(app.post(msg), async {
        crate::guard::one_session_waits_for_a_lock(&app.db, "the batch waits for the state row")
            .await;
        if let Resume::After = when {
            resume_now(&mut tx).await;
        }
        tx.commit().await.expect("the resume commits");
    });
    assert_status(&answer, 200, "stored");
    drop(conn);
    store.close().await;
}

/// Resumes in `tx`, at the time now.
async fn resume_now(tx: &mut bouncer::store::Tx<'_>) {
    let now = bouncer::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let resumed =
        bouncer::store::guard::resume(tx, "alice", "drill", now, bouncer::guard::hour_of(now))
            .await
            .expect("the resume");
    assert!(resumed, "the state was paused");
}

/// After a resume: the window counts nothing yet, and 1,000 sends after
/// it are 1,000.
async fn the_new_window_counts_from_the_resume(app: &TestApp) {
    assert_eq!(
        sends(app).await.0,
        0,
        "counting starts afresh at the resume"
    );
    post_ok(app, &crate::guard::deliveries(1000)).await;
    assert_eq!(sends(app).await, (1000, true));
    counts_are_whole(app).await;
}

/// A resume by hand commits while a batch takes sends back (PostgreSQL:
/// the batch read the resume time before the resume committed). The sends
/// counted before the resume are in the resume hour's baseline, so what
/// the batch took back of them goes back in, and the new window counts
/// every send since the resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_committed_during_a_take_back_leaves_the_new_window_whole_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let mail = Mail::new(10);
    post_ok(&app, &mail.sent(AT)).await;
    post_beside_a_resume(&app, &mail.listed(&mail.to), Resume::Before).await;
    the_new_window_counts_from_the_resume(&app).await;
    app.stop().await;
}

/// A resume by hand waits for another replica's batch that holds the
/// state row (between its take-back and its commit), and takes its
/// baseline after that batch: the new window counts every send since the
/// resume. With the baseline read in the statement that waited, it came
/// from before the batch, and the window counted 995 of 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_waiting_for_a_batch_takes_its_baseline_after_it_on_postgres() {
    use sqlx::Connection;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let mail = Mail::new(10);
    post_ok(&app, &mail.sent(AT)).await;
    set_sending(&app, "paused").await;
    let mut other = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    let mut batch = other.begin().await.expect("begin");
    sqlx::query("UPDATE rate_buckets SET sends = sends - 5, delivery_sends = delivery_sends - 5")
        .execute(&mut *batch)
        .await
        .expect("the other replica takes five sends back");
    sqlx::query("SELECT 1 FROM sending_state FOR UPDATE")
        .fetch_one(&mut *batch)
        .await
        .expect("and holds the state row");
    let ((), ()) = tokio::join!(set_sending(&app, "active"), async {
        crate::guard::one_session_waits_for_a_lock(&app.db, "the resume waits for the batch").await;
        batch.commit().await.expect("the batch commits");
    });
    the_new_window_counts_from_the_resume(&app).await;
    app.stop().await;
}

/// The other order: a resume takes the state row first, while a batch
/// that received its messages before it has written its hour and waits
/// for the row. The resume's baseline was read without that batch, so the
/// batch adds its counts to it: the new window counts none of the
/// messages that came before the resume (it counted all 1,000 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_from_before_a_resume_that_commits_after_it_stays_out_of_the_new_window_on_postgres()
 {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    post_beside_a_resume(&app, &crate::guard::deliveries(1000), Resume::After).await;
    the_new_window_counts_from_the_resume(&app).await;
    app.stop().await;
}

/// A resume by hand that has to wait for the state row takes its time
/// once it holds the row: a batch that committed while it waited, with
/// sends counted after the operator asked, is in the resume's baseline
/// and before it, so a later take-back of one of them leaves the new
/// window alone (with the time taken before the wait, 999 of 1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_its_time_once_it_holds_the_state_row_on_postgres() {
    use sqlx::Connection;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    set_sending(&app, "paused").await;
    let mut other = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    let mut batch = other.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sending_state FOR UPDATE")
        .fetch_one(&mut *batch)
        .await
        .expect("another replica's batch holds the state row");
    let mail = Mail::new(1);
    let ((), ()) = tokio::join!(set_sending(&app, "active"), async {
        crate::guard::one_session_waits_for_a_lock(&app.db, "the resume waits for the batch").await;
        // The batch counts a send now, after the operator asked.
        let hour = hour_ago(0);
        sqlx::query(
            "INSERT INTO rate_volume (mail_id, recipient, seen_at, counted) \
             VALUES ($1, $2, clock_timestamp(), 'delivery')",
        )
        .bind(&mail.id)
        .bind(&mail.to[0])
        .execute(&mut *batch)
        .await
        .expect("the batch's send");
        sqlx::query(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             VALUES (CAST($1 AS timestamptz), 1, 0, 0, 1) ON CONFLICT (bucket_start) DO UPDATE SET \
             sends = rate_buckets.sends + 1, delivery_sends = rate_buckets.delivery_sends + 1",
        )
        .bind(hour)
        .execute(&mut *batch)
        .await
        .expect("its hour");
        batch.commit().await.expect("the batch commits");
    });
    assert_eq!(sends(&app).await.0, 0, "the batch is in the baseline");
    post_ok(&app, &crate::guard::deliveries(1000)).await;
    post_ok(&app, &mail.listed(&mail.to)).await;
    assert_eq!(sends(&app).await, (1000, true));
    counts_are_whole(&app).await;
    app.stop().await;
}

/// The same word reaches two replicas at once, under two SNS messages:
/// the send is taken back by one of them only.
async fn two_replicas_take_a_send_back_once(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let dir2 = Arc::new(TempDir::new());
    let mut settings2 = test_settings(&app.db.url, dir2.path());
    settings2.guard_warn = false;
    let replica = start(settings2, Default::default(), app.db.clone(), dir2).await;
    let mail = Mail::new(1200);
    post_ok(&app, &mail.sent(AT)).await;
    let words: Vec<(Msg, Msg)> = mail.to[..200]
        .chunks(5)
        .map(|who| (mail.listed(who), mail.listed(who)))
        .collect();
    let answers = futures_util::future::join_all(
        words
            .iter()
            .flat_map(|(a, b)| [app.post(a), replica.post(b)]),
    )
    .await;
    for answer in &answers {
        assert_status(answer, 200, "stored");
    }
    assert_eq!(sends(&app).await, (1000, true));
    assert_eq!(sends(&replica).await, (1000, true));
    counts_are_whole(&app).await;
    replica.stop().await;
    app.stop().await;
}

/// A batch that takes sends back from an earlier hour of the day and
/// counts its own hour, on PostgreSQL, while another replica's batch holds
/// the own hour and goes on to the day's row (as its upsert's `rate_days`
/// trigger does): the first holds no day while it waits for the hour, so
/// neither waits for the other. Written hour by hour in two statements, it
/// held the day from the earlier hour's trigger, and PostgreSQL found a
/// deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_back_waiting_for_an_hour_holds_no_day_on_postgres() {
    use bouncer::guard::Counts;
    use bouncer::store::guard::{change_hours, day_of};
    use bouncer::time::Timestamp;
    use sqlx::Connection;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (_dir, db, store, _) = crate::guard::migrated_store(&backend, |_| {}).await;
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let day = day_of(now, 2).to_text();
    let at = |hour: usize| format!("{}T{hour:02}:00:00.000Z", &day[..10]);
    crate::page::seed_hour_in(&db, &at(5), 100, 0, 0).await;
    crate::page::seed_hour_in(&db, &at(6), 100, 0, 0).await;
    let mut other = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut replica = other.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM rate_buckets WHERE bucket_start = $1::timestamptz FOR UPDATE")
        .bind(at(6))
        .fetch_one(&mut *replica)
        .await
        .expect("the other replica holds the hour");
    let hour = |text: String| Timestamp::parse_rfc3339(&text).expect("an hour");
    let changes = vec![
        (
            hour(at(5)),
            Counts {
                sends: -3,
                delivery_sends: -3,
                ..Counts::default()
            },
        ),
        (
            hour(at(6)),
            Counts {
                sends: 10,
                delivery_sends: 10,
                ..Counts::default()
            },
        ),
    ];
    let writer_store = store.clone();
    let batch = tokio::spawn(async move {
        let mut conn = writer_store.connect_writer().await.expect("a writer");
        let mut tx = conn.begin().await.expect("begin");
        change_hours(&mut tx, &changes)
            .await
            .expect("the hours change");
        tx.commit().await.expect("commit");
    });
    crate::guard::one_session_waits_for_a_lock(&db, "the batch waits for the hour").await;
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *replica)
        .await
        .expect("a lock timeout");
    // Its upsert of the hour, whose trigger then updates the day.
    sqlx::query(
        "UPDATE rate_buckets SET sends = sends + 1, delivery_sends = delivery_sends + 1 \
         WHERE bucket_start = $1::timestamptz",
    )
    .bind(at(6))
    .execute(&mut *replica)
    .await
    .expect("the other replica's batch takes the day: nobody holds it");
    replica.commit().await.expect("the other replica commits");
    batch.await.expect("the batch commits after it");
    let hours = db
        .text(
            "SELECT string_agg(CAST(sends AS TEXT), ',' ORDER BY bucket_start) FROM rate_buckets WHERE $1 <> ''",
            "-",
        )
        .await;
    assert_eq!(hours.as_deref(), Some("97,111"));
    assert_eq!(crate::guard::days_unlike_their_hours(&db).await, 0);
    store.close().await;
}

on_both_databases!(
    mail_to_the_accounts_suppression_list_is_not_counted_as_sent,
    a_send_is_taken_back_once_whatever_the_order,
    a_send_counted_hours_ago_is_taken_back_from_its_hour,
    a_take_back_reaches_back_as_far_as_the_window,
    a_send_counted_before_a_resume_stays_out_of_the_new_count,
    two_replicas_take_a_send_back_once,
);
