//! The same round-trip suite over every backend: file://, Azurite (az://)
//! and moto (s3://). The az and s3 variants fail — never skip — when the
//! services are not running.

mod vault_support;

use standby::model::KeySource;
use standby::vault::{Vault, VaultError, verify};
use std::os::unix::fs::{FileExt, PermissionsExt};
use vault_support::*;

fn round_trip(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = backend_url(backend, d);
    let (vault, key) = new_vault(&url, d);
    let KeySource::File(key_file) = &key else {
        unreachable!()
    };
    let mode = std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A sparse 40 MiB disk: random data, text, zeros and holes.
    let disk = d.join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(40 << 20).unwrap();
    let random: Vec<u8> = (0..(3 << 20)).map(|_| rand::random::<u8>()).collect();
    f.write_all_at(&random, 1 << 20).unwrap();
    f.write_all_at("text of a log line\n".repeat(100_000).as_bytes(), 10 << 20)
        .unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 20 << 20).unwrap();
    f.write_all_at(b"tail", (40 << 20) - 4).unwrap();
    drop(f);
    let cache = d.join("cache");
    let ref1 = snapshot(&disk, &d.join("ref1"));
    let p1 = take(&vault, &cache, &[target("a", &[("root", &disk)])]);
    assert_eq!(p1[0].disks["root"].parent, None);

    // Change a few scattered blocks, zero a data region, grow the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    for i in 0..20u64 {
        f.write_all_at(&[i as u8 + 1; 4096], (1 << 20) + i * 77 * 4096)
            .unwrap();
    }
    f.write_all_at(&vec![0u8; 64 << 10], 2 << 20).unwrap();
    f.write_all_at(b"grown", (41 << 20) + 100).unwrap();
    drop(f);
    let ref2 = snapshot(&disk, &d.join("ref2"));
    let p2 = take(&vault, &cache, &[target("a", &[("root", &disk)])]);
    let map2 = &p2[0].disks["root"];
    assert_eq!(map2.parent, Some(p1[0].id));
    // The delta stores what changed (20 blocks + the new tail block), not the disk.
    assert_eq!(p2[0].stats.new, 21 * 4096);

    // A third point with the cache removed rebuilds it from the vault.
    std::fs::remove_dir_all(&cache).unwrap();
    let p3 = take(&vault, &cache, &[target("a", &[("root", &disk)])]);
    assert_eq!(p3[0].stats.new, 0);
    assert_eq!(p3[0].disks["root"].extents, vec![]);

    for (p, reference) in [(&p1[0], &ref1), (&p2[0], &ref2), (&p3[0], &ref2)] {
        let out = d.join(format!("restored-{}", p.id.short()));
        restore(&vault, p, "root", &out);
        assert_same(reference, &out);
        // Holes stay holes: far less allocated than the 40 MiB size.
        assert!(allocated(&out) < 12 << 20, "restore is not sparse");
    }

    let report = verify::verify(&vault, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // A second open with the key works; another key is refused clearly.
    Vault::open(&url, &key, d).unwrap();
    let other = d.join("other.key");
    std::fs::write(&other, hex::encode([9u8; 32])).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Vault::open(&url, &KeySource::File(other.clone()), d)
        .err()
        .unwrap();
    assert!(matches!(err, VaultError::WrongKey { .. }));
    assert_eq!(
        err.to_string(),
        format!("this key does not open vault {url}")
    );
    // A key file others can read is refused with a hint.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open(&url, &KeySource::File(other), d).err().unwrap();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn round_trip_file() {
    round_trip("file");
}

#[test]
fn round_trip_azurite() {
    round_trip("az");
}

#[test]
fn round_trip_moto() {
    round_trip("s3");
}

#[test]
fn key_from_environment_and_key_file_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = backend_url("file", d);
    // An env key must exist already: init never invents one there.
    let missing = KeySource::Env("STANDBY_TEST_KEY_UNSET_7f3a".into());
    let err = Vault::init(&url, &missing, d).err().unwrap();
    assert!(
        err.to_string()
            .contains("STANDBY_TEST_KEY_UNSET_7f3a is not set"),
        "{err}"
    );
    assert!(
        !d.join(url.trim_start_matches(&format!("file://{}/", d.display())))
            .join("config")
            .exists()
    );

    let key_hex = hex::encode([5u8; 32]);
    // SAFETY: this test alone uses this variable name.
    unsafe { std::env::set_var("STANDBY_TEST_KEY_ENV_7f3a", &key_hex) };
    let env = KeySource::Env("STANDBY_TEST_KEY_ENV_7f3a".into());
    let out = Vault::init(&url, &env, d).unwrap();
    assert!(out.key_created.is_none());
    assert!(!out.existed);
    // The same key written to a file opens it; init again is harmless.
    let f = d.join("same.key");
    std::fs::write(&f, &key_hex).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    Vault::open(&url, &KeySource::File(f.clone()), d).unwrap();
    assert!(Vault::init(&url, &env, d).unwrap().existed);
    // A malformed key is refused without echoing it.
    std::fs::write(&f, "not-a-key-material-xyz").unwrap();
    let err = Vault::open(&url, &KeySource::File(f), d).err().unwrap();
    assert!(
        err.to_string().contains("does not hold a vault key"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-a-key-material-xyz"));
    // No error or object name carries the key.
    let err = Vault::open(
        &url,
        &KeySource::Env("STANDBY_TEST_KEY_UNSET_7f3a".into()),
        d,
    )
    .err()
    .unwrap();
    assert!(!err.to_string().contains(&key_hex));
}
