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
            serde_json::from_slice::<IndexFile>(&plain)
                .map_err(|e| vault.damaged(name, format!("unreadable index: {e}")))
        });
        match parsed {
            Ok(f) => index.add_file(name.clone(), f.packs),
            Err(e) if tolerant => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((index, bad))
}

/// Write an index object listing `packs`; returns its name.
pub fn write(vault: &Vault, packs: Vec<PackEntry>) -> Result<String> {
    let plain = serde_json::to_vec(&IndexFile { packs }).unwrap_or_default();
    let nonce: [u8; 16] = rand::random();
    let name = format!("index/{}", vault.id_of(&[b"index", &plain, &nonce]).hex());
    vault.put_meta(&name, &plain)?;
    Ok(name)
}
