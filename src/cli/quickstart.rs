//! `standby quickstart [DIR]`: the main job on the embedded defaults. Writes
//! the `plans/quickstart` configuration into DIR, makes its sample machines
//! (real ext4 and SQLite disks), then runs the real commands a user would:
//! validate, plan, apply (vault set-up and first points), plan again (no
//! changes), a change, replicate, points, status, restore with filesystem
//! and database checks, and vault verify.

mod qemu;

use crate::samples;
use miette::{IntoDiagnostic, miette};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to set the quickstart up (created; reused when it holds an earlier quickstart).
    #[arg(default_value = "standby-quickstart")]
    pub dir: PathBuf,
    /// Run the `plans/qemu` story instead: two running QEMU VMs (the test
    /// guest) replicated through changed-block tracking (default directory
    /// `standby-quickstart-qemu`).
    #[arg(long)]
    pub qemu: bool,
}

/// The embedded default configuration (`plans/quickstart`), file by file.
const FILES: [(&str, &str); 11] = [
    ("main.hcl", include_str!("../../plans/quickstart/main.hcl")),
    (
        "machines.hcl",
        include_str!("../../plans/quickstart/machines.hcl"),
    ),
    (
        "protection.hcl",
        include_str!("../../plans/quickstart/protection.hcl"),
    ),
    (
        "recovery.hcl",
        include_str!("../../plans/quickstart/recovery.hcl"),
    ),
    (
        "README.md",
        include_str!("../../plans/quickstart/README.md"),
    ),
    (
        "scripts/db-freeze.sh",
        include_str!("../../plans/quickstart/scripts/db-freeze.sh"),
    ),
    (
        "scripts/db-thaw.sh",
        include_str!("../../plans/quickstart/scripts/db-thaw.sh"),
    ),
    (
        "scripts/db-start.sh",
        include_str!("../../plans/quickstart/scripts/db-start.sh"),
    ),
    (
        "scripts/db-writer.sh",
        include_str!("../../plans/quickstart/scripts/db-writer.sh"),
    ),
    (
        "scripts/db-stop.sh",
        include_str!("../../plans/quickstart/scripts/db-stop.sh"),
    ),
    (
        "scripts/web-start.sh",
        include_str!("../../plans/quickstart/scripts/web-start.sh"),
    ),
];

/// Marks a directory as made by this command, so a rerun may reuse it.
const MARKER: &str = ".standby-quickstart";

