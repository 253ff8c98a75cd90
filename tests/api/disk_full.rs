//! SQLite's own disk fills: the failed commit does not poison a connection,
//! acknowledged messages wait in the spool (on another disk), the API says
//! 503, and once space is freed everything is applied and writes work
//! again, without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use sqlx::{Connection, Executor};

use crate::crash::{Serve, logged, post_all_answered, serve_command};
use crate::feedback::bounce;
use crate::helpers::{
    Backend, TempDir, TestDb, answers, assert_status, eventually, spooled_bytes, start,
    test_settings,
};
use crate::signing::{Msg, TOPIC};

/// A small tmpfs of its own, unmounted when dropped. Mounting needs root: a
/// CI machine has it; elsewhere the test is skipped with a notice.
pub(crate) struct SmallDisk(pub(crate) PathBuf);

impl SmallDisk {
    pub(crate) fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        match mounted {
            true => Some(SmallDisk(at.to_owned())),
            false if std::env::var_os("CI").is_some() => {
                panic!("a full-disk test needs to mount a tmpfs (root) under CI")
            }
            false => {
                eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
                None
            }
        }
    }

    /// Writes a file until the disk is full.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

/// Gives `bytes` of a filler back to its disk.
fn free_some(filler: &Path, bytes: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(filler)
        .expect("filler");
    let len = file.metadata().expect("filler's size").len();
    file.set_len(len.saturating_sub(bytes)).expect("shrink");
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A notification with a large body, so that a commit needs new pages.
fn large(tag: &str) -> Msg {
    Msg::notification(TOPIC, &format!("{tag} {}", "x".repeat(60 * 1024))).sign()
}

/// An app whose SQLite database (and, with `spool_too`, its spool) lives on
/// a 2 MiB disk of its own, in a folder to keep until the disk is gone;
/// none where no tmpfs can be mounted.
async fn app_on_a_small_disk(
    spool_too: bool,
) -> Option<(std::sync::Arc<TempDir>, SmallDisk, crate::helpers::TestApp)> {
    app_on_a_disk("2m", spool_too, |_| {}).await
}

/// [`app_on_a_small_disk`] on a disk of `size`, with `before` done to the
/// disk once the database is made and before the app starts.
async fn app_on_a_disk(
    size: &str,
    spool_too: bool,
    before: impl FnOnce(&SmallDisk),
) -> Option<(std::sync::Arc<TempDir>, SmallDisk, crate::helpers::TestApp)> {
    let dir = std::sync::Arc::new(TempDir::new());
    let disk = SmallDisk::mount(&dir.path().join("small"), size)?;
    let db = std::sync::Arc::new(TestDb::create(&Backend::Sqlite, &disk.0).await);
    before(&disk);
    let mut settings = test_settings(&db.url, dir.path());
    if spool_too {
        settings.spool_path = disk.0.join("spool");
    }
    let app = start(settings, Default::default(), db, dir.clone()).await;
    Some((dir, disk, app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_spools_and_writes_resume_once_space_is_freed() {
    let Some((_dir, disk, app)) = app_on_a_small_disk(false).await else {
        return;
    };
    assert_status(&app.post(&large("before")).await, 200, "stored");
    let filler = disk.fill();

    let during: Vec<Msg> = (0..4).map(|i| large(&format!("during {i}"))).collect();
    for msg in &during {
        assert_status(&app.post(msg).await, 202, "spooled");
    }
    assert!(spooled_bytes(&app.settings.spool_path) > 0);
    assert_eq!(app.get("/readyz").await.0, 503);
    // A change by hand cannot be written either: 503, not 500, and the
    // connection it failed on is not handed to the next request.
    let url = format!("{}/v1/sending", app.admin_address);
    let pause = json!({"state": "paused", "by": "carol", "reason": "drill"});
    let answer = crate::helpers::answer(
        app.client
            .put(&url)
            .body(pause.to_string())
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert_eq!(answer.1["error"], "database_unavailable");

    std::fs::remove_file(&filler).expect("free the space");
    for msg in &during {
        let id = msg.id();
        eventually("spooled messages reach the database", || async {
            app.db.count_messages(&id).await == 1
        })
        .await;
    }
    eventually("the spool empties", || async {
        spooled_bytes(&app.settings.spool_path) == 0
    })
    .await;
    let after = large("after");
    eventually("direct writes resume", || async {
        app.post(&after).await.0 == 200
    })
    .await;
    // Every pooled connection works again: no "non-zero transaction depth".
    for _ in 0..10 {
        let answer = crate::helpers::answer(
            app.client
                .put(&url)
                .body(pause.to_string())
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(answer.0, 200, "{}", answer.1);
    }
    assert!(!app.settings.spool_path.join("set-aside.jsonl").exists());
    app.stop().await;
    drop(disk);
}

/// Found by an outside trial: with the database and the spool on one full
/// disk every message was answered 503, but between messages `/readyz`
/// said `ready` and `bouncer_database_up` 1, and the log said `database
/// reachable again` after each: the drain's probe (an empty transaction)
/// succeeds on a full disk, and with nothing spooled it set the writer Up.
/// Only a write that stores something new says the database takes writes
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_database_and_spool_is_not_ready_between_messages() {
    let Some((_dir, disk, app)) = app_on_a_small_disk(true).await else {
        return;
    };
    let before = large("before");
    assert_status(&app.post(&before).await, 200, "stored");
    let filler = disk.fill();

    let gauge = |text: String| {
        text.lines()
            .find_map(|l| l.strip_prefix("bouncer_database_up "))
            .map(str::to_owned)
    };
    for i in 0..2 {
        let answer = app.post(&large(&format!("during {i}"))).await;
        assert_eq!(answer.0, 503, "{}", answer.1);
        assert_eq!(answer.1["error"], "store_unavailable");
        if i == 1 {
            // A repeat commits nothing, as the probe does: it proves no
            // more than the probe. (Answered 503 while the writer is in
            // spool mode, until the drain's probe sets it back.)
            eventually("a repeat is answered", || async {
                let answer = app.post(&before).await;
                answer.0 == 200 && answer.1["status"] == "duplicate"
            })
            .await;
        }
        // Longer than the drain's first probe (200 ms) and the next.
        for _ in 0..15 {
            let (status, body) = app.get("/readyz").await;
            assert_eq!(status, 503, "ready while nothing can be stored: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("the spool could not take the last messages"),
                "{detail}"
            );
            assert_eq!(
                gauge(crate::ses_account::metrics(&app).await).as_deref(),
                Some("0")
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    std::fs::remove_file(&filler).expect("free the space");
    let after = large("after");
    eventually("writes resume", || async {
        app.post(&after).await.0 == 200
    })
    .await;
    // Its answer may come a moment before the writer counts it.
    eventually("ready once a message is stored", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(
        gauge(crate::ses_account::metrics(&app).await).as_deref(),
        Some("1")
    );
    app.stop().await;
    drop(disk);
}

/// `bouncer_database_up` as `/metrics` says it.
async fn database_up_gauge(app: &crate::helpers::TestApp) -> Option<String> {
    crate::ses_account::metrics(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("bouncer_database_up "))
        .map(str::to_owned)
}

/// Asserts that `/readyz` says 503 for the room on the database's disk
/// for a while (several of the drain's looks), naming the `mib` free that
/// would make it ready, and returns its detail.
async fn not_ready_for_room(app: &crate::helpers::TestApp, mib: u64) -> String {
    let needed = format!("ready again once a message is stored or it has {mib} MiB free");
    let mut detail = String::new();
    for _ in 0..12 {
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 503, "ready with the disk short of room: {body}");
        detail = body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(
            detail.contains("the database's disk has ") && detail.contains(&needed),
            "{detail}"
        );
        assert_eq!(database_up_gauge(app).await.as_deref(), Some("0"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    detail
}

/// Found by an outside trial: after a failed write `/readyz` stayed 503
/// until a new message was stored, also once the disk had room again, so
/// a readiness probe that took bouncer out of SNS's way kept it out for
/// good. With no message to prove it, a disk with 16 MiB free says the
/// database takes writes again; less keeps it at 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_with_room_again_is_ready_without_a_message() {
    let Some((_dir, disk, app)) = app_on_a_disk("40m", true, |_| {}).await else {
        return;
    };
    assert_status(&app.post(&large("before")).await, 200, "stored");
    assert_eq!(app.get("/readyz").await.0, 200);
    let filler = disk.fill();
    let answer = app.post(&large("during")).await;
    assert_eq!(answer.0, 503, "{}", answer.1);

    // Some room, but less than 16 MiB: not ready, and the detail says how
    // much there is and that the spool failed too.
    free_some(&filler, 4 << 20);
    let detail = not_ready_for_room(&app, 16).await;
    assert!(
        detail.contains("the spool could not take the last messages either"),
        "{detail}"
    );
    let free: u64 = detail
        .split("the database's disk has ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the bytes free in the detail");
    assert!((3 << 20..16 << 20).contains(&free), "{detail}");

    // Room again, and no message sent: ready by itself.
    std::fs::remove_file(&filler).expect("free the space");
    eventually("ready once the disk has room", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(database_up_gauge(&app).await.as_deref(), Some("1"));
    assert_status(&app.post(&large("after")).await, 200, "stored");
    app.stop().await;
    drop(disk);
}

/// An app started with 960 KiB free on its database's disk (full, as
/// `serve` sees it), and the file that fills the rest.
async fn app_started_short_of_room() -> Option<(
    std::sync::Arc<TempDir>,
    SmallDisk,
    crate::helpers::TestApp,
    PathBuf,
)> {
    let filler = std::sync::Mutex::new(None);
    let (dir, disk, app) = app_on_a_disk("40m", false, |disk| {
        let path = disk.fill();
        free_some(&path, 960 << 10);
        *filler.lock().expect("filler") = Some(path);
    })
    .await?;
    let filler = filler.into_inner().expect("filler").expect("filled");
    Some((dir, disk, app, filler))
}

/// Found by an outside trial: `serve` started on a disk with no room said
/// ready until the first write failed. A start with less than 1 MiB free
/// is not ready until a message is stored or there is the room a start
/// needs (1 MiB), and messages are still written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_a_disk_short_of_room_is_not_ready_until_there_is_room() {
    let Some((_dir, disk, app, filler)) = app_started_short_of_room().await else {
        return;
    };
    let detail = not_ready_for_room(&app, 1).await;
    assert!(
        detail.contains("no message has been stored since the database last failed to take one (or since a start on a full disk)")
            && !detail.contains("the spool could not take"),
        "nothing was refused: {detail}"
    );

    // The room a start needs (1 MiB), not the margin a failed write
    // needs (16 MiB): ready without a message.
    free_some(&filler, 3 << 20);
    eventually("ready once the disk has the room a start needs", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(database_up_gauge(&app).await.as_deref(), Some("1"));
    app.stop().await;
    drop(disk);
}

/// A start on a full disk, and a message stored: that proves writes go
/// in, and it is ready (once the message's commit is durable and the
/// writer has counted it; its answer may come a moment before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_on_a_disk_short_of_room_makes_it_ready() {
    let Some((_dir, disk, app, _filler)) = app_started_short_of_room().await else {
        return;
    };
    assert_eq!(app.get("/readyz").await.0, 503);
    assert_status(
        &app.post(&Msg::notification(TOPIC, "small").sign()).await,
        200,
        "stored",
    );
    eventually("ready once a message is stored", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    app.stop().await;
    drop(disk);
}

/// Found by an outside trial: `serve` on a full disk said only SQLite's
/// words ("disk I/O error" when it cannot make its shared-memory file,
/// "database or disk is full" when it cannot write a new file).
#[test]
fn serve_on_a_full_disk_says_the_disk_is_full() {
    let dir = TempDir::new();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "2m") else {
        return;
    };
    // A new database: one made before may keep the log files SQLite needs
    // to open it, and then `serve` starts (and spools), as it should.
    let url = format!("sqlite://{}/bouncer.db", disk.0.display());
    disk.fill();
    let mut serve = crate::cli::bouncer(dir.path());
    crate::cli::test_env(&mut serve, &url, dir.path());
    let mut child = serve
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .arg("serve")
        .stdout(std::fs::File::create(dir.path().join("serve.log")).expect("log"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // It must stop by itself; one that serves is killed and fails the test.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            let mut said = String::new();
            let _ =
                std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut said);
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("serve did not stop on a full disk: {said}\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    assert!(
        said.contains("the file system holding it is full") && said.contains("free some space"),
        "{said}"
    );
}

/// Found by profiling the writer: a statement that changes more than 64
/// KiB of pages inside a transaction (a batch of a dozen messages or
/// more) made SQLite move what it kept to undo that statement alone to a
/// temporary file, so a full temporary directory (`SQLITE_TMPDIR`, else
/// `TMPDIR`, else `/var/tmp` or `/tmp`) stopped the writer while the
/// database's own disk had room: 14,682 of 15,000 messages of a storm went
/// to the spool, and a spool drained in large batches never reached the
/// database. The writer keeps that in memory now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_temporary_directory_does_not_stop_the_writer() {
    bouncer::outbound::install_default_provider();
    let dir = TempDir::new();
    let Some(tmp) = SmallDisk::mount(&dir.path().join("tmp"), "64k") else {
        return;
    };
    tmp.fill();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let port = crate::helpers::free_port();
    let _child = Serve(
        serve_command(dir.path(), &db.url, port, 64)
            .env("SQLITE_TMPDIR", &tmp.0)
            .spawn()
            .expect("starts"),
    );
    assert!(answers(port, "/healthz").await, "{}", logged(dir.path()));
    // A lived-in list of 20,000 addresses.
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999) \
         INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, first_seen_at, last_seen_at, source) \
         SELECT printf('r%05d@example.com', i), 'bounce', 'Permanent', 'General', \
         '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z', 'cli:test' FROM n",
    )
    .await;
    let client = reqwest::Client::new();
    // Bounces for addresses already on the list, 300 rows apart: each
    // updates a page of its own, as a batch on a lived-in list does.
    let bounces = |from: usize| -> Vec<Msg> {
        (from..from + 64)
            .map(|i| {
                let to = format!("r{:05}@example.com", i * 300 % 20_000 + i / 64);
                bounce("Permanent", "General", &to, "2026-11-25T08:00:00.000Z")
            })
            .collect()
    };
    // Spooled while another process holds the database, then drained in
    // one batch of 64 once it lets go.
    let mut lock = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("connect");
    lock.execute("BEGIN EXCLUSIVE").await.expect("lock");
    post_all_answered(&client, port, &bounces(0), 64, 202).await;
    lock.execute("ROLLBACK").await.expect("release");
    eventually("the spooled messages reach the database", || async {
        db.total_messages().await == 64
    })
    .await;
    // The writer stores directly again once the drain has emptied the spool.
    eventually("the spool empties", || async {
        spooled_bytes(&dir.path().join("cli.spool")) == 0
    })
    .await;
    assert!(answers(port, "/readyz").await, "{}", logged(dir.path()));

    // Posted 64 at a time: each stored at once, none spooled.
    post_all_answered(&client, port, &bounces(64), 64, 200).await;
    assert_eq!(db.total_messages().await, 128);
    let replaced = db
        .scalar(
            "SELECT COUNT(*) FROM suppressions WHERE last_seen_at > '2026-11-02'",
            None,
        )
        .await;
    assert_eq!(replaced, 128, "each bounce applied to its row");
    drop(tmp);
}

/// Found by an outside trial: migration 0013 rebuilds SQLite's table of
/// messages, and a disk that filled while SQLite copied its log into the
/// file, after the migration committed, made `migrate` say "cannot
/// migrate" while the schema was new. It now says what happened; once
/// there is room, the next `migrate` has nothing to apply, and every
/// message is there.
#[tokio::test]
async fn a_disk_that_fills_after_the_migration_committed_is_told_as_such() {
    let dir = TempDir::new();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "46m") else {
        return;
    };
    let db = TestDb::create(&Backend::Sqlite, &disk.0).await;
    crate::cli::migrate(dir.path(), &db.url);
    crate::dedupe_key::before_time_ordered_key(&db).await;
    // 4,600 messages of 2.2 KB: a table of about 19 MB, so that its copy
    // fits in the log (past the 16 MB at which a commit checkpoints) but
    // not also in the file.
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4600) \
         INSERT INTO sns_messages (message_id, message_type, topic_arn, sns_timestamp, received_at, \
         stored_at, signature_version, outcome, body) \
         SELECT lower(hex(randomblob(16))), 'Notification', 'grown', '2026-12-07T10:00:00.000Z', \
         '2026-12-07T10:00:00.000Z', '2026-12-07T10:00:00.000Z', 1, 'applied', hex(randomblob(1100)) FROM n",
    )
    .await;
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;

    let ran = crate::cli::run_with(dir.path(), &db.url, &["migrate"]);
    assert_ne!(ran.code, 0, "{ran}");
    assert!(
        ran.stderr.contains("is migrated (its schema is version ")
            && ran.stderr.contains(
                "), but SQLite could not finish writing it from its log into the file: database or disk is full"
            ),
        "{ran}"
    );
    let grown = Command::new("mount")
        .args(["-o", "remount,size=200m"])
        .arg(&disk.0)
        .status()
        .is_ok_and(|s| s.success());
    assert!(grown, "the tmpfs grows");
    let ran = crate::cli::run_with(dir.path(), &db.url, &["migrate"]);
    assert_eq!(ran.code, 0, "{ran}");
    assert!(
        format!("{}{}", ran.stdout, ran.stderr).contains("is up to date (schema version "),
        "{ran}"
    );
    assert_eq!(db.total_messages().await, 4600);
}

/// Found by review: a message the database refuses for its content, with
/// the spool's disk (and so its set-aside file) full, is answered 503 and
/// sends the writer to the spool for a moment; the database took writes
/// all along, yet `/readyz` stayed 503 until another message was stored.
/// (PostgreSQL: SQLite takes the message that PostgreSQL refuses.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_set_aside_file_does_not_keep_a_working_database_unready() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let dir = TempDir::new();
    let Some(disk) = SmallDisk::mount(&dir.path().join("spool-disk"), "2m") else {
        return;
    };
    let spool = disk.0.join("spool");
    let app = crate::helpers::spawn_app_with(backend, |settings, _| {
        settings.spool_path = spool.clone();
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    // Room for part of the line the message makes, not for all of it.
    let filler = disk.fill();
    free_some(&filler, 20 << 10);
    let poison = crate::poison::delivery_with_huge_message_id("huge@example.com");
    let answer = app.post(&poison).await;
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert_eq!(app.db.count_messages(&poison.id()).await, 0);
    // No file beside it holds a part of it (none could take it whole).
    let beside: Vec<_> = std::fs::read_dir(&spool)
        .expect("the spool's folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("set-aside-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    // Said where an operator looks: SNS drops it once its retries are spent.
    let id = poison.id();
    eventually("a set_aside_failed alert naming the message", || async {
        app.db
            .text(
                "SELECT text FROM alerts WHERE kind = $1",
                "set_aside_failed",
            )
            .await
            .is_some_and(|alert| alert.contains(&id) && alert.contains("503"))
    })
    .await;
    // The writer did not go to the spool for it: a message right after is
    // stored, not refused for the spool's full disk.
    let during = bounce(
        "Permanent",
        "General",
        "during@example.com",
        "2026-11-25T07:59:00.000Z",
    );
    assert_status(&app.post(&during).await, 200, "stored");
    assert_eq!(app.get("/readyz").await.0, 200);
    let after = bounce(
        "Permanent",
        "General",
        "after@example.com",
        "2026-11-25T08:00:00.000Z",
    );
    assert_status(&app.post(&after).await, 200, "stored");
    // SNS's retry, with room: set aside as one whole line (the part of a
    // line the full disk cut was cut off again, not left for it to join).
    std::fs::remove_file(&filler).expect("free the space");
    assert_status(&app.post(&poison).await, 202, "set_aside");
    crate::poison::the_one_set_aside_line(&spool.join("set-aside.jsonl"), &poison);
    app.stop().await;
    drop(disk);
}
