//! Indexes: which pack holds each blob, at what offset. Each replication
//! writes one sealed `index/<id>` object for the packs it wrote; the vault's
//! index is the union of them.

use super::{Id, Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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
