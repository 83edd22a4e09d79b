//! Indexes: which pack holds each blob, at what offset. Each replication
//! writes one sealed `index/<id>` object for the packs it wrote; the vault's
//! index is the union of them. Readers also see the entries of packs prune
//! has marked as garbage (`gc/<id>`, see [`super::gc`]); writers
//! deduplicate only against `index/` objects.

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
    /// Index object name -> the packs it lists. Names under `gc/` are
    /// garbage marks (see [`Index::is_live`]).
    pub files: BTreeMap<String, Vec<PackEntry>>,
    /// The prune generation read when the index was loaded ("" when not
    /// read, or before the first prune).
    pub generation: String,
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

    /// Whether the object `name` is an index object proper (not a mark).
    pub fn is_live(name: &str) -> bool {
        name.starts_with("index/")
    }

    /// Blobs listed by index objects proper, not only by garbage marks:
    /// what a writer may reference without storing it again.
    pub fn live_blobs(&self) -> std::collections::HashSet<Id> {
        self.files
            .iter()
            .filter(|(n, _)| Index::is_live(n))
            .flat_map(|(_, ps)| ps.iter().flat_map(|p| p.blobs.iter().map(|b| b.0)))
            .collect()
    }

    /// Add the garbage marks' entries (readers may still need them: a
    /// writer may have referenced a blob before its pack was marked).
    fn add_marks(&mut self, vault: &Vault) -> Result<()> {
        for m in super::gc::list(vault)? {
            self.add_file(m.name, m.packs);
        }
        Ok(())
    }
}

