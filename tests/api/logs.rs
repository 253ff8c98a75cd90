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
async fn logs_of_a_hostile_sender(format: &str) -> String {
    let dir = TempDir::new();
    let port = crate::helpers::free_port();
    let mut cmd = bouncer(dir.path());
    test_env(
        &mut cmd,
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    let child = cmd
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "info")
        .env("LOG_FORMAT", format)
        .env("SNS_CONFIRM_MODE", "off")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    bouncer::outbound::install_default_provider();
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
        for _ in 0..100 {
            let sent = client
                .post(format!("{base}/sns"))
                .header("x-amz-sns-message-type", header)
                .body(msg.body())
                .send()
                .await;
            if let Ok(response) = sent {
                answers.push(response.status().as_u16());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let output = child.wait_with_output().expect("stops");
    assert_eq!(answers, [400, 200, 400, 403]);
    String::from_utf8_lossy(&output.stdout).into_owned()
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
