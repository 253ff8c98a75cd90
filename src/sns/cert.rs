//! Signing certificates: parsed once and judged at the message's signed
//! time. Where they come from (a pin, the cache, a fetch) is
//! [`super::cert_store`].
//!
//! A certificate is judged for the URL it is pinned at or fetched from: its
//! subject CN must be the signing name of that URL's region. Pins and cache
//! are keyed by that URL, so a certificate never serves another URL.

use std::path::Path;

use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;

use super::cert_url::CertUrl;
use super::region::SnsHost;
use crate::error::SnsError;
use crate::time::Timestamp;

/// What bouncer keeps of a signing certificate: its RSA key and validity.
#[derive(Debug)]
pub struct SigningCert {
    /// PKCS#1 `RSAPublicKey` DER, the form `ring` verifies with.
    pub public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

impl SigningCert {
    /// Parses the certificate served at (or pinned for) a URL on `host`: it
    /// must carry the signing name of `host`'s region and an RSA key.
    pub fn from_pem(pem: &[u8], host: &SnsHost) -> Result<Self, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("not a PEM certificate ({e})"))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!("it holds a PEM `{}`, not a CERTIFICATE", pem.label));
        }
        let cert = pem
            .parse_x509()
            .map_err(|_| "its CERTIFICATE block is not a valid X.509 certificate".to_owned())?;
        // Compared as bytes: older AWS certificates encode the CN as a
        // T61String, which x509-parser does not turn into `str`.
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .map(|cn| cn.as_slice());
        let expected = host.region().signing_name();
        if cn != Some(expected.as_bytes()) {
            return Err(match cn {
                Some(cn) => format!(
                    "subject CN is `{}`, but {} signs as {expected}",
                    String::from_utf8_lossy(cn),
                    host.region()
                ),
                None => format!(
                    "it has no subject CN; {} signs as {expected}",
                    host.region()
                ),
            });
        }
        let spki = cert.public_key();
        if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
            return Err("the public key is not RSA".into());
        }
        Ok(SigningCert {
            public_key: spki.subject_public_key.data.to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Validity is judged at the signed `Timestamp`, which the freshness
    /// check has already tied to now; replays of old real messages verify.
    pub fn check_valid_at(&self, at: Timestamp) -> Result<(), SnsError> {
        let secs = at.unix_millis().div_euclid(1000);
        if secs < self.not_before {
            return Err(SnsError::CertificateInvalid(
                "not yet valid at the message's Timestamp".into(),
            ));
        }
        if secs > self.not_after {
            return Err(SnsError::CertificateInvalid(
                "expired at the message's Timestamp".into(),
            ));
        }
        Ok(())
    }
}

pub(super) fn load_pem_file(path: &Path, url: &CertUrl) -> anyhow::Result<SigningCert> {
    let pem = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "SNS_CERT_PINS: cannot read pinned certificate {}: {e}",
            path.display()
        )
    })?;
    SigningCert::from_pem(&pem, url.host()).map_err(|why| {
        anyhow::anyhow!(
            "SNS_CERT_PINS: pinned certificate {} is refused for {}: {why}",
            path.display(),
            url.as_str()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TEST-ONLY certificate per naming shape, with a host of the region
    /// it was made for.
    const SHAPES: [(&str, &str); 7] = [
        (
            "TEST-ONLY-sns-signing-cert.pem",
            "sns.us-east-1.amazonaws.com",
        ),
        (
            "regions/TEST-ONLY-sns-signing.eu-south-1.amazonaws.com.pem",
            "sns.eu-south-1.amazonaws.com",
        ),
        (
            "regions/TEST-ONLY-sns-us-gov-west-1.amazonaws.com.pem",
            "sns.us-gov-east-1.amazonaws.com",
        ),
        (
            "regions/TEST-ONLY-sns-cn-northwest-1.amazonaws.com.cn.pem",
            "sns.cn-northwest-1.amazonaws.com.cn",
        ),
        (
            "regions/TEST-ONLY-sns-us-iso-east-1.c2s.ic.gov.pem",
            "sns.us-iso-east-1.c2s.ic.gov",
        ),
        (
            "regions/TEST-ONLY-sns-signing.eusc-de-east-1.amazonaws.eu.pem",
            "sns.eusc-de-east-1.amazonaws.eu",
        ),
        (
            "regions/TEST-ONLY-sns.amazonaws.com.cn.pem",
            "sns.cn-future-1.amazonaws.com.cn",
        ),
    ];

    fn pem(path: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn host(name: &str) -> SnsHost {
        SnsHost::parse(name).expect("an SNS host")
    }

    #[test]
    fn each_regions_certificate_serves_its_own_region_only() {
        for (i, (file, _)) in SHAPES.iter().enumerate() {
            let pem = pem(&format!("fixtures/test-only/{file}"));
            for (j, (_, at)) in SHAPES.iter().enumerate() {
                let judged = SigningCert::from_pem(&pem, &host(at));
                assert_eq!(judged.is_ok(), i == j, "{file} at {at}: {judged:?}");
            }
        }
    }

    #[test]
    fn real_aws_certificates_serve_default_regions() {
        for file in [
            "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
            "SimpleNotificationService-d6d679a1d18e95c2f9ffcf11f4f9e198.pem",
        ] {
            let pem = pem(&format!("fixtures/aws-real/certs/{file}"));
            assert!(SigningCert::from_pem(&pem, &host("sns.us-east-2.amazonaws.com")).is_ok());
            let refused = SigningCert::from_pem(&pem, &host("sns.eu-south-1.amazonaws.com"));
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|why| why.contains("sns-signing.eu-south-1.amazonaws.com")),
                "{refused:?}"
            );
        }
    }
}
