//! What each apply step does, by kind and operation, and how it is
//! recorded: every finished step is written to state at once (under the
//! lock held for the whole run), so a crash at any instant leaves state
//! true to what happened. Every step is safe to run again after an
//! interruption: vault init opens an existing vault; enabling a protection
//! adopts the points an interrupted enable already wrote instead of taking
//! another; destroying a protection deletes whatever points are left.
//! Members of one consistency group enabled in the same run take ONE first
//! point together (`replication::take_points` on all their targets: all
//! freezes, one instant, all thaws), as `replicate` does.

use crate::exec::StepError;
use crate::human::size as human;
use crate::model::{Address, KeySource, Kind};
use crate::plan::{Action, Attributes, Change, StepOp, attributes::OBSERVED_PREFIX};
use crate::replication::{self, Options, Progress, ReplicationError, batch::target_for};
use crate::state::{ObjectState, StateDoc, StateLock, Status};
use crate::vault::{Vault, manifest, prune};
use crate::workspace::{Workspace, points_in};
use serde_json::json;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One node of the apply graph.
#[derive(Debug, Clone)]
pub struct ApplyStep {
    pub address: Address,
    pub op: StepOp,
    /// Index into the plan's changes.
    pub change: usize,
}

impl fmt::Display for ApplyStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            StepOp::Create => "create",
            StepOp::Update => "update",
            StepOp::Delete => "delete",
        };
        write!(f, "{op} {}", self.address)
    }
}

/// Everything the steps share.
pub struct Context {
    /// The configuration, the state backend and the vaults opened so far.
    pub ws: Arc<Workspace>,
    pub changes: Vec<Change>,
    pub lock: StateLock,
    /// The state as last written; the mutex also serialises writes.
    pub doc: Mutex<StateDoc>,
    /// Attributes as recorded when the run began: the create half of a
    /// replace applies its change to these (its delete half removed them).
    initial: HashMap<Address, Attributes>,
    /// Set on interrupt: a first replication still running stops before it
    /// writes a point (the step is abandoned; the next apply takes it).
    pub cancel: Arc<AtomicBool>,
    /// One mutex per (vault, consistency group): the first member's enable
    /// takes the group's first point for every member enabled in this run,
    /// the others wait for it and find theirs.
    groups: Mutex<HashMap<(Address, String), GroupGate>>,
    /// Points taken by a group's batch in this run, by protection.
    batched: Mutex<HashMap<Address, String>>,
}

/// Held while a consistency group's first point is taken.
type GroupGate = Arc<Mutex<()>>;

impl Context {
    pub fn new(
        ws: Arc<Workspace>,
        changes: Vec<Change>,
        lock: StateLock,
        doc: StateDoc,
    ) -> Context {
        let initial = doc
            .objects
            .iter()
            .map(|(a, o)| (a.clone(), o.attributes.clone()))
            .collect();
        Context {
            cancel: Arc::new(AtomicBool::new(false)),
            initial,
            ws,
            changes,
            lock,
            doc: Mutex::new(doc),
            groups: Mutex::new(HashMap::new()),
            batched: Mutex::new(HashMap::new()),
        }
    }

    /// Run one step (blocking) and record it; `Ok` holds a few words on what it did.
    pub fn run(&self, step: &ApplyStep) -> Result<String, StepError> {
        let change = &self.changes[step.change];
        match (step.address.kind, step.op) {
            (_, StepOp::Delete) => self.delete(&step.address),
            (Kind::Vault, StepOp::Create) => self.create_vault(change),
            (Kind::Vault, StepOp::Update) => self.update_vault(change),
            (Kind::Protection, StepOp::Create) => return self.enable(change),
            (_, StepOp::Create | StepOp::Update) => self.record_as_configured(change),
        }
        .map_err(StepError::Failed)
    }