pub fn run(args: Args) -> miette::Result<ExitCode> {
    if args.qemu {
        // Beside, not inside, a plain quickstart's directory.
        let dir = if args.dir == Path::new("standby-quickstart") {
            PathBuf::from("standby-quickstart-qemu")
        } else {
            args.dir
        };
        return qemu::run(&dir);
    }
    prepare_dir(&args.dir)?;
    // Absolute from here on: the commands below run with `-C DIR`.
    let dir = &args.dir.canonicalize().into_diagnostic()?;
    // A rerun checks everything first and then writes only what is missing:
    // a file that differs from the default is the user's, and so are the
    // sample disks (the database holds the orders taken so far).
    rerun_check(dir)?;
    for (name, text) in FILES {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).into_diagnostic()?;
        }
        std::fs::write(&path, text).into_diagnostic()?;
    }
    std::fs::write(dir.join(MARKER), "made by `standby quickstart`\n").into_diagnostic()?;

    let onprem = dir.join("sites/onprem");
    type Make<'a> = &'a dyn Fn(&Path) -> Result<(), samples::SampleError>;
    let disks: [(&str, Make); 3] = [
        ("db/system.img", &|p| samples::make_ext4(p, "db", 64)),
        ("db/data.sqlite", &|p| samples::make_sqlite(p, 5_000)),
        ("web/system.img", &|p| samples::make_ext4(p, "web", 32)),
    ];
    for (rel, make) in disks {
        let path = onprem.join(rel);
        if path.exists() {
            say(&format!(
                "keeping the sample disk {} as it is",
                path.display()
            ));
            continue;
        }
        say(&format!("making the sample disk {}", path.display()));
        make(&path).into_diagnostic()?;
    }

    let exe = std::env::current_exe().into_diagnostic()?;
    let standby = |args: &[&str]| step(&exe, dir, args);
    standby(&["validate"])?;
    standby(&["plan"])?;

    say(
        "the database's application starts taking orders (scripts/db-writer.sh); its quiesce hooks pause it for app-consistent points",
    );
    let writer = Writer::start(dir)?;
    standby(&["apply", "--auto-approve"])?;
    standby(&["plan", "--detailed-exitcode"])?;

    say("the writer goes on; only the changed 4 KiB blocks go into the next point");
    writer.wait_for_orders(20)?;
    standby(&["replicate"])?;
    let rows = writer.stop()?;
    say(&format!(
        "the writer stopped after committing {rows} orders"
    ));
    standby(&["points"])?;
    standby(&["status"])?;

    let restored = dir.join("restored");
    std::fs::create_dir_all(&restored).into_diagnostic()?;
    let data = restored.join("data.sqlite");
    let system = restored.join("system.img");
    for (disk, to) in [("data", &data), ("system", &system)] {
        let to = to.display().to_string();
        standby(&[
            "restore",
            "latest",
            "--machine",
            "machine.db",
            "--disk",
            disk,
            "--to",
            &to,
            "--force", // a rerun replaces the previous run's restored copies
        ])?;
    }
    let integrity = samples::sqlite_integrity(&data).into_diagnostic()?;
    let orders = samples::sqlite_orders(&data).into_diagnostic()?;
    let frozen = last_freeze(dir);
    let clean = samples::ext4_is_clean(&system).into_diagnostic()?;
    say(&format!(
        "restored database: PRAGMA integrity_check = {integrity}, {orders} orders (the writer had committed {} at the point's freeze)",
        frozen.map_or("?".to_string(), |n| n.to_string())
    ));
    say(&format!(
        "restored system disk: e2fsck -fn {}",
        if clean { "clean" } else { "FOUND ERRORS" }
    ));
    standby(&["vault", "verify", "--read-data"])?;
    // The recovery plan end to end: both groups restored into a sandbox at
    // the DR site, booted and checked, then removed; prints the report.
    standby(&[
        "drill",
        "shop",
        "--approve",
        "dns",
        "--report-dir",
        "drill-report",
    ])?;

    if !restored_ok(&integrity, clean, frozen, orders) {
        return Err(miette!("a restored disk failed its check (see above)"));
    }
    say(&format!(
        "done. The configuration, vault and sites are in {}; try `standby -C {} plan --format markdown` or edit the .hcl files and plan again.",
        dir.display(),
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Before a rerun touches anything: refuse when the user changed a file the
/// quickstart wrote or added a configuration file (running the tour would
/// apply their unreviewed change with `--auto-approve`) or when a recovery run is in effect (the tour's drill
/// and restores would fail halfway), saying what to do instead.
fn rerun_check(dir: &Path) -> miette::Result<()> {
    if !dir.join(MARKER).exists() {
        return Ok(());
    }
    users_changes(dir, &FILES, "standby quickstart")?;
    let state = crate::state::open_backend(dir, None)
        .and_then(|b| b.read())
        .map_err(|e| miette!("{}: {e}; the quickstart changed nothing", dir.display()))?;
    if let Some(run) = state.as_ref().and_then(|s| s.runs.first()) {
        let what = if run.kind.is_test() {
            format!(
                "`standby -C {} failover cleanup {}`",
                dir.display(),
                run.plan.name
            )
        } else {
            format!(
                "`standby -C {} failback {}` (after `failover commit` and `reprotect`)",
                dir.display(),
                run.plan.name
            )
        };
        return Err(miette!(
            help = format!("finish it first with {what}, or run the tour in a new directory"),
            "a {} run of {} is in effect in {}; the quickstart changed nothing",
            run.kind.as_str(),
            run.plan,
            dir.display()
        ));
    }
    Ok(())
}

/// Refuse a rerun in `dir` when a file of `files` (the defaults it wrote)
/// differs from its default, or a configuration file it did not write is
/// there (`*.hcl`, as the loader reads them, `standby.vars.hcl` included):
/// the tour would apply the user's change without review.
fn users_changes(dir: &Path, files: &[(&str, &str)], command: &str) -> miette::Result<()> {
    let mut changed: Vec<String> = files
        .iter()
        .filter(|(name, text)| {
            std::fs::read(dir.join(name)).is_ok_and(|have| have != text.as_bytes())
        })
        .map(|(name, _)| name.to_string())
        .collect();
    let mut added: Vec<String> = std::fs::read_dir(dir)
        .into_diagnostic()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".hcl") && !files.iter().any(|(f, _)| f == n))
        .map(|n| format!("{n} (added)"))
        .collect();
    added.sort();
    changed.extend(added);
    if changed.is_empty() {
        return Ok(());
    }
    Err(miette!(
        help = format!(
            "review and apply your change with `standby -C {0} plan` and `standby -C {0} apply`, or run the tour in a new directory: `{command} some/new/dir`",
            dir.display()
        ),
        "{} holds your changes: {}; the quickstart changed nothing (it would apply them without review)",
        dir.display(),
        changed.join(", ")
    ))
}

