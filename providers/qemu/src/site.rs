//! The `qemu` site provider at the receiving end: replicas are QEMU VMs.
//!
//! Layout under the site root (everything a run leaves is here, so another
//! standby process can stop or remove it):
//!
//! - test runs: `.standby-test/RUN_ID/` holds the restored images
//!   (`VM/DISK.raw`), the throw-away qcow2 overlays the VM boots from
//!   (`VM/DISK.overlay.qcow2`, backed read-only by the raw image, so the
//!   restored image is never written) and the VM's run files (`VM.pid`,
//!   `VM.qmp`, `VM.qga`, `VM.serial.log`, `VM.boot.json`, `VM.png`);
//!   `destroy` ends the VMs and removes the directory.
//! - failover runs: the raw image at the disk's path (a `.qcow2` path
//!   becomes `.raw`: restores write raw images), run files in
//!   `.standby-vms/`; the VM runs on a qcow2 wrapper whose data is that
//!   raw image ([`crate::wrapper`]), with a persistent dirty bitmap
//!   `standby-1` added before it first boots, so reprotect reads only what
//!   the VM wrote since. An instant failover boots on an overlay over the
//!   NBD export instead and ends on such a wrapper ([`crate::instant`]).
//! - failback: the machine's own disks at its own site, its run files in
//!   the site root (`NAME.qmp`, ... as the VMs standby runs there), so
//!   forward protection reaches it as before the failover.
//!
//! "Up" means the guest agent answers `guest-ping`; `start` returns then.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use standby_provider_core::{
    CheckOutcome, CommandCheck, DiskSpec, Evidence, GuestCheck, GuestProbe, MachineSpec, Mode,
    ProviderError, Run, SiteProvider,
};

use crate::accel;
use crate::vm::{self, Boot, DiskFormat, Extras, Forward, Vm, VmSpec};

/// The sandbox directory of test runs under the site root.
pub const TEST_DIR: &str = ".standby-test";
/// The run files of failed-over VMs under the site root.
pub const VMS_DIR: &str = ".standby-vms";
/// Console lines kept in the evidence.
const CONSOLE_LINES: usize = 20;

/// How to run one machine as a VM at this site.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// File-name-safe VM name (its run files are named after it).
    pub vm_name: String,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Kernel paths absolute.
    pub boot: Boot,
    /// `(disk name, QEMU node name)` in the machine's disk order (the
    /// first is `/dev/vda`).
    pub disks: Vec<(String, String)>,
    /// Forwarded ports (user-mode networking, restricted); empty: no NIC.
    pub forwards: Vec<Forward>,
    /// Set when this site is the machine's own: where its running VM is
    /// reached, for a planned failover's stop of the source.
    pub home: Option<Home>,
}

/// The sockets of a machine's VM at its own site (unix paths absolute, or
/// TCP with TLS on a remote hypervisor).
#[derive(Debug, Clone)]
pub struct Home {
    pub qmp: crate::endpoint::Endpoint,
    pub agent: Option<crate::endpoint::Endpoint>,
    /// Disk names whose home image is raw (the others are qcow2).
    pub raw: Vec<String>,
}

/// The provider; `machines` by machine address (`machine.db`).
pub struct QemuSite {
    machines: BTreeMap<String, VmSettings>,
    /// How long a guest gets to power off before QEMU is told to quit.
    pub grace: Duration,
}

/// What `start` recorded for `evidence` (another process may ask).
#[derive(Serialize, Deserialize)]
struct BootRecord {
    accelerator: String,
    reason: String,
    boot_seconds: f64,
    memory_mib: u64,
    cpus: u32,
}

fn err(action: &'static str, subject: &str, reason: impl std::fmt::Display) -> ProviderError {
    ProviderError::Action {
        action,
        subject: subject.to_string(),
        reason: reason.to_string(),
    }
}

