//! While the database is down, intake keeps its speed: requests are answered
//! from the spool without waiting for database time-outs, and the spool is
//! applied, once each and in order, when the database is back.

use std::time::{Duration, Instant};

use crate::helpers::{
    Backend, TestApp, assert_status, eventually, spawn_app_behind_forwarder, spooled_bytes,
    take_database_away,
};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

/// Posts `n` messages at once; their answers and how long the slowest took.
async fn post_all(app: &TestApp, msgs: &[Msg]) -> (Vec<(u16, serde_json::Value)>, Duration) {
    let started = Instant::now();
    let answers = futures_util::future::join_all(msgs.iter().map(|m| app.post(m))).await;
    (answers, started.elapsed())
}

fn signed(n: usize, tag: &str) -> Vec<Msg> {
    (0..n)
        .map(|i| Msg::notification(TOPIC, &format!("{tag} {i}")).sign())
        .collect()
}

async fn intake_while_the_database_is_down_does_not_wait_for_its_time_outs(backend: Backend) {
    let (app, outage) = spawn_app_behind_forwarder(backend, |s, _| {
        // The time-outs a request must never wait for once the outage is
        // known.
        s.database_acquire_timeout_ms = 3000;
        s.sqlite_busy_timeout_ms = 3000;
        s.database_write_timeout_ms = 5000;
    })
    .await;
    assert_status(
        &app.post(&Msg::notification(TOPIC, "before").sign()).await,
        200,
        "stored",
    );
    let away = take_database_away(&app, &outage).await;
    // The first message finds the outage (on SQLite after the busy
    // time-out) and is kept in the spool.
    let first = signed(1, "finds the outage");
    let (answers, _) = post_all(&app, &first).await;
    assert_status(&answers[0], 202, "spooled");
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["error"], "database_unavailable", "{ready}");

    let during = signed(64, "during");
    let (answers, took) = post_all(&app, &during).await;
    for answer in &answers {
        assert_status(answer, 202, "spooled");
    }
    assert!(
        took < Duration::from_secs(1),
        "64 concurrent messages took {took:?} while the database was down"
    );
    assert!(spooled_bytes(&app.settings.spool_path) > 0);

    away.give_back().await;
    for msg in first.iter().chain(&during) {
        let id = msg.id();
        eventually("spooled messages reach the database", || async {
            app.db.count_messages(&id).await == 1
        })
        .await;
    }
    assert_eq!(app.db.total_messages().await, 66, "each message once");
    eventually("the spool empties", || async {
        spooled_bytes(&app.settings.spool_path) == 0
    })
    .await;
    let after = Msg::notification(TOPIC, "after").sign();
    eventually("direct writes resume", || async {
        app.post(&after).await.0 == 200
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    app.stop().await;
}

/// Messages keep arriving while the spool drains: it empties all the same,
/// and every message is stored once.
async fn the_spool_empties_while_messages_keep_arriving(backend: Backend) {
    let (app, outage) = spawn_app_behind_forwarder(backend, |_, _| {}).await;
    let away = take_database_away(&app, &outage).await;
    let spooled = signed(200, "spooled");
    for chunk in spooled.chunks(50) {
        for answer in post_all(&app, chunk).await.0 {
            assert_status(&answer, 202, "spooled");
        }
    }
    away.give_back().await;
    // Steady traffic while the drain works.
    let steady = signed(200, "steady");
    for chunk in steady.chunks(20) {
        for answer in post_all(&app, chunk).await.0 {
            assert!(matches!(answer.0, 200 | 202), "{answer:?}");
        }
    }
    eventually("the spool empties", || async {
        spooled_bytes(&app.settings.spool_path) == 0
    })
    .await;
    for msg in spooled.iter().chain(&steady) {
        assert_eq!(app.db.count_messages(&msg.id()).await, 1);
    }
    assert_eq!(app.db.total_messages().await, 400);
    app.stop().await;
}

/// A scrape during an outage answers well inside Prometheus' 10 s scrape
/// time-out and reports the outage: what the database cannot answer is left
/// out, never waited for one pool time-out after another (three of them,
/// 15 s at these settings, before).
async fn a_scrape_during_an_outage_answers_in_time_and_reports_it(backend: Backend) {
    let on_sqlite = matches!(backend, Backend::Sqlite);
    let (app, outage) = spawn_app_behind_forwarder(backend, |s, _| {
        s.database_acquire_timeout_ms = 5000;
        s.sqlite_busy_timeout_ms = 5000;
        s.database_write_timeout_ms = 5000;
    })
    .await;
    let gauges = |text: &serde_json::Value, name: &str| {
        text.as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (_, before) = app.admin_get("/metrics").await;
    assert_eq!(
        gauges(&before, "bouncer_database_up "),
        ["bouncer_database_up 1"]
    );
    assert_eq!(gauges(&before, "bouncer_bounce_rate ").len(), 1, "{before}");
    assert_eq!(gauges(&before, "bouncer_ses_pushes{").len(), 4, "{before}");

    // PostgreSQL hangs: connections open and nothing answers, the outage
    // where every wait lasts its whole time-out.
    let away = if on_sqlite {
        Some(take_database_away(&app, &outage).await)
    } else {
        outage.hang();
        None
    };
    if !on_sqlite {
        // Nothing written yet, so the writer does not know; the scrape's
        // own reads do, on a quiet feed too.
        let started = Instant::now();
        let (_, quiet) = app.admin_get("/metrics").await;
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(
            gauges(&quiet, "bouncer_database_up "),
            ["bouncer_database_up 0"]
        );
    }
    assert_status(
        &app.post(&Msg::notification(TOPIC, "finds the outage").sign())
            .await,
        202,
        "spooled",
    );
    let started = Instant::now();
    let (status, during) = app.admin_get("/metrics").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{during}");
    assert!(
        took < Duration::from_secs(4),
        "the scrape took {took:?} while the database was down"
    );
    assert_eq!(
        gauges(&during, "bouncer_database_up "),
        ["bouncer_database_up 0"]
    );
    assert!(during.as_str().unwrap_or_default().ends_with("# EOF\n"));
    if on_sqlite {
        // SQLite's readers go on beside the write lock another connection
        // holds: the rates are still read.
        assert_eq!(gauges(&during, "bouncer_bounce_rate ").len(), 1, "{during}");
    } else {
        // PostgreSQL does not answer: the rates are left out.
        assert!(
            gauges(&during, "bouncer_bounce_rate ").is_empty(),
            "{during}"
        );
        assert!(
            gauges(&during, "bouncer_ses_pushes{").is_empty(),
            "{during}"
        );
    }

    match away {
        Some(away) => away.give_back().await,
        None => outage.restore(),
    }
    eventually("the rates are read again", || async {
        let (_, after) = app.admin_get("/metrics").await;
        gauges(&after, "bouncer_database_up ") == ["bouncer_database_up 1"]
            && gauges(&after, "bouncer_bounce_rate ").len() == 1
            && gauges(&after, "bouncer_ses_pushes{").len() == 4
    })
    .await;
    app.stop().await;
}

on_both_databases!(
    intake_while_the_database_is_down_does_not_wait_for_its_time_outs,
    the_spool_empties_while_messages_keep_arriving,
    a_scrape_during_an_outage_answers_in_time_and_reports_it,
);
