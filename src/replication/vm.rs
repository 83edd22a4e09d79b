//! The source kind beside disk files: a running QEMU VM read through
//! changed-block tracking (`standby_provider_qemu::cbt`).
//!
//! Per point, for the VM targets of a batch (a consistency group's VMs
//! together): tracking is enabled where it is not yet (a first point reads
//! every allocated extent), leftovers of a killed run are swept (older
//! bitmap generations merged into the newest: nothing lost), then
//! `cbt::begin_group` freezes every guest that takes app-consistent points,
//! runs one QMP transaction per VM (next bitmap generation, current one
//! disabled, a fleecing point-in-time view), and thaws. Each disk is then
//! read over NBD: only its dirty extents (blocks outside them keep the
//! previous point's hashes), or, when tracking cannot be trusted, the whole
//! view compared by hash as for files (a *fallback*, with its reason). The
//! pipeline, packs and manifests are those of every other point. Once the
//! manifests are in the vault the old generation is deleted (commit); on
//! any error it is merged into the new one (abort).
//!
//! What tracking is trusted against is kept per disk next to the block-hash
//! cache (`CACHE/VAULT/MACHINE/DISK.cbt.json`): the point the bitmap counts
//! from, the disk's size, its image file and the host. A missing or
//! different record, an inconsistent or missing bitmap (QEMU killed, VM
//! restarted on a raw disk), a resized disk or another image/host makes
//! the point a fallback.

use super::capture::{self, Chunk, ChunkSource, Hashes, Sink};
use super::{ReplicationError, Target, ctk};
use crate::model::VmSocket;
use crate::vault::manifest::{BLOCK, Cbt, CbtDisk};
use serde::{Deserialize, Serialize};
use standby_provider_qemu::cbt::{self, Change, Member, Point};
use standby_provider_qemu::endpoint::Endpoint;
use standby_provider_qemu::nbd;
use standby_provider_qemu::offline;
use standby_provider_qemu::qga::Agent;
use standby_provider_qemu::qmp::Qmp;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::tls::TlsConfig;
use standby_provider_qemu::vm::DiskFormat;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How standby reaches one VM (a target's `vm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTarget {
    /// QMP: a unix socket here, or TCP with TLS on the hypervisor.
    pub qmp: Endpoint,
    /// Guest-agent socket: set when points freeze the guest.
    pub agent: Option<Endpoint>,
    /// QEMU node names, one per disk of the target, in its disk order.
    pub nodes: Vec<String>,
    /// Each disk's image format as the configuration declares it (never
    /// probed: a raw guest disk can look like a qcow2 header), for
    /// opening the images of a VM that does not run.
    pub formats: Vec<DiskFormat>,
    /// A VM a failover started: each (raw) disk runs under its tracked
    /// qcow2 wrapper (`standby_provider_qemu::wrapper`), through which a VM
    /// that does not run is read, so its bitmap still says what changed.
    pub wrapped: bool,
    /// Fleece images and the NBD socket of open points: at the site, or
    /// the `work_dir` on a hypervisor reached over TCP.
    pub work: PathBuf,
    /// Exports over TCP with TLS instead of the unix socket.
    pub export_tls: Option<TlsExport>,
}

/// Where QEMU exports a point over TLS and how standby verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsExport {
    pub host: String,
    pub port: u16,
    /// QEMU's x509 directory (absolute: QEMU opens it).
    pub creds_dir: PathBuf,
    pub ca: PathBuf,
    pub server_name: String,
    /// The certificate and key standby presents: QEMU's server verifies
    /// its peers (`verify-peer=on`) when set.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The id of the `tls-creds-x509` object standby adds to a VM for exports.
const EXPORT_CREDS_ID: &str = "sbtls-nbd";

/// Adds the VM's `tls-creds-x509` object for exports, or replaces one
/// whose `verify-peer` differs from what `e` asks (a client certificate
/// added to the configuration takes effect at the next point).
fn ensure_creds(qmp: &mut Qmp, e: &TlsExport) -> Result<(), standby_provider_qemu::Error> {
    let verify = e.client.is_some();
    let have = qmp.execute_value("qom-list", serde_json::json!({ "path": "/objects" }))?;
    let exists = have
        .as_array()
        .is_some_and(|a| a.iter().any(|o| o["name"] == EXPORT_CREDS_ID));
    if exists {
        let path = format!("/objects/{EXPORT_CREDS_ID}");
        let now = qmp.execute_value(
            "qom-get",
            serde_json::json!({ "path": path, "property": "verify-peer" }),
        )?;
        if now.as_bool() == Some(verify) {
            return Ok(());
        }
        qmp.execute_value("object-del", serde_json::json!({ "id": EXPORT_CREDS_ID }))?;
    }
    qmp.execute_value(
        "object-add",
        serde_json::json!({
            "qom-type": "tls-creds-x509",
            "id": EXPORT_CREDS_ID,
            "dir": e.creds_dir.to_string_lossy(),
            "endpoint": "server",
            "verify-peer": verify,
        }),
    )?;
    Ok(())
}

