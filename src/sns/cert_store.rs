//! Where signing certificates come from: a pin (a local PEM file), a
//! bounded in-memory cache, or a fetch over rustls, shared by every message
//! that names the URL while it runs.
//!
//! Anyone who knows a topic ARN can make bouncer fetch: a forged message
//! names any `.pem` on the region's real SNS host. So only certificates
//! take places in the cache (a failed fetch never pushes one out), a refusal
//! is remembered for a few seconds, at most [`FETCHES_AT_ONCE`] fetches run and
//! at most [`FLIGHTS`] URLs are fetched or waiting at once, and each fetch
//! runs in a task of its own, so what it holds is bounded by these numbers
//! rather than by the crowd of requests waiting for it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::cert::{SigningCert, load_pem_file};
use super::cert_url::{CertUrl, check_cert_url};
use crate::clock::Clock;
use crate::error::SnsError;
use crate::metrics::Metrics;
use crate::time::Timestamp;

/// How many certificates are fetched at once, over all URLs. SNS signs
/// with one certificate a region, so real traffic needs one fetch per
/// region and key rotation; a crowd of forged messages, each naming a
/// different certificate, gets no more requests sent to AWS at once.
pub const FETCHES_AT_ONCE: usize = 4;

/// How many URLs may be fetched or waiting for a turn at once. A message
/// naming another URL past this is answered 502 at once (SNS retries).
pub const FLIGHTS: usize = 64;

/// How long a URL whose certificate was refused (the host answered 403,
/// 404 or 410, or served something that is not that region's signing
/// certificate, or too large) is answered from memory, with 502: a
/// forgery sent again is not fetched again, and a real message that meets
/// a refusal of a moment ago (AWS failed to serve its certificate for a
/// moment) is sent again by SNS, 20 s later by default, after the memory
/// has gone. The message whose fetch was refused is answered 403.
pub const REFUSAL_KEPT_SECS: i64 = 15;

/// A fetch's outcome, shared by every message that waited for it.
#[derive(Clone, Debug)]
enum Fetched {
    Cert(Arc<SigningCert>),
    /// A 403 `certificate_invalid` for the messages that waited for it;
    /// then remembered for [`REFUSAL_KEPT_SECS`], and answered 502.
    Refused(String),
    /// A 502 `certificate_unavailable`: SNS retries; not remembered.
    Unavailable(String),
}

impl Fetched {
    fn from_result(result: Result<SigningCert, SnsError>) -> Self {
        match result {
            Ok(cert) => Fetched::Cert(Arc::new(cert)),
            Err(SnsError::CertificateInvalid(why)) => Fetched::Refused(why),
            Err(SnsError::CertificateUnavailable(why)) => Fetched::Unavailable(why),
            Err(other) => Fetched::Unavailable(other.to_string()),
        }
    }

    fn into_result(self) -> Result<Arc<SigningCert>, SnsError> {
        match self {
            Fetched::Cert(cert) => Ok(cert),
            Fetched::Refused(why) => Err(SnsError::CertificateInvalid(why)),
            Fetched::Unavailable(why) => Err(SnsError::CertificateUnavailable(why)),
        }
    }
}

/// The outcome of a fetch in progress: `None` until it ends.
type Outcome = watch::Receiver<Option<Fetched>>;

/// A fetch in progress; `id` tells it from a later fetch of the same URL.
struct Flight {
    id: u64,
    outcome: Outcome,
}

