//! Clients that stall in the middle of a request body do not starve the
//! others: health and real messages are answered while hundreds stall, and
//! each stalled body is answered 408 and its connection closed once
//! `HTTP_BODY_TIMEOUT_MS` passes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, assert_status, spawn_app_with};
use crate::signing::{Msg, TOPIC};

/// Sends the head and part of a body that announces more, then stalls.
async fn stall(address: &str) -> TcpStream {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /sns HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
         x-amz-sns-message-type: Notification\r\nContent-Length: 200000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&[b'{'; 1000])
        .await
        .expect("part of the body");
    stream
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
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection");
        assert!(read.is_ok(), "{read:?}");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
    }
    app.stop().await;
}
