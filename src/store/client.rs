//! HTTP client settings shared by the remote backends: retries with
//! backoff, timeouts, and TLS always verified.

use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
use std::time::Duration;

/// Retry transient failures (5xx, throttling, dropped connections) with
/// exponential backoff, for at most three minutes per request.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// Client settings as (key, value) pairs, applied after the environment so
/// that nothing in it can turn certificate checks off. Packs are tens of MiB,
/// so a whole request may take minutes on a slow link; a stalled read is cut
/// after a minute.
pub fn client_settings(allow_http: bool) -> Vec<(ClientConfigKey, String)> {
    vec![
        (ClientConfigKey::AllowInvalidCertificates, "false".into()),
        (ClientConfigKey::AllowHttp, allow_http.to_string()),
        (ClientConfigKey::ConnectTimeout, "10s".into()),
        (ClientConfigKey::Timeout, "5m".into()),
        (ClientConfigKey::ReadTimeout, "60s".into()),
    ]
}

/// True when `endpoint` is an explicit plain-http URL (an emulator).
pub fn is_plain_http(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}