/// A map of URL to value holding at most `capacity`; the oldest entry
/// leaves first. A value replaced keeps its place.
struct Bounded<V> {
    entries: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    fn insert(&mut self, key: &str, value: V) {
        if self.entries.insert(key.to_owned(), value).is_some() {
            return;
        }
        self.order.push_back(key.to_owned());
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// Certificates, remembered refusals and fetches in progress, behind one
/// lock: a message finds what is known, joins a fetch, or starts one, in
/// one step, so two messages never start two fetches of one URL.
struct Cache {
    certs: Bounded<Arc<SigningCert>>,
    /// URL to the refusal and when it stops being remembered. An entry past
    /// its time stays until it is replaced or pushed out.
    refused: Bounded<(String, Timestamp)>,
    flights: HashMap<String, Flight>,
    next_flight: u64,
}

enum Step {
    Known(Result<Arc<SigningCert>, SnsError>),
    Join(Outcome),
    /// This message starts the fetch: it spawns the task that sends the
    /// outcome.
    Lead {
        id: u64,
        sender: watch::Sender<Option<Fetched>>,
        outcome: Outcome,
    },
    /// [`FLIGHTS`] other URLs are being fetched or waiting.
    Crowded,
}

impl Cache {
    fn step(&mut self, key: &str, now: Timestamp) -> Step {
        if let Some(cert) = self.certs.get(key) {
            return Step::Known(Ok(cert.clone()));
        }
        if let Some((why, until)) = self.refused.get(key) {
            let kept = time::Duration::seconds(REFUSAL_KEPT_SECS);
            // A clock set back does not keep a refusal longer.
            if now < *until && *until <= now.saturating_add(kept) {
                return Step::Known(Err(SnsError::CertificateUnavailable(format!(
                    "the certificate host refused it less than {REFUSAL_KEPT_SECS} s ago \
                     ({why}); it is asked again after that"
                ))));
            }
        }
        if let Some(flight) = self.flights.get(key) {
            // A task that ended without settling (it panicked) has dropped
            // its sender; its flight is replaced below.
            if !flight.outcome.is_closed() {
                return Step::Join(flight.outcome.clone());
            }
            self.flights.remove(key);
        }
        if self.flights.len() >= FLIGHTS {
            return Step::Crowded;
        }
        let (sender, outcome) = watch::channel(None);
        self.next_flight += 1;
        let id = self.next_flight;
        self.flights.insert(
            key.to_owned(),
            Flight {
                id,
                outcome: outcome.clone(),
            },
        );
        Step::Lead {
            id,
            sender,
            outcome,
        }
    }

    /// Ends the flight `id` of `key`, if it is still the URL's flight.
    fn land(&mut self, key: &str, id: u64) {
        if self.flights.get(key).is_some_and(|f| f.id == id) {
            self.flights.remove(key);
        }
    }

    fn record(&mut self, key: &str, fetched: &Fetched, now: Timestamp) {
        match fetched {
            Fetched::Cert(cert) => self.certs.insert(key, cert.clone()),
            Fetched::Refused(why) => self.refused.insert(
                key,
                (
                    why.clone(),
                    now.saturating_add(time::Duration::seconds(REFUSAL_KEPT_SECS)),
                ),
            ),
            Fetched::Unavailable(_) => {}
        }
    }
}

/// Lands its flight when dropped: after the outcome is recorded, or when
/// the task panics or is cancelled, so that the next message starts anew.
struct Landing {
    cache: Arc<Mutex<Cache>>,
    key: String,
    id: u64,
}

impl Landing {
    fn record(&self, fetched: &Fetched, now: Timestamp) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.record(&self.key, fetched, now);
        cache.land(&self.key, self.id);
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .land(&self.key, self.id);
    }
}

/// What a fetch needs, shared with the tasks that run them.
struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
    /// [`FETCHES_AT_ONCE`] turns.
    turns: Semaphore,
    /// The client's limit for one fetch.
    fetch_timeout: Duration,
}

impl Fetcher {
    /// How long a fetch waits for a turn: half the fetch's own limit, so a
    /// message waits at most one and a half times that in all, and a fetch
    /// behind four that hang finds no turn before they end.
    fn turn_wait(&self) -> Duration {
        self.fetch_timeout / 2
    }

    /// How long a message waits for the outcome of a fetch, whoever
    /// started it: past the turn and the fetch, only if the runtime that
    /// runs the fetch is stuck.
    fn outcome_wait(&self) -> Duration {
        self.fetch_timeout * 2 + Duration::from_secs(1)
    }
}

pub struct CertStore {
    pins: HashMap<String, Arc<SigningCert>>,
    cache: Arc<Mutex<Cache>>,
    fetcher: Arc<Fetcher>,
    clock: Clock,
    metrics: Metrics,
}

/// What [`CertStore::new`] is given besides its pins.
pub struct CertSettings {
    /// Certificates kept (`SNS_CERT_CACHE_SIZE`); as many refusals too.
    pub capacity: usize,
    /// The largest certificate accepted (`SNS_CERT_MAX_BYTES`).
    pub max_bytes: usize,
    /// `SNS_CERT_FETCH_TIMEOUT_MS`: the client's limit for one fetch, and
    /// twice the longest wait for a turn to fetch.
    pub fetch_timeout: Duration,
}

