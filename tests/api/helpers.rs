//! Starts the real service on port 0 against a fresh database (a SQLite
//! file in a temporary folder, or a new PostgreSQL database), with the
//! TEST-ONLY signing certificate pinned, and talks to it over HTTP: `POST
//! /sns` and health on the public listener, `/v1` and `/metrics` on the
//! admin listener (also on port 0).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bouncer::app::{Application, Hooks};
use bouncer::config::Settings;
use serde_json::Value;
use sqlx::{Connection, Executor, PgPool, SqlitePool};

use crate::signing::{Msg, TEST_CERT_FILE, TEST_CERT_URL, TOPIC};

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(backend) = $crate::helpers::Backend::postgres().await {
                    super::$name(backend).await
                }
            }
        }
    )*};
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The server-level URL (no database name).
    Postgres {
        server: String,
    },
}

impl Backend {
    /// The migrations the repository holds for this backend, and the
    /// newest one's version: what `bouncer migrate` applies to a new
    /// database.
    pub fn migrations(&self) -> (usize, i64) {
        let folder = match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        let versions: Vec<i64> = std::fs::read_dir(&dir)
            .expect("the migrations folder")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                if !name.ends_with(".sql") || name.contains(".down.") {
                    return None;
                }
                name.split_once('_')?.0.parse().ok()
            })
            .collect();
        (versions.len(), versions.into_iter().max().unwrap_or(0))
    }

    /// PostgreSQL from `TEST_POSTGRES_URL` (default: the local server). If it
    /// cannot be reached the test is skipped, except under CI (`CI` set),
    /// where a missing PostgreSQL fails the test.
    pub async fn postgres() -> Option<Backend> {
        let url = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match sqlx::PgConnection::connect(&url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                let server = url
                    .rsplit_once('/')
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or(url);
                Some(Backend::Postgres { server })
            }
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL is required under CI but cannot be reached at {url}: {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: PostgreSQL not reachable at {url} ({e}); set TEST_POSTGRES_URL"
                );
                None
            }
        }
    }
}

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("bouncer-test-{}", unique_name()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// The database a test owns; PostgreSQL ones are dropped with it.
pub struct TestDb {
    pub url: String,
    pub pool: Pool,
    drop_with: Option<(String, String)>,
}

#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl TestDb {
    pub async fn create(backend: &Backend, dir: &Path) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite:{}", dir.join("bouncer.db").display());
                TestDb {
                    url,
                    pool: Pool::Sqlite(
                        SqlitePool::connect_lazy(&format!(
                            "sqlite:{}",
                            dir.join("bouncer.db").display()
                        ))
                        .expect("sqlite pool"),
                    ),
                    drop_with: None,
                }
            }
            Backend::Postgres { server } => {
                let name = format!("bouncer_test_{}", unique_name());
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                    .await
                    .expect("connect to PostgreSQL");
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let url = format!("{server}/{name}");
                TestDb {
                    pool: Pool::Postgres(PgPool::connect_lazy(&url).expect("pg pool")),
                    url,
                    drop_with: Some((server.clone(), name)),
                }
            }
        }
    }

    /// A single number from SQL with `$1` bound to `arg` (or no argument).
    pub async fn scalar(&self, sql: &'static str, arg: Option<&str>) -> i64 {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let q = sqlx::query_scalar::<_, i64>(sql);
                let q = match arg {
                    Some(a) => q.bind(a.to_owned()),
                    None => q,
                };
                q.fetch_one(pool).await.expect("scalar query")
            }
            Pool::Postgres(pool) => {
                let q = sqlx::query_scalar::<_, i64>(sql);
                let q = match arg {
                    Some(a) => q.bind(a.to_owned()),
                    None => q,
                };
                q.fetch_one(pool).await.expect("scalar query")
            }
        }
    }

    /// A single text value from SQL with `$1` bound to `arg`.
    pub async fn text(&self, sql: &'static str, arg: &str) -> Option<String> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar::<_, Option<String>>(sql)
                .bind(arg.to_owned())
                .fetch_optional(pool)
                .await
                .expect("text query")
                .flatten(),
            Pool::Postgres(pool) => sqlx::query_scalar::<_, Option<String>>(sql)
                .bind(arg.to_owned())
                .fetch_optional(pool)
                .await
                .expect("text query")
                .flatten(),
        }
    }

    /// Runs one statement (a test's own setup).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Sqlite(pool) => pool.execute(sql).await.map(|_| ()),
            Pool::Postgres(pool) => pool.execute(sql).await.map(|_| ()),
        }
        .expect("statement runs");
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    pub async fn count_messages(&self, id: &str) -> i64 {
        self.scalar(
            "SELECT COUNT(*) FROM sns_messages WHERE message_id = $1",
            Some(id),
        )
        .await
    }

    /// The stored SNS body of message `id`, as kept.
    pub async fn stored_body(&self, id: &str) -> Option<String> {
        self.text("SELECT body FROM sns_messages WHERE message_id = $1", id)
            .await
    }

    pub async fn total_messages(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM sns_messages", None).await
    }
}

