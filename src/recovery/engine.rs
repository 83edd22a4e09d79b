//! The engine of one run: groups through the generic walker (`exec::walk`),
//! each once the groups it depends on are done, independent groups at the
//! same time; the machines of a group in parallel (threads: provider and
//! vault calls block); `before` steps, then per machine restore -> boot -> checks, then
//! `after` steps. Every action is timed into the [`Timeline`] and every
//! machine's placement written to the state as soon as it is known.

use super::approval::{Approver, Request};
use super::checks;
use super::command;
use super::events::{Event, Sink, What};
use super::points::Chosen;
use super::providers;
use super::record::{Recorder, Refusal};
use super::timeline::{EntryKind, Outcome, Subject, Timeline};
use crate::exec::{Cancel, StepError};
use crate::model::{
    Address, Config, Disk, Group, Machine, RecoveryPlan, Step, StepAction, StepWhen,
};

use crate::state::{Approval, MachineRun, MachineStatus, PointUsed, RunKind, RunRecord};
use crate::vault::Vault;
use crate::vault::manifest::Manifest;
use petgraph::graph::{DiGraph, NodeIndex};
use standby_provider_core::{MachineSpec, Mode, Run, SiteProvider};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Test-only: a shell command run (`sh -c`, with the machine's environment)
/// after a machine's disks are restored and before it boots. Tests corrupt
/// a replica through it; never set it in production.
pub const TEST_HOOK_ENV: &str = "STANDBY_TEST_AFTER_MATERIALIZE";

pub(crate) struct Engine<'a> {
    pub cfg: &'a Config,
    pub root: PathBuf,
    pub plan: &'a RecoveryPlan,
    pub run_id: String,
    pub kind: RunKind,
    pub mode: Mode,
    pub recorder: Recorder,
    pub cancel: Cancel,
    pub approver: &'a dyn Approver,
    pub timeline: Timeline,
    pub vaults: BTreeMap<Address, Vault>,
    pub points: BTreeMap<Address, Chosen>,
    /// The direction: [`super::failover::Failover`] or
    /// [`super::failback::Failback`].
    pub way: &'a dyn Way,
    pub sink: &'a dyn Sink,
    providers: BTreeMap<Address, Box<dyn SiteProvider>>,
    failures: Mutex<Vec<String>>,
}

/// Run a machine's `shutdown` command with the environment of its disks.
pub(super) fn run_shutdown(
    sd: &crate::model::Shutdown,
    root: &std::path::Path,
    spec: &MachineSpec,
    run: &Run,
) -> Result<(), String> {
    let f = command::run(&sd.command, root, &spec.env(run), sd.timeout.to_std(), None)
        .map_err(|e| format!("shutdown command: {e}"))?;
    if !f.success() {
        return Err(format!("shutdown command: {}", f.describe()));
    }
    Ok(())
}

