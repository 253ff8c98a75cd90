//! The two HTTP servers, built from actix-server and actix-http rather than
//! actix-web's `HttpServer`, for one reason: every connection's stream
//! passes through [`Metered`], which paces what actix-http reads and knows
//! how much of its answers bouncer still holds.
//!
//! actix-http's HTTP/1 dispatcher decodes every request in its read buffer
//! (up to 128 KiB) at once, and answers pipelined requests into its write
//! buffer whether or not the client reads them: 50 connections that sent
//! `GET`s without reading took bouncer past 1 GB (an attacker's trial,
//! 2026-12-07), and one client that pipelined 3,000 requests and read every
//! answer still took it from 4 to 41 MB. Here a connection gets one request
//! at a time: its head, exactly its body, then nothing more until it is
//! answered and the answers before it have left bouncer ([`Turn`],
//! [`AnswersFirst`]); a client that takes none of an answer's bytes for
//! `HTTP_SEND_TIMEOUT_MS` is disconnected. Neither memory nor a connection
//! slot is held for a client that does not read.
//!
//! Everything else is what `HttpServer` did with the settings bouncer gave
//! it: its time-outs, TLS handshake limits, ALPN and graceful shutdown.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::{DispatchError, PayloadError};
use actix_http::{HttpService, Payload, Protocol, Request, Response};
use actix_server::{GracefulShutdownSignal, Server, ServerBuilder};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_service, map_config,
};
use actix_tls::accept::TlsError;
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::dev::AppConfig;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::future::{LocalBoxFuture, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How one listener is served.
pub struct Listen {
    /// `public` or `admin`, for logs.
    pub name: &'static str,
    pub listener: TcpListener,
    pub tls: Option<rustls::ServerConfig>,
    pub workers: usize,
    /// Connections each worker serves at once.
    pub per_worker: usize,
    /// Whether this server stops on SIGTERM, SIGINT and SIGQUIT itself.
    pub signals: bool,
    pub shutdown_timeout_secs: u64,
    /// How long a client may take none of an answer's bytes.
    pub send_timeout: Duration,
    /// How long the rest of a body no handler read may take to arrive
    /// after its answer (`HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// Largest request head: a longer one closes the connection unanswered
    /// (`usize::MAX` leaves actix's own 128 KiB, answered 431).
    pub max_head: usize,
}

/// Starts serving `factory`'s application on `how.listener`.
pub fn serve<F, I, S, B>(how: Listen, factory: F) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let Listen {
        name,
        listener,
        tls,
        workers,
        per_worker,
        signals,
        shutdown_timeout_secs,
        send_timeout,
        body_timeout,
        max_head,
    } = how;
    let limits = Limits {
        send_timeout,
        body_timeout,
        max_head,
    };
    let addr = listener.local_addr()?;
    let mut builder = ServerBuilder::new()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .shutdown_timeout(shutdown_timeout_secs);
    if !signals {
        builder = builder.disable_signals();
    }
    let shutdown = builder.graceful_shutdown_signal();
    let builder = match tls {
        Some(mut config) => {
            tracing::info!(listener = name, %addr, "serving HTTPS");
            // actix-http serves HTTP/1.1 only here (no `http2` feature).
            if !config.alpn_protocols.iter().any(|p| p == b"http/1.1") {
                config.alpn_protocols.insert(0, b"http/1.1".to_vec());
            }
            builder.listen(format!("bouncer-{name}"), listener, move || {
                let http = http(&factory, &shutdown, true, addr);
                Acceptor::new(config.clone())
                    .map_err(TlsError::into_service_error)
                    .and_then(move |mut io: TlsStream<TcpStream>| {
                        let peer = io.get_ref().0.peer_addr().ok();
                        // rustls takes up to 64 KiB of answers before its
                        // writes block: as far as `Metered` can tell they
                        // have left. A read's worth keeps the bound.
                        io.get_mut().1.set_buffer_limit(Some(READ_SIZE));
                        ready(Ok((Metered::new(io, limits), Protocol::Http1, peer)))
                    })
                    .and_then(http.map_err(TlsError::Service))
            })?
        }
        None => {
            if name == "public" {
                tracing::info!(listener = name, %addr, "serving plain HTTP (SNS needs HTTPS: put a TLS proxy in front of this listener)");
            } else {
                tracing::info!(listener = name, %addr, "serving plain HTTP");
            }
            builder.listen(format!("bouncer-{name}"), listener, move || {
                fn_service(move |io: TcpStream| {
                    let peer = io.peer_addr().ok();
                    ready(Ok((Metered::new(io, limits), Protocol::Http1, peer)))
                })
                .and_then(http(&factory, &shutdown, false, addr))
            })?
        }
    };
    Ok(builder.run())
}

