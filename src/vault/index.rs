//! Indexes: which pack holds each blob, at what offset. Each replication
//! writes one sealed `index/<id>` object for the packs it wrote; the vault's
//! index is the union of them.

use super::{Id, Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Where a sealed blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub offset: u64,
    /// Sealed length in the pack.
    pub len: u32,
    /// Plain length.
    pub raw: u32,
}

/// One pack and its blobs, as an index object lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: Id,
    /// (blob id, offset, sealed length, plain length)
    pub blobs: Vec<(Id, u64, u32, u32)>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    packs: Vec<PackEntry>,
}

/// The union of all index objects.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub blobs: HashMap<Id, Location>,
    /// Index object name -> the packs it lists.
    pub files: BTreeMap<String, Vec<PackEntry>>,
}

impl Index {
    fn add_file(&mut self, name: String, packs: Vec<PackEntry>) {
        for p in &packs {
            for &(blob, offset, len, raw) in &p.blobs {
                self.blobs.insert(
                    blob,
                    Location {
                        pack: p.id,
                        offset,
                        len,
                        raw,
                    },
                );
            }
        }
        self.files.insert(name, packs);
    }

    /// Every pack some index lists.
    pub fn packs(&self) -> BTreeMap<Id, &PackEntry> {
        self.files.values().flatten().map(|p| (p.id, p)).collect()
    }
}

/// Load every index object. With `tolerant`, damaged or missing index
/// objects are returned as errors beside the index instead of failing.
pub fn load(vault: &Vault, tolerant: bool) -> Result<(Index, Vec<VaultError>)> {
    let names: Vec<String> = vault.list("index")?.into_iter().map(|(n, _)| n).collect();
    let mut index = Index::default();
    let mut bad = Vec::new();
    for (name, got) in names.iter().zip(vault.get_many(&names)) {
        let parsed = got.and_then(|b| {
            let plain = vault.open_meta(name, &b)?;
            decode(&plain).map_err(|e| vault.damaged(name, e))
        });
        match parsed {
            Ok(packs) => index.add_file(name.clone(), packs),
            Err(e) if tolerant => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((index, bad))
}

/// The largest pack offset an index may name (1 TiB; packs are tens of MiB).
const MAX_PACK: u64 = 1 << 40;

/// Parse an opened index object and check every entry: a blob must fit in
/// a pack of sane size and be at least a sealed object's overhead long, so
/// a hostile index cannot make a restore read or allocate without bound.
pub fn decode(plain: &[u8]) -> std::result::Result<Vec<PackEntry>, String> {
    let f: IndexFile =
        serde_json::from_slice(plain).map_err(|e| format!("unreadable index: {e}"))?;
    for p in &f.packs {
        for &(blob, offset, len, _) in &p.blobs {
            let end = offset.checked_add(u64::from(len));
            if end.is_none_or(|e| e > MAX_PACK) || (len as usize) < super::seal::OVERHEAD {
                return Err(format!(
                    "pack {} lists blob {} at {offset}+{len}, which no pack can hold",
                    p.id.short(),
                    blob.short()
                ));
            }
        }
    }
    Ok(f.packs)
}

/// Write an index object listing `packs`; returns its name.
pub fn write(vault: &Vault, packs: Vec<PackEntry>) -> Result<String> {
    let plain = serde_json::to_vec(&IndexFile { packs }).unwrap_or_default();
    let nonce: [u8; 16] = rand::random();
    let name = format!("index/{}", vault.id_of(&[b"index", &plain, &nonce]).hex());
    vault.put_meta(&name, &plain)?;
    Ok(name)
}

/// Index objects a replication reads beyond its local cache: the newest
/// ones it has not seen. Others only cost some deduplication until a
/// compaction (or a later run) brings them in.
pub const FETCH_FOR_DEDUP: usize = 16;

/// `<cache>/<vault id>/index`: index objects as stored (sealed), named as
/// in the vault. Each is authenticated when opened, like one just read.
fn cache_path(cache: &Path, vault: &Vault) -> PathBuf {
    cache.join(&vault.id).join("index")
}

fn cache_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name.trim_start_matches("index/"))
}

