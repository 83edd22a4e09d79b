//! `az://CONTAINER/PREFIX`: Azure Blob Storage (or Azurite) configured from
//! the environment, checked up front so a missing setting is named precisely
//! and no credential lookup ever wanders off to a metadata service.

use super::client::{client_settings, plain_http, retry_config};
use super::{Options, StoreError};
use object_store::ObjectStore;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use std::sync::Arc;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_true(name: &str) -> bool {
    env(name)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Build a client for `container` from the environment.
pub fn open(
    url: &str,
    container: &str,
    opts: &Options,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let config = |message: String| StoreError::Config {
        url: url.to_string(),
        message,
    };
    let emulator = env_true("AZURE_STORAGE_USE_EMULATOR");
    let key = env("AZURE_STORAGE_ACCOUNT_KEY")
        .or_else(|| env("AZURE_STORAGE_ACCESS_KEY"))
        .or_else(|| env("AZURE_STORAGE_MASTER_KEY"));
    if let Some(key) = &key {
        // object_store's own decode error would quote part of the key.
        if !looks_like_base64(key) {
            return Err(config(
                "AZURE_STORAGE_ACCOUNT_KEY is not a base64 account key (copy it again from the storage account's access keys)".into(),
            ));
        }
    }
    let mut endpoint_http = false;
    if emulator {
        if let Some(blob_url) = env("AZURITE_BLOB_STORAGE_URL") {
            endpoint_http = plain_http(&blob_url, "AZURITE_BLOB_STORAGE_URL").map_err(config)?;
        } else {
            endpoint_http = true; // object_store's default http://127.0.0.1:10000
        }
    } else {
        if env("AZURE_STORAGE_ACCOUNT_NAME").is_none() {
            return Err(config(
                "az:// needs AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_USE_EMULATOR=true".into(),
            ));
        }
        let has_sas =
            env("AZURE_STORAGE_SAS_KEY").is_some() || env("AZURE_STORAGE_SAS_TOKEN").is_some();
        let has_token = env("AZURE_STORAGE_TOKEN").is_some();
        let has_client_secret = (env("AZURE_STORAGE_CLIENT_ID").is_some()
            || env("AZURE_CLIENT_ID").is_some())
            && (env("AZURE_STORAGE_CLIENT_SECRET").is_some()
                || env("AZURE_CLIENT_SECRET").is_some())
            && (env("AZURE_STORAGE_TENANT_ID").is_some() || env("AZURE_TENANT_ID").is_some());
        // An explicit credential type (managed identity, workload identity,
        // Azure CLI) is the user's informed choice; without one we never
        // probe a metadata endpoint.
        let explicit_type =
            env("AZURE_CREDENTIAL_TYPE").is_some() || env_true("AZURE_USE_AZURE_CLI");
        if key.is_none() && !has_sas && !has_token && !has_client_secret && !explicit_type {
            return Err(config(
                "az:// needs credentials: AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_TOKEN, or AZURE_CLIENT_ID + AZURE_CLIENT_SECRET + AZURE_TENANT_ID, or AZURE_CREDENTIAL_TYPE (e.g. managed_identity)".into(),
            ));
        }
        if let Some(endpoint) = env("AZURE_STORAGE_ENDPOINT").or_else(|| env("AZURE_ENDPOINT")) {
            endpoint_http = plain_http(&endpoint, "AZURE_STORAGE_ENDPOINT").map_err(config)?;
        }
    }

    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .with_retry(retry_config(opts));
    for (key, value) in client_settings(endpoint_http) {
        builder = builder.with_config(AzureConfigKey::Client(key), value);
    }
    let azure = builder.build().map_err(|e| StoreError::Open {
        url: url.to_string(),
        message: super::describe(&e),
    })?;
    Ok(Arc::new(azure))
}

/// A plausible base64 string: the alphabet, `=` padding only at the end,
/// length a multiple of four.
fn looks_like_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