impl<'a> Engine<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a Config,
        plan: &'a RecoveryPlan,
        run_id: String,
        kind: RunKind,
        recorder: Recorder,
        cancel: Cancel,
        approver: &'a dyn Approver,
        timeline: Timeline,
        sink: &'a dyn Sink,
        way: &'a dyn Way,
    ) -> Engine<'a> {
        Engine {
            cfg,
            root: providers::absolute_root(cfg),
            plan,
            run_id,
            kind,
            mode: if kind.is_test() {
                Mode::Test
            } else {
                Mode::Failover
            },
            recorder,
            cancel,
            approver,
            timeline,
            vaults: BTreeMap::new(),
            points: BTreeMap::new(),
            way,
            sink,
            providers: BTreeMap::new(),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// Report progress to the sink, stamped with the run's clock.
    pub fn emit(&self, what: What) {
        self.sink.event(&Event {
            seconds: self.timeline.now(),
            what,
        });
    }

    pub fn fail(&self, what: String) {
        self.emit(What::Failed { what: what.clone() });
        if let Ok(mut v) = self.failures.lock() {
            v.push(what);
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn run_at(&self, site: &Address) -> Run {
        providers::run_at(self.cfg, &self.root, site, &self.run_id, self.mode)
    }

    /// The provider of `site`, created on first use.
    pub(super) fn open_provider(&mut self, site: &Address) -> Result<(), String> {
        if !self.providers.contains_key(site) {
            let p = providers::for_site(self.cfg, &self.root, site).map_err(|e| e.to_string())?;
            self.providers.insert(site.clone(), p);
        }
        Ok(())
    }

    /// The provider of `site`, opened before with [`Engine::open_provider`].
    pub(super) fn site_provider(&self, site: &Address) -> Result<&dyn SiteProvider, String> {
        self.providers
            .get(site)
            .map(|p| p.as_ref())
            .ok_or_else(|| format!("no provider for {site}"))
    }

    /// Open `vault` once.
    pub(super) fn vault(&mut self, addr: &Address) -> Result<&Vault, String> {
        if !self.vaults.contains_key(addr) {
            let v = self
                .cfg
                .vaults
                .get(addr)
                .ok_or_else(|| format!("no {addr} in the configuration"))?;
            let opened =
                Vault::open(&v.url, &v.key, &self.root).map_err(|e| format!("{addr}: {e}"))?;
            self.vaults.insert(addr.clone(), opened);
        }
        self.vaults
            .get(addr)
            .ok_or_else(|| format!("{addr} is not open"))
    }

    fn target_site(&self, machine: &Address) -> Option<Address> {
        self.way.target_site(self.cfg, machine)
    }

    /// Environment of the plan's steps.
    fn step_env(&self, group: &str) -> Vec<(String, String)> {
        vec![
            ("STANDBY_PLAN".into(), self.plan.addr.to_string()),
            ("STANDBY_GROUP".into(), group.to_string()),
            ("STANDBY_RUN_ID".into(), self.run_id.clone()),
            ("STANDBY_MODE".into(), self.mode.as_str().to_string()),
            ("STANDBY_KIND".into(), self.kind.as_str().to_string()),
        ]
    }

    /// Prepare each target site, then run the groups. True when everything passed.
    pub fn run_groups(&mut self) -> bool {
        let mut sites: Vec<Address> = Vec::new();
        for g in &self.plan.groups {
            for m in &g.machines {
                if let Some(s) = self.target_site(m)
                    && !sites.contains(&s)
                {
                    sites.push(s);
                }
            }
        }
        for s in &sites {
            if let Err(e) = self.open_provider(s) {
                self.fail(format!("{s}: {e}"));
                return false;
            }
            let run = self.run_at(s);
            if let Some(p) = self.providers.get(s)
                && let Err(e) = p.prepare(&run)
            {
                self.fail(format!("prepare the run at {s}: {e}"));
                return false;
            }
        }
        for (_, chosen) in self.points.clone() {
            if let Err(e) = self.vault(&chosen.vault) {
                self.fail(e);
                return false;
            }
        }
        self.walk_groups()
    }

    /// Run the groups through the generic walker: a group starts once the
    /// groups it depends on are done, independent groups at the same time
    /// (each on its own thread: provider and vault calls block). A failed
    /// group skips its dependants; after an interrupt no group starts.
    fn walk_groups(&self) -> bool {
        let graph = group_graph(self.plan);
        let skips = SkipGroups { engine: self };
        let report = std::thread::scope(|scope| {
            let walk =
                crate::exec::walk(&graph, graph.node_count(), &self.cancel, &skips, |i, _| {
                    let g = &self.plan.groups[i.index()];
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    scope.spawn(move || {
                        // A panic fails the group (a bug), not the whole run.
                        let ok = std::panic::catch_unwind(AssertUnwindSafe(|| self.group(g)))
                            .unwrap_or(false);
                        let _ = tx.send(ok);
                    });
                    let name = g.name.clone();
                    async move {
                        match rx.await {
                            Ok(true) => Ok(String::new()),
                            _ => Err(StepError::Failed(name)),
                        }
                    }
                });
            block_on(walk)
        });
        match report {
            Ok(r) => r.all_done(),
            Err(e) => {
                self.fail(format!("cannot start the async runtime: {e}"));
                false
            }
        }
    }

    fn skip_group(&self, g: &Group, why: &str) {
        let tl = &self.timeline;
        for s in self
            .directed(&g.before)
            .iter()
            .chain(&self.directed(&g.after))
        {
            tl.skipped(Subject::new(EntryKind::Step, &s.name).group(&g.name), why);
        }
        for m in &g.machines {
            if let Some(machine) = self.cfg.machines.get(m) {
                for c in &machine.checks {
                    let subj = Subject::new(EntryKind::Check, &c.name)
                        .group(&g.name)
                        .machine(&m.to_string());
                    tl.skipped(subj, why);
                }
            }
            tl.skipped(
                Subject::new(EntryKind::Machine, m.to_string())
                    .group(&g.name)
                    .machine(&m.to_string()),
                why,
            );
        }
        tl.skipped(Subject::new(EntryKind::Group, &g.name).group(&g.name), why);
        self.emit(What::GroupSkipped {
            group: g.name.clone(),
            why: why.to_string(),
        });
    }

    fn group(&self, g: &Group) -> bool {
        let start = self.timeline.now();
        self.emit(What::GroupStarted {
            group: g.name.clone(),
        });
        let (before, after) = (self.directed(&g.before), self.directed(&g.after));
        let mut ok = self.steps(g, &before, "before");
        if ok {
            let results: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = g
                    .machines
                    .iter()
                    .map(|m| s.spawn(move || self.machine(g, m)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(false))
                    .collect()
            });
            ok = results.iter().all(|&b| b);
        } else {
            for m in &g.machines {
                let subj = Subject::new(EntryKind::Machine, m.to_string())
                    .group(&g.name)
                    .machine(&m.to_string());
                self.timeline.skipped(subj, "a before step failed");
            }
        }
        if ok {
            ok = self.steps(g, &after, "after");
        } else {
            for s in &after {
                let subj = Subject::new(EntryKind::Step, &s.name).group(&g.name);
                self.timeline
                    .skipped(subj, "the group failed before its after steps");
            }
        }
        let outcome = if ok { Outcome::Passed } else { Outcome::Failed };
        self.timeline.record(
            Subject::new(EntryKind::Group, &g.name).group(&g.name),
            start,
            outcome,
            "",
        );
        self.emit(What::GroupFinished {
            group: g.name.clone(),
            passed: ok,
        });
        ok
    }

    /// Run `steps` in order; stop at the first failure (the rest are skipped).
    /// The steps this run's direction carries out (`when` on each step):
    /// a failback skips failover-only steps and the other way round.
    fn directed(&self, steps: &[Step]) -> Vec<Step> {
        steps
            .iter()
            .filter(|s| s.when == StepWhen::Always || s.when == self.way.steps())
            .cloned()
            .collect()
    }

    fn steps(&self, g: &Group, steps: &[Step], when: &str) -> bool {
        for (i, s) in steps.iter().enumerate() {
            let subj = Subject::new(EntryKind::Step, &s.name).group(&g.name);
            if self.cancel.is_cancelled() {
                for rest in &steps[i..] {
                    let subj = Subject::new(EntryKind::Step, &rest.name).group(&g.name);
                    self.timeline.skipped(subj, "the run was interrupted");
                }
                return false;
            }
            self.emit(What::StepStarted {
                group: g.name.clone(),
                when: when.to_string(),
                step: s.name.clone(),
            });
            let r = self.timeline.timed(subj, || self.step(g, s), |d| d.clone());
            match r {
                Ok(detail) => self.emit(What::StepDone {
                    group: g.name.clone(),
                    step: s.name.clone(),
                    detail,
                }),
                Err(e) => {
                    self.fail(format!("step {}.{}: {e}", g.name, s.name));
                    for rest in &steps[i + 1..] {
                        let subj = Subject::new(EntryKind::Step, &rest.name).group(&g.name);
                        self.timeline
                            .skipped(subj, format!("step {} failed", s.name));
                    }
                    return false;
                }
            }
        }
        true
    }

    fn step(&self, g: &Group, s: &Step) -> Result<String, String> {
        let env = self.step_env(&g.name);
        match &s.action {
            StepAction::Script { command: argv } => {
                let f = command::run(
                    argv,
                    &self.root,
                    &env,
                    s.timeout.to_std(),
                    Some(&self.cancel),
                )
                .map_err(|e| e.to_string())?;
                if f.success() {
                    Ok(f.describe())
                } else {
                    Err(f.describe())
                }
            }
            StepAction::Check(probe) => {
                let o =
                    checks::probe_once(probe, s.timeout.to_std(), &self.root, &env, &self.cancel);
                if o.passed {
                    Ok(o.detail)
                } else {
                    Err(o.detail)
                }
            }
            StepAction::Manual { instructions } => self.manual(g, s, instructions),
        }
    }

    /// A manual step: show the instructions, then ask the run's
    /// [`Approver`] (in advance, the terminal, `standby approve`).
    fn manual(&self, g: &Group, s: &Step, instructions: &str) -> Result<String, String> {
        let key = format!("{}.{}", g.name, s.name);
        self.emit(What::ManualStep {
            key: key.clone(),
            instructions: instructions.to_string(),
        });
        let approved = || self.approved(g, s);
        let set_waiting = |step: Option<String>| self.set_waiting(step);
        let req = Request {
            plan: &self.plan.addr,
            group: &g.name,
            step: &s.name,
            timeout: s.timeout,
            approved: &approved,
            set_waiting: &set_waiting,
            cancel: &self.cancel,
            clock: &self.timeline,
            sink: self.sink,
        };
        let got = self.approver.approve(&req).map_err(|e| e.to_string())?;
        if let Some(by) = &got.by {
            self.approve(&key, by)?;
        }
        Ok(got.detail)
    }

    fn approved(&self, g: &Group, s: &Step) -> bool {
        match self.recorder.read() {
            Ok(Some(doc)) => doc
                .runs
                .iter()
                .any(|r| r.run_id == self.run_id && r.approved(&g.name, &s.name)),
            _ => false,
        }
    }

    fn approve(&self, key: &str, by: &str) -> Result<(), String> {
        let id = self.run_id.clone();
        self.recorder
            .update(|doc| {
                let r = doc
                    .run_mut(&id)
                    .ok_or("the run is no longer in the state")?;
                r.approvals.push(Approval {
                    step: key.to_string(),
                    at: time::OffsetDateTime::now_utc(),
                    by: by.to_string(),
                });
                Ok(())
            })
            .map_err(|e| e.to_string())
    }

    fn set_waiting(&self, step: Option<String>) {
        let id = self.run_id.clone();
        let r = self.recorder.update(|doc| {
            let r = doc
                .run_mut(&id)
                .ok_or("the run is no longer in the state")?;
            r.waiting_for = step;
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!("cannot record the wait in the state: {e}");
        }
    }

    /// Record where `machine` is now.
    fn place(&self, machine: &Address, entry: MachineRun) {
        let id = self.run_id.clone();
        let r = self.recorder.update(|doc| {
            let r = doc
                .run_mut(&id)
                .ok_or("the run is no longer in the state")?;
            self.way.place(r, machine, entry)
        });
        if let Err(e) = r {
            self.fail(format!("record {machine} in the state: {e}"));
        }
    }

    /// One machine: restore its disks, boot it, run its checks.
    fn machine(&self, g: &Group, addr: &Address) -> bool {
        let start = self.timeline.now();
        let subj = Subject::new(EntryKind::Machine, addr.to_string())
            .group(&g.name)
            .machine(&addr.to_string());
        let r = self.machine_inner(g, addr);
        match &r {
            Ok(()) => {
                self.timeline.record(subj, start, Outcome::Passed, "");
                self.emit(What::MachineUp {
                    machine: addr.to_string(),
                });
            }
            Err(e) => {
                self.timeline
                    .record(subj, start, Outcome::Failed, e.clone());
                self.fail(format!("{addr}: {e}"));
            }
        }
        r.is_ok()
    }

    fn machine_inner(&self, g: &Group, addr: &Address) -> Result<(), String> {
        let m = self
            .cfg
            .machines
            .get(addr)
            .ok_or_else(|| format!("no {addr} in the configuration"))?;
        let chosen = self
            .points
            .get(addr)
            .ok_or_else(|| "no point was chosen for it".to_string())?;
        let site = self
            .target_site(addr)
            .ok_or_else(|| "it has no protection".to_string())?;
        let provider = self
            .providers
            .get(&site)
            .ok_or_else(|| format!("no provider for {site}"))?;
        let vault = self
            .vaults
            .get(&chosen.vault)
            .ok_or_else(|| format!("{} is not open", chosen.vault))?;
        let run = self.run_at(&site);
        let p = &chosen.point;
        let mut placed = MachineRun {
            from_site: self.way.origin(self.cfg, m),
            site: site.to_string(),
            status: MachineStatus::Starting,
            point: Some(PointUsed {
                vault: chosen.vault.to_string(),
                id: p.id.hex(),
                created: p.created.clone(),
                consistency: p.consistency.to_string(),
                group: p.group.clone(),
            }),
            disks: BTreeMap::new(),
            error: None,
        };
        self.place(addr, placed.clone());
        let name = addr.to_string();
        let result = (|| {
            let land = Landing {
                group: g,
                machine: m,
                point: p,
                vault,
                provider: provider.as_ref(),
                run: &run,
            };
            let disks = self.way.disks(self, &land, &mut placed)?;
            self.emit(What::DisksRestored {
                machine: name.clone(),
                point: p.id.short(),
                created: p.created.clone(),
                consistency: p.consistency.to_string(),
            });
            self.place(addr, placed.clone());
            let spec = MachineSpec {
                machine: name.clone(),
                boot: m.boot.as_ref().map(|b| b.command.clone()),
                disks,
            };
            if let Ok(hook) = std::env::var(TEST_HOOK_ENV)
                && !hook.is_empty()
            {
                let argv = vec!["sh".to_string(), "-c".to_string(), hook];
                let f = command::run(
                    &argv,
                    &self.root,
                    &spec.env(&run),
                    Duration::from_secs(60),
                    None,
                )
                .map_err(|e| e.to_string())?;
                if !f.success() {
                    return Err(format!("{TEST_HOOK_ENV} hook: {}", f.describe()));
                }
            }
            if self.cancel.is_cancelled() {
                return Err("interrupted".to_string());
            }
            let timeout = m
                .boot
                .as_ref()
                .map_or(Duration::from_secs(300), |b| b.timeout.to_std());
            let subj = Subject::new(EntryKind::Boot, &name)
                .group(&g.name)
                .machine(&name);
            self.timeline.timed(
                subj,
                || {
                    provider
                        .start(&run, &spec, timeout)
                        .map_err(|e| e.to_string())
                },
                |_| String::new(),
            )?;
            self.emit(What::MachineStarted {
                machine: name.clone(),
                site: site.to_string(),
            });
            let mut failed = Vec::new();
            for c in &m.checks {
                let subj = Subject::new(EntryKind::Check, &c.name)
                    .group(&g.name)
                    .machine(&name);
                if self.cancel.is_cancelled() {
                    self.timeline.skipped(subj, "interrupted");
                    failed.push(format!("{} (interrupted)", c.name));
                    continue;
                }
                let start = self.timeline.now();
                let o = checks::machine_check(provider.as_ref(), &run, &spec, c, &self.cancel);
                let outcome = if o.passed {
                    Outcome::Passed
                } else {
                    Outcome::Failed
                };
                self.timeline.record(subj, start, outcome, o.detail.clone());
                self.emit(What::CheckFinished {
                    machine: name.clone(),
                    check: c.name.clone(),
                    passed: o.passed,
                    detail: o.detail.clone(),
                });
                if !o.passed {
                    failed.push(format!("{}: {}", c.name, o.detail));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("check {}", failed.join("; check ")))
            }
        })();
        placed.status = if result.is_ok() {
            MachineStatus::Running
        } else {
            MachineStatus::Failed
        };
        placed.error = result.as_ref().err().cloned();
        self.place(addr, placed);
        result
    }
}

impl Engine<'_> {
    /// For each disk of `land`'s machine, in order: `bring(disk, its size
    /// in the point, the timeline subject)` puts it in place and says where
    /// it is; recorded in `placed` and returned by disk name. Stops at an
    /// interrupt or the first error.
    pub(super) fn each_disk(
        &self,
        land: &Landing<'_>,
        placed: &mut MachineRun,
        bring: impl Fn(&Disk, u64, Subject) -> Result<PathBuf, String>,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let (m, p) = (land.machine, land.point);
        let mut disks = BTreeMap::new();
        for d in &m.disks {
            if self.cancel.is_cancelled() {
                return Err("interrupted".to_string());
            }
            let size = p
                .disks
                .get(&d.name)
                .map(|x| x.size)
                .ok_or_else(|| format!("point {} has no disk {}", p.id.short(), d.name))?;
            let subj = Subject::new(EntryKind::Restore, &d.name)
                .group(&land.group.name)
                .machine(&m.addr.to_string());
            let at = bring(d, size, subj)?;
            placed
                .disks
                .insert(d.name.clone(), at.display().to_string());
            disks.insert(d.name.clone(), at);
        }
        Ok(disks)
    }
}

/// What differs between the two directions a run goes: failover (to the
/// protection's target, fresh disks from the point) and failback (home,
/// only the blocks that differ written onto the existing disks). The rest
/// of a run (groups, steps, approvals, boot, checks) is shared.
pub(crate) trait Way: Sync {
    /// The steps this direction carries out besides `always` ones.
    fn steps(&self) -> StepWhen;
    /// Where `machine` is recovered to.
    fn target_site(&self, cfg: &Config, machine: &Address) -> Option<Address>;
    /// Where `m` comes from, as its placement records it.
    fn origin(&self, cfg: &Config, m: &Machine) -> String;
    /// Bring the disks of `land`'s machine to its point (through
    /// [`Engine::each_disk`]); where each disk is now, by name.
    fn disks(
        &self,
        e: &Engine<'_>,
        land: &Landing<'_>,
        placed: &mut MachineRun,
    ) -> Result<BTreeMap<String, PathBuf>, String>;
    /// Record `machine`'s placement in the run's record.
    fn place(
        &self,
        run: &mut RunRecord,
        machine: &Address,
        entry: MachineRun,
    ) -> Result<(), Refusal>;
}

/// One machine being recovered: its group, point, vault, and the provider
/// and run at the site it goes to.
pub(crate) struct Landing<'r> {
    pub group: &'r Group,
    pub machine: &'r Machine,
    pub point: &'r Manifest,
    pub vault: &'r Vault,
    pub provider: &'r dyn SiteProvider,
    pub run: &'r Run,
}

