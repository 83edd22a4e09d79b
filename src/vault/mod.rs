//! The vault: an encrypted, compressed, deduplicated store of recovery
//! points on any object store. Layers (after restic's design): the store
//! saves/loads/lists/deletes named immutable objects; this module seals
//! them and knows the layout; `pack`/`index` hold blobs; `manifest` holds
//! points on top.
//!
//! Layout under the store prefix: `config` (plain JSON: vault id, format,
//! salt, sealed key check), `data/<2 hex>/<pack id>`, `index/<id>`,
//! `points/<point id>`, `locks/<id>`. Names are keyed BLAKE3 ids.

pub mod catalog;
pub mod clock;
pub mod gc;
pub mod holds;
pub mod index;
pub mod keys;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod moves;
pub mod owners;
pub mod pack;
pub mod prune;
pub mod query;
pub mod read;
pub mod seal;
pub mod verify;

pub use index::{Index, Location};

/// Why a manifest or index object is refused (the text names the field and
/// what is wrong with it); the reader reports the object as damaged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
pub use keys::{KeyError, MasterKey};
pub use manifest::{Consistency, DiskMap, Extent, Manifest};

use crate::model::KeySource;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use seal::Sealer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the vault. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    // The causes too: object_store's own text hides e.g. a refused certificate.
    #[error("vault {url}: cannot {op} {object}: {}", crate::store::describe(source.as_ref()))]
    Store {
        url: String,
        op: &'static str,
        object: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("vault {url}: object {object} is missing")]
    Missing { url: String, object: String },
    #[error("vault {url}: object {object} is damaged: {reason}")]
    Damaged {
        url: String,
        object: String,
        reason: String,
    },
    #[error("this key does not open vault {url}")]
    WrongKey { url: String },
    #[error("{url} is not a vault yet (it has no config object); run `standby vault init`")]
    NotAVault { url: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Open(#[from] Box<StoreError>),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "point {point} was pruned from vault {url} while it was being read (retention dropped it); choose another point (`standby points`)"
    )]
    Pruned { url: String, point: String },
    #[error("no point matches {query:?} in vault {url}")]
    PointNotFound { url: String, query: String },
    #[error("{query:?} matches several points ({candidates}); give more of the id")]
    AmbiguousPoint { query: String, candidates: String },
    #[error(
        "disk {disk:?} of point {point} is {size} bytes; mapping its blocks needs {need} bytes of memory and only {available} are available: restore it on a machine with more memory"
    )]
    TooBigToMap {
        point: String,
        disk: String,
        size: u64,
        need: u64,
        available: u64,
    },
    #[error("point {point} has no disk {disk:?} (it has: {have})")]
    NoSuchDisk {
        point: String,
        disk: String,
        have: String,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "vault {url} is locked by {holder}; try again later (a lock this process sees unrenewed for {} minutes is taken as dead)",
        lock::STALE_AFTER.as_secs() / 60
    )]
    Locked { url: String, holder: String },
    #[error(
        "vault {url}: this process's lock {name} was removed by another process that took it for dead; nothing more was committed: run again"
    )]
    LockLost { url: String, name: String },
    #[error(
        "vault {url}: this configuration has no state yet, so no lineage to hand points to; run `standby apply` first"
    )]
    NoOwner { url: String },
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// A 256-bit id (keyed BLAKE3), written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn parse(s: &str) -> Option<Id> {
        let b = hex::decode(s).ok()?;
        Some(Id(b.try_into().ok()?))
    }
    /// The first 12 hex digits: what listings show.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).ok_or_else(|| serde::de::Error::custom("expected a 64-hex-digit id"))
    }
}

/// The format new vaults are created with: 2 keeps a per-machine catalog
/// (`heads/`, `catalog/`) beside the points. Format 1 vaults are read as
/// they are and upgraded by their first writer ([`catalog::ensure`]).
const FORMAT: u32 = 2;
/// The oldest format this build reads.
const FORMAT_MIN: u32 = 1;
const KEY_CHECK: &[u8] = b"standby vault key check v1";

/// The plain `config` object. `checksum` tells damage apart from a wrong key.
#[derive(Clone, Serialize, Deserialize)]
struct ConfigBody {
    format: u32,
    vault_id: String,
    salt: String,
    key_check: String,
}

