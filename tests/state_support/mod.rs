//! Shared by the state tests: sample documents and state directories.
#![allow(dead_code)]

use standby::model::{Address, Kind};
use standby::state::{DrillRecord, ObjectState, StateDoc, Status};
use std::path::{Path, PathBuf};
use time::macros::datetime;

/// A document with plain and keyed addresses, every kind, and drills.
pub fn sample_doc() -> StateDoc {
    let mut doc = StateDoc::new();
    let at = datetime!(2026-11-26 05:10:00 UTC);
    let mut put = |addr: Address, status: Status, attrs: serde_json::Value| {
        let attributes = attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        doc.objects.insert(
            addr.clone(),
            ObjectState {
                kind: addr.kind,
                attributes,
                status,
                updated_at: at,
            },
        );
    };
    put(
        Address::new(Kind::Vault, "main"),
        Status::Ready,
        serde_json::json!({"url": "file://.standby/vault"}),
    );
    put(
        Address::new(Kind::Site, "onprem"),
        Status::Ready,
        serde_json::json!({"provider": "local", "root": "sites/onprem"}),
    );
    put(
        Address::new(Kind::Policy, "standard"),
        Status::Ready,
        serde_json::json!({"rpo_threshold": "15m", "retention": "24h"}),
    );
    put(
        Address::new(Kind::Machine, "db"),
        Status::Ready,
        serde_json::json!({"site": "site.onprem", "disks": ["system", "data"]}),
    );
    put(
        Address::keyed(Kind::Machine, "web", "a"),
        Status::Ready,
        serde_json::json!({"site": "site.onprem"}),
    );
    put(
        Address::keyed(Kind::Protection, "web", "a b"),
        Status::Protected,
        serde_json::json!({"machine": "machine.web[\"a\"]", "target": "site.dr"}),
    );
    put(
        Address::new(Kind::RecoveryPlan, "shop"),
        Status::FailedOver,
        serde_json::json!({"groups": [{"name": "data"}]}),
    );
    doc.drills.push(DrillRecord {
        plan: Address::new(Kind::RecoveryPlan, "shop"),
        started_at: datetime!(2026-11-20 01:00:00 UTC),
        finished_at: datetime!(2026-11-20 01:07:30 UTC),
        passed: true,
        rto_seconds: Some(450.0),
        rpo_seconds: Some(120.0),
        interrupted: false,
    });
    doc.drills.push(DrillRecord {
        plan: Address::new(Kind::RecoveryPlan, "shop"),
        started_at: datetime!(2026-11-25 01:00:00.5 +01:00),
        finished_at: datetime!(2026-11-25 01:02:00 +01:00),
        passed: false,
        rto_seconds: None,
        rpo_seconds: None,
        interrupted: false,
    });
    // A failover run in progress, with one machine placed and one approval.
    doc.runs.push(standby::state::RunRecord {
        plan: Address::new(Kind::RecoveryPlan, "shop"),
        run_id: "shop-planned-20261126T051000-a1b2c3".into(),
        kind: standby::state::RunKind::Planned,
        mode: standby_provider_core::Mode::Failover,
        phase: standby::state::Phase::Running,
        started_at: at,
        finished_at: None,
        owner: Some(standby::state::Owner {
            pid: 4242,
            host: "ops-1".into(),
        }),
        waiting_for: Some("web.dns".into()),
        approvals: vec![standby::state::Approval {
            step: "dns".into(),
            at,
            by: "ops@host".into(),
        }],
        machines: [(
            "machine.db".to_string(),
            standby::state::MachineRun {
                from_site: "site.onprem".into(),
                site: "site.dr".into(),
                status: standby::state::MachineStatus::Running,
                point: Some(standby::state::PointUsed {
                    vault: "vault.main".into(),
                    id: "ab".repeat(32),
                    created: "2026-11-26T05:09:00Z".into(),
                    consistency: "app".into(),
                    group: Some("shop".into()),
                }),
                disks: [("data".to_string(), "/srv/dr/db/data.sqlite".to_string())].into(),
                placed_by: None,
                error: None,
            },
        )]
        .into(),
        reprotect: None,
        failback: None,
        drill: false,
        first_attempt: None,
    });
    doc
}

/// The repository's `testdata/state/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/state")
        .join(name)
}

/// A configuration directory whose `.standby/state.json` holds `bytes`.
pub fn dir_with_state(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".standby")).unwrap();
    std::fs::write(dir.path().join(".standby/state.json"), bytes).unwrap();
    dir
}