/// What `HttpServer` gave every connection: the application with its
/// configuration (scheme, host, address), time-outs and graceful shutdown;
/// here also the stream's [`Flow`] for [`AnswersFirst`].
fn http<IO, F, I, S, B>(
    factory: &F,
    shutdown: &GracefulShutdownSignal,
    secure: bool,
    addr: SocketAddr,
) -> impl ServiceFactory<
    (Metered<IO>, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
> + use<IO, F, I, S, B>
where
    IO: AsyncRead + AsyncWrite + Socket + Unpin + 'static,
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let app = factory()
        .into_factory()
        .map_err(|error| error.into().error_response());
    let app = map_config(app, move |_| {
        AppConfig::__priv_test_new(secure, addr.to_string(), addr)
    });
    let shutdown = shutdown.clone();
    HttpService::build()
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(Duration::from_secs(1))
        .local_addr(addr)
        .on_connect_ext(|io: &Metered<IO>, data| {
            data.insert(io.flow.clone());
        })
        .finish(AnswersFirstFactory(app))
}

/// The socket under a connection's stream: how many bytes written to it
/// the client has not yet acknowledged (`SIOCOUTQ`), to tell a slow reader
/// from one that reads nothing.
trait Socket {
    fn unacknowledged(&self) -> Option<usize>;
}

impl Socket for TcpStream {
    fn unacknowledged(&self) -> Option<usize> {
        output_queue(self.as_raw_fd())
    }
}

impl Socket for TlsStream<TcpStream> {
    fn unacknowledged(&self) -> Option<usize> {
        output_queue(self.get_ref().0.as_raw_fd())
    }
}

fn output_queue(fd: RawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one int through
    // the pointer given; the descriptor is the stream's own, open for the
    // call.
    let done = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if done == 0 {
        usize::try_from(queued).ok()
    } else {
        None
    }
}

/// Where a connection stands between its client's bytes and bouncer's
/// answers. A worker serves its connections on one thread, so plain cells
/// do.
///
/// actix-http decodes every request in its read buffer at once, queueing
/// them behind the one being answered at about 12 KB each (a header map
/// sized for 16 headers): 128 KiB of pipelined `GET`s held 30 MB a
/// connection, whether or not their client read the answers. So the stream
/// gives actix one request at a time: a head, then exactly its body, then
/// nothing more until it is answered and its answer has left.
#[derive(Default)]
struct Flow {
    /// Answer bytes the stream was last offered and did not take: what
    /// actix-http still holds (it writes its whole buffer at each flush).
    unsent: Cell<usize>,
    /// What is left to give of the current request's body.
    body: Cell<Body>,
    /// A head was given and the service has not been called with it yet.
    head_given: Cell<bool>,
    /// The service is answering a request.
    answering: Cell<bool>,
    /// Requests the service was called with, to tell whose body a
    /// [`Windowed`] is.
    called: Cell<u64>,
    /// The request being answered reads its body through a [`Windowed`]
    /// that is still there.
    windowed: Cell<bool>,
    /// Body bytes given to actix since its reader last took as many, or
    /// waited for more: at most [`BODY_WINDOW`].
    ahead: Cell<usize>,
    /// The connection's task, parked until one of the above moves on.
    parked: Cell<Option<Waker>>,
}

/// A request body as actix-http frames it, by what is left to give.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Body {
    /// None, or all of it given.
    #[default]
    Done,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked, read as actix's decoder reads it.
    Chunked(Chunked),
    /// Up to the end of the connection (a WebSocket upgrade, which bouncer
    /// does not serve: actix reads the rest as the body, not as requests).
    ToEnd,
}

impl Body {
    fn length(left: u64) -> Body {
        if left == 0 {
            Body::Done
        } else {
            Body::Length(left)
        }
    }
}

