//! The desired state as plain types: what the configuration asks for, after
//! variables, references and `for_each` have been resolved and checked.
//!
//! `config` produces a [`Config`]; `plan` diffs it against the state. Nothing
//! here knows about HCL, spans or files; paths are as written (relative paths
//! are relative to [`Config::root`] for sites and vault files, and to the
//! site root for disks).

mod address;
mod duration;

pub use address::{Address, Key, Kind, ParseAddressError};
pub use duration::{Duration, ParseDurationError};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A whole, checked configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The configuration directory; relative paths resolve against it.
    pub root: PathBuf,
    /// BLAKE3 of the configuration files and resolved variable values
    /// (sorted by file name), hex. A saved plan records it.
    pub source_hash: String,
    pub variables: BTreeMap<String, Variable>,
    pub vaults: BTreeMap<Address, Vault>,
    pub sites: BTreeMap<Address, Site>,
    pub policies: BTreeMap<Address, Policy>,
    pub machines: BTreeMap<Address, Machine>,
    pub protections: BTreeMap<Address, Protection>,
    pub recovery_plans: BTreeMap<Address, RecoveryPlan>,
    /// Where the state is kept; `None`: the local files under `.standby/`.
    pub backend: Option<Backend>,
    /// `moved` blocks: renamed protections and machines, in file order.
    pub moves: Vec<Move>,
}

/// A `moved { from = ..., to = ... }` block: the object recorded at `from`
/// is now `to` (same kind, protection or machine), keeping its points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: Address,
    pub to: Address,
}

/// The `backend` block: the state document on an object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `az://container/prefix`, `s3://bucket/prefix` or `file://DIR`.
    pub url: String,
}

/// A declared input variable with its resolved value.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub description: Option<String>,
    pub sensitive: bool,
    pub value: serde_json::Value,
}

/// Where the vault master key comes from. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vault {
    pub addr: Address,
    /// `file://path`, `az://container/prefix` or `s3://bucket/prefix`.
    pub url: String,
    pub key: KeySource,
    /// Attribute names whose values came from a sensitive variable.
    pub sensitive: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub addr: Address,
    /// `local`, `qemu` or `exec`.
    pub provider: String,
    /// Site root for the local and qemu providers (relative to the config
    /// root); a qemu site keeps its VMs' run files (sockets, pid files,
    /// console logs) there.
    pub root: Option<PathBuf>,
    /// Provider command for the exec provider.
    pub command: Option<Vec<String>>,
    /// The host (name or label) whose replication services can reach the
    /// site's disks (`replicate --watch --host`); None: any service.
    pub host: Option<String>,
    pub sensitive: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub addr: Address,
    pub rpo_threshold: Duration,
    pub crash_consistent_every: Duration,
    /// None: the policy takes crash-consistent points only.
    pub app_consistent_every: Option<Duration>,
    pub retention: Duration,
    /// zstd level for data written under this policy (default 1).
    pub compression_level: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub addr: Address,
    pub site: Address,
    pub disks: Vec<Disk>,
    pub quiesce: Option<Quiesce>,
    pub boot: Option<Boot>,
    /// How to stop the machine at its own site when standby did not start
    /// it (planned failover stops the source first).
    pub shutdown: Option<Shutdown>,
    pub checks: Vec<Check>,
    pub sensitive: BTreeSet<String>,
    /// The `vm` block of a machine at a `qemu` site (None elsewhere).
    pub vm: Option<Vm>,
}