fn site_root<'r>(run: &'r Run, action: &'static str) -> Result<&'r Path, ProviderError> {
    run.site_root
        .as_deref()
        .ok_or_else(|| err(action, &run.site, "a qemu site needs a root"))
}

/// Where the run's VM files live.
fn run_dir(root: &Path, run: &Run) -> PathBuf {
    match run.mode {
        Mode::Test => root.join(TEST_DIR).join(&run.run_id),
        Mode::Failover => root.join(VMS_DIR),
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a disk "path" is an NBD export (instant recovery).
pub fn is_nbd(image: &Path) -> bool {
    image.to_string_lossy().starts_with("nbd+unix://")
}

fn qemu_img(args: &[&std::ffi::OsStr], what: &str, name: &str) -> Result<(), ProviderError> {
    crate::wrapper::qemu_img(args, what).map_err(|e| err("start", name, e))
}

/// Creates (afresh) a qcow2 overlay at `overlay` backed read-only by
/// `image` (a raw file or an NBD export).
fn overlay(image: &Path, overlay: &Path, name: &str) -> Result<PathBuf, ProviderError> {
    if let Some(parent) = overlay.parent() {
        fs::create_dir_all(parent).map_err(|e| ProviderError::Io {
            context: format!("creating {}", parent.display()),
            source: e,
        })?;
    }
    let _ = fs::remove_file(overlay);
    let mut args: Vec<&std::ffi::OsStr> = ["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]
        .iter()
        .map(|a| a.as_ref())
        .collect();
    args.extend([image.as_os_str(), overlay.as_os_str()]);
    let what = format!("create of the overlay over {}", image.display());
    qemu_img(&args, &what, name)?;
    Ok(overlay.to_path_buf())
}

impl QemuSite {
    pub fn new(machines: BTreeMap<String, VmSettings>) -> QemuSite {
        QemuSite {
            machines,
            grace: Duration::from_secs(30),
        }
    }

    fn settings(&self, machine: &str, action: &'static str) -> Result<&VmSettings, ProviderError> {
        self.machines.get(machine).ok_or_else(|| {
            err(
                action,
                machine,
                "it has no vm block: only machines with one can run at a qemu site",
            )
        })
    }

    /// Where the run's VM files (pid, sockets, logs) are at this site.
    pub fn files_dir(&self, run: &Run) -> Result<PathBuf, ProviderError> {
        Ok(run_dir(site_root(run, "files_dir")?, run))
    }

    /// The file-name-safe VM name of `machine`.
    pub fn vm_name(&self, machine: &str) -> Result<String, ProviderError> {
        Ok(self.settings(machine, "vm_name")?.vm_name.clone())
    }

    /// Whether `machine`'s running VM still reads a disk from an NBD
    /// export (instant recovery before its copy completed).
    pub fn reads_exports(&self, run: &Run, machine: &str) -> Result<bool, ProviderError> {
        let v = self.vm(run, machine, "inspect")?;
        let mut q = v.qmp().map_err(|e| err("inspect", machine, e))?;
        crate::instant::uses_nbd(&mut q).map_err(|e| err("inspect", machine, e))
    }

    /// Instant recovery's background copy: mirrors each disk of
    /// `machine`'s running VM (booted on NBD-backed overlays) into
    /// `targets` (disk name -> final raw image, through its tracked
    /// wrapper), switches the VM onto the wrappers with the guest's writes
    /// since boot in their bitmaps, and closes the overlays; then removes
    /// the overlay files.
    /// `progress(disk, done, total)` in bytes; it stops the copy by
    /// returning false (the VM stays on its overlays). See
    /// [`crate::instant`].
    pub fn instant_copy(
        &self,
        run: &Run,
        machine: &str,
        targets: &BTreeMap<String, PathBuf>,
        timeout: Duration,
        progress: &mut dyn FnMut(&str, u64, u64) -> bool,
    ) -> Result<(), ProviderError> {
        let s = self.settings(machine, "copy")?;
        let v = self.vm(run, machine, "copy")?;
        let mut disks = Vec::new();
        let mut names = Vec::new();
        for (disk, node) in &s.disks {
            let target = targets
                .get(disk)
                .ok_or_else(|| err("copy", machine, format!("no target for disk {disk}")))?;
            disks.push(crate::instant::CopyDisk {
                node: node.clone(),
                target: target.clone(),
            });
            names.push(disk.clone());
        }
        let mut q = v.qmp().map_err(|e| err("copy", machine, e))?;
        crate::instant::copy(
            &mut q,
            &disks,
            Duration::from_millis(250),
            timeout,
            &mut |i, p| progress(&names[i], p.done, p.total),
        )
        .map_err(|e| err("copy", machine, e))?;
        if crate::instant::uses_nbd(&mut q).map_err(|e| err("copy", machine, e))? {
            return Err(err(
                "copy",
                machine,
                "QEMU still reads from an NBD export after the copy",
            ));
        }
        for disk in &names {
            let _ = fs::remove_file(v.dir.join(&s.vm_name).join(format!("{disk}.instant.qcow2")));
        }
        Ok(())
    }

    /// Where `machine`'s VM runs in this run: a failback (a failover-mode
    /// run at the machine's own site) starts it in the site root, where
    /// the VMs standby runs at home keep their files; else [`run_dir`].
    fn vm_dir(&self, root: &Path, run: &Run, s: &VmSettings) -> PathBuf {
        match (&s.home, run.mode) {
            (Some(_), Mode::Failover) => root.to_path_buf(),
            _ => run_dir(root, run),
        }
    }

    /// Shuts the guest of `machine`'s failed-over VM at this site down
    /// while QEMU stays, paused (as a planned failover does at home), so
    /// the final point of a failback is still read through its dirty
    /// bitmaps; [`QemuSite::quit_paused`] ends QEMU after it. No VM: false.
    pub fn pause_for_final(&self, run: &Run, machine: &str) -> Result<bool, ProviderError> {
        let s = self.settings(machine, "stop")?;
        let dir = run_dir(site_root(run, "stop")?, run);
        if Vm::open(&s.vm_name, &dir)
            .map_err(|e| err("stop", machine, e))?
            .is_none()
        {
            return Ok(false);
        }
        stop_at_home(&self.own_sockets(&dir, s), self.grace)
            .map_err(|e| err("stop", machine, e))?;
        Ok(true)
    }

    /// Quits the QEMU of `machine`'s VM at this site that
    /// [`QemuSite::pause_for_final`] left shut down (bitmaps stored).
    pub fn quit_paused(&self, run: &Run, machine: &str) -> Result<(), ProviderError> {
        let s = self.settings(machine, "stop")?;
        let dir = run_dir(site_root(run, "stop")?, run);
        let Some(v) = Vm::open(&s.vm_name, &dir).map_err(|e| err("stop", machine, e))? else {
            return Ok(());
        };
        quit_at_home(&self.own_sockets(&dir, s)).map_err(|e| err("stop", machine, e))?;
        if !v.wait_exit(Duration::from_secs(10)) {
            v.kill().map_err(|e| err("stop", machine, e))?;
        }
        let _ = fs::remove_file(Vm::pid_path(&dir, &s.vm_name));
        Ok(())
    }

    /// Ends a VM of `machine` that an earlier failback attempt started at
    /// its own site (QMP `quit`, else SIGKILL), so its images can be
    /// written; none running is nothing to do.
    pub fn end_home_vm(&self, run: &Run, machine: &str) -> Result<(), ProviderError> {
        let s = self.settings(machine, "stop")?;
        let root = site_root(run, "stop")?;
        if let Some(v) = Vm::open(&s.vm_name, root).map_err(|e| err("stop", machine, e))? {
            let quit = v.qmp().and_then(|mut q| q.quit());
            if quit.is_err() || !v.wait_exit(Duration::from_secs(10)) {
                v.kill().map_err(|e| err("stop", machine, e))?;
            }
            let _ = fs::remove_file(Vm::pid_path(root, &s.vm_name));
            return Ok(());
        }
        end_orphan(root, &s.vm_name).map_err(|e| err("stop", machine, e))
    }

    fn own_sockets(&self, dir: &Path, s: &VmSettings) -> Home {
        Home {
            qmp: crate::endpoint::Endpoint::Unix(Vm::qmp_path(dir, &s.vm_name)),
            agent: Some(crate::endpoint::Endpoint::Unix(Vm::agent_path(
                dir, &s.vm_name,
            ))),
            raw: Vec::new(),
        }
    }

    /// The VM of `machine` in this run, if it runs.
    fn vm(&self, run: &Run, machine: &str, action: &'static str) -> Result<Vm, ProviderError> {
        let s = self.settings(machine, action)?;
        let dir = self.vm_dir(site_root(run, action)?, run, s);
        Vm::open(&s.vm_name, &dir)
            .map_err(|e| err(action, machine, e))?
            .ok_or_else(|| err(action, machine, "its VM does not run"))
    }
}

impl SiteProvider for QemuSite {
    fn prepare(&self, run: &Run) -> Result<(), ProviderError> {
        let root = site_root(run, "prepare")?;
        let dir = run_dir(root, run);
        fs::create_dir_all(&dir).map_err(|e| ProviderError::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })
    }

    fn disk_target(
        &self,
        run: &Run,
        machine: &str,
        disk: &DiskSpec,
    ) -> Result<PathBuf, ProviderError> {
        let root = site_root(run, "disk_target")?;
        let s = self.settings(machine, "disk_target")?;
        let path = match run.mode {
            Mode::Test => run_dir(root, run)
                .join(&s.vm_name)
                .join(format!("{}.raw", disk.name)),
            Mode::Failover => {
                let p = if disk.path.extension().is_some_and(|e| e == "qcow2") {
                    disk.path.with_extension("raw")
                } else {
                    disk.path.clone()
                };
                root.join(p)
            }
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| ProviderError::Io {
                context: format!("creating {}", parent.display()),
                source: e,
            })?;
        }
        Ok(path)
    }

    fn start(
        &self,
        run: &Run,
        machine: &MachineSpec,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let name = machine.machine.as_str();
        let s = self.settings(name, "start")?;
        let dir = self.vm_dir(site_root(run, "start")?, run, s);
        let mut disks = Vec::new();
        for (disk, node) in &s.disks {
            let image = machine
                .disks
                .get(disk)
                .ok_or_else(|| err("start", name, format!("disk {disk} was not restored")))?;
            let (path, format) = match run.mode {
                // A throw-away overlay: the guest's writes land there and
                // the restored image stays bit-for-bit as restored.
                Mode::Test => (
                    overlay(
                        image,
                        &dir.join(&s.vm_name).join(format!("{disk}.overlay.qcow2")),
                        name,
                    )?,
                    DiskFormat::Qcow2,
                ),
                // Instant recovery: the disk is still in the vault, served
                // over NBD; the VM runs on an overlay until
                // `instant_copy` moves it to its final image.
                // Its bitmap counts the guest's writes from boot; the copy
                // hands them to the wrapper it ends on.
                Mode::Failover if is_nbd(image) => {
                    let o = overlay(
                        image,
                        &dir.join(&s.vm_name).join(format!("{disk}.instant.qcow2")),
                        name,
                    )?;
                    crate::wrapper::add_bitmap(&o).map_err(|e| err("start", name, e))?;
                    (o, DiskFormat::Qcow2)
                }
                // Failback: the machine's own image at its own site.
                Mode::Failover if s.home.is_some() => (
                    image.clone(),
                    if s.home.as_ref().is_some_and(|h| h.raw.contains(disk)) {
                        DiskFormat::Raw
                    } else {
                        DiskFormat::Qcow2
                    },
                ),
                // A failover: a fresh tracked wrapper over the restored raw
                // image, so reprotect reads only what the VM writes.
                Mode::Failover => {
                    let w = crate::wrapper::path(image);
                    crate::wrapper::make(image, &w, true).map_err(|e| err("start", name, e))?;
                    (w, DiskFormat::Qcow2)
                }
            };
            // An instant VM's overlay leaves the disk's own node name to
            // the wrapper it ends on.
            let node_name = if run.mode == Mode::Failover && is_nbd(image) {
                crate::instant::overlay_node(node)
            } else {
                node.clone()
            };
            disks.push(vm::DiskSpec {
                node_name,
                path,
                format,
                read_only: false,
            });
        }
        let choice = match &s.boot {
            Boot::Kernel { kernel, .. } => accel::probe(kernel),
            Boot::Disk => accel::Choice {
                accel: accel::Accel::Tcg,
                reason: "firmware boot: no kernel to probe KVM with".into(),
            },
        };
        let spec = VmSpec {
            name: s.vm_name.clone(),
            memory_mib: s.memory_mib,
            cpus: s.cpus,
            boot: s.boot.clone(),
            disks,
            accel: choice.accel,
            remote_qmp: None,
        };
        let extras = Extras {
            display: true,
            forwards: s.forwards.clone(),
        };
        let started = Instant::now();
        let v = Vm::start_with(&spec, &extras, &dir).map_err(|e| err("start", name, e))?;
        let answered = v
            .agent_until(timeout, &|| run.interrupt.is_set())
            .and_then(|mut a| a.ping())
            .map_err(|e| {
                let console = v.serial();
                let tail = last_lines(&console, 5).join("\n");
                err(
                    "start",
                    name,
                    format!("the guest agent did not answer: {e}; console's last lines:\n{tail}"),
                )
            });
        if let Err(e) = answered {
            let _ = v.kill();
            return Err(e);
        }
        let record = BootRecord {
            accelerator: choice.accel.as_str().to_string(),
            reason: choice.reason,
            boot_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            memory_mib: s.memory_mib,
            cpus: s.cpus,
        };
        let path = dir.join(format!("{}.boot.json", s.vm_name));
        let json = serde_json::to_vec(&record).map_err(|e| err("start", name, e))?;
        fs::write(&path, json).map_err(|e| ProviderError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })
    }

    /// A VM runs in the same place for every failover run at a site (its
    /// files are not per run): taking it over is finding it running.
    fn adopt(&self, earlier: &Run, run: &Run, machine: &str) -> Result<bool, ProviderError> {
        if run.mode != Mode::Failover || earlier.mode != Mode::Failover {
            return Ok(false);
        }
        let s = self.settings(machine, "adopt")?;
        let dir = self.vm_dir(site_root(run, "adopt")?, run, s);
        let Some(v) = Vm::open(&s.vm_name, &dir)
            .map_err(|e| err("adopt", machine, e))?
            .filter(|v| v.running())
        else {
            return Ok(false);
        };
        // An instant copy killed mid-switch left the guest paused: finish
        // the hand-over of its writes' count and resume it before its
        // checks run again.
        let nodes: Vec<String> = s.disks.iter().map(|(_, n)| n.clone()).collect();
        v.qmp()
            .and_then(|mut q| crate::instant::settle_switch(&mut q, &nodes))
            .map_err(|e| err("adopt", machine, e))?;
        Ok(true)
    }

    fn runs(&self, run: &Run, machine: &str) -> Result<Option<bool>, ProviderError> {
        let s = self.settings(machine, "inspect")?;
        let dir = self.vm_dir(site_root(run, "inspect")?, run, s);
        Ok(Some(
            Vm::open(&s.vm_name, &dir)
                .map_err(|e| err("inspect", machine, e))?
                .is_some_and(|v| v.running()),
        ))
    }

    fn stop(&self, run: &Run, machine: &str) -> Result<(), ProviderError> {
        let s = self.settings(machine, "stop")?;
        let dir = run_dir(site_root(run, "stop")?, run);
        if let Some(v) = Vm::open(&s.vm_name, &dir).map_err(|e| err("stop", machine, e))? {
            // Paused by `pause_for_final`: the guest is down, and QEMU
            // stays until the final point is read.
            if run.mode == Mode::Failover
                && v.qmp()
                    .and_then(|mut q| q.status())
                    .is_ok_and(|st| st == "shutdown")
            {
                return Ok(());
            }
            v.stop(self.grace).map_err(|e| err("stop", machine, e))?;
            return Ok(());
        }
        match &s.home {
            Some(home) if run.mode == Mode::Failover => {
                stop_at_home(home, self.grace).map_err(|e| err("stop", machine, e))
            }
            _ => Ok(()),
        }
    }

    fn check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &CommandCheck,
    ) -> Result<CheckOutcome, ProviderError> {
        // Host-side command checks run as at a local site, with the
        // restored images in STANDBY_DISK_*.
        let Some(argv0) = check.command.first() else {
            return Ok(CheckOutcome {
                passed: false,
                detail: "the check command is empty".into(),
            });
        };
        use standby_provider_core::command;
        let mut cmd = Command::new(command::program(argv0, &run.config_root));
        cmd.args(&check.command[1..])
            .current_dir(&run.config_root)
            .envs(machine.env(run));
        let f = match command::run(cmd, None, check.timeout) {
            Ok(f) => f,
            Err(e) => {
                return Ok(CheckOutcome {
                    passed: false,
                    detail: format!("could not run {argv0:?}: {e}"),
                });
            }
        };
        let out = String::from_utf8_lossy(&f.stdout).trim().to_string();
        Ok(judge(
            f.success(),
            &f.exit_text(),
            &out,
            &command::tail(&f.stderr, 10),
            check.expect.as_deref(),
        ))
    }

    fn guest_check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &GuestCheck,
    ) -> Result<CheckOutcome, ProviderError> {
        let name = machine.machine.as_str();
        let v = self.vm(run, name, "guest check")?;
        match &check.probe {
            GuestProbe::Exec { command, expect } => {
                let Some((path, args)) = command.split_first() else {
                    return Ok(CheckOutcome {
                        passed: false,
                        detail: "the guest command is empty".into(),
                    });
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let r = v
                    .agent(Duration::from_secs(10).min(check.timeout))
                    .and_then(|mut a| {
                        a.set_timeout(check.timeout);
                        a.exec(path, &args, check.timeout)
                    });
                Ok(match r {
                    Err(e) => CheckOutcome {
                        passed: false,
                        detail: format!("guest-exec {path}: {e}"),
                    },
                    Ok(o) => judge(
                        o.exit_code == 0,
                        &format!("exit code {}", o.exit_code),
                        String::from_utf8_lossy(&o.stdout).trim(),
                        &tail_text(&String::from_utf8_lossy(&o.stderr), 10),
                        expect.as_deref(),
                    ),
                })
            }
            GuestProbe::Console { pattern } => {
                let re = regex::Regex::new(pattern)
                    .map_err(|e| err("console check", name, format!("pattern {pattern:?}: {e}")))?;
                let console = v.serial();
                Ok(match console.lines().find(|l| re.is_match(l)) {
                    Some(line) => CheckOutcome {
                        passed: true,
                        detail: format!("console line: {}", line.trim_end()),
                    },
                    None => CheckOutcome {
                        passed: false,
                        detail: format!(
                            "no console line matches {pattern:?}; last lines:\n{}",
                            last_lines(&console, 5).join("\n")
                        ),
                    },
                })
            }
        }
    }

    fn evidence(&self, run: &Run, machine: &str) -> Result<Option<Evidence>, ProviderError> {
        let v = self.vm(run, machine, "evidence")?;
        let boot: Option<BootRecord> = fs::read(v.dir.join(format!("{}.boot.json", v.name)))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let console = fs::read(Vm::serial_path(&v.dir, &v.name)).unwrap_or_default();
        let png_path = v.dir.join(format!("{}.png", v.name));
        let _ = fs::remove_file(&png_path);
        let shot = v.qmp().and_then(|mut q| {
            q.execute_value(
                "screendump",
                serde_json::json!({ "filename": png_path.to_string_lossy(), "format": "png" }),
            )
        });
        let (screenshot_png, screenshot_error) = match shot {
            Ok(_) => match fs::read(&png_path) {
                Ok(b) => (Some(b), None),
                Err(e) => (None, Some(format!("reading {}: {e}", png_path.display()))),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Some(Evidence {
            accelerator: boot
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |b| b.accelerator.clone()),
            accelerator_reason: boot.as_ref().map(|b| b.reason.clone()).unwrap_or_default(),
            memory_mib: boot.as_ref().map_or(0, |b| b.memory_mib),
            cpus: boot.as_ref().map_or(0, |b| b.cpus),
            boot_seconds: boot.as_ref().map(|b| b.boot_seconds),
            console_tail: last_lines(&String::from_utf8_lossy(&console), CONSOLE_LINES),
            console_sha256: sha256_hex(&console),
            screenshot_png,
            screenshot_error,
        }))
    }

    fn destroy(&self, run: &Run) -> Result<(), ProviderError> {
        let root = site_root(run, "destroy")?;
        if run.mode == Mode::Failover {
            // Failed-over VMs and their images are production: a failover
            // is ended by failback, not by removing them.
            return Ok(());
        }
        let dir = run_dir(root, run);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ProviderError::Io {
                    context: format!("reading {}", dir.display()),
                    source: e,
                });
            }
        };
        // A test VM runs on throw-away overlays: QMP quit (or a kill) is
        // enough; nothing of it is kept. An instant run's NBD exports
        // (`VM.DISK.nbd.pid`) are no VMs: each ends by itself once the
        // directory, and with it its socket, is removed below.
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid")
                && let Some(name) = p.file_stem().and_then(|s| s.to_str())
                && !name.ends_with(".nbd")
                && let Some(v) = Vm::open(name, &dir).map_err(|e| err("destroy", &run.site, e))?
            {
                let quit = v.qmp().and_then(|mut q| q.quit());
                if quit.is_err() || !v.wait_exit(Duration::from_secs(10)) {
                    v.kill().map_err(|e| err("destroy", &run.site, e))?;
                }
            }
        }
        fs::remove_dir_all(&dir).map_err(|e| ProviderError::Io {
            context: format!("removing {}", dir.display()),
            source: e,
        })?;
        let _ = fs::remove_dir(root.join(TEST_DIR));
        Ok(())
    }
}

