//! How each model object flattens to the attribute map that `plan` diffs and
//! that `state::ObjectState.attributes` records (`apply` writes exactly these).
//!
//! Keys are stable and dotted for nested blocks; values are JSON. Durations are
//! canonical strings (`"1h30m"`), references are address strings
//! (`"site.onprem"`), commands are JSON arrays. Optional values that are unset
//! are absent, not `null`.
//!
//! | kind | keys |
//! |---|---|
//! | vault | `url`, `key_file` or `key_env` |
//! | site | `provider`, `root`, `command` |
//! | policy | `rpo_threshold`, `crash_consistent_every`, `app_consistent_every`, `retention`, `compression_level` |
//! | machine | `site`, `disk.NAME.path`, `disk.NAME.{format,node_name}` and `vm.{qmp,agent,kernel,initrd,append,memory_mib,cpus,fsfreeze}`, `vm.export_tls.{listen,creds_dir,ca,server_name,cert,key}` (qemu sites), `quiesce.{freeze,thaw,timeout}`, `boot.{command,timeout}`, `shutdown.{command,timeout}`, `check.NAME.{type,command,expect,url,status,contains,address,timeout,retries,interval}` |
//! | protection | `machine`, `target`, `vault`, `policy`, `consistency_group`, `prevent_destroy`, `target_vm.{memory_mib,cpus}`, `target_vm.forward.HOST_PORT` (the guest port) |
//! | recovery_plan | `groups` (names in order), `group.NAME.{machines,depends_on,before,after}`, `drill.{schedule,max_rto,instant}` |
//!
//! Keys starting with `observed.` (e.g. `observed.recovery_points`,
//! `observed.stored_bytes`) are recorded by replication, not configuration:
//! the diff ignores them and review notes read them.
//!
//! Sensitive values: a key named in the object's `sensitive` set (or nested
//! under such a name) never holds its value. It holds
//! `{"sensitive": "<16 hex>"}`, the first 8 bytes of a BLAKE3 hash keyed by a
//! secret that is not in the state ([`marker_key`]: derived from a vault
//! master key, else a 0600 key file under `.standby/`), so a change is still
//! detected but the value is not stored, and whoever holds only the state
//! cannot test guesses offline.
//!
//! Changes to these attributes force replacement (`-/+`, destroy then
//! create) instead of an in-place update (`~`); see [`forces_replacement`]:
//!
//! | kind | attribute | why |
//! |---|---|---|
//! | vault | `url` | another store is another vault: its points do not move |
//! | site | `provider` | a different provider manages different machines |
//! | machine | `site` | the machine's disks and change tracking live on its site |
//! | protection | `machine`, `target`, `vault` | its recovery points belong to that machine, target and vault |
//!
//! Everything else (policy values, disks, checks, recovery plan groups,
//! drills, `consistency_group`, `prevent_destroy`) is updated in place.
//!
//! `bench/gen_fleet.py` mirrors the machine and protection rules here to
//! write a matching state; keep them in step (tested by `plan_generator`).