/// Load every index object. With `tolerant`, damaged or missing index
/// objects are returned as errors beside the index instead of failing.
///
/// An object listed and then gone was replaced by prune or compaction
/// (both write the replacement before deleting): the listing is taken
/// again, a few times, rather than reporting it missing.
pub fn load(vault: &Vault, tolerant: bool) -> Result<(Index, Vec<VaultError>)> {
    let mut tries = 0;
    loop {
        match load_once(vault, tolerant) {
            Err(VaultError::Missing { .. }) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}

fn load_once(vault: &Vault, tolerant: bool) -> Result<(Index, Vec<VaultError>)> {
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
            Err(e @ VaultError::Missing { .. }) => return Err(e),
            Err(e) if tolerant => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    index.add_marks(vault)?;
    Ok((index, bad))
}

/// The largest pack offset an index may name (1 TiB; packs are tens of MiB).
const MAX_PACK: u64 = 1 << 40;

/// Parse an opened index object and check every entry: a blob must fit in
/// a pack of sane size and be at least a sealed object's overhead long, so
/// a hostile index cannot make a restore read or allocate without bound.
pub fn decode(plain: &[u8]) -> std::result::Result<Vec<PackEntry>, super::Invalid> {
    let f: IndexFile = serde_json::from_slice(plain)
        .map_err(|e| super::Invalid(format!("unreadable index: {e}")))?;
    for p in &f.packs {
        for &(blob, offset, len, _) in &p.blobs {
            let end = offset.checked_add(u64::from(len));
            if end.is_none_or(|e| e > MAX_PACK) || (len as usize) < super::seal::OVERHEAD {
                return Err(super::Invalid(format!(
                    "pack {} lists blob {} at {offset}+{len}, which no pack can hold",
                    p.id.short(),
                    blob.short()
                )));
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

/// The object prune rewrites (a random token) before it deletes any index
/// object or pack: a local index cache made under another token may name
/// data that is gone, and is dropped.
pub const GENERATION: &str = "generation";

/// The vault's current prune generation ("" before the first prune).
pub fn generation(vault: &Vault) -> Result<String> {
    match vault.get(GENERATION) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(VaultError::Missing { .. }) => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Mark every local index cache stale: called by prune before it deletes.
pub fn bump_generation(vault: &Vault) -> Result<()> {
    let token = hex::encode(rand::random::<[u8; 16]>());
    vault.put(GENERATION, token.into_bytes())
}

const CACHE_GENERATION: &str = "GENERATION";

/// The index objects cached under `dir`, each authenticated on opening;
/// unreadable ones are left out.
fn cached(vault: &Vault, dir: &Path) -> Index {
    let mut index = Index::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return index;
    };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if Id::parse(&file).is_none() {
            continue;
        }
        let name = format!("index/{file}");
        let packs = std::fs::read(e.path())
            .ok()
            .and_then(|b| vault.open_meta(&name, &b).ok())
            .and_then(|plain| decode(&plain).ok());
        if let Some(packs) = packs {
            index.add_file(name, packs);
        }
    }
    index
}

/// The index to deduplicate against, or the whole index.
///
/// With `limit` (replication): the local cache under `cache`, trusted
/// without listing anything as long as no prune ran since it was made
/// (one read of the [`GENERATION`] object: prune rewrites it before it
/// deletes anything; compaction deletes only objects whose entries it has
/// merged, so their blobs stay where the cache says). After a prune, the
/// cache is dropped, `index/` listed and at most `limit` objects read,
/// newest first. Blobs the result does not know of are stored again: a
/// cost in space until prune, never in correctness.
///
/// Without `limit`: one listing of `index/` and every object not cached
/// (re-listing while a compaction replaces objects under it); the cache is
/// pruned to the listing.
pub fn load_cached(vault: &Vault, cache: &Path, limit: Option<usize>) -> Result<Index> {
    let dir = cache_path(cache, vault);
    let _ = std::fs::create_dir_all(&dir);
    let current = generation(vault)?;
    let recorded = std::fs::read_to_string(dir.join(CACHE_GENERATION)).ok();
    if limit.is_some() && recorded.as_deref() == Some(current.as_str()) {
        // Kept in memory between points of one process (a round, the
        // watch service): the cache directory is read once.
        let mut memo = vault.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, idx)) = memo.as_ref()
            && *g == current
        {
            return Ok(idx.clone());
        }
        let mut idx = cached(vault, &dir);
        idx.generation = current.clone();
        *memo = Some((current, idx.clone()));
        return Ok(idx);
    }
    if recorded.as_deref() != Some(current.as_str()) {
        // Made before a prune: nothing in it is trusted any more.
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
    }
    for _ in 0..5 {
        let listed = vault.list_timed("index")?;
        let names: BTreeSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        // Forget cached objects the vault no longer has.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = format!("index/{}", e.file_name().to_string_lossy());
                if Id::parse(&e.file_name().to_string_lossy()).is_some()
                    && !names.contains(n.as_str())
                {
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
            let _ = std::fs::write(dir.join(CACHE_GENERATION), &current);
            if limit.is_none() {
                index.add_marks(vault)?;
            }
            index.generation = current;
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
    if let Some((_, idx)) = vault
        .dedup
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        && let Ok(packs) = decode(&plain)
    {
        idx.add_file(name.clone(), packs);
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

/// Merge every index object into one. Writers take no lock and go on;
/// the exclusive lock keeps a prune from marking packs this merge would
/// list again. The merged object is written, and durable, before any old
/// one is deleted; a reader that sees both gets the same answer, and a
/// kill at any moment loses no entry (at worst both stay until the next
/// compaction). Garbage marks are not merged.
pub fn compact(vault: &Vault, cache: &Path) -> Result<Compacted> {
    let _lock = super::lock::Lock::acquire(vault, true, std::time::Duration::from_secs(600))?;
    let mut index = load_cached(vault, cache, None)?;
    let marks: Vec<String> = index
        .files
        .keys()
        .filter(|n| !Index::is_live(n))
        .cloned()
        .collect();
    for m in marks {
        index.files.remove(&m);
    }
    if index.files.len() < 2 {
        return Ok(Compacted {
            merged: 0,
            into: None,
            packs: index.packs().len(),
            blobs: index.packs().values().map(|p| p.blobs.len()).sum(),
        });
    }
    let packs: Vec<PackEntry> = index.packs().into_values().cloned().collect();
    let n_packs = packs.len();
    let name = write_cached(vault, cache, packs)?;
    let dir = cache_path(cache, vault);
    let old: Vec<String> = index.files.keys().cloned().collect();
    vault.delete_many(&old)?;
    for name in &old {
        let _ = std::fs::remove_file(cache_file(&dir, name));
    }
    Ok(Compacted {
        merged: index.files.len(),
        into: Some(name),
        packs: n_packs,
        blobs: index.packs().values().map(|p| p.blobs.len()).sum(),
    })
}
