//! Clients that pipeline requests (send the next before reading the answer
//! to the last) are answered in order, one request at a time, as fast as
//! they read: one that reads nothing holds neither memory nor, past
//! `HTTP_SEND_TIMEOUT_MS`, its connection.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::signing::{Msg, TOPIC};

/// One answer read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

/// Splits what a connection answered into its answers, each framed by its
/// `Content-Length` (bouncer's answers always have one).
fn answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole head")
            + 4;
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let status = head[9..12].parse().expect("a status");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("a length"));
        let body = bytes
            .get(end..end + length)
            .unwrap_or_else(|| panic!("a body of {length} bytes, {} came", bytes.len() - end));
        answers.push(Answer {
            status,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        });
        bytes = &bytes[end + length..];
    }
    answers
}

/// `body` as chunked transfer coding, in chunks of `size`.
fn chunked(body: &str, size: usize) -> String {
    let mut coded = String::new();
    for chunk in body.as_bytes().chunks(size) {
        coded.push_str(&format!("{:x}\r\n", chunk.len()));
        coded.push_str(std::str::from_utf8(chunk).expect("ASCII"));
        coded.push_str("\r\n");
    }
    coded + "0\r\n\r\n"
}

/// A body with blank lines and a request inside.
const UNREAD: &str = "line\n\nGET /healthz HTTP/1.1\r\n\r\n";

/// Requests of every framing, pipelined in one write while the answers are
/// read: each is answered once, in order, and every message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_one_by_one_in_order() {
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let messages: Vec<Msg> = (0..40)
        .map(|i| Msg::notification(TOPIC, &format!("pipelined {i}")).sign())
        .collect();
    let mut sent = String::new();
    let mut expected = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let body = msg.body();
        let sns = format!(
            "POST /sns HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n\
             x-amz-sns-message-type: Notification\r\n"
        );
        // A body with a length, one chunked (a blank line of its own in
        // the middle of a chunk, too), a head with bare line feeds, and
        // a request that stray line ends precede.
        if i % 2 == 0 {
            sent += &format!("{sns}Content-Length: {}\r\n\r\n{body}", body.len());
        } else {
            let body = body.replacen("{", "{\n\n", 1);
            sent += &format!(
                "{sns}Transfer-Encoding: chunked\r\n\r\n{}",
                chunked(&body, 300)
            );
        }
        expected.push((200, "stored"));
        sent += &format!("GET /healthz HTTP/1.1\nHost: {host}\n\n");
        expected.push((200, "alive"));
        sent += &format!("\r\nGET /nowhere HTTP/1.1\r\nHost: {host}\r\n\r\n");
        expected.push((404, "not_found"));
        // A chunked body no handler reads, with blank lines and a chunk
        // that ends in a line feed: actix reads it to its end and goes on.
        sent += &format!(
            "POST /nowhere HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(UNREAD, 5)
        );
        expected.push((404, "not_found"));
    }
    sent += &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    expected.push((200, "alive"));
    // One with a length that no handler reads ends the connection (actix
    // answers it `Connection: close`): what follows is not answered.
    sent += &format!(
        "POST /nowhere HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{UNREAD}",
        UNREAD.len()
    );
    expected.push((404, "not_found"));
    sent += &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");

    let stream = TcpStream::connect(&host).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move { writer.write_all(sent.as_bytes()).await });
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut received))
        .await
        .expect("every answer within 30 s")
        .expect("read");
    write.await.expect("writer").expect("every request written");

    let answers = answers(&received);
    let got: Vec<(u16, &str)> = answers
        .iter()
        .map(|a| {
            let word = a.body["status"].as_str().or(a.body["error"].as_str());
            (a.status, word.unwrap_or("?"))
        })
        .collect();
    assert_eq!(got, expected);
    for msg in &messages {
        assert_eq!(app.db.count_messages(msg.get("MessageId")).await, 1);
    }
    app.stop().await;
}

/// A connection whose client reads nothing: with a small receive window it
/// fills the socket's buffers, then bouncer reads none of its requests
/// (they would be answered into memory) and, once it has taken none of the
/// answers for `HTTP_SEND_TIMEOUT_MS`, closes it.
async fn pipeline_without_reading(host: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive window");
    let mut stream = socket
        .connect(host.parse().expect("address"))
        .await
        .expect("connect");
    let requests = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").repeat(2000);
    // Until bouncer stops reading: its socket's buffers and then ours fill.
    while tokio::time::timeout(
        Duration::from_millis(500),
        stream.write_all(requests.as_bytes()),
    )
    .await
    .is_ok_and(|written| written.is_ok())
    {}
    stream
}

/// A client that pipelines and reads nothing is disconnected once it has
/// taken none of its answers for `HTTP_SEND_TIMEOUT_MS`, and others are
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_answers_is_disconnected_after_the_send_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| s.http_send_timeout_ms = 700).await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut stalled = pipeline_without_reading(&host).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, &body["status"]), (200, &Value::from("alive")));
    // Reading would take answers, so the client watches its socket's state
    // instead, until bouncer has closed its side.
    let waited = std::time::Instant::now();
    while !peer_closed(&stalled) {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "still open after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then it finds the answers its sockets held and the end (or a reset),
    // where the old server answered everything it was sent.
    let mut held = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut held))
        .await
        .expect("the connection ends");
    app.stop().await;
}