/// Turns the walker's skips into skipped groups: dependants of a failed
/// group, and groups an interrupt kept from starting.
struct SkipGroups<'e, 'a> {
    engine: &'e Engine<'a>,
}

impl crate::exec::Sink for SkipGroups<'_, '_> {
    fn event(&self, e: &crate::exec::Event) {
        let (step, why) = match e {
            crate::exec::Event::Skipped { step, cause } => (step, format!("group {cause} failed")),
            crate::exec::Event::NotStarted { step } => (step, "the run was interrupted".into()),
            _ => return,
        };
        if let Some(g) = self.engine.plan.groups.iter().find(|g| &g.name == step) {
            self.engine.skip_group(g, &why);
        }
    }
}

/// The plan's groups as the walker's graph: node `i` is `plan.groups[i]`
/// (by name), an edge from a group to each group it depends on.
pub fn group_graph(plan: &RecoveryPlan) -> DiGraph<String, ()> {
    let mut graph = DiGraph::new();
    for g in &plan.groups {
        graph.add_node(g.name.clone());
    }
    for (i, g) in plan.groups.iter().enumerate() {
        for d in &g.depends_on {
            if let Some(j) = plan.groups.iter().position(|x| &x.name == d) {
                graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), ());
            }
        }
    }
    graph
}