impl Flow {
    /// Has the task woken at the next [`Flow::unpark`].
    fn wake_on_move(&self, cx: &Context<'_>) {
        self.parked.set(Some(cx.waker().clone()));
    }

    fn park(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake_on_move(cx);
        Poll::Pending
    }

    fn unpark(&self) {
        if let Some(waker) = self.parked.take() {
            waker.wake();
        }
    }

    fn record_unsent(&self, left: usize) {
        self.unsent.set(left);
        if left == 0 {
            self.unpark();
        }
    }

    /// Pending while answers are unsent; woken once they are taken.
    fn poll_answers_taken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.unsent.get() == 0 {
            Poll::Ready(())
        } else {
            self.park(cx)
        }
    }

    /// The service was called with the head given; `windowed` when its
    /// body is read through a [`Windowed`].
    fn answer(&self, body: Body, windowed: bool) -> u64 {
        self.head_given.set(false);
        self.answering.set(true);
        self.body.set(body);
        self.windowed.set(windowed);
        self.ahead.set(0);
        self.called.set(self.called.get() + 1);
        self.unpark();
        self.called.get()
    }

    /// Of the body bytes given, the reader took `taken`.
    fn took(&self, taken: usize) {
        self.set_ahead(self.ahead.get().saturating_sub(taken));
    }

    /// The reader waits for more of its body: it has taken all it was
    /// given that actix could pass on (a chunked body's framing is never
    /// taken as such, so counting alone could stop its body for good).
    fn starved(&self) {
        self.set_ahead(0);
    }

    /// Wakes the connection only when this opens a window it found shut:
    /// a handler polled again and again while its connection waits for
    /// something else (a `100 Continue` that cannot be written) would
    /// otherwise wake it, and be polled, for ever.
    fn set_ahead(&self, ahead: usize) {
        let was = self.ahead.replace(ahead);
        if was >= BODY_WINDOW && ahead < BODY_WINDOW {
            self.unpark();
        }
    }

    /// Body bytes that may be given to actix now.
    fn body_room(&self) -> usize {
        if self.answering.get() && self.windowed.get() {
            BODY_WINDOW.saturating_sub(self.ahead.get())
        } else {
            usize::MAX
        }
    }

    /// The service answered (or the connection dropped the request).
    fn answered(&self) {
        self.answering.set(false);
        self.unpark();
    }
}

/// How long a request head may take once its first byte has come:
/// actix-http's own limit for a connection's first one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from the socket in one go (actix reads 8 KiB at a time
/// itself).
const READ_SIZE: usize = 8192;

/// How far a request's body may run ahead of the handler reading it.
/// actix reads up to 128 KiB into a connection's buffer before it looks
/// whether the body's reader wants more: 100 clients sending 500 KB bodies
/// to handlers that waited for the body budget held that much each, on
/// top of the budget itself. The rest waits in the kernel's socket buffer.
const BODY_WINDOW: usize = 16 * 1024;

/// A connection's stream, giving actix-http one request at a time (see
/// [`Flow`]) and counting what it was offered to write and did not take.
struct Metered<IO> {
    io: IO,
    flow: Rc<Flow>,
    /// Read from the socket and not yet given to actix.
    held: BytesMut,
    /// How far the bytes given since the last head have gone into the blank
    /// line that ends the next one.
    blank: BlankLine,
    limits: Limits,
    /// Armed when a write finds the client taking nothing; reset by any
    /// byte taken.
    stall: Deadline,
    /// What the socket held unacknowledged when the client last took
    /// something, and when that was, while writes are blocked.
    stall_queued: Option<usize>,
    stalled_since: Option<Instant>,
    /// Armed when a request is answered before its body has all arrived.
    drain: Deadline,
    /// Armed when part of a head has come.
    head: Deadline,
    /// Bytes of the head being given so far.
    head_bytes: usize,
}

/// A connection's time limits.
#[derive(Clone, Copy)]
struct Limits {
    send_timeout: Duration,
    body_timeout: Duration,
    max_head: usize,
}

