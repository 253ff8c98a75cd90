//! Serving HTTPS directly: the certificate chain of `TLS_CERT_FILE` and the
//! key of `TLS_KEY_FILE`, read and checked at start-up so that a wrong file
//! is told by the setting that names it, not by a TLS library's error type.

use std::path::Path;

use anyhow::{anyhow, bail};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Settings;
use crate::outbound::crypto_provider;

/// The server's TLS configuration, or `None` for plain HTTP.
pub fn server_config(settings: &Settings) -> anyhow::Result<Option<rustls::ServerConfig>> {
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
    let chain = certificates(cert_file)?;
    let key = private_key(key_file)?;
    let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
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
        })?;
    Ok(Some(config))
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
