//! Which database a command opens (SPEC §5): only `serve` and `migrate`
//! create or migrate one; every other command reads the database that
//! exists, says clearly when there is none or it is not migrated, and works
//! with a read-only PostgreSQL role. PostgreSQL problems are told in one
//! line with the server, the database and the cause.

use sqlx::{Connection, Executor};

use std::process::{Child, Stdio};
use std::time::Duration;

use bouncer::store::{Access, Store};

use crate::cli::{bouncer, migrate, run, run_with, test_env};
use crate::helpers::{Backend, TempDir, TestDb, answers, free_port, test_settings, unique_name};
use crate::on_both_databases;

/// Every command that reads or changes the list or the state.
const COMMANDS: &[&[&str]] = &[
    &["suppressions", "check", "jane@example.com"],
    &["suppressions", "list"],
    &["suppressions", "export"],
    &["suppressions", "add", "jane@example.com"],
    &[
        "suppressions",
        "remove",
        "jane@example.com",
        "--by",
        "ops",
        "--reason",
        "test",
    ],
    &["status"],
    &["subscriptions"],
    &["pause", "--by", "ops", "--reason", "test"],
    &["prune"],
];

#[test]
fn a_command_run_from_another_directory_makes_no_database_and_says_so() {
    let elsewhere = TempDir::new();
    let cwd = elsewhere.path().canonicalize().expect("path");
    let file = cwd.join("bouncer.db");
    for args in COMMANDS {
        let ran = run(bouncer(elsewhere.path()).args(*args));
        assert_eq!(ran.code, 2, "{args:?}: {ran}");
        assert!(ran.stdout.is_empty(), "{args:?} answered: {ran}");
        for words in [
            "there is no database at",
            &file.display().to_string(),
            "DATABASE_URL=sqlite:bouncer.db",
            "bouncer migrate",
        ] {
            assert!(ran.stderr.contains(words), "{args:?}: `{words}`: {ran}");
        }
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }
    let ran = run(bouncer(elsewhere.path()).arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
    assert!(file.exists(), "migrate creates the file");
    let ran = run(bouncer(elsewhere.path()).args(["suppressions", "check", "jane@example.com"]));
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (0, "jane@example.com\tnot suppressed\n"),
        "{ran}"
    );
}

/// Tables in the database, whatever the backend.
async fn tables(db: &TestDb) -> i64 {
    let sql = if db.is_sqlite() {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
    } else {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
    };
    db.scalar(sql, None).await
}

async fn commands_refuse_a_database_that_is_not_migrated(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    if db.is_sqlite() {
        std::fs::File::create(dir.path().join("bouncer.db")).expect("an empty file");
    }
    for args in COMMANDS {
        let ran = run_with(dir.path(), &db.url, args);
        assert_eq!(ran.code, 2, "{args:?}: {ran}");
        assert!(
            ran.stderr.contains("has no bouncer tables") && ran.stderr.contains("bouncer migrate"),
            "{args:?}: {ran}"
        );
    }
    assert_eq!(tables(&db).await, 0, "a command created tables");

    // A database one migration ahead of this bouncer, and one behind.
    migrate(dir.path(), &db.url);
    let future = if db.is_sqlite() {
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101, 'future', TRUE, x'00', 0)"
    } else {
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101, 'future', TRUE, '\\x00'::bytea, 0)"
    };
    db.execute(future).await;
    let ran = run_with(dir.path(), &db.url, &["suppressions", "list"]);
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stderr
            .contains("was migrated by a newer bouncer (migration 99990101"),
        "{ran}"
    );
    // `migrate` says the same, not the migration library's words.
    let ran = run_with(dir.path(), &db.url, &["migrate"]);
    assert_ne!(ran.code, 0, "{ran}");
    assert!(
        ran.stderr.contains("cannot migrate the SQLite database")
            || ran
                .stderr
                .contains("cannot migrate the PostgreSQL database"),
        "{ran}"
    );
    assert!(
        ran.stderr.contains(
            "it was migrated by a newer bouncer (migration 99990101 is unknown to this one): use that bouncer"
        ) && !ran.stderr.contains("resolved migrations"),
        "{ran}"
    );
    db.execute("DELETE FROM _sqlx_migrations WHERE version >= 4")
        .await;
    let ran = run_with(dir.path(), &db.url, &["status"]);
    assert_eq!(ran.code, 2, "{ran}");
    assert!(
        ran.stderr
            .contains("is not migrated to this bouncer's schema (missing migrations 4"),
        "{ran}"
    );
}

on_both_databases!(commands_refuse_a_database_that_is_not_migrated);

/// A PostgreSQL login role with SELECT on every table, dropped with it.
struct ReadOnlyRole {
    server: String,
    name: String,
}

impl ReadOnlyRole {
    async fn create(server: &str) -> ReadOnlyRole {
        let name = format!("bouncer_reader_{}", unique_name());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("connect");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE ROLE {name} LOGIN")))
            .await
            .expect("create role");
        ReadOnlyRole {
            server: server.to_owned(),
            name,
        }
    }