/// Sends `request` on a connection of its own and reads until bouncer
/// closes it (within 10 s): one answer, `200`.
async fn answered_once_then_closed(app: &TestApp, request: &str) {
    let host = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let request = request.replace("{host}", host);
    stream.write_all(request.as_bytes()).await.expect("written");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the connection was closed")
        .expect("read");
    let answers = answers(&received);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200);
}

/// A chunked body that no handler reads is read to its end after the
/// answer, by actix, with no time limit of its own: one whose client stops
/// sending it is cut after `HTTP_BODY_TIMEOUT_MS`, so that it cannot hold
/// its connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_no_handler_reads_that_stops_coming_is_cut_after_the_body_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| s.http_body_timeout_ms = 500).await;
    answered_once_then_closed(
        &app,
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    )
    .await;
    app.stop().await;
}

/// Found by an outside trial: a request followed in the same write by the
/// first byte of another held its connection for ever (actix times only a
/// connection's first head, and stops its keep-alive timer once a byte of
/// the next has come). The rest of a head now has 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stops_after_its_first_byte_is_cut_after_five_seconds() {
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    answered_once_then_closed(&app, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\nG").await;
    app.stop().await;
}

/// An attacker's trial: 1,000 connections that each sent most of a 128 KiB
/// head (actix's limit) held 151 MB until the head time-out. The public
/// listener takes heads of up to 32 KiB (SNS sends about 1 KB; a proxy in
/// front refuses more by default) and closes a connection whose head
/// passes that, unanswered; the admin listener keeps actix's limit, for a
/// browser's cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_head_past_32_kib_closes_its_connection() {
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    let head = |address: &str, path: &str, pad: usize| {
        let host = address.trim_start_matches("http://").to_owned();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        );
        async move {
            let mut stream = TcpStream::connect(&host).await.expect("connect");
            // The server may close before all of it is written.
            let _ = stream.write_all(request.as_bytes()).await;
            let mut received = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut received))
                .await
                .expect("the connection ends");
            String::from_utf8_lossy(&received).into_owned()
        }
    };
    let under = head(&app.address, "/healthz", 30 * 1024).await;
    assert!(under.starts_with("HTTP/1.1 200"), "{under}");
    let past = head(&app.address, "/healthz", 40 * 1024).await;
    assert_eq!(past, "", "answered a head past the limit");
    let admin = head(&app.admin_address, "/v1/sending", 40 * 1024).await;
    assert!(admin.starts_with("HTTP/1.1 200"), "{admin}");
    app.stop().await;
}

/// Found by an outside trial: a client reading a 4 MB answer at a steady
/// 64 KB/s was cut before its end, because the send time-out counted the
/// time the socket was not writable (Linux waits for a third of its buffer
/// to drain). What the client acknowledges now counts: one reading slowly
/// gets the whole answer with a send time-out far shorter than its read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_a_large_answer_slowly_gets_all_of_it() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| s.http_send_timeout_ms = 300).await;
    app.db
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
             INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, diagnostic_code, \
               first_seen_at, last_seen_at, event_count, source) \
             SELECT printf('slow%05d@example.com', i), 'bounce', 'Permanent', 'General', \
               'smtp; 550 5.1.1 user unknown', '2026-11-01T00:00:00.000Z', \
               '2026-11-01T00:00:00.000Z', 1, 'test' FROM n",
        )
        .await;
    let addresses: Vec<String> = (0..10_000)
        .map(|i| format!("slow{i:05}@example.com"))
        .collect();
    let body = serde_json::json!({ "addresses": addresses }).to_string();
    let host = app.admin_address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    let request = format!(
        "POST /v1/suppressions/check HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("written");
    // 64 KiB every 100 ms: a few seconds for the answer, each second far
    // longer than the send time-out, and never a pause.
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the answer comes")
            .expect("read");
        if read == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..read]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = answers(&received);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200);
    assert_eq!(
        answers[0].body["suppressed"].as_array().map(Vec::len),
        Some(10_000)
    );
    assert!(received.len() > 2_000_000, "{} bytes", received.len());
    app.stop().await;
}

