//! HTTP client settings shared by the remote backends: retries with
//! backoff, timeouts, and TLS always verified.

use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A process-wide cap on how long one request is retried, in milliseconds
/// (0: the default three minutes). Set by `replicate --watch`, which retries
/// whole captures itself and wants a dead store to show up as a failure soon.
static RETRY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// Retry each request for at most `limit` in stores opened from now on.
pub fn set_request_retry_timeout(limit: Duration) {
    RETRY_TIMEOUT_MS.store(limit.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Retry transient failures (5xx, throttling, dropped connections) with
/// exponential backoff, for at most three minutes per request.
pub fn retry_config() -> RetryConfig {
    let limit = match RETRY_TIMEOUT_MS.load(Ordering::Relaxed) {
        0 => Duration::from_secs(180),
        ms => Duration::from_millis(ms),
    };
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15)
                .min(limit / 2)
                .max(Duration::from_millis(100)),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: limit,
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
