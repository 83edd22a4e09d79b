//! Taking recovery points: quiesce, change detection at 4 KiB, and the
//! read -> hash -> compress -> seal -> upload pipeline into the vault; and
//! restoring a point's disk.
//!
//! Public entry points: [`take_points`] (one point instant for a list of
//! targets — a consistency group, or a single protection) and
//! [`restore::restore_disk`], and [`resync::restore_onto`] (only the blocks
//! that differ, onto an existing disk).

pub mod batch;
pub mod capture;
pub mod ctk;
pub mod disk;
pub mod quiesce;
pub mod restore;
pub mod resync;
pub mod snapshot;
pub mod target;
pub mod vm;

use crate::model;
use crate::vault::manifest::{self, Consistency, Manifest, Stats};
use crate::vault::pack::PackWriter;
use crate::vault::{Id, Vault, VaultError, index};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use batch::{Batch, BatchError, batches, target_for};
pub use restore::{Restored, restore_checked, restore_disk};
pub use resync::{Basis, Resynced, restore_onto, restore_onto_export};

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("freeze of {machine} failed: {reason}; no point was taken (thaw has run)")]
    Freeze {
        machine: String,
        reason: quiesce::HookError,
    },
    #[error("thaw of {machine} failed: {reason}; check the machine, no point was taken")]
    Thaw {
        machine: String,
        reason: quiesce::HookError,
    },
    #[error("the capture was abandoned on request; no point was taken")]
    Cancelled,
    #[error(
        "VM {machine}: {detail}; no point was taken (change tracking keeps every change for the next one)"
    )]
    Vm { machine: String, detail: String },
    #[error("disk {disk} through its NBD export: {detail}")]
    Export { disk: String, detail: String },
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error(
        "a prune ran while this point was written and {what}; no point was taken (the next one stores what it needs again)"
    )]
    PrunedMeanwhile { what: String },
    #[error(transparent)]
    Lease(#[from] crate::vault::lease::LeaseError),
}

pub use crate::progress::Progress;

/// One machine to capture.
#[derive(Debug, Clone)]
pub struct Target {
    /// Protection address, e.g. `protection.db`.
    pub protection: String,
    /// Machine address, e.g. `machine.db`.
    pub machine: String,
    pub group: Option<String>,
    /// (disk name, path to read).
    pub disks: Vec<(String, PathBuf)>,
    /// Freeze/thaw hooks; used when `app` is set.
    pub quiesce: Option<model::Quiesce>,
    /// Take an app-consistent point (needs `quiesce`).
    pub app: bool,
    /// zstd level for this point's data.
    pub level: i32,
    /// The site whose disks these are (`site.onprem`; the DR site once the
    /// machine is reprotected there); recorded in the point's manifest.
    pub site: Option<String>,
    /// A QEMU VM read through changed-block tracking instead of its disk
    /// files (a machine at a `qemu` site); see [`vm`].
    pub vm: Option<vm::VmTarget>,
}

impl Target {
    /// A target from the model: disks resolve against `site_root`; the point
    /// is app-consistent when the machine has quiesce hooks and the policy
    /// asks for app-consistent points.
    pub fn from_model(
        protection: &model::Protection,
        machine: &model::Machine,
        policy: &model::Policy,
        site_root: &Path,
    ) -> Target {
        Target {
            protection: protection.addr.to_string(),
            machine: machine.addr.to_string(),
            group: protection.consistency_group.clone(),
            disks: machine
                .disks
                .iter()
                .map(|d| (d.name.clone(), site_root.join(&d.path)))
                .collect(),
            quiesce: machine.quiesce.clone(),
            app: (machine.quiesce.is_some() || machine.vm.as_ref().is_some_and(|v| v.fsfreeze))
                && policy.app_consistent_every.is_some(),
            level: policy.compression_level,
            site: Some(machine.site.to_string()),
            vm: machine
                .vm
                .as_ref()
                .map(|v| vm::VmTarget::from_model(machine, v, site_root)),
        }
    }
}

/// Where local state lives and how long to wait for a busy vault.
#[derive(Debug, Clone)]
pub struct Options {
    /// Change-tracking cache and staging area (`.standby/cache`).
    pub cache_dir: PathBuf,
    /// When set (e.g. on SIGTERM), the capture stops before its next disk
    /// and before writing anything that would make a point: no point is
    /// taken. Freeze and thaw are never cut short.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Machine address -> the point to diff against instead of its newest
    /// (reprotect: the point the replica was restored from).
    pub baseline: HashMap<String, Id>,
    /// Machine address -> the site the machine moves to from this point (a
    /// planned failover's or a failback's final point), recorded in its
    /// manifest as `moves_to`.
    pub moves_to: HashMap<String, String>,
    /// Which lease the capture holds for its batch (docs/VAULT.md, "Leases").
    pub lease: Lease,
}