/// What a connection's stream answers when its client ran out of time: an
/// error actix-http ends the connection on.
fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// A timer armed when something starts waiting on the client, and
/// disarmed when it stops; allocated the first time it is armed.
#[derive(Default)]
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Deadline {
    /// Ready once `after` has passed since the first call since
    /// [`Deadline::disarm`].
    fn poll(&mut self, cx: &mut Context<'_>, after: Duration) -> Poll<()> {
        let deadline = Instant::now() + after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx)
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl<IO> Metered<IO> {
    fn new(io: IO, limits: Limits) -> Self {
        Metered {
            io,
            flow: Rc::default(),
            held: BytesMut::new(),
            blank: BlankLine::default(),
            limits,
            stall: Deadline::default(),
            stall_queued: None,
            stalled_since: None,
            drain: Deadline::default(),
            head: Deadline::default(),
            head_bytes: 0,
        }
    }

    /// How many of the held bytes may be given now, and what is left of the
    /// body after them (`poll_read` parks while nothing may be).
    fn may_give(&mut self, body: Body, room: usize) -> (usize, Body) {
        let held = &self.held[..self.held.len().min(room)];
        match body {
            Body::Length(left) => {
                let give = held.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                (give, Body::length(left - give as u64))
            }
            Body::Chunked(mut chunked) => {
                let give = chunked.scan(held).unwrap_or(held.len());
                let left = if chunked.ended() {
                    Body::Done
                } else {
                    Body::Chunked(chunked)
                };
                (give, left)
            }
            Body::ToEnd => (held.len(), Body::ToEnd),
            Body::Done => match self.blank.find(held) {
                Some(end) => {
                    self.flow.head_given.set(true);
                    (end, Body::Done)
                }
                None => (held.len(), Body::Done),
            },
        }
    }
}

impl<IO: Socket> Metered<IO> {
    /// A write, flush or shutdown that the client may be holding up: its
    /// error once the client has taken nothing for the send time-out. The
    /// kernel says a socket is writable again only once a third of its
    /// buffer has drained, which a client reading a large answer at 64 KB
    /// a second takes longer than that to do: what it has acknowledged
    /// meanwhile counts as taken.
    fn watch<T>(&mut self, cx: &mut Context<'_>, done: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if done.is_ready() {
            self.stall.disarm();
            self.stalled_since = None;
            return done;
        }
        // Looked at four times a time-out, so that a client that read for a
        // while after the write blocked and then stopped is cut a quarter
        // of a time-out late at most (an outside trial: 18-22 s for 10 s
        // when it was looked at once).
        let step = (self.limits.send_timeout / 4).max(Duration::from_millis(1));
        loop {
            let since = *self.stalled_since.get_or_insert_with(|| {
                self.stall_queued = self.io.unacknowledged();
                Instant::now()
            });
            if self.stall.poll(cx, step).is_pending() {
                return Poll::Pending;
            }
            self.stall.disarm();
            match (self.io.unacknowledged(), self.stall_queued) {
                (Some(now), Some(before)) if now < before => {
                    self.stall_queued = Some(now);
                    self.stalled_since = Some(Instant::now());
                }
                _ if since.elapsed() >= self.limits.send_timeout => {
                    return Poll::Ready(Err(timed_out(
                        "the client took none of its answer within HTTP_SEND_TIMEOUT_MS",
                    )));
                }
                _ => {}
            }
        }
    }
}

/// Finds the blank line that ends a request head, as httparse reads line
/// ends: `\n` with or without `\r` before it. Blank lines before any other
/// byte are not an end (a client may send a stray CRLF after a body, which
/// httparse skips).
#[derive(Default)]
struct BlankLine {
    /// 0: inside a line; 1: just after a line end; 2: after a line end
    /// and `\r`.
    state: u8,
    text: bool,
}

impl BlankLine {
    /// The length of `bytes` up to and including the end of the first
    /// blank line, if there is one.
    fn find(&mut self, bytes: &[u8]) -> Option<usize> {
        for (at, &byte) in bytes.iter().enumerate() {
            match (byte, self.state) {
                (b'\n', 1 | 2) if self.text => {
                    *self = BlankLine::default();
                    return Some(at + 1);
                }
                (b'\n', _) => self.state = 1,
                (b'\r', 1) => self.state = 2,
                (b'\r', _) => {}
                _ => {
                    self.state = 0;
                    self.text = true;
                }
            }
        }
        None
    }
}

/// Where a chunked body stands, by the states of actix-http's decoder
/// (`h1/chunked.rs`): only its framing is read here, to find its end.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Chunked {
    state: ChunkState,
    /// The chunk's size while it is read, then what is left of its data.
    size: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    SizeFirst,
    SizeRest,
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    /// The last chunk's blank line, or a byte actix refuses (it answers
    /// 400 and reads no more).
    End,
}

