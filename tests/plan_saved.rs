//! Saved plan files: written and read back, refused when stale or malformed.

use standby::model::{Address, Config, Kind, Site};
use standby::plan::{self, DiffOptions, SavedPlan, SavedPlanError, StaleReason, ensure_applicable};
use standby::state::StateDoc;

fn config(hash: &str) -> Config {
    let mut c = Config {
        source_hash: hash.to_string(),
        ..Config::default()
    };
    let a = Address::new(Kind::Site, "dr");
    c.sites.insert(
        a.clone(),
        Site {
            addr: a,
            provider: "local".into(),
            root: Some("sites/dr".into()),
            command: None,
            host: None,
            sensitive: Default::default(),
        },
    );
    c
}

fn state(serial: u64) -> StateDoc {
    let mut s = StateDoc::new();
    s.serial = serial;
    s
}

fn saved(c: &Config, s: Option<&StateDoc>) -> SavedPlan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tfplan.json");
    let p = plan::diff(c, s, &DiffOptions::default());
    SavedPlan::save(&p, &path).unwrap();
    let back = SavedPlan::load(&path).unwrap();
    assert_eq!(back.plan, p);
    back
}

#[test]
fn a_fresh_plan_applies() {
    let s = state(3);
    let p = saved(&config("aaaa"), Some(&s));
    assert_eq!(p.plan.serial, Some(3));
    assert_eq!(p.plan.lineage, s.lineage);
    ensure_applicable(&p, Some(&s), "aaaa").unwrap();
    let p = saved(&config("aaaa"), None);
    ensure_applicable(&p, None, "aaaa").unwrap();
}

#[test]
fn a_moved_serial_is_refused() {
    let mut s = state(3);
    let p = saved(&config("aaaa"), Some(&s));
    s.serial = 5;
    let err = ensure_applicable(&p, Some(&s), "aaaa").unwrap_err();
    assert_eq!(err.reasons, [StaleReason::SerialMoved { from: 3, to: 5 }]);
    assert_eq!(
        err.to_string(),
        "the saved plan is stale: the state's serial moved from 3 to 5 since the plan was made; make a new plan"
    );
}

#[test]
fn another_lineage_is_refused() {
    let s = state(3);
    let p = saved(&config("aaaa"), Some(&s));
    let other = state(3);
    let err = ensure_applicable(&p, Some(&other), "aaaa").unwrap_err();
    assert_eq!(
        err.reasons,
        [StaleReason::LineageDiffers {
            planned: s.lineage,
            current: other.lineage
        }]
    );
}

#[test]
fn a_changed_configuration_is_refused_with_every_reason() {
    let s = state(3);
    let p = saved(&config("aaaaaaaaaaaaaaaaaaaa"), Some(&s));
    let err = ensure_applicable(&p, None, "bbbbbbbbbbbbbbbbbbbb").unwrap_err();
    assert_eq!(
        err.reasons,
        [
            StaleReason::StateMissing { serial: 3 },
            StaleReason::ConfigChanged {
                planned: "aaaaaaaaaaaa".into(),
                current: "bbbbbbbbbbbb".into()
            }
        ]
    );
    assert!(
        err.to_string()
            .contains("the configuration changed since the plan was made")
    );
}

#[test]
fn a_plan_made_without_state_is_refused_once_state_exists() {
    let p = saved(&config("aaaa"), None);
    assert_eq!(p.plan.serial, None);
    let err = ensure_applicable(&p, Some(&state(1)), "aaaa").unwrap_err();
    assert_eq!(err.reasons, [StaleReason::StateCreated { serial: 1 }]);
}

#[test]
fn malformed_files_give_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, "{\"format_version\": 1, \"lineage\":").unwrap();
    let e = SavedPlan::load(&path).unwrap_err();
    assert!(matches!(e, SavedPlanError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("is not a standby plan"), "{e}");

    std::fs::write(&path, "{\"format_version\": 9}").unwrap();
    let e = SavedPlan::load(&path).unwrap_err();
    assert!(matches!(e, SavedPlanError::Version { found: 9, .. }), "{e}");

    let e = SavedPlan::load(&dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(e, SavedPlanError::Read { .. }), "{e}");
}

#[test]
fn saving_leaves_no_temporary_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let p = plan::diff(&config("aaaa"), None, &DiffOptions::default());
    SavedPlan::save(&p, &path).unwrap();
    SavedPlan::save(&p, &path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["p.json"]);
}
