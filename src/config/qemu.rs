//! The parts of a machine that only a `qemu` site reads: the `vm` block and
//! the `format` / `node_name` attributes of its disks, lowered into
//! [`crate::model::Vm`] with the usual diagnostics.
//!
//! ```hcl
//! machine "db" {
//!   site = site.hv1                  # provider = "qemu"
//!   vm {
//!     qmp    = "/run/qemu/db.qmp"    # a VM standby reaches; omit both for
//!     agent  = "/run/qemu/db.qga"    # the VM standby runs (ROOT/NAME.qmp);
//!                                    # on another host: "tcp://HOST:PORT"
//!                                    # with tls { ca = ... }, work_dir and
//!                                    # export_tls (docs/QEMU.md)
//!     memory = "256M"
//!     cpus   = 1
//!     kernel = "guest/vmlinuz"       # omit for firmware boot from disk 1
//!     initrd = "guest/initrd.img"
//!     append = "console=ttyS0"
//!     fsfreeze = true                # app-consistent: guest-fsfreeze
//!   }
//!   disk "data" {
//!     path      = "db/data.qcow2"
//!     format    = "qcow2"            # default from the extension
//!     node_name = "data"             # default: the disk's label
//!   }
//! }
//! ```

use super::diag::{Diagnostic, Diagnostics, Loc};
use super::reader::{Reader, want_string};
use crate::model::{ExportTls, Vm, VmDisk, VmSocket, VmTls};
use hcl_edit::Span;
use std::collections::HashMap;
use std::path::PathBuf;

/// Attributes a `disk` block takes besides `path` (read for qemu sites).
pub const DISK_ATTRS: [&str; 2] = ["format", "node_name"];

/// Attributes of the `vm` block.
const VM_ATTRS: [&str; 10] = [
    "qmp", "agent", "memory", "cpus", "kernel", "initrd", "append", "fsfreeze", "network",
    "work_dir",
];

/// What a `disk` block said for QEMU, before the site is known.
pub struct DiskOpts {
    pub name: String,
    pub path: String,
    pub format: Option<(String, Loc)>,
    pub node_name: Option<(String, Loc)>,
    pub header: Loc,
}

/// Reads `format` and `node_name` of one disk block (None when a value was
/// reported as wrong).
pub fn disk_opts(
    d: &mut Reader<'_, '_>,
    name: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<DiskOpts> {
    let mut ok = true;
    let mut get = |d: &mut Reader<'_, '_>, attr: &str, diags: &mut Diagnostics| {
        let loc = d.value_loc(attr);
        match (d.string(attr, false, diags), loc) {
            (Some(v), Some(l)) => Some((v, l)),
            (None, Some(_)) if d.has(attr) => {
                ok = false;
                None
            }
            _ => None,
        }
    };
    let format = get(d, "format", diags);
    let node_name = get(d, "node_name", diags);
    ok.then(|| DiskOpts {
        name: name.to_string(),
        path: path.to_string(),
        format,
        node_name,
        header: d.header.clone(),
    })
}

/// A QEMU node name: a letter first, then letters, digits, `-`, `_`, `.`;
/// at most 31 bytes (QEMU's limit).
pub fn node_name_ok(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.len() <= 31
}

/// The most memory a `vm` may ask for (16 TiB, in KiB): past what x86
/// QEMU guests address on common hosts, so a larger value is a typo.
const MAX_MEMORY_KIB: u64 = 16 << 30;

/// Memory as QEMU's `-m` takes it: a whole number of MiB, or a number with
/// a binary unit (`K`, `M`, `G`, `T`, optionally followed by `iB` or `B`;
/// `256MB` is 256 MiB, as QEMU reads it), at most 16 TiB.
fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "{s:?} is not a whole number of a unit (write 1536M for 1.5G)"
        ));
    }
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let kib = match unit {
        "" | "M" | "m" => n.checked_mul(1024),
        "K" | "k" => Some(n),
        "G" | "g" => n.checked_mul(1 << 20),
        "T" | "t" => n.checked_mul(1 << 30),
        other => return Err(format!("unknown unit {other:?}")),
    }
    .ok_or_else(|| format!("{s:?} is too large"))?;
    if kib == 0 || kib % 1024 != 0 {
        return Err(format!("{s:?} is not a whole, non-zero number of MiB"));
    }
    if kib > MAX_MEMORY_KIB {
        return Err(format!(
            "{s:?} is more than 16T, more than any VM standby runs can be given"
        ));
    }
    Ok(kib / 1024)
}

