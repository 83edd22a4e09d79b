//! `file://PATH`: a directory as an object store. Wraps object_store's
//! `LocalFileSystem` and adds what it lacks, compare-and-swap on the etag
//! (`PutMode::Update`), so remote-state code runs unchanged on a directory.

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result,
};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

#[derive(Debug)]
pub struct LocalStore {
    fs: Arc<LocalFileSystem>,
}

impl LocalStore {
    pub fn new(fs: LocalFileSystem) -> Self {
        Self { fs: Arc::new(fs) }
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
        let lock = tokio::task::spawn_blocking(move || lock_current(&file_path))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalStore",
                source: Box::new(e),
            })?;
        let _lock = match lock {
            Ok(Some(file)) => file,
            Ok(None) => return Err(precondition("the object does not exist".into())),
            Err(e) => {
                return Err(object_store::Error::Generic {
                    store: "LocalStore",
                    source: Box::new(e),
                });
            }
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
        self.fs.put_opts(location, payload, opts).await
        // `_lock` drops here, after the new file has replaced the old one.
    }
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
            _ => self.fs.put_opts(location, payload, opts).await,
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
        self.fs.get_opts(location, options).await
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
        self.fs.delete_stream(locations)
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
        self.fs.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.fs.rename_opts(from, to, options).await
    }
}
