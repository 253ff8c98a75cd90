//! Clients that stall in the middle of a request body do not starve the
//! others: health and real messages are answered while hundreds stall, and
//! each stalled body is answered 408 and its connection closed once
//! `HTTP_BODY_TIMEOUT_MS` passes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, assert_status, spawn_app_with};
use crate::signing::{Msg, TOPIC};

/// Sends the head of a body that announces `declared` bytes and `sent` of
/// them, then stalls.
async fn stall_after(address: &str, declared: usize, sent: &[u8]) -> TcpStream {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /sns HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
         x-amz-sns-message-type: Notification\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(sent).await.expect("part of the body");
    stream
}

/// A body that announces 200,000 bytes and sends 1,000.
async fn stall(address: &str) -> TcpStream {
    stall_after(address, 200_000, &[b'{'; 1000]).await
}

/// The server answers the stalled request 408 with `code` and closes.
async fn assert_closed_with_408(stream: &mut TcpStream, code: &str) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok(), "{read:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(code), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_do_not_starve_health_or_real_messages() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| s.http_body_timeout_ms = 1500).await;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        stalled.push(stall(&app.address).await);
    }
    let health_started = Instant::now();
    assert_eq!(app.get("/healthz").await.0, 200);
    assert!(health_started.elapsed() < Duration::from_millis(500));
    let msg_started = Instant::now();
    assert_status(
        &app.post(&Msg::notification(TOPIC, "a real one").sign())
            .await,
        200,
        "stored",
    );
    assert!(msg_started.elapsed() < Duration::from_millis(1000));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the checks above ran while every body was still stalled"
    );

    // Past the time limit each stalled request is answered 408 and closed.
    for stream in stalled.iter_mut().take(20) {
        assert_closed_with_408(stream, "body_timeout").await;
    }
    app.stop().await;
}

/// Clients that send a head and then nothing hold their connections: past
/// `HTTP_MAX_CONNECTIONS`, real messages wait in the backlog. An outside
/// trial saw waits of up to 35 s and a 408 with 2,000 such clients against
/// the default 1,024, each holding its slot for `HTTP_BODY_TIMEOUT_MS`.
/// Once three in four connections are reading a body, one still arriving
/// after a second gives way (408 `body_too_slow`, closed), so a real
/// message is answered in about a second, not after the body time-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_give_way_when_they_hold_most_connections() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        // The least the cap can be.
        s.http_max_connections = 64;
        s.http_body_timeout_ms = 20_000;
    })
    .await;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..64 {
        stalled.push(stall_after(&app.address, 2000, b"").await);
    }
    // Every slot is taken; this one waits in the backlog until the stalled
    // bodies give way.
    assert_status(
        &app.post(&Msg::notification(TOPIC, "behind the crowd").sign())
            .await,
        200,
        "stored",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}, not after the body time-out",
        started.elapsed()
    );
    // Enough of them gave way to bring the crowd under three in four of
    // the connections (48 of 64); the others wait for the body time-out.
    let answers = futures_util::future::join_all(stalled.iter_mut().map(|stream| async {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }))
    .await;
    let gave_way = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408") && a.contains("body_too_slow"))
        .count();
    assert!(gave_way >= 17, "{gave_way} of 64 gave way: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.contains("body_too_slow")),
        "{answers:?}"
    );
    app.stop().await;
}

/// Sends the head of a chunked request and `sent` of its body, then stalls.
async fn stall_chunked(address: &str, sent: &[u8]) -> TcpStream {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /sns HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
         x-amz-sns-message-type: Notification\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(sent).await.expect("part of the body");
    stream
}

/// A chunked body that stalls, or passes the cap and then stalls, is
/// answered and its connection closed, as one with a `Content-Length` is:
/// the rest of the body is not waited for (a client could otherwise hold
/// the connection, one of `HTTP_MAX_CONNECTIONS`, for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_chunked_body_is_answered_and_its_connection_closed() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        s.http_body_timeout_ms = 1000;
        s.sns_max_body_bytes = 4096;
    })
    .await;
    // A chunk announced as 0x100 bytes, 50 of them sent; the head alone.
    let mut half_chunk =
        stall_chunked(&app.address, &[b"100\r\n".as_slice(), &[b'{'; 50]].concat()).await;
    let mut head_only = stall_chunked(&app.address, b"").await;
    assert_closed_with_408(&mut half_chunk, "body_timeout").await;
    assert_closed_with_408(&mut head_only, "body_timeout").await;
    // Past the cap (4 KiB) in one chunk, then a stall: 413 at once, closed.
    let mut large = stall_chunked(
        &app.address,
        &[b"2000\r\n".as_slice(), &[b'{'; 0x2000]].concat(),
    )
    .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), large.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok(), "{read:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    app.stop().await;
}