fn err(code: &'static str, loc: Loc, msg: String, label: &str, help: String) -> Diagnostic {
    Diagnostic::error(code, loc, msg).label(label).help(help)
}

/// A check's `console = "REGEX"` probe: the pattern must compile, and the
/// attributes of other probe kinds are refused.
pub fn console_probe(
    r: &mut Reader<'_, '_>,
    diags: &mut Diagnostics,
) -> Option<crate::model::Probe> {
    let mut ok = true;
    for attr in ["expect", "status", "contains"] {
        if let Some(loc) = r.key_loc(attr) {
            diags.push(err(
                "standby::unknown_attribute",
                loc,
                format!("`{attr}` does not apply to console checks"),
                "not used by a console check",
                "a console check passes when a console line matches its pattern; put what you expect in the pattern".into(),
            ));
            ok = false;
        }
    }
    let loc = r.value_loc("console")?;
    let pattern = r.string("console", true, diags)?;
    // A pattern every line matches (empty, `.*`) proves nothing.
    if regex::Regex::new(&pattern).is_ok_and(|re| re.is_match("")) {
        diags.push(err(
            "standby::bad_pattern",
            loc,
            format!("`console` pattern {pattern:?} matches every line, even an empty one"),
            "a check that cannot fail",
            "give the line the guest prints once it is up, e.g. console = \"standby-guest: up\""
                .into(),
        ));
        return None;
    }
    if let Err(e) = regex::Regex::new(&pattern) {
        diags.push(err(
            "standby::bad_pattern",
            loc,
            format!("`console` is not a regular expression: {e}"),
            "does not compile",
            "write a Rust regex (https://docs.rs/regex), e.g. console = \"writer: started\"".into(),
        ));
        return None;
    }
    ok.then_some(crate::model::Probe::Console { pattern })
}

/// Guest and console checks run inside a VM, so a machine having them
/// must be recovered to a `qemu` site; reported where the protection names
/// the machine (`machines`: machine -> that place).
pub fn guest_checks_target(
    cfg: &crate::model::Config,
    machines: &HashMap<crate::model::Address, (crate::model::Address, Loc)>,
    diags: &mut Diagnostics,
) {
    use crate::model::Probe;
    for p in cfg.protections.values() {
        let (Some(m), Some(site)) = (cfg.machines.get(&p.machine), cfg.sites.get(&p.target)) else {
            continue;
        };
        if site.provider == "qemu" {
            continue;
        }
        if p.target_vm.is_some()
            && let Some((_, loc)) = machines.get(&p.machine)
        {
            diags.push(err(
                "standby::provider_mismatch",
                loc.clone(),
                format!(
                    "{} has a target_vm block but recovers {} to {}, a {:?} site that runs no VMs",
                    p.addr, p.machine, p.target, site.provider
                ),
                "recovered where no VM runs",
                "remove target_vm, or target a site with provider = \"qemu\"".into(),
            ));
        }
        let inside: Vec<&str> = m
            .checks
            .iter()
            .filter(|c| matches!(c.probe, Probe::Guest { .. } | Probe::Console { .. }))
            .map(|c| c.name.as_str())
            .collect();
        let Some((_, loc)) = machines.get(&p.machine) else {
            continue;
        };
        if !inside.is_empty() {
            diags.push(err(
                "standby::guest_check_without_vm",
                loc.clone(),
                format!(
                    "{} has guest or console checks ({}) but {} recovers it to {}, a {:?} site where it does not run as a VM",
                    m.addr,
                    inside.join(", "),
                    p.addr,
                    p.target,
                    site.provider
                ),
                "recovered where no guest runs",
                "recover it to a site with provider = \"qemu\", or make those checks host-side command checks".into(),
            ));
        }
    }
}

