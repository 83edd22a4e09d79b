//! The diff, review notes, graph and renderers on configurations built in
//! Rust and real state documents.

use serde_json::json;
use standby::model::*;
use standby::plan::{self, Action, DiffOptions, NoteKind, Plan, StepOp, render};
use standby::state::{DrillRecord, ObjectState, StateDoc, Status};
use std::path::PathBuf;
use time::macros::datetime;

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn d(s: &str) -> Duration {
    s.parse().unwrap()
}

fn machine(name: &str, site: &str, disks: &[(&str, &str)]) -> Machine {
    Machine {
        addr: Address::new(Kind::Machine, name),
        site: addr(site),
        disks: disks
            .iter()
            .map(|(n, p)| Disk {
                name: n.to_string(),
                path: PathBuf::from(p),
            })
            .collect(),
        quiesce: None,
        boot: Some(Boot {
            command: vec!["sh".into(), format!("scripts/{name}-start.sh")],
            timeout: d("2m"),
        }),
        shutdown: None,
        checks: vec![Check {
            name: "up".into(),
            probe: Probe::Command {
                command: vec!["true".into()],
                expect: None,
            },
            timeout: d("30s"),
            retries: 3,
            interval: d("5s"),
        }],
        sensitive: Default::default(),
        vm: None,
    }
}

fn protection(name: &str, machine: &str, policy: &str) -> Protection {
    Protection {
        addr: Address::new(Kind::Protection, name),
        machine: addr(machine),
        target: addr("site.dr"),
        vault: addr("vault.main"),
        policy: addr(policy),
        consistency_group: Some("shop".into()),
        prevent_destroy: false,
        target_vm: None,
    }
}

/// Local vault, two sites, one policy, db + web, both protected, one plan.
fn quickstart() -> Config {
    let mut c = Config {
        source_hash: "ab".repeat(32),
        ..Config::default()
    };
    c.vaults.insert(
        addr("vault.main"),
        Vault {
            addr: addr("vault.main"),
            url: "file://.standby/vault".into(),
            key: KeySource::File("keys/vault.key".into()),
            sensitive: Default::default(),
        },
    );
    for s in ["onprem", "dr"] {
        c.sites.insert(
            Address::new(Kind::Site, s),
            Site {
                addr: Address::new(Kind::Site, s),
                provider: "local".into(),
                root: Some(format!("sites/{s}").into()),
                command: None,
                host: None,
                sensitive: Default::default(),
            },
        );
    }
    c.policies.insert(
        addr("policy.standard"),
        Policy {
            addr: addr("policy.standard"),
            rpo_threshold: d("15m"),
            crash_consistent_every: d("5m"),
            app_consistent_every: Some(d("1h")),
            retention: d("7d"),
            compression_level: 1,
        },
    );
    for m in [
        machine(
            "db",
            "site.onprem",
            &[("system", "db/system.img"), ("data", "db/data.sqlite")],
        ),
        machine("web", "site.onprem", &[("system", "web/system.img")]),
    ] {
        c.machines.insert(m.addr.clone(), m);
    }
    for p in [
        protection("db", "machine.db", "policy.standard"),
        protection("web", "machine.web", "policy.standard"),
    ] {
        c.protections.insert(p.addr.clone(), p);
    }
    c.recovery_plans.insert(
        addr("recovery_plan.shop"),
        RecoveryPlan {
            addr: addr("recovery_plan.shop"),
            groups: vec![
                Group {
                    name: "data".into(),
                    machines: vec![addr("machine.db")],
                    depends_on: vec![],
                    before: vec![],
                    after: vec![],
                },
                Group {
                    name: "web".into(),
                    machines: vec![addr("machine.web")],
                    depends_on: vec!["data".into()],
                    before: vec![],
                    after: vec![Step {
                        name: "dns".into(),
                        action: StepAction::Manual {
                            instructions: "Point shop.example.com at the DR site".into(),
                        },
                        timeout: d("1h"),
                        when: Default::default(),
                    }],
                },
            ],
            drill: Some(Drill {
                schedule: Schedule::Weekly,
                max_rto: d("10m"),
                instant: false,
            }),
            active_site: None,
        },
    );
    c
}

const NOW: time::OffsetDateTime = datetime!(2026-11-26 05:00 UTC);

