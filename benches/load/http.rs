//! A lean HTTP/1.1 load generator over raw TCP, so that the generator costs
//! little of the two cores it shares with the server: each request is
//! rendered once, ahead of time. Two ways to send, as SPEC §9 names them:
//! one TCP connection per message (`Connection: close`, as SNS delivers) or
//! keep-alive connections reused by each worker; over plain TCP or over
//! TLS (`Transport`), where a new connection is a full handshake or, with
//! the client's session cache, a resumed one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A connection of either transport.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the generator reaches the server: plain TCP, or TLS to a server
/// whose certificate the given CA issued for `localhost`.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(TlsConnector),
}

impl Transport {
    /// TLS trusting the CA in `ca_file`; `resume`: the client keeps
    /// sessions (rustls's default cache) so that new connections resume
    /// them, else every connection is a full handshake.
    pub fn tls(ca_file: &str, resume: bool) -> Transport {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).expect("the CA file") {
            roots.add(cert.expect("a CA certificate")).expect("a root");
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Transport::Tls(TlsConnector::from(Arc::new(config)))
    }

    async fn connect(&self, addr: SocketAddr) -> Option<Box<dyn Io>> {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        match self {
            Transport::Plain => Some(Box::new(tcp)),
            Transport::Tls(connector) => {
                let name = ServerName::try_from("localhost").expect("a name");
                Some(Box::new(connector.connect(name, tcp).await.ok()?))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A new TCP connection per message, closed after the answer.
    PerMessage,
    /// Each worker keeps one connection open.
    KeepAlive,
}

impl Connections {
    pub fn name(self) -> &'static str {
        match self {
            Connections::PerMessage => "one connection per message",
            Connections::KeepAlive => "keep-alive",
        }
    }

    /// The `Connection` header that asks for it.
    pub fn header(self) -> &'static str {
        match self {
            Connections::PerMessage => "close",
            Connections::KeepAlive => "keep-alive",
        }
    }
}

/// A POST to `/sns` as SNS sends it.
pub fn sns_request(addr: SocketAddr, body: &str, connections: Connections) -> Vec<u8> {
    let connection = connections.header();
    let mut out = format!(
        "POST /sns HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain; charset=UTF-8\r\n\
         x-amz-sns-message-type: Notification\r\nUser-Agent: Amazon Simple Notification Service Agent\r\n\
         Connection: {connection}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// What a run saw.
pub struct Outcome {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    /// Answers by status code.
    pub statuses: std::collections::BTreeMap<u16, usize>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    pub fn all_status(&self, accepted: &[u16]) -> bool {
        self.statuses.keys().all(|s| accepted.contains(s))
    }
}

/// The status code of an answer, reading it whole: to EOF when the server
/// closes, else by its Content-Length. `buf` is reused between answers.
async fn read_answer(stream: &mut dyn Io, buf: &mut Vec<u8>, until_eof: bool) -> Option<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the answer
            // read so far is the answer.
            Err(_) if until_eof && !buf.is_empty() => 0,
            Err(_) => return None,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !until_eof && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    let line = buf.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Sends every request with `in_flight` workers (a closed loop).
pub async fn closed_loop(
    addr: SocketAddr,
    transport: &Transport,
    requests: Vec<Vec<u8>>,
    in_flight: usize,
    connections: Connections,
) -> Outcome {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (requests, next) = (requests.clone(), next.clone());
            let transport = transport.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = Vec::with_capacity(1024);
                let mut kept: Option<Box<dyn Io>> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let sent = Instant::now();
                    let status = match connections {
                        Connections::PerMessage => {
                            let Some(mut stream) = transport.connect(addr).await else {
                                seen.push((sent.elapsed(), 0));
                                continue;
                            };
                            let _ = stream.write_all(request).await;
                            let _ = stream.flush().await;
                            read_answer(&mut *stream, &mut buf, true).await
                        }
                        Connections::KeepAlive => {
                            if kept.is_none() {
                                kept = transport.connect(addr).await;
                            }
                            match kept.as_mut() {
                                Some(stream) => {
                                    let _ = stream.write_all(request).await;
                                    let _ = stream.flush().await;
                                    let status = read_answer(&mut **stream, &mut buf, false).await;
                                    if status.is_none() {
                                        kept = None;
                                    }
                                    status
                                }
                                None => None,
                            }
                        }
                    };
                    seen.push((sent.elapsed(), status.unwrap_or(0)));
                }
                seen
            })
        })
        .collect();
    let mut outcome = Outcome {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        statuses: Default::default(),
    };
    for worker in workers {
        for (latency, status) in worker.await.expect("worker") {
            outcome.latencies.push(latency);
            *outcome.statuses.entry(status).or_default() += 1;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// Sends the requests at `per_second`, each on its own connection (an open
/// loop: latency under a steady load, not throughput).
pub async fn open_loop(
    addr: SocketAddr,
    transport: &Transport,
    requests: Vec<Vec<u8>>,
    per_second: u64,
) -> Outcome {
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let transport = transport.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(
                    start + Duration::from_micros(i as u64 * 1_000_000 / per_second),
                )
                .await;
                let sent = Instant::now();
                let mut buf = Vec::new();
                let status = match transport.connect(addr).await {
                    Some(mut stream) => {
                        let _ = stream.write_all(&request).await;
                        let _ = stream.flush().await;
                        read_answer(&mut *stream, &mut buf, true).await
                    }
                    None => None,
                };
                (sent.elapsed(), status.unwrap_or(0))
            })
        })
        .collect();
    let mut outcome = Outcome {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        statuses: Default::default(),
    };
    for task in tasks {
        let (latency, status) = task.await.expect("task");
        outcome.latencies.push(latency);
        *outcome.statuses.entry(status).or_default() += 1;
    }
    outcome.elapsed = started.elapsed();
    outcome
}