/// A protection's `target_vm { memory cpus forward { host_port guest_port } }`
/// block: the VM settings at a `qemu` target site (checked against the
/// target in [`guest_checks_target`]). Returns Err(()) after reporting.
pub fn target_vm(
    r: &mut Reader<'_, '_>,
    diags: &mut Diagnostics,
) -> Result<Option<crate::model::VmOverride>, ()> {
    let Some(block) = r.single_block("target_vm", diags) else {
        return Ok(None);
    };
    let mut v = r.nested(block, "target_vm", &["memory", "cpus"], &["forward"], diags);
    let memory_mib = memory_attr(&mut v, diags);
    let cpus = cpus_attr(&mut v, diags);
    let mut forwards = Vec::new();
    let mut ok = true;
    let mut seen: HashMap<u16, Loc> = HashMap::new();
    for b in v.blocks("forward").collect::<Vec<_>>() {
        let mut f = v.nested(b, "forward", &["host_port", "guest_port"], &[], diags);
        let host = port_attr(&mut f, "host_port", diags);
        let guest = port_attr(&mut f, "guest_port", diags);
        match (host, guest) {
            (Some((host_port, loc)), Some((guest_port, _))) => {
                if seen.contains_key(&host_port) {
                    diags.push(err(
                        "standby::duplicate_port",
                        loc,
                        format!("host port {host_port} is forwarded twice"),
                        "forwarded again",
                        "one host port reaches one guest port: remove one of the two forward blocks".into(),
                    ));
                    ok = false;
                    continue;
                }
                seen.insert(host_port, loc);
                forwards.push(crate::model::PortForward {
                    host_port,
                    guest_port,
                });
            }
            _ => ok = false,
        }
    }
    let out = crate::model::VmOverride {
        memory_mib: memory_mib?,
        cpus: cpus?,
        forwards,
    };
    if !ok {
        return Err(());
    }
    Ok(Some(out))
}

/// A TCP port attribute (1 to 65535), required; None after reporting.
fn port_attr(v: &mut Reader<'_, '_>, name: &str, diags: &mut Diagnostics) -> Option<(u16, Loc)> {
    let (val, loc) = v.required(name, diags)?;
    let s = want_string(val, &loc, name, diags)?;
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Some((p, loc)),
        _ => {
            diags.push(err(
                "standby::out_of_range",
                loc,
                format!("`{name}` must be a TCP port from 1 to 65535, not {s}"),
                "not a port",
                format!("write e.g. {name} = 8080"),
            ));
            None
        }
    }
}

/// A `vm` or `target_vm` block's `memory`: MiB as a number or a size with
/// a binary unit, read as text so that "256M" and 256 both work. Ok(None)
/// when absent; Err(()) after reporting.
fn memory_attr(v: &mut Reader<'_, '_>, diags: &mut Diagnostics) -> Result<Option<u64>, ()> {
    let Some((val, loc)) = v.optional("memory", diags) else {
        return if v.has("memory") { Err(()) } else { Ok(None) };
    };
    let s = want_string(val, &loc, "memory", diags).ok_or(())?;
    parse_memory(&s).map(Some).map_err(|why| {
        diags.push(err(
            "standby::bad_size",
            loc,
            format!("`memory`: {why}"),
            "not a memory size",
            "write MiB as a number (256) or a size with a binary unit (\"256M\", \"1G\")".into(),
        ));
    })
}

/// A `vm` or `target_vm` block's `cpus`, 1 to 255. Ok(None) when absent;
/// Err(()) after reporting.
fn cpus_attr(v: &mut Reader<'_, '_>, diags: &mut Diagnostics) -> Result<Option<u32>, ()> {
    let Some((val, loc)) = v.optional("cpus", diags) else {
        return if v.has("cpus") { Err(()) } else { Ok(None) };
    };
    let s = want_string(val, &loc, "cpus", diags).ok_or(())?;
    match s.trim().parse::<u32>() {
        Ok(n @ 1..=255) => Ok(Some(n)),
        _ => {
            diags.push(err(
                "standby::out_of_range",
                loc,
                format!("`cpus` must be a whole number from 1 to 255, not {s}"),
                "not a CPU count",
                "write e.g. cpus = 2".into(),
            ));
            Err(())
        }
    }
}