/// A QEMU virtual machine: how standby reaches it (QMP, guest agent) and,
/// for VMs standby starts itself (tests, examples), how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// QMP socket: a unix path (relative to the site root or absolute)
    /// or `tcp://host:port` with `tls`; None: the socket of the VM standby
    /// runs (`ROOT/NAME.qmp`).
    pub qmp: Option<VmSocket>,
    /// Guest-agent socket, as `qmp`; None: `ROOT/NAME.qga` for the VM
    /// standby runs, else no agent.
    pub agent: Option<VmSocket>,
    /// How TCP sockets (`qmp`, `agent`) prove themselves.
    pub tls: Option<VmTls>,
    /// An existing directory on the hypervisor for this VM's fleece
    /// images (needed when `qmp` is on TCP; else `ROOT/.standby-cbt/NAME`).
    pub work_dir: Option<PathBuf>,
    /// Memory in MiB.
    pub memory_mib: u64,
    pub cpus: u32,
    /// Direct kernel boot (relative to the configuration root); None:
    /// firmware boots the first disk.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// App-consistent points freeze the guest's file systems through the
    /// guest agent (`guest-fsfreeze-freeze`).
    pub fsfreeze: bool,
    /// Per disk of the machine, in the machine's disk order.
    pub disks: Vec<VmDisk>,
    /// Points are read over NBD with TLS on TCP instead of a unix socket
    /// (a hypervisor standby reaches over the network).
    pub export_tls: Option<ExportTls>,
}

/// A QMP or guest-agent socket of a [`Vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmSocket {
    /// A unix socket on standby's host.
    Path(PathBuf),
    /// `host:port` of a chardev with TLS on the hypervisor.
    Tcp(String),
}

impl std::fmt::Display for VmSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmSocket::Path(p) => write!(f, "{}", p.display()),
            VmSocket::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The `tls` block of a `vm`: the CA standby verifies the hypervisor's
/// QMP and agent certificates with, and its own client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTls {
    /// Relative to the site root or absolute.
    pub ca: PathBuf,
    /// Client certificate and key (QEMU's `verify-peer=on`).
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificates must carry (default: the host
    /// of `qmp`).
    pub server_name: String,
}

/// The `export_tls` block of a `vm`: where QEMU's NBD server listens for a
/// point's exports and how both ends prove themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTls {
    /// `host:port` QEMU listens on.
    pub listen: String,
    /// QEMU's x509 directory (`ca-cert.pem`, `server-cert.pem`,
    /// `server-key.pem`), relative to the configuration root.
    pub creds_dir: PathBuf,
    /// The CA standby verifies the server's certificate with.
    pub ca: PathBuf,
    /// The name the server's certificate must carry (default: the host of
    /// `listen`).
    pub server_name: String,
    /// Certificate chain and key standby presents (PEM): QEMU's server then
    /// runs with `verify-peer=on` and serves no one else. Required unless
    /// `listen` is on loopback.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A protection's `target_vm` block: VM settings at the target site that
/// replace the machine's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmOverride {
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
    /// TCP ports forwarded from `127.0.0.1:host_port` to the guest's
    /// `guest_port` (the only way into a recovered VM: without any, it has
    /// no network device; with some, user-mode networking restricted to
    /// them).
    pub forwards: Vec<PortForward>,
}

/// One `forward { host_port guest_port }` of a [`VmOverride`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
}

/// How QEMU opens one disk of a [`Vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The machine's disk label.
    pub name: String,
    /// `qcow2` or `raw`.
    pub format: String,
    /// The QEMU node name of the disk's format node.
    pub node_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    /// Relative to the machine's site root, or absolute (a block device).
    pub path: PathBuf,
}

/// An argv vector run without a shell.
pub type Command = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Quiesce {
    pub freeze: Command,
    pub thaw: Command,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    pub command: Command,
    pub timeout: Duration,
}

