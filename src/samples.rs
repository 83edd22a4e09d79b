//! Sample machines for the quickstart and the tests: an ext4 system disk
//! made with `mke2fs -d` and a SQLite data disk made with `sqlite3`, so that
//! every replication and recovery path runs on real disk images checked by
//! the real tools (`e2fsck`, `PRAGMA integrity_check`).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot run {tool} (is it installed? it comes with {package}): {source}")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed on {path}: {stderr}")]
    Failed {
        tool: &'static str,
        path: PathBuf,
        stderr: String,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SampleError + '_ {
    move |source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn run(
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
    path: &Path,
) -> Result<(), SampleError> {
    let out = cmd.output().map_err(|source| SampleError::Spawn {
        tool,
        package,
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SampleError::Failed {
            tool,
            path: path.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Make an ext4 image of `size_mib` MiB at `img` holding a small tree of
/// files named after `machine` (an OS-like layout: etc/, var/log/).
pub fn make_ext4(img: &Path, machine: &str, size_mib: u32) -> Result<(), SampleError> {
    let tree = tempfile::Builder::new()
        .prefix("standby-sample")
        .tempdir()
        .map_err(io(img))?;
    let root = tree.path();
    for dir in ["etc", "var/log", "srv"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io(img))?;
    }
    let write = |rel: &str, text: String| std::fs::write(root.join(rel), text).map_err(io(img));
    write("etc/hostname", format!("{machine}\n"))?;
    write(
        "etc/motd",
        format!("This is {machine}, a sample machine protected by standby.\n"),
    )?;
    let log: String = (0..2000)
        .map(|i| {
            format!(
                "{machine} service[{i}]: request {i} handled in {} ms\n",
                i % 97
            )
        })
        .collect();
    write("var/log/service.log", log)?;
    if let Some(parent) = img.parent() {
        std::fs::create_dir_all(parent).map_err(io(img))?;
    }
    let _ = std::fs::remove_file(img);
    run(
        "mke2fs",
        "e2fsprogs",
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(root)
            .arg(img)
            .arg(format!("{size_mib}M")),
        img,
    )
}

/// Make a SQLite database at `db` with an `orders` table of `rows` rows.
pub fn make_sqlite(db: &Path, rows: u32) -> Result<(), SampleError> {
    if let Some(parent) = db.parent() {
        std::fs::create_dir_all(parent).map_err(io(db))?;
    }
    let _ = std::fs::remove_file(db);
    let sql = format!(
        "PRAGMA journal_mode=DELETE;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total_cents INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO orders (customer, total_cents) SELECT 'customer-' || (i % 100), i * 7 % 10000 FROM n;"
    );
    run(
        "sqlite3",
        "sqlite3",
        Command::new("sqlite3").arg(db).arg(sql),
        db,
    )
}

/// Append `rows` more orders: the kind of change replication must pick up.
pub fn add_orders(db: &Path, rows: u32) -> Result<(), SampleError> {
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO orders (customer, total_cents) SELECT 'late-customer-' || i, i FROM n;"
    );
    run(
        "sqlite3",
        "sqlite3",
        Command::new("sqlite3").arg(db).arg(sql),
        db,
    )
}

/// Whether `e2fsck -fn` finds the image clean.
pub fn ext4_is_clean(img: &Path) -> Result<bool, SampleError> {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(img)
        .output()
        .map_err(|source| SampleError::Spawn {
            tool: "e2fsck",
            package: "e2fsprogs",
            source,
        })?;
    Ok(out.status.success())
}

/// The database's `PRAGMA integrity_check` answer (`ok` when sound).
pub fn sqlite_integrity(db: &Path) -> Result<String, SampleError> {
    sqlite_query(db, "PRAGMA integrity_check")
}

/// How many orders the sample database holds.
pub fn sqlite_orders(db: &Path) -> Result<u64, SampleError> {
    let text = sqlite_query(db, "SELECT count(*) FROM orders")?;
    text.parse().map_err(|_| SampleError::Failed {
        tool: "sqlite3",
        path: db.to_path_buf(),
        stderr: format!("expected a row count, got {text:?}"),
    })
}

fn sqlite_query(db: &Path, sql: &str) -> Result<String, SampleError> {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .map_err(|source| SampleError::Spawn {
            tool: "sqlite3",
            package: "sqlite3",
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_disks_are_real_and_sound() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("db/system.img");
        make_ext4(&img, "db", 16).unwrap();
        assert!(ext4_is_clean(&img).unwrap());
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 << 20);

        let db = dir.path().join("db/data.sqlite");
        make_sqlite(&db, 500).unwrap();
        add_orders(&db, 10).unwrap();
        assert_eq!(sqlite_integrity(&db).unwrap(), "ok");
        let count = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT count(*) FROM orders")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "510");
    }

    #[test]
    fn a_damaged_image_is_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("bad.img");
        make_ext4(&img, "bad", 8).unwrap();
        // Zero the primary superblock (bytes 1024..2048).
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[1024..2048].fill(0);
        std::fs::write(&img, bytes).unwrap();
        assert!(!ext4_is_clean(&img).unwrap());
    }
}