impl CertStore {
    /// `pins` are `URL=PEM_FILE` pairs; each URL must pass the URL rule and
    /// each file must hold a usable certificate, or start-up fails.
    /// `client` must time out its requests (after `settings.fetch_timeout`).
    pub fn new(
        pins: &[String],
        settings: CertSettings,
        client: reqwest::Client,
        clock: Clock,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let mut pinned = HashMap::new();
        for pin in pins.iter().filter(|p| !p.trim().is_empty()) {
            let (url, file) = pin
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("SNS_CERT_PINS entry `{pin}` is not URL=FILE"))?;
            let url = check_cert_url(url.trim()).map_err(|why| {
                anyhow::anyhow!("SNS_CERT_PINS: pinned URL `{url}` is refused: {why}")
            })?;
            let cert = load_pem_file(Path::new(file.trim()), &url)?;
            pinned.insert(url.as_str().to_owned(), Arc::new(cert));
        }
        Ok(CertStore {
            pins: pinned,
            cache: Arc::new(Mutex::new(Cache {
                certs: Bounded::new(settings.capacity),
                refused: Bounded::new(settings.capacity),
                flights: HashMap::new(),
                next_flight: 0,
            })),
            fetcher: Arc::new(Fetcher {
                client,
                max_bytes: settings.max_bytes,
                turns: Semaphore::new(FETCHES_AT_ONCE),
                fetch_timeout: settings.fetch_timeout,
            }),
            clock,
            metrics,
        })
    }

    /// The certificate for `url`, judged for that URL's region.
    pub async fn get(&self, url: &CertUrl) -> Result<Arc<SigningCert>, SnsError> {
        if let Some(cert) = self.pins.get(url.as_str()) {
            return Ok(cert.clone());
        }
        let step = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(url.as_str(), self.clock.now());
        let outcome = match step {
            Step::Known(known) => {
                let event = if known.is_ok() { "hit" } else { "refusal_kept" };
                self.metrics.cert_cache(event);
                return known;
            }
            Step::Crowded => {
                self.metrics.cert_cache("busy");
                return Err(SnsError::CertificateUnavailable(format!(
                    "{FLIGHTS} other certificates are being fetched or waiting"
                )));
            }
            Step::Join(outcome) => {
                self.metrics.cert_cache("shared");
                outcome
            }
            Step::Lead {
                id,
                sender,
                outcome,
            } => {
                self.start_fetch(url, id, sender);
                outcome
            }
        };
        match tokio::time::timeout(self.fetcher.outcome_wait(), wait_for(outcome)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SnsError::CertificateUnavailable(
                "the certificate fetch did not end in time".into(),
            )),
        }
    }

    /// Fetches `url` in a task of its own, which records the outcome and
    /// sends it to every message waiting, even when they are all gone
    /// (their clients hung up).
    fn start_fetch(&self, url: &CertUrl, id: u64, sender: watch::Sender<Option<Fetched>>) {
        let landing = Landing {
            cache: self.cache.clone(),
            key: url.as_str().to_owned(),
            id,
        };
        let url = url.clone();
        let fetcher = self.fetcher.clone();
        let clock = self.clock.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let turn = tokio::time::timeout(fetcher.turn_wait(), fetcher.turns.acquire()).await;
            let fetched = match turn {
                Ok(Ok(_turn)) => {
                    metrics.cert_cache("fetch");
                    Fetched::from_result(fetcher.fetch(&url).await)
                }
                _ => {
                    metrics.cert_cache("busy");
                    Fetched::Unavailable(format!(
                        "{FETCHES_AT_ONCE} other certificates were being fetched \
                         for longer than half SNS_CERT_FETCH_TIMEOUT_MS"
                    ))
                }
            };
            landing.record(&fetched, clock.now());
            // No one may be waiting any more; the outcome is kept anyway.
            let _ = sender.send(Some(fetched));
        });
    }
}

async fn wait_for(mut outcome: Outcome) -> Result<Arc<SigningCert>, SnsError> {
    let fetched = match outcome.wait_for(Option::is_some).await {
        Ok(done) => done.clone(),
        // The fetch's task ended without an outcome: it panicked.
        Err(_) => None,
    };
    fetched.map_or_else(
        || {
            Err(SnsError::CertificateUnavailable(
                "the certificate fetch ended without an answer".into(),
            ))
        },
        Fetched::into_result,
    )
}

