//! Log lines (SPEC §7: one line per SNS message) stay one line of plain text
//! whatever a sender writes: the `bouncer serve` binary, with text or JSON
//! logs to a pipe, gets a `MessageId` and an SES recipient holding line
//! breaks and terminal escape codes; the first is refused, the second
//! logged escaped.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{bouncer, test_env};
use crate::helpers::TempDir;
use crate::signing::{Msg, TOPIC, now_text};

/// A forged log line and terminal control sequences (clear the screen, set
/// the window title).
const INJECTED: &str =
    "\n2026-11-25T08:00:00.000000Z  INFO sns message outcome=stored\u{1b}[2J\u{1b}]0;owned\u{7}\r";

const MISMATCHED_ID: &str = "a-message-sent-with-another-type";

/// What `serve` logged to standard output while a sender's message with
/// line breaks and escape codes came in, in `format` (`text` or `json`).
/// A `bouncer serve` that is killed if a test fails before it stops it.
struct Serving(Option<std::process::Child>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `bouncer serve` on SQLite in `dir`, logging at `level` in `format` to
/// a pipe, and its public listener's port.
fn serve_logging(dir: &TempDir, format: &str, level: &str) -> (Serving, u16) {
    let port = crate::helpers::free_port();
    let mut cmd = bouncer(dir.path());
    test_env(
        &mut cmd,
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    let child = cmd
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", level)
        .env("LOG_FORMAT", format)
        .env("SNS_CONFIRM_MODE", "off")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    bouncer::outbound::install_default_provider();
    (Serving(Some(child)), port)
}

/// POSTs `msg` to `/sns` with `header` as its type, trying again while the
/// service starts; its status.
async fn post_when_up(client: &reqwest::Client, port: u16, msg: &Msg, header: &str) -> u16 {
    for _ in 0..100 {
        let sent = client
            .post(format!("http://127.0.0.1:{port}/sns"))
            .header("x-amz-sns-message-type", header)
            .body(msg.body())
            .send()
            .await;
        if let Ok(response) = sent {
            return response.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not answer");
}

/// Stops `serve` with SIGTERM; what it wrote to standard output.
fn stop_and_read(mut serving: Serving) -> String {
    let Some(child) = serving.0.take() else {
        return String::new();
    };
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let output = child.wait_with_output().expect("stops");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn logs_of_a_hostile_sender(format: &str) -> String {
    let dir = TempDir::new();
    let (child, port) = serve_logging(&dir, format, "info");
    let client = reqwest::Client::new();
    // An SNS field holding a control character is refused before it is
    // read (SNS signs its fields one per line); a recipient in the signed
    // SES message is the sender's text that reaches a log line.
    let refused = Msg::notification(TOPIC, "x")
        .set("MessageId", &format!("id{INJECTED}"))
        .sign();
    let ses = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": format!("id{INJECTED}@example.com")},
                {"emailAddress": "real@example.com"},
            ],
            "timestamp": now_text(), "feedbackId": "fb-logs",
        },
        "mail": {"timestamp": now_text(), "messageId": "ses-logs", "destination": []},
    });
    let stored = Msg::notification(TOPIC, &ses.to_string()).sign();
    // Refused for its header before its fields are checked: its line still
    // names it.
    let mismatched = Msg::notification(TOPIC, "x")
        .set("MessageId", MISMATCHED_ID)
        .sign();
    // A topic no ARN is as long as (refused as not allowed): its line is
    // not as long as the body.
    let long_topic = Msg::notification(&format!("arn:{}", "a".repeat(20_000)), "x").sign();
    let mut answers = Vec::new();
    for (msg, header) in [
        (&refused, "Notification"),
        (&stored, "Notification"),
        (&mismatched, "SubscriptionConfirmation"),
        (&long_topic, "Notification"),
    ] {
        answers.push(post_when_up(&client, port, msg, header).await);
    }
    // Requests the HTTP layer cannot parse are answered 400 and are not
    // worth an `error` line each: anyone can send them.
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects");
        conn.write_all(b"POST /sns HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            .await
            .expect("writes");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let logs = stop_and_read(child);
    assert_eq!(answers, [400, 200, 400, 403]);
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_never_holds_a_raw_line_break_or_escape_from_the_sender() {
    let logs = logs_of_a_hostile_sender("text").await;
    let escaped = "\\n2026-11-25T08:00:00.000000Z  INFO sns message outcome=stored\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r";
    assert!(
        logs.lines()
            .any(|l| l.contains("SES event recipient skipped")
                && l.contains(&format!("id{escaped}@example.com"))),
        "{logs}"
    );
    assert!(
        !logs.contains(['\u{1b}', '\u{7}', '\r']),
        "a control character reached the log: {logs:?}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("2026-11-25T08:00:00.000000Z")),
        "a forged line reached the log: {logs}"
    );
    assert!(
        !logs.lines().any(|l| l.contains("ERROR")),
        "a client's malformed request was logged as an error: {logs}"
    );
    // Each message is one line, and a refused one names what its body
    // says it is (escaped like the rest).
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("sns message") && !l.contains("recipient skipped"))
            .count(),
        4,
        "{logs}"
    );
    let line_of = |outcome: &str| {
        logs.lines()
            .find(|l| l.contains("sns message") && l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no line for {outcome}: {logs}"))
            .to_owned()
    };
    let named = format!("message_type=Notification topic={TOPIC}");
    let mismatch = line_of("message_type_mismatch");
    assert!(
        mismatch.contains(&format!("message_id={MISMATCHED_ID} {named}")),
        "{mismatch}"
    );
    // In the line's own fields, spaces, `=` and `"` are escaped too: the
    // forged text cannot pose as the line's fields.
    let as_word = escaped.replace(' ', "\\u{20}").replace('=', "\\u{3d}");
    let malformed = line_of("malformed_field");
    assert!(
        malformed.contains(&format!("message_id=id{as_word} {named}")),
        "{malformed}"
    );
    let long = line_of("topic_not_allowed");
    assert!(
        long.contains(&format!(" topic=arn:{} outcome=", "a".repeat(252))) && long.len() < 1_000,
        "{long}"
    );
}

/// The same in JSON (the Docker image's default): each line is one JSON
/// object, one per SNS message, with nothing raw from the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_line_is_one_object_whatever_the_sender_wrote() {
    let logs = logs_of_a_hostile_sender("json").await;
    assert!(
        !logs.contains(['\u{1b}', '\u{7}', '\r']),
        "a control character reached the log: {logs:?}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    let message = |v: &serde_json::Value| {
        v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        lines.iter().filter(|v| message(v) == "sns message").count(),
        4,
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["outcome"] == "message_type_mismatch"
                && v["fields"]["message_id"] == MISMATCHED_ID
                && v["fields"]["topic"] == TOPIC),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|v| message(v) == "SES event recipient skipped"),
        "{logs}"
    );
    assert!(
        !lines.iter().any(|v| v["level"] == "ERROR"),
        "a client's malformed request was logged as an error: {logs}"
    );
}