/// An opened vault: its store, derived keys and a private I/O runtime.
/// The methods block; call them from plain threads, not async tasks.
pub struct Vault {
    pub url: String,
    /// Random id of this vault (hex); names the local change-tracking cache.
    pub id: String,
    /// The vault's format (1 or 2); see [`catalog`].
    format: std::sync::atomic::AtomicU32,
    config: ConfigBody,
    store: Store,
    /// The process's runtime (`store::runtime`).
    rt: &'static tokio::runtime::Runtime,
    keys: keys::Subkeys,
    data: Sealer,
    meta: Sealer,
    /// The index a replication deduplicates against, kept between points
    /// taken by this process, with the prune generation it is valid for
    /// (see `index::load_cached`).
    dedup: std::sync::Mutex<Option<(String, Index)>>,
    /// Other processes' locks as this process saw them: name -> (digest
    /// of the bytes, when first seen so), on this process's monotonic
    /// clock (see `lock`).
    locks_seen: std::sync::Mutex<std::collections::HashMap<String, ([u8; 32], std::time::Instant)>>,
    /// The lineage (state) this handle acts for; see [`Vault::set_owner`].
    owner: std::sync::Mutex<Option<String>>,
    /// The local cache directory (`.standby/cache`) whose index cache a
    /// restore may use instead of reading every index object; None: read
    /// them all.
    index_cache: std::sync::OnceLock<PathBuf>,
}

/// What `init` did.
pub struct InitOutcome {
    pub vault: Vault,
    /// The key file written, when there was none.
    pub key_created: Option<PathBuf>,
    /// The vault existed already (and the key opens it).
    pub existed: bool,
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    crate::store::runtime().map_err(VaultError::Runtime)
}

