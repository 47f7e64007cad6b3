//! AWS SDK configuration for every crate that calls AWS (ingest's Firehose sink, the
//! administration crate), made in one place so all of them share one HTTP client on one TLS
//! crypto stack: rustls on `ring`, the stack object_store and reqwest already use. (The SDKs'
//! default client would build `aws-lc-sys` beside it.)
//!
//! Credentials come from the AWS default chain (environment, profiles and SSO, web identity,
//! ECS, the instance role); they are never read, logged or stored here.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The region to use: the one given, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else
/// `us-east-1`.
pub fn region(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into())
}

/// The shared HTTPS client: rustls with ring.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// SDK config for `region`, optionally against an emulator's endpoint (moto, LocalStack).
pub async fn sdk_config(region: &str, endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http_client());
    if let Some(ep) = endpoint_url {
        loader = loader.endpoint_url(ep);
    }
    loader.load().await
}
