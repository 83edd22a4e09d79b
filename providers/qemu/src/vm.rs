//! Running a QEMU virtual machine standby can find and stop again.
//!
//! A VM lives in a directory (the site's run directory) as a handful of
//! files named after it: `NAME.qmp` (QMP socket), `NAME.qga` (guest-agent
//! socket), `NAME.serial.log` (the console), `NAME.pid` (pid and start
//! time, so a reused pid is never taken for the VM), `NAME.stderr`. QEMU
//! runs daemonized, in its own session, so it outlives the process that
//! started it and any standby process can stop it through the pid file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::accel::Accel;
use crate::error::{Error, Result};
use crate::qga::Agent;
use crate::qmp::Qmp;

/// An image format QEMU opens a disk with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// One disk of a VM, attached as a virtio-blk device in the order given
/// (the first is `/dev/vda` in a Linux guest).
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// The QEMU node name of the format node (letters, digits, `-`, `_`,
    /// `.`; starts with a letter): QMP commands and dirty bitmaps name it.
    pub node_name: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
}

/// How the VM boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`).
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
    /// Firmware (SeaBIOS) boots the first disk.
    Disk,
}

/// The id of the `tls-creds-x509` object a VM with [`RemoteQmp`] carries;
/// point exports over TLS ([`crate::cbt::ExportAt::Tls`]) name it too.
pub const TLS_CREDS_ID: &str = "sbtls0";

/// A second QMP monitor on TCP with TLS, for a standby on another host
/// (the local unix socket stays, for this host's own control), and
/// optionally the guest agent's chardev on TCP with TLS instead of its unix
/// socket. Clients reach both with [`crate::qmp::Qmp::connect_tls`] and
/// [`crate::qga::Agent::connect_tls`].
#[derive(Debug, Clone)]
pub struct RemoteQmp {
    /// Listen address, `host:port`.
    pub listen: String,
    /// The guest agent's listen address, `host:port`; None: its unix
    /// socket.
    pub agent_listen: Option<String>,
    /// QEMU's x509 directory: `ca-cert.pem`, `server-cert.pem`,
    /// `server-key.pem`.
    pub creds_dir: PathBuf,
    /// Require and verify client certificates.
    pub verify_peer: bool,
}

/// What to run. No network device is created.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// File-name-safe name: the files of the VM are named after it.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    pub cpus: u32,
    pub boot: Boot,
    pub disks: Vec<DiskSpec>,
    pub accel: Accel,
    pub remote_qmp: Option<RemoteQmp>,
}

/// What a recovered VM gets beyond [`VmSpec`] ([`Vm::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// A standard VGA display (no window): QMP `screendump` can take a
    /// screenshot of it.
    pub display: bool,
    /// TCP ports forwarded from `127.0.0.1:host` to the guest's `guest`
    /// port. Non-empty: user-mode networking with `restrict=on` (the guest
    /// reaches nothing outside, only these ports reach it); empty: no
    /// network device at all.
    pub forwards: Vec<Forward>,
}

/// One forwarded TCP port of [`Extras`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

