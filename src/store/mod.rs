//! Object store locations: parse a vault or state URL (`file://`, `az://`,
//! `s3://`) and open an `object_store` client rooted at its prefix.
//! Callers (the vault, remote state) see only `ObjectStore` and a prefix,
//! plus the conditional writes remote state needs (create-if-absent and
//! compare-and-swap on the etag) with typed errors.

mod azure;
mod client;
pub mod counting;
mod local;
mod redact;
mod retrying;
mod runtime;
mod s3;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

pub use client::DEFAULT_REQUEST_RETRY;
pub use counting::{Counts, counts};
pub use object_store::UpdateVersion;
pub use redact::redact;
pub use runtime::runtime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url:?} is not a store URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open store {url}: {message}")]
    Config { url: String, message: String },
    #[error("cannot open store {url}: {message}")]
    Open { url: String, message: String },
    #[error("{name} does not exist in store {url}")]
    NotFound { url: String, name: String },
    #[error("{name} already exists in store {url}")]
    AlreadyExists { url: String, name: String },
    #[error("{name} in store {url} changed since it was read (its etag no longer matches)")]
    Changed { url: String, name: String },
    #[error("{op} {name} in store {url} failed: {message}")]
    Request {
        url: String,
        name: String,
        op: &'static str,
        message: String,
    },
}

/// An opened store and the prefix under which everything lives.
#[derive(Clone)]
pub struct Store {
    pub url: String,
    pub inner: Arc<dyn ObjectStore>,
    pub prefix: StorePath,
    /// `file://` stores: their directory (see [`Store::sweep_unfinished`]).
    pub dir: Option<std::path::PathBuf>,
}

// Not derived: the clients' own Debug output includes their credentials.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("prefix", &self.prefix.as_ref())
            .finish_non_exhaustive()
    }
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

    /// Turn an `object_store` error from operation `op` on `name` into a
    /// `StoreError`: not-found, already-exists and precondition failures
    /// become their own variants; anything else keeps its (redacted) text.
    pub fn error(&self, op: &'static str, name: &str, err: object_store::Error) -> StoreError {
        let url = self.url.clone();
        let name = name.to_string();
        match err {
            object_store::Error::NotFound { .. } => StoreError::NotFound { url, name },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists { url, name },
            object_store::Error::Precondition { .. } => StoreError::Changed { url, name },
            other => StoreError::Request {
                url,
                name,
                op,
                message: describe(&other),
            },
        }
    }

    /// Create `name` holding `bytes`, only if no object of that name exists
    /// (refused with `AlreadyExists` otherwise, atomically on every backend).
    /// Returns the new object's version for a later `put_if_match`.
    pub async fn put_if_absent(
        &self,
        name: &str,
        bytes: impl Into<PutPayload>,
    ) -> Result<UpdateVersion, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let result = self
            .inner
            .put_opts(&self.path(name), bytes.into(), opts)
            .await
            .map_err(|e| self.error("create", name, e))?;
        Ok(UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        })
    }

    /// Replace `name` with `bytes` only if it is still at `expected` (the
    /// version returned by `get_versioned`, `put_if_absent` or an earlier
    /// `put_if_match`); refused with `Changed` when anyone wrote it since
    /// or it is gone.
    pub async fn put_if_match(
        &self,
        name: &str,
        bytes: impl Into<PutPayload>,
        expected: &UpdateVersion,
    ) -> Result<UpdateVersion, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Update(expected.clone()),
            ..Default::default()
        };
        let result =
            self.inner
                .put_opts(&self.path(name), bytes.into(), opts)
                .await
                .map_err(|e| match self.error("update", name, e) {
                    // S3 answers NotFound for If-Match on a missing object, and
                    // 409 (read as AlreadyExists) when a concurrent conditional
                    // write to the same key won: both mean our version is stale.
                    StoreError::NotFound { url, name }
                    | StoreError::AlreadyExists { url, name } => StoreError::Changed { url, name },
                    other => other,
                })?;
        Ok(UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        })
    }

    /// Read `name` whole, with the version it was read at (from the same
    /// response, so the pair is consistent).
    pub async fn get_versioned(&self, name: &str) -> Result<(Bytes, UpdateVersion), StoreError> {
        let result = self
            .inner
            .get(&self.path(name))
            .await
            .map_err(|e| self.error("read", name, e))?;
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("read", name, e))?;
        Ok((bytes, version))
    }

    /// Size, last-modified time and version of `name` (e.g. a lock's age).
    pub async fn head(&self, name: &str) -> Result<object_store::ObjectMeta, StoreError> {
        self.inner
            .head(&self.path(name))
            .await
            .map_err(|e| self.error("inspect", name, e))
    }

    /// Delete `name`; deleting what is not there is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }
}