impl Vault {
    /// Create the vault at `url` (relative file paths and key files resolve
    /// against `base`). Writes a key file when the source is a file that does
    /// not exist yet. An existing vault is opened, not overwritten.
    pub fn init(url: &str, key: &KeySource, base: &Path) -> Result<InitOutcome> {
        let store = crate::store::open(url, base).map_err(Box::new)?;
        let rt = runtime()?;
        let existing = get_raw(rt, &store, url, "config")?;
        let mut key_created = None;
        let master = match keys::load(key, base) {
            Ok(k) => k,
            Err(KeyError::Missing { path }) if existing.is_none() => {
                let k = keys::create_file(&path)?;
                key_created = Some(path);
                k
            }
            Err(KeyError::Missing { path }) => {
                return Err(KeyError::MissingForExisting {
                    path,
                    url: url.to_string(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        if existing.is_some() {
            let vault = Vault::open_with(url, store, rt, &master)?;
            return Ok(InitOutcome {
                vault,
                key_created,
                existed: true,
            });
        }
        let salt: [u8; 32] = rand::random();
        let vault_id: [u8; 16] = rand::random();
        let sub = master.derive(&salt);
        let check = Sealer::new(&sub.meta).seal(KEY_CHECK, 0, b"config");
        let body = serde_json::to_string(&ConfigBody {
            format: FORMAT,
            vault_id: hex::encode(vault_id),
            salt: hex::encode(salt),
            key_check: hex::encode(check),
        })
        .unwrap_or_default();
        let text = config_text(&body);
        rt.block_on(
            store
                .inner
                .put(&store.path("config"), PutPayload::from(text)),
        )
        .map_err(|source| VaultError::Store {
            url: url.to_string(),
            op: "write",
            object: "config".into(),
            source: Box::new(source),
        })?;
        let vault = Vault::open_with(url, store, rt, &master)?;
        Ok(InitOutcome {
            vault,
            key_created,
            existed: false,
        })
    }

    /// Open an existing vault with the key from `key`.
    pub fn open(url: &str, key: &KeySource, base: &Path) -> Result<Vault> {
        Vault::open_with_options(url, key, base, &crate::store::Options::default())
    }

    /// [`Vault::open`] with the store opened per `opts` (request retries).
    pub fn open_with_options(
        url: &str,
        key: &KeySource,
        base: &Path,
        opts: &crate::store::Options,
    ) -> Result<Vault> {
        let master = keys::load(key, base)?;
        let store = crate::store::open_with(url, base, opts).map_err(Box::new)?;
        Vault::open_with(url, store, runtime()?, &master)
    }

    /// Open an existing vault with a master key in hand.
    pub fn open_with_key(url: &str, base: &Path, master: &MasterKey) -> Result<Vault> {
        let store = crate::store::open(url, base).map_err(Box::new)?;
        let rt = runtime()?;
        Vault::open_with(url, store, rt, master)
    }

    fn open_with(
        url: &str,
        store: Store,
        rt: &'static tokio::runtime::Runtime,
        master: &MasterKey,
    ) -> Result<Vault> {
        let raw = get_raw(rt, &store, url, "config")?.ok_or_else(|| VaultError::NotAVault {
            url: url.to_string(),
        })?;
        let damaged = |reason: &str| VaultError::Damaged {
            url: url.to_string(),
            object: "config".into(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(&raw).map_err(|_| damaged("it is not text"))?;
        // Exactly "BODY\nSUM\n", as written: any other byte, even trailing
        // whitespace, is damage (a flipped bit in the final newline made
        // it a vertical tab, which trimming accepted).
        let (body, sum) = text
            .strip_suffix('\n')
            .and_then(|t| t.rsplit_once('\n'))
            .ok_or_else(|| damaged("its checksum line is missing"))?;
        if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
            return Err(damaged("its checksum does not match"));
        }
        let cfg: ConfigBody =
            serde_json::from_str(body).map_err(|e| damaged(&format!("unreadable: {e}")))?;
        if !(FORMAT_MIN..=FORMAT).contains(&cfg.format) {
            return Err(damaged(&format!(
                "format {} is not supported (this build reads {FORMAT_MIN} to {FORMAT})",
                cfg.format
            )));
        }
        let salt = hex::decode(&cfg.salt).map_err(|_| damaged("bad salt"))?;
        let check = hex::decode(&cfg.key_check).map_err(|_| damaged("bad key check"))?;
        let sub = master.derive(&salt);
        let meta = Sealer::new(&sub.meta);
        match meta.open(&check, b"config") {
            Ok(p) if &*p == KEY_CHECK => {}
            _ => {
                return Err(VaultError::WrongKey {
                    url: url.to_string(),
                });
            }
        }
        Ok(Vault {
            url: url.to_string(),
            id: cfg.vault_id.clone(),
            format: std::sync::atomic::AtomicU32::new(cfg.format),
            config: cfg,
            data: Sealer::new(&sub.data),
            meta,
            keys: sub,
            store,
            rt,
            dedup: std::sync::Mutex::new(None),
            locks_seen: Default::default(),
            owner: std::sync::Mutex::new(None),
            index_cache: std::sync::OnceLock::new(),
        })
    }

    /// Act for the configuration whose state has lineage `owner`: the
    /// points this handle writes carry it; listings and `latest` show only
    /// its points and those without an owner ([`Vault::shows`]); the
    /// catalog's newest point, adoption, prune and destroy take only its
    /// own ([`Vault::owns`]). A handle without an owner (no state: a
    /// restore after the state was lost) sees every point and prunes only
    /// points without one.
    pub fn set_owner(&self, owner: Option<String>) {
        *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = owner;
    }

    /// The lineage this handle acts for, if any.
    pub fn owner(&self) -> Option<String> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a listing through this handle shows `m`: every point when
    /// the handle has no owner, else the owner's and those written before
    /// points had owners (shown, restorable, never built on, adopted,
    /// pruned or destroyed; they rank below any owned point of their
    /// machine, see `Manifest::order`).
    pub fn shows(&self, m: &Manifest) -> bool {
        let owner = self.owner();
        owner.is_none() || m.owner.is_none() || m.owner == owner
    }

    /// Whether this handle may drop, adopt or build on `m`: its owner is
    /// exactly the handle's (both none for points written before owners).
    pub fn owns(&self, m: &Manifest) -> bool {
        m.owner == self.owner()
    }

    /// The vault's format: 1 (points only) or 2 (points and a catalog).
    pub fn format(&self) -> u32 {
        self.format.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rewrite `config` as format 2 (after the catalog is built): from
    /// then on builds that do not keep the catalog refuse to open the vault,
    /// so none can write a point the catalog does not know.
    pub(crate) fn upgrade_format(&self) -> Result<()> {
        let mut cfg = self.config.clone();
        cfg.format = FORMAT;
        let body = serde_json::to_string(&cfg).unwrap_or_default();
        let text = config_text(&body);
        self.put("config", text.into_bytes())?;
        self.format
            .store(FORMAT, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Read `name` with its version; None when it does not exist.
    pub(crate) fn get_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(Bytes, crate::store::UpdateVersion)>> {
        match self.rt.block_on(self.store.get_versioned(name)) {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(VaultError::Open(Box::new(e))),
        }
    }

    /// Write `name` only if it is still at `expected` (None: only if it
    /// does not exist). Ok(false) when someone else wrote it first.
    pub(crate) fn put_conditional(
        &self,
        name: &str,
        bytes: Vec<u8>,
        expected: Option<&crate::store::UpdateVersion>,
    ) -> Result<bool> {
        Ok(self.put_versioned(name, bytes, expected)?.is_some())
    }

    /// [`Vault::put_conditional`], returning the version written (the
    /// base of a later compare-and-swap) instead of true.
    pub(crate) fn put_versioned(
        &self,
        name: &str,
        bytes: Vec<u8>,
        expected: Option<&crate::store::UpdateVersion>,
    ) -> Result<Option<crate::store::UpdateVersion>> {
        let r = match expected {
            None => self.rt.block_on(self.store.put_if_absent(name, bytes)),
            Some(v) => self.rt.block_on(self.store.put_if_match(name, bytes, v)),
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::AlreadyExists { .. } | StoreError::Changed { .. }) => Ok(None),
            Err(e) => Err(VaultError::Open(Box::new(e))),
        }
    }

    /// Delete uploads killed writers left unfinished (`file://` only; see
    /// [`Store::sweep_unfinished`]) last modified at or before `cutoff`
    /// (seconds since the epoch, by the store's clock): for prune, which
    /// passes a time a grace period ago, since writers may be running.
    /// Returns the files and bytes removed.
    pub(crate) fn sweep_unfinished(&self, cutoff: i64) -> Result<(usize, u64)> {
        self.store()
            .sweep_unfinished(cutoff)
            .map_err(|e| VaultError::Open(Box::new(e)))
    }

    /// Proves the vault takes writes now (a full disk, a read-only mount,
    /// a token without write access fail here): writes a small
    /// `probes/<random>` object and deletes it. Two requests.
    pub fn probe_write(&self) -> Result<()> {
        let name = format!("probes/{}", hex::encode(rand::random::<[u8; 8]>()));
        self.put(&name, b"standby write probe\n".to_vec())?;
        self.delete(&name)
    }

    /// Whether `name` exists (one HEAD request).
    pub fn exists(&self, name: &str) -> Result<bool> {
        match self.rt.block_on(self.store.head(name)) {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(VaultError::Open(Box::new(e))),
        }
    }

    /// Keyed BLAKE3 of `parts`, concatenated: ids reveal nothing without the key.
    pub fn id_of(&self, parts: &[&[u8]]) -> Id {
        let mut h = blake3::Hasher::new_keyed(&self.keys.id);
        for p in parts {
            h.update(p);
        }
        Id(*h.finalize().as_bytes())
    }

    /// The id key, for hot loops that hash blocks themselves.
    /// Lets full-index reads of this handle (restores) go through the
    /// index cache under `cache` (`.standby/cache`; see
    /// [`index::load_cached`]): one listing and the objects not cached yet,
    /// instead of every index object. Set once; later calls are ignored.
    pub fn use_index_cache(&self, cache: PathBuf) {
        let _ = self.index_cache.set(cache);
    }

    /// The whole index: through the index cache when
    /// [`Vault::use_index_cache`] set one, else every index object.
    pub fn full_index(&self) -> Result<Index> {
        match self.index_cache.get() {
            Some(cache) => index::load_cached(self, cache, None),
            None => index::load(self, false).map(|(i, _)| i),
        }
    }

    pub fn id_key(&self) -> &[u8; 32] {
        &self.keys.id
    }

    pub fn data_sealer(&self) -> &Sealer {
        &self.data
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn store_err(&self, op: &'static str, object: &str, source: object_store::Error) -> VaultError {
        if matches!(source, object_store::Error::NotFound { .. }) {
            return VaultError::Missing {
                url: self.url.clone(),
                object: object.to_string(),
            };
        }
        VaultError::Store {
            url: self.url.clone(),
            op,
            object: object.to_string(),
            source: Box::new(source),
        }
    }

    pub fn damaged(&self, object: &str, reason: impl std::fmt::Display) -> VaultError {
        VaultError::Damaged {
            url: self.url.clone(),
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Write an object (whole, in one request).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.rt
            .block_on(
                self.store
                    .inner
                    .put(&self.store.path(name), PutPayload::from(bytes)),
            )
            .map(|_| ())
            .map_err(|e| self.store_err("write", name, e))
    }

    /// Read a whole object.
    pub fn get(&self, name: &str) -> Result<Bytes> {
        self.rt
            .block_on(get_bytes(&self.store, name))
            .map_err(|e| self.store_err("read", name, e))
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        match self
            .rt
            .block_on(self.store.inner.delete(&self.store.path(name)))
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("delete", name, e)),
        }
    }

    /// Delete many objects, 4 requests in flight; what is not there is
    /// not an error. Transport failures were retried by the store; the
    /// first failure left is returned.
    pub fn delete_many(&self, names: &[String]) -> Result<()> {
        let failed: Vec<(&String, object_store::Error)> = self.rt.block_on(async {
            let s = futures::stream::iter(names.iter().map(|n| async move {
                match self.store.inner.delete(&self.store.path(n)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => Some((n, e)),
                }
            }))
            .buffer_unordered(4);
            s.filter_map(|r| async move { r }).collect().await
        });
        match failed.into_iter().next() {
            Some((name, e)) => Err(self.store_err("delete", name, e)),
            None => Ok(()),
        }
    }

    /// Objects under `dir` (`data`, `index`, `points`, `locks`) as
    /// (name relative to the prefix, size), sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.store.path(dir);
        let base = self.store.prefix.as_ref().to_string();
        let mut out: Vec<(String, u64)> = self.rt.block_on(async {
            let mut s = self.store.inner.list(Some(&prefix));
            let mut v = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.store_err("list", dir, e))?;
                let full = m.location.as_ref();
                let rel = full
                    .strip_prefix(&base)
                    .unwrap_or(full)
                    .trim_start_matches('/');
                v.push((rel.to_string(), m.size));
            }
            Ok::<_, VaultError>(v)
        })?;
        out.sort();
        Ok(out)
    }

    /// Objects under `dir` as (name relative to the prefix, last
    /// modified in seconds since the epoch), sorted by name.
    pub fn list_timed(&self, dir: &str) -> Result<Vec<(String, i64)>> {
        let prefix = self.store.path(dir);
        let base = self.store.prefix.as_ref().to_string();
        let mut out: Vec<(String, i64)> = self.rt.block_on(async {
            let mut s = self.store.inner.list(Some(&prefix));
            let mut v = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.store_err("list", dir, e))?;
                let full = m.location.as_ref();
                let rel = full
                    .strip_prefix(&base)
                    .unwrap_or(full)
                    .trim_start_matches('/');
                v.push((rel.to_string(), m.last_modified.timestamp()));
            }
            Ok::<_, VaultError>(v)
        })?;
        out.sort();
        Ok(out)
    }

    /// Read many objects, a few at a time; results in the order asked.
    pub fn get_many(&self, names: &[String]) -> Vec<Result<Bytes>> {
        self.rt.block_on(async {
            futures::stream::iter(names.iter().map(|n| async move {
                get_bytes(&self.store, n)
                    .await
                    .map_err(|e| self.store_err("read", n, e))
            }))
            .buffered(8)
            .collect()
            .await
        })
    }

    /// Seal and write a metadata object (`index/..`, `points/..`).
    pub fn put_meta(&self, name: &str, plain: &[u8]) -> Result<()> {
        let sealed = self.meta.seal(plain, 3, name.as_bytes());
        self.put(name, sealed)
    }

    /// Open sealed metadata bytes read from `name`.
    pub fn open_meta(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.meta
            .open(sealed, name.as_bytes())
            .map(seal::Plain::into_vec)
            .map_err(|e| self.damaged(name, e))
    }

    /// Read and open a metadata object.
    pub fn get_meta(&self, name: &str) -> Result<Vec<u8>> {
        let b = self.get(name)?;
        self.open_meta(name, &b)
    }
}

/// The `config` object's text: the JSON, then its BLAKE3 hash, a line each.
fn config_text(body: &str) -> String {
    format!("{body}\n{}\n", blake3::hash(body.as_bytes()).to_hex())
}

async fn get_bytes(store: &Store, name: &str) -> std::result::Result<Bytes, object_store::Error> {
    store.inner.get(&store.path(name)).await?.bytes().await
}

fn get_raw(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    url: &str,
    name: &str,
) -> Result<Option<Bytes>> {
    match rt.block_on(get_bytes(store, name)) {
        Ok(b) => Ok(Some(b)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(VaultError::Store {
            url: url.to_string(),
            op: "read",
            object: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// The object name of a pack.
pub fn pack_name(id: &Id) -> String {
    let h = id.hex();
    format!("data/{}/{h}", &h[..2])
}

/// The context a blob is sealed under: its id.
pub fn blob_context(id: &Id) -> Vec<u8> {
    let mut c = b"blob:".to_vec();
    c.extend_from_slice(&id.0);
    c
}