/// A file-name-safe name for the VM of `machine` (`machine.db["a b"]` ->
/// `db-a_b`): its run files are named after it.
pub fn vm_name(machine: &str) -> String {
    let m = machine.strip_prefix("machine.").unwrap_or(machine);
    let mut out: String = m
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            '[' => '-',
            _ => '_',
        })
        .collect();
    out = out.trim_end_matches('_').to_string();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert(0, 'm');
    }
    out.truncate(31);
    out
}

/// Where `machine`'s VM is reached at its site: its `vm` block's sockets
/// (unix paths against `site_root`, or TCP with its `tls`), else those of
/// the VM standby runs there (`ROOT/NAME.qmp`, `ROOT/NAME.qga`); no agent
/// when QMP is given without one.
pub fn endpoints(
    machine: &crate::model::Machine,
    vm: &crate::model::Vm,
    site_root: &Path,
) -> (Endpoint, Option<Endpoint>) {
    // QEMU resolves paths against its own working directory.
    let abs = std::path::absolute(site_root);
    let site_root = abs.as_deref().unwrap_or(site_root);
    let name = vm_name(&machine.addr.to_string());
    let tls = vm.tls.as_ref().map(|t| TlsConfig {
        ca: site_root.join(&t.ca),
        server_name: t.server_name.clone(),
        client: t
            .client
            .as_ref()
            .map(|(c, k)| (site_root.join(c), site_root.join(k))),
    });
    // Validation makes sure a TCP socket has its tls block.
    let endpoint = |s: &VmSocket| match (s, &tls) {
        (VmSocket::Tcp(addr), Some(tls)) => Endpoint::Tls {
            addr: addr.clone(),
            tls: tls.clone(),
        },
        (VmSocket::Tcp(addr), None) => Endpoint::Unix(PathBuf::from(addr)),
        (VmSocket::Path(p), _) => Endpoint::Unix(site_root.join(p)),
    };
    let qmp = vm
        .qmp
        .as_ref()
        .map(endpoint)
        .unwrap_or_else(|| Endpoint::Unix(site_root.join(format!("{name}.qmp"))));
    let agent = vm.agent.as_ref().map(endpoint).or_else(|| {
        vm.qmp
            .is_none()
            .then(|| Endpoint::Unix(site_root.join(format!("{name}.qga"))))
    });
    (qmp, agent)
}

impl VmTarget {
    /// The VM a failover started for `machine` at a qemu site whose run
    /// files are in `vms_dir` (`ROOT/.standby-vms`): reverse protection
    /// reads it through its own QMP/agent sockets there, as the source side
    /// does at home; fleece images under `ROOT/.standby-cbt/NAME`.
    pub fn failed_over(
        machine: &crate::model::Machine,
        vm: &crate::model::Vm,
        site_root: &Path,
        vms_dir: &Path,
    ) -> VmTarget {
        let abs = std::path::absolute(site_root);
        let site_root = abs.as_deref().unwrap_or(site_root);
        let abs = std::path::absolute(vms_dir);
        let vms_dir = abs.as_deref().unwrap_or(vms_dir);
        let name = vm_name(&machine.addr.to_string());
        let mut t = VmTarget::from_model(machine, vm, site_root);
        t.qmp = Endpoint::Unix(vms_dir.join(format!("{name}.qmp")));
        t.agent = vm
            .fsfreeze
            .then(|| Endpoint::Unix(vms_dir.join(format!("{name}.qga"))));
        t.work = site_root.join(".standby-cbt").join(&name);
        t.export_tls = None;
        // Its disks are the raw images the failover restored, each under
        // its tracked wrapper.
        t.formats = vec![DiskFormat::Raw; t.nodes.len()];
        t.wrapped = true;
        t
    }