fn opts() -> DiffOptions {
    DiffOptions { now: NOW }
}

/// A state that records exactly what `config` asks for.
fn matching_state(config: &Config) -> StateDoc {
    let mut s = StateDoc::new();
    s.lineage = uuid::Uuid::from_u128(0x1234);
    s.serial = 7;
    let p = plan::diff(config, Some(&s), &opts());
    for c in &p.changes {
        s.objects.insert(
            c.address.clone(),
            ObjectState {
                kind: c.kind,
                attributes: c.after(None).unwrap(),
                status: Status::Ready,
                updated_at: NOW,
            },
        );
    }
    s.drills.push(DrillRecord {
        plan: addr("recovery_plan.shop"),
        started_at: datetime!(2026-11-25 01:00 UTC),
        finished_at: datetime!(2026-11-25 01:07 UTC),
        passed: true,
        rto_seconds: Some(420.0),
        rpo_seconds: Some(60.0),
        interrupted: false,
    });
    s
}

#[test]
fn empty_state_creates_everything() {
    let p = plan::diff(&quickstart(), None, &opts());
    assert_eq!(p.changes.len(), 9);
    assert!(p.changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(p.serial, None);
    let text = render::text(&p, false);
    assert!(
        text.contains("Plan: 9 to add, 0 to change, 0 to destroy."),
        "{text}"
    );
    assert!(
        text.contains("  # machine.db will be created\n  + machine.db {\n"),
        "{text}"
    );
    assert!(
        text.contains("      + disk.data.path    = \"db/data.sqlite\"\n"),
        "{text}"
    );
    let note = p
        .notes
        .iter()
        .find(|n| n.kind == NoteKind::NeverDrilled)
        .unwrap();
    assert_eq!(note.subject, addr("recovery_plan.shop"));
}

#[test]
fn matching_state_has_no_changes() {
    let c = quickstart();
    let s = matching_state(&c);
    let p = plan::diff(&c, Some(&s), &opts());
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(p.unchanged, 9);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(p.lineage, s.lineage);
    assert_eq!(p.serial, Some(7));
    assert_eq!(
        render::text(&p, false),
        "No changes. The DR topology matches the configuration.\n"
    );
}

#[test]
fn observed_attributes_are_not_diffed() {
    let c = quickstart();
    let mut s = matching_state(&c);
    let db = s.objects.get_mut(&addr("protection.db")).unwrap();
    db.attributes
        .insert("observed.recovery_points".into(), json!(12));
    let p = plan::diff(&c, Some(&s), &opts());
    assert!(p.changes.is_empty(), "{:?}", p.changes);
}

/// The config moves disk data, weakens the policy, retargets protection.web
/// and drops machine.old/protection.old that the state still records.
fn changed_case() -> (Config, StateDoc, Plan) {
    let mut c = quickstart();
    let s0 = matching_state(&c);
    let mut s = s0.clone();
    // What the state records for an extra machine and its protection.
    let old_m = machine("old", "site.onprem", &[("system", "old/system.img")]);
    let mut old_c = Config::default();
    old_c.machines.insert(old_m.addr.clone(), old_m);
    old_c.protections.insert(
        addr("protection.old"),
        protection("old", "machine.old", "policy.standard"),
    );
    for ch in plan::diff(&old_c, Some(&s0), &opts()).changes {
        if ch.action == Action::Create {
            let mut attributes = ch.after(None).unwrap();
            if ch.kind == Kind::Protection {
                attributes.insert("observed.recovery_points".into(), json!(42));
                attributes.insert("observed.stored_bytes".into(), json!(3_221_225_472u64));
            }
            s.objects.insert(
                ch.address.clone(),
                ObjectState {
                    kind: ch.kind,
                    attributes,
                    status: Status::Protected,
                    updated_at: NOW,
                },
            );
        }
    }
    // machine.old is listed in the recorded recovery plan.
    let rp = s.objects.get_mut(&addr("recovery_plan.shop")).unwrap();
    rp.attributes.insert(
        "group.data.machines".into(),
        json!(["machine.db", "machine.old"]),
    );
    c.machines.get_mut(&addr("machine.db")).unwrap().disks[1].path = "db/data2.sqlite".into();
    let pol = c.policies.get_mut(&addr("policy.standard")).unwrap();
    pol.rpo_threshold = d("1h");
    pol.retention = d("3d");
    c.protections
        .get_mut(&addr("protection.web"))
        .unwrap()
        .target = addr("site.onprem2");
    c.sites.insert(
        addr("site.onprem2"),
        Site {
            addr: addr("site.onprem2"),
            provider: "local".into(),
            root: Some("sites/onprem2".into()),
            command: None,
            host: None,
            sensitive: Default::default(),
        },
    );
    // The last drill is long overdue and failed.
    s.drills[0].started_at = datetime!(2026-09-01 01:00 UTC);
    s.drills[0].finished_at = datetime!(2026-09-01 01:09 UTC);
    s.drills[0].passed = false;
    let p = plan::diff(&c, Some(&s), &opts());
    (c, s, p)
}

#[test]
fn updates_replace_and_delete_with_review_notes() {
    let (_, _, p) = changed_case();
    let actions: Vec<(String, &str)> = p
        .changes
        .iter()
        .map(|c| (c.address.to_string(), c.action.symbol()))
        .collect();
    assert_eq!(
        actions,
        [
            ("site.onprem2".to_string(), "+"),
            ("policy.standard".into(), "~"),
            ("machine.db".into(), "~"),
            ("machine.old".into(), "-"),
            ("protection.old".into(), "-"),
            ("protection.web".into(), "-/+"),
            ("recovery_plan.shop".into(), "~"),
        ]
    );
    let web = p
        .changes
        .iter()
        .find(|c| c.address == addr("protection.web"))
        .unwrap();
    assert_eq!(
        web.action,
        Action::Replace {
            forced_by: vec!["target".into()]
        }
    );
    let s = p.summary();
    assert_eq!((s.add, s.change, s.destroy), (2, 3, 3));

    let text = render::text(&p, false);
    assert!(
        text.contains("Plan: 2 to add, 3 to change, 3 to destroy."),
        "{text}"
    );
    assert!(
        text.contains("      ~ disk.data.path = \"db/data.sqlite\" -> \"db/data2.sqlite\"\n"),
        "{text}"
    );
    assert!(
        text.contains("-/+ protection.web {\n      ~ target = \"site.dr\" -> \"site.onprem2\" # forces replacement\n"),
        "{text}"
    );
    assert!(!text.contains("observed."), "{text}");

    let kinds: Vec<(String, NoteKind)> = p
        .notes
        .iter()
        .map(|n| (n.subject.to_string(), n.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("policy.standard".to_string(), NoteKind::RpoWeakened),
            ("policy.standard".into(), NoteKind::RetentionShortened),
            ("protection.old".into(), NoteKind::PointsDestroyed),
            ("protection.web".into(), NoteKind::PointsDestroyed),
            ("recovery_plan.shop".into(), NoteKind::DrillOverdue),
            ("recovery_plan.shop".into(), NoteKind::DrillFailed),
        ]
    );
    let msg = |k: NoteKind, s: &str| {
        p.notes
            .iter()
            .find(|n| n.kind == k && n.subject == addr(s))
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        msg(NoteKind::PointsDestroyed, "protection.old"),
        "protection.old will be destroyed: its 42 recovery points (3.0 GiB stored in vault.main) will be destroyed."
    );
    assert!(msg(NoteKind::RetentionShortened, "policy.standard").contains("from 7d to 3d"));
    assert!(msg(NoteKind::RpoWeakened, "policy.standard").contains("(used by 2 protections)"));
    // machine.old goes with its protection and leaves the recorded plan:
    // no note says it stays in recovery_plan.shop unprotected (issue 11.9).
    assert!(!text.contains("will have no protection"), "{text}");
    assert!(msg(NoteKind::DrillOverdue, "recovery_plan.shop").contains("2026-09-01"));
    assert!(text.contains("\nReview notes:\n  ! policy.standard (used by 2 protections): RPO threshold weakened from 15m to 1h"), "{text}");
}

#[test]
fn switching_a_protection_to_a_weaker_policy_is_noted() {
    let mut c = quickstart();
    let s = matching_state(&c);
    c.policies.insert(
        addr("policy.cheap"),
        Policy {
            addr: addr("policy.cheap"),
            rpo_threshold: d("4h"),
            crash_consistent_every: d("1h"),
            app_consistent_every: None,
            retention: d("1d"),
            compression_level: 3,
        },
    );
    c.protections
        .get_mut(&addr("protection.db"))
        .unwrap()
        .policy = addr("policy.cheap");
    let p = plan::diff(&c, Some(&s), &opts());
    let kinds: Vec<NoteKind> = p
        .notes
        .iter()
        .filter(|n| n.subject == addr("protection.db"))
        .map(|n| n.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            NoteKind::RpoWeakened,
            NoteKind::FrequencyWeakened,
            NoteKind::FrequencyWeakened,
            NoteKind::RetentionShortened
        ]
    );
}