/// The `shutdown` block: a command that stops the running source machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Shutdown {
    pub command: Command,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub probe: Probe,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Passes when the command exits 0 and, if set, its trimmed stdout equals `expect`.
    Command {
        command: Command,
        expect: Option<String>,
    },
    /// Passes on the expected status and, if set, a body containing `contains`.
    Http {
        url: String,
        status: u16,
        contains: Option<String>,
    },
    /// Passes when a TCP connection to `address` (host:port) succeeds.
    Tcp { address: String },
    /// Runs `command` inside the guest through its guest agent (machines
    /// recovered to a `qemu` site); passes on exit 0 and, if set, a
    /// trimmed stdout equal to `expect`.
    Guest {
        command: Command,
        expect: Option<String>,
    },
    /// Passes when a line of the VM's serial console matches `pattern`
    /// (a regular expression).
    Console { pattern: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Protection {
    pub addr: Address,
    pub machine: Address,
    pub target: Address,
    pub vault: Address,
    pub policy: Address,
    pub consistency_group: Option<String>,
    /// How the machine's VM runs at a `qemu` target site, where it
    /// differs from its `vm` block (the protection's `target_vm` block).
    pub target_vm: Option<VmOverride>,
    pub prevent_destroy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPlan {
    pub addr: Address,
    /// In declaration order; `depends_on` names other groups of this plan.
    pub groups: Vec<Group>,
    pub drill: Option<Drill>,
    /// Where the plan's machines should run: `None` is their own site;
    /// their protections' target site means "failed over". `plan` compares
    /// it with where the state says they run.
    pub active_site: Option<Address>,
}

impl RecoveryPlan {
    /// The groups in an order that runs each after the groups it depends
    /// on, ties in declaration order. A cycle (the configuration rejects
    /// these) keeps the rest in declaration order.
    pub fn groups_in_order(&self) -> Vec<&Group> {
        let mut done: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        while out.len() < self.groups.len() {
            let next = self.groups.iter().find(|g| {
                !done.contains(&g.name.as_str())
                    && g.depends_on.iter().all(|d| done.contains(&d.as_str()))
            });
            match next {
                Some(g) => {
                    done.push(&g.name);
                    out.push(g);
                }
                None => {
                    for g in &self.groups {
                        if !done.contains(&g.name.as_str()) {
                            done.push(&g.name);
                            out.push(g);
                        }
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub machines: Vec<Address>,
    pub depends_on: Vec<String>,
    pub before: Vec<Step>,
    pub after: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub action: StepAction,
    pub timeout: Duration,
    /// Which runs carry the step out (`when = "failover"`, the default).
    pub when: StepWhen,
}

/// The direction a `before`/`after` step belongs to: `"failover"` (test,
/// planned and unplanned failovers and drills, the default), `"failback"`,
/// or `"always"`. A manual "point DNS at the DR site" is failover-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepWhen {
    #[default]
    Failover,
    Failback,
    Always,
}

impl StepWhen {
    pub const NAMES: [&str; 3] = ["failover", "failback", "always"];

    /// Whether a failback run (`failback`) or a failover run carries it out.
    pub fn runs_in(self, failback: bool) -> bool {
        match self {
            StepWhen::Always => true,
            StepWhen::Failover => !failback,
            StepWhen::Failback => failback,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    Script { command: Command },
    Manual { instructions: String },
    Check(Probe),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    pub schedule: Schedule,
    pub max_rto: Duration,
    /// Boot the test VMs from their disks served out of the vault
    /// (instant recovery; VMs at qemu sites only).
    pub instant: bool,
}

/// How often a drill is due: `daily`, `weekly`, `monthly` or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Daily,
    Weekly,
    Monthly,
    Every(Duration),
}

impl Schedule {
    /// The interval after which a drill is due again.
    pub fn interval(&self) -> Duration {
        match self {
            Schedule::Daily => Duration::from_secs(86_400),
            Schedule::Weekly => Duration::from_secs(7 * 86_400),
            Schedule::Monthly => Duration::from_secs(30 * 86_400),
            Schedule::Every(d) => *d,
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Daily => f.write_str("daily"),
            Schedule::Weekly => f.write_str("weekly"),
            Schedule::Monthly => f.write_str("monthly"),
            Schedule::Every(d) => write!(f, "{d}"),
        }
    }
}