impl Fetcher {
    async fn fetch(&self, url: &CertUrl) -> Result<SigningCert, SnsError> {
        let response = self
            .client
            .get(url.url().clone())
            .send()
            .await
            .map_err(|e| SnsError::CertificateUnavailable(describe_reqwest(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(SnsError::CertificateUnavailable(format!(
                "certificate host answered {status}; redirects are not followed"
            )));
        }
        if matches!(status.as_u16(), 403 | 404 | 410) {
            return Err(SnsError::CertificateInvalid(format!(
                "certificate host answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(SnsError::CertificateUnavailable(format!(
                "certificate host answered {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_bytes as u64)
        {
            return Err(self.too_large());
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| SnsError::CertificateUnavailable(describe_reqwest(&e)))?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        SigningCert::from_pem(&body, url.host()).map_err(SnsError::CertificateInvalid)
    }

    fn too_large(&self) -> SnsError {
        SnsError::CertificateInvalid(format!(
            "certificate is larger than SNS_CERT_MAX_BYTES ({})",
            self.max_bytes
        ))
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect ({e})")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Cache {
        Cache {
            certs: Bounded::new(2),
            refused: Bounded::new(2),
            flights: HashMap::new(),
            next_flight: 0,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::parse_rfc3339("2026-12-07T12:00:00Z")
            .expect("time")
            .saturating_add(time::Duration::seconds(secs))
    }

    fn cert() -> Arc<SigningCert> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/test-only/TEST-ONLY-sns-signing-cert.pem");
        let pem = std::fs::read(&path).expect("the TEST-ONLY certificate");
        let host =
            super::super::region::SnsHost::parse("sns.us-east-1.amazonaws.com").expect("host");
        Arc::new(SigningCert::from_pem(&pem, &host).expect("usable"))
    }

    /// The flight a first message leads, and the sender it sends with.
    fn lead(cache: &mut Cache, key: &str, now: Timestamp) -> (u64, watch::Sender<Option<Fetched>>) {
        match cache.step(key, now) {
            Step::Lead { id, sender, .. } => (id, sender),
            _ => panic!("{key}: not led"),
        }
    }

    #[test]
    fn one_fetch_a_url_and_only_its_own_flight_lands_it() {
        let mut cache = empty();
        let (first, sender) = lead(&mut cache, "a", at(0));
        assert!(matches!(cache.step("a", at(0)), Step::Join(_)));
        // A later flight of the URL is not landed by an earlier one.
        cache.land("a", first + 1);
        assert!(matches!(cache.step("a", at(0)), Step::Join(_)));
        cache.record("a", &Fetched::Cert(cert()), at(0));
        cache.land("a", first);
        assert!(matches!(cache.step("a", at(0)), Step::Known(Ok(_))));
        drop(sender);
    }

    #[test]
    fn a_flight_whose_task_died_is_replaced() {
        let mut cache = empty();
        let (first, sender) = lead(&mut cache, "a", at(0));
        drop(sender);
        let (second, _sender) = lead(&mut cache, "a", at(0));
        assert_ne!(first, second);
    }

    #[test]
    fn past_the_flights_a_new_url_is_turned_away() {
        let mut cache = empty();
        let senders: Vec<_> = (0..FLIGHTS)
            .map(|i| lead(&mut cache, &format!("u{i}"), at(0)))
            .collect();
        assert!(matches!(cache.step("one more", at(0)), Step::Crowded));
        // A URL already in flight is still joined.
        assert!(matches!(cache.step("u0", at(0)), Step::Join(_)));
        drop(senders);
    }

    #[test]
    fn a_refusal_is_answered_502_from_memory_for_its_seconds_only() {
        let mut cache = empty();
        let (id, _sender) = lead(&mut cache, "a", at(0));
        cache.record("a", &Fetched::Refused("host answered 404".into()), at(0));
        cache.land("a", id);
        match cache.step("a", at(REFUSAL_KEPT_SECS - 1)) {
            Step::Known(Err(SnsError::CertificateUnavailable(why))) => {
                assert!(why.contains("host answered 404"), "{why}");
            }
            _ => panic!("not remembered"),
        }
        let mut later = empty();
        let (id, _sender) = lead(&mut later, "a", at(0));
        later.record("a", &Fetched::Refused("404".into()), at(0));
        later.land("a", id);
        assert!(matches!(
            later.step("a", at(REFUSAL_KEPT_SECS)),
            Step::Lead { .. }
        ));
        // A clock set back a minute does not keep it longer.
        let mut back = empty();
        let (id, _sender) = lead(&mut back, "a", at(0));
        back.record("a", &Fetched::Refused("404".into()), at(0));
        back.land("a", id);
        assert!(matches!(back.step("a", at(-60)), Step::Lead { .. }));
    }

    #[test]
    fn failures_take_no_place_of_a_certificate() {
        let mut cache = empty();
        let (id, _sender) = lead(&mut cache, "real", at(0));
        cache.record("real", &Fetched::Cert(cert()), at(0));
        cache.land("real", id);
        for name in ["x", "y", "z"] {
            let (id, _sender) = lead(&mut cache, name, at(0));
            cache.record(name, &Fetched::Refused("404".into()), at(0));
            cache.record(name, &Fetched::Unavailable("500".into()), at(0));
            cache.land(name, id);
        }
        assert!(matches!(cache.step("real", at(1)), Step::Known(Ok(_))));
    }
}
