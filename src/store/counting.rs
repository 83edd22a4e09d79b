//! Request counters: every store this process opens is wrapped in
//! [`Counting`], which counts requests by kind (get, put, list, delete,
//! head) and the bytes read and written, process-wide. Commands report
//! them (`--json`, `/metrics`), so what a command costs on a billed object
//! store is visible to users and to tests.
//!
//! A listing is one request per page the backend would fetch (S3 pages
//! hold 1,000 names, Azure Blob 5,000; a local directory is one listing).

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of request counted, in the order of [`Counts`]'s fields.
pub const OPS: [&str; 5] = ["get", "put", "list", "delete", "head"];

static REQUESTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static BYTES_IN: AtomicU64 = AtomicU64::new(0);
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);

const GET: usize = 0;
const PUT: usize = 1;
const LIST: usize = 2;
const DELETE: usize = 3;
const HEAD: usize = 4;

fn add(op: usize, n: u64) {
    REQUESTS[op].fetch_add(n, Ordering::Relaxed);
}

/// Requests made and bytes moved by this process's stores so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub get: u64,
    pub put: u64,
    pub list: u64,
    pub delete: u64,
    pub head: u64,
    /// Bytes read from stores (object bodies).
    pub bytes_in: u64,
    /// Bytes written to stores (object bodies).
    pub bytes_out: u64,
}

impl Counts {
    /// All requests, of every kind.
    pub fn requests(&self) -> u64 {
        self.get + self.put + self.list + self.delete + self.head
    }

    /// What was counted between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            get: self.get - earlier.get,
            put: self.put - earlier.put,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            head: self.head - earlier.head,
            bytes_in: self.bytes_in - earlier.bytes_in,
            bytes_out: self.bytes_out - earlier.bytes_out,
        }
    }

    /// (op, count) in [`OPS`] order.
    pub fn by_op(&self) -> [(&'static str, u64); 5] {
        [
            ("get", self.get),
            ("put", self.put),
            ("list", self.list),
            ("delete", self.delete),
            ("head", self.head),
        ]
    }
}

/// A snapshot of the process-wide counters.
pub fn counts() -> Counts {
    let r = |i: usize| REQUESTS[i].load(Ordering::Relaxed);
    Counts {
        get: r(GET),
        put: r(PUT),
        list: r(LIST),
        delete: r(DELETE),
        head: r(HEAD),
        bytes_in: BYTES_IN.load(Ordering::Relaxed),
        bytes_out: BYTES_OUT.load(Ordering::Relaxed),
    }
}

/// An object store that counts what passes through it.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    /// Names per listing page (0: one request per listing).
    page: u64,
}

impl Counting {
    pub fn wrap(inner: Arc<dyn ObjectStore>, page: u64) -> Arc<dyn ObjectStore> {
        Arc::new(Counting { inner, page })
    }

    fn count_listing(
        &self,
        s: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        add(LIST, 1);
        let page = self.page;
        let mut seen = 0u64;
        s.inspect(move |_| {
            seen += 1;
            // Entry page+1 is the first of a second page, and so on.
            if page > 0 && seen > 1 && (seen - 1).is_multiple_of(page) {
                add(LIST, 1);
            }
        })
        .boxed()
    }
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        add(PUT, 1);
        BYTES_OUT.fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // Parts are not counted one by one: the vault writes whole objects.
        add(PUT, 1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        add(if head { HEAD } else { GET }, 1);
        let res = self.inner.get_opts(location, options).await?;
        if !head {
            BYTES_IN.fetch_add(res.range.end - res.range.start, Ordering::Relaxed);
        }
        Ok(res)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        add(GET, ranges.len() as u64);
        let got = self.inner.get_ranges(location, ranges).await?;
        let n: usize = got.iter().map(|b| b.len()).sum();
        BYTES_IN.fetch_add(n as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counted = locations.inspect(|_| add(DELETE, 1)).boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count_listing(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.count_listing(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        add(LIST, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        add(PUT, 1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        add(PUT, 1);
        add(DELETE, 1);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[test]
    fn requests_and_bytes_are_counted_by_kind() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        // Pages of two names, so five objects list as three pages.
        let s = Counting::wrap(Arc::new(fs), 2);
        rt.block_on(async {
            let before = counts();
            for i in 0..5 {
                s.put(
                    &Path::from(format!("d/{i}")),
                    PutPayload::from(vec![7u8; 10]),
                )
                .await
                .unwrap();
            }
            let b = s
                .get(&Path::from("d/1"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(b.len(), 10);
            s.head(&Path::from("d/2")).await.unwrap();
            let n = s
                .list(Some(&Path::from("d")))
                .collect::<Vec<_>>()
                .await
                .len();
            assert_eq!(n, 5);
            s.delete(&Path::from("d/0")).await.unwrap();
            let d = counts().since(&before);
            // Other tests in this process count too: at least ours.
            assert!(d.put >= 5 && d.get >= 1 && d.head >= 1, "{d:?}");
            assert!(d.list >= 3 && d.delete >= 1, "{d:?}");
            assert!(d.bytes_out >= 50 && d.bytes_in >= 10, "{d:?}");
        });
    }
}
