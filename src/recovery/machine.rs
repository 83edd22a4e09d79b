//! One machine of a group: its disks brought to the point (by the run's
//! [`Way`](super::engine::Way)), then the test hook, boot and checks, its
//! placement written to the state at every stage.

use super::checks;
use super::command;
use super::engine::{Engine, Landing, TEST_HOOK_ENV};
use super::events::What;
use super::timeline::{EntryKind, Outcome, Subject};
use crate::model::{Address, Disk, Group};
use crate::state::{MachineRun, MachineStatus, PointUsed};
use standby_provider_core::MachineSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

impl Engine<'_> {
    /// Record where `machine` is now.
    pub(super) fn place(&self, machine: &Address, entry: MachineRun) {
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
    pub(super) fn machine(&self, g: &Group, addr: &Address) -> bool {
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
        self.collect_evidence(addr);
        if r.is_ok()
            && let Ok(mut up) = self.up.lock()
        {
            up.push((g.name.clone(), addr.clone()));
        }
        r.is_ok()
    }

    /// What the machine's site provider saw of it once its checks ran
    /// (after its timeline entry, so RTO ends at its last check).
    fn collect_evidence(&self, addr: &Address) {
        let Some(site) = self.target_site(addr) else {
            return;
        };
        let Ok(provider) = self.site_provider(&site) else {
            return;
        };
        let run = self.run_at(&site);
        if let Ok(Some(ev)) = provider.evidence(&run, &addr.to_string())
            && let Ok(mut all) = self.evidence.lock()
        {
            all.insert(addr.to_string(), ev);
        }
    }

    pub(super) fn machine_inner(&self, g: &Group, addr: &Address) -> Result<(), String> {
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
        let provider = self.site_provider(&site)?;
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
            placed_by: None,
        };
        let name = addr.to_string();
        let result = (|| {
            let land = Landing {
                group: g,
                machine: m,
                point: p,
                vault,
                provider,
                run: &run,
            };
            // Recorded only once decided: a kill before then leaves the
            // earlier attempt's record of the machine for the next rerun.
            let kept = self.take_over(&land, &site)?;
            let disks = match &kept {
                Some(disks) => {
                    // It is up: recorded so, while its checks run again.
                    placed.status = MachineStatus::Running;
                    placed.disks = disks
                        .iter()
                        .map(|(k, v)| (k.clone(), v.display().to_string()))
                        .collect();
                    disks.clone()
                }
                None => {
                    self.place(addr, placed.clone());
                    let disks = self.way.disks(self, &land, &mut placed)?;
                    self.emit(What::DisksRestored {
                        machine: name.clone(),
                        point: p.id.short(),
                        created: p.created.clone(),
                        consistency: p.consistency.to_string(),
                    });
                    disks
                }
            };
            self.place(addr, placed.clone());
            let spec = MachineSpec {
                machine: name.clone(),
                boot: m.boot.as_ref().map(|b| b.command.clone()),
                disks,
            };
            self.boot_and_check(&land, &spec, &site, kept.is_some())
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

    /// A machine an interrupted attempt of this run (killed, or failed)
    /// left running at `site`: kept as it is when that attempt started it
    /// (its checks ran, passed or not, so it may hold writes made since)
    /// from the data this run recovers, and its
    /// [`Way`](super::engine::Way) agrees;
    /// its disks then, by name. Otherwise it is stopped before anything
    /// writes its disks, and None: it starts afresh. Never a disk written
    /// under a running machine, never a recovered machine's writes
    /// discarded by a rerun of the same recovery.
    fn take_over(
        &self,
        land: &Landing<'_>,
        site: &Address,
    ) -> Result<Option<BTreeMap<String, PathBuf>>, String> {
        let name = land.machine.addr.to_string();
        let Some(earlier) = &self.earlier else {
            return Ok(None);
        };
        let Some(before) = earlier.machines.get(&name) else {
            return Ok(None);
        };
        if before.site != site.to_string() {
            return Ok(None);
        }
        let run_id = before.placed_by.as_ref().unwrap_or(&earlier.run_id);
        let then = super::providers::run_at(self.cfg, &self.root, site, run_id, self.mode);
        // It ran when its checks passed, or failed (a failed boot ends the
        // machine; a failed restore leaves a disk unrecorded): it may hold
        // writes made since.
        let ran = matches!(
            before.status,
            MachineStatus::Running | MachineStatus::Failed
        ) && land
            .machine
            .disks
            .iter()
            .all(|d| before.disks.contains_key(&d.name));
        let same = ran && self.same_data(land, before)?;
        if same
            && self.way.can_keep(self, &land.machine.addr)
            && land
                .provider
                .adopt(&then, land.run, &name)
                .map_err(|e| format!("taking over from run {run_id}: {e}"))?
        {
            self.emit(What::MachineKept {
                machine: name.clone(),
                run_id: run_id.clone(),
            });
            return Ok(Some(
                before
                    .disks
                    .iter()
                    .map(|(k, v)| (k.clone(), PathBuf::from(v)))
                    .collect(),
            ));
        }
        if ran {
            // It ran: whatever it wrote since is about to be replaced.
            let then_point: String = before
                .point
                .as_ref()
                .map_or("?".into(), |p| p.id.chars().take(12).collect());
            self.emit(What::MachineReplaced {
                machine: name.clone(),
                run_id: run_id.clone(),
                why: if same {
                    "it no longer runs as that run left it".into()
                } else {
                    format!(
                        "it runs from point {then_point}, this run recovers point {}",
                        land.point.id.short()
                    )
                },
            });
        }
        land.provider
            .stop(&then, &name)
            .map_err(|e| format!("stopping what the interrupted run {run_id} left running: {e}"))?;
        Ok(None)
    }

    /// Whether the point `before` recorded holds the same data as this
    /// run's point (the same point, or, as a planned failover's new final
    /// point of unchanged disks does, the same blocks).
    fn same_data(&self, land: &Landing<'_>, before: &MachineRun) -> Result<bool, String> {
        let Some(used) = &before.point else {
            return Ok(false);
        };
        if used.id == land.point.id.hex() {
            return Ok(true);
        }
        let vault = self
            .points
            .get(&land.machine.addr)
            .map(|c| c.vault.to_string());
        if vault.as_deref() != Some(used.vault.as_str()) {
            return Ok(false);
        }
        let Some(id) = crate::vault::Id::parse(&used.id) else {
            return Ok(false);
        };
        let then = crate::vault::manifest::read(land.vault, &id)
            .map_err(|e| format!("reading point {}: {e}", used.id))?;
        crate::vault::manifest::same_data(land.vault, &then, land.point).map_err(|e| {
            format!(
                "comparing point {} with {}: {e}",
                used.id,
                land.point.id.short()
            )
        })
    }

    /// A machine whose disks are in place: the test hook, boot at `site`
    /// (unless `kept` running from an interrupted attempt), then every
    /// check (the failures together in the error).
    pub(super) fn boot_and_check(
        &self,
        land: &Landing<'_>,
        spec: &MachineSpec,
        site: &Address,
        kept: bool,
    ) -> Result<(), String> {
        let (m, g) = (land.machine, land.group);
        let name = m.addr.to_string();
        if kept {
            let now = self.timeline.now();
            self.timeline.record_span(
                Subject::new(EntryKind::Boot, &name)
                    .group(&g.name)
                    .machine(&name),
                now,
                now,
                Outcome::Passed,
                "kept: it runs since an interrupted attempt started it; not restarted",
            );
            return self.checks(land, spec);
        }
        if let Ok(hook) = std::env::var(TEST_HOOK_ENV)
            && !hook.is_empty()
        {
            let argv = vec!["sh".to_string(), "-c".to_string(), hook];
            let f = command::run(
                &argv,
                &self.root,
                &spec.env(land.run),
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
                land.provider
                    .start(land.run, spec, timeout)
                    .map_err(|e| e.to_string())
            },
            |_| String::new(),
        )?;
        self.emit(What::MachineStarted {
            machine: name.clone(),
            site: site.to_string(),
        });
        self.checks(land, spec)
    }

    /// Every check of `land`'s machine (the failures together in the error).
    fn checks(&self, land: &Landing<'_>, spec: &MachineSpec) -> Result<(), String> {
        let (m, g) = (land.machine, land.group);
        let name = m.addr.to_string();
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
            let o = checks::machine_check(land.provider, land.run, spec, c, &self.cancel);
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
    }

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
