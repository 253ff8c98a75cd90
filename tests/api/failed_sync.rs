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

use crate::crash::{Serve, assert_started, logged, post, serve_batches_of, serve_command};
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

/// `serve` on SQLite, each message its own commit, whose syncs of one
/// file fail once [`Failing::fail_syncs`] is called.
struct Failing {
    dir: TempDir,
    db: TestDb,
    port: u16,
    trigger: PathBuf,
    child: Serve,
    client: reqwest::Client,
}

impl Failing {
    /// Syncs of the file whose path ends with `suffix` will fail.
    async fn serve(suffix: &str) -> Failing {
        bouncer::outbound::install_default_provider();
        let dir = TempDir::new();
        let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
        let port = free_port();
        let trigger = dir.path().join("fail-syncs-now");
        let mut cmd = serve_command(dir.path(), &db.url, port, 1);
        cmd.env("LD_PRELOAD", failsync_library(dir.path()))
            .env("FAILSYNC_WHEN", &trigger)
            .env("FAILSYNC_SUFFIX", suffix);
        let child = Serve(cmd.spawn().expect("starts"));
        assert_started(port, dir.path()).await;
        Failing {
            dir,
            db,
            port,
            trigger,
            child,
            client: reqwest::Client::new(),
        }
    }

    fn fail_syncs(&self) {
        std::fs::write(&self.trigger, "").expect("the trigger");
    }

    /// The answer's status to `msg`.
    async fn post(&self, msg: &Msg) -> u16 {
        post(&self.client, self.port, msg).await
    }

    async fn status_of(&self, path: &str) -> u16 {
        self.client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        logged(self.dir.path())
    }

    /// kill -9, the disk mended, and bouncer started again on the same
    /// files without the library: everything `answered` is applied once,
    /// the spool emptied, each bounce's address suppressed, and the service
    /// ready and storing again.
    async fn mended_and_restarted(self, answered: &[(String, Msg)]) {
        let Failing {
            dir,
            db,
            port,
            trigger,
            child,
            client,
        } = self;
        drop(child);
        std::fs::remove_file(&trigger).expect("the trigger goes");
        let dir = dir.path();
        let _child = Serve(serve_batches_of(dir, &db.url, port, 64));
        assert_started(port, dir).await;
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
        assert_eq!(
            post(&client, port, &hard_bounce("fresh@example.com")).await,
            200
        );
    }
}

fn hard_bounce(to: &str) -> Msg {
    bounce("Permanent", "General", to, &now_text())
}

/// The log's sync (bouncer's own `fdatasync` of `-wal`, which every
/// answer waits for) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_the_log_is_answered_503_and_spools_until_a_restart() {
    let serving = Failing::serve("/bouncer.db-wal").await;
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
    assert_eq!(serving.post(&before.1).await, 200, "{}", serving.log());
    assert_eq!(serving.status_of("/readyz").await, 200);

    serving.fail_syncs();
    // The message whose commit the failed sync covered: not stored, as
    // far as SNS knows; from then on, spooled: also SNS's retry of it.
    for (msg, status) in [(covered, 503), (after, 202), (covered, 202)] {
        assert_eq!(serving.post(&msg.1).await, status, "{}", serving.log());
    }
    assert_eq!(serving.status_of("/readyz").await, 503);
    let log = serving.log();
    assert!(
        log.contains("fdatasync of") && log.contains("bouncer.db-wal"),
        "the log names the failed sync: {log}"
    );
    serving.mended_and_restarted(&sent).await;
}

/// A checkpoint beside the writer fails to sync the database file: final
/// as well, though every message it covered was answered when the log was
/// synced (`ingest::checkpoint`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_in_a_checkpoint_spools_what_follows_until_a_restart() {
    let serving = Failing::serve("/bouncer.db").await;
    serving.fail_syncs();
    // A checkpoint runs after every 64 commits: each message here is one.
    // Sent one at a time until five in a row were spooled.
    let mut sent: Vec<(String, Msg)> = Vec::new();
    let mut answered: Vec<u16> = Vec::new();
    while answered.len() < 400 && !answered.ends_with(&[202; 5]) {
        let to = format!("checkpointed-{}@example.com", sent.len());
        let msg = hard_bounce(&to);
        answered.push(serving.post(&msg).await);
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
        serving.log()
    );
    for (_, msg) in &sent[stored..stored + unsure] {
        assert_eq!(serving.post(msg).await, 202, "SNS's retry is spooled");
    }
    assert_eq!(serving.status_of("/readyz").await, 503);
    let log = serving.log();
    assert!(
        log.contains("failed to sync"),
        "the log names the failed checkpoint: {log}"
    );
    serving.mended_and_restarted(&sent).await;
}