    /// From the model: sockets resolve against `site_root`; without them,
    /// the VM standby runs there (`ROOT/NAME.qmp`, `ROOT/NAME.qga`).
    pub fn from_model(
        machine: &crate::model::Machine,
        vm: &crate::model::Vm,
        site_root: &Path,
    ) -> VmTarget {
        // QEMU resolves paths against its own working directory.
        let abs = std::path::absolute(site_root);
        let site_root = abs.as_deref().unwrap_or(site_root);
        let name = vm_name(&machine.addr.to_string());
        let (qmp, agent) = endpoints(machine, vm, site_root);
        let work = match (&vm.work_dir, qmp.is_local()) {
            // QEMU cannot make directories: the user's, as given.
            (Some(w), false) => w.clone(),
            _ => site_root.join(".standby-cbt").join(&name),
        };
        VmTarget {
            qmp,
            agent: agent.filter(|_| vm.fsfreeze),
            nodes: machine
                .disks
                .iter()
                .map(|d| {
                    vm.disks
                        .iter()
                        .find(|v| v.name == d.name)
                        .map_or_else(|| d.name.clone(), |v| v.node_name.clone())
                })
                .collect(),
            formats: machine
                .disks
                .iter()
                .map(|d| match vm.disks.iter().find(|v| v.name == d.name) {
                    Some(v) if v.format == "qcow2" => DiskFormat::Qcow2,
                    _ => DiskFormat::Raw,
                })
                .collect(),
            work,
            wrapped: false,
            export_tls: vm.export_tls.as_ref().and_then(|e| {
                let (host, port) = e.listen.rsplit_once(':')?;
                Some(TlsExport {
                    host: host.to_string(),
                    port: port.parse().ok()?,
                    creds_dir: site_root.join(&e.creds_dir),
                    ca: site_root.join(&e.ca),
                    server_name: e.server_name.clone(),
                    client: e
                        .client
                        .as_ref()
                        .map(|(c, k)| (site_root.join(c), site_root.join(k))),
                })
            }),
        }
    }
}

/// What tracking is trusted against, per disk (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The point the bitmap counts changes from (hex id).
    pub point: String,
    /// The disk's size in bytes.
    pub size: u64,
    /// The image file as QEMU names it (the path it was opened with).
    pub image: String,
    pub host: String,
}

fn record_path(cache: &Path, vault_id: &str, machine: &str, disk: &str) -> PathBuf {
    ctk::path(cache, vault_id, machine, disk).with_extension("cbt.json")
}

/// Where a failover keeps the record it replaced (the machine's own
/// site's: what its home bitmap counts from), for failback.
fn before_path(cache: &Path, vault_id: &str, machine: &str, disk: &str) -> PathBuf {
    ctk::path(cache, vault_id, machine, disk).with_extension("cbt.before.json")
}

fn load_record(p: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// A failover booted `machine`'s VM on `image` (a fresh tracked wrapper
/// over `disk` restored from `point`, `size` bytes): its record says the
/// bitmap counts from that point. A record of another image (the machine's
/// own site's) is kept as [`record_before`] says, once.
pub fn record_restored(
    cache: &Path,
    vault_id: &str,
    machine: &str,
    disk: &str,
    point: &crate::vault::Id,
    size: u64,
    image: &Path,
) -> std::io::Result<()> {
    let p = record_path(cache, vault_id, machine, disk);
    let image = image.to_string_lossy().into_owned();
    if let Some(old) = load_record(&p)
        && old.image != image
    {
        save_record(&before_path(cache, vault_id, machine, disk), &old)?;
    }
    save_record(
        &p,
        &Record {
            point: point.hex(),
            size,
            image,
            host: host(),
        },
    )
}

/// The record a failover replaced: what the machine's own disk's bitmap
/// counts from (None: no failover kept one).
pub fn record_before(cache: &Path, vault_id: &str, machine: &str, disk: &str) -> Option<Record> {
    load_record(&before_path(cache, vault_id, machine, disk))
}

/// The record tracking counts from now for `disk` of `machine`.
pub fn record_now(cache: &Path, vault_id: &str, machine: &str, disk: &str) -> Option<Record> {
    load_record(&record_path(cache, vault_id, machine, disk))
}

/// After failback wrote `disk` of `machine` (its own `image`) to `point`:
/// its bitmap counts from there (the writes failback made are marked in
/// it too, which only costs their re-reading). The kept record stays: a
/// rerun of a failback cut short still knows the image held the point it
/// left with outside its bitmap's dirty extents (the next failover
/// replaces it).
pub fn record_home(
    cache: &Path,
    vault_id: &str,
    machine: &str,
    disk: &str,
    point: &crate::vault::Id,
    size: u64,
    image: &Path,
) -> std::io::Result<()> {
    save_record(
        &record_path(cache, vault_id, machine, disk),
        &Record {
            point: point.hex(),
            size,
            image: image.to_string_lossy().into_owned(),
            host: host(),
        },
    )
}

fn save_record(p: &Path, r: &Record) -> std::io::Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    let body = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, p)
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// How one disk of this point is read.
#[derive(Debug, Clone)]
struct Plan {
    /// Read the whole view (first point or fallback).
    full: bool,
    /// Why tracking is not trusted (a fallback), None otherwise.
    reason: Option<String>,
    record: Record,
}

