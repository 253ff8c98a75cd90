//! Local stand-ins for where alerts go: a webhook receiver that can fail on
//! purpose, and a minimal SMTP server that keeps what it is sent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Default)]
struct WebhookState {
    received: Mutex<Vec<Value>>,
    attempts: AtomicUsize,
    fail_next: AtomicUsize,
    /// Set by `stop`: a request that still reaches a worker being stopped
    /// (on a connection kept open) fails, as it would with the server gone.
    stopped: AtomicBool,
}

/// Accepts alert POSTs (answering 500 while `fail_next` counts down).
pub struct Webhook {
    pub url: String,
    state: Arc<WebhookState>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(body: web::Bytes, state: web::Data<Arc<WebhookState>>) -> HttpResponse {
    if state.stopped.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return HttpResponse::InternalServerError().finish();
    }
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut r) = state.received.lock() {
        r.push(value);
    }
    HttpResponse::Ok().body("ok")
}

impl Webhook {
    pub async fn start() -> Webhook {
        Webhook::start_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).await
    }

    /// On a given listener (to come back up on the same port).
    pub async fn start_on(listener: std::net::TcpListener) -> Webhook {
        let state: Arc<WebhookState> = Arc::default();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            listener.local_addr().expect("addr").port()
        );
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Webhook { url, state, handle }
    }

    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Value> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The `kind` of every alert received, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn stop(self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.handle.stop(false).await;
    }
}

/// One email as the SMTP sink got it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    /// The body as a mail client shows it: after the headers, with a
    /// quoted-printable encoding undone (its soft line breaks joined).
    pub fn text(&self) -> String {
        let data = self.data.replace("\r\n", "\n");
        let (headers, body) = data.split_once("\n\n").unwrap_or((&data, ""));
        if !headers
            .lines()
            .any(|l| l.eq_ignore_ascii_case("Content-Transfer-Encoding: quoted-printable"))
        {
            return body.to_owned();
        }
        let mut out = Vec::with_capacity(body.len());
        let mut bytes = body.bytes();
        while let Some(b) = bytes.next() {
            if b != b'=' {
                out.push(b);
                continue;
            }
            let Some(hi) = bytes.next() else {
                panic!("a cut quoted-printable escape in {body}")
            };
            // A soft line break: the line goes on.
            if hi == b'\n' {
                continue;
            }
            let Some(lo) = bytes.next() else {
                panic!("a cut quoted-printable escape in {body}")
            };
            let hex = [hi, lo];
            let hex = std::str::from_utf8(&hex).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("a quoted-printable escape"));
        }
        String::from_utf8(out).expect("UTF-8")
    }
}

/// A minimal SMTP server on 127.0.0.1 (no TLS, no auth).
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(socket, store).await;
                });
            }
        });
        SmtpSink { port, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250 sink.test\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().to_owned();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().to_owned());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            if let Ok(mut m) = store.lock() {
                m.push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
            }
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
}
