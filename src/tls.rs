//! Serving HTTPS directly: the certificate chain of `TLS_CERT_FILE` and the
//! key of `TLS_KEY_FILE`, read and checked at start-up so that a wrong file
//! is told by the setting that names it, not by a TLS library's error type,
//! and read again on SIGHUP (a renewed certificate), where a pair that does
//! not check out is logged and the one in use kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Settings;

/// The server's TLS configuration and the certificate it serves, or `None`
/// for plain HTTP.
pub fn server_config(
    settings: &Settings,
) -> anyhow::Result<Option<(rustls::ServerConfig, Arc<ServedCertificate>)>> {
    let (cert_file, key_file) = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => bail!(
            "TLS_CERT_FILE is set but TLS_KEY_FILE is not: set both, or neither for plain HTTP"
        ),
        (None, Some(_)) => bail!(
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not: set both, or neither for plain HTTP"
        ),
    };
    let provider = server_provider();
    let served = Arc::new(ServedCertificate {
        current: RwLock::new(Arc::new(certified_key(cert_file, key_file, &provider)?)),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        provider: provider.clone(),
    });
    served.log_expiry();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(served.clone());
    // SNS opens a connection per message, so a handshake per message is
    // most of what HTTPS costs (BENCHMARKS.md, "Over HTTPS"). The suite
    // is chosen by this server's order, AES-128-GCM with SHA-256 first: a
    // client that lists AES-256-GCM with SHA-384 first (Java's default)
    // would otherwise make every handshake's key schedule run SHA-384,
    // which ring computes without the CPU's SHA extensions.
    config.ignore_client_order = true;
    // A client that comes back resumes with a stateless ticket (no server
    // cache to outgrow, whichever worker answers), and one ticket a
    // connection is enough for a client that opens one at a time.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| anyhow!("TLS: {e}"))?;
    config.send_tls13_tickets = 1;
    Ok(Some((config, served)))
}

/// The certificate and key every handshake is answered with, replaced in
/// place by [`ServedCertificate::reload`]: a renewal needs no restart,
/// and connections under way keep the key they began with.
#[derive(Debug)]
pub struct ServedCertificate {
    current: RwLock<Arc<rustls::sign::CertifiedKey>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServedCertificate {
    /// Reads both files again and serves them if they check out as at
    /// start-up and their certificate is valid now (a stale copy restored
    /// over a renewed one would be refused by every client); otherwise
    /// says why and keeps what is served.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some((from, until)) = validity(&fresh)
            && !(from..until).contains(&now)
        {
            anyhow::bail!(
                "TLS_CERT_FILE {}: its certificate is valid from {} until {}, not now",
                self.cert_file.display(),
                text(from),
                text(until)
            );
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.log_expiry();
        Ok(())
    }

    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    fn served(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the served certificate expires, as Unix seconds.
    pub fn expires_at(&self) -> Option<i64> {
        validity(&self.served()).map(|(_, until)| until)
    }

    /// Logs an expired certificate (`ERROR`), or one that expires within
    /// 14 days (`WARN`); at start-up, on reload, and daily (a renewal that
    /// failed sends no SIGHUP). It is still served: the operator may be
    /// about to renew it.
    pub fn log_expiry(&self) {
        let Some(until) = self.expires_at() else {
            return;
        };
        let left = until - time::OffsetDateTime::now_utc().unix_timestamp();
        let file = self.cert_file.display();
        if left <= 0 {
            tracing::error!(%file, expired_at = %text(until), "TLS_CERT_FILE's certificate has expired: clients refuse it; renew it and send SIGHUP");
        } else if left < 14 * 86_400 {
            let days_left = (left + 86_399) / 86_400;
            tracing::warn!(%file, expires_at = %text(until), days_left, "TLS_CERT_FILE's certificate expires soon: renew it and send SIGHUP");
        }
    }
}

/// The served leaf's validity, as Unix seconds: not before, not after.
fn validity(key: &rustls::sign::CertifiedKey) -> Option<(i64, i64)> {
    let leaf = key.end_entity_cert().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let validity = cert.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Unix seconds as the timestamps bouncer writes elsewhere.
fn text(secs: i64) -> String {
    crate::time::Timestamp::from_unix_millis(secs.saturating_mul(1000))
        .map_or_else(|| secs.to_string(), crate::time::Timestamp::to_text)
}

impl rustls::server::ResolvesServerCert for ServedCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.served())
    }
}

/// The pair of files as one served certificate, each problem told by the
/// setting that names the file.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let chain = certificates(cert_file)?;
    let key = private_key(key_file)?;
    rustls::sign::CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => anyhow!(
            "TLS_KEY_FILE {} is not the key of the certificate in TLS_CERT_FILE {} (the server's own certificate must come first in that file)",
            key_file.display(),
            cert_file.display()
        ),
        other => anyhow!(
            "TLS_CERT_FILE {} and TLS_KEY_FILE {} cannot be used together: {other}",
            cert_file.display(),
            key_file.display()
        ),
    })
}

/// ring's suites with AES-128-GCM first in each version, the rest in
/// ring's order.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        let aes_128 = matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        (
            suite.version().version != rustls::ProtocolVersion::TLSv1_3,
            !aes_128,
        )
    });
    Arc::new(provider)
}

fn read(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("cannot read {setting} {}: {e}", path.display()))
}

fn not_pem(setting: &str, path: &Path, e: &pem::Error) -> anyhow::Error {
    let why = match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block's base64 is damaged".to_owned(),
        pem::Error::Io(io) => io.to_string(),
        _ => "it is not PEM".to_owned(),
    };
    anyhow!("{setting} {} is not usable: {why}", path.display())
}

/// Every certificate in the file, each checked to be X.509.
fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    const SETTING: &str = "TLS_CERT_FILE";
    let bytes = read(SETTING, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(SETTING, path, &e))?;
    if chain.is_empty() {
        bail!(
            "{SETTING} {} holds no certificate (a PEM block `-----BEGIN CERTIFICATE-----`)",
            path.display()
        );
    }
    for (i, der) in chain.iter().enumerate() {
        if x509_parser::parse_x509_certificate(der).is_err() {
            bail!(
                "{SETTING} {}: certificate {} of {} is not a valid X.509 certificate",
                path.display(),
                i + 1,
                chain.len()
            );
        }
    }
    Ok(chain)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    const SETTING: &str = "TLS_KEY_FILE";
    let bytes = read(SETTING, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "{SETTING} {} holds no private key (a PEM block `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
            path.display()
        ),
        other => not_pem(SETTING, path, &other),
    })
}