/// The index, from one listing of `index/` plus the objects not in the
/// local cache under `cache` (which is pruned to the listing: an index
/// object removed from the vault is never trusted again). With `limit`,
/// at most that many uncached objects are read, newest first: enough to
/// deduplicate against, not a complete index. Without it, the whole index,
/// re-listing while a compaction replaces objects under it.
pub fn load_cached(vault: &Vault, cache: &Path, limit: Option<usize>) -> Result<Index> {
    let dir = cache_path(cache, vault);
    let _ = std::fs::create_dir_all(&dir);
    for _ in 0..5 {
        let listed = vault.list_timed("index")?;
        let names: BTreeSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        // Forget cached objects the vault no longer has.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = format!("index/{}", e.file_name().to_string_lossy());
                if !names.contains(n.as_str()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut index = Index::default();
        let mut missing = Vec::new();
        for (name, _) in &listed {
            let cached = std::fs::read(cache_file(&dir, name))
                .ok()
                .and_then(|b| vault.open_meta(name, &b).ok())
                .and_then(|plain| decode(&plain).ok());
            match cached {
                Some(packs) => index.add_file(name.clone(), packs),
                None => missing.push(name.clone()),
            }
        }
        // Newest first, so a bounded read gets the likeliest duplicates.
        let when: HashMap<&str, i64> = listed.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        missing.sort_by_key(|n| std::cmp::Reverse(when.get(n.as_str()).copied()));
        if let Some(l) = limit {
            missing.truncate(l);
        }
        let mut gone = false;
        for (name, got) in missing.iter().zip(vault.get_many(&missing)) {
            let bytes = match got {
                Ok(b) => b,
                // Replaced by a compaction since the listing.
                Err(VaultError::Missing { .. }) => {
                    gone = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let plain = vault.open_meta(name, &bytes)?;
            let packs = decode(&plain).map_err(|e| vault.damaged(name, e))?;
            // A missing cache file only costs a read next time.
            let _ = write_cache(&dir, name, &bytes);
            index.add_file(name.clone(), packs);
        }
        if !gone || limit.is_some() {
            return Ok(index);
        }
    }
    Err(vault.damaged("index", "its objects kept changing while being read"))
}

fn write_cache(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = cache_file(dir, name);
    let tmp = path.with_extension(format!("{}.tmp", hex::encode(rand::random::<[u8; 4]>())));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)
}

/// Write an index object listing `packs` and keep it in the local cache
/// under `cache` (the writer knows it already); returns its name.
pub fn write_cached(vault: &Vault, cache: &Path, packs: Vec<PackEntry>) -> Result<String> {
    let plain = serde_json::to_vec(&IndexFile { packs }).unwrap_or_default();
    let nonce: [u8; 16] = rand::random();
    let name = format!("index/{}", vault.id_of(&[b"index", &plain, &nonce]).hex());
    let sealed = vault.meta.seal(&plain, 3, name.as_bytes());
    vault.put(&name, sealed.clone())?;
    let dir = cache_path(cache, vault);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = write_cache(&dir, &name, &sealed);
    }
    Ok(name)
}

/// What [`compact`] did.
#[derive(Debug, Default, Serialize)]
pub struct Compacted {
    /// Index objects merged (and then deleted).
    pub merged: usize,
    /// The merged object, when one was written.
    pub into: Option<String>,
    pub packs: usize,
    pub blobs: usize,
}

/// Merge every index object into one. Under a shared vault lock, so
/// replications go on (prune, which rewrites the index, waits). The
/// merged object is written, and durable, before any old one is deleted;
/// a reader that sees both gets the same answer, and a kill at any moment
/// loses no entry (at worst both stay until the next compaction).
pub fn compact(vault: &Vault, cache: &Path) -> Result<Compacted> {
    let _lock = super::lock::Lock::acquire(vault, false, std::time::Duration::from_secs(600))?;
    let index = load_cached(vault, cache, None)?;
    if index.files.len() < 2 {
        return Ok(Compacted {
            merged: 0,
            into: None,
            packs: index.packs().len(),
            blobs: index.blobs.len(),
        });
    }
    let packs: Vec<PackEntry> = index.packs().into_values().cloned().collect();
    let n_packs = packs.len();
    let name = write_cached(vault, cache, packs)?;
    for old in index.files.keys() {
        vault.delete(old)?;
    }
    Ok(Compacted {
        merged: index.files.len(),
        into: Some(name),
        packs: n_packs,
        blobs: index.blobs.len(),
    })
}
