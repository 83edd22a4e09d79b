//! Packs: sealed blobs appended into objects of ~16 MiB, uploaded in the
//! background (at most two in flight) so reading and sealing keep going.

use super::index::PackEntry;
use super::{Id, Result, Vault, VaultError, pack_name};
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::VecDeque;

/// Packs are cut once they reach this size.
pub const TARGET: usize = 16 << 20;
const IN_FLIGHT: usize = 2;

/// Collects sealed blobs into packs and uploads them.
pub struct PackWriter<'v> {
    vault: &'v Vault,
    /// The sealed blobs of the open pack, uploaded as parts (no copying).
    parts: Vec<bytes::Bytes>,
    len: usize,
    blobs: Vec<(Id, u64, u32, u32)>,
    uploads: VecDeque<(
        String,
        tokio::task::JoinHandle<std::result::Result<(), object_store::Error>>,
    )>,
    done: Vec<PackEntry>,
    /// Sealed bytes handed to the store so far.
    pub stored: u64,
}

impl<'v> PackWriter<'v> {
    pub fn new(vault: &'v Vault) -> PackWriter<'v> {
        PackWriter {
            vault,
            parts: Vec::new(),
            len: 0,
            blobs: Vec::new(),
            uploads: VecDeque::new(),
            done: Vec::new(),
            stored: 0,
        }
    }

    /// Append one sealed blob; cuts and uploads a pack when it is full.
    pub fn add(&mut self, id: Id, sealed: Vec<u8>, raw: u32) -> Result<()> {
        let offset = self.len as u64;
        self.len += sealed.len();
        self.blobs.push((id, offset, sealed.len() as u32, raw));
        self.parts.push(bytes::Bytes::from(sealed));
        if self.len >= TARGET {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        if self.blobs.is_empty() {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.parts);
        // A pack is named by its table of contents (blob ids and places):
        // unique, keyed, and cheap; its bytes are authenticated blob by blob.
        let toc: Vec<u8> = self
            .blobs
            .iter()
            .flat_map(|(id, off, len, raw)| {
                let mut e = id.0.to_vec();
                e.extend_from_slice(&off.to_le_bytes());
                e.extend_from_slice(&len.to_le_bytes());
                e.extend_from_slice(&raw.to_le_bytes());
                e
            })
            .collect();
        let id = self.vault.id_of(&[b"pack", &toc]);
        let name = pack_name(&id);
        self.stored += self.len as u64;
        self.len = 0;
        while self.uploads.len() >= IN_FLIGHT {
            self.wait_one()?;
        }
        let store = self.vault.store().clone();
        let path = store.path(&name);
        let handle = self.vault.runtime().spawn(async move {
            store
                .inner
                .put(&path, PutPayload::from_iter(parts))
                .await
                .map(|_| ())
        });
        self.uploads.push_back((name, handle));
        self.done.push(PackEntry {
            id,
            blobs: std::mem::take(&mut self.blobs),
        });
        Ok(())
    }

    fn wait_one(&mut self) -> Result<()> {
        if let Some((name, h)) = self.uploads.pop_front() {
            let res = self.vault.runtime().block_on(h);
            let err = |source| VaultError::Store {
                url: self.vault.url.clone(),
                op: "write",
                object: name.clone(),
                source: Box::new(source),
            };
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(err(e)),
                Err(j) => {
                    return Err(err(object_store::Error::Generic {
                        store: "upload",
                        source: Box::new(j),
                    }));
                }
            }
        }
        Ok(())
    }

    /// Cut the last pack and wait until every upload is stored.
    pub fn finish(mut self) -> Result<(Vec<PackEntry>, u64)> {
        self.cut()?;
        while !self.uploads.is_empty() {
            self.wait_one()?;
        }
        Ok((self.done, self.stored))
    }
}