/// A client that hangs up in the middle of a body is counted as such, not
/// as a sender's malformed JSON: an operator reading the refusals must be
/// able to tell a flaky network from a broken sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_body_is_counted_apart_from_malformed_json() {
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    for _ in 0..3 {
        let stream = stall(&app.address).await;
        drop(stream);
    }
    let refusals = |reason: &str| {
        let prefix = format!("bouncer_sns_refusals_total{{reason=\"{reason}\"}} ");
        let app = &app;
        async move {
            let (_, metrics) = app.admin_get("/metrics").await;
            metrics
                .as_str()
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    crate::helpers::eventually("the hang-ups are counted", || async {
        refusals("body_incomplete").await == 3.0
    })
    .await;
    assert_eq!(refusals("malformed_json").await, 0.0);
    // A real message after them is stored as ever.
    assert_status(
        &app.post(&Msg::notification(TOPIC, "after the hang-ups").sign())
            .await,
        200,
        "stored",
    );
    app.stop().await;
}

/// Found by an outside trial: 64 clients holding bodies one byte short of
/// the largest size filled the memory kept for bodies (32 MiB), and every
/// real message was refused `503 server_busy` until their time limit (10
/// s) passed. Now the bodies still arriving after a second give way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_fill_the_memory_and_stall_give_way_to_real_messages() {
    let limit = 512 * 1024;
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        s.sns_max_body_bytes = limit;
        s.http_body_timeout_ms = 30_000;
    })
    .await;
    // 64 bodies one byte short of 512 KiB fill the 32 MiB kept for bodies
    // (app.rs: 64 largest bodies, at least 32 MiB) but for 64 bytes.
    let mut stalled = Vec::new();
    for _ in 0..64 {
        // All of a largest-size body but its last byte: the most memory one
        // client can hold.
        stalled.push(stall_after(&app.address, limit, &vec![b' '; limit - 1]).await);
    }
    // Past the second a body may take before it gives way, with room for
    // a slow machine to have begun reading the last of them.
    tokio::time::sleep(bouncer::intake::SLOW_BODY + Duration::from_secs(2)).await;
    let started = Instant::now();
    for i in 0..3 {
        assert_status(
            &app.post(&Msg::notification(TOPIC, &format!("real {i}")).sign())
                .await,
            200,
            "stored",
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered long before the stalled bodies' time limit"
    );
    // The stalled bodies were cut, each told why, its connection closed.
    for stream in &mut stalled {
        assert_closed_with_408(stream, "body_too_slow").await;
    }
    app.stop().await;
}

/// The admin listener's batch check reads a body of up to 4 MiB, so it
/// holds one to the same time limit: a stalled one is answered 408 and
/// closed (an outside trial held 32 bodies of 3.6 MB for a minute, 161 MiB
/// resident). Larger bodies are refused before they are read, and every
/// other call's body is small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bodies_that_stall_or_pass_their_limit_are_refused() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| s.http_body_timeout_ms = 500).await;
    let host = app.admin_address.trim_start_matches("http://");
    let mut stalled = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /v1/suppressions/check HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: 3000000\r\n\r\n{{\"addresses\": [\"a@example.com\""
    );
    stalled.write_all(head.as_bytes()).await.expect("head");
    assert_closed_with_408(&mut stalled, "body_timeout").await;
    // The small calls' bodies have the same time limit: a change whose
    // body stops short of its length, or of its last chunk, is refused,
    // changes nothing and is closed (outside trials found the first held
    // for ever, and then the second answered and held for ever). A check
    // sent chunked is closed the same way.
    let change = [
        ("POST /v1/suppressions", r#"{"email": "held@example.com""#),
        ("PUT /v1/sending", r#"{"state": "paused", "reason": "held""#),
        ("POST /v1/suppressions/check", r#"{"addresses": ["#),
    ];
    for (request, part) in change {
        for framing in [
            "Content-Length: 200\r\n\r\n".to_owned(),
            format!(
                "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                part.len() + 10
            ),
        ] {
            let mut stalled = TcpStream::connect(host).await.expect("connect");
            let head = format!(
                "{request} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 {framing}{part}"
            );
            stalled.write_all(head.as_bytes()).await.expect("head");
            assert_closed_with_408(&mut stalled, "body_timeout").await;
        }
    }
    assert_eq!(
        app.admin_get("/v1/suppressions/held@example.com").await.0,
        404
    );
    assert_eq!(app.admin_get("/v1/sending").await.1["state"], "active");

    let past_check_limit = format!("{{\"addresses\": [\"{}\"]}}", "a".repeat(4 * 1024 * 1024));
    let answer = admin_post(&app, "/v1/suppressions/check", past_check_limit).await;
    crate::helpers::assert_refused(&answer, 413, "body_too_large");
    // Counted, not kept: 20,000 addresses are refused by their number.
    let too_many = serde_json::json!({ "addresses": vec![""; 20_000] }).to_string();
    let answer = admin_post(&app, "/v1/suppressions/check", too_many).await;
    crate::helpers::assert_refused(&answer, 400, "too_many_addresses");
    assert!(
        answer.1["detail"]
            .as_str()
            .is_some_and(|d| d.contains("got 20000")),
        "{}",
        answer.1
    );
    let past_other_limit = format!(
        "{{\"email\": \"a@example.com\", \"note\": \"{}\"}}",
        "n".repeat(70 * 1024)
    );
    let answer = admin_post(&app, "/v1/suppressions", past_other_limit).await;
    crate::helpers::assert_refused(&answer, 413, "body_too_large");
    // A check that arrives whole is answered as ever.
    let whole = r#"{"addresses": ["a@example.com", "nonsense"]}"#.to_owned();
    let answer = admin_post(&app, "/v1/suppressions/check", whole).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["invalid"], serde_json::json!(["nonsense"]));
    app.stop().await;
}

/// POSTs a JSON body as written to the admin listener (no token: the test
/// app's admin listener is on loopback).
async fn admin_post(app: &TestApp, path: &str, body: String) -> (u16, serde_json::Value) {
    let sent = reqwest::Client::new()
        .post(format!("{}{path}", app.admin_address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answer");
    crate::helpers::answer(sent).await
}