/// Runs async clean-up from a `Drop` (which cannot await, and may run
/// inside a runtime): on its own thread with a short-lived runtime, waiting
/// for it to finish.
pub fn cleanup_in_drop(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.drop_with.take() else {
            return;
        };
        let pool = self.pool.clone();
        // Drop runs outside async: the database is removed on a runtime of
        // its own, so that tests leave nothing behind.
        cleanup_in_drop(async move {
            if let Pool::Postgres(p) = pool {
                p.close().await;
            }
            if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await
            {
                let _ = admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await;
            }
        });
    }
}

pub struct TestApp {
    /// The public listener: `POST /sns`, `/healthz`, `/readyz`.
    pub address: String,
    /// The admin listener: `/v1`, `/metrics`.
    pub admin_address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub hooks: Hooks,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<()>,
    pub db: Arc<TestDb>,
    pub dir: Arc<TempDir>,
}

/// A port nothing listens on now, for a binary the test starts.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Whether a binary the test started on `port` answers 2xx at `path`
/// within 10 s (`/healthz` once it listens, `/readyz` once its database
/// answers too).
pub async fn answers(port: u16, path: &str) -> bool {
    // reqwest needs rustls's provider, which no other test may have
    // installed yet in this process (run alone, such tests panicked).
    bouncer::outbound::install_default_provider();
    let url = format!("http://127.0.0.1:{port}{path}");
    for _ in 0..200 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The settings every test starts from: the test topic allowed, the test
/// certificate pinned, a fresh database and spool.
pub fn test_settings(db_url: &str, dir: &Path) -> Settings {
    let mut s = Settings::defaults();
    s.database_url = db_url.to_owned();
    s.listen_addr = "127.0.0.1:0".into();
    s.admin_listen_addr = "127.0.0.1:0".into();
    s.spool_path = dir.join("bouncer.spool");
    s.sns_topic_arns = vec![TOPIC.to_owned()];
    s.sns_cert_pins = vec![format!(
        "{TEST_CERT_URL}={}",
        fixture(TEST_CERT_FILE).display()
    )];
    s.http_workers = 2;
    s.log_level = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
    // SQLite's busy time-out stays the service's default (5 s): another
    // connection's commit (an alert's delivery, a resume), its fsync
    // included, can hold the write lock for hundreds of milliseconds when
    // the tests share the disk, and a batch that waits longer goes to the
    // spool: at 200 ms a guard test once got "spooled" where it expected
    // "stored". The tests that hold the lock on purpose, to see the spool
    // take over, set a short one (`OUTAGE_BUSY_TIMEOUT_MS`).
    // Short on PostgreSQL, so that outages fail fast. SQLite keeps the
    // service's default: creating a test's database file (WAL,
    // synchronous=FULL, a few fsyncs) once took over 500 ms while Chromium
    // and a dozen other tests shared the two cores and the disk.
    if !db_url.starts_with("sqlite:") {
        s.database_acquire_timeout_ms = 500;
    }
    s.shutdown_timeout_secs = 5;
    // No test reaches AWS: confirmation tests choose their mode and stand-in.
    s.sns_confirm_mode = bouncer::sns::confirm::ConfirmMode::Off;
    s
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_, _| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut Settings, &mut Hooks),
) -> TestApp {
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::create(&backend, dir.path()).await);
    let mut settings = test_settings(&db.url, dir.path());
    let mut hooks = Hooks::default();
    configure(&mut settings, &mut hooks);
    start(settings, hooks, db, dir).await
}

/// Starts the service with these settings on an existing database.
pub async fn start(
    settings: Settings,
    hooks: Hooks,
    db: Arc<TestDb>,
    dir: Arc<TempDir>,
) -> TestApp {
    // The first app's log writer serves every test of the process.
    if let Some(log) = bouncer::telemetry::init(&settings.log_level, settings.log_format) {
        std::mem::forget(log);
    }
    bouncer::outbound::install_default_provider();
    let app = Application::build(settings.clone(), hooks.clone())
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
    let handle = app.server_handle();
    let task = tokio::spawn(async move {
        let _ = app.run_until_stopped().await;
    });
    TestApp {
        address,
        admin_address,
        client: reqwest::Client::new(),
        settings,
        hooks,
        handle,
        task,
        db,
        dir,
    }
}

impl TestApp {
    /// POSTs a body to /sns with the given message-type header.
    pub async fn post_raw(
        &self,
        body: impl Into<String>,
        message_type: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/sns", self.address))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(body.into());
        if let Some(t) = message_type {
            request = request.header("x-amz-sns-message-type", t);
        }
        answer(request.send().await.expect("request reaches the service")).await
    }

    /// POSTs a signed message the way SNS does (header from its Type).
    pub async fn post(&self, msg: &Msg) -> (u16, Value) {
        self.post_raw(msg.body(), Some(msg.get("Type"))).await
    }

