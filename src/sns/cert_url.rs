//! The rule for URLs that bouncer will ever fetch on behalf of a message:
//! the signing certificate URL, and (for `url` confirmation) the
//! SubscribeURL. It is checked on the parsed URL, never on the text, because
//! every known bypass of other validators came from matching text.

use url::{Host, Url};

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, where
/// the region is at least three letters, digits or dashes. This is the
/// pattern of the official AWS validators, checked label by label; it
/// excludes every other `*.amazonaws.com` host (such as S3 buckets).
pub fn is_sns_host(host: &str) -> bool {
    let rest = match host.strip_prefix("sns.") {
        Some(rest) => rest,
        None => return false,
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    match region {
        Some(region) => {
            region.len() >= 3
                && region
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
        None => false,
    }
}

/// Checks everything but the path: https, an SNS host by name, port 443, no
/// user info, no fragment.
fn check_origin(url: &Url) -> Result<(), String> {
    if url.scheme() != "https" {
        return Err(format!("scheme `{}` is not https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info is not allowed".into());
    }
    match url.host() {
        Some(Host::Domain(host)) if is_sns_host(host) => {}
        Some(host) => return Err(format!("host `{host}` is not an Amazon SNS host")),
        None => return Err("no host".into()),
    }
    if url.port_or_known_default() != Some(443) {
        return Err("port must be 443".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment is not allowed".into());
    }
    Ok(())
}

/// The signing certificate URL rule: origin as above, a path ending in
/// `.pem`, and no query.
pub fn check_cert_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    check_origin(&url)?;
    if url.query().is_some() {
        return Err("a query is not allowed".into());
    }
    if !url.path().ends_with(".pem") || url.path().len() <= "/.pem".len() {
        return Err("path must name a .pem file".into());
    }
    Ok(url)
}

/// The SubscribeURL rule: origin as above, path `/`, and a query whose
/// `Action` is `ConfirmSubscription`.
pub fn check_subscribe_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    check_origin(&url)?;
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
            "https://54.239.1.1/x.pem",
            "https://xsns.us-east-1.amazonaws.com/x.pem",
            "file:///etc/passwd.pem",
            "not a url",
        ] {
            assert!(check_cert_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subscribe_url_needs_confirm_action() {
        let ok = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc";
        assert!(check_subscribe_url(ok).is_ok());
        assert!(check_subscribe_url(&ok.replace("ConfirmSubscription", "Unsubscribe")).is_err());
        assert!(check_subscribe_url(&ok.replace("sns.us-east-1", "sqs.us-east-1")).is_err());
        assert!(check_subscribe_url(&ok.replace("https", "http")).is_err());
    }
}
