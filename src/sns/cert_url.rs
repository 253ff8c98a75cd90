//! The rule for URLs that bouncer will ever fetch on behalf of a message:
//! the signing certificate URL, and (for `url` confirmation) the
//! SubscribeURL. It is checked on the parsed URL, never on the text, because
//! every known bypass of other validators came from matching text.

use url::{Host, Url};

use super::region::{Region, SnsHost};

/// A signing certificate URL that passed the rule, with the SNS host (and so
/// the region) it names.
#[derive(Debug, Clone)]
pub struct CertUrl {
    url: Url,
    host: SnsHost,
}

impl CertUrl {
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn host(&self) -> &SnsHost {
        &self.host
    }
}

/// Checks everything but the path: https, an SNS host by name
/// (`sns.<region>.<that region's partition domain>`), port 443, no user
/// info, no fragment.
fn check_origin(url: &Url) -> Result<SnsHost, String> {
    if url.scheme() != "https" {
        return Err(format!("scheme `{}` is not https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info is not allowed".into());
    }
    let host = match url.host() {
        Some(Host::Domain(host)) => SnsHost::parse(host)?,
        Some(host) => return Err(format!("host `{host}` is not an Amazon SNS host")),
        None => return Err("no host".into()),
    };
    if url.port_or_known_default() != Some(443) {
        return Err("port must be 443".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment is not allowed".into());
    }
    Ok(host)
}

/// The longest `SigningCertURL` looked at, in bytes.
pub const MAX_CERT_URL_BYTES: usize = 1024;

/// The signing certificate URL rule: at most [`MAX_CERT_URL_BYTES`], origin
/// as above, a path ending in `.pem`, and no query.
pub fn check_cert_url(text: &str) -> Result<CertUrl, String> {
    // Real ones are about 100 characters; a refused URL is remembered for
    // a minute, so its size is bounded here.
    if text.len() > MAX_CERT_URL_BYTES {
        return Err(format!("longer than {MAX_CERT_URL_BYTES} bytes"));
    }
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    let host = check_origin(&url)?;
    if url.query().is_some() {
        return Err("a query is not allowed".into());
    }
    if !url.path().ends_with(".pem") || url.path().len() <= "/.pem".len() {
        return Err("path must name a .pem file".into());
    }
    Ok(CertUrl { url, host })
}

/// The SubscribeURL rule: origin as above in the topic's own `region` (as
/// for the certificate), path `/`, and a query whose `Action` is
/// `ConfirmSubscription`.
pub fn check_subscribe_url(text: &str, region: &Region) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    let host = check_origin(&url)?;
    if host.region() != region {
        return Err(format!(
            "it names region {}, but the topic is in {region}",
            host.region()
        ));
    }
    if url.path() != "/" {
        return Err("path must be `/`".into());
    }
    let actions: Vec<_> = url
        .query_pairs()
        .filter(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .collect();
    if actions != ["ConfirmSubscription"] {
        return Err("query must carry Action=ConfirmSubscription once".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_aws_sns_hosts() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-south-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-iso-east-1.c2s.ic.gov/SimpleNotificationService-abc.pem",
            "https://sns.eusc-de-east-1.amazonaws.eu/SimpleNotificationService-abc.pem",
            "https://SNS.US-EAST-1.AMAZONAWS.COM/x.pem",
            "https://sns.us-east-1.amazonaws.com:443/x.pem",
        ] {
            assert!(check_cert_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_known_bypasses() {
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://evil.s3.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?a=b",
            "https://sns.us-east-1.amazonaws.com/x.pem#frag",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com/.pem",
            "https://sns.x.amazonaws.com/x.pem",
            "https://sns.us_east.amazonaws.com/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            // S3 endpoints serving a bucket named `sns`.
            "https://sns.s3-external-1.amazonaws.com/x.pem",
            "https://sns.s3-us-west-2.amazonaws.com/x.pem",
            // A region under another partition's domain.
            "https://sns.cn-north-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.cn/x.pem",
            "https://54.239.1.1/x.pem",
            "https://xsns.us-east-1.amazonaws.com/x.pem",
            "file:///etc/passwd.pem",
            "not a url",
        ] {
            assert!(check_cert_url(bad).is_err(), "{bad}");
        }
        let long = format!(
            "https://sns.us-east-1.amazonaws.com/{}.pem",
            "a".repeat(990)
        );
        let longest = format!("{}.pem", &long[..MAX_CERT_URL_BYTES - 4]);
        assert!(check_cert_url(&longest).is_ok());
        let past = format!("{}.pem", &long[..MAX_CERT_URL_BYTES - 3]);
        assert_eq!(
            check_cert_url(&past).err().as_deref(),
            Some("longer than 1024 bytes")
        );
    }

    #[test]
    fn subscribe_url_needs_confirm_action() {
        let ok = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc";
        let region = Region::parse("us-east-1").unwrap();
        assert!(check_subscribe_url(ok, &region).is_ok());
        for bad in [
            ok.replace("ConfirmSubscription", "Unsubscribe"),
            ok.replace("sns.us-east-1", "sqs.us-east-1"),
            ok.replace("https", "http"),
        ] {
            assert!(check_subscribe_url(&bad, &region).is_err(), "{bad}");
        }
        // Another region's SNS host: SNS sends the topic's own.
        let elsewhere = ok.replace("sns.us-east-1", "sns.eu-west-1");
        let why = check_subscribe_url(&elsewhere, &region).unwrap_err();
        assert!(
            why.contains("eu-west-1") && why.contains("us-east-1"),
            "{why}"
        );
    }
}
