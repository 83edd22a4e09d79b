//! The same round-trip suite over every backend: file://, az:// (Azurite)
//! and s3:// (moto). Each test works under its own unique prefix.

mod common;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use standby::store::{self, Store, StoreError};
use std::collections::BTreeSet;

/// Open a store for `backend` under a fresh prefix named after `test`.
fn open(backend: &str, test: &str, tmp: &tempfile::TempDir) -> Store {
    let prefix = common::unique(test);
    let url = match backend {
        "file" => format!("file://{}/{prefix}", tmp.path().display()),
        "az" => format!("{}/{prefix}", common::service_url("STANDBY_TEST_AZ_URL")),
        "s3" => format!("{}/{prefix}", common::service_url("STANDBY_TEST_S3_URL")),
        other => panic!("no backend {other}"),
    };
    store::open(&url, tmp.path()).expect("open store")
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn names(store: &Store, under: &str) -> BTreeSet<String> {
    let prefix = store.path(under);
    let listed: Vec<_> = store
        .inner
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list");
    let base = store.prefix.as_ref().len();
    listed
        .into_iter()
        .map(|m| {
            let full = m.location.as_ref().to_string();
            full[base..].trim_start_matches('/').to_string()
        })
        .collect()
}

async fn round_trip(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "roundtrip", &tmp);
    s.inner
        .put(&s.path("config"), PutPayload::from_static(b"hello"))
        .await
        .unwrap();
    s.inner
        .put(&s.path("data/ab/abcd"), PutPayload::from(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let got = s
        .inner
        .get(&s.path("config"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello");
    let meta = s.inner.head(&s.path("data/ab/abcd")).await.unwrap();
    assert_eq!(meta.size, 3);

    let all = names(&s, "").await;
    assert_eq!(
        all,
        BTreeSet::from(["config".to_string(), "data/ab/abcd".to_string()])
    );

    // Overwrite replaces the content.
    s.inner
        .put(&s.path("config"), PutPayload::from_static(b"bye"))
        .await
        .unwrap();
    let (bytes, _) = s.get_versioned("config").await.unwrap();
    assert_eq!(&bytes[..], b"bye");

    s.delete("config").await.unwrap();
    s.delete("config").await.unwrap(); // deleting what is gone is fine
    assert!(matches!(
        s.get_versioned("config").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        names(&s, "").await,
        BTreeSet::from(["data/ab/abcd".to_string()])
    );
}

async fn large_object(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "large", &tmp);
    let data = pattern(20 << 20, 7);
    s.inner
        .put(&s.path("packs/big"), PutPayload::from(data.clone()))
        .await
        .unwrap();
    let got = s
        .inner
        .get(&s.path("packs/big"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got[..] == data[..], "20 MiB object came back different");

    // The same through a multipart upload (5 MiB parts, S3's minimum).
    let upload = s.inner.put_multipart(&s.path("packs/multi")).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
    for chunk in data.chunks(3 << 20) {
        writer.write(chunk);
    }
    writer.finish().await.unwrap();
    let got = s
        .inner
        .get(&s.path("packs/multi"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == data[..], "multipart object came back different");
}

async fn range_reads(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "ranges", &tmp);
    let data = pattern(1 << 20, 3);
    let p = s.path("pack");
    s.inner
        .put(&p, PutPayload::from(data.clone()))
        .await
        .unwrap();
    let one = s.inner.get_range(&p, 4096..8192).await.unwrap();
    assert_eq!(&one[..], &data[4096..8192]);
    let last = s
        .inner
        .get_range(&p, (1 << 20) - 10..1 << 20)
        .await
        .unwrap();
    assert_eq!(&last[..], &data[(1 << 20) - 10..]);
    let many = s
        .inner
        .get_ranges(&p, &[0..1, 100_000..100_512, 700_000..900_000])
        .await
        .unwrap();
    assert_eq!(&many[0][..], &data[0..1]);
    assert_eq!(&many[1][..], &data[100_000..100_512]);
    assert_eq!(&many[2][..], &data[700_000..900_000]);
}

async fn create_refused_when_present(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "create", &tmp);
    let v = s
        .put_if_absent("lock", Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert!(v.e_tag.is_some(), "a created object has an etag");
    let again = s.put_if_absent("lock", Bytes::from_static(b"second")).await;
    match again {
        Err(StoreError::AlreadyExists { name, url }) => {
            assert_eq!(name, "lock");
            assert_eq!(url, s.url);
        }
        other => panic!("second create was not refused: {other:?}"),
    }
    let (bytes, _) = s.get_versioned("lock").await.unwrap();
    assert_eq!(
        &bytes[..],
        b"first",
        "the refused create changed the object"
    );
}

async fn cas_refused_on_stale_etag(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "cas", &tmp);
    let v1 = s
        .put_if_absent("state.json", Bytes::from_static(b"serial 1"))
        .await
        .unwrap();
    let (bytes, read) = s.get_versioned("state.json").await.unwrap();
    assert_eq!(&bytes[..], b"serial 1");
    assert_eq!(read.e_tag, v1.e_tag, "read etag matches the written one");

    let v2 = s
        .put_if_match("state.json", Bytes::from_static(b"serial 2"), &read)
        .await
        .unwrap();
    assert_ne!(v2.e_tag, v1.e_tag, "a write changes the etag");

    // A writer still holding the first version is refused and changes nothing.
    match s
        .put_if_match("state.json", Bytes::from_static(b"lost update"), &v1)
        .await
    {
        Err(StoreError::Changed { name, .. }) => assert_eq!(name, "state.json"),
        other => panic!("stale etag was not refused: {other:?}"),
    }
    let (bytes, now) = s.get_versioned("state.json").await.unwrap();
    assert_eq!(&bytes[..], b"serial 2");
    assert_eq!(now.e_tag, v2.e_tag);

    // The current version works; so a chain of CAS writes goes through.
    let v3 = s
        .put_if_match("state.json", Bytes::from_static(b"serial 3"), &now)
        .await
        .unwrap();
    assert_ne!(v3.e_tag, v2.e_tag);

    // An update of an object that does not exist is refused too.
    match s
        .put_if_match("absent", Bytes::from_static(b"x"), &v3)
        .await
    {
        Err(StoreError::Changed { .. }) => {}
        other => panic!("update of a missing object was not refused: {other:?}"),
    }
    assert!(matches!(
        s.get_versioned("absent").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn racing_creates_one_wins(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "race-create", &tmp);
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { (i, s.put_if_absent("lock", vec![i; 64]).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        match result {
            Ok(_) => winners.push(i),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("racing create {i} failed oddly: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins, got {winners:?}");
    let (bytes, _) = s.get_versioned("lock").await.unwrap();
    assert_eq!(
        &bytes[..],
        &[winners[0]; 64][..],
        "the winner's content is stored"
    );
}

async fn racing_updates_one_wins(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(backend, "race-cas", &tmp);
    let base = s
        .put_if_absent("state.json", Bytes::from_static(b"base"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let (s, base) = (s.clone(), base.clone());
            tokio::spawn(async move { (i, s.put_if_match("state.json", vec![i; 64], &base).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        match result {
            Ok(_) => winners.push(i),
            Err(StoreError::Changed { .. }) => {}
            Err(e) => panic!("racing update {i} failed oddly: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update wins, got {winners:?}");
    let (bytes, _) = s.get_versioned("state.json").await.unwrap();
    assert_eq!(&bytes[..], &[winners[0]; 64][..]);
}

async fn listing_scoped_to_prefix(backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(backend, "list", &tmp);
    // A neighbour whose prefix extends ours as a string ("…abc" vs "…abcx").
    let neighbour_url = format!("{}x", a.url);
    let b = store::open(&neighbour_url, tmp.path()).unwrap();
    for n in ["p/1", "p/2", "q/1"] {
        a.inner
            .put(&a.path(n), PutPayload::from_static(b"a"))
            .await
            .unwrap();
        b.inner
            .put(&b.path(n), PutPayload::from_static(b"b"))
            .await
            .unwrap();
    }
    b.inner
        .put(&b.path("only-b"), PutPayload::from_static(b"b"))
        .await
        .unwrap();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names(&a, "").await, set(&["p/1", "p/2", "q/1"]));
    assert_eq!(names(&a, "p").await, set(&["p/1", "p/2"]));
    assert_eq!(names(&b, "").await, set(&["only-b", "p/1", "p/2", "q/1"]));
    let got = a
        .inner
        .get(&a.path("p/1"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"a");
}

macro_rules! suite {
    ($($backend:ident),*) => {$(
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() { super::round_trip(stringify!($backend)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_object() { super::large_object(stringify!($backend)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn range_reads() { super::range_reads(stringify!($backend)).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_refused_when_present() {
                super::create_refused_when_present(stringify!($backend)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cas_refused_on_stale_etag() {
                super::cas_refused_on_stale_etag(stringify!($backend)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_creates_one_wins() {
                super::racing_creates_one_wins(stringify!($backend)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_updates_one_wins() {
                super::racing_updates_one_wins(stringify!($backend)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listing_scoped_to_prefix() {
                super::listing_scoped_to_prefix(stringify!($backend)).await
            }
        }
    )*};
}

suite!(file, az, s3);