/// One VM of an open point.
struct OpenVm {
    /// Index into the batch's targets.
    ti: usize,
    /// Its machine address, for messages.
    machine: String,
    qmp: Qmp,
    /// The daemon `qmp` speaks to when the VM does not run (ended with
    /// the point, after `qmp`'s last command).
    _daemon: Option<offline::Daemon>,
    point: Option<Point>,
    plans: Vec<Plan>,
    read: Vec<u64>,
    requests: Vec<u64>,
}

/// The VMs of a batch at one point instant; [`Session::finish`] must end it.
#[derive(Default)]
pub struct Session {
    vms: Vec<OpenVm>,
    spread: Duration,
}

/// QMP of `t`'s VM; when the VM does not run (nothing listens on its local
/// QMP socket), of a `qemu-storage-daemon` opened over its images under
/// its node names ([`offline`]), which the caller keeps for the point.
fn connect(t: &Target, v: &VmTarget) -> Result<(Qmp, Option<offline::Daemon>), ReplicationError> {
    // A VM that runs answers at once; no wait for one that does not. A
    // remote one must run (`listening` is true for it).
    let socket = match &v.qmp {
        Endpoint::Unix(socket) if !v.qmp.listening() => socket,
        _ => {
            let q = v
                .qmp
                .qmp(Duration::from_secs(10))
                .map_err(|e| vm_err(t, e))?;
            return Ok((q, None));
        }
    };
    let name = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    let disks: Vec<offline::Image> = v
        .nodes
        .iter()
        .zip(&v.formats)
        .zip(&t.disks)
        .map(|((node, format), (_, path))| {
            let wrapper = standby_provider_qemu::wrapper::path(path);
            if v.wrapped && wrapper.exists() {
                offline::Image {
                    node: node.clone(),
                    path: wrapper,
                    format: DiskFormat::Qcow2,
                }
            } else {
                offline::Image {
                    node: node.clone(),
                    path: path.clone(),
                    format: *format,
                }
            }
        })
        .collect();
    let daemon = offline::Daemon::start(&disks, &v.work, &name).map_err(|d| {
        vm_err(
            t,
            format!(
                "its VM does not run (nothing listens on its QMP socket {}), and its images could not be opened without it: {d}",
                socket.display()
            ),
        )
    })?;
    let q =
        Qmp::connect_unix(&daemon.qmp_path, Duration::from_secs(10)).map_err(|e| vm_err(t, e))?;
    tracing::info!(
        "{}: its VM does not run; reading its images through qemu-storage-daemon",
        t.machine
    );
    Ok((q, Some(daemon)))
}

fn vm_err(t: &Target, e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Vm {
        machine: t.machine.clone(),
        detail: e.to_string(),
    }
}