impl Chunked {
    fn ended(&self) -> bool {
        self.state == ChunkState::End
    }

    /// The length of `bytes` up to and including the body's last byte, if
    /// it ends in them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        use ChunkState::*;
        let mut at = 0;
        while at < bytes.len() {
            if self.state == Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - at);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            let hex = (byte as char).to_digit(16).map(u64::from);
            self.state = match (self.state, byte, hex) {
                (SizeFirst, _, Some(digit)) => {
                    self.size = digit;
                    SizeRest
                }
                (SizeRest, _, Some(digit)) => match self.size.checked_mul(16) {
                    Some(size) => {
                        self.size = size + digit;
                        SizeRest
                    }
                    None => End,
                },
                (SizeRest | SizeSpace, b'\t' | b' ', _) => SizeSpace,
                (SizeRest | SizeSpace, b';', _) => Extension,
                (SizeRest | SizeSpace | Extension, b'\r', _) => SizeLf,
                (Extension, 0x00..=0x08 | 0x0a..=0x1f | 0x7f, _) => End,
                (Extension, _, _) => Extension,
                (SizeLf, b'\n', _) if self.size > 0 => Data,
                (SizeLf, b'\n', _) => EndCr,
                (DataCr, b'\r', _) => DataLf,
                (DataLf, b'\n', _) => SizeFirst,
                (Trailer, b'\r', _) => TrailerLf,
                (Trailer, _, _) => Trailer,
                (TrailerLf, b'\n', _) => EndCr,
                (EndCr, b'\r', _) => EndLf,
                (EndCr, _, _) => Trailer,
                (EndLf, b'\n', _) => End,
                _ => End,
            };
            if self.state == End {
                return Some(at);
            }
        }
        None
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Parked: the task is woken when the answers are taken or the
        // request moves on (`Flow::unpark`).
        ready!(this.flow.poll_answers_taken(cx));
        let body = this.flow.body.get();
        let answering = this.flow.answering.get();
        let between = body == Body::Done && !answering && !this.flow.head_given.get();
        if body == Body::Done && !between {
            // A head given, or its request being answered.
            ready!(this.flow.park(cx));
        }
        if body != Body::Done && !answering {
            // Answered before its body all came: actix reads a chunked one
            // to its end (no keep-alive timer runs meanwhile), so a client
            // that stops sending it would hold the connection for ever.
            if this.drain.poll(cx, this.limits.body_timeout).is_ready() {
                return Poll::Ready(Err(timed_out(
                    "the rest of a body no handler read did not arrive within HTTP_BODY_TIMEOUT_MS",
                )));
            }
        } else {
            this.drain.disarm();
        }
        if between && this.blank.text {
            // Part of the next head came and the rest does not: actix times
            // only a connection's first head, and stops its keep-alive timer
            // once any byte has come.
            if this.head.poll(cx, HEAD_TIMEOUT).is_ready() {
                return Poll::Ready(Err(timed_out("a request head did not arrive within 5 s")));
            }
        } else {
            this.head.disarm();
        }
        let room = if body == Body::Done {
            usize::MAX
        } else {
            this.flow.body_room()
        };
        if room == 0 {
            // The handler has not taken what it was given (it waits for
            // room in the body budget, say): woken when it takes some.
            ready!(this.flow.park(cx));
        }
        if body != Body::Done && answering {
            // actix reads before it answers in a poll, and reads again only
            // when bytes come: woken when the request is answered with its
            // body still coming (`Flow::answered`), the stream arms the
            // deadline above. Without it a client that stalled a chunked
            // body held its connection for ever after its 408.
            this.flow.wake_on_move(cx);
        }
        if this.held.is_empty() {
            // Read on the stack: a connection waiting for its client holds
            // no buffer (thousands of idle ones would hold 8 KiB each).
            let mut bytes = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut bytes);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            // Nothing read is the end of the stream, passed on as such.
            this.held.extend_from_slice(read.filled());
        }
        let (give, left) = this.may_give(body, buf.remaining().min(room));
        if body == Body::Done {
            this.head_bytes += give;
            if this.head_bytes > this.limits.max_head {
                // actix drops the error unlogged; a client cut here shows
                // at `debug`, as other malformed requests do.
                tracing::debug!(
                    limit = this.limits.max_head,
                    "a request head passed its listener's limit: connection closed"
                );
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a request head passed its listener's limit",
                )));
            }
            if this.flow.head_given.get() {
                this.head_bytes = 0;
            }
        }
        this.flow.body.set(left);
        if left == Body::Done && body != Body::Done {
            // Nothing left to wake it for (see above).
            this.flow.parked.take();
        }
        if room != usize::MAX {
            this.flow.ahead.set(this.flow.ahead.get() + give);
        }
        buf.put_slice(&this.held.split_to(give));
        if this.held.is_empty() {
            // An idle connection keeps no buffer.
            this.held = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Socket + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        match &written {
            Poll::Ready(Ok(taken)) => this.flow.record_unsent(buf.len().saturating_sub(*taken)),
            Poll::Pending => this.flow.record_unsent(buf.len()),
            Poll::Ready(Err(_)) => {}
        }
        this.watch(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let shut = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, shut)
    }
}