use crate::model::{
    Address, Check, Config, KeySource, Kind, Machine, Policy, Probe, Protection, RecoveryPlan,
    Site, Step, StepAction, StepWhen, Vault,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The flattened attributes of one object.
pub type Attributes = BTreeMap<String, Value>;

/// Prefix of attributes recorded by replication rather than configuration.
pub const OBSERVED_PREFIX: &str = "observed.";

/// One desired object of any kind.
#[derive(Debug, Clone, Copy)]
pub enum ObjectRef<'a> {
    Vault(&'a Vault),
    Site(&'a Site),
    Policy(&'a Policy),
    Machine(&'a Machine),
    Protection(&'a Protection),
    RecoveryPlan(&'a RecoveryPlan),
}

impl ObjectRef<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectRef::Vault(_) => Kind::Vault,
            ObjectRef::Site(_) => Kind::Site,
            ObjectRef::Policy(_) => Kind::Policy,
            ObjectRef::Machine(_) => Kind::Machine,
            ObjectRef::Protection(_) => Kind::Protection,
            ObjectRef::RecoveryPlan(_) => Kind::RecoveryPlan,
        }
    }
}

/// Every desired object of the configuration, with its address.
pub fn desired_objects(config: &Config) -> impl Iterator<Item = (&Address, ObjectRef<'_>)> {
    let v = config.vaults.iter().map(|(a, o)| (a, ObjectRef::Vault(o)));
    let s = config.sites.iter().map(|(a, o)| (a, ObjectRef::Site(o)));
    let p = config
        .policies
        .iter()
        .map(|(a, o)| (a, ObjectRef::Policy(o)));
    let m = config
        .machines
        .iter()
        .map(|(a, o)| (a, ObjectRef::Machine(o)));
    let pr = config
        .protections
        .iter()
        .map(|(a, o)| (a, ObjectRef::Protection(o)));
    let r = config
        .recovery_plans
        .iter()
        .map(|(a, o)| (a, ObjectRef::RecoveryPlan(o)));
    v.chain(s).chain(p).chain(m).chain(pr).chain(r)
}

/// Flatten one object; sensitive values are replaced by markers keyed by
/// `key` (from [`marker_key`]).
pub fn flatten(object: ObjectRef<'_>, key: &[u8; 32]) -> Attributes {
    let (mut attrs, sensitive) = match object {
        ObjectRef::Vault(v) => (vault(v), &v.sensitive),
        ObjectRef::Site(s) => (site(s), &s.sensitive),
        ObjectRef::Policy(p) => (policy(p), &EMPTY),
        ObjectRef::Machine(m) => (machine(m), &m.sensitive),
        ObjectRef::Protection(p) => (protection(p), &EMPTY),
        ObjectRef::RecoveryPlan(r) => (recovery_plan(r), &EMPTY),
    };
    if !sensitive.is_empty() {
        for (name, value) in attrs.iter_mut() {
            if is_sensitive(name, sensitive) {
                *value = mask(key, value);
            }
        }
    }
    attrs
}

static EMPTY: BTreeSet<String> = BTreeSet::new();

/// Whether attribute `name` is `s` or nested under `s` for some `s` in the set.
fn is_sensitive(name: &str, set: &BTreeSet<String>) -> bool {
    set.iter().any(|s| {
        name == s
            || name
                .strip_prefix(s.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Why sensitive markers have no secret key.
#[derive(Debug, thiserror::Error)]
pub enum MarkerKeyError {
    #[error("no vault key can be loaded here, and {path} cannot be {op}: {source}")]
    KeyFile {
        path: std::path::PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(
        "no vault key can be loaded here, and {path} holds {len} bytes, not 32 (delete it and a new one is made)"
    )]
    WrongLength {
        path: std::path::PathBuf,
        len: usize,
    },
}

/// The first object with sensitive attributes (the subject of a note about them).
pub fn first_sensitive(config: &Config) -> Option<crate::model::Address> {
    config
        .vaults
        .values()
        .filter(|v| !v.sensitive.is_empty())
        .map(|v| v.addr.clone())
        .chain(
            config
                .sites
                .values()
                .filter(|s| !s.sensitive.is_empty())
                .map(|s| s.addr.clone()),
        )
        .chain(
            config
                .machines
                .values()
                .filter(|m| !m.sensitive.is_empty())
                .map(|m| m.addr.clone()),
        )
        .next()
}

/// The key of sensitive markers for `config` and a state of `lineage`: a
/// secret the state does not hold. Derived from the master key of the first
/// vault (by address) whose key this host can load — every operator of a
/// remote state has it — else from `.standby/fingerprint.key` (32 random
/// bytes, 0600, created on first use, written whole before it is named).
/// Markers written before this key existed (keyed by the lineage alone)
/// differ: such an attribute shows as changed once, and apply records the
/// new marker.
///
/// Errors: no vault key loads and the key file cannot be read or made, or
/// has the wrong length. There is no fallback to a key anyone holding the
/// state could compute.
pub fn marker_key(config: &Config, lineage: &uuid::Uuid) -> Result<[u8; 32], MarkerKeyError> {
    const CONTEXT: &str = "standby 2026 sensitive attribute marker v2";
    if first_sensitive(config).is_none() {
        return Ok(blake3::derive_key(CONTEXT, lineage.as_bytes()));
    }
    let secret = match config
        .vaults
        .values()
        .find_map(|v| crate::vault::keys::load(&v.key, &config.root).ok())
    {
        Some(k) => k.derive_for(CONTEXT),
        None => fingerprint_file_key(&config.root.join(".standby/fingerprint.key"))?,
    };
    let mut material = secret.to_vec();
    material.extend_from_slice(lineage.as_bytes());
    Ok(blake3::derive_key(CONTEXT, &material))
}

/// Reads (or creates, 0600) a 32-byte key file. A new key is written to a
/// temporary name, synced, then linked into place without replacing one
/// another process made meanwhile, so a crash never leaves a short key.
fn fingerprint_file_key(path: &std::path::Path) -> Result<[u8; 32], MarkerKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |op, source| MarkerKeyError::KeyFile {
        path: path.to_path_buf(),
        op,
        source,
    };
    let read = |path: &std::path::Path| match std::fs::read(path) {
        Ok(bytes) => {
            let len = bytes.len();
            bytes
                .try_into()
                .map(Some)
                .map_err(|_| MarkerKeyError::WrongLength {
                    path: path.to_path_buf(),
                    len,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("read", e)),
    };
    if let Some(key) = read(path)? {
        return Ok(key);
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err("created", e))?;
    let key: [u8; 32] = rand::random();
    let tmp = dir.join(format!(".fingerprint.key.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        // A hard link fails if another process named its key first.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| err("created", e))?;
    read(path)?.ok_or_else(|| err("read", std::io::ErrorKind::NotFound.into()))
}

fn mask(key: &[u8; 32], value: &Value) -> Value {
    let bytes = value.to_string();
    let hash = blake3::keyed_hash(key, bytes.as_bytes());
    json!({ "sensitive": hex::encode(&hash.as_bytes()[..8]) })
}

/// Whether a flattened value is a sensitive marker (renderers print `(sensitive)`).
pub fn is_marker(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key("sensitive"))
}

/// Whether a change to `attribute` forces the object to be replaced (`-/+`)
/// instead of updated in place (the table in the module doc).
pub fn forces_replacement(kind: Kind, attribute: &str) -> bool {
    matches!(
        (kind, attribute),
        (Kind::Vault, "url")
            | (Kind::Site, "provider")
            | (Kind::Machine, "site")
            | (Kind::Protection, "machine" | "target" | "vault")
    )
}

/// Addresses an object's attributes refer to directly (protection -> machine,
/// target, vault, policy; machine -> site). Recovery plans refer to machines
/// through `group.NAME.machines`; see [`plan_machines`].
pub fn references(kind: Kind, attrs: &Attributes) -> Vec<Address> {
    let keys: &[&str] = match kind {
        Kind::Protection => &["machine", "target", "vault", "policy"],
        Kind::Machine => &["site"],
        _ => &[],
    };
    keys.iter()
        .filter_map(|k| attrs.get(*k)?.as_str()?.parse().ok())
        .collect()
}

/// The machines a recovery plan's groups list.
pub fn plan_machines(attrs: &Attributes) -> Vec<Address> {
    attrs
        .iter()
        .filter(|(k, _)| k.starts_with("group.") && k.ends_with(".machines"))
        .filter_map(|(_, v)| v.as_array())
        .flatten()
        .filter_map(|m| m.as_str()?.parse().ok())
        .collect()
}

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn vault(v: &Vault) -> Attributes {
    let mut a = Attributes::new();
    a.insert("url".into(), s(&v.url));
    match &v.key {
        KeySource::File(p) => a.insert("key_file".into(), s(p.display())),
        KeySource::Env(e) => a.insert("key_env".into(), s(e)),
    };
    a
}

fn site(x: &Site) -> Attributes {
    let mut a = Attributes::new();
    a.insert("provider".into(), s(&x.provider));
    if let Some(root) = &x.root {
        a.insert("root".into(), s(root.display()));
    }
    if let Some(cmd) = &x.command {
        a.insert("command".into(), json!(cmd));
    }
    a
}

fn policy(p: &Policy) -> Attributes {
    let mut a = Attributes::new();
    a.insert("rpo_threshold".into(), s(p.rpo_threshold));
    a.insert("crash_consistent_every".into(), s(p.crash_consistent_every));
    // Absent or "off": no app-consistent points; shown as "off".
    a.insert(
        "app_consistent_every".into(),
        p.app_consistent_every.map_or_else(|| s("off"), s),
    );
    a.insert("retention".into(), s(p.retention));
    a.insert("compression_level".into(), json!(p.compression_level));
    a
}

fn machine(m: &Machine) -> Attributes {
    let mut a = Attributes::new();
    a.insert("site".into(), s(&m.site));
    for d in &m.disks {
        a.insert(format!("disk.{}.path", d.name), s(d.path.display()));
    }
    if let Some(q) = &m.quiesce {
        a.insert("quiesce.freeze".into(), json!(q.freeze));
        a.insert("quiesce.thaw".into(), json!(q.thaw));
        a.insert("quiesce.timeout".into(), s(q.timeout));
    }
    if let Some(b) = &m.boot {
        a.insert("boot.command".into(), json!(b.command));
        a.insert("boot.timeout".into(), s(b.timeout));
    }
    if let Some(b) = &m.shutdown {
        a.insert("shutdown.command".into(), json!(b.command));
        a.insert("shutdown.timeout".into(), s(b.timeout));
    }
    for c in &m.checks {
        check(&mut a, c);
    }
    if let Some(vm) = &m.vm {
        vm_attributes(&mut a, vm);
    }
    a
}

/// A qemu machine's `vm.*` keys and its disks' `format` and `node_name`.
fn vm_attributes(a: &mut Attributes, vm: &crate::model::Vm) {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| s(p.display()));
    for (k, v) in [
        ("vm.qmp", vm.qmp.as_ref().map(s)),
        ("vm.agent", vm.agent.as_ref().map(s)),
        ("vm.tls.ca", vm.tls.as_ref().map(|t| s(t.ca.display()))),
        (
            "vm.tls.server_name",
            vm.tls.as_ref().map(|t| s(&t.server_name)),
        ),
        ("vm.work_dir", path(&vm.work_dir)),
        ("vm.kernel", path(&vm.kernel)),
        ("vm.initrd", path(&vm.initrd)),
        ("vm.append", vm.append.as_ref().map(s)),
        ("vm.memory_mib", Some(json!(vm.memory_mib))),
        ("vm.cpus", Some(json!(vm.cpus))),
        ("vm.fsfreeze", Some(json!(vm.fsfreeze))),
    ] {
        if let Some(v) = v {
            a.insert(k.into(), v);
        }
    }
    if let Some(e) = &vm.export_tls {
        a.insert("vm.export_tls.listen".into(), s(&e.listen));
        a.insert("vm.export_tls.creds_dir".into(), s(e.creds_dir.display()));
        a.insert("vm.export_tls.ca".into(), s(e.ca.display()));
        a.insert("vm.export_tls.server_name".into(), s(&e.server_name));
        if let Some((cert, key)) = &e.client {
            a.insert("vm.export_tls.cert".into(), s(cert.display()));
            a.insert("vm.export_tls.key".into(), s(key.display()));
        }
    }
    for d in &vm.disks {
        a.insert(format!("disk.{}.format", d.name), s(&d.format));
        a.insert(format!("disk.{}.node_name", d.name), s(&d.node_name));
    }
}

fn check(a: &mut Attributes, c: &Check) {
    let p = format!("check.{}.", c.name);
    probe(a, &p, &c.probe);
    a.insert(format!("{p}timeout"), s(c.timeout));
    a.insert(format!("{p}retries"), json!(c.retries));
    a.insert(format!("{p}interval"), s(c.interval));
}

fn probe(a: &mut Attributes, prefix: &str, probe: &Probe) {
    match probe {
        Probe::Command { command, expect } => {
            a.insert(format!("{prefix}type"), s("command"));
            a.insert(format!("{prefix}command"), json!(command));
            if let Some(e) = expect {
                a.insert(format!("{prefix}expect"), s(e));
            }
        }
        Probe::Http {
            url,
            status,
            contains,
        } => {
            a.insert(format!("{prefix}type"), s("http"));
            a.insert(format!("{prefix}url"), s(url));
            a.insert(format!("{prefix}status"), json!(status));
            if let Some(c) = contains {
                a.insert(format!("{prefix}contains"), s(c));
            }
        }
        Probe::Tcp { address } => {
            a.insert(format!("{prefix}type"), s("tcp"));
            a.insert(format!("{prefix}address"), s(address));
        }
        Probe::Guest { command, expect } => {
            a.insert(format!("{prefix}type"), s("guest"));
            a.insert(format!("{prefix}command"), json!(command));
            if let Some(e) = expect {
                a.insert(format!("{prefix}expect"), s(e));
            }
        }
        Probe::Console { pattern } => {
            a.insert(format!("{prefix}type"), s("console"));
            a.insert(format!("{prefix}pattern"), s(pattern));
        }
    }
}

fn protection(p: &Protection) -> Attributes {
    let mut a = Attributes::new();
    a.insert("machine".into(), s(&p.machine));
    a.insert("target".into(), s(&p.target));
    a.insert("vault".into(), s(&p.vault));
    a.insert("policy".into(), s(&p.policy));
    if let Some(g) = &p.consistency_group {
        a.insert("consistency_group".into(), s(g));
    }
    a.insert("prevent_destroy".into(), json!(p.prevent_destroy));
    if let Some(v) = &p.target_vm {
        if let Some(m) = v.memory_mib {
            a.insert("target_vm.memory_mib".into(), json!(m));
        }
        if let Some(c) = v.cpus {
            a.insert("target_vm.cpus".into(), json!(c));
        }
        for f in &v.forwards {
            a.insert(
                format!("target_vm.forward.{}", f.host_port),
                json!(f.guest_port),
            );
        }
    }
    a
}

fn recovery_plan(r: &RecoveryPlan) -> Attributes {
    let mut a = Attributes::new();
    let names: Vec<&str> = r.groups.iter().map(|g| g.name.as_str()).collect();
    a.insert("groups".into(), json!(names));
    for g in &r.groups {
        let p = format!("group.{}.", g.name);
        let machines: Vec<String> = g.machines.iter().map(|m| m.to_string()).collect();
        a.insert(format!("{p}machines"), json!(machines));
        if !g.depends_on.is_empty() {
            a.insert(format!("{p}depends_on"), json!(g.depends_on));
        }
        if !g.before.is_empty() {
            a.insert(format!("{p}before"), steps(&g.before));
        }
        if !g.after.is_empty() {
            a.insert(format!("{p}after"), steps(&g.after));
        }
    }
    if let Some(d) = &r.drill {
        a.insert("drill.schedule".into(), s(d.schedule));
        a.insert("drill.max_rto".into(), s(d.max_rto));
        // Shown only when set, so existing plans' attributes do not change.
        if d.instant {
            a.insert("drill.instant".into(), Value::Bool(true));
        }
    }
    a
}

fn steps(steps: &[Step]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|st| {
                let mut a = Attributes::new();
                a.insert("name".into(), s(&st.name));
                a.insert("timeout".into(), s(st.timeout));
                // Only when not the default, so earlier states still match.
                match st.when {
                    StepWhen::Failover => {}
                    StepWhen::Failback => drop(a.insert("when".into(), s("failback"))),
                    StepWhen::Always if !matches!(st.action, StepAction::Check(_)) => {
                        drop(a.insert("when".into(), s("always")))
                    }
                    StepWhen::Always => {}
                }
                match &st.action {
                    StepAction::Script { command } => {
                        a.insert("type".into(), s("script"));
                        a.insert("command".into(), json!(command));
                    }
                    StepAction::Manual { instructions } => {
                        a.insert("type".into(), s("manual"));
                        a.insert("instructions".into(), s(instructions));
                    }
                    StepAction::Check(p) => {
                        a.insert("type".into(), s("check"));
                        probe(&mut a, "", p);
                        // `type` from the probe would clash with the step type.
                        if let Some(t) = a.remove("type") {
                            a.insert("probe".into(), t);
                        }
                        a.insert("type".into(), s("check"));
                    }
                }
                Value::Object(a.into_iter().collect())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Duration;

    #[test]
    fn sensitive_names_match_themselves_and_nested_keys_only() {
        let set: BTreeSet<String> = ["check.api".to_string()].into();
        assert!(is_sensitive("check.api", &set));
        assert!(is_sensitive("check.api.url", &set));
        assert!(!is_sensitive("check.apix.url", &set));
        assert!(!is_sensitive("site", &set));
    }

    /// A configuration rooted at `root` whose exec site's command is sensitive.
    fn with_sensitive_site(root: &std::path::Path) -> Config {
        let mut cfg = Config {
            root: root.to_path_buf(),
            ..Config::default()
        };
        let site = Site {
            addr: Address::new(Kind::Site, "dr"),
            provider: "exec".into(),
            root: None,
            command: Some(vec!["x".into()]),
            host: None,
            sensitive: ["command".to_string()].into(),
        };
        cfg.sites.insert(site.addr.clone(), site);
        cfg
    }

    #[test]
    fn the_marker_key_is_a_secret_not_in_the_state() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lineage = uuid::Uuid::from_u128(7);
        let mut cfg = with_sensitive_site(dir.path());
        // What the state alone lets anyone compute: the old key.
        let from_state = blake3::derive_key(
            "standby 2026 sensitive attribute marker",
            lineage.as_bytes(),
        );
        // No vault key here: a 0600 key file, stable across calls.
        let filed = marker_key(&cfg, &lineage).unwrap();
        let key_file = dir.path().join(".standby/fingerprint.key");
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(filed, marker_key(&cfg, &lineage).unwrap());
        assert_ne!(filed, from_state);
        // With a vault key (what remote-state operators share): from it.
        let name = "ATTRIBUTES_TEST_MARKER_VAULT_KEY";
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var(name, "ab".repeat(32)) };
        let vault = Vault {
            addr: Address::new(Kind::Vault, "main"),
            url: "file://v".into(),
            key: KeySource::Env(name.into()),
            sensitive: BTreeSet::new(),
        };
        cfg.vaults.insert(vault.addr.clone(), vault);
        let keyed = marker_key(&cfg, &lineage).unwrap();
        assert_ne!(keyed, filed);
        assert_ne!(keyed, from_state);
        std::fs::remove_file(&key_file).unwrap();
        assert_eq!(
            keyed,
            marker_key(&cfg, &lineage).unwrap(),
            "no key file needed"
        );
        assert!(!key_file.exists());
    }

    /// No secret: an error, never the key the lineage alone would give.
    #[test]
    fn without_a_secret_the_marker_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let lineage = uuid::Uuid::from_u128(7);
        let cfg = with_sensitive_site(dir.path());
        // A key file a crash left short.
        std::fs::create_dir_all(dir.path().join(".standby")).unwrap();
        std::fs::write(dir.path().join(".standby/fingerprint.key"), b"short").unwrap();
        let e = marker_key(&cfg, &lineage).unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes, not 32"), "{e}");
        // `.standby` is a file: no key file can be made.
        std::fs::remove_dir_all(dir.path().join(".standby")).unwrap();
        std::fs::write(dir.path().join(".standby"), b"").unwrap();
        let e = marker_key(&cfg, &lineage).unwrap_err().to_string();
        assert!(e.contains("fingerprint.key cannot be"), "{e}");
        // The plan then notes it and shows the attribute as changed.
        let plan = crate::plan::diff(&cfg, None, &Default::default());
        assert!(
            plan.notes
                .iter()
                .any(|n| n.kind == crate::plan::NoteKind::SensitiveUncompared),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn sensitive_values_are_masked_and_keyed_by_a_secret() {
        let site = Site {
            addr: Address::new(Kind::Site, "dr"),
            provider: "exec".into(),
            root: None,
            command: Some(vec!["deploy".into(), "--token=hunter2".into()]),
            host: None,
            sensitive: ["command".to_string()].into(),
        };
        let l1 = [1u8; 32];
        let l2 = [2u8; 32];
        let a = flatten(ObjectRef::Site(&site), &l1);
        assert!(is_marker(&a["command"]));
        assert!(!a["command"].to_string().contains("hunter2"));
        assert_eq!(a["provider"], "exec");
        let b = flatten(ObjectRef::Site(&site), &l2);
        assert_ne!(a["command"], b["command"]);
        assert_eq!(a, flatten(ObjectRef::Site(&site), &l1));
    }

    #[test]
    fn policy_durations_are_canonical_strings() {
        let p = Policy {
            addr: Address::new(Kind::Policy, "p"),
            rpo_threshold: Duration::from_secs(900),
            crash_consistent_every: Duration::from_secs(300),
            app_consistent_every: None,
            retention: Duration::from_secs(86_400),
            compression_level: 1,
        };
        let a = flatten(ObjectRef::Policy(&p), &[0; 32]);
        assert_eq!(a["rpo_threshold"], "15m");
        assert_eq!(a["retention"], "1d");
        assert_eq!(a["app_consistent_every"], "off");
    }
}
