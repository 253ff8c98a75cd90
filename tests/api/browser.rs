//! A real browser for the page tests: Debian's Chromium, headless, driven
//! through chromedriver by a small W3C WebDriver client over reqwest (the
//! dozen commands the tests use; see docs/decisions.md for why not a
//! WebDriver crate). Each `Browser` is one chromedriver and one Chromium
//! with a fresh profile, in their own process group, all ended on drop.
//!
//! Chromium is started with the flags that keep it off the network. Where
//! Chromium or chromedriver is missing, a test is skipped with a notice,
//! except under CI (`CI` set), where it fails (as PostgreSQL does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for something on the page lasts before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
    profile: TempDir,
}

/// Where the test binaries put the screenshots (`target/tmp/screenshots`).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

fn missing(what: &str) -> Option<Browser> {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} is required under CI for the browser tests (apt-get install chromium chromium-driver; .ci/run does)"
        );
    }
    eprintln!(
        "SKIPPED: {what} not found; install chromium and chromium-driver to run the browser tests"
    );
    None
}

impl Browser {
    /// A fresh headless Chromium, or `None` (skip) where none is installed
    /// outside CI.
    pub async fn start() -> Option<Browser> {
        // reqwest is built without a default TLS provider (see src/outbound.rs).
        bouncer::outbound::install_default_provider();
        for (path, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")] {
            if !Path::new(path).exists() {
                return missing(&format!("{what} ({path})"));
            }
        }
        let port = crate::helpers::free_port();
        // Everything that may fail comes before the spawn: from the spawn on,
        // the `Browser` owns the processes and its drop ends them.
        let profile = TempDir::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: dropping the browser ends chromedriver and
        // every Chromium process it started, even after a panic.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            profile,
        };
        let ready = Instant::now();
        loop {
            let status = browser.http.get(format!("{base}/status")).send().await;
            if status.is_ok_and(|s| s.status().is_success()) {
                break;
            }
            assert!(
                ready.elapsed() < PATIENCE,
                "chromedriver did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .command(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await;
        let id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser.session = format!("{base}/session/{id}");
        Some(browser)
    }

    /// One WebDriver command; its `value`, or a panic with the driver's
    /// error.
    async fn command(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| json!({"value": {"error": format!("not JSON ({e}): {text}")}}));
        assert!(
            status.is_success(),
            "WebDriver {method} {url}: {status} {}",
            answer["value"]
        );
        answer["value"].clone()
    }

    async fn session_command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let body = (method != reqwest::Method::GET).then_some(body);
        self.command(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.session_command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns what it returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.session_command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until `condition` (a JavaScript expression) is truthy in the
    /// page, polling; returns its value.
    pub async fn wait_for(&self, what: &str, condition: &str) -> Value {
        let script = format!("return ({condition}) || null;");
        let started = Instant::now();
        loop {
            let value = self.run(&script, json!([])).await;
            if !value.is_null() {
                return value;
            }
            if started.elapsed() > PATIENCE {
                let errors = self.console_errors().await;
                panic!("timed out waiting for {what} ({condition}); console: {errors:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element `css` selects, once it is on the page.
    pub async fn find(&self, css: &str) -> String {
        let quoted = serde_json::to_string(css).expect("selector");
        self.wait_for(
            &format!("element {css}"),
            &format!("document.querySelector({quoted})"),
        )
        .await;
        let found = self
            .session_command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    /// Clicks the element `css` selects, as a person does.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Types `text` into the field `css` selects, after emptying it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The visible text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.session_command(
            reqwest::Method::GET,
            &format!("/element/{id}/text"),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// What the page wrote with `console.error`, uncaught exceptions, and
    /// resources that failed to load, since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .session_command(
                reqwest::Method::POST,
                "/se/log",
                json!({ "type": "browser" }),
            )
            .await;
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The page as it shows now, as a PNG file at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self
            .session_command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Sizes the window so that `height` CSS pixels of the page show.
    pub async fn resize(&self, width: u32, height: u32) {
        self.session_command(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to end Chromium (it removes its own files), then
        // end the whole process group whatever happened.
        if !self.session.is_empty() {
            let session = self.session.clone();
            crate::helpers::cleanup_in_drop(async move {
                let client = reqwest::Client::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), client.delete(&session).send())
                        .await;
            });
        }
        let group = self.driver.id() as libc::pid_t;
        // SAFETY: signals the process group this browser created; no memory
        // is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
