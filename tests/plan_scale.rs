//! A fleet of 10,000 machines and protections plans correctly against an
//! empty state and a state matching all but 1% (timings: bench/plan.sh).

use standby::model::*;
use standby::plan::{self, Action, DiffOptions};
use standby::state::{ObjectState, StateDoc, Status};

fn a(s: &str) -> Address {
    s.parse().unwrap()
}

fn fleet(n: usize) -> Config {
    let mut c = Config::default();
    for s in ["onprem", "dr"] {
        let addr = Address::new(Kind::Site, s);
        c.sites.insert(
            addr.clone(),
            Site {
                addr,
                provider: "local".into(),
                root: Some(format!("sites/{s}").into()),
                command: None,
                host: None,
                sensitive: Default::default(),
            },
        );
    }
    for i in 0..n {
        let name = format!("m{i:05}");
        let m = Address::new(Kind::Machine, &name);
        c.machines.insert(
            m.clone(),
            Machine {
                addr: m.clone(),
                site: a("site.onprem"),
                disks: vec![Disk {
                    name: "data".into(),
                    path: format!("{name}/data.img").into(),
                }],
                quiesce: None,
                boot: None,
                shutdown: None,
                checks: vec![],
                sensitive: Default::default(),
                vm: None,
            },
        );
        let p = Address::new(Kind::Protection, &name);
        c.protections.insert(
            p.clone(),
            Protection {
                addr: p,
                machine: m,
                target: a("site.dr"),
                vault: a("vault.main"),
                policy: a("policy.standard"),
                consistency_group: None,
                prevent_destroy: false,
                target_vm: None,
            },
        );
    }
    c
}

#[test]
fn ten_thousand_machines_plan_linearly_and_correctly() {
    let n = 10_000;
    let c = fleet(n);
    let started = std::time::Instant::now();
    let empty = plan::diff(&c, None, &DiffOptions::default());
    eprintln!("empty state: {:?}", started.elapsed());
    assert_eq!(empty.changes.len(), 2 * n + 2);
    // machine -> site, protection -> machine and target (no vault or policy here).
    assert_eq!(empty.graph.graph.edge_count(), 3 * n);

    let mut state = StateDoc::new();
    for ch in &empty.changes {
        state.objects.insert(
            ch.address.clone(),
            ObjectState {
                kind: ch.kind,
                attributes: ch.after(None).unwrap(),
                status: Status::Ready,
                updated_at: time::OffsetDateTime::UNIX_EPOCH,
            },
        );
    }
    // 1% differs: 50 recorded at another path, 50 missing.
    for i in (0..n).step_by(100) {
        let m = Address::new(Kind::Machine, format!("m{i:05}"));
        if i % 200 == 0 {
            state
                .objects
                .get_mut(&m)
                .unwrap()
                .attributes
                .insert("disk.data.path".into(), serde_json::json!("old.img"));
        } else {
            state.objects.remove(&m);
        }
    }
    let started = std::time::Instant::now();
    let p = plan::diff(&c, Some(&state), &DiffOptions::default());
    eprintln!("99% state: {:?}", started.elapsed());
    let s = p.summary();
    assert_eq!((s.add, s.change, s.destroy), (50, 50, 0));
    assert_eq!(s.unchanged, 2 * n + 2 - 100);
    assert!(p.changes.iter().all(|c| c.kind == Kind::Machine));
    assert_eq!(p.graph.apply_order(&p.changes).len(), 100);
    let text = plan::render::text(&p, false);
    assert!(text.contains("Plan: 50 to add, 50 to change, 0 to destroy."));
    assert!(matches!(p.changes[0].action, Action::Update));
}