/// Moves a connection's [`Flow`] with its requests: the body's bytes once
/// its request is called, the next head once it is answered and the
/// answers before it have left bouncer.
struct AnswersFirstFactory<F>(F);

impl<F> ServiceFactory<Request> for AnswersFirstFactory<F>
where
    F: ServiceFactory<Request, Config = ()>,
    F::Service: 'static,
    F::Future: 'static,
{
    type Response = F::Response;
    type Error = F::Error;
    type Config = ();
    type Service = AnswersFirst<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, config: ()) -> <Self as ServiceFactory<Request>>::Future {
        let service = self.0.new_service(config);
        Box::pin(async move {
            Ok(AnswersFirst {
                service: Rc::new(service.await?),
            })
        })
    }
}

struct AnswersFirst<S> {
    service: Rc<S>,
}

impl<S> Service<Request> for AnswersFirst<S>
where
    S: Service<Request> + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<S::Response, S::Error>>;

    actix_service::forward_ready!(service);

    fn call(&self, mut request: Request) -> <Self as Service<Request>>::Future {
        let service = self.service.clone();
        let Some(flow) = request.conn_data::<Rc<Flow>>().cloned() else {
            return Box::pin(service.call(request));
        };
        let body = match request.payload() {
            Payload::None => Body::Done,
            _ => body_framing(&request),
        };
        let windowed = matches!(request.payload(), Payload::H1 { .. });
        Box::pin(async move {
            // A request answered ahead of its client reading the answers
            // before it waits (pipelining; SNS and proxies never do).
            std::future::poll_fn(|cx| flow.poll_answers_taken(cx)).await;
            let call = flow.answer(body, windowed);
            if windowed {
                let payload = request.take_payload();
                *request.payload() = Payload::Stream {
                    payload: Box::pin(Windowed {
                        payload,
                        flow: flow.clone(),
                        call,
                    }),
                };
            }
            let answered = Answered(flow);
            let answer = service.call(request).await;
            drop(answered);
            answer
        })
    }
}

/// How actix-http frames a request body it has (`h1/decoder.rs`): chunked
/// first, then a WebSocket upgrade (to the end), then the length it has
/// checked.
fn body_framing(request: &Request) -> Body {
    let head = request.head();
    let headers = &head.headers;
    if headers.contains_key(actix_http::header::TRANSFER_ENCODING) {
        return Body::Chunked(Chunked::default());
    }
    let websocket = headers.get_all(actix_http::header::UPGRADE).any(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    let length = headers
        .get(actix_http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    match length {
        // actix drops a length of 0 and reads a CONNECT without one to
        // the end of the connection.
        Some(0) | None if head.method == actix_http::Method::CONNECT => Body::ToEnd,
        Some(length) if !websocket => Body::length(length),
        _ => Body::ToEnd,
    }
}

/// A request's body as its handler reads it, telling the connection's
/// [`Flow`] what it takes, so that no more than [`BODY_WINDOW`] waits in
/// actix for it.
struct Windowed {
    payload: Payload,
    flow: Rc<Flow>,
    /// Which of the connection's requests this body is.
    call: u64,
}

impl Stream for Windowed {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = Pin::new(&mut this.payload).poll_next(cx);
        if this.flow.called.get() == this.call {
            match &next {
                Poll::Ready(Some(Ok(chunk))) => this.flow.took(chunk.len()),
                Poll::Pending => this.flow.starved(),
                Poll::Ready(_) => {}
            }
        }
        next
    }
}

impl Drop for Windowed {
    /// Its reader is gone: actix reads what is left of the body to throw
    /// it away, or closes the connection.
    fn drop(&mut self) {
        if self.flow.called.get() == self.call {
            self.flow.windowed.set(false);
            self.flow.unpark();
        }
    }
}

/// Lets the connection read the next head once its request is answered
/// (or the connection drops it).
struct Answered(Rc<Flow>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered();
    }
}

