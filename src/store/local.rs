//! `file://PATH`: a directory as an object store. Wraps object_store's
//! `LocalFileSystem` and adds what it lacks, compare-and-swap on the etag
//! (`PutMode::Update`), so remote-state code runs unchanged on a directory,
//! and writes big objects (vault packs) with direct I/O (see `direct_io`).
//!
//! Durability: `LocalFileSystem` does not fsync. Here every write, copy,
//! rename and delete returns only once its data and the directory entries
//! leading to it are on stable storage (the file's `fsync`, then each
//! directory from its parent up to the store's root). The vault writes packs
//! and the index before the manifest that names them, each awaited, so a
//! power cut can lose a point being written but never leaves a listed point
//! whose data is gone.

use crate::direct_io::{ALIGN, AlignedBuf, DirectFile};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

/// Objects at least this big (and at most `DIRECT_MAX`) are written and
/// read whole with direct I/O.
const DIRECT_MIN: usize = 1 << 20;
/// Bigger objects keep `LocalFileSystem`'s path, which streams reads
/// instead of holding the whole object in one buffer.
const DIRECT_MAX: usize = 64 << 20;
/// Aligned buffers kept for reuse: packs are uploaded two at a time, and
/// a restore holds about four (two fetched ahead, two being opened).
const POOL: usize = 4;

#[derive(Debug)]
pub struct LocalStore {
    fs: Arc<LocalFileSystem>,
    /// The store's directory: directory syncs stop here.
    root: Option<std::path::PathBuf>,
    /// Aligned buffers for direct I/O, reused so no object pays for fresh
    /// pages (page faults and zeroing cost as much as the I/O itself).
    buffers: Pool,
}

impl LocalStore {
    pub fn new(fs: LocalFileSystem) -> Self {
        let root = fs
            .path_to_filesystem(&Path::from("x"))
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()));
        Self {
            root,
            fs: Arc::new(fs),
            buffers: Pool::default(),
        }
    }

    /// Makes `location` durable: its data (unless `deleted`) and every
    /// directory from its parent up to the store's root.
    async fn sync(&self, location: &Path, deleted: bool) -> Result<()> {
        let path = self.fs.path_to_filesystem(location)?;
        let root = self.root.clone();
        blocking(move || sync_path(&path, root.as_deref(), deleted)).await
    }

    /// An unconditional write of a big object: staged under a temporary
    /// name (`NAME#N`, which listings skip, as `LocalFileSystem` does),
    /// written with direct I/O, then renamed into place, so readers see the
    /// whole object or none.
    async fn put_direct(&self, location: &Path, payload: PutPayload) -> Result<PutResult> {
        let dest = self.fs.path_to_filesystem(location)?;
        let buffers = self.buffers.clone();
        blocking(move || {
            let mut buf = buffers.take();
            let res = write_direct(&dest, &payload, &mut buf);
            buffers.give(buf);
            res
        })
        .await
    }

    /// Overwrite `location` only if its etag is still `expected`. Writers
    /// serialise on an exclusive lock of the object's current file; a writer
    /// that waited on a file since replaced (new inode) sees a new etag and
    /// is refused.
    async fn put_if_match(
        &self,
        location: &Path,
        payload: PutPayload,
        expected: Option<String>,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let precondition = |reason: String| object_store::Error::Precondition {
            path: location.to_string(),
            source: reason.into(),
        };
        let Some(expected) = expected else {
            return Err(precondition(
                "no etag given for a conditional update".into(),
            ));
        };
        let file_path = self.fs.path_to_filesystem(location)?;
        let Some(_lock) = blocking(move || lock_current(&file_path)).await? else {
            return Err(precondition("the object does not exist".into()));
        };
        let meta = self.fs.head(location).await?;
        if meta.e_tag.as_deref() != Some(expected.as_str()) {
            return Err(precondition(format!(
                "etag is {:?}, expected {expected:?}",
                meta.e_tag.unwrap_or_default()
            )));
        }
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..opts
        };
        let put = self.fs.put_opts(location, payload, opts).await?;
        self.sync(location, false).await?;
        Ok(put)
        // `_lock` drops here, after the new file has replaced the old one.
    }
}

