//! The engine of one run, what failover and failback share: groups through
//! the generic walker (`exec::walk`), each once the groups it depends on are
//! done, independent groups at the same time; in a group its `before` steps
//! (`steps.rs`), its machines in parallel threads (provider and vault calls
//! block; `machine.rs`: disks by the run's [`Way`], boot, checks), then its
//! `after` steps. Every action is timed into the [`Timeline`], reported to
//! the run's [`Sink`], and every machine's placement written to the state
//! as soon as it is known.

use super::approval::Approver;
use super::command;
use super::events::{Event, Sink, What};
use super::points::Chosen;
use super::providers;
use super::record::{Recorder, Refusal};
use super::timeline::{EntryKind, Outcome, Subject, Timeline};
use crate::exec::{Cancel, StepError};
use crate::model::{Address, Config, Group, Machine, RecoveryPlan, StepWhen};

use crate::state::{MachineRun, RunKind, RunRecord};
use crate::vault::Vault;
use crate::vault::manifest::Manifest;
use crate::workspace::Workspace;
use petgraph::graph::{DiGraph, NodeIndex};
use standby_provider_core::{MachineSpec, Mode, Run, SiteProvider};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Test-only: a shell command run (`sh -c`, with the machine's environment)
/// after a machine's disks are restored and before it boots. Tests corrupt
/// a replica through it; never set it in production.
pub const TEST_HOOK_ENV: &str = "STANDBY_TEST_AFTER_MATERIALIZE";

pub(crate) struct Engine<'a> {
    /// The command's workspace; `cfg` is its configuration.
    pub ws: &'a Workspace,
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
    pub vaults: BTreeMap<Address, Arc<Vault>>,
    pub points: BTreeMap<Address, Chosen>,
    /// The direction: [`super::failover::Failover`] or
    /// [`super::failback::Failback`].
    pub way: &'a dyn Way,
    pub sink: &'a dyn Sink,
    providers: BTreeMap<Address, Box<dyn SiteProvider>>,
    failures: Mutex<Vec<String>>,
    /// What VM providers saw of each machine (accelerator, boot time,
    /// console, screenshot), by machine address.
    pub evidence: Mutex<BTreeMap<String, standby_provider_core::Evidence>>,
    /// Machines whose checks passed (group name, machine), for
    /// [`Way::settle`] once every group has run.
    pub up: Mutex<Vec<(String, Address)>>,
    /// The interrupted attempt this run takes over from, if any: its
    /// machines may still run ([`Engine::take_over`]).
    pub earlier: Option<Earlier>,
    /// The first of the interrupted attempts this run continues: RTO
    /// counts from its start.
    pub first_attempt: Option<crate::state::Attempt>,
}

/// An interrupted attempt of a failover or failback (killed, or failed)
/// that a rerun replaces: its run id (where its machines are tracked) and
/// what it recorded of each machine, by address.
#[derive(Debug, Clone)]
pub(crate) struct Earlier {
    pub run_id: String,
    pub machines: BTreeMap<String, MachineRun>,
}

/// Run a machine's `shutdown` command with the environment of its disks.
fn run_shutdown(
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
        ws: &'a Workspace,
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
            ws,
            cfg: &ws.config,
            root: ws.root(),
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
            evidence: Mutex::new(BTreeMap::new()),
            up: Mutex::new(Vec::new()),
            earlier: None,
            first_attempt: None,
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

    /// The run at `site`, interrupted with this engine's run.
    pub fn run_at(&self, site: &Address) -> Run {
        let mut run = providers::run_at(self.cfg, &self.root, site, &self.run_id, self.mode);
        let cancel = self.cancel.clone();
        run.interrupt = standby_provider_core::Interrupt::new(move || cancel.is_cancelled());
        run
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
            let opened = self.ws.vault(addr).map_err(|e| e.to_string())?;
            self.vaults.insert(addr.clone(), opened);
        }
        self.vaults
            .get(addr)
            .map(|v| &**v)
            .ok_or_else(|| format!("{addr} is not open"))
    }

    pub(super) fn target_site(&self, machine: &Address) -> Option<Address> {
        self.way.target_site(self.cfg, machine)
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
        let walked = self.walk_groups();
        self.settle() && walked
    }

    /// [`Way::settle`] of every machine that came up, all at once, after
    /// the groups (so a machine's background copy delays neither the
    /// groups that depend on it nor RTO). True when every one settled.
    fn settle(&self) -> bool {
        let up = std::mem::take(&mut *self.up.lock().unwrap_or_else(|p| p.into_inner()));
        std::thread::scope(|s| {
            let handles: Vec<_> = up
                .iter()
                .filter_map(|(group, addr)| {
                    let g = self.plan.groups.iter().find(|g| &g.name == group)?;
                    Some(s.spawn(move || match self.way.settle(self, g, addr) {
                        Ok(()) => true,
                        Err(e) => {
                            self.fail(format!("{addr}: {e}"));
                            false
                        }
                    }))
                })
                .collect();
            // Every copy joined, failed or not.
            let settled: Vec<bool> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .collect();
            settled.iter().all(|&b| b)
        })
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
}

