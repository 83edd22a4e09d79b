//! `s3://BUCKET/PREFIX`: Amazon S3 or an S3-compatible server (moto in
//! tests) configured from the environment, checked up front so a missing
//! setting is named precisely and no credential lookup wanders off to the
//! instance metadata service.

use super::client::{client_settings, plain_http, retry_config};
use super::{Options, StoreError};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use std::sync::Arc;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Build a client for `bucket` from the environment.
pub fn open(url: &str, bucket: &str, opts: &Options) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let config = |message: &str| StoreError::Config {
        url: url.to_string(),
        message: message.to_string(),
    };
    let id = env("AWS_ACCESS_KEY_ID").is_some();
    let secret = env("AWS_SECRET_ACCESS_KEY").is_some();
    let web_identity =
        env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && env("AWS_ROLE_ARN").is_some();
    let container = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || (env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
            && env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").is_some());
    match (id, secret) {
        (true, false) => {
            return Err(config(
                "s3:// has AWS_ACCESS_KEY_ID but needs AWS_SECRET_ACCESS_KEY too",
            ));
        }
        (false, true) => {
            return Err(config(
                "s3:// has AWS_SECRET_ACCESS_KEY but needs AWS_ACCESS_KEY_ID too",
            ));
        }
        (false, false) if !web_identity && !container => {
            return Err(config(
                "s3:// needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, or container credentials)",
            ));
        }
        _ => {}
    }
    let endpoint = env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"));
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    if endpoint.is_none() && region.is_none() {
        return Err(config(
            "s3:// needs AWS_REGION (or AWS_DEFAULT_REGION) naming the bucket's region, or AWS_ENDPOINT for an S3-compatible server",
        ));
    }
    let allow_http = match &endpoint {
        Some(e) => plain_http(e, "AWS_ENDPOINT").map_err(|m| config(&m))?,
        None => false,
    };

    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry_config(opts))
        // If-None-Match / If-Match on PUT: create-if-absent and etag CAS.
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    if let Some(region) = region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    for (key, value) in client_settings(allow_http) {
        builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
    }
    let s3 = builder.build().map_err(|e| StoreError::Open {
        url: url.to_string(),
        message: super::describe(&e),
    })?;
    Ok(Arc::new(s3))
}
