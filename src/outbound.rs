//! Outbound HTTPS: one rustls configuration (ring, the bundled Mozilla roots)
//! for every request bouncer makes to AWS and to alert webhooks.
//!
//! [`OutboundOverrides`] exists for tests only and is reachable only through
//! the library API, never through a setting: it lets a test point an AWS host
//! name at a local stand-in and trust that stand-in's test root. It does not
//! relax the URL rule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, Clone, Default)]
pub struct OutboundOverrides {
    /// Extra trusted root certificates, PEM.
    pub extra_root_pem: Option<Vec<u8>>,
    /// Host names resolved to these addresses instead of DNS.
    pub resolve: Vec<(String, SocketAddr)>,
}

/// Makes ring the process-wide rustls provider, for libraries (and tests)
/// that build TLS clients without being handed a configuration.
pub fn install_default_provider() {
    // Fails only when a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn tls_client_config(overrides: &OutboundOverrides) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &overrides.extra_root_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert?)?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client that never follows redirects, speaks only https when `https_only`,
/// and gives up after `timeout`.
pub fn http_client(
    overrides: &OutboundOverrides,
    timeout: Duration,
    https_only: bool,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client_config(overrides)?)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(https_only)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("bouncer/", env!("CARGO_PKG_VERSION")));
    for (host, addr) in &overrides.resolve {
        builder = builder.resolve(host, *addr);
    }
    Ok(builder.build()?)
}