/// A flood of refused messages (a second topic pointed at bouncer by
/// mistake, or forgeries) writes at most 10 of their lines in a second,
/// says when it starts leaving lines out, and how many it left out once the
/// second has ended, whether or not another refusal comes, and at
/// shutdown; every message taken is still logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_counted_not_logged_line_by_line() {
    let dir = TempDir::new();
    let (child, port) = serve_logging(&dir, "json", "info");
    let client = reqwest::Client::new();
    let (first, second) = (foreigners(1..60), foreigners(60..90));
    let taken = Msg::notification(TOPIC, "taken during the flood")
        .set("MessageId", "taken-during-flood")
        .sign();
    assert_eq!(
        post_when_up(&client, port, &foreign(0), "Notification").await,
        403
    );
    flood(&client, port, &first).await;
    assert_eq!(
        post_when_up(&client, port, &taken, "Notification").await,
        200
    );
    // The flood's count is written within about a second of its end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The second flood: refusals, and the message taken sent again (as
    // anyone holding it can), answered 200 and logged within the budget.
    let again = futures_util::future::join_all(
        (0..20).map(|_| post_when_up(&client, port, &taken, "Notification")),
    );
    let (again, ()) = tokio::join!(again, flood(&client, port, &second));
    assert!(again.iter().all(|&status| status == 200), "{again:?}");
    // And the second's at shutdown.
    let logs = stop_and_read(child);

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let message = |v: &serde_json::Value| {
        v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let is_refusal = |v: &serde_json::Value| {
        message(v) == "sns message" && v["fields"]["outcome"] == "topic_not_allowed"
    };
    let is_duplicate = |v: &serde_json::Value| {
        message(v) == "sns message" && v["fields"]["outcome"] == "duplicate"
    };
    let is_count = |v: &serde_json::Value| v["fields"]["left_out"].as_u64().is_some();
    let refused = lines.iter().filter(|v| is_refusal(v)).count() as u64;
    let duplicates = lines.iter().filter(|v| is_duplicate(v)).count() as u64;
    assert!(duplicates <= 10, "{duplicates} duplicates logged: {logs}");
    let counts: Vec<&serde_json::Value> = lines.iter().filter(|v| is_count(v)).collect();
    let left_out: u64 = counts
        .iter()
        .filter_map(|v| v["fields"]["left_out"].as_u64())
        .sum();
    assert_eq!(
        refused + duplicates + left_out,
        110,
        "each refusal and repeat is logged or counted: {logs}"
    );
    // Ten in the first second, then the line that says the rest are left
    // out; the count comes before the second flood's first line, with
    // when the first left out was.
    let first_stop = lines
        .iter()
        .position(|v| message(v).starts_with("more refused or repeated SNS messages"))
        .unwrap_or_else(|| panic!("none left out: {logs}"));
    assert_eq!(
        lines[..first_stop].iter().filter(|v| is_refusal(v)).count(),
        10,
        "{logs}"
    );
    let second_flood = lines
        .iter()
        .position(|v| {
            is_duplicate(v)
                || is_refusal(v)
                    && v["fields"]["message_id"]
                        .as_str()
                        .and_then(|id| id.strip_prefix("flood-"))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n >= 60)
        })
        .unwrap_or_else(|| panic!("the second flood was not logged: {logs}"));
    let first_count = lines
        .iter()
        .position(is_count)
        .unwrap_or_else(|| panic!("no count: {logs}"));
    // Written by the look every second, not by the next refusal: well
    // before the second flood, which began 2.5 s after the first ended.
    let at = |v: &serde_json::Value| {
        bouncer::time::Timestamp::parse_rfc3339(v["timestamp"].as_str().unwrap_or_default())
            .map(|t| t.unix_millis())
            .unwrap_or_else(|| panic!("no timestamp: {v}"))
    };
    assert!(
        at(&lines[second_flood]) - at(&lines[first_count]) >= 500,
        "{logs}"
    );
    let since = lines[first_count]["fields"]["since"]
        .as_str()
        .unwrap_or_default();
    assert!(
        bouncer::time::Timestamp::parse_rfc3339(since).is_some(),
        "since: {since}"
    );
    // The second flood's count, written at shutdown, before `stopped`.
    let stopped = lines
        .iter()
        .position(|v| message(v) == "stopped")
        .unwrap_or_else(|| panic!("not stopped: {logs}"));
    let last_count = lines.iter().rposition(is_count).unwrap_or_default();
    assert!(second_flood < last_count && last_count < stopped, "{logs}");
    assert!(
        lines.iter().any(|v| message(v) == "sns message"
            && v["fields"]["message_id"] == "taken-during-flood"
            && v["fields"]["outcome"] == "stored"),
        "a message taken during the flood was not logged: {logs}"
    );
}