/// Ends a QEMU of VM `name` in `dir` that has no pid file of ours: one
/// a killed `start` left between QEMU daemonizing and standby writing
/// `NAME.pid`. Found by its monitor (`NAME.qmp` answering): QMP `quit`,
/// else SIGKILL of the pid QEMU wrote (`NAME.qemu-pid`) when its command
/// line names that monitor. Nothing answering is nothing to do.
fn end_orphan(dir: &Path, name: &str) -> crate::error::Result<()> {
    let qmp = Vm::qmp_path(dir, name);
    let Ok(mut q) = crate::qmp::Qmp::connect_unix(&qmp, Duration::from_secs(2)) else {
        return Ok(());
    };
    let _ = q.quit();
    drop(q);
    let pid = fs::read_to_string(dir.join(format!("{name}.qemu-pid")))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let ours = |pid: i32| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*qmp.to_string_lossy()))
    };
    let answers = || crate::qmp::Qmp::connect_unix(&qmp, Duration::from_millis(200)).is_ok();
    let start = Instant::now();
    while pid.is_some_and(ours) || (pid.is_none() && answers()) {
        if start.elapsed() > Duration::from_secs(10) {
            if let Some(p) = pid {
                // SAFETY: a pid whose command line names this VM's monitor.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    while pid.is_some_and(ours) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(crate::Error::Vm {
                name: name.into(),
                detail: "a QEMU left without its pid file survived QMP quit and SIGKILL".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops the source VM of a planned failover: makes QEMU pause instead of
/// exiting when the guest powers off (QMP `set-action shutdown=pause`),
/// asks the guest to shut down (agent, else ACPI) and waits for it. The
/// guest's file systems are closed cleanly and nothing writes any more,
/// while QEMU keeps its images open, so the final point is still read
/// through changed-block tracking; [`quit_at_home`] ends QEMU after it.
/// No VM answering, or one already shut down: nothing to do.
fn stop_at_home(home: &Home, grace: Duration) -> crate::error::Result<()> {
    if !home.qmp.listening() {
        return Ok(());
    }
    let Ok(mut q) = home.qmp.qmp(Duration::from_secs(5)) else {
        return Ok(());
    };
    if q.status()? == "shutdown" {
        return Ok(());
    }
    q.execute_value("set-action", serde_json::json!({ "shutdown": "pause" }))?;
    // The agent's connection stays open while the guest shuts down: QEMU
    // may drop a request whose client is gone before the guest read it.
    let agent = home.agent.as_ref().and_then(|a| {
        let mut a = a.agent(Duration::from_secs(5)).ok()?;
        a.shutdown().ok()?;
        Some(a)
    });
    let by_agent = agent.is_some();
    if !by_agent {
        q.system_powerdown()?;
    }
    let start = Instant::now();
    loop {
        if q.status()? == "shutdown" {
            return Ok(());
        }
        if start.elapsed() > grace {
            return Err(crate::Error::Timeout {
                what: format!(
                    "the guest at {} to shut down (asked through {})",
                    home.qmp,
                    if by_agent { "the guest agent" } else { "ACPI" }
                ),
                seconds: grace.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Quits the QEMU of a source VM that [`stop_at_home`] left shut down
/// (after the final point was taken); a VM still running is never quit,
/// and no VM answering is nothing to do.
pub fn quit_at_home(home: &Home) -> crate::error::Result<()> {
    if !home.qmp.listening() {
        return Ok(());
    }
    let Ok(mut q) = home.qmp.qmp(Duration::from_secs(5)) else {
        return Ok(());
    };
    if q.status()? != "shutdown" {
        return Ok(());
    }
    q.quit()?;
    let start = Instant::now();
    while home.qmp.qmp(Duration::from_millis(200)).is_ok() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(crate::Error::Timeout {
                what: format!("QEMU at {} to quit", home.qmp),
                seconds: 10.0,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A check's outcome from its exit, stdout, stderr tail and `expect`.
fn judge(ok: bool, exit: &str, stdout: &str, stderr: &str, expect: Option<&str>) -> CheckOutcome {
    let mut passed = ok;
    let mut detail = exit.to_string();
    if let (true, Some(want)) = (passed, expect)
        && stdout != want.trim()
    {
        passed = false;
        detail.push_str(&format!(", expected output {want:?}"));
    }
    if !stdout.is_empty() {
        detail.push_str("\nstdout:\n");
        detail.push_str(&tail_text(stdout, 20));
    }
    if !stderr.is_empty() {
        detail.push_str("\nstderr:\n");
        detail.push_str(stderr);
    }
    CheckOutcome { passed, detail }
}

fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

fn tail_text(text: &str, n: usize) -> String {
    last_lines(text, n).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn expected_output_is_compared_trimmed() {
        assert!(judge(true, "exit code 0", "ok", "", Some("ok\n")).passed);
        let o = judge(true, "exit code 0", "3", "", Some("4"));
        assert!(!o.passed);
        assert!(o.detail.contains("expected output \"4\""), "{}", o.detail);
        assert!(!judge(false, "exit code 1", "", "boom", None).passed);
    }
}