#[cfg(test)]
mod tests {
    use super::{BlankLine, Chunked};

    /// Where `find` cuts `parts`, fed one after the other, as offsets
    /// into their concatenation.
    fn cuts(parts: &[&str]) -> Vec<usize> {
        let mut blank = BlankLine::default();
        let mut found = Vec::new();
        let mut offset = 0;
        for part in parts {
            let mut rest = part.as_bytes();
            while let Some(end) = blank.find(rest) {
                found.push(offset + end);
                offset += end;
                rest = &rest[end..];
            }
            offset += rest.len();
        }
        found
    }

    #[test]
    fn a_head_ends_at_its_blank_line_whatever_its_line_ends() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(cuts(&[head]), [head.len()]);
        assert_eq!(cuts(&["GET / HTTP/1.1\nHost: a\n\n"]), [24]);
        assert_eq!(cuts(&["GET / HTTP/1.1\r\n\nbody"]), [17]);
        // Two heads back to back, and one line end split between reads.
        assert_eq!(cuts(&[head, head]), [head.len(), 2 * head.len()]);
        assert_eq!(
            cuts(&["GET / HTTP/1.1\r\nHost: a\r\n\r", "\nGET"]),
            [head.len()]
        );
        assert_eq!(
            cuts(&["GET / HTTP/1.1\r\nHost: a\r\n", "\r\n"]),
            [head.len()]
        );
    }

    #[test]
    fn blank_lines_before_a_request_do_not_end_it() {
        let cut = cuts(&["\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(cut, [22]);
        assert_eq!(cuts(&["\r\n", "\r\n", "\n"]), Vec::<usize>::new());
    }

    #[test]
    fn carriage_returns_alone_are_no_line_end() {
        assert_eq!(cuts(&["a\r\r\rb"]), Vec::<usize>::new());
    }

    /// Where a chunked body fed in `parts` ends, as an offset into their
    /// concatenation.
    fn chunked_end(parts: &[&[u8]]) -> Option<usize> {
        let mut chunked = Chunked::default();
        let mut offset = 0;
        for part in parts {
            if let Some(end) = chunked.scan(part) {
                assert!(chunked.ended());
                return Some(offset + end);
            }
            offset += part.len();
        }
        None
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhe\n\nl\r\n0\r\n\r\n";
        assert_eq!(chunked_end(&[body, b"GET / HTTP/1.1"]), Some(body.len()));
        let trailers = b"3;name=value\r\nabc\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n";
        assert_eq!(chunked_end(&[trailers]), Some(trailers.len()));
        assert_eq!(
            chunked_end(&[b"A \t;x\r\n0123456789\r\n0\r\n\r\n"]),
            Some(24)
        );
        // Split at every place, the end is the same.
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(
                chunked_end(&[a, b, b"GET"]),
                Some(body.len()),
                "split at {at}"
            );
        }
        // Data that looks like framing is data.
        assert_eq!(chunked_end(&[b"5\r\n0\r\n\r\n\r\n0\r\n\r\n"]), Some(15));
        assert_eq!(chunked_end(&[b"5\r\nhello\r\n"]), None);
    }

    #[test]
    fn a_chunked_body_actix_refuses_ends_at_the_byte_it_refuses() {
        assert_eq!(chunked_end(&[b"x\r\n"]), Some(1));
        assert_eq!(chunked_end(&[b"5\nhello"]), Some(2));
        assert_eq!(chunked_end(&[b"2\r\nhi\n"]), Some(6));
        assert_eq!(chunked_end(&[b"1;\x01\r\n"]), Some(3));
        assert_eq!(chunked_end(&[b"fffffffffffffffff\r\n"]), Some(17));
    }
}