/// Whether the other side has closed the connection (its state is
/// `CLOSE_WAIT`, or `CLOSE` after a reset), read without taking data.
fn peer_closed(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a buffer of the size given, and the
    // descriptor is the stream's own, open for the call.
    let read = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(read, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: zeroed, then filled by the kernel; every field is an integer.
    let state = unsafe { info.assume_init() }.tcpi_state;
    // Linux's TCP_CLOSE (7) and TCP_CLOSE_WAIT (8), which libc does not name.
    matches!(state, 7 | 8)
}

/// Found by an attacker's trial: 50 connections that pipelined `GET`s
/// and read nothing took the binary past 1 GB in a second, and one that
/// read every answer of 3,000 pipelined requests still added 37 MB
/// (actix-http decoded every request it had read at once, about 12 KB
/// each). Twenty such clients now leave its peak where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_pipeline_without_reading_leave_memory_as_it_was() {
    use crate::crash::{Serve, assert_started, serve_command};
    use crate::helpers::{TempDir, TestDb, free_port};
    use crate::suppression_api::peak_kib;
    let dir = TempDir::new();
    let db = TestDb::create(&Backend::Sqlite, dir.path()).await;
    let port = free_port();
    let child = Serve(
        serve_command(dir.path(), &db.url, port, 64)
            .spawn()
            .expect("starts"),
    );
    assert_started(port, dir.path()).await;
    let host = format!("127.0.0.1:{port}");
    let before = peak_kib(child.0.id());
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { pipeline_without_reading(&host).await })
        })
        .collect();
    let mut stalled = Vec::new();
    for client in clients {
        stalled.push(client.await.expect("client"));
    }
    let after = peak_kib(child.0.id());
    assert!(
        after < before + 32 * 1024,
        "peak went from {before} KiB to {after} KiB"
    );
    let health = reqwest::get(format!("http://{host}/healthz"))
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
    drop(stalled);
}

/// How many bytes wait in the kernel for bouncer on the server's side of
/// the connection from `client` to `server_port` (`/proc/net/tcp`'s
/// `rx_queue`).
fn waiting_at_server(server_port: u16, client: &TcpStream) -> usize {
    let client_port = client.local_addr().expect("address").port();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
            if port(local)? != server_port || port(remote)? != client_port {
                return None;
            }
            usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        })
        .expect("the server's side of the connection")
}

/// Bytes written to `stream` that its peer has not acknowledged
/// (`SIOCOUTQ`).
fn unacknowledged(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer given; the
    // descriptor is the stream's own, open for the call.
    let done = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(done, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(queued).expect("a count")
}

/// Found measuring 100 clients that sent 500 KB bodies at once: actix
/// read 128 KiB of each into its buffer while the body's handler waited
/// for room in the body budget, 15 MB on top of the budget. A body now
/// runs at most 16 KiB ahead of its reader; the rest stays in the kernel
/// until the reader takes it, and then all of it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_handler_waits_is_not_read_ahead_of_it() {
    let app = spawn_app_with(Backend::Sqlite, |_, _| {}).await;
    let port: u16 = app
        .admin_address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let host = format!("127.0.0.1:{port}");
    let check_head = |length: usize| {
        format!(
            "POST /v1/suppressions/check HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // Two checks that announce 4 MiB each and send a little hold every
    // turn for checks' bodies: the next check waits without reading.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&host).await.expect("connect");
        stream
            .write_all(format!("{}{{\"addresses\": [", check_head(4 << 20)).as_bytes())
            .await
            .expect("written");
        holding.push(stream);
    }
    // Their heads and first bytes taken, their handlers have their turns
    // (taken in the same poll as the head is read).
    let taken = std::time::Instant::now();
    while holding.iter().any(|s| waiting_at_server(port, s) > 0) {
        assert!(taken.elapsed() < Duration::from_secs(10), "never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addresses: Vec<String> = (0..10_000)
        .map(|i| format!("{}{i}@example.com", "a".repeat(80)))
        .collect();
    let body = serde_json::json!({ "addresses": addresses }).to_string();
    let request = format!("{}{body}", check_head(body.len())).into_bytes();
    // A send buffer of a known size, so that more is written than the
    // window whatever the kernel's defaults.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_send_buffer_size(512 * 1024)
        .expect("send buffer");
    let mut waiting = socket
        .connect(host.parse().expect("address"))
        .await
        .expect("connect");
    // As much as the kernel takes, without blocking.
    let mut written = 0;
    while written < request.len() {
        match waiting.try_write(&request[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                match waiting.try_write(&request[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read_by_bouncer = written
        .saturating_sub(unacknowledged(&waiting))
        .saturating_sub(waiting_at_server(port, &waiting));
    assert!(
        written > 256 * 1024,
        "the kernel took {written} bytes: too few to tell"
    );
    assert!(
        read_by_bouncer < 48 * 1024,
        "bouncer read {read_by_bouncer} of the {written} bytes sent before the body's turn came"
    );
    // The turn comes when the two holding it are gone; the check is read
    // whole and answered.
    drop(holding);
    let send = async {
        waiting
            .write_all(&request[written..])
            .await
            .expect("the rest");
        let mut received = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = waiting.read(&mut buf).await.expect("read");
            received.extend_from_slice(&buf[..n]);
            if n == 0 || answers_complete(&received) {
                break received;
            }
        }
    };
    let received = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("answered");
    let answers = answers(&received);
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(answers[0].body["checked"], 10_000);
    app.stop().await;
}

/// Whether `bytes` hold a whole answer (a head and its `Content-Length`).
fn answers_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    bytes.len() >= end + 4 + length
}
