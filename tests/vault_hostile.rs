//! Hostile manifests and indexes, sealed with the vault's real keys (so
//! they pass authentication, as if written by someone holding the key): a
//! disk name that would leave the restore target, a disk over 16 TiB, an
//! extent past the disk's end, an index hint naming another object, a
//! point that is its own parent, two points that are each other's parent,
//! and an index naming a blob past any pack.
//! `standby restore` refuses each with a clear error naming the object,
//! before it writes anything; `vault verify` reports it.

mod watch_support;

use standby::model::KeySource;
use standby::vault::manifest::{self, Extent, Manifest};
use standby::vault::{Id, Vault, index};
use std::path::{Path, PathBuf};
use watch_support::{expect_code, quickstart, standby};

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

fn open(qs: &Path) -> Vault {
    Vault::open(
        "file://.standby/vault",
        &KeySource::File(".standby/keys/main.key".into()),
        qs,
    )
    .unwrap()
}

fn fresh_id() -> Id {
    Id(rand::random())
}

/// A copy of `m` under a new id, changed by `f`, written sealed.
fn craft(vault: &Vault, m: &Manifest, f: impl FnOnce(&mut Manifest)) -> Manifest {
    let mut bad = m.clone();
    bad.id = fresh_id();
    f(&mut bad);
    manifest::write(vault, &bad).unwrap();
    bad
}

fn remove(qs: &Path, m: &Manifest) {
    std::fs::remove_file(qs.join(".standby/vault/points").join(m.id.hex())).unwrap();
}