/// Opens the point instant for every VM target of `targets` (none: an
/// empty session). `prevs` are the previous hashes per target and disk.
/// On error every guest is thawed and nothing of tracking is lost.
pub fn begin(
    targets: &[Target],
    prevs: &[Vec<Option<Hashes>>],
    cache_dir: &Path,
    vault_id: &str,
) -> Result<Session, ReplicationError> {
    let mut vms = Vec::new();
    let mut agents: Vec<Option<Agent>> = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let Some(v) = &t.vm else { continue };
        let (mut qmp, daemon) = connect(t, v)?;
        let agent = match (&v.agent, t.app, &daemon) {
            (Some(a), true, None) => {
                let mut agent = a.agent(Duration::from_secs(30)).map_err(|e| vm_err(t, e))?;
                // A run killed between freeze and thaw leaves the guest
                // frozen (its writes held): thaw before freezing again.
                if agent.fsfreeze_status().map_err(|e| vm_err(t, e))? == "frozen" {
                    tracing::warn!("{}: the guest was left frozen; thawing it", t.machine);
                    agent.fsfreeze_thaw().map_err(|e| vm_err(t, e))?;
                }
                Some(agent)
            }
            // A VM that does not run has no guest to freeze: its point is
            // crash-consistent (as of its last shutdown).
            _ => None,
        };
        let mut plans = Vec::new();
        for (di, node) in v.nodes.iter().enumerate() {
            let disk = &t.disks[di].0;
            let plan = plan_disk(
                &mut qmp,
                node,
                prevs[ti][di].as_ref(),
                cache_dir,
                vault_id,
                t,
                disk,
            )
            .map_err(|e| vm_err(t, e))?;
            plans.push(plan);
        }
        if let Some(e) = &v.export_tls {
            ensure_creds(&mut qmp, e).map_err(|e| vm_err(t, e))?;
        }
        // A remote hypervisor's work_dir is QEMU's to fill there.
        if v.qmp.is_local() {
            std::fs::create_dir_all(&v.work).map_err(|source| ReplicationError::Io {
                op: "create the VM point directory",
                path: v.work.clone(),
                source,
            })?;
        }
        vms.push(OpenVm {
            ti,
            machine: t.machine.clone(),
            qmp,
            _daemon: daemon,
            point: None,
            read: vec![0; plans.len()],
            requests: vec![0; plans.len()],
            plans,
        });
        agents.push(agent);
    }
    if vms.is_empty() {
        return Ok(Session::default());
    }
    // While guests are frozen, a helper process thaws them should this
    // process die (SIGKILL) before it does: a frozen guest holds every
    // write of its applications.
    let guards: Vec<ThawGuard> = targets
        .iter()
        .filter(|t| t.app)
        .filter_map(|t| t.vm.as_ref()?.agent.as_ref())
        .filter_map(ThawGuard::spawn)
        .collect();
    let names = vms
        .iter()
        .map(|o| targets[o.ti].machine.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let mut members: Vec<Member<'_>> = vms
        .iter_mut()
        .zip(agents.iter_mut())
        .map(|(o, a)| {
            let v = targets[o.ti].vm.as_ref();
            let at = match v.and_then(|v| v.export_tls.as_ref()) {
                Some(e) => cbt::ExportAt::Tls {
                    host: e.host.clone(),
                    port: e.port,
                    creds: EXPORT_CREDS_ID.into(),
                    client: standby_provider_qemu::tls::TlsConfig {
                        ca: e.ca.clone(),
                        server_name: e.server_name.clone(),
                        client: e.client.clone(),
                    },
                },
                None => cbt::ExportAt::Unix,
            };
            let (nodes, dir) = v
                .map(|v| (v.nodes.clone(), v.work.clone()))
                .unwrap_or_default();
            Member {
                qmp: &mut o.qmp,
                agent: a.as_mut(),
                nodes,
                dir,
                at,
            }
        })
        .collect();
    let g = cbt::begin_group(&mut members);
    drop(members);
    // begin_group thawed every guest it froze, whatever happened.
    for guard in guards {
        guard.release();
    }
    let g = g.map_err(|e| ReplicationError::Vm {
        machine: names,
        detail: e.to_string(),
    })?;
    tracing::debug!(
        vms = vms.len(),
        "VM point instant open (freeze, transaction, thaw, exports)"
    );
    let spread = g.spread;
    for (o, p) in vms.iter_mut().zip(g.points) {
        o.point = Some(p);
    }
    Ok(Session { vms, spread })
}

/// The first argument that runs [`guard_main`] instead of the CLI.
const GUARD_ARG: &str = "__standby-thaw-guard";

/// A helper process, started from this executable before guests are
/// frozen: it waits for its stdin to close. Told "thawed" first, it exits;
/// otherwise (this process died inside the freeze) it connects to the
/// guest agent once this process's connection is gone and thaws the guest
/// if it is still frozen.
struct ThawGuard {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl ThawGuard {
    fn spawn(agent: &Endpoint) -> Option<ThawGuard> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().ok()?;
        // Only the standby binary runs the guard (a test binary calling
        // the library would not).
        if exe.file_name().is_none_or(|n| n != "standby") {
            return None;
        }
        let mut child = std::process::Command::new(exe)
            .arg(GUARD_ARG)
            .args(agent.to_args())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group: a signal to ours does not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| tracing::warn!("cannot start the thaw guard: {e}"))
            .ok()?;
        let stdin = child.stdin.take();
        Some(ThawGuard { child, stdin })
    }

    fn release(mut self) {
        use std::io::Write;
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"thawed\n");
        }
        let _ = self.child.wait();
    }
}

/// Runs the thaw guard when `args` (the process's, program name first)
/// say this process was started as one, reading its parent's word from
/// `input` (its stdin); returns its exit code. None: not a guard.
pub fn guard_main(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    input: &mut dyn std::io::Read,
) -> Option<u8> {
    let mut args = args.into_iter().skip(1);
    if args.next()? != GUARD_ARG {
        return None;
    }
    let agent = Endpoint::from_args(args)?;
    let mut said = String::new();
    let _ = input.read_to_string(&mut said);
    if said.trim() == "thawed" {
        return Some(0);
    }
    // The parent is gone; its agent connection closes with it.
    let Ok(mut a) = agent.agent(Duration::from_secs(60)) else {
        return Some(1);
    };
    match a.fsfreeze_status() {
        Ok(s) if s == "frozen" => Some(u8::from(a.fsfreeze_thaw().is_err())),
        Ok(_) => Some(0),
        Err(_) => Some(1),
    }
}

