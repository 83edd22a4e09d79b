//! Benchmark driver for bench/replication.sh: takes a point of one disk file
//! into a file:// vault, or restores a point, using the library directly (no
//! configuration needed). Not a test: it prints what it did and the time.
//!
//! `replication_bench point VAULT_DIR DISK CACHE_DIR`
//! `replication_bench restore VAULT_DIR POINT_ID|latest OUT`

use standby::model::KeySource;
use standby::replication::{self, Options, Progress, Target};
use standby::vault::{Vault, manifest};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[2]);
    let url = format!("file://{}/vault", dir.display());
    let key = KeySource::File(dir.join("vault.key"));
    let vault = Vault::init(&url, &key, Path::new("/"))?.vault;
    let started = Instant::now();
    match args[1].as_str() {
        "point" => {
            let t = Target {
                protection: "protection.bench".into(),
                machine: "machine.bench".into(),
                group: None,
                disks: vec![("root".into(), PathBuf::from(&args[3]))],
                quiesce: None,
                app: false,
                level: 1,
                site: None,
                vm: None,
            };
            let ps = replication::take_points(
                &vault,
                &[t],
                &Options::new(&args[4]),
                &Progress::default(),
            )?;
            let s = ps[0].stats;
            println!(
                "point {} read {} new {} stored {} in {:.3}s",
                ps[0].id,
                s.read,
                s.new,
                s.stored,
                started.elapsed().as_secs_f64()
            );
        }
        "restore" => {
            let (points, _) = manifest::list(&vault, false)?;
            let p = manifest::find(&vault, &points, &args[3], None)?;
            let r = replication::restore_disk(
                &vault,
                p,
                "root",
                Path::new(&args[4]),
                &Progress::default(),
            )?;
            println!(
                "restored {} bytes in {:.3}s",
                r.size,
                started.elapsed().as_secs_f64()
            );
        }
        other => anyhow::bail!("unknown command {other}"),
    }
    Ok(())
}