impl Engine<'_> {}

/// Where a machine to stop runs: its site and its disks there.
pub(crate) struct Running {
    pub site: String,
    pub disks: BTreeMap<String, PathBuf>,
}

impl Engine<'_> {
    /// Stop machines where they run, groups in reverse order, as planned
    /// failover (the sources) and failback (the replicas) both do: the
    /// machine's `shutdown` command with its disks there (if it has one),
    /// then its site provider's `stop`, timed as its `shutdown`. `locate`
    /// says where a machine runs (`None`: nowhere, skipped); `stopped`
    /// makes the event of a stopped one; a failure reads
    /// `{verb} MACHINE at SITE: why`. True when every one stopped.
    pub(crate) fn stop_machines(
        &self,
        locate: impl Fn(&Machine) -> Option<Running>,
        verb: &str,
        stopped: impl Fn(String, String, String) -> What,
    ) -> bool {
        let mut ok = true;
        for g in self.plan.groups_in_order().into_iter().rev() {
            for addr in &g.machines {
                let Some(m) = self.cfg.machines.get(addr) else {
                    continue;
                };
                let Some(at) = locate(m) else {
                    continue;
                };
                let what = Subject::new(EntryKind::Shutdown, addr.to_string())
                    .group(&g.name)
                    .machine(&addr.to_string());
                let r = self
                    .timeline
                    .timed(what, || self.stop_one(m, &at), |d| d.clone());
                match r {
                    Ok(detail) => self.emit(stopped(addr.to_string(), at.site.clone(), detail)),
                    Err(e) => {
                        self.fail(format!("{verb} {addr} at {}: {e}", at.site));
                        ok = false;
                    }
                }
            }
        }
        ok
    }

    /// One machine of [`Engine::stop_machines`]; says what was done.
    fn stop_one(&self, m: &Machine, at: &Running) -> Result<String, String> {
        let site: Address = at.site.parse().map_err(|e| format!("{e}"))?;
        let run = self.run_at(&site);
        let mut did = Vec::new();
        if let Some(sd) = &m.shutdown {
            let spec = MachineSpec {
                machine: m.addr.to_string(),
                boot: None,
                disks: at.disks.clone(),
            };
            run_shutdown(sd, &self.root, &spec, &run)?;
            did.push("shutdown command ran");
        }
        let p = providers::for_site(self.cfg, &self.root, &site).map_err(|e| e.to_string())?;
        p.stop(&run, &m.addr.to_string())
            .map_err(|e| e.to_string())?;
        did.push("provider stopped it");
        Ok(did.join(", "))
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
    /// After every group ran, for each machine whose checks passed
    /// (outside RTO): finish what its start left running (instant
    /// recovery's background copy).
    fn settle(&self, _e: &Engine<'_>, _g: &Group, _machine: &Address) -> Result<(), String> {
        Ok(())
    }
    /// Whether `machine`, which an interrupted attempt started and
    /// which still runs, can go on as it is ([`Engine::take_over`]).
    fn can_keep(&self, _e: &Engine<'_>, _machine: &Address) -> bool {
        true
    }
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

/// Run `fut` to its end from this (blocking) thread on the process's
/// runtime (`store::runtime`).
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    Ok(crate::store::runtime()?.handle().block_on(fut))
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
        let names: Vec<&str> = plan
            .groups_in_order()
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["data", "app", "web", "batch"]);
    }
}
