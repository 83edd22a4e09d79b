//! Object store locations: parse a vault or state URL (`file://`, `az://`,
//! `s3://`) and open an `object_store` client rooted at its prefix.
//! Callers (the vault, remote state) see only `ObjectStore` and a prefix.

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url:?} is not a store URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// An opened store and the prefix under which everything lives.
#[derive(Clone, Debug)]
pub struct Store {
    pub url: String,
    pub inner: Arc<dyn ObjectStore>,
    pub prefix: StorePath,
}

impl Store {
    /// The full path of `name` (e.g. `config`, `data/ab/abcd…`) under the prefix.
    pub fn path(&self, name: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }
}

/// Open the store named by `url`. Relative `file://` paths resolve against
/// `base` (the configuration directory).
pub fn open(url: &str, base: &std::path::Path) -> Result<Store, StoreError> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme (file://, az:// or s3://)"))?;
    match scheme {
        "file" => {
            let dir = base.join(rest);
            std::fs::create_dir_all(&dir)
                .map_err(|e| bad(&format!("cannot create {}: {e}", dir.display())))?;
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|source| {
                    StoreError::Open {
                        url: url.to_string(),
                        source,
                    }
                })?;
            Ok(Store {
                url: url.to_string(),
                inner: Arc::new(fs),
                prefix: StorePath::default(),
            })
        }
        other => Err(bad(&format!("unsupported scheme {other:?}"))),
    }
}