/// Where refusal lines are not written at all (`LOG_LEVEL=warn`), a flood
/// writes no line about leaving them out either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_warn_a_flood_of_refusals_writes_nothing() {
    let dir = TempDir::new();
    let (child, port) = serve_logging(&dir, "json", "warn");
    let client = reqwest::Client::new();
    let messages = foreigners(1..40);
    assert_eq!(
        post_when_up(&client, port, &foreign(0), "Notification").await,
        403
    );
    flood(&client, port, &messages).await;
    let logs = stop_and_read(child);
    assert!(!logs.contains("refused SNS messages"), "{logs}");
    assert!(!logs.contains("flood-"), "{logs}");
}

/// With `SNS_CONFIRM_MODE=off` nothing is asked of SNS: the log says the
/// subscription is left pending, as `/v1/subscriptions` does, never that
/// it was confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_off_logs_a_pending_subscription_not_a_confirmed_one() {
    let dir = TempDir::new();
    let (child, port) = serve_logging(&dir, "text", "info");
    let client = reqwest::Client::new();
    let confirmation = Msg::subscription_confirmation(TOPIC).sign();
    assert_eq!(
        post_when_up(&client, port, &confirmation, "SubscriptionConfirmation").await,
        200
    );
    let logs = stop_and_read(child);
    assert!(
        logs.lines().any(|l| l.contains("subscription left pending")
            && l.contains("SNS_CONFIRM_MODE is off")
            && l.contains(&format!("topic={TOPIC}"))),
        "{logs}"
    );
    assert!(!logs.contains("subscription confirmed"), "{logs}");
}

