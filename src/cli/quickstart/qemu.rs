//! `standby quickstart --qemu [DIR]`: the `plans/qemu` story on the test
//! guest. Writes the configuration, builds (or reuses) the guest, makes the
//! VMs' disks, starts both VMs, then runs the real commands: validate,
//! plan, apply (first points), replicate (dirty extents only), points, and
//! a restore of the database disk checked with `e2fsck -fn`,
//! `PRAGMA integrity_check` and the order count at the freeze. The VMs are
//! stopped at the end, also on error.

use super::{say, step};
use miette::{IntoDiagnostic, miette};
use standby_provider_qemu::guest;
use standby_provider_qemu::vm::{DiskFormat, Vm};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const FILES: [(&str, &str); 5] = [
    ("main.hcl", include_str!("../../../plans/qemu/main.hcl")),
    (
        "machines.hcl",
        include_str!("../../../plans/qemu/machines.hcl"),
    ),
    (
        "protection.hcl",
        include_str!("../../../plans/qemu/protection.hcl"),
    ),
    (
        "recovery.hcl",
        include_str!("../../../plans/qemu/recovery.hcl"),
    ),
    ("README.md", include_str!("../../../plans/qemu/README.md")),
];

const MARKER: &str = ".standby-quickstart-qemu";

/// Where the guest is cached: `STANDBY_GUEST_CACHE`, else
/// `$XDG_CACHE_HOME/standby/guest`, else `~/.cache/standby/guest`.
fn guest_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("STANDBY_GUEST_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("standby").join("guest")
}

/// Stops the VMs when the tour ends, whatever happened.
struct Running(Vec<Vm>);

impl Drop for Running {
    fn drop(&mut self) {
        for vm in &self.0 {
            match vm.stop(Duration::from_secs(30)) {
                Ok(how) => say(&format!("VM {} stopped ({how:?})", vm.name)),
                Err(e) => eprintln!("stopping VM {}: {e}", vm.name),
            }
        }
    }
}