#[test]
fn apply_order_deletes_dependents_first_and_creates_dependencies_first() {
    let (_, _, p) = changed_case();
    let steps: Vec<(String, StepOp)> = p
        .graph
        .apply_order(&p.changes)
        .into_iter()
        .map(|s| (s.address.to_string(), s.op))
        .collect();
    let pos = |a: &str, op: StepOp| steps.iter().position(|s| s.0 == a && s.1 == op).unwrap();
    // Deletes: the protection before its machine; all deletes before creates.
    assert!(pos("protection.old", StepOp::Delete) < pos("machine.old", StepOp::Delete));
    assert!(pos("machine.old", StepOp::Delete) < pos("site.onprem2", StepOp::Create));
    // A replace is delete then create; its new target exists first.
    assert!(pos("protection.web", StepOp::Delete) < pos("protection.web", StepOp::Create));
    assert!(pos("site.onprem2", StepOp::Create) < pos("protection.web", StepOp::Create));
    assert!(pos("protection.web", StepOp::Create) < pos("recovery_plan.shop", StepOp::Update));
    assert_eq!(steps.len(), 8);
}

#[test]
fn graph_links_objects_to_their_dependencies_and_prints_dot() {
    let p = plan::diff(&quickstart(), None, &opts());
    let deps: Vec<String> = p
        .graph
        .dependencies(&addr("protection.db"))
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        deps,
        ["vault.main", "site.dr", "policy.standard", "machine.db"]
    );
    let rp: Vec<String> = p
        .graph
        .dependencies(&addr("recovery_plan.shop"))
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(rp, ["protection.db", "protection.web"]);
    let dot = p.graph.to_dot();
    assert!(dot.starts_with("digraph plan {\n"), "{dot}");
    assert!(
        dot.contains("  \"machine.db\" [label = \"+ machine.db\"];\n"),
        "{dot}"
    );
    assert!(
        dot.contains("  \"machine.db\" -> \"site.onprem\";\n"),
        "{dot}"
    );
}

