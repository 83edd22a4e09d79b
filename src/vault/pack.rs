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
    buf: Vec<u8>,
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
            buf: Vec::with_capacity(TARGET + (1 << 20)),
            blobs: Vec::new(),
            uploads: VecDeque::new(),
            done: Vec::new(),
            stored: 0,
        }
    }

    /// Append one sealed blob; cuts and uploads a pack when it is full.
    pub fn add(&mut self, id: Id, sealed: &[u8], raw: u32) -> Result<()> {
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(sealed);
        self.blobs.push((id, offset, sealed.len() as u32, raw));
        if self.buf.len() >= TARGET {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        if self.blobs.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(TARGET + (1 << 20)));
        let id = self.vault.id_of(&[b"pack", &bytes]);
        let name = pack_name(&id);
        self.stored += bytes.len() as u64;
        while self.uploads.len() >= IN_FLIGHT {
            self.wait_one()?;
        }
        let store = self.vault.store().clone();
        let path = store.path(&name);
        let handle = self.vault.runtime().spawn(async move {
            store
                .inner
                .put(&path, PutPayload::from(bytes))
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
                source,
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
