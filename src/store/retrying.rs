//! Whole-operation retries for remote stores, over `object_store`'s own
//! per-request ones, for the transport faults it leaves to its caller:
//!
//! - a response cut short after its headers (an S3 answer object_store
//!   reads whole, a GET body, a listing page) fails without a retry;
//! - a conditional write whose answer was lost is retried by object_store
//!   (it reads a cut answer as "request not sent") and then refused by its
//!   own success: create-if-absent finds the object, update-if-match finds
//!   a new etag. Such a refusal, or a transient failure, is settled by
//!   reading the object: if it holds exactly our bytes, the write landed.
//!   Every conditional write standby makes (leases, locks, state, manifests)
//!   carries bytes unique to its writer, so equal bytes are our own.
//! - a listing broken midway resumes after the last name it gave (S3 and
//!   Azure Blob list in name order), so names are neither lost nor repeated.
//!
//! GET bodies are read whole inside the retry (the vault reads objects
//! whole, or ranges of them), so a caller's `bytes()` cannot fail halfway.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::client::HttpErrorKind;
use object_store::path::Path;
use object_store::{
    CopyOptions, Error, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attempts of one operation at this level (each of which object_store
/// may itself retry).
const ATTEMPTS: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// An object store that retries whole operations on transient transport
/// failures, for at most `limit` per operation.
#[derive(Debug)]
pub struct Retrying {
    inner: Arc<dyn ObjectStore>,
    limit: Duration,
}

impl Retrying {
    pub fn wrap(inner: Arc<dyn ObjectStore>, limit: Duration) -> Arc<dyn ObjectStore> {
        Arc::new(Retrying { inner, limit })
    }
}

impl std::fmt::Display for Retrying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Retrying({})", self.inner)
    }
}