    /// GETs a path of the public listener.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_from(&self.address, path).await
    }

    /// GETs a path of the admin listener (`/v1`, `/metrics`), without a token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.get_from(&self.admin_address, path).await
    }

    async fn get_from(&self, base: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("request reaches the service");
        answer(response).await
    }

    /// Stops the server gracefully and waits for the writer to finish.
    pub async fn stop(self) -> (Arc<TestDb>, Arc<TempDir>, Settings, Hooks) {
        self.handle.stop(true).await;
        let _ = self.task.await;
        (self.db, self.dir, self.settings, self.hooks)
    }
}

/// Status and body of an answer; the body as JSON when it is JSON.
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Asserts a success answer's status code and `status` field.
pub fn assert_status(answer: &(u16, Value), status: u16, outcome: &str) {
    assert_eq!(
        (answer.0, answer.1["status"].as_str()),
        (status, Some(outcome)),
        "{}",
        answer.1
    );
}

/// Asserts an error answer: status and stable code.
pub fn assert_refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "status for {code}: {}", answer.1);
    assert_eq!(answer.1["error"], code, "error code: {}", answer.1);
    assert!(
        answer.1["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail: {}",
        answer.1
    );
}

/// Bytes in the spool's segment files (`SPOOL_PATH` is a directory).
pub fn spooled_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `check` until it holds or 10 seconds pass.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, std::time::Duration::from_secs(10), check).await;
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually_within<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A TCP forwarder to PostgreSQL that a test can cut, hang and restore, to
/// play a database outage for the service while the test keeps its own
/// access.
pub struct Outage {
    pub port: u16,
    state: tokio::sync::watch::Sender<Link>,
}

/// What the forwarder does with the service's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Connections are dropped: the server is gone.
    Cut,
    /// Connections stay open and nothing passes: a partition that drops
    /// packets, or a server that stopped answering.
    Hung,
}

impl Outage {
    pub async fn forward_to(target: SocketAddr) -> Outage {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (state, watch) = tokio::sync::watch::channel(Link::Up);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                let now = *watch.borrow();
                match now {
                    Link::Cut => drop(inbound),
                    // Held open, unanswered, until the link is restored.
                    Link::Hung => {
                        tokio::spawn(async move {
                            let _ = watch.wait_for(|link| *link == Link::Up).await;
                            drop(inbound);
                        });
                    }
                    Link::Up => {
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await
                            else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watch.wait_for(|link| *link != Link::Up) => {}
                            }
                            // A hang keeps both ends open, silent, until the
                            // link is restored.
                            if *watch.borrow() == Link::Hung {
                                let _ = watch.wait_for(|link| *link == Link::Up).await;
                            }
                        });
                    }
                }
            }
        });
        Outage { port, state }
    }

    pub fn cut(&self) {
        let _ = self.state.send(Link::Cut);
    }

    pub fn hang(&self) {
        let _ = self.state.send(Link::Hung);
    }

    pub fn restore(&self) {
        let _ = self.state.send(Link::Up);
    }
}

/// The database of a running app, taken away and given back: on SQLite
/// another connection holds the write lock (a backup, a long migration); on
/// PostgreSQL the app's connections go through an [`Outage`] forwarder that
/// is cut.
pub struct Away {
    outage: Arc<Outage>,
    lock: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
}

/// SQLite's busy time-out for tests whose outage is a held write lock.
pub const OUTAGE_BUSY_TIMEOUT_MS: u64 = 200;

/// Starts an app whose PostgreSQL connections (if any) go through a
/// forwarder, so that [`take_database_away`] can cut them.
pub async fn spawn_app_behind_forwarder(
    backend: Backend,
    configure: impl FnOnce(&mut Settings, &mut Hooks),
) -> (TestApp, Arc<Outage>) {
    let outage = Arc::new(Outage::forward_to("127.0.0.1:5432".parse().expect("addr")).await);
    let port = outage.port;
    let app = spawn_app_with(backend, move |s, hooks| {
        s.database_url = s
            .database_url
            .replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
        // The SQLite "outage" of `take_database_away` is a held lock: the
        // writer gives up on it, and spools, after this long.
        s.sqlite_busy_timeout_ms = OUTAGE_BUSY_TIMEOUT_MS;
        configure(s, hooks);
    })
    .await;
    (app, outage)
}

pub async fn take_database_away(app: &TestApp, outage: &Arc<Outage>) -> Away {
    let lock = match &app.db.pool {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await.expect("connection");
            conn.execute("BEGIN EXCLUSIVE").await.expect("write lock");
            Some(conn)
        }
        Pool::Postgres(_) => {
            outage.cut();
            None
        }
    };
    Away {
        outage: outage.clone(),
        lock,
    }
}

impl Away {
    pub async fn give_back(mut self) {
        match self.lock.as_mut() {
            Some(conn) => {
                conn.execute("ROLLBACK").await.expect("release");
            }
            None => self.outage.restore(),
        }
    }
}