/// The lease a capture holds on its batch (a consistency group, or a
/// protection alone), so that one service at a time writes its points.
#[derive(Debug, Clone, Default)]
pub enum Lease {
    /// None: recovery runs (a planned failover's final points, reprotect,
    /// failback), which their run lock serializes and which the services
    /// stand aside for.
    #[default]
    Ignore,
    /// Take the lease for this call (renewed while it runs, released at
    /// the end); refused, naming the holder, while a live service holds it.
    Take,
    /// A `replicate --watch` service holds it: confirmed right before the
    /// manifests are written.
    Held(Arc<crate::vault::lease::Leases>),
}

/// The lease as a capture holds it, and the writer its manifests record.
struct Commit<'a> {
    guard: Option<crate::vault::lease::Guard>,
    held: Option<(&'a crate::vault::lease::Leases, String)>,
    writer: String,
}

impl Commit<'_> {
    fn confirm(&self) -> Result<(), ReplicationError> {
        if let Some(g) = &self.guard {
            g.confirm()?;
        }
        if let Some((l, unit)) = &self.held {
            l.confirm(unit)?;
        }
        Ok(())
    }
}

fn commit_for<'a>(
    vault: &Vault,
    targets: &[Target],
    lease: &'a Lease,
) -> Result<Commit<'a>, ReplicationError> {
    use crate::vault::lease::{Guard, Holder, LeaseError, Leases, Timing, unit};
    let unit = targets
        .first()
        .map(|t| unit(t.group.as_deref(), &t.protection))
        .unwrap_or_default();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    Ok(match lease {
        Lease::Ignore => Commit {
            guard: None,
            held: None,
            writer: Holder::this_process("-", &host).tag(),
        },
        Lease::Take => {
            let id = format!("cmd-{}", hex::encode(rand::random::<[u8; 4]>()));
            let me = Holder::this_process(&id, &host);
            let writer = me.tag();
            let leases = Arc::new(Leases::new(vault, me, Timing::default()));
            Commit {
                guard: Some(Guard::take(leases, &unit)?),
                held: None,
                writer,
            }
        }
        Lease::Held(l) => {
            if !l.holds(&unit) {
                return Err(LeaseError::Lost { unit }.into());
            }
            Commit {
                guard: None,
                writer: l.me().tag(),
                held: Some((l, unit)),
            }
        }
    })
}

impl Options {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Options {
        Options {
            cache_dir: cache_dir.into(),
            cancel: None,
            baseline: HashMap::new(),
            moves_to: HashMap::new(),
            lease: Lease::Ignore,
        }
    }

