//! HTTP client settings shared by the remote backends: retries with
//! backoff, timeouts, and TLS always verified.

use super::Options;
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
use std::time::Duration;

/// How long one request is retried when the options set no limit.
pub const DEFAULT_REQUEST_RETRY: Duration = Duration::from_secs(180);

/// Retry transient failures (5xx, throttling, dropped connections) with
/// exponential backoff, for at most `opts.request_retry` (default three
/// minutes) per request.
pub fn retry_config(opts: &Options) -> RetryConfig {
    let limit = opts
        .request_retry
        .unwrap_or(DEFAULT_REQUEST_RETRY)
        .max(Duration::from_millis(1));
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
    use super::{DEFAULT_REQUEST_RETRY, Options, plain_http, retry_config};
    use std::time::Duration;

    #[test]
    fn request_retry_comes_from_the_options_of_each_store() {
        let short = Options {
            request_retry: Some(Duration::from_secs(5)),
        };
        assert_eq!(retry_config(&short).retry_timeout, Duration::from_secs(5));
        assert!(retry_config(&short).backoff.max_backoff <= Duration::from_millis(2500));
        // Another store opened afterwards with default options is not
        // affected (the limit was a process-wide static before).
        let default = retry_config(&Options::default());
        assert_eq!(default.retry_timeout, DEFAULT_REQUEST_RETRY);
        assert_eq!(default.backoff.max_backoff, Duration::from_secs(15));
    }

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