pub fn run(dir: &Path) -> miette::Result<ExitCode> {
    if dir.exists() && !dir.join(MARKER).exists() {
        let empty = std::fs::read_dir(dir)
            .map(|mut e| e.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(miette!(
                help = "pick a new directory: `standby quickstart --qemu some/new/dir`",
                "{} exists and was not made by `standby quickstart --qemu`; refusing to write into it",
                dir.display()
            ));
        }
    }
    std::fs::create_dir_all(dir).into_diagnostic()?;
    let dir = &dir.canonicalize().into_diagnostic()?;
    if dir.join(MARKER).exists() {
        super::users_changes(dir, &FILES, "standby quickstart --qemu")?;
    }
    for (name, text) in FILES {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text).into_diagnostic()?;
        }
    }
    std::fs::write(dir.join(MARKER), "made by `standby quickstart --qemu`\n").into_diagnostic()?;

    let cache = guest_cache();
    say(&format!(
        "the test guest (Debian kernel, busybox, qemu-guest-agent, sqlite3), cached in {}",
        cache.display()
    ));
    let mut g = guest::ensure(&cache).map_err(|e| miette!("{e}"))?;
    let gdir = dir.join("guest");
    std::fs::create_dir_all(&gdir).into_diagnostic()?;
    for (from, to) in [(&g.kernel, "vmlinuz"), (&g.initrd, "initrd.img")] {
        std::fs::copy(from, gdir.join(to)).into_diagnostic()?;
    }
    // The system disks are overlays over the tour's own copy of the root
    // image, kept as long as they are: a rebuilt guest cache (another
    // version) must not pull the ground from under them.
    let root = gdir.join("root.qcow2");
    if !root.exists() {
        std::fs::copy(&g.root, &root).into_diagnostic()?;
    }
    g.root = root;
    let hv1 = dir.join("sites/hv1");
    for (rel, make) in [
        ("app/system.qcow2", 0u8),
        ("db/system.qcow2", 0),
        ("db/data.qcow2", 1),
    ] {
        let path = hv1.join(rel);
        if path.exists() {
            say(&format!("keeping the disk {}", path.display()));
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap_or(&hv1)).into_diagnostic()?;
        say(&format!("making the disk {}", path.display()));
        let made = if make == 0 {
            g.root_overlay(&path, "system").map(|_| ())
        } else {
            guest::make_data_disk(&path, 1 << 30, DiskFormat::Qcow2)
        };
        made.map_err(|e| miette!("{e}"))?;
    }

    let exe = std::env::current_exe().into_diagnostic()?;
    let standby = |args: &[&str]| step(&exe, dir, args);
    standby(&["validate"])?;

    let cfg = crate::config::load(dir, &Default::default())
        .map_err(|d| miette!("{}", d.render(false)))?
        .config;
    let mut running = Running(Vec::new());
    for name in ["machine.app", "machine.db"] {
        let m = cfg
            .machines
            .values()
            .find(|m| m.addr.to_string() == name)
            .ok_or_else(|| miette!("{name} is not in the configuration"))?;
        let r = crate::operations::vms::start(&cfg, m).map_err(|e| miette!("{name}: {e}"))?;
        say(&format!(
            "started VM {} for {name} under {}; console in {}",
            r.vm.name,
            r.accel,
            Vm::serial_path(&r.vm.dir, &r.vm.name).display()
        ));
        running.0.push(r.vm);
    }
    let db_agent = hv1.join("db.qga");
    say("waiting for the guests' agents and the database VM's writer");
    await_orders(&db_agent, 1)?;

    standby(&["plan"])?;
    standby(&["apply", "--auto-approve"])?;
    let n = orders(&db_agent)?;
    await_orders(&db_agent, n + 20)?;
    say("the writer goes on; the next point reads only what QEMU marked dirty");
    standby(&["replicate"])?;
    standby(&["points"])?;
    let frozen = guest_sh(&db_agent, "cat /run/last-freeze-count")?
        .trim()
        .parse::<u64>()
        .ok();

    let restored = dir.join("restored");
    std::fs::create_dir_all(&restored).into_diagnostic()?;
    let data = restored.join("db-data.img");
    let to = data.display().to_string();
    standby(&[
        "restore",
        "latest",
        "--machine",
        "machine.db",
        "--disk",
        "data",
        "--to",
        &to,
        "--force",
    ])?;
    let clean = crate::samples::ext4_is_clean(&data).into_diagnostic()?;
    let db = restored.join("orders.db");
    let _ = std::fs::remove_file(&db);
    let dump = Command::new("debugfs")
        .args(["-R", &format!("dump /orders.db {}", db.display())])
        .arg(&data)
        .output()
        .into_diagnostic()?;
    if !dump.status.success() || !db.exists() {
        return Err(miette!(
            "debugfs could not read /orders.db from {}",
            data.display()
        ));
    }
    let integrity = crate::samples::sqlite_integrity(&db).into_diagnostic()?;
    let count = crate::samples::sqlite_orders(&db).into_diagnostic()?;
    say(&format!(
        "restored database disk: e2fsck -fn {}, PRAGMA integrity_check = {integrity}, {count} orders (the guest recorded {} at the point's freeze)",
        if clean { "clean" } else { "FOUND ERRORS" },
        frozen.map_or("?".into(), |n| n.to_string())
    ));
    standby(&["vault", "verify", "--read-data"])?;
    drop(running);
    if !clean || integrity != "ok" || frozen != Some(count) {
        return Err(miette!(
            "the restored database disk failed its check (see above)"
        ));
    }
    say(&format!(
        "done. The configuration, vault and VM disks are in {}; `standby -C {} drill shop` or `failover planned shop` go on from here (points of the stopped VMs are read from their images), and `standby quickstart --qemu {}` runs the VMs again (it reuses the disks).",
        dir.display(),
        dir.display(),
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn guest_sh(agent: &Path, script: &str) -> miette::Result<String> {
    let mut a = standby_provider_qemu::qga::Agent::connect_unix(agent, Duration::from_secs(120))
        .map_err(|e| miette!("{e}"))?;
    a.sh(script, Duration::from_secs(60))
        .map_err(|e| miette!("{e}"))
}

fn orders(agent: &Path) -> miette::Result<u64> {
    Ok(guest_sh(
        agent,
        "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders' 2>/dev/null || echo 0",
    )?
    .trim()
    .parse()
    .unwrap_or(0))
}

/// Waits until the guest's writer has committed at least `n` orders.
fn await_orders(agent: &Path, n: u64) -> miette::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while orders(agent)? < n {
        if std::time::Instant::now() > deadline {
            return Err(miette!("the database VM's writer is not taking orders"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}