/// A few aligned buffers shared by the store's direct reads and writes.
#[derive(Debug, Clone, Default)]
struct Pool(Arc<Mutex<Vec<AlignedBuf>>>);

impl Pool {
    fn take(&self) -> AlignedBuf {
        self.0
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    fn give(&self, buf: AlignedBuf) {
        if let Ok(mut b) = self.0.lock()
            && b.len() < POOL
        {
            b.push(buf);
        }
    }
}

/// An object read into a pooled buffer; the buffer goes back to the pool
/// when the last `Bytes` referring to it drops.
struct Pooled {
    buf: Option<AlignedBuf>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], AlignedBuf::data)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

/// Stage `payload` next to `dest` with direct writes from `buf`, then rename.
/// Run blocking file work off the async threads; its I/O error, or a
/// panic, becomes the store's error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let generic = |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "LocalStore",
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| generic(Box::new(e)))?
        .map_err(|e| generic(Box::new(e)))
}

fn write_direct(
    dest: &std::path::Path,
    payload: &PutPayload,
    buf: &mut AlignedBuf,
) -> std::io::Result<PutResult> {
    let (file, staged) = create_staged(dest)?;
    let written = (|| {
        let len = payload.content_length();
        let padded = len.div_ceil(ALIGN) * ALIGN;
        let out = buf.aligned(padded);
        let mut at = 0;
        for part in payload.iter() {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        out[at..].fill(0);
        // Written whole blocks at a time; the padding is cut off after.
        let df = DirectFile::new(file, &staged);
        df.write_all_at(out, 0)?;
        if padded != len {
            df.file().set_len(len as u64)?;
        }
        // Data before the name: a rename must never expose unsynced bytes.
        df.file().sync_all()?;
        let meta = df.file().metadata()?;
        std::fs::rename(&staged, dest)?;
        Ok(PutResult {
            e_tag: Some(etag(&meta)),
            version: None,
            extensions: Default::default(),
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// A whole object of `size` bytes read with direct I/O (a big object is
/// read once, by a restore or a verify: no use keeping it in the cache).
fn read_direct(
    file: File,
    path: &std::path::Path,
    size: u64,
    pool: Pool,
) -> std::io::Result<bytes::Bytes> {
    let size = usize::try_from(size).map_err(std::io::Error::other)?;
    let mut buf = pool.take();
    let df = DirectFile::for_reading(file, path);
    if let Err(e) = df.read_full_at(buf.aligned(size.div_ceil(ALIGN) * ALIGN), 0) {
        pool.give(buf);
        return Err(e);
    }
    buf.truncate(size);
    Ok(bytes::Bytes::from_owner(Pooled {
        buf: Some(buf),
        pool,
    }))
}

/// A new file `DEST#N` for the first free N, creating parent directories.
fn create_staged(dest: &std::path::Path) -> std::io::Result<(File, std::path::PathBuf)> {
    let mut n = 1u32;
    loop {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staged = std::path::PathBuf::from(name);
        match File::options().write(true).create_new(true).open(&staged) {
            Ok(f) => return Ok((f, staged)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = dest.parent().ok_or(e)?;
                std::fs::create_dir_all(parent)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// fsync `path` (unless `deleted`), then each directory from its parent up
/// to `root` (inclusive; only the parent when `root` is unknown or not an
/// ancestor).
fn sync_path(
    path: &std::path::Path,
    root: Option<&std::path::Path>,
    deleted: bool,
) -> std::io::Result<()> {
    if !deleted {
        File::open(path)?.sync_all()?;
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        File::open(d)?.sync_all()?;
        match root {
            Some(r) if d.starts_with(r) && d != r => dir = d.parent(),
            _ => break,
        }
    }
    Ok(())
}

/// The etag `LocalFileSystem` gives a file (inode, mtime in microseconds,
/// size), so objects written here and there compare alike.
fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{mtime:x}-{:x}\"", meta.ino(), meta.len())
}

/// Open and exclusively lock the file now at `path`; retry when it was
/// replaced while we waited. `None` when there is no such file.
fn lock_current(path: &std::path::Path) -> std::io::Result<Option<File>> {
    loop {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.lock()?;
        let locked = file.metadata()?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                return Ok(Some(file));
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalStore({})", self.fs)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match &opts.mode {
            PutMode::Update(v) => {
                let expected = v.e_tag.clone();
                self.put_if_match(location, payload, expected, opts).await
            }
            PutMode::Overwrite
                if (DIRECT_MIN..=DIRECT_MAX).contains(&payload.content_length())
                    && opts.attributes.is_empty() =>
            {
                let put = self.put_direct(location, payload).await?;
                self.sync(location, false).await?;
                Ok(put)
            }
            _ => {
                let put = self.fs.put_opts(location, payload, opts).await?;
                self.sync(location, false).await?;
                Ok(put)
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.fs.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let whole = options.range.is_none()
            && !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        let res = self.fs.get_opts(location, options).await?;
        match res.payload {
            GetResultPayload::File(file, path)
                if whole && (DIRECT_MIN as u64..=DIRECT_MAX as u64).contains(&res.meta.size) =>
            {
                let size = res.meta.size;
                let pool = self.buffers.clone();
                let bytes = blocking(move || read_direct(file, &path, size, pool)).await?;
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async { Ok(bytes) }).boxed(),
                    ),
                    ..res
                })
            }
            payload => Ok(GetResult { payload, ..res }),
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.fs.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // A delete is durable once its directory is synced.
        let fs = Arc::clone(&self.fs);
        let root = self.root.clone();
        self.fs
            .delete_stream(locations)
            .then(move |res| {
                let fs = Arc::clone(&fs);
                let root = root.clone();
                async move {
                    let location = res?;
                    let path = fs.path_to_filesystem(&location)?;
                    blocking(move || match sync_path(&path, root.as_deref(), true) {
                        // Its directory went too (nothing left to sync).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        r => r,
                    })
                    .await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.fs.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.fs.copy_opts(from, to, options).await?;
        self.sync(to, false).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.fs.rename_opts(from, to, options).await?;
        self.sync(to, false).await?;
        self.sync(from, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Big objects take the direct path; they must read back whole, leave
    /// no staging file in listings, and carry the etag `head` reports.
    #[test]
    fn big_objects_round_trip_through_direct_io() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for (name, len) in [("data/ab/big", (3 << 20) + 17), ("data/cd/exact", 2 << 20)] {
                let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let parts = vec![
                    bytes::Bytes::copy_from_slice(&body[..1000]),
                    bytes::Bytes::copy_from_slice(&body[1000..]),
                ];
                let path = Path::from(name);
                let put = store
                    .put(&path, PutPayload::from_iter(parts))
                    .await
                    .unwrap();
                let got = store.get(&path).await.unwrap().bytes().await.unwrap();
                assert_eq!(got.len(), len);
                assert!(got == body, "{name} reads back different bytes");
                let head = store.head(&path).await.unwrap();
                assert_eq!(put.e_tag, head.e_tag);
                assert_eq!(head.size, len as u64);
                let part = store.get_range(&path, 5..1005).await.unwrap();
                assert_eq!(&part[..], &body[5..1005]);
            }
            let listed: Vec<_> = store
                .list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect()
                .await;
            assert_eq!(listed.len(), 2, "{listed:?}");
        });
        let staged = walk(dir.path());
        assert!(staged.iter().all(|p| !p.contains('#')), "{staged:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }
}
