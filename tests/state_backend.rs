//! The local state backend on real files: reading, malformed documents
//! (never overwritten), atomic writes with a backup, conflicts, the lock.

mod state_support;

use standby::model::{Address, Kind};
use standby::state::{Backend, LocalBackend, StateDoc, StateError};
use state_support::{dir_with_state, fixture, sample_doc};

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

#[test]
fn missing_state_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(LocalBackend::new(dir.path()).read().unwrap(), None);
    assert_eq!(standby::state::read_local(dir.path()).unwrap(), None);
}

#[test]
fn valid_fixture_reads() {
    let dir = dir_with_state(&read_fixture("valid.json"));
    let doc = LocalBackend::new(dir.path()).read().unwrap().unwrap();
    assert_eq!(doc.serial, 7);
    assert!(
        doc.objects
            .contains_key(&Address::keyed(Kind::Machine, "web", "a"))
    );
}

/// Each malformed fixture: the message names the file and what is wrong,
/// and neither a write through the library nor the file bytes change.
fn assert_malformed(fixture_name: &str, expect_in_message: &[&str]) {
    let bytes = read_fixture(fixture_name);
    let dir = dir_with_state(&bytes);
    let backend = LocalBackend::new(dir.path());
    let err = backend.read().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("state.json"),
        "{fixture_name}: message does not name the file: {msg}"
    );
    for want in expect_in_message {
        assert!(
            msg.contains(want),
            "{fixture_name}: message lacks {want:?}: {msg}"
        );
    }
    let help = miette::Diagnostic::help(&err).map(|h| h.to_string());
    assert!(help.is_some(), "{fixture_name}: no hint");

    // A write must refuse, whatever document it is given.
    let lock = backend.lock("test write").unwrap();
    let mut doc = StateDoc::new();
    let werr = backend.write(&lock, &mut doc).unwrap_err();
    assert_eq!(werr.to_string(), msg, "{fixture_name}: write error differs");
    assert_eq!(doc.serial, 0, "the caller's document must not be bumped");
    drop(lock);
    assert_eq!(
        std::fs::read(backend.state_path()).unwrap(),
        bytes,
        "{fixture_name}: the malformed file was changed"
    );
    assert!(!backend.backup_path().exists());
}

#[test]
fn truncated_json_is_refused_and_kept() {
    assert_malformed("truncated.json", &["ends too early", "line "]);
}

#[test]
fn empty_file_is_refused_and_kept() {
    assert_malformed("empty.json", &["empty"]);
}

#[test]
fn empty_object_is_refused_and_kept() {
    assert_malformed("empty-object.json", &["`format_version` is missing"]);
}

#[test]
fn newer_format_names_the_writer_and_is_kept() {
    assert_malformed("format-99.json", &["format version 99", "standby 3.2.0"]);
    let dir = dir_with_state(&read_fixture("format-99.json"));
    let err = LocalBackend::new(dir.path()).read().unwrap_err();
    assert!(matches!(err, StateError::NewerFormat { found: 99, .. }));
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("upgrade standby to 3.2.0"), "{help}");
}

#[test]
fn older_unknown_format_is_refused_and_kept() {
    assert_malformed("format-0.json", &["format version 0 is not supported"]);
}

#[test]
fn binary_garbage_is_refused_and_kept() {
    assert_malformed("garbage.bin", &["not valid JSON", "line 1 column"]);
}

#[test]
fn wrong_type_names_line_and_column() {
    assert_malformed(
        "wrong-type.json",
        &["wrong document shape", "line 4 column"],
    );
}

#[test]
fn unknown_field_is_refused() {
    assert_malformed("unknown-field.json", &["unknown field `owner`", "line 5"]);
}

#[test]
fn unknown_status_is_refused() {
    assert_malformed("bad-status.json", &["unknown variant `great`"]);
}

#[test]
fn malformed_hint_points_at_the_backup_when_there_is_one() {
    let dir = dir_with_state(b"{\"format_version\": 1,");
    std::fs::write(
        dir.path().join(".standby/state.json.backup"),
        read_fixture("valid.json"),
    )
    .unwrap();
    let err = LocalBackend::new(dir.path()).read().unwrap_err();
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("state.json.backup"), "{help}");
}