impl Store {
    /// On `file://`, delete the uploads a killed writer left unfinished:
    /// `NAME#N` files (N digits) beside where NAME was being written, which
    /// no listing shows and nothing else removes. Only files last modified
    /// at or before `cutoff` (seconds since the epoch, the file system's
    /// clock) go: a writer may still be writing younger ones (prune passes
    /// a grace period ago). Returns the files and bytes removed; other
    /// stores have none (an object there is written whole or not at all).
    pub fn sweep_unfinished(&self, cutoff: i64) -> Result<(usize, u64), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok((0, 0));
        };
        let failed = |e: std::io::Error, at: &std::path::Path| StoreError::Request {
            url: self.url.clone(),
            name: at.display().to_string(),
            op: "sweep",
            message: e.to_string(),
        };
        let (mut files, mut bytes) = (0, 0);
        let mut dirs = vec![dir.clone()];
        while let Some(d) = dirs.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(e, &d)),
            };
            for e in entries {
                let e = e.map_err(|e| failed(e, &d))?;
                let path = e.path();
                let kind = e.file_type().map_err(|e| failed(e, &path))?;
                if kind.is_dir() {
                    dirs.push(path);
                } else if unfinished(&e.file_name().to_string_lossy()) {
                    let Ok(meta) = e.metadata() else { continue };
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                    if mtime > cutoff {
                        continue;
                    }
                    let len = meta.len();
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            files += 1;
                            bytes += len;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(failed(e, &path)),
                    }
                }
            }
        }
        Ok((files, bytes))
    }
}

/// Whether a file name is an upload in progress (`NAME#N`, N digits), as
/// the local store stages them and leaves them out of listings.
fn unfinished(file: &str) -> bool {
    file.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The error and its causes on one line, secrets redacted: object_store's
/// top-level text alone often hides the reason (e.g. a refused certificate).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // The service's XML body says what is wrong in one word; the rest is
    // noise a user cannot act on.
    for (code, what) in MISSING_CONTAINER {
        if text.contains(code) {
            return what.to_string();
        }
    }
    redact(&text)
}

/// Service error codes for a missing container or bucket, and what to say.
const MISSING_CONTAINER: [(&str, &str); 2] = [
    (
        "ContainerNotFound",
        "the Azure container does not exist: create it (`az storage container create --name CONTAINER`) or name an existing one in the url (az://CONTAINER/PREFIX)",
    ),
    (
        "NoSuchBucket",
        "the S3 bucket does not exist: create it (`aws s3 mb s3://BUCKET`) or name an existing one in the url (s3://BUCKET/PREFIX)",
    ),
];

/// Open the store named by `url`:
/// - `file://PATH`: a directory; relative paths resolve against `base` (the
///   configuration directory), `file:///abs/path` is absolute;
/// - `az://CONTAINER/PREFIX`: Azure Blob Storage, configured by `AZURE_STORAGE_*`
///   (Azurite with `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`);
/// - `s3://BUCKET/PREFIX`: S3, configured by `AWS_*` (`AWS_ENDPOINT` for
///   S3-compatible servers such as moto).
pub fn open(url: &str, base: &std::path::Path) -> Result<Store, StoreError> {
    open_with(url, base, &Options::default())
}

/// How a store is opened (part of a workspace, never process-wide state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The longest one request to a remote store is retried (transient
    /// failures, backing off exponentially); None: three minutes
    /// ([`DEFAULT_REQUEST_RETRY`]). `replicate --watch` retries whole
    /// captures itself and sets it short, so a dead store shows up as a
    /// failed attempt soon.
    pub request_retry: Option<std::time::Duration>,
}