    fn check_cancel(&self) -> Result<(), ReplicationError> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ReplicationError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Take one point instant for all `targets` (a consistency group when they
/// share one): freeze all that ask for it, stage their disks, thaw all, then
/// capture. Writes packs, one index, then the manifests (last). Returns the
/// manifests written, in target order.
pub fn take_points(
    vault: &Vault,
    targets: &[Target],
    opts: &Options,
    progress: &Progress,
) -> Result<Vec<Manifest>, ReplicationError> {
    opts.check_cancel()?;
    // No lock: writers never wait for each other or for prune; what a
    // prune may have done meanwhile is checked before the manifests
    // ([`confirm_commit`]).
    // Before anything else: a batch another service holds costs nothing.
    let commit = commit_for(vault, targets, &opts.lease)?;
    // Bounded reads (see docs/VAULT.md): the catalog names each machine's
    // newest point; the index comes from the local cache plus a few new
    // objects, enough to deduplicate against.
    crate::vault::catalog::ensure(vault)?;
    let idx = index::load_cached(vault, &opts.cache_dir, Some(index::FETCH_FOR_DEDUP))?;
    let mut full_idx: Option<crate::vault::Index> = None;
    let mut cache: HashMap<Id, Manifest> = HashMap::new();
    // Each head as read here, so the point switches it with one write.
    let mut seen = crate::vault::catalog::Seen::default();

    // Previous hashes per (target, disk), prepared before any freeze so the
    // freeze window does not pay for a rebuilt cache.
    let mut prevs: Vec<Vec<Option<capture::Hashes>>> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    for t in targets {
        let last = match opts.baseline.get(&t.machine) {
            Some(id) => match manifest::read(vault, id) {
                Ok(m) => Some(m),
                Err(VaultError::Missing { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => crate::vault::catalog::newest_seen(vault, &t.machine, &mut seen)?,
        };
        let last = last.as_ref();
        // The new point's place in the chain: after the point it builds on.
        seqs.push(last.map_or(0, |m| m.seq.unwrap_or(0)) + 1);
        let mut per_disk = Vec::new();
        for (name, _) in &t.disks {
            let prev = match last.filter(|m| m.disks.contains_key(name)) {
                None => None,
                Some(m) => {
                    let p = ctk::path(&opts.cache_dir, &vault.id, &t.machine, name);
                    match ctk::load(&p, &m.id) {
                        Some(h) => Some(h),
                        None => {
                            // Reading a point back needs the whole index.
                            if full_idx.is_none() {
                                full_idx = Some(index::load_cached(vault, &opts.cache_dir, None)?);
                            }
                            let full = full_idx.as_ref().unwrap_or(&idx);
                            Some(ctk::rebuild(vault, full, m, name, &mut cache)?)
                        }
                    }
                }
            };
            per_disk.push(prev);
        }
        prevs.push(per_disk);
    }

    // The point instant: freeze everything that asks, stage, thaw everything.
    let created = crate::vault::clock::now();
    let staging_root = opts.cache_dir.join("staging");
    sweep_staging(&staging_root);
    // Named by our pid, so a later run can tell when we are gone.
    let staging = staging_root.join(format!(
        "{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let any_app = targets
        .iter()
        .any(|t| t.app && t.quiesce.is_some() && t.vm.is_none());
    let mut sources: Vec<Vec<PathBuf>> = targets
        .iter()
        .map(|t| t.disks.iter().map(|(_, p)| p.clone()).collect())
        .collect();
    // VMs: their own freeze, snapshot and thaw (all VMs of the batch
    // together), before the file targets' instant.
    tracing::debug!("index, points and previous hashes loaded");
    let mut session = vm::begin(targets, &prevs, &opts.cache_dir, &vault.id)?;
    let started = Instant::now();
    let r = snapshot_all(targets, &staging, &mut sources);
    let freeze_ms = any_app.then(|| started.elapsed().as_millis() as u64);
    let windows = match r {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = session.finish(targets, None, &opts.cache_dir, &vault.id);
            return Err(e);
        }
    };
    let result = capture_all(
        vault,
        &idx,
        targets,
        &sources,
        &prevs,
        progress,
        created,
        freeze_ms,
        opts,
        &windows,
        &mut session,
        &seqs,
        &mut seen,
        &commit,
    );
    let _ = std::fs::remove_dir_all(&staging);
    // Commit (old bitmap generations deleted) only once the manifests are
    // in the vault; else merge them back.
    if let Err(e) = session.finish(targets, result.as_deref().ok(), &opts.cache_dir, &vault.id) {
        // The points are stored; a generation left behind is merged by the
        // next point's sweep (a superset of the changes: nothing lost).
        tracing::warn!("closing the VM point: {e}");
    }
    result
}

/// The one check between a point's data and its manifests: the last
/// thing before the manifests are written (a lease check belongs here too).
///
/// Writers take no lock. A prune that ran since `idx` was loaded (its
/// generation changed) may have marked packs these points reuse, or
/// dropped a point they build on: then every blob the points reference
/// must still be listed by an index object proper (not only by a garbage
/// mark), every pack this point wrote must still exist (a point that took
/// longer than the grace period may have had a pack not yet indexed
/// marked, then deleted) and every parent must exist, or nothing is
/// committed. Without a
/// generation change no prune marked anything since, and any mark made
/// from now on is deleted only a grace period later, by a prune that
/// lists these manifests first (docs/VAULT.md, "Prune"). One request
/// when no prune ran.
fn confirm_commit(
    vault: &Vault,
    idx: &crate::vault::Index,
    points: &[Manifest],
    written: &[Id],
    opts: &Options,
) -> Result<(), ReplicationError> {
    if index::generation(vault)? == idx.generation {
        return Ok(());
    }
    // One request per pack for a few, else one listing of `data/`.
    let names: Vec<String> = written.iter().map(crate::vault::pack_name).collect();
    let gone = if names.len() <= 32 {
        let mut gone = None;
        for n in &names {
            if !vault.exists(n)? {
                gone = Some(n.clone());
                break;
            }
        }
        gone
    } else {
        let listed: HashSet<String> = vault.list("data")?.into_iter().map(|(n, _)| n).collect();
        names.iter().find(|n| !listed.contains(*n)).cloned()
    };
    if let Some(pack) = gone {
        return Err(ReplicationError::PrunedMeanwhile {
            what: format!(
                "deleted {pack}, which this point wrote (it took longer than the prune's grace period)"
            ),
        });
    }
    let live = index::load_cached(vault, &opts.cache_dir, None)?.live_blobs();
    for m in points {
        for (disk, map) in &m.disks {
            if let Some(e) = map
                .extents
                .iter()
                .find(|e| e.2.is_some_and(|b| !live.contains(&b)))
            {
                return Err(ReplicationError::PrunedMeanwhile {
                    what: format!(
                        "marked as garbage data that {} disk {disk} reuses (blob {})",
                        m.machine,
                        e.2.map(|b| b.short()).unwrap_or_default()
                    ),
                });
            }
            if let Some(parent) = map.parent
                && !vault.exists(&manifest::point_name(&parent))?
            {
                return Err(ReplicationError::PrunedMeanwhile {
                    what: format!(
                        "dropped point {}, which {} disk {disk} builds on",
                        parent.short(),
                        m.machine
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Remove staging copies left by runs that were killed (their process is
/// gone); a copy of every app-consistent disk would otherwise pile up.
fn sweep_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_string_lossy()
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = pid.is_some_and(|p| {
            let rc = unsafe { libc::kill(p, 0) };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        });
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The point instant: freeze every target that asks; inside that window
/// start the write windows of the crash-consistent disks (see
/// [`snapshot`]), copy the frozen disks and reflink-clone the others where
/// the file system can; thaw. Crash-consistent disks that could not be
/// cloned are read in place afterwards. Returns the crash-consistent
/// disks' windows, for [`snapshot::one_instant`].
fn snapshot_all(
    targets: &[Target],
    staging: &Path,
    sources: &mut [Vec<PathBuf>],
) -> Result<Vec<snapshot::Window>, ReplicationError> {
    let mut frozen = Vec::new();
    for t in targets.iter().filter(|t| t.vm.is_none()) {
        if let (true, Some(q)) = (t.app, &t.quiesce) {
            // On error, `frozen` drops here and every freeze so far is thawed.
            let f = quiesce::Frozen::freeze(&t.machine, q).map_err(|reason| {
                ReplicationError::Freeze {
                    machine: t.machine.clone(),
                    reason,
                }
            })?;
            frozen.push(f);
        }
    }
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplicationError::Io { op, path, source }
    };
    std::fs::create_dir_all(staging).map_err(io("create staging directory", staging))?;
    let crash = |t: &Target| t.vm.is_none() && !(t.app && t.quiesce.is_some());
    // Every window starts before any disk is snapshotted, so all of them
    // share the instants between the last start and the first snapshot.
    let mut windows: Vec<snapshot::Window> = targets
        .iter()
        .filter(|t| crash(t))
        .flat_map(|t| &t.disks)
        .map(|(_, path)| snapshot::Window {
            path: path.clone(),
            cloned: false,
            start: snapshot::settled(path),
            end: None,
            quiet: false,
        })
        .collect();
    let quiet = snapshot::quiet_at_start(&windows);
    for (w, quiet) in windows.iter_mut().zip(quiet) {
        w.quiet = quiet;
    }
    let mut next = windows.iter_mut();
    for (ti, t) in targets.iter().enumerate().filter(|(_, t)| t.vm.is_none()) {
        for (di, (_, path)) in t.disks.iter().enumerate() {
            let dst = staging.join(format!("{ti}-{di}"));
            if !crash(t) {
                disk::stage_copy(path, &dst).map_err(io("stage a copy of disk", path))?;
                sources[ti][di] = dst;
            } else if let Some(w) = next.next()
                && snapshot::reflink(path, &dst)
            {
                w.cloned = true;
                w.end = snapshot::stamp(path);
                sources[ti][di] = dst;
            }
        }
    }
    let mut failed = None;
    for mut f in frozen {
        if let Err(reason) = f.thaw() {
            failed.get_or_insert(ReplicationError::Thaw {
                machine: f.machine.clone(),
                reason,
            });
        }
    }
    failed.map_or(Ok(windows), Err)
}

#[allow(clippy::too_many_arguments)]
fn capture_all(
    vault: &Vault,
    idx: &crate::vault::Index,
    targets: &[Target],
    sources: &[Vec<PathBuf>],
    prevs: &[Vec<Option<capture::Hashes>>],
    progress: &Progress,
    created: time::OffsetDateTime,
    freeze_ms: Option<u64>,
    opts: &Options,
    windows: &[snapshot::Window],
    session: &mut vm::Session,
    seqs: &[u64],
    seen: &mut crate::vault::catalog::Seen,
    commit: &Commit<'_>,
) -> Result<Vec<Manifest>, ReplicationError> {
    let claimed = Mutex::new(HashSet::new());
    let mut packer = PackWriter::new(vault);
    let mut made = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let mut disks = BTreeMap::new();
        let mut stats = Stats::default();
        let mut hashes = Vec::new();
        for (di, (name, _)) in t.disks.iter().enumerate() {
            opts.check_cancel()?;
            let c = if session.has(ti) {
                let sink = capture::Sink {
                    vault,
                    known: &idx.blobs,
                    claimed: &claimed,
                    packer: &mut packer,
                    prev: prevs[ti][di].as_ref(),
                    level: t.level,
                    progress,
                    tick: &mut || Ok(()),
                };
                session.capture(ti, di, sink, &sources[ti][di])?
            } else {
                capture::capture(
                    vault,
                    &idx.blobs,
                    &claimed,
                    &mut packer,
                    &sources[ti][di],
                    prevs[ti][di].as_ref(),
                    t.level,
                    progress,
                    &mut || Ok(()),
                )?
            };
            stats.read += c.read;
            stats.new += c.new;
            stats.stored += c.stored;
            disks.insert(name.clone(), c.map);
            hashes.push((name.clone(), c.size, c.hashes));
        }
        let vm_freeze = session.freeze_ms(ti);
        let app = t.app && (t.quiesce.is_some() || vm_freeze.is_some());
        let freeze_ms = vm_freeze.or(freeze_ms);
        let nonce: [u8; 16] = rand::random();
        let id = vault.id_of(&[b"point", t.machine.as_bytes(), &nonce]);
        let m = Manifest {
            format: 1,
            id,
            protection: t.protection.clone(),
            machine: t.machine.clone(),
            group: t.group.clone(),
            created: created
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            consistency: if app {
                Consistency::App
            } else {
                Consistency::Crash
            },
            freeze_ms: if app { freeze_ms } else { None },
            disks,
            stats,
            site: t.site.clone(),
            moves_to: opts.moves_to.get(&t.machine).cloned(),
            cbt: session.info(ti, &t.disks),
            seq: seqs.get(ti).copied(),
            owner: vault.owner(),
            writer: Some(commit.writer.clone()),
            index: None,
        };
        made.push((m, hashes));
    }
    // Every disk is read: were the crash-consistent ones one instant?
    if !snapshot::one_instant(windows) {
        for (m, _) in &mut made {
            if m.consistency == Consistency::Crash && m.cbt.is_none() {
                m.consistency = Consistency::Fuzzy;
            }
        }
    }
    opts.check_cancel()?;
    let (packs, _) = packer.finish()?;
    let written: Vec<Id> = packs.iter().map(|p| p.id).collect();
    if !packs.is_empty() {
        let name = index::write_cached(vault, &opts.cache_dir, packs)?;
        // Readers of a few blobs (instant recovery) start from it.
        for (m, _) in &mut made {
            m.index = Some(name.clone());
        }
    }
    // The catalog lists each point before its manifest exists (a lost
    // update never hides a point), and confirms it after.
    let points: Vec<Manifest> = made.iter().map(|(m, _)| m.clone()).collect();
    crate::vault::catalog::begin_seen(vault, &points, seen)?;
    confirm_commit(vault, idx, &points, &written, opts)?;
    // And only while this process still holds the batch's lease: a
    // service that took it over writes the points from now on.
    commit.confirm()?;
    let mut out = Vec::new();
    for (ti, (m, hashes)) in made.into_iter().enumerate() {
        manifest::write(vault, &m)?;
        for (di, (disk, size, runs)) in hashes.into_iter().enumerate() {
            let p = ctk::path(&opts.cache_dir, &vault.id, &m.machine, &disk);
            let prev = prevs[ti][di].as_ref();
            // A missing cache only costs a rebuild next time.
            if let Err(e) = ctk::record(&p, prev, m.id, size, &runs) {
                tracing::warn!("cannot write change-tracking cache {}: {e}", p.display());
            }
        }
        out.push(m);
    }
    // The points exist; an unconfirmed entry is settled by the next writer.
    if let Err(e) = crate::vault::catalog::commit_seen(vault, &points, seen) {
        tracing::warn!("cannot confirm the new points in the catalog: {e}");
    }
    Ok(out)
}
