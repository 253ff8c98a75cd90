//! A disk that fails to sync SQLite's files, caused for real: the binary
//! runs with a small preloaded library (`failsync.c`) whose `fsync` and
//! `fdatasync` fail with EIO for one file once the test creates a trigger
//! file. What the README promises: the messages a failed sync covered are
//! answered 503 (SNS sends them again), from then on nothing is answered
//! as stored (messages go to the spool, `/readyz` says 503, the log says
//! why), and a restart applies the spool, each message once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::crash::{Serve, logged, post, serve_batches_of, serve_command};
use crate::feedback::bounce;
use crate::helpers::{Backend, TempDir, TestDb, answers, free_port, spooled_bytes};
use crate::signing::{Msg, now_text};

/// The preloaded library, built with the C compiler that Rust links with,
/// into the target directory (the loader ignores a library on a file
/// system mounted `noexec`, as `/tmp` may be), one file per test.
fn failsync_library(dir: &Path) -> PathBuf {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("test");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("libfailsync-{name}.so"));
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/failsync.c");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(source)
        .arg("-ldl")
        .output()
        .expect("cc, the C compiler Rust links with, runs");
    assert!(
        built.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// `serve` (SQLite in `dir`, each message its own commit) whose syncs of
/// the file ending in `suffix` fail once `trigger` exists.
async fn serve_with_failing_syncs(
    dir: &Path,
    db_url: &str,
    port: u16,
    suffix: &str,
    trigger: &Path,
) -> Serve {
    let mut cmd = serve_command(dir, db_url, port, 1);
    cmd.env("LD_PRELOAD", failsync_library(dir))
        .env("FAILSYNC_WHEN", trigger)
        .env("FAILSYNC_SUFFIX", suffix);
    let child = Serve(cmd.spawn().expect("starts"));
    assert!(
        started(port).await,
        "bouncer did not start: {}",
        logged(dir)
    );
    child
}

/// Up to 30 s: a debug build starting beside the whole suite on two cores
/// can take longer than `answers`' 10 s.
async fn started(port: u16) -> bool {
    for _ in 0..3 {
        if answers(port, "/healthz").await {
            return true;
        }
    }
    false
}

async fn status_of(client: &reqwest::Client, port: u16, path: &str) -> u16 {
    client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn hard_bounce(to: &str) -> Msg {
    bounce("Permanent", "General", to, &now_text())
}

/// The same files without the failing library: everything answered is
/// applied once, the spool emptied, each bounce's address suppressed, and
/// the service ready and storing again.
async fn restarted_applies_everything_once(
    dir: &Path,
    db: &TestDb,
    port: u16,
    answered: &[(String, Msg)],
) {
    let _child = Serve(serve_batches_of(dir, &db.url, port, 64));
    assert!(
        started(port).await,
        "bouncer did not start: {}",
        logged(dir)
    );
    let spool = dir.join("cli.spool");
    for _ in 0..600 {
        if db.total_messages().await == answered.len() as i64 && spooled_bytes(&spool) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spooled_bytes(&spool), 0, "{}", logged(dir));
    for (to, msg) in answered {
        assert_eq!(db.count_messages(&msg.id()).await, 1, "{to}");
        let suppressed = db
            .scalar(
                "SELECT COUNT(*) FROM suppressions WHERE email = $1",
                Some(to),
            )
            .await;
        assert_eq!(suppressed, 1, "{to} is suppressed");
    }
    assert_eq!(db.total_messages().await, answered.len() as i64);
    assert!(answers(port, "/readyz").await, "ready again");
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, port, &hard_bounce("fresh@example.com")).await,
        200
    );
}