#[test]
fn dot_quotes_keyed_addresses() {
    let mut c = quickstart();
    let mut m = machine("web", "site.onprem", &[]);
    m.addr = Address::keyed(Kind::Machine, "web", "a\"b");
    c.machines.insert(m.addr.clone(), m);
    let dot = plan::diff(&c, None, &opts()).graph.to_dot();
    assert!(
        dot.contains(r#"  "machine.web[\"a\\\"b\"]" [label = "+ machine.web[\"a\\\"b\"]"];"#),
        "{dot}"
    );
}

#[test]
fn sensitive_values_appear_in_no_rendering() {
    let secret = "s3cr3t-token-value";
    let mut c = quickstart();
    let dr = c.sites.get_mut(&addr("site.dr")).unwrap();
    dr.provider = "exec".into();
    dr.command = Some(vec!["dr-provider".into(), format!("--token={secret}")]);
    dr.sensitive.insert("command".into());
    let s = matching_state(&c);
    assert!(!serde_json::to_string(&s).unwrap().contains(secret));
    // Change the secret: still detected, still hidden.
    let new_secret = "an0ther-s3cret";
    c.sites.get_mut(&addr("site.dr")).unwrap().command =
        Some(vec!["dr-provider".into(), format!("--token={new_secret}")]);
    let p = plan::diff(&c, Some(&s), &opts());
    assert_eq!(p.changes.len(), 1);
    let a = &p.changes[0].attributes[0];
    assert_eq!((a.name.as_str(), a.sensitive), ("command", true));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    plan::SavedPlan::save(&p, &file).unwrap();
    let outputs = [
        render::text(&p, false),
        render::text(&p, true),
        render::markdown(&p),
        render::json(&p),
        std::fs::read_to_string(&file).unwrap(),
        p.graph.to_dot(),
    ];
    for out in &outputs {
        assert!(!out.contains(secret) && !out.contains(new_secret), "{out}");
        assert!(!out.contains("token"), "{out}");
    }
    assert!(
        outputs[0].contains("~ command = (sensitive) -> (sensitive)"),
        "{}",
        outputs[0]
    );
    assert!(outputs[2].contains("(sensitive)"));
}

#[test]
fn markdown_is_a_pull_request_comment() {
    let (_, _, p) = changed_case();
    let md = render::markdown(&p);
    assert!(
        md.starts_with("### standby plan\n\n**Plan: 2 to add, 3 to change, 3 to destroy.**\n"),
        "{md}"
    );
    assert!(
        md.contains(
            "| `-/+` replace | `protection.web` | `target` (forces replacement: `target`) |"
        ),
        "{md}"
    );
    assert!(md.contains("```diff\n"), "{md}");
    assert!(md.contains("-     disk.data.path = \"db/data.sqlite\"\n+     disk.data.path = \"db/data2.sqlite\"\n"), "{md}");
    assert!(
        md.contains("\n#### Review notes\n\n- ⚠️ policy.standard"),
        "{md}"
    );
    assert!(md.trim_end().ends_with("failed."), "{md}");
}

#[test]
fn colour_is_only_added_when_asked() {
    let p = plan::diff(&quickstart(), None, &opts());
    assert!(!render::text(&p, false).contains('\x1b'));
    assert!(render::text(&p, true).contains("\x1b[32m+\x1b[39m"));
}

#[test]
fn json_output_matches_the_schema_and_round_trips() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let (_, _, changed) = changed_case();
    for p in [plan::diff(&quickstart(), None, &opts()), changed] {
        let doc: serde_json::Value = serde_json::from_str(&render::json(&p)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let back: Plan = serde_json::from_value(doc).unwrap();
        assert_eq!(back, p);
    }
    // The schema rejects what it should.
    let bad =
        json!({"format_version": 1, "changes": [{"address": "machine.x", "action": "explode"}]});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn change_after_reconstructs_the_desired_attributes() {
    let (c, s, p) = changed_case();
    let db = p
        .changes
        .iter()
        .find(|c| c.address == addr("machine.db"))
        .unwrap();
    let after = db
        .after(Some(&s.objects[&addr("machine.db")].attributes))
        .unwrap();
    let want = plan::flatten(
        plan::ObjectRef::Machine(&c.machines[&addr("machine.db")]),
        &plan::attributes::marker_key(&c, &s.lineage).unwrap(),
    );
    assert_eq!(after, want);
}

#[test]
fn destroying_a_protection_with_prevent_destroy_is_refused() {
    let mut c = quickstart();
    c.protections
        .get_mut(&addr("protection.db"))
        .unwrap()
        .prevent_destroy = true;
    let s = matching_state(&c);
    // Replace: prevent_destroy as configured.
    let mut retarget = c.clone();
    retarget
        .protections
        .get_mut(&addr("protection.db"))
        .unwrap()
        .target = addr("site.onprem");
    let p = plan::diff(&retarget, Some(&s), &opts());
    let prevented = p.prevented_destroys(&retarget, Some(&s));
    assert_eq!(prevented.len(), 1);
    assert_eq!(
        prevented[0].to_string(),
        "protection.db has prevent_destroy = true, but this plan would replace it (forced by target): its recovery points would be lost. Undo the change, or set prevent_destroy = false in a separate change first."
    );
    // Delete: prevent_destroy as recorded.
    let mut removed = c.clone();
    removed.protections.remove(&addr("protection.db"));
    removed.recovery_plans.clear();
    let p = plan::diff(&removed, Some(&s), &opts());
    let prevented = p.prevented_destroys(&removed, Some(&s));
    assert_eq!(prevented[0].forced_by, None);
    // Without the flag nothing is refused.
    let p = plan::diff(&quickstart(), Some(&matching_state(&quickstart())), &opts());
    assert!(p.prevented_destroys(&quickstart(), None).is_empty());
    let mut removed = quickstart();
    removed.protections.remove(&addr("protection.web"));
    let s = matching_state(&quickstart());
    assert!(
        plan::diff(&removed, Some(&s), &opts())
            .prevented_destroys(&removed, Some(&s))
            .is_empty()
    );
}