#[test]
fn writes_bump_serial_keep_lineage_and_keep_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby test").unwrap();
    let mut doc = sample_doc();
    doc.standby_version = "0.0.0-old".into();
    let lineage = doc.lineage;
    backend.write(&lock, &mut doc).unwrap();
    assert_eq!(doc.serial, 1);
    assert_eq!(doc.standby_version, env!("CARGO_PKG_VERSION"));
    assert!(!backend.backup_path().exists(), "nothing to back up yet");
    let first = std::fs::read(backend.state_path()).unwrap();
    assert_eq!(backend.read().unwrap().unwrap(), doc);

    doc.objects.remove(&Address::new(Kind::Machine, "db"));
    backend.write(&lock, &mut doc).unwrap();
    assert_eq!(doc.serial, 2);
    assert_eq!(doc.lineage, lineage);
    let stored = backend.read().unwrap().unwrap();
    assert_eq!(stored, doc);
    assert_eq!(std::fs::read(backend.backup_path()).unwrap(), first);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join(".standby"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_stale_document_is_not_written_over_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby test").unwrap();
    let mut doc = sample_doc();
    backend.write(&lock, &mut doc).unwrap();
    let mut stale = doc.clone();
    backend.write(&lock, &mut doc).unwrap();
    let before = std::fs::read(backend.state_path()).unwrap();
    let err = backend.write(&lock, &mut stale).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Conflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut other = StateDoc::new();
    other.serial = 2;
    let err = backend.write(&lock, &mut other).unwrap_err();
    assert!(err.to_string().contains("lineage"), "{err}");
    assert_eq!(std::fs::read(backend.state_path()).unwrap(), before);
}

#[test]
fn a_lock_of_another_state_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let lock_a = LocalBackend::new(a.path()).lock("standby test").unwrap();
    let err = LocalBackend::new(b.path())
        .write(&lock_a, &mut sample_doc())
        .unwrap_err();
    assert!(matches!(err, StateError::WrongLock { .. }), "{err}");
    assert!(!b.path().join(".standby/state.json").exists());
}

#[test]
fn second_lock_names_the_holder_and_release_on_drop_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby apply").unwrap();
    let err = backend.lock("standby state rm machine.db").unwrap_err();
    let msg = err.to_string();
    let info = lock.info();
    assert!(msg.starts_with("the state is locked by pid "), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains(&format!("on host {}", info.host)), "{msg}");
    assert!(msg.contains("running \"standby apply\""), "{msg}");
    assert!(msg.contains(&info.id.to_string()), "{msg}");
    assert!(msg.contains(" since 20"), "{msg}");
    assert!(miette::Diagnostic::help(&err).is_some());
    drop(lock);
    let again = backend.lock("standby state rm machine.db").unwrap();
    assert_eq!(again.info().command, "standby state rm machine.db");
}

#[test]
fn a_panic_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let result = std::thread::spawn(move || {
        let _lock = LocalBackend::new(&path).lock("standby panics").unwrap();
        panic!("boom while holding the lock");
    })
    .join();
    assert!(result.is_err());
    LocalBackend::new(dir.path())
        .lock("standby after panic")
        .unwrap();
}

#[test]
fn stale_holder_text_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".standby")).unwrap();
    // What a process killed with SIGKILL leaves behind: text, but no OS lock.
    std::fs::write(
        dir.path().join(".standby/state.lock"),
        r#"{"id":"0b6f4c1e-3a52-4d8e-9a3b-2f6f0c7d9e11","pid":1,"host":"gone","command":"standby apply","since":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let lock = LocalBackend::new(dir.path()).lock("standby next").unwrap();
    let text = std::fs::read_to_string(dir.path().join(".standby/state.lock")).unwrap();
    assert!(text.contains("standby next"), "{text}");
    assert!(!text.contains("gone"), "{text}");
    assert_eq!(lock.info().pid, std::process::id());
}

#[test]
fn a_state_removed_under_a_writer_is_not_silently_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby test").unwrap();
    let mut doc = sample_doc();
    backend.write(&lock, &mut doc).unwrap();
    std::fs::remove_file(backend.state_path()).unwrap();
    let err = backend.write(&lock, &mut doc).unwrap_err();
    assert!(
        matches!(err, StateError::Vanished { expected: 1, .. }),
        "{err}"
    );
    assert!(!backend.state_path().exists());
}

/// Issue 11 item 2: a new document never replaces a lost state whose
/// backup remains (the write after it would overwrite the backup).
#[test]
fn a_lost_state_with_its_backup_left_is_never_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby test").unwrap();
    let mut doc = sample_doc();
    backend.write(&lock, &mut doc).unwrap();
    backend.write(&lock, &mut doc).unwrap();
    let backup = std::fs::read(backend.backup_path()).unwrap();
    std::fs::remove_file(backend.state_path()).unwrap();
    let err = backend.write(&lock, &mut StateDoc::default()).unwrap_err();
    assert!(matches!(err, StateError::Orphaned { .. }), "{err}");
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("cp "), "{help}");
    assert!(!backend.state_path().exists());
    assert_eq!(std::fs::read(backend.backup_path()).unwrap(), backup);
}

#[test]
fn backends_and_locks_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<LocalBackend>();
    shareable::<standby::state::StateLock>();
    shareable::<Box<dyn Backend>>();
}