/// Run `fut` to its end from this (blocking) thread: on the runtime the
/// command runs in, else on a small one of its own.
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(fut)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(fut)),
    }
}

/// The plan's groups in dependency order (declaration order among equals).
pub fn order(plan: &RecoveryPlan) -> Vec<&Group> {
    let mut done: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    while out.len() < plan.groups.len() {
        let next = plan.groups.iter().find(|g| {
            !done.contains(&g.name.as_str())
                && g.depends_on.iter().all(|d| done.contains(&d.as_str()))
        });
        match next {
            Some(g) => {
                done.push(&g.name);
                out.push(g);
            }
            // A cycle (config rejects these): keep the rest in declaration order.
            None => {
                for g in &plan.groups {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn group(name: &str, deps: &[&str]) -> Group {
        Group {
            name: name.into(),
            machines: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            before: vec![],
            after: vec![],
        }
    }

    #[test]
    fn groups_run_after_what_they_depend_on_whatever_the_declaration_order() {
        let plan = RecoveryPlan {
            addr: Address::new(Kind::RecoveryPlan, "p"),
            groups: vec![
                group("web", &["app"]),
                group("data", &[]),
                group("app", &["data"]),
                group("batch", &[]),
            ],
            drill: None,
            active_site: None,
        };
        let names: Vec<&str> = order(&plan).iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["data", "app", "web", "batch"]);
    }
}
