//! A flipped bit in every kind of object (data pack, index, manifest,
//! config) is detected by verify and by restore, naming the object and the
//! points it affects — never wrong bytes.

mod vault_support;

use standby::replication::{self, Progress};
use standby::vault::{Manifest, Vault, VaultError, manifest, verify};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vault_support::*;

struct Setup {
    _dir: tempfile::TempDir,
    d: PathBuf,
    url: String,
    vault_dir: PathBuf,
    key: standby::model::KeySource,
    points: Vec<Manifest>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let vault_dir = d.join("vault");
    let url = format!("file://{}", vault_dir.display());
    let (vault, key) = new_vault(&url, &d);
    let disk = d.join("disk");
    let f = std::fs::File::create(&disk).unwrap();
    let random: Vec<u8> = (0..(2 << 20)).map(|_| rand::random::<u8>()).collect();
    f.write_all_at(&random, 0).unwrap();
    f.write_all_at("some text\n".repeat(100_000).as_bytes(), 3 << 20)
        .unwrap();
    let cache = d.join("cache");
    let p1 = take(&vault, &cache, &[target("a", &[("root", &disk)])]).remove(0);
    f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
    let p2 = take(&vault, &cache, &[target("a", &[("root", &disk)])]).remove(0);
    Setup {
        _dir: dir,
        d,
        url,
        vault_dir,
        key,
        points: vec![p1, p2],
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, at: Option<u64>) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let at = at.unwrap_or(len / 2);
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, at).unwrap();
}

fn name_of(s: &Setup, path: &Path) -> String {
    path.strip_prefix(&s.vault_dir)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn restore_err(s: &Setup, vault: &Vault, p: &Manifest) -> String {
    let out = s.d.join("out");
    let e = replication::restore_disk(vault, p, "root", &out, &Progress::default())
        .expect_err("restore of damaged data must fail");
    assert!(!out.exists(), "no restored file is left behind");
    e.to_string()
}

#[test]
fn flipped_bit_in_a_data_pack() {
    let s = setup();
    let vault = Vault::open(&s.url, &s.key, &s.d).unwrap();
    // The first point's pack holds data both points use.
    let pack = files_under(&s.vault_dir.join("data")).remove(0);
    flip(&pack, None);
    let name = name_of(&s, &pack);
    let r = verify::verify(&vault, true).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].object, name);
    assert!(!r.problems[0].points.is_empty());
    for id in &r.problems[0].points {
        assert!(s.points.iter().any(|p| p.id.hex() == *id));
    }
    // Structure alone does not read data; it still passes.
    assert!(verify::verify(&vault, false).unwrap().problems.is_empty());
    let affected: Vec<&Manifest> = s
        .points
        .iter()
        .filter(|p| r.problems[0].points.contains(&p.id.hex()))
        .collect();
    for p in affected {
        let e = restore_err(&s, &vault, p);
        assert!(e.contains(&name), "{e}");
    }
}

#[test]
fn flipped_bit_in_an_index() {
    let s = setup();
    let vault = Vault::open(&s.url, &s.key, &s.d).unwrap();
    let idx = files_under(&s.vault_dir.join("index")).remove(0);
    flip(&idx, None);
    let name = name_of(&s, &idx);
    let r = verify::verify(&vault, false).unwrap();
    let objects: Vec<&str> = r.problems.iter().map(|p| p.object.as_str()).collect();
    assert!(objects.contains(&name.as_str()), "{:?}", r.problems);
    // Blobs only that index listed are reported with the points using them.
    assert!(
        r.problems.iter().any(|p| !p.points.is_empty()),
        "{:?}",
        r.problems
    );
    let e = restore_err(&s, &vault, &s.points[0]);
    assert!(e.contains(&name), "{e}");
}

#[test]
fn flipped_bit_in_a_manifest() {
    let s = setup();
    let vault = Vault::open(&s.url, &s.key, &s.d).unwrap();
    let target = s.vault_dir.join(format!("points/{}", s.points[0].id.hex()));
    flip(&target, None);
    let name = name_of(&s, &target);
    let r = verify::verify(&vault, true).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].object, name);
    // The damaged point and the delta built on it are both affected.
    let mut want: Vec<String> = s.points.iter().map(|p| p.id.hex()).collect();
    want.sort();
    assert_eq!(r.problems[0].points, want);
    let e = manifest::read(&vault, &s.points[0].id).err().unwrap();
    assert!(e.to_string().contains(&name), "{e}");
    let e = restore_err(&s, &vault, &s.points[1]);
    assert!(e.contains(&name), "{e}");
}

#[test]
fn flipped_bit_in_the_config() {
    let s = setup();
    flip(&s.vault_dir.join("config"), Some(20));
    let e = Vault::open(&s.url, &s.key, &s.d).err().unwrap();
    assert!(
        matches!(e, VaultError::Damaged { ref object, .. } if object == "config"),
        "{e}"
    );
    assert!(e.to_string().contains("config"));
}
