//! Reading packs for restore: the vault's door to pack bytes. Callers say
//! which byte ranges of which packs they need (or that a whole pack is
//! cheaper to fetch); the vault fetches a few packs ahead on its own
//! runtime and hands each pack's pieces over in order. Nothing outside the
//! vault touches its store or runtime.

use super::{Id, Result, Vault, VaultError, pack_name};
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::ops::Range;

/// What to read of one pack: `ranges` (byte offsets in the pack object),
/// fetched as one whole-object read when `whole` (then a range past the
/// object's end comes back empty, for the caller's checks to catch).
#[derive(Debug, Clone)]
pub struct PackRead {
    pub pack: Id,
    pub ranges: Vec<Range<u64>>,
    pub whole: bool,
}

impl Vault {
    /// Fetch `reads` in order, at most `ahead` (at least 1) in flight, and
    /// hand each result — the bytes of its ranges, in order — to
    /// `deliver(i, result)` on a blocking thread (it may block, e.g. on a
    /// bounded channel). Stops early when `deliver` returns false; returns
    /// whether every read was delivered. Errors name the pack and `point`,
    /// the recovery point that needs it.
    pub fn read_packs<F>(&self, reads: &[PackRead], ahead: usize, point: &Id, deliver: F) -> bool
    where
        F: Fn(usize, Result<Vec<Bytes>>) -> bool + Clone + Send + 'static,
    {
        let store = self.store().clone();
        self.runtime().block_on(async {
            let mut stream = futures::stream::iter(reads.iter().enumerate().map(|(i, read)| {
                let store = store.clone();
                async move {
                    let name = pack_name(&read.pack);
                    let r = fetch(store, read).await.map_err(|e| match e {
                        object_store::Error::NotFound { .. } => VaultError::Missing {
                            url: self.url.clone(),
                            object: format!("{name} (needed by point {})", point.short()),
                        },
                        source => VaultError::Store {
                            url: self.url.clone(),
                            op: "read",
                            object: name,
                            source: Box::new(source),
                        },
                    });
                    (i, r)
                }
            }))
            .buffered(ahead.max(1));
            while let Some((i, item)) = stream.next().await {
                let deliver = deliver.clone();
                // Hand over on a blocking thread: `deliver` may block.
                let sent = tokio::task::spawn_blocking(move || deliver(i, item)).await;
                if !matches!(sent, Ok(true)) {
                    return false;
                }
            }
            true
        })
    }
}

async fn fetch(
    store: crate::store::Store,
    read: &PackRead,
) -> std::result::Result<Vec<Bytes>, object_store::Error> {
    let path = store.path(&pack_name(&read.pack));
    if read.whole {
        let all = store.inner.get(&path).await?.bytes().await?;
        return Ok(read
            .ranges
            .iter()
            .map(|r| {
                let (a, b) = (r.start as usize, r.end as usize);
                if b <= all.len() {
                    all.slice(a..b)
                } else {
                    Bytes::new()
                }
            })
            .collect());
    }
    store.inner.get_ranges(&path, &read.ranges).await
}