/// Decides how `node` is read this point, and gets tracking ready for the
/// transaction (enabled; reset when its bitmap is inconsistent).
fn plan_disk(
    qmp: &mut Qmp,
    node: &str,
    prev: Option<&Hashes>,
    cache_dir: &Path,
    vault_id: &str,
    t: &Target,
    disk: &str,
) -> Result<Plan, standby_provider_qemu::Error> {
    let n = qmp.block_node(node)?;
    let size = n.image.as_ref().map_or(0, |i| i.virtual_size);
    let record = Record {
        point: String::new(),
        size,
        image: n.file.clone(),
        host: host(),
    };
    let mut reason = cbt::untrusted(qmp, node)?;
    let had_bitmap = !cbt::bitmaps(qmp, node)?.is_empty();
    if reason.is_some() {
        // Inconsistent or missing: start tracking afresh; this point reads
        // the whole disk.
        if had_bitmap {
            cbt::reset(qmp, node, cbt::DEFAULT_GRANULARITY)?;
        } else {
            cbt::enable_any(qmp, node, cbt::DEFAULT_GRANULARITY)?;
        }
    }
    let Some(prev) = prev else {
        // A first point of this disk: every allocated extent, no fallback.
        return Ok(Plan {
            full: true,
            reason: None,
            record,
        });
    };
    if reason.is_none() {
        let p = record_path(cache_dir, vault_id, &t.machine, disk);
        reason = match load_record(&p) {
            None => Some(
                "no record of the point this disk's bitmap counts from (first point through tracking, or the cache was cleared)".into(),
            ),
            Some(r) if r.point != prev.point.hex() => Some(format!(
                "the bitmap counts from point {}, not from the newest point {}",
                short(&r.point),
                short(&prev.point.hex())
            )),
            Some(r) if r.host != record.host => Some(format!(
                "the VM moved from host {} to {}",
                r.host, record.host
            )),
            Some(r) if r.image != record.image => Some(format!(
                "the disk's image changed from {} to {} (moved or replaced)",
                r.image, record.image
            )),
            Some(_) => None,
        };
    }
    if reason.is_none() && prev.size != size {
        reason = Some(format!(
            "the disk was resized from {} to {} bytes",
            prev.size, size
        ));
    }
    Ok(Plan {
        full: reason.is_some(),
        reason,
        record,
    })
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

impl Session {
    /// Whether target `ti` is a VM of this session.
    pub fn has(&self, ti: usize) -> bool {
        self.vms.iter().any(|o| o.ti == ti)
    }

    /// The freeze window of target `ti` in ms (app-consistent VM points).
    pub fn freeze_ms(&self, ti: usize) -> Option<u64> {
        let o = self.vms.iter().find(|o| o.ti == ti)?;
        o.point
            .as_ref()?
            .freeze
            .map(|f| f.window.as_millis() as u64)
    }

    /// Captures disk `di` of target `ti` through the pipeline.
    pub fn capture(
        &mut self,
        ti: usize,
        di: usize,
        sink: Sink<'_, '_>,
        label: &Path,
    ) -> Result<capture::Captured, ReplicationError> {
        let Some(o) = self.vms.iter_mut().find(|o| o.ti == ti) else {
            return Err(ReplicationError::Vm {
                machine: label.display().to_string(),
                detail: "no open point for this VM".into(),
            });
        };
        let machine = || o.machine.clone();
        let plan = o.plans[di].clone();
        let (Some(point), Some(disk)) = (
            o.point.as_ref(),
            o.point.as_ref().and_then(|p| p.disks.get(di)),
        ) else {
            return Err(ReplicationError::Vm {
                machine: machine(),
                detail: "the point has no view of this disk".into(),
            });
        };
        let src = DiskSource::open(point, disk, plan.full).map_err(|e| ReplicationError::Vm {
            machine: machine(),
            detail: e.to_string(),
        })?;
        let size = src.size();
        let to_read = src.data_bytes();
        let mut source = NbdSource {
            src: Some(src),
            full: plan.full,
            next: 0,
            error: None,
            requests: 0,
            ahead: Vec::new(),
        };
        let c = capture::capture_from(sink, &mut source, size, to_read, label);
        if let Some(s) = source.src.take() {
            let _ = s.close();
        }
        let c = c?;
        tracing::debug!(disk = %label.display(), read = c.read, "VM disk read");
        o.read[di] = c.read;
        o.requests[di] = source.requests;
        Ok(c)
    }

    /// The tracking facts of target `ti` for its manifest.
    pub fn info(&self, ti: usize, disks: &[(String, PathBuf)]) -> Option<Cbt> {
        let o = self.vms.iter().find(|o| o.ti == ti)?;
        let p = o.point.as_ref()?;
        let mut out = BTreeMap::new();
        for (di, (name, _)) in disks.iter().enumerate() {
            let plan = &o.plans[di];
            let mode = match (plan.full, &plan.reason) {
                (true, Some(_)) => "fallback",
                (true, None) => "full",
                _ => "dirty",
            };
            out.insert(
                name.clone(),
                CbtDisk {
                    mode: mode.into(),
                    reason: plan.reason.clone(),
                    dirty_bytes: p.disks.get(di).map_or(0, |d| d.dirty_bytes),
                    read_bytes: o.read[di],
                    read_requests: o.requests[di],
                },
            );
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(Cbt {
            disks: out,
            freeze_call_ms: p.freeze.map(|f| ms(f.freeze_call)),
            transaction_ms: p.freeze.map_or(0.0, |f| ms(f.transaction)),
            spread_ms: ms(self.spread),
            group_vms: self.vms.len() as u32,
        })
    }

    /// Ends the point. `made`: the manifests written, in target order
    /// (Some: commit — the old generations are deleted and the records
    /// name these points; None: abort — the old generations are merged
    /// into the new ones, nothing lost).
    pub fn finish(
        self,
        targets: &[Target],
        made: Option<&[crate::vault::manifest::Manifest]>,
        cache_dir: &Path,
        vault_id: &str,
    ) -> Result<(), ReplicationError> {
        let mut first_err = None;
        for mut o in self.vms {
            let t = &targets[o.ti];
            let Some(point) = o.point.take() else {
                continue;
            };
            let m = made.and_then(|m| m.iter().find(|m| m.machine == t.machine));
            if let Some(m) = m {
                // The record first: a kill between it and the commit leaves
                // an older generation, which the next sweep merges (a
                // superset of the changes since this point).
                for (di, (name, _)) in t.disks.iter().enumerate() {
                    let mut r = o.plans[di].record.clone();
                    r.point = m.id.hex();
                    let p = record_path(cache_dir, vault_id, &t.machine, name);
                    if let Err(e) = save_record(&p, &r) {
                        // Only costs a fallback next time.
                        tracing::warn!("cannot write {}: {e}", p.display());
                    }
                }
            }
            if let Err(e) = cbt::finish(&mut o.qmp, point, m.is_some()) {
                first_err.get_or_insert(vm_err(t, e));
            }
            tracing::debug!(machine = %t.machine, commit = m.is_some(), "VM point closed");
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Chunks of a VM disk's point-in-time view over NBD.
struct NbdSource {
    src: Option<DiskSource>,
    /// Blocks outside the ranges read as zeros (a whole read); else they
    /// are unchanged since the previous point.
    full: bool,
    /// Index of the first range that may still overlap the next chunk.
    next: usize,
    error: Option<String>,
    /// NBD read requests sent.
    requests: u64,
    /// Read ahead: (offset, bytes) segments of the data ranges at and after
    /// the last read. A first or fallback point reads long allocated
    /// ranges, a tracked point many short dirty ones; asking for several
    /// at once keeps the client's pipeline full either way.
    ahead: Vec<(u64, Vec<u8>)>,
}

/// The most read ahead at once: the NBD client's whole pipeline.
const AHEAD: u64 = nbd::MAX_READ as u64 * nbd::READ_DEPTH as u64;
/// The most separate ranges read ahead at once.
const AHEAD_RANGES: usize = 256;

impl NbdSource {
    /// Reads `dst.len()` bytes at `off`, from the read-ahead buffer when it
    /// holds them, else (inside a longer data range) by refilling it.
    fn read_run(&mut self, dst: &mut [u8], off: u64) -> Result<(), String> {
        let n = dst.len() as u64;
        if let Some((a, buf)) = self
            .ahead
            .iter()
            .find(|(a, buf)| off >= *a && off + n <= a + buf.len() as u64)
        {
            let s = (off - a) as usize;
            dst.copy_from_slice(&buf[s..s + dst.len()]);
            return Ok(());
        }
        let Some(src) = self.src.as_mut() else {
            return Err("the NBD view is closed".into());
        };
        // The data ranges from the one holding `off` on, up to AHEAD bytes.
        let ranges = src.ranges();
        let j = ranges.partition_point(|r| r.offset + r.length <= off);
        let first = ranges.get(j).filter(|r| {
            r.change == Change::Data && r.offset <= off && off + n <= r.offset + r.length
        });
        let Some(first) = first else {
            self.requests += n.div_ceil(u64::from(nbd::MAX_READ));
            return src.read_at(dst, off).map_err(|e| e.to_string());
        };
        let mut want = vec![(off, (first.offset + first.length - off).min(AHEAD).max(n))];
        let mut total = want[0].1;
        for r in ranges[j + 1..].iter().filter(|r| r.change == Change::Data) {
            if total >= AHEAD || want.len() >= AHEAD_RANGES {
                break;
            }
            let len = r.length.min(AHEAD - total);
            want.push((r.offset, len));
            total += len;
        }
        let mut bufs: Vec<Vec<u8>> = want.iter().map(|&(_, l)| vec![0u8; l as usize]).collect();
        let mut parts: Vec<(u64, &mut [u8])> = want
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(o, _), b)| (o, b.as_mut_slice()))
            .collect();
        self.requests += want
            .iter()
            .map(|&(_, l)| l.div_ceil(u64::from(nbd::MAX_READ)))
            .sum::<u64>();
        src.read_many_at(&mut parts).map_err(|e| e.to_string())?;
        dst.copy_from_slice(&bufs[0][..dst.len()]);
        self.ahead = want.into_iter().map(|(o, _)| o).zip(bufs).collect();
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Keep,
    Zero,
    Read,
}

impl ChunkSource for NbdSource {
    fn untouched(&self, start: u64, end: u64) -> bool {
        // The ranges are sorted and disjoint (see `chunk`'s cursor).
        match self.src.as_ref() {
            Some(src) if !self.full => {
                let r = src.ranges();
                let i = r.partition_point(|x| x.offset + x.length <= start);
                !(i < r.len() && r[i].offset < end)
            }
            _ => false,
        }
    }

    fn chunk(
        &mut self,
        idx: u64,
        start: u64,
        end: u64,
        mut buf: Vec<u8>,
    ) -> std::io::Result<Chunk> {
        let Some(src) = self.src.as_mut() else {
            return Err(std::io::Error::other(
                self.error
                    .clone()
                    .unwrap_or_else(|| "the NBD view is closed".into()),
            ));
        };
        let nb = (end - start).div_ceil(BLOCK) as usize;
        let untouched = if self.full { State::Zero } else { State::Keep };
        let mut states = vec![untouched; nb];
        // Bytes of each block covered by Zero ranges: a block wholly inside
        // them is zero; partly, it is read.
        let mut zero_cover = vec![0u64; nb];
        let ranges = src.ranges();
        while self.next < ranges.len()
            && ranges[self.next].offset + ranges[self.next].length <= start
        {
            self.next += 1;
        }
        let mut i = self.next;
        while i < ranges.len() && ranges[i].offset < end {
            let r = ranges[i];
            let s = r.offset.max(start);
            let e = (r.offset + r.length).min(end);
            let (b0, b1) = (
                ((s - start) / BLOCK) as usize,
                ((e - start).div_ceil(BLOCK)) as usize,
            );
            for (b, st) in states.iter_mut().enumerate().take(b1).skip(b0) {
                match r.change {
                    Change::Data => *st = State::Read,
                    Change::Zero => {
                        let bs = start + b as u64 * BLOCK;
                        let be = (bs + BLOCK).min(end);
                        zero_cover[b] += e.min(be) - s.max(bs);
                    }
                }
            }
            i += 1;
        }
        for b in 0..nb {
            if states[b] != State::Read && zero_cover[b] > 0 {
                let bs = start + b as u64 * BLOCK;
                let blen = (bs + BLOCK).min(end) - bs;
                states[b] = if zero_cover[b] >= blen {
                    State::Zero
                } else {
                    State::Read
                };
            }
        }
        let keep: Option<Vec<bool>> =
            (!self.full).then(|| states.iter().map(|s| *s == State::Keep).collect());
        if !states.contains(&State::Read) {
            return Ok(Chunk {
                idx,
                data: None,
                keep,
                read: 0,
            });
        }
        let len = nb * BLOCK as usize;
        buf.resize(len, 0);
        let mut read = 0;
        let mut b = 0;
        while b < nb {
            match states[b] {
                State::Keep => b += 1,
                State::Zero => {
                    buf[b * BLOCK as usize..(b + 1) * BLOCK as usize].fill(0);
                    b += 1;
                }
                State::Read => {
                    let mut e = b + 1;
                    while e < nb && states[e] == State::Read {
                        e += 1;
                    }
                    let off = start + b as u64 * BLOCK;
                    let n = ((start + e as u64 * BLOCK).min(end) - off) as usize;
                    let dst = &mut buf[b * BLOCK as usize..b * BLOCK as usize + n];
                    if let Err(msg) = self.read_run(dst, off) {
                        self.error = Some(msg.clone());
                        return Err(std::io::Error::other(msg));
                    }
                    // A disk whose size is not a multiple of 4 KiB: the
                    // tail of its last block reads as zeros.
                    buf[b * BLOCK as usize + n..e * BLOCK as usize].fill(0);
                    read += n as u64;
                    b = e;
                }
            }
        }
        Ok(Chunk {
            idx,
            data: Some(buf),
            keep,
            read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_file_and_node_safe() {
        assert_eq!(vm_name("machine.db"), "db");
        assert_eq!(vm_name("machine.web[\"a b\"]"), "web-_a_b");
        assert_eq!(vm_name("machine.9x"), "m9x");
        assert!(vm_name(&format!("machine.{}", "a".repeat(50))).len() <= 31);
    }
}