/// A VM started by [`Vm::start`] or found by [`Vm::open`].
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub dir: PathBuf,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` when the VM was started.
    pub start_time: u64,
}

/// How [`Vm::stop`] ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// The guest powered off when the guest agent asked.
    GuestAgent,
    /// The guest powered off on the ACPI power button.
    Acpi,
    /// QEMU quit (QMP `quit`), closing its images cleanly (dirty bitmaps
    /// are stored), without a guest shutdown.
    Quit,
    /// SIGKILL.
    Killed,
}

/// The longest node name QEMU takes (its `node_name[32]`, NUL included).
pub const NODE_NAME_MAX: usize = 31;

fn valid_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.len() <= NODE_NAME_MAX
}

/// The state letter and start time of `pid`, or None when it does not exist.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // rest starts at field 3; start time is field 22.
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl Vm {
    pub fn qmp_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.qmp"))
    }
    pub fn agent_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.qga"))
    }
    pub fn serial_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.serial.log"))
    }
    pub fn pid_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.pid"))
    }

    /// Starts `spec` with its files in `dir` and returns once QEMU has
    /// initialised (daemonized). Errors: a name or node name QEMU would
    /// refuse, a VM of that name already running, QEMU's own error (its
    /// stderr's tail).
    pub fn start(spec: &VmSpec, dir: &Path) -> Result<Vm> {
        Vm::start_with(spec, &Extras::default(), dir)
    }

    /// [`Vm::start`] with a display and forwarded ports.
    pub fn start_with(spec: &VmSpec, extras: &Extras, dir: &Path) -> Result<Vm> {
        let vm_err = |detail: String| Error::Vm {
            name: spec.name.clone(),
            detail,
        };
        if !valid_name(&spec.name) {
            return Err(vm_err(
                "a VM name must start with a letter and hold only letters, digits, '-', '_', '.' (at most 31)".into(),
            ));
        }
        for d in &spec.disks {
            if !valid_name(&d.node_name) {
                return Err(vm_err(format!(
                    "disk node name {:?} must start with a letter and hold only letters, digits, '-', '_', '.' (at most 31)",
                    d.node_name
                )));
            }
        }
        fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        if let Some(vm) = Vm::open(&spec.name, dir)? {
            return Err(vm_err(format!(
                "it is already running (pid {}); stop it first",
                vm.pid
            )));
        }
        let qmp = Vm::qmp_path(dir, &spec.name);
        let qga = Vm::agent_path(dir, &spec.name);
        // sun_path holds 108 bytes.
        for s in [&qmp, &qga] {
            if s.as_os_str().len() >= 108 {
                return Err(vm_err(format!(
                    "socket path {} is longer than the 107 bytes a unix socket allows; use a shorter site root",
                    s.display()
                )));
            }
            let _ = fs::remove_file(s);
        }
        let serial = Vm::serial_path(dir, &spec.name);
        let qemu_pid = dir.join(format!("{}.qemu-pid", spec.name));
        let stderr_path = dir.join(format!("{}.stderr", spec.name));
        let _ = fs::remove_file(&qemu_pid);

        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &spec.name, "-nodefaults", "-no-user-config"])
            .args(["-machine", "pc", "-accel", spec.accel.as_str()])
            .args(["-display", "none", "-vga"])
            .arg(if extras.display { "std" } else { "none" })
            .arg("-nic")
            .arg(if extras.forwards.is_empty() {
                "none".to_string()
            } else {
                // restrict=on: the guest reaches neither the host nor any
                // network; only the forwarded ports reach the guest.
                let fwd: Vec<String> = extras
                    .forwards
                    .iter()
                    .map(|f| format!("hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
                    .collect();
                format!("user,model=virtio-net-pci,restrict=on,{}", fwd.join(","))
            })
            .args([
                "-m",
                &spec.memory_mib.to_string(),
                "-smp",
                &spec.cpus.to_string(),
            ]);
        match &spec.boot {
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                cmd.arg("-kernel").arg(kernel);
                if let Some(i) = initrd {
                    cmd.arg("-initrd").arg(i);
                }
                cmd.args(["-append", append]);
            }
            Boot::Disk => {
                cmd.args(["-boot", "c"]);
            }
        }
        // ttyS0: the console into the serial log; ttyS1: the guest agent.
        let host_port = |listen: &str| {
            listen
                .rsplit_once(':')
                .map(|(h, p)| (h.to_string(), p.to_string()))
                .ok_or_else(|| vm_err(format!("remote address {listen:?} is not host:port")))
        };
        let qga_chardev = match spec
            .remote_qmp
            .as_ref()
            .and_then(|r| r.agent_listen.as_ref())
        {
            Some(listen) => {
                let (host, port) = host_port(listen)?;
                format!(
                    "socket,id=qga0,host={host},port={port},server=on,wait=off,tls-creds={TLS_CREDS_ID}"
                )
            }
            None => format!(
                "socket,id=qga0,path={},server=on,wait=off",
                comma_escape(&qga)
            ),
        };
        if let Some(r) = &spec.remote_qmp {
            // Before the chardevs that name it.
            cmd.arg("-object").arg(format!(
                "tls-creds-x509,id={TLS_CREDS_ID},endpoint=server,dir={},verify-peer={}",
                comma_escape(&r.creds_dir),
                if r.verify_peer { "on" } else { "off" }
            ));
        }
        cmd.arg("-chardev")
            .arg(format!("file,id=con0,path={}", comma_escape(&serial)))
            .args(["-device", "isa-serial,chardev=con0"])
            .arg("-chardev")
            .arg(qga_chardev)
            .args(["-device", "isa-serial,chardev=qga0"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                comma_escape(&qmp)
            ))
            .args(["-mon", "chardev=qmp0,mode=control"]);
        if let Some(r) = &spec.remote_qmp {
            let (host, port) = host_port(&r.listen)?;
            cmd.arg("-chardev")
                .arg(format!(
                    "socket,id=qmp1,host={host},port={port},server=on,wait=off,tls-creds={TLS_CREDS_ID}"
                ))
                .args(["-mon", "chardev=qmp1,mode=control"]);
        }
        for d in &spec.disks {
            // JSON -blockdev: paths need no escaping.
            let bd = json!({
                "driver": d.format.as_str(),
                "node-name": d.node_name,
                "read-only": d.read_only,
                "file": {
                    "driver": "file",
                    "filename": d.path.to_string_lossy(),
                    "node-name": format!("{}-file", d.node_name),
                    "read-only": d.read_only,
                },
            });
            cmd.arg("-blockdev")
                .arg(bd.to_string())
                .arg("-device")
                .arg(format!(
                    "virtio-blk-pci,drive={},id={}-dev",
                    d.node_name, d.node_name
                ));
        }
        cmd.arg("-daemonize").arg("-pidfile").arg(&qemu_pid);
        // Like every child of standby: none of its secrets (vault keys,
        // sensitive variables, cloud keys) in QEMU's environment.
        standby_provider_core::command::isolate(&mut cmd);
        let stderr = fs::File::create(&stderr_path)
            .map_err(Error::io(format!("creating {}", stderr_path.display())))?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingTool {
                    tool: "qemu-system-x86_64".into(),
                    package: "qemu-system-x86".into(),
                },
                _ => Error::Io {
                    context: "running qemu-system-x86_64".into(),
                    source: e,
                },
            })?;
        if !status.success() {
            let tail = fs::read_to_string(&stderr_path).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(vm_err(format!("QEMU exited with {status}: {tail}")));
        }
        let pid: u32 = fs::read_to_string(&qemu_pid)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| vm_err(format!("QEMU left no pid in {}", qemu_pid.display())))?;
        let (_, start_time) = stat(pid)
            .ok_or_else(|| vm_err(format!("QEMU (pid {pid}) exited right after starting")))?;
        let vm = Vm {
            name: spec.name.clone(),
            dir: dir.to_path_buf(),
            pid,
            start_time,
        };
        vm.write_pid_file()?;
        Ok(vm)
    }

    /// Writes `NAME.pid` atomically (temp file, fsync, rename).
    fn write_pid_file(&self) -> Result<()> {
        let path = Vm::pid_path(&self.dir, &self.name);
        let tmp = path.with_extension("pid.tmp");
        let ctx = format!("writing {}", path.display());
        let mut f = fs::File::create(&tmp).map_err(Error::io(ctx.clone()))?;
        writeln!(f, "{} {}", self.pid, self.start_time).map_err(Error::io(ctx.clone()))?;
        f.sync_all().map_err(Error::io(ctx.clone()))?;
        fs::rename(&tmp, &path).map_err(Error::io(ctx))
    }

    /// The VM named `name` in `dir` if its pid file names a live QEMU
    /// (pid and start time match); None otherwise.
    pub fn open(name: &str, dir: &Path) -> Result<Option<Vm>> {
        let path = Vm::pid_path(dir, name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start_time))) = (it.next(), it.next()) else {
            return Err(Error::Vm {
                name: name.into(),
                detail: format!("{} does not hold 'PID START_TIME'", path.display()),
            });
        };
        let Ok(pid) = u32::try_from(pid) else {
            return Ok(None);
        };
        let vm = Vm {
            name: name.into(),
            dir: dir.to_path_buf(),
            pid,
            start_time,
        };
        Ok(vm.running().then_some(vm))
    }

    /// Whether this QEMU process still runs.
    pub fn running(&self) -> bool {
        if let Ok(p) = i32::try_from(self.pid) {
            let mut status = 0;
            // SAFETY: WNOHANG waitpid on a pid that may not be our child is harmless.
            unsafe {
                libc::waitpid(p, &mut status, libc::WNOHANG);
            }
        }
        matches!(stat(self.pid), Some((s, t)) if s != 'Z' && t == self.start_time)
    }

    /// Connects to the VM's QMP socket.
    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect_unix(
            &Vm::qmp_path(&self.dir, &self.name),
            Duration::from_secs(10),
        )
    }

    /// Connects to the VM's guest agent, waiting at most `timeout` for it to
    /// answer (a booting guest starts it late).
    pub fn agent(&self, timeout: Duration) -> Result<Agent> {
        Agent::connect_unix(&Vm::agent_path(&self.dir, &self.name), timeout)
    }

    /// [`Vm::agent`] that gives up as soon as `stop` says so (the user
    /// interrupted the run).
    pub fn agent_until(&self, timeout: Duration, stop: &dyn Fn() -> bool) -> Result<Agent> {
        Agent::connect_unix_until(&Vm::agent_path(&self.dir, &self.name), timeout, stop)
    }

    /// The serial console's text so far.
    pub fn serial(&self) -> String {
        fs::read_to_string(Vm::serial_path(&self.dir, &self.name)).unwrap_or_default()
    }

    /// Waits at most `timeout` for QEMU to exit; true if it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.running() {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops the VM: a guest-agent shutdown, else the ACPI power button,
    /// each given `grace`; then QMP `quit` (images closed cleanly, dirty
    /// bitmaps stored); then SIGKILL. Removes the pid file.
    pub fn stop(&self, grace: Duration) -> Result<Stopped> {
        let how = self.stop_inner(grace)?;
        let _ = fs::remove_file(Vm::pid_path(&self.dir, &self.name));
        Ok(how)
    }

    fn stop_inner(&self, grace: Duration) -> Result<Stopped> {
        if !self.running() {
            return Ok(Stopped::NotRunning);
        }
        if let Ok(mut a) = self.agent(Duration::from_secs(3))
            && a.shutdown().is_ok()
            && self.wait_exit(grace)
        {
            return Ok(Stopped::GuestAgent);
        }
        if let Ok(mut q) = self.qmp() {
            if q.system_powerdown().is_ok() && self.wait_exit(grace) {
                return Ok(Stopped::Acpi);
            }
            if q.quit().is_ok() && self.wait_exit(Duration::from_secs(10)) {
                return Ok(Stopped::Quit);
            }
        }
        self.kill()?;
        Ok(Stopped::Killed)
    }

    /// SIGKILL, then waits for the process to go.
    pub fn kill(&self) -> Result<()> {
        if !self.running() {
            return Ok(());
        }
        let Ok(p) = i32::try_from(self.pid) else {
            return Ok(());
        };
        // SAFETY: kill(2) on the pid we verified (start time) is ours.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
        if self.wait_exit(Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(Error::Vm {
                name: self.name.clone(),
                detail: format!("pid {} survived SIGKILL for 10 s", self.pid),
            })
        }
    }
}

/// QEMU's option syntax doubles a comma inside a value.
fn comma_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}