/// Whether `e` is a transport failure worth trying again: a connection
/// reset or cut short, or a timeout. HTTP error statuses are not
/// (object_store already retried the retryable ones for its whole budget).
pub fn transient(e: &Error) -> bool {
    let Error::Generic { source, .. } = e else {
        return false;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            // Not Connect: object_store retries refused connections for
            // its whole budget already.
            return matches!(
                h.kind(),
                HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        cur = err.source();
    }
    false
}

/// Run `op` until it succeeds, fails for good, or `limit` (or
/// [`ATTEMPTS`]) runs out; waits back off from 200 ms to 5 s.
async fn again<T, F, Fut>(limit: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut wait = FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if transient(&e) && attempt < ATTEMPTS && start.elapsed() + wait < limit => {
                tracing::debug!("store: retrying after a transport failure: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_WAIT);
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// A refusal of a conditional write (S3 answers a lost If-Match race with
/// 404 or 409, read here as NotFound and AlreadyExists).
fn refused(e: &Error) -> bool {
    matches!(
        e,
        Error::AlreadyExists { .. } | Error::Precondition { .. } | Error::NotFound { .. }
    )
}

fn same_bytes(payload: &PutPayload, stored: &[u8]) -> bool {
    payload.content_length() == stored.len() && {
        let mut at = 0;
        payload.iter().all(|part| {
            let same = stored[at..at + part.len()] == part[..];
            at += part.len();
            same
        })
    }
}

impl Retrying {
    /// Read `location` whole: its body and metadata.
    async fn read_whole(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let options = &options;
        again(self.limit, || async move {
            let r = self.inner.get_opts(location, options.clone()).await?;
            let GetResult {
                payload,
                meta,
                range,
                attributes,
                extensions,
            } = r;
            let payload = match payload {
                GetResultPayload::Stream(s) => {
                    let whole =
                        object_store::collect_bytes(s, Some(range.end - range.start)).await?;
                    GetResultPayload::Stream(futures::stream::once(async { Ok(whole) }).boxed())
                }
                other => other,
            };
            Ok(GetResult {
                payload,
                meta,
                range,
                attributes,
                extensions,
            })
        })
        .await
    }

    /// The stored object's version when it holds exactly `payload`.
    async fn holds(&self, location: &Path, payload: &PutPayload) -> Option<PutResult> {
        let r = self
            .read_whole(location, GetOptions::default())
            .await
            .ok()?;
        let (e_tag, version) = (r.meta.e_tag.clone(), r.meta.version.clone());
        let bytes: Bytes = r.bytes().await.ok()?;
        same_bytes(payload, &bytes).then_some(PutResult {
            e_tag,
            version,
            extensions: Default::default(),
        })
    }

    /// A create-if-absent or update-if-match, settled by reading the object
    /// when its answer is a transport failure or a refusal.
    async fn put_conditional(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let start = Instant::now();
        let mut wait = FIRST_WAIT;
        let mut attempt = 1;
        loop {
            let e = match self
                .inner
                .put_opts(location, payload.clone(), opts.clone())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !(refused(&e) || transient(&e)) {
                return Err(e);
            }
            if let Some(mine) = self.holds(location, &payload).await {
                return Ok(mine);
            }
            if refused(&e) || attempt >= ATTEMPTS || start.elapsed() + wait >= self.limit {
                return Err(e);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
            attempt += 1;
        }
    }
}

#[async_trait]
impl ObjectStore for Retrying {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match opts.mode {
            PutMode::Overwrite => {
                again(self.limit, || {
                    self.inner.put_opts(location, payload.clone(), opts.clone())
                })
                .await
            }
            PutMode::Create | PutMode::Update(_) => {
                self.put_conditional(location, payload, opts).await
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            return again(self.limit, || {
                self.inner.get_opts(location, options.clone())
            })
            .await;
        }
        self.read_whole(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>> {
        again(self.limit, || self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (inner, limit) = (self.inner.clone(), self.limit);
        locations
            .map(move |location| {
                let inner = inner.clone();
                async move {
                    let location = location?;
                    let (inner, location) = (&inner, &location);
                    again(limit, || async move {
                        let l = location.clone();
                        let one = futures::stream::once(async move { Ok(l) }).boxed();
                        match inner.delete_stream(one).next().await {
                            Some(r) => r,
                            None => Ok(location.clone()),
                        }
                    })
                    .await
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.resumable(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.resumable(prefix, Some(offset.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        again(self.limit, || self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        again(self.limit, || {
            self.inner.copy_opts(from, to, options.clone())
        })
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

impl Retrying {
    /// A listing that, when it breaks on a transient failure, resumes
    /// after the last name it gave.
    fn resumable(
        &self,
        prefix: Option<&Path>,
        offset: Option<Path>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        struct State {
            inner: Arc<dyn ObjectStore>,
            prefix: Option<Path>,
            after: Option<Path>,
            stream: Option<BoxStream<'static, Result<ObjectMeta>>>,
            limit: Duration,
            attempt: u32,
            start: Instant,
            wait: Duration,
        }
        let state = State {
            inner: self.inner.clone(),
            prefix: prefix.cloned(),
            after: offset,
            stream: None,
            limit: self.limit,
            attempt: 1,
            start: Instant::now(),
            wait: FIRST_WAIT,
        };
        futures::stream::try_unfold(state, |mut s| async move {
            loop {
                let stream = s.stream.get_or_insert_with(|| match &s.after {
                    Some(after) => s.inner.list_with_offset(s.prefix.as_ref(), after),
                    None => s.inner.list(s.prefix.as_ref()),
                });
                match stream.next().await {
                    None => return Ok(None),
                    Some(Ok(meta)) => {
                        s.after = Some(meta.location.clone());
                        return Ok(Some((meta, s)));
                    }
                    Some(Err(e))
                        if transient(&e)
                            && s.attempt < ATTEMPTS
                            && s.start.elapsed() + s.wait < s.limit =>
                    {
                        tracing::debug!("store: listing again after a transport failure: {e}");
                        s.stream = None;
                        tokio::time::sleep(s.wait).await;
                        s.wait = (s.wait * 2).min(LONGEST_WAIT);
                        s.attempt += 1;
                    }
                    Some(Err(e)) => return Err(e),
                }
            }
        })
        .into_stream()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_in_parts_compares_with_stored_bytes() {
        let p = PutPayload::from_iter([Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]);
        assert!(same_bytes(&p, b"abcd"));
        assert!(!same_bytes(&p, b"abce"));
        assert!(!same_bytes(&p, b"abc"));
        assert!(!same_bytes(&PutPayload::from_static(b""), b"x"));
    }

    #[test]
    fn only_transport_failures_are_transient() {
        let not_found = Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(!transient(&not_found));
        let cut = Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                HttpErrorKind::Interrupted,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            )),
        };
        assert!(transient(&cut));
        let bad = Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                HttpErrorKind::Decode,
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )),
        };
        assert!(!transient(&bad));
    }
}