/// The log's sync (bouncer's own `fdatasync` of `-wal`, which every
/// answer waits for) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_the_log_is_answered_503_and_spools_until_a_restart() {
    bouncer::outbound::install_default_provider();
    let dir = TempDir::new();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let port = free_port();
    let trigger = dir.path().join("fail-syncs-now");
    let child =
        serve_with_failing_syncs(dir.path(), &db.url, port, "/bouncer.db-wal", &trigger).await;
    let client = reqwest::Client::new();
    let sent: Vec<(String, Msg)> = ["before", "covered", "after"]
        .iter()
        .map(|name| {
            let to = format!("{name}@example.com");
            let msg = hard_bounce(&to);
            (to, msg)
        })
        .collect();
    let [before, covered, after] = &sent[..] else {
        unreachable!("three messages")
    };
    assert_eq!(
        post(&client, port, &before.1).await,
        200,
        "{}",
        logged(dir.path())
    );
    assert_eq!(status_of(&client, port, "/readyz").await, 200);

    std::fs::write(&trigger, "").expect("the trigger");
    // The message whose commit the failed sync covered: not stored, as
    // far as SNS knows.
    assert_eq!(
        post(&client, port, &covered.1).await,
        503,
        "{}",
        logged(dir.path())
    );
    // From then on, spooled: also SNS's retry of the one answered 503.
    assert_eq!(
        post(&client, port, &after.1).await,
        202,
        "{}",
        logged(dir.path())
    );
    assert_eq!(
        post(&client, port, &covered.1).await,
        202,
        "{}",
        logged(dir.path())
    );
    assert_eq!(status_of(&client, port, "/readyz").await, 503);
    let log = logged(dir.path());
    assert!(
        log.contains("fdatasync of") && log.contains("bouncer.db-wal"),
        "the log names the failed sync: {log}"
    );

    // kill -9, the disk mended, and bouncer started again.
    drop(child);
    std::fs::remove_file(&trigger).expect("the trigger goes");
    restarted_applies_everything_once(dir.path(), &db, port, &sent).await;
}

/// A checkpoint beside the writer fails to sync the database file: final
/// as well, though every message it covered was answered when the log was
/// synced (`ingest::checkpoint`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_in_a_checkpoint_spools_what_follows_until_a_restart() {
    bouncer::outbound::install_default_provider();
    let dir = TempDir::new();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let port = free_port();
    let trigger = dir.path().join("fail-syncs-now");
    let child = serve_with_failing_syncs(dir.path(), &db.url, port, "/bouncer.db", &trigger).await;
    let client = reqwest::Client::new();
    std::fs::write(&trigger, "").expect("the trigger");
    // A checkpoint runs after every 64 commits: each message here is one.
    // Sent one at a time until five in a row were spooled.
    let mut sent: Vec<(String, Msg)> = Vec::new();
    let mut answered: Vec<u16> = Vec::new();
    while answered.len() < 400 && !answered.ends_with(&[202; 5]) {
        let to = format!("checkpointed-{}@example.com", sent.len());
        let msg = hard_bounce(&to);
        answered.push(post(&client, port, &msg).await);
        sent.push((to, msg));
    }
    // Stored until the checkpoint failed, then spooled. A message whose
    // answer was waiting for the log's sync when the failure was marked
    // is answered 503 (nothing is answered as stored after it), and SNS
    // sends it again.
    let stored = answered.iter().take_while(|a| **a == 200).count();
    let unsure = answered[stored..].iter().take_while(|a| **a == 503).count();
    assert!(
        // The 64th's answer may be the one caught waiting (the checkpoint
        // is woken before that answer is handed to the log's sync).
        stored + unsure >= 64
            && unsure <= 1
            && answered[stored + unsure..].iter().all(|a| *a == 202)
            && answered.ends_with(&[202; 5]),
        "{answered:?}: {}",
        logged(dir.path())
    );
    for (_, msg) in &sent[stored..stored + unsure] {
        assert_eq!(
            post(&client, port, msg).await,
            202,
            "SNS's retry is spooled"
        );
    }
    assert_eq!(status_of(&client, port, "/readyz").await, 503);
    let log = logged(dir.path());
    assert!(
        log.contains("failed to sync"),
        "the log names the failed checkpoint: {log}"
    );

    drop(child);
    std::fs::remove_file(&trigger).expect("the trigger goes");
    restarted_applies_everything_once(dir.path(), &db, port, &sent).await;
}