    /// Write `change` into the state document and the backend.
    fn record(&self, f: impl FnOnce(&mut StateDoc)) -> Result<(), String> {
        let mut doc = self
            .doc
            .lock()
            .map_err(|_| "the state lock was poisoned by a failed step".to_string())?;
        let mut next = doc.clone();
        f(&mut next);
        let backend = self.ws.backend().map_err(|e| e.to_string())?;
        backend
            .write(&self.lock, &mut next)
            .map_err(|e| format!("cannot record the step in state: {e}"))?;
        *doc = next;
        Ok(())
    }

    fn before(&self, address: &Address) -> Option<ObjectState> {
        self.doc.lock().ok()?.objects.get(address).cloned()
    }

    /// Store `attrs` for the change's object with `status`.
    fn store(&self, change: &Change, attrs: Attributes, status: Status) -> Result<(), String> {
        self.record(|doc| {
            doc.objects.insert(
                change.address.clone(),
                ObjectState {
                    kind: change.kind,
                    attributes: attrs,
                    status,
                    updated_at: time::OffsetDateTime::now_utc(),
                },
            );
        })
    }

    /// The attributes after the change, keeping what replication observed.
    fn after(&self, change: &Change) -> Result<(Attributes, Option<Status>), String> {
        let before = self.before(&change.address);
        // A replace lists only the attributes that differ: apply them to
        // what was recorded before its delete half ran.
        let base = match (&before, &change.action) {
            (Some(b), _) => Some(&b.attributes),
            (None, Action::Replace { .. }) => self.initial.get(&change.address),
            (None, _) => None,
        };
        let mut attrs = change
            .after(base)
            .ok_or_else(|| format!("{} has no attributes after the change", change.address))?;
        if let Some(b) = &before {
            for (k, v) in &b.attributes {
                if k.starts_with(OBSERVED_PREFIX) {
                    attrs.insert(k.clone(), v.clone());
                }
            }
        }
        Ok((attrs, before.map(|b| b.status)))
    }

    /// Policies, sites, machines, recovery plans, and protection updates:
    /// nothing to do outside state.
    fn record_as_configured(&self, change: &Change) -> Result<String, String> {
        let (mut attrs, status) = self.after(change)?;
        let status = status.unwrap_or(Status::Ready);
        if change.kind == Kind::Machine {
            self.disk_sizes(&change.address, &mut attrs);
        }
        self.store(change, attrs, status)?;
        Ok("recorded".to_string())
    }

    /// Record the sizes of a machine's disks as found now (for drift).
    fn disk_sizes(&self, address: &Address, attrs: &mut Attributes) {
        let Some(m) = self.ws.config.machines.get(address) else {
            return;
        };
        let Some(root) = self.ws.site_root(&m.site) else {
            return;
        };
        for d in &m.disks {
            let qcow2 = m.vm.as_ref().is_some_and(|vm| {
                vm.disks
                    .iter()
                    .any(|v| v.name == d.name && v.format == "qcow2")
            });
            if let Ok(size) = crate::replication::disk::guest_size(&root.join(&d.path), qcow2) {
                attrs.insert(format!("observed.disk.{}.size", d.name), json!(size));
            }
        }
    }

    fn create_vault(&self, change: &Change) -> Result<String, String> {
        let v = self
            .ws
            .config
            .vaults
            .get(&change.address)
            .ok_or_else(|| format!("no {} in the configuration", change.address))?;
        let out = Vault::init(&v.url, &v.key, &self.ws.config.root).map_err(|e| e.to_string())?;
        let mut detail = if out.existed {
            format!("vault {} exists already and the key opens it", v.url)
        } else {
            format!("created vault {}", v.url)
        };
        if let Some(p) = &out.key_created {
            detail.push_str(&format!(
                "; wrote a new master key to {} (back it up: without it nothing in the vault can be read)",
                p.display()
            ));
        }
        self.ws.keep_vault(&change.address, out.vault);
        let (mut attrs, _) = self.after(change)?;
        attrs.insert("observed.present".into(), json!(true));
        self.store(change, attrs, Status::Ready)?;
        Ok(detail)
    }