/// A message of a topic bouncer does not take, refused 403.
fn foreign(i: usize) -> Msg {
    Msg::notification("arn:aws:sns:us-east-1:999999999999:other", "x")
        .set("MessageId", &format!("flood-{i}"))
        .sign()
}

/// The messages `range` of [`foreign`].
fn foreigners(range: std::ops::Range<usize>) -> Vec<Msg> {
    range.map(foreign).collect()
}

/// Sends `messages` at once (signed before, so that they arrive within a
/// second); each is refused.
async fn flood(client: &reqwest::Client, port: u16, messages: &[Msg]) {
    let answers = futures_util::future::join_all(
        messages
            .iter()
            .map(|m| post_when_up(client, port, m, "Notification")),
    )
    .await;
    assert!(answers.iter().all(|&status| status == 403), "{answers:?}");
}

/// `serve` with a log reader that stopped (a pipe nobody reads), after 600
/// messages, more than the pipe holds in lines, each answered 200, and
/// `/healthz` answered after them. (Written directly, the 300th line or so
/// blocked its request, and every request after it.) Its standard output,
/// unread.
async fn six_hundred_with_a_stopped_reader(dir: &TempDir) -> (Serving, std::process::ChildStdout) {
    let (mut serving, port) = serve_logging(dir, "text", "info");
    let stdout = serving
        .0
        .as_mut()
        .and_then(|child| child.stdout.take())
        .expect("stdout");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let messages: Vec<Msg> = (0..600)
        .map(|i| Msg::notification(TOPIC, &format!("line {i}")).sign())
        .collect();
    assert_eq!(
        post_when_up(&client, port, &messages[0], "Notification").await,
        200
    );
    let post = |msg: &Msg| {
        client
            .post(format!("http://127.0.0.1:{port}/sns"))
            .header("x-amz-sns-message-type", "Notification")
            .body(msg.body())
            .send()
    };
    for batch in messages[1..].chunks(16) {
        let answers: Vec<u16> = futures_util::future::join_all(batch.iter().map(post))
            .await
            .into_iter()
            .map(|sent| sent.map_or(0, |r| r.status().as_u16()))
            .collect();
        assert!(answers.iter().all(|&status| status == 200), "{answers:?}");
    }
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(health.ok(), Some(200));
    (serving, stdout)
}

/// A log reader that stops stops nothing, and once it reads again every
/// line is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_log_reader_stops_nothing() {
    let dir = TempDir::new();
    let (serving, mut stdout) = six_hundred_with_a_stopped_reader(&dir).await;
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut logs);
        logs
    });
    let _ = stop_and_read(serving);
    let logs = reader.join().expect("reads");
    let lines = logs
        .lines()
        .filter(|l| l.contains("sns message") && l.contains("outcome=\"stored\""))
        .count();
    assert_eq!(lines, 600, "{}", &logs[logs.len().saturating_sub(2000)..]);
    assert!(
        logs.contains("stopped"),
        "{}",
        &logs[logs.len().saturating_sub(2000)..]
    );
}

/// With a log reader that never reads again, SIGTERM still ends `serve`:
/// the lines held get 5 s, and standard error says how many were not
/// written. (A library writer tried first hung until the reader read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_log_reader_does_not_hold_up_shutdown() {
    let dir = TempDir::new();
    let (mut serving, mut stdout) = six_hundred_with_a_stopped_reader(&dir).await;
    let Some(child) = serving.0.take() else {
        panic!("not running");
    };
    let started = std::time::Instant::now();
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let (done, ended) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    let in_time = ended.recv_timeout(Duration::from_secs(20)).is_ok();
    if !in_time {
        // So that the test fails rather than hangs, whatever held it.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    }
    let output = waiter.join().expect("waits").expect("output");
    assert!(in_time, "still running 20 s after SIGTERM");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    // What the pipe took is there; if lines were still held, standard
    // error says how many were not written (on a kernel whose pipes hold
    // all 600 lines, none were).
    let mut written = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut written);
    let stored = written
        .lines()
        .filter(|l| l.contains("outcome=\"stored\""))
        .count();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stored < 600 || !written.contains("stopped") {
        assert!(
            stderr.contains("log lines not written: standard output did not take them within 5 s"),
            "{stored} lines written; {stderr}"
        );
    }
}
