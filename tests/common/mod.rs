//! Shared test helpers: where the test services are and unique names.
#![allow(dead_code)]

/// The URL of a service the suite needs, from `var` (`STANDBY_TEST_AZ_URL`
/// or `STANDBY_TEST_S3_URL`, written by `.ci/services.sh start`).
pub fn service_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: start the services with .ci/services.sh (bash .ci/run does), \
             then `source .ci/.cache/services.env`"
        ),
    }
}

/// A name no other test (or earlier run) uses: `tag-<uuid>`.
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}