fn prepare_dir(dir: &Path) -> miette::Result<()> {
    if dir.join(MARKER).exists() {
        return Ok(());
    }
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(miette!(
            help = "pick a new directory: `standby quickstart some/new/dir`",
            "{} exists and was not made by `standby quickstart`; refusing to write into it",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).into_diagnostic()
}

/// The sample database's application (scripts/db-writer.sh), running while
/// points are taken; stopped cleanly when dropped, so an error cannot leave
/// it behind.
struct Writer {
    child: std::process::Child,
    control: PathBuf,
}

impl Writer {
    fn start(dir: &Path) -> miette::Result<Writer> {
        let control = dir.join("run/db-writer");
        let _ = std::fs::remove_file(control.join("committed"));
        let mut cmd = Command::new("sh");
        cmd.args(["scripts/db-writer.sh", "sites/onprem/db/data.sqlite"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null());
        // Like every child: none of standby's secrets in its environment.
        standby_provider_core::command::isolate(&mut cmd);
        let child = cmd.spawn().into_diagnostic()?;
        Ok(Writer { child, control })
    }

    /// The rows the writer has committed so far (0 before its first).
    fn committed(&self) -> u64 {
        std::fs::read_to_string(self.control.join("committed"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Wait until the writer has committed `n` more orders.
    fn wait_for_orders(&self, n: u64) -> miette::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let wait = |goal: u64| {
            while self.committed() < goal {
                if std::time::Instant::now() > deadline {
                    return Err(miette!("the sample writer stopped taking orders"));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(())
        };
        // Its count starts at its first commit (the table's size then).
        wait(1)?;
        wait(self.committed() + n)
    }

    /// Ask the writer to finish and wait for it; the rows it committed.
    fn stop(mut self) -> miette::Result<u64> {
        std::fs::write(self.control.join("stop"), "").into_diagnostic()?;
        let status = self.child.wait().into_diagnostic()?;
        if !status.success() {
            return Err(miette!("the sample writer failed ({status})"));
        }
        Ok(self.committed())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::fs::write(self.control.join("stop"), "");
            let _ = self.child.wait();
        }
    }
}

/// The row count the writer reported at the newest freeze (scripts/db-freeze.sh).
/// The restored copies pass: SQLite's integrity check says `ok`, e2fsck
/// finds the file system clean, and the database holds exactly the orders
/// the writer had committed at the point's freeze. No freeze count found is
/// a failure too: the comparison would prove nothing.
fn restored_ok(integrity: &str, clean: bool, frozen: Option<u64>, orders: u64) -> bool {
    integrity == "ok" && clean && frozen == Some(orders)
}

fn last_freeze(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("run/db-writer/freezes")).ok()?;
    text.lines().last()?.trim().parse().ok()
}

fn say(text: &str) {
    println!("\n==> {text}");
}

/// Run one real `standby` command in the quickstart directory, echoing it.
fn step(exe: &Path, dir: &Path, args: &[&str]) -> miette::Result<()> {
    println!("\n$ standby {}", args.join(" "));
    let status = Command::new(exe)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("STANDBY_STATE_DIR", dir.join(".standby"))
        .status()
        .into_diagnostic()?;
    if status.success() {
        Ok(())
    } else {
        Err(miette!("`standby {}` failed ({status})", args.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restore_without_a_freeze_count_proves_nothing() {
        assert!(super::restored_ok("ok", true, Some(7), 7));
        assert!(!super::restored_ok("ok", true, None, 7), "no freeze count");
        assert!(!super::restored_ok("ok", true, Some(6), 7), "a lost order");
        assert!(!super::restored_ok("ok", false, Some(7), 7));
        assert!(!super::restored_ok(
            "*** in database main ***",
            true,
            Some(7),
            7
        ));
    }
}