/// Lowers the machine's `vm` block and its disks' QEMU attributes.
/// `provider` is its site's provider (None when the site is unknown: then
/// nothing is checked against it). Returns Err(()) after reporting.
pub fn machine_vm(
    r: &mut Reader<'_, '_>,
    provider: Option<&str>,
    disks: &[DiskOpts],
    diags: &mut Diagnostics,
) -> Result<Option<Vm>, ()> {
    let block = r.single_block("vm", diags);
    let is_qemu = provider == Some("qemu");
    if let (Some(p), false) = (provider, is_qemu) {
        let mut bad = false;
        if let Some(b) = block {
            diags.push(err(
                "standby::provider_mismatch",
                Loc::new(r.source(), b.ident.span()),
                format!(
                    "`vm` applies to machines at a qemu site; {}'s site has provider {p:?}",
                    r.what
                ),
                "not used by this provider",
                "move the machine to a site with provider = \"qemu\", or remove the vm block"
                    .into(),
            ));
            bad = true;
        }
        for d in disks {
            for (attr, v) in [("format", &d.format), ("node_name", &d.node_name)] {
                if let Some((_, loc)) = v {
                    diags.push(err(
                        "standby::provider_mismatch",
                        loc.clone(),
                        format!("`{attr}` of disk {:?} applies to machines at a qemu site; the site has provider {p:?}", d.name),
                        "not used by this provider",
                        format!("a {p} site reads disk files directly; remove `{attr}`"),
                    ));
                    bad = true;
                }
            }
        }
        return if bad { Err(()) } else { Ok(None) };
    }
    if !is_qemu {
        return Ok(None);
    }
    let Some(block) = block else {
        diags.push(err(
            "standby::missing_block",
            r.header.clone(),
            format!("{} is at a qemu site and has no vm block", r.what),
            "needs a vm block",
            "add vm { memory = \"256M\" kernel = \"...\" } for a VM standby runs, or vm { qmp = \"/run/qemu/NAME.qmp\" agent = \"...\" } for one it reaches".into(),
        ));
        return Err(());
    };
    let mut ok = true;
    let mut v = r.nested(block, "vm", &VM_ATTRS, &["export_tls", "tls"], diags);
    let mut socket = |v: &mut Reader<'_, '_>, attr: &str, diags: &mut Diagnostics| {
        let loc = v.value_loc(attr)?;
        let s = v.string(attr, false, diags);
        match s {
            Some(s) if s.starts_with("tcp://") => match host_port(&s["tcp://".len()..]) {
                Some((host, port)) => Some((VmSocket::Tcp(join_host_port(&host, port)), loc)),
                None => {
                    diags.push(err(
                        "standby::bad_address",
                        loc,
                        format!("`{attr}` {s:?} is not tcp://host:port"),
                        "not tcp://host:port",
                        "write the address of the VM's TLS chardev, e.g. \"tcp://hv1.example:4444\"".into(),
                    ));
                    ok = false;
                    None
                }
            },
            Some(s) if s.contains("://") => {
                diags.push(err(
                    "standby::unsupported_value",
                    loc,
                    format!("`{attr}` {s:?} is neither a unix socket path nor tcp://host:port"),
                    "unsupported scheme",
                    "give a unix socket path (\"/run/qemu/db.qmp\") or a TLS chardev on TCP (\"tcp://hv1.example:4444\" with a tls block)".into(),
                ));
                ok = false;
                None
            }
            Some(s) if s.is_empty() => {
                diags.push(err(
                    "standby::unsupported_value",
                    loc,
                    format!("`{attr}` is empty"),
                    "empty path",
                    "give the unix socket's path, or omit it for the VM standby runs".into(),
                ));
                ok = false;
                None
            }
            Some(s) => Some((VmSocket::Path(PathBuf::from(s)), loc)),
            None => {
                ok = false;
                None
            }
        }
    };
    let qmp_at = socket(&mut v, "qmp", diags);
    let agent_at = socket(&mut v, "agent", diags);
    let tls_block = v.single_block("tls", diags);
    let any_tcp = [&qmp_at, &agent_at]
        .into_iter()
        .flatten()
        .any(|(s, _)| matches!(s, VmSocket::Tcp(_)));
    let tls = match tls_block {
        None => None,
        Some(b) if !any_tcp => {
            let header = v
                .nested(b, "tls", &["ca", "cert", "key", "server_name"], &[], diags)
                .header
                .clone();
            diags.push(err(
                "standby::unsupported_value",
                header,
                "a `tls` block but no socket on TCP".into(),
                "unused tls block",
                "tls is for qmp/agent = \"tcp://host:port\" (a hypervisor on another host); remove the block for unix sockets".into(),
            ));
            ok = false;
            None
        }
        Some(b) => {
            let mut t = v.nested(b, "tls", &["ca", "cert", "key", "server_name"], &[], diags);
            let ca = t.string("ca", true, diags);
            let cert = t.string("cert", false, diags);
            let key = t.string("key", false, diags);
            let name = t.string("server_name", false, diags);
            let client = match (cert, key) {
                (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
                (None, None) => None,
                (c, _) => {
                    let (attr, other) = if c.is_some() {
                        ("cert", "key")
                    } else {
                        ("key", "cert")
                    };
                    if let Some(loc) = t.key_loc(attr) {
                        diags.push(err(
                            "standby::requires_attribute",
                            loc,
                            format!("`{attr}` needs `{other}`"),
                            "half a client identity",
                            "a client certificate and its key go together (QEMU's verify-peer=on checks them)".into(),
                        ));
                    }
                    ok = false;
                    None
                }
            };
            // The default name: the host of the first TCP socket.
            let host = [&qmp_at, &agent_at]
                .into_iter()
                .flatten()
                .find_map(|(s, _)| match s {
                    VmSocket::Tcp(a) => a
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string()),
                    VmSocket::Path(_) => None,
                });
            match (ca, name.or(host)) {
                (Some(ca), Some(server_name)) => Some(VmTls {
                    ca: ca.into(),
                    client,
                    server_name,
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let work_dir_loc = v.value_loc("work_dir");
    let work_dir = v.string("work_dir", false, diags).map(PathBuf::from);
    if let (Some(w), Some(loc)) = (&work_dir, &work_dir_loc)
        && !w.is_absolute()
    {
        diags.push(err(
            "standby::unsupported_value",
            loc.clone(),
            format!("`work_dir` {:?} is not an absolute path", w.display()),
            "relative path",
            "work_dir is an existing directory on the hypervisor (QEMU writes a point's fleece images there), e.g. \"/var/lib/standby/db\"".into(),
        ));
        ok = false;
    }
    // QMP on TCP: the hypervisor is another host.
    let remote_loc = match &qmp_at {
        Some((VmSocket::Tcp(_), loc)) => Some(loc.clone()),
        _ => None,
    };
    for (at, attr) in [(&qmp_at, "qmp"), (&agent_at, "agent")] {
        if let Some((VmSocket::Tcp(_), loc)) = at
            && tls_block.is_none()
        {
            diags.push(err(
                "standby::requires_attribute",
                loc.clone(),
                format!("`{attr}` on TCP needs a tls block"),
                "no tls block",
                "add tls { ca = \"pki/ca-cert.pem\" } (QEMU's tls-creds-x509 on the chardev): standby always verifies a remote hypervisor's certificate".into(),
            ));
            ok = false;
        }
    }
    if let (Some(loc), None) = (&remote_loc, &work_dir) {
        diags.push(err(
            "standby::requires_attribute",
            loc.clone(),
            "a VM reached over TCP needs `work_dir`".into(),
            "no work_dir",
            "add work_dir = \"/var/lib/standby/NAME\": an existing directory on the hypervisor, one per VM, for its points' fleece images".into(),
        ));
        ok = false;
    }
    let qmp = qmp_at.map(|(s, _)| s);
    let agent = agent_at.map(|(s, _)| s);
    // A string attribute with its location.
    let text = |v: &mut Reader<'_, '_>, attr: &str, diags: &mut Diagnostics| {
        let (val, loc) = v.optional(attr, diags)?;
        want_string(val, &loc, attr, diags).map(|s| (s, loc))
    };
    let memory_mib = memory_attr(&mut v, diags).unwrap_or_else(|()| {
        ok = false;
        None
    });
    let cpus = cpus_attr(&mut v, diags).unwrap_or_else(|()| {
        ok = false;
        None
    });
    let (memory_mib, cpus) = (memory_mib.unwrap_or(256), cpus.unwrap_or(1));
    let mut path_attr = |v: &mut Reader<'_, '_>, attr: &str, diags: &mut Diagnostics| {
        let present = v.has(attr);
        let s = v.string(attr, false, diags);
        if present && s.is_none() {
            ok = false;
        }
        s
    };
    let kernel = path_attr(&mut v, "kernel", diags).map(PathBuf::from);
    let initrd = path_attr(&mut v, "initrd", diags).map(PathBuf::from);
    let append = path_attr(&mut v, "append", diags);
    if kernel.is_none() {
        for attr in ["initrd", "append"] {
            if let (Some(loc), true) = (v.key_loc(attr), v.has(attr)) {
                diags.push(err(
                    "standby::requires_attribute",
                    loc,
                    format!("`{attr}` needs `kernel` (direct kernel boot)"),
                    "without a kernel",
                    "add kernel = \"...\", or remove it to boot the first disk through firmware"
                        .into(),
                ));
                ok = false;
            }
        }
    }
    let fsfreeze = v.bool_or("fsfreeze", true, diags);
    if let Some((s, loc)) = text(&mut v, "network", diags)
        && s != "none"
    {
        diags.push(err(
            "standby::unsupported_value",
            loc,
            format!("`network` {s:?} is not supported yet"),
            "not supported",
            "VMs standby runs have no network device (\"none\"); to reach a recovered VM's service, forward a port with a `forward { guest_port = ..., host_port = ... }` block in the protection's `target_vm`".into(),
        ));
        ok = false;
    }
    let export_tls = match v.single_block("export_tls", diags) {
        None => None,
        Some(b) => {
            let mut e = v.nested(
                b,
                "export_tls",
                &["listen", "creds_dir", "ca", "server_name", "cert", "key"],
                &[],
                diags,
            );
            let listen_loc = e.value_loc("listen");
            let (cert_loc, key_loc) = (e.value_loc("cert"), e.value_loc("key"));
            let cert = e.string("cert", false, diags);
            let key = e.string("key", false, diags);
            let listen = e.string("listen", true, diags);
            let creds_dir = e.string("creds_dir", true, diags);
            let ca = e.string("ca", true, diags);
            let name = e.string("server_name", false, diags);
            let host_port = listen.as_deref().and_then(host_port);
            if let (Some(l), None, Some(loc)) = (&listen, &host_port, listen_loc.clone()) {
                diags.push(err(
                    "standby::bad_address",
                    loc,
                    format!("`listen` {l:?} is not host:port"),
                    "not host:port",
                    "write the address QEMU's NBD server listens on, e.g. \"10.0.0.5:10809\""
                        .into(),
                ));
            }
            let client = match (cert, key) {
                (Some(c), Some(k)) => Some((c.into(), k.into())),
                (None, None) => None,
                _ => {
                    if let Some(loc) = cert_loc.or(key_loc) {
                        diags.push(err(
                            "standby::requires_attribute",
                            loc,
                            "`cert` and `key` go together".into(),
                            "half a client identity",
                            "give both: the certificate standby presents to QEMU's NBD server (verify-peer=on) and its private key".into(),
                        ));
                    }
                    ok = false;
                    None
                }
            };
            if let (Some((host, _)), None, Some(loc)) = (&host_port, &client, &listen_loc)
                && !is_loopback(host)
            {
                diags.push(err(
                    "standby::requires_attribute",
                    loc.clone(),
                    format!("exports on {host} need a client certificate"),
                    "not loopback",
                    "anyone who reaches this port could read the VM's disks: add cert and key (a client certificate of the CA in creds_dir); QEMU then serves standby only (verify-peer=on)".into(),
                ));
                ok = false;
            }
            match (host_port, creds_dir, ca) {
                (Some((host, port)), Some(creds_dir), Some(ca)) => Some(ExportTls {
                    listen: join_host_port(&host, port),
                    creds_dir: creds_dir.into(),
                    ca: ca.into(),
                    server_name: name.unwrap_or(host),
                    client,
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    if let (Some(loc), None) = (remote_loc, &export_tls) {
        diags.push(err(
            "standby::requires_attribute",
            loc,
            "a VM reached over TCP needs an export_tls block".into(),
            "no export_tls",
            "points are read over NBD from the hypervisor: add export_tls { listen = \"HOST:10809\" creds_dir = ... ca = ... }".into(),
        ));
        ok = false;
    }
    r.sensitive.extend(std::mem::take(&mut v.sensitive));

    let mut vm_disks = Vec::new();
    let mut seen: HashMap<String, Loc> = HashMap::new();
    for d in disks {
        let format = match &d.format {
            Some((f, loc)) => match f.as_str() {
                "qcow2" | "raw" => f.clone(),
                other => {
                    diags.push(err(
                        "standby::unsupported_value",
                        loc.clone(),
                        format!("disk {:?}: unknown image format {other:?}", d.name),
                        "not qcow2 or raw",
                        "format is \"qcow2\" (changes tracked across VM restarts) or \"raw\" (tracked while QEMU runs; a restart means a full read)".into(),
                    ));
                    ok = false;
                    continue;
                }
            },
            None if d.path.ends_with(".qcow2") || d.path.ends_with(".qcow") => "qcow2".into(),
            None => "raw".into(),
        };
        let (node, loc) = match &d.node_name {
            Some((n, loc)) => (n.clone(), loc.clone()),
            None => (d.name.clone(), d.header.clone()),
        };
        if !node_name_ok(&node) {
            let (msg, help) = if d.node_name.is_some() {
                (
                    format!("{node:?} is not a QEMU node name"),
                    "node names start with a letter, then letters, digits, '-', '_' or '.', at most 31 bytes".to_string(),
                )
            } else {
                (
                    format!("disk label {node:?} is not a QEMU node name, and no node_name is set"),
                    "set node_name = \"...\" (a letter first, then letters, digits, '-', '_' or '.', at most 31 bytes)".to_string(),
                )
            };
            diags.push(err(
                "standby::invalid_name",
                loc,
                msg,
                "not a node name",
                help,
            ));
            ok = false;
            continue;
        }
        if let Some(first) = seen.get(&node) {
            diags.push(err(
                "standby::duplicate_name",
                loc.clone(),
                format!("node name {node:?} is used by two disks of {}", r.what),
                "second disk with this node name",
                format!(
                    "the first is at {}; QEMU names each disk's node uniquely",
                    first.position()
                ),
            ));
            ok = false;
            continue;
        }
        seen.insert(node.clone(), loc);
        vm_disks.push(VmDisk {
            name: d.name.clone(),
            format,
            node_name: node,
        });
    }
    match (ok, fsfreeze) {
        (true, Some(fsfreeze)) => Ok(Some(Vm {
            qmp,
            agent,
            tls,
            work_dir,
            memory_mib,
            cpus,
            kernel,
            initrd,
            append,
            fsfreeze,
            disks: vm_disks,
            export_tls,
        })),
        _ => Err(()),
    }
}

/// `host:port` with a port from 1 to 65535 (`[v6]:port` too), the host
/// without brackets.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
    let host = h.trim_matches(['[', ']']);
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A host only this machine reaches: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host:port`, an IPv6 host in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_follow_qemu() {
        assert_eq!(parse_memory("256"), Ok(256));
        assert_eq!(parse_memory("256M"), Ok(256));
        assert_eq!(parse_memory("1G"), Ok(1024));
        assert_eq!(parse_memory("1GiB"), Ok(1024));
        assert_eq!(parse_memory("2048K"), Ok(2));
        assert!(parse_memory("1000K").is_err());
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("1X").is_err());
        assert!(parse_memory("M").is_err());
        assert_eq!(parse_memory("16T"), Ok(16 << 20));
        assert!(parse_memory("9999T").unwrap_err().contains("more than 16T"));
        assert!(parse_memory("1000000000").is_err(), "MiB past 16T");
        assert!(parse_memory("1.5G").unwrap_err().contains("1536M"));
    }

    #[test]
    fn a_remote_vm_lowers_with_tls_and_the_qmp_host_as_server_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.hcl"),
            r#"
vault "main" { url = "file://.standby/vault" }
site "hv1" {
  provider = "qemu"
  root     = "hv1"
}
machine "db" {
  site = site.hv1
  vm {
    qmp      = "tcp://hv1.example:4444"
    agent    = "tcp://[fd00::5]:4445"
    work_dir = "/var/lib/standby"
    tls {
      ca   = "pki/ca.pem"
      cert = "pki/c.pem"
      key  = "pki/k.pem"
    }
    export_tls {
      listen    = "hv1.example:10809"
      creds_dir = "/etc/pki/qemu"
      ca        = "pki/ca.pem"
      cert      = "pki/c.pem"
      key       = "pki/k.pem"
    }
  }
  disk "data" { path = "db/data.qcow2" }
}
"#,
        )
        .unwrap();
        let cfg = match super::super::load(dir.path(), &Default::default()) {
            Ok(l) => l.config,
            Err(d) => panic!("{}", d.render(false)),
        };
        let vm = cfg.machines.values().next().unwrap().vm.clone().unwrap();
        assert_eq!(vm.qmp, Some(VmSocket::Tcp("hv1.example:4444".into())));
        assert_eq!(vm.agent, Some(VmSocket::Tcp("[fd00::5]:4445".into())));
        assert_eq!(vm.work_dir, Some(PathBuf::from("/var/lib/standby")));
        assert_eq!(
            vm.tls,
            Some(VmTls {
                ca: "pki/ca.pem".into(),
                client: Some(("pki/c.pem".into(), "pki/k.pem".into())),
                server_name: "hv1.example".into(),
            })
        );
        let e = vm.export_tls.unwrap();
        assert_eq!(
            e.client,
            Some(("pki/c.pem".into(), "pki/k.pem".into())),
            "the client identity QEMU's verify-peer=on checks"
        );
        assert_eq!(e.server_name, "hv1.example");
    }

    #[test]
    fn a_qemu_machine_lowers_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.hcl"),
            r#"
vault "main" { url = "file://.standby/vault" }
site "hv1" {
  provider = "qemu"
  root     = "hv1"
}
site "dr" {
  provider = "local"
  root     = "dr"
}
policy "p" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}
machine "db" {
  site = site.hv1
  vm {
    qmp    = "/run/qemu/db.qmp"
    memory = 512
    cpus   = "2"
  }
  disk "system" { path = "db/system.qcow2" }
  disk "data" {
    path      = "db/data.img"
    node_name = "data0"
  }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}
"#,
        )
        .unwrap();
        let cfg = match super::super::load(dir.path(), &Default::default()) {
            Ok(l) => l.config,
            Err(d) => panic!("{}", d.render(false)),
        };
        let m = cfg.machines.values().next().unwrap();
        let vm = m.vm.as_ref().expect("a vm");
        assert_eq!(vm.qmp, Some(VmSocket::Path("/run/qemu/db.qmp".into())));
        assert_eq!(vm.agent, None);
        assert_eq!((vm.memory_mib, vm.cpus, vm.fsfreeze), (512, 2, true));
        assert_eq!(vm.kernel, None);
        let d: Vec<(&str, &str, &str)> = vm
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.format.as_str(), d.node_name.as_str()))
            .collect();
        assert_eq!(d, [("system", "qcow2", "system"), ("data", "raw", "data0")]);
        assert_eq!(
            cfg.sites
                .values()
                .find(|s| s.provider == "qemu")
                .unwrap()
                .root
                .as_deref(),
            Some(std::path::Path::new("hv1"))
        );
    }

    /// plans/qemu with `dr` edited: the protection's target_vm lowers to
    /// an override, and guest checks lower to their probes.
    #[test]
    fn target_vm_and_guest_checks_lower() {
        let dir = tempfile::tempdir().unwrap();
        let plans = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/qemu");
        for e in std::fs::read_dir(&plans).unwrap().flatten() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let cfg = match super::super::load(dir.path(), &Default::default()) {
            Ok(l) => l.config,
            Err(d) => panic!("{}", d.render(false)),
        };
        let db = cfg
            .protections
            .values()
            .find(|p| p.machine.to_string() == "machine.db");
        assert_eq!(
            db.and_then(|p| p.target_vm.clone()),
            Some(crate::model::VmOverride {
                memory_mib: Some(384),
                cpus: Some(1),
                forwards: vec![crate::model::PortForward {
                    host_port: 18480,
                    guest_port: 80
                }],
            })
        );
        let m = cfg
            .machines
            .values()
            .find(|m| m.addr.to_string() == "machine.db")
            .unwrap();
        assert!(matches!(
            &m.checks[0].probe,
            crate::model::Probe::Guest { command, expect: Some(e) } if command[0] == "sqlite3" && e == "ok"
        ));
        let app = cfg
            .machines
            .values()
            .find(|m| m.addr.to_string() == "machine.app")
            .unwrap();
        assert!(matches!(
            &app.checks[0].probe,
            crate::model::Probe::Console { pattern } if pattern == "standby-guest: up"
        ));
    }

    #[test]
    fn node_names_follow_qemu() {
        assert!(node_name_ok("data"));
        assert!(node_name_ok("d-1.x_y"));
        assert!(!node_name_ok("1data"));
        assert!(!node_name_ok("da ta"));
        assert!(!node_name_ok(&"a".repeat(32)));
    }
}