    async fn may_read(&self, db: &TestDb) {
        for grant in [
            format!("GRANT USAGE ON SCHEMA public TO {}", self.name),
            format!(
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}",
                self.name
            ),
        ] {
            db.execute(&grant).await;
        }
    }
}

impl Drop for ReadOnlyRole {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        crate::helpers::cleanup_in_drop(async move {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await
            {
                let _ = admin
                    .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                    .await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_work_with_a_read_only_postgres_role() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let Backend::Postgres { server } = &backend else {
        return;
    };
    // Declared first, dropped last: after the database that holds its grants.
    let role = ReadOnlyRole::create(server).await;
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    let added = run_with(
        dir.path(),
        &db.url,
        &["suppressions", "add", "jane@example.com"],
    );
    assert_eq!(added.code, 0, "{added}");
    role.may_read(&db).await;
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_username(&role.name).expect("user");
    let reader = url.to_string();

    let status = run_with(dir.path(), &reader, &["status"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.contains("sending:        active"), "{status}");
    let check = run_with(
        dir.path(),
        &reader,
        &["suppressions", "check", "jane@example.com"],
    );
    assert_eq!(check.code, 1, "{check}");
    assert!(
        check.stdout.contains("jane@example.com\tsuppressed"),
        "{check}"
    );
    for args in [
        &["suppressions", "list"][..],
        &["suppressions", "export"],
        &["subscriptions"],
    ] {
        let ran = run_with(dir.path(), &reader, args);
        assert_eq!(ran.code, 0, "{args:?}: {ran}");
    }
    let export = run_with(dir.path(), &reader, &["suppressions", "export"]);
    assert!(
        export.stdout.contains("\njane@example.com,manual,"),
        "{export}"
    );

    // Writing commands say what is wrong, in one line.
    for args in [
        &["suppressions", "add", "joe@example.com"][..],
        &["pause", "--by", "ops", "--reason", "test"],
    ] {
        let ran = run_with(dir.path(), &reader, args);
        assert_eq!(ran.code, 2, "{args:?}: {ran}");
        assert!(
            ran.stderr.contains("permission denied")
                && ran
                    .stderr
                    .contains("a read-only role suits only the reading commands")
                && ran.stderr.lines().count() == 1,
            "{args:?}: {ran}"
        );
    }
    drop(db);
    drop(role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_problems_are_told_once_with_the_server_the_database_and_the_cause() {
    let dir = TempDir::new();
    let port = free_port();
    let nobody = format!("postgres://postgres@127.0.0.1:{port}/feedback");
    for args in [&["status"][..], &["migrate"], &["suppressions", "list"]] {
        let ran = run_with(dir.path(), &nobody, args);
        assert_eq!(ran.code, 2, "{args:?}: {ran}");
        assert_eq!(ran.stderr.lines().count(), 1, "{args:?}: {ran}");
        for words in [
            &format!("PostgreSQL database `feedback` on 127.0.0.1:{port}"),
            "(DATABASE_URL)",
            "connection refused: is the server running",
        ] {
            assert!(ran.stderr.contains(words), "{args:?}: `{words}`: {ran}");
        }
        assert!(!ran.stderr.contains("pool timed out"), "{ran}");
    }
    let Some(Backend::Postgres { server }) = Backend::postgres().await else {
        return;
    };
    let name = format!("bouncer_missing_{}", unique_name());
    let missing = format!("{server}/{name}");
    for args in [
        &["status"][..],
        &["migrate"],
        &["suppressions", "check", "a@b.example"],
    ] {
        let ran = run_with(dir.path(), &missing, args);
        assert_eq!(ran.code, 2, "{args:?}: {ran}");
        assert_eq!(ran.stderr.lines().count(), 1, "{args:?}: {ran}");
        assert_eq!(ran.stderr.matches("does not exist").count(), 1, "{ran}");
        assert!(
            ran.stderr.contains(&format!("`{name}` on 127.0.0.1:5432"))
                && ran.stderr.contains("create it first"),
            "{ran}"
        );
        assert!(!ran.stderr.contains("at line"), "{ran}");
    }
}

/// sqlx's notice that the migrations table exists is not news: a second
/// `migrate`, with LOG_LEVEL=info, prints its one line and logs nothing;
/// the line says there was nothing to apply, at the version the first
/// one reached.
async fn migrating_twice_prints_one_line(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    let ran = run(bouncer(dir.path())
        .env("DATABASE_URL", &db.url)
        .env("LOG_LEVEL", "info")
        .arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.stdout.lines().count(), 1, "{ran}");
    let (_, version) = backend.migrations();
    assert!(ran.stdout.starts_with("the "), "{ran}");
    assert!(
        ran.stdout.ends_with(&format!(
            " is up to date (schema version {version}); nothing to apply\n"
        )),
        "{ran}"
    );
    assert!(ran.stderr.is_empty(), "{ran}");
}

on_both_databases!(migrating_twice_prints_one_line);

/// Two replicas that migrate one new database at the same moment: one
/// applies every migration and says so, the other waits for it and finds
/// nothing to apply; neither claims the other's work.
async fn two_replicas_migrating_at_once_apply_each_migration_once(backend: Backend) {
    let (count, version) = backend.migrations();
    for _ in 0..3 {
        let dir = TempDir::new();
        let db = TestDb::create(&backend, dir.path()).await;
        let replicas: Vec<std::process::Child> = (0..2)
            .map(|_| {
                bouncer(dir.path())
                    .env("DATABASE_URL", &db.url)
                    .arg("migrate")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("the binary runs")
            })
            .collect();
        let mut said: Vec<String> = replicas
            .into_iter()
            .map(|child| {
                let out = child.wait_with_output().expect("the binary ends");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{stderr}");
                assert!(!stderr.contains("cannot lock"), "{stderr}");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect();
        said.sort();
        assert!(
            said[0].starts_with(&format!("applied {count} migrations to the ")),
            "{said:?}"
        );
        assert!(
            said[1].ends_with(&format!(
                " is up to date (schema version {version}); nothing to apply\n"
            )),
            "{said:?}"
        );
    }
}

on_both_databases!(two_replicas_migrating_at_once_apply_each_migration_once);

/// On SQLite a migrate waits while another process holds the database's
/// folder (here the test holds it, as a process opening or migrating the
/// file would), says so, and applies once it is free: the test above
/// passes by luck if its two processes do not overlap, this one cannot.
/// It waits before it opens the file, so that no two processes switch a
/// new file to WAL at once (one of them failed with "database is locked"):
/// while it waits, no file exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_migrate_waits_for_another_process_migrating() {
    let dir = TempDir::new();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let folder = std::fs::File::open(dir.path()).expect("the folder opens");
    folder.lock().expect("the test locks the folder");
    let mut child = bouncer(dir.path())
        .env("DATABASE_URL", &db.url)
        .env("LOG_LEVEL", "info")
        .arg("migrate")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "migrate went ahead while another process held the folder"
    );
    assert!(
        !dir.path().join("bouncer.db").exists(),
        "migrate opened the file while another process held the folder"
    );
    folder.unlock().expect("the test unlocks the folder");
    let out = child.wait_with_output().expect("the binary ends");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let (count, _) = Backend::Sqlite.migrations();
    assert!(
        stdout.starts_with(&format!("applied {count} migrations to the ")),
        "{stdout}"
    );
    assert!(
        stderr.contains("waiting for another process opening or migrating this database"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot lock"), "{stderr}");
}

/// The same for the lock `migrate` takes after opening: a store already
/// open does not migrate while another process holds the folder, and does
/// once it is free. Held from the test's own descriptor, which conflicts
/// with the store's as another process's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_that_is_open_waits_for_the_folder_to_migrate() {
    let dir = TempDir::new();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let store = Store::open(&test_settings(&db.url, dir.path()), Access::Create)
        .await
        .expect("the store opens");
    let folder = std::fs::File::open(dir.path()).expect("the folder opens");
    folder.lock().expect("the test locks the folder");
    let migrating = store.migrate();
    tokio::pin!(migrating);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), migrating.as_mut())
            .await
            .is_err(),
        "migrate went ahead while another process held the folder"
    );
    folder.unlock().expect("the test unlocks the folder");
    let migrated = migrating.await.expect("migrates once the folder is free");
    assert_eq!(
        (migrated.applied, migrated.version),
        Backend::Sqlite.migrations()
    );
}

/// Two `serve` processes starting at the same moment on one new SQLite
/// file (a second replica on the machine, a restart overlapping the old
/// process): both serve. Before opening took the folder's lock, 1 to 7 of
/// 20 such pairs lost a process to "database is locked" here; this test
/// only catches that when the two overlap (the one above always does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_starting_at_once_on_a_new_sqlite_file_both_serve() {
    for _ in 0..3 {
        let dir = TempDir::new();
        let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
        let mut serves: Vec<(Child, u16)> = ["a", "b"]
            .iter()
            .map(|name| {
                let port = free_port();
                let mut cmd = bouncer(dir.path());
                test_env(&mut cmd, &db.url, dir.path());
                let child = cmd
                    .env("SPOOL_PATH", dir.path().join(format!("{name}.spool")))
                    .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
                    .env("SNS_CONFIRM_MODE", "off")
                    .arg("serve")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("the binary runs");
                (child, port)
            })
            .collect();
        for (child, port) in &mut serves {
            if !answers(*port, "/readyz").await {
                let _ = child.kill();
                let _ = child.wait();
                let mut said = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
                }
                panic!("a serve did not become ready: {said}");
            }
        }
        for (mut child, _) in serves {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