/// stdout and stderr with miette's wrapping undone.
fn flat(o: &std::process::Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
    .replace(['│', '×'], " ")
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

/// `restore POINT --disk DISK --to OUT` fails with `reason`; nothing is written.
fn refused(qs: &Path, out: &Path, point: &Id, disk: &str, reason: &str) {
    refused_by(standby(qs), qs, out, point, disk, reason)
}

fn refused_by(
    mut cmd: std::process::Command,
    qs: &Path,
    out: &Path,
    point: &Id,
    disk: &str,
    reason: &str,
) {
    let o = expect_code(
        cmd.args([
            "restore",
            &point.hex(),
            "--disk",
            disk,
            "--to",
            out.to_str().unwrap(),
        ]),
        1,
    );
    let err = flat(&o);
    assert!(err.contains(reason), "expected {reason:?} in: {err}");
    assert!(!out.exists(), "nothing is restored");
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    assert!(!PathBuf::from(partial).exists(), "no partial file either");
    let escaped = qs.join("escaped");
    assert!(!escaped.exists());
}

#[test]
fn hostile_manifests_and_indexes_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), POLICY, None);
    expect_code(standby(&qs).args(["apply", "--auto-approve"]), 0);
    let vault = open(&qs);
    let (points, _) = manifest::list(&vault, false).unwrap();
    let db = points
        .iter()
        .find(|m| m.protection == "protection.db")
        .unwrap()
        .clone();
    let out = d.path().join("out.img");

    // A disk name that is a path out of the restore target.
    let bad = craft(&vault, &db, |m| {
        let map = m.disks.remove("system").unwrap();
        m.disks.insert("../../escaped".into(), map);
    });
    refused(
        &qs,
        &out,
        &bad.id,
        "../../escaped",
        "a disk name must be letters",
    );
    // A refused manifest does not stop the restore of a good point.
    expect_code(
        standby(&qs).args([
            "restore",
            &db.id.hex(),
            "--disk",
            "system",
            "--to",
            out.to_str().unwrap(),
        ]),
        0,
    );
    std::fs::remove_file(&out).unwrap();
    let o = standby(&qs).args(["vault", "verify"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        flat(&o).contains(&bad.id.hex()[..12]),
        "verify names it: {}",
        flat(&o)
    );
    remove(&qs, &bad);

    // A disk of 17 TiB.
    let bad = craft(&vault, &db, |m| {
        m.disks.get_mut("system").unwrap().size = 17 << 40;
    });
    refused(&qs, &out, &bad.id, "system", "more than the 16 TiB limit");
    remove(&qs, &bad);

    // A disk within the size limit whose block map would not fit in the
    // memory the process may use (16 TiB: 32 GiB of map) is refused, not
    // allocated. The restore runs with an 8 GiB address-space limit, so the
    // refusal does not depend on how much memory this host has free.
    let bad = craft(&vault, &db, |m| {
        m.disks.get_mut("system").unwrap().size = manifest::MAX_DISK;
    });
    let mut limited = standby(&qs);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        limited.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 8 << 30,
                rlim_max: 8 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    refused_by(
        limited,
        &qs,
        &out,
        &bad.id,
        "system",
        "bytes of memory and only",
    );
    remove(&qs, &bad);
    // 6 TiB (12 GiB of map) under the same 8 GiB limit: a host with plenty
    // of free memory must not tempt the restore into an allocation the
    // limit makes fail (an abort, not an error).
    let bad = craft(&vault, &db, |m| {
        m.disks.get_mut("system").unwrap().size = 6 << 40;
    });
    let mut limited = standby(&qs);
    // SAFETY: as above.
    unsafe {
        use std::os::unix::process::CommandExt;
        limited.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 8 << 30,
                rlim_max: 8 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    refused_by(
        limited,
        &qs,
        &out,
        &bad.id,
        "system",
        "bytes of memory and only",
    );
    remove(&qs, &bad);

    // An extent past the disk's end.
    let bad = craft(&vault, &db, |m| {
        let map = m.disks.get_mut("system").unwrap();
        let blob = map.extents.iter().find_map(|e| e.2);
        map.extents.push(Extent(map.size, 4096, blob, 0));
    });
    refused(&qs, &out, &bad.id, "system", "runs past the disk's end");
    remove(&qs, &bad);

    // An index hint that names another kind of object.
    let bad = craft(&vault, &db, |m| {
        m.index = Some("points/../keys".into());
    });
    refused(&qs, &out, &bad.id, "system", "not index/<64 hex digits>");
    remove(&qs, &bad);

    // A point that is its own parent.
    let bad = craft(&vault, &db, |m| {
        let id = m.id;
        m.disks.get_mut("system").unwrap().parent = Some(id);
    });
    refused(&qs, &out, &bad.id, "system", "reference cycle");
    remove(&qs, &bad);

    // Two points that are each other's parent: each passes alone, the
    // chain loops.
    let (a_id, b_id) = (fresh_id(), fresh_id());
    let mut a = db.clone();
    a.id = a_id;
    a.disks.get_mut("system").unwrap().parent = Some(b_id);
    let mut b = db.clone();
    b.id = b_id;
    b.disks.get_mut("system").unwrap().parent = Some(a_id);
    manifest::write(&vault, &a).unwrap();
    manifest::write(&vault, &b).unwrap();
    refused(&qs, &out, &a.id, "system", "its delta chain loops");
    remove(&qs, &a);
    remove(&qs, &b);

    // The real point still restores.
    expect_code(
        standby(&qs).args([
            "restore",
            &db.id.hex(),
            "--disk",
            "system",
            "--to",
            out.to_str().unwrap(),
        ]),
        0,
    );
    std::fs::remove_file(&out).unwrap();

    // An index naming a blob past any possible pack.
    let (idx, _) = index::load(&vault, false).unwrap();
    let mut packs: Vec<_> = idx.files.values().flatten().cloned().collect();
    packs[0].blobs[0].1 = u64::MAX - 10;
    let name = index::write(&vault, packs).unwrap();
    refused(&qs, &out, &db.id, "system", "which no pack can hold");
    assert!(
        flat(&expect_code(standby(&qs).args(["vault", "verify"]), 1)).contains(&name[6..18]),
        "verify names the index"
    );
}
