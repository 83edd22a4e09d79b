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

/// Whether `endpoint` (named by the setting `var`) may be reached over
/// plain http: only an emulator on this machine (a loopback host). Any other
/// endpoint must be https://, so credentials and data never cross a network
/// unencrypted and certificates are always verified.
pub fn plain_http(endpoint: &str, var: &str) -> Result<bool, String> {
    let lower = endpoint.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(false);
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!(
            "{var}={endpoint:?} must start with https:// (or http:// for an emulator on this machine)"
        ));
    };
    if is_loopback(rest) {
        return Ok(true);
    }
    Err(format!(
        "{var}={endpoint:?} is plain http to another machine: use https:// (plain http is allowed only to an emulator on a loopback address: 127.0.0.1, ::1, localhost)"
    ))
}

/// True when the authority at the start of `rest` (`host[:port][/...]`)
/// names this machine.
fn is_loopback(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the URL (`user@host`) would hide the real host.
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::plain_http;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:10000",
            "http://localhost:4566/",
            "http://[::1]:9000",
            "HTTP://127.0.0.2",
        ] {
            assert_eq!(plain_http(ok, "X"), Ok(true), "{ok}");
        }
        assert_eq!(plain_http("https://s3.example.com", "X"), Ok(false));
        for bad in [
            "http://s3.example.com",
            "http://10.0.0.5:9000",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example/",
            "http://127.0.0.1@evil.example",
            "ftp://127.0.0.1",
            "127.0.0.1:9000",
        ] {
            assert!(plain_http(bad, "X").is_err(), "{bad}");
        }
    }
}
