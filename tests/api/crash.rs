//! kill -9 in the middle of draining the spool loses nothing: the real
//! binary is killed while it applies spooled messages, started again on the
//! same spool, and every acknowledged message ends in the database once.

use std::process::{Child, Stdio};
use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::cli::{bouncer, test_env};
use crate::helpers::{Backend, Outage, TempDir, TestDb, answers, free_port, spooled_bytes};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

/// `bouncer serve` on `port`, committing at most two messages at a time so
/// that a drain takes many commits.
fn serve(dir: &std::path::Path, db_url: &str, port: u16) -> Child {
    let mut cmd = bouncer(dir);
    test_env(&mut cmd, db_url, dir);
    cmd.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SNS_CONFIRM_MODE", "off")
        .env("WRITE_BATCH_MAX", "2")
        .env("SQLITE_BUSY_TIMEOUT_MS", "200")
        .env("DATABASE_ACQUIRE_TIMEOUT_MS", "1000")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts")
}

async fn post(client: &reqwest::Client, port: u16, msg: &Msg) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/sns"))
        .header("x-amz-sns-message-type", "Notification")
        .body(msg.body())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn kill_9_in_the_middle_of_a_drain_loses_nothing(backend: Backend) {
    bouncer::outbound::install_default_provider();
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    let outage = Outage::forward_to("127.0.0.1:5432".parse().expect("addr")).await;
    let is_sqlite = matches!(backend, Backend::Sqlite);
    let url = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", outage.port), 1);
    let port = free_port();
    let mut child = serve(dir.path(), &url, port);
    assert!(answers(port, "/healthz").await, "bouncer did not start");
    let client = reqwest::Client::new();

    // The database goes away: a lock held by another SQLite process, or
    // the PostgreSQL server cut off.
    let mut lock = if is_sqlite {
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("connect");
        conn.execute("BEGIN EXCLUSIVE").await.expect("lock");
        Some(conn)
    } else {
        outage.cut();
        None
    };
    let msgs: Vec<Msg> = (0..300)
        .map(|i| Msg::notification(TOPIC, &format!("spooled {i}")).sign())
        .collect();
    for chunk in msgs.chunks(50) {
        let codes =
            futures_util::future::join_all(chunk.iter().map(|m| post(&client, port, m))).await;
        assert!(codes.iter().all(|c| *c == 202), "{codes:?}");
    }
    let spool = dir.path().join("cli.spool");
    assert!(spooled_bytes(&spool) > 0);

    // Back: the drain starts; kill -9 while it is half way.
    match lock.as_mut() {
        Some(conn) => {
            conn.execute("ROLLBACK").await.expect("release");
        }
        None => outage.restore(),
    }
    drop(lock);
    let mut at_kill = 0;
    for _ in 0..2000 {
        at_kill = db.total_messages().await;
        if at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        at_kill > 0 && at_kill < msgs.len() as i64,
        "killed with {at_kill} of {} applied",
        msgs.len()
    );

    let mut child = serve(dir.path(), &url, port);
    assert!(answers(port, "/healthz").await, "bouncer did not start");
    for _ in 0..400 {
        if db.total_messages().await == msgs.len() as i64 && spooled_bytes(&spool) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for msg in &msgs {
        assert_eq!(db.count_messages(&msg.id()).await, 1, "{}", msg.id());
    }
    assert_eq!(db.total_messages().await, msgs.len() as i64);
    assert_eq!(spooled_bytes(&spool), 0);
    assert!(!spool.join("set-aside.jsonl").exists());
    // Direct writes again.
    assert_eq!(
        post(&client, port, &Msg::notification(TOPIC, "after").sign()).await,
        200
    );
    let _ = child.kill();
    let _ = child.wait();
}

on_both_databases!(kill_9_in_the_middle_of_a_drain_loses_nothing);