/// [`open`] with `opts`.
pub fn open_with(url: &str, base: &std::path::Path, opts: &Options) -> Result<Store, StoreError> {
    match parse_url(url)? {
        Parsed::File(rest) => open_file(url, rest, base),
        Parsed::Remote {
            azure,
            bucket,
            prefix,
        } => {
            // Listing pages: Azure Blob returns 5,000 names, S3 1,000.
            // Every attempt is a billed request, so counting sits below
            // the retries.
            let counted = if azure {
                counting::Counting::wrap(azure::open(url, bucket, opts)?, 5000)
            } else {
                counting::Counting::wrap(s3::open(url, bucket, opts)?, 1000)
            };
            let limit = opts.request_retry.unwrap_or(DEFAULT_REQUEST_RETRY);
            let inner = retrying::Retrying::wrap(counted, limit);
            Ok(Store {
                url: url.to_string(),
                inner,
                prefix,
                dir: None,
            })
        }
    }
}

/// Check the shape of a store URL (scheme, container or bucket name,
/// prefix) without opening anything: no credentials or network needed, so
/// configuration checks can use it.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    parse_url(url).map(|_| ())
}

/// A store URL taken apart.
enum Parsed<'a> {
    /// `file://` and the path after it.
    File(&'a str),
    Remote {
        azure: bool,
        bucket: &'a str,
        prefix: StorePath,
    },
}

fn parse_url(url: &str) -> Result<Parsed<'_>, StoreError> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme (file://, az:// or s3://)"))?;
    match scheme {
        "file" if rest.is_empty() => Err(bad(
            "file:// needs a directory, e.g. file://.standby/vault or file:///srv/vault",
        )),
        "file" => Ok(Parsed::File(rest)),
        "az" | "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let what = if scheme == "az" {
                "container"
            } else {
                "bucket"
            };
            check_bucket_name(bucket, scheme == "s3").map_err(|why| {
                bad(&format!(
                    "{bucket:?} is not a valid {what} name: {why} (expected {scheme}://{}/PREFIX)",
                    what.to_uppercase()
                ))
            })?;
            let prefix = parse_prefix(prefix).map_err(|why| bad(&why))?;
            Ok(Parsed::Remote {
                azure: scheme == "az",
                bucket,
                prefix,
            })
        }
        other => Err(bad(&format!(
            "unsupported scheme {other:?} (use file://, az:// or s3://)"
        ))),
    }
}

fn open_file(url: &str, rest: &str, base: &std::path::Path) -> Result<Store, StoreError> {
    // `file:///abs` leaves "/abs", which `join` keeps absolute.
    let dir = base.join(rest);
    let existed = dir.is_dir();
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Open {
        url: url.to_string(),
        message: format!("cannot create {}: {e}", dir.display()),
    })?;
    if !existed {
        // A new vault directory must survive a power cut with its first
        // objects: sync the entries that lead to it.
        for d in dir
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::Open {
                    url: url.to_string(),
                    message: format!("cannot sync {}: {e}", d.display()),
                })?;
        }
    }
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| StoreError::Open {
            url: url.to_string(),
            message: e.to_string(),
        })?
        // Data synced before the rename that publishes it (see `local`).
        .with_fsync(true);
    Ok(Store {
        url: url.to_string(),
        inner: counting::Counting::wrap(Arc::new(local::LocalStore::new(fs)), 0),
        prefix: StorePath::default(),
        dir: Some(dir),
    })
}

/// Container (Azure) and bucket (S3) names share the core rules: 3 to 63
/// characters, lowercase letters, digits and hyphens, starting and ending
/// with a letter or digit; S3 also allows dots.
fn check_bucket_name(name: &str, dots: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() < 3 || name.len() > 63 {
        return Err("it must be 3 to 63 characters long");
    }
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if !name.chars().all(ok_char) {
        return Err(if dots {
            "only lowercase letters, digits, '-' and '.' are allowed"
        } else {
            "only lowercase letters, digits and '-' are allowed"
        });
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

fn parse_prefix(prefix: &str) -> Result<StorePath, String> {
    let trimmed = prefix.trim_matches('/');
    StorePath::parse(trimmed)
        .map_err(|e| format!("the prefix {trimmed:?} is not a valid object path: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(check_bucket_name("standby-test", false).is_ok());
        assert!(check_bucket_name("a.b.c", true).is_ok());
        assert!(check_bucket_name("a.b.c", false).is_err());
        assert!(check_bucket_name("Upper", false).is_err());
        assert!(check_bucket_name("ab", false).is_err());
        assert!(check_bucket_name("-ab", false).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("").unwrap().as_ref(), "");
        assert_eq!(parse_prefix("/a/b/").unwrap().as_ref(), "a/b");
        assert!(parse_prefix("a//b").is_err());
    }
}
