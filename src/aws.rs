//! Loading the AWS SDK configuration once for every AWS client bouncer
//! builds (the SNS confirmer, the SESv2 client): the standard credential
//! chain (or the credentials a test hands in), a region, and HTTPS over
//! rustls with ring, so that no OpenSSL is linked.

use aws_config::BehaviorVersion;
use aws_config::Region;

/// The shared configuration: credentials from the standard chain unless
/// `credentials` is given, `region` as the default region of its clients.
pub async fn load_sdk_config(
    region: &str,
    credentials: Option<aws_credential_types::Credentials>,
) -> aws_config::SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .region(Region::new(region.to_owned()));
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}