    /// A vault update: when its key source changes (`key_file`, `key_env`),
    /// the new source must load a key that opens the vault as it is (its
    /// data stays sealed with the key it was created with); otherwise
    /// nothing is recorded, and every later command still opens it.
    fn update_vault(&self, change: &Change) -> Result<String, String> {
        let rekeyed = change
            .attributes
            .iter()
            .any(|a| a.name == "key_file" || a.name == "key_env");
        if rekeyed {
            let v = self
                .ws
                .config
                .vaults
                .get(&change.address)
                .ok_or_else(|| format!("no {} in the configuration", change.address))?;
            let todo = match &v.key {
                KeySource::File(f) => format!(
                    "To keep the key elsewhere, copy the current key file to {} first (the file only moves, the key stays), then apply again",
                    f.display()
                ),
                KeySource::Env(e) => format!(
                    "To read the key from {e}, set {e} to the current key first, then apply again"
                ),
            };
            self.ws.reopen(&change.address).map_err(|e| {
                let e = match e {
                    crate::workspace::WorkspaceError::Vault { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                format!(
                    "{}: the new key source does not open the vault, so nothing was recorded: {e}. {}",
                    change.address,
                    todo
                )
            })?;
        }
        self.record_as_configured(change)
    }

    /// Open the vault at `address`: as configured, or as recorded in state
    /// when the configuration no longer has it (a destroy).
    fn vault(&self, address: &Address) -> Result<Arc<Vault>, String> {
        let doc = self.doc.lock().ok().map(|d| d.clone());
        self.ws
            .vault_as_recorded(address, doc.as_ref())
            .map_err(|e| e.to_string())
    }

    /// Enable a protection: its first recovery point, then record it as
    /// protected. Points an interrupted enable already wrote are adopted,
    /// so repeating the step never takes a second initial point.
    fn enable(&self, change: &Change) -> Result<String, StepError> {
        let addr = &change.address;
        let failed = StepError::Failed;
        let p = self
            .ws
            .config
            .protections
            .get(addr)
            .ok_or_else(|| failed(format!("no {addr} in the configuration")))?;
        let vault = self.vault(&p.vault).map_err(failed)?;
        // The machine's catalog, not every manifest of the vault.
        let machine = p.machine.to_string();
        // Only this state's own points are adopted, never another
        // configuration's nor one without an owner (`vault claim`).
        let mine = |vault: &Vault| {
            points_in(vault, addr, &machine)
                .map(|ps| ps.into_iter().filter(|m| vault.owns(m)).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        // Members of a consistency group take their first point together:
        // hold the group's mutex while looking and taking.
        let group_lock = p.consistency_group.as_ref().map(|g| {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups
                .entry((p.vault.clone(), g.clone()))
                .or_default()
                .clone()
        });
        let _held = group_lock
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut points = mine(&vault).map_err(failed)?;
        let batched = self.batched.lock().ok().and_then(|b| b.get(addr).cloned());
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let elsewhere =
            crate::recovery::placement::other_host(&self.ws.config, None, &machine, &host);
        let detail = if let (Some(detail), false) = (batched, points.is_empty()) {
            detail
        } else if let (Some(why), true) = (elsewhere, points.is_empty()) {
            format!(
                "no first point taken here: {why}; the `replicate --watch` service there takes it"
            )
        } else if points.is_empty() {
            let members = self.enabled_with(addr, &vault).map_err(failed)?;
            let targets = members
                .iter()
                .map(|a| target_for(&self.ws.config, a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed(e.to_string()))?;
            let mut opts = Options::new(self.ws.cache_dir());
            opts.cancel = Some(self.cancel.clone());
            // A service that already replicates the batch is not raced.
            opts.lease = replication::Lease::Take;
            let made = replication::take_points(&vault, &targets, &opts, &Progress::default())
                .map_err(|e| match e {
                    ReplicationError::Cancelled => StepError::Abandoned(
                        "interrupted before its first point was written; the next apply takes it"
                            .to_string(),
                    ),
                    e => failed(e.to_string()),
                })?;
            let describe = |m: &manifest::Manifest| {
                let with = match (&m.group, members.len()) {
                    (Some(g), n) if n > 1 => format!(
                        ", taken with group {g} ({n} protections, one instant {})",
                        crate::human::time_str(&m.created)
                    ),
                    _ => String::new(),
                };
                format!(
                    "first point {} ({}), read {}, stored {}{with}",
                    m.id.short(),
                    m.consistency,
                    human(m.stats.read),
                    human(m.stats.stored)
                )
            };
            if let Ok(mut b) = self.batched.lock() {
                for (a, m) in members.iter().zip(&made).skip(1) {
                    b.insert(a.clone(), describe(m));
                }
            }
            let detail = made.first().map(describe).unwrap_or_default();
            points = made.into_iter().take(1).collect();
            detail
        } else {
            format!(
                "adopted {} already in the vault (an earlier run was interrupted after taking them)",
                crate::human::count(points.len(), "point")
            )
        };
        let (mut attrs, _) = self.after(change).map_err(failed)?;
        attrs.insert("observed.recovery_points".into(), json!(points.len()));
        let stored: u64 = points.iter().map(|m| m.stats.stored).sum();
        attrs.insert("observed.stored_bytes".into(), json!(stored));
        if let Some(newest) = points.iter().max_by(|a, b| a.created.cmp(&b.created)) {
            attrs.insert("observed.newest_point".into(), json!(newest.created));
        }
        self.store(change, attrs, Status::Protected)
            .map_err(failed)?;
        Ok(detail)
    }

    /// The protections whose first point `addr` takes: itself first, then
    /// the other members of its consistency group (same vault) that this
    /// run enables and that have no point yet.
    fn enabled_with(&self, addr: &Address, vault: &Vault) -> Result<Vec<Address>, String> {
        let mut out = vec![addr.clone()];
        let Some(group) = self
            .ws
            .config
            .protections
            .get(addr)
            .and_then(|p| Some((p.vault.clone(), p.consistency_group.clone()?)))
        else {
            return Ok(out);
        };
        for c in &self.changes {
            // A replaced member's delete half may not have run yet: it
            // takes its own point, after its old ones are gone.
            if c.kind != Kind::Protection || c.action != Action::Create || c.address == *addr {
                continue;
            }
            let Some(p) = self.ws.config.protections.get(&c.address) else {
                continue;
            };
            if p.vault != group.0 || p.consistency_group.as_ref() != Some(&group.1) {
                continue;
            }
            // Only this member's catalog, not every manifest of the vault.
            let mine =
                points_in(vault, &c.address, &p.machine.to_string()).map_err(|e| e.to_string())?;
            if !mine.iter().any(|m| vault.owns(m)) {
                out.push(c.address.clone());
            }
        }
        Ok(out)
    }

    fn delete(&self, address: &Address) -> Result<String, String> {
        let mut detail = "removed from state".to_string();
        if address.kind == Kind::Protection {
            let vault_addr: Option<Address> = self
                .before(address)
                .and_then(|o| o.attributes.get("vault")?.as_str()?.parse().ok());
            if let Some(va) = vault_addr {
                let vault = self.vault(&va)?;
                let r = prune::drop_protection(&vault, &address.to_string(), LOCK_WAIT)
                    .map_err(|e| e.to_string())?;
                detail = format!(
                    "deleted {} from {va}, freed {}",
                    crate::human::count(r.dropped.len(), "recovery point"),
                    human(r.bytes_freed)
                );
            }
        } else if address.kind == Kind::Vault {
            detail = "forgotten; the vault's data was left where it is".to_string();
        }
        self.record(|doc| {
            doc.objects.remove(address);
        })?;
        Ok(detail)
    }
}

/// How long a destroy waits for running replications to release the vault.
const LOCK_WAIT: Duration = Duration::from_secs(600);
