//! Remote state: the same suite over file://, az:// (Azurite) and s3://
//! (moto). The lock object, force-unlock, malformed documents, secrets in
//! messages, and two real `standby` processes racing on one state.

mod common;

use standby::model::{Address, Backend as BackendConfig, Kind};
use standby::state::{
    Backend, LockInfo, ObjectState, REMOTE_LOCK_NAME, REMOTE_STATE_NAME, StateDoc, StateError,
    Status, open_backend,
};
use standby::store::{self, Store};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A fresh state URL of `kind` under its own prefix.
fn url(kind: &str, tmp: &Path, test: &str) -> String {
    let prefix = common::unique(test);
    match kind {
        "file" => format!("file://{}/{prefix}", tmp.display()),
        "az" => format!("{}/{prefix}", common::service_url("STANDBY_TEST_AZ_URL")),
        "s3" => format!("{}/{prefix}", common::service_url("STANDBY_TEST_S3_URL")),
        other => panic!("no backend {other}"),
    }
}

fn backend(url: &str, base: &Path) -> Box<dyn Backend> {
    open_backend(
        base,
        Some(&BackendConfig {
            url: url.to_string(),
        }),
    )
    .unwrap()
}

/// The raw store under the state's prefix, to look behind the backend's back.
fn raw(url: &str, base: &Path) -> Store {
    store::open(url, base).unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn get(store: &Store, name: &str) -> Option<Vec<u8>> {
    block_on(async {
        match store.get_versioned(name).await {
            Ok((b, _)) => Some(b.to_vec()),
            Err(store::StoreError::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    })
}

fn put(store: &Store, name: &str, bytes: Vec<u8>) {
    block_on(async {
        object_store::ObjectStoreExt::put(&*store.inner, &store.path(name), bytes.into())
            .await
            .unwrap()
    });
}

/// A document holding `machine.NAME` for each name.
fn doc_with(names: &[String]) -> StateDoc {
    let mut doc = StateDoc::new();
    for n in names {
        let addr = Address::new(Kind::Machine, n);
        doc.objects.insert(
            addr,
            ObjectState {
                kind: Kind::Machine,
                attributes: Default::default(),
                status: Status::Ready,
                updated_at: time::OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .unwrap(),
            },
        );
    }
    doc
}

/// Write `doc` through a fresh lock.
fn seed(b: &dyn Backend, doc: &mut StateDoc) {
    let lock = b.lock("test setup").unwrap();
    b.write(&lock, doc).unwrap();
}

fn standby(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C").arg(dir).args(args).env("NO_COLOR", "1");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    standby(dir, args).output().unwrap()
}

/// Output text with miette's wrapping and frame characters folded away, so
/// a phrase can be found whatever the line width.
fn flat(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `hay` (flattened CLI output) says `needle`, ignoring whitespace:
/// miette may wrap a long URL at any `/`.
fn says(hay: &str, needle: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    squash(hay).contains(&squash(needle))
}

/// No secret from the environment may appear in `text`.
fn assert_no_secrets(text: &str) {
    for var in ["AZURE_STORAGE_ACCOUNT_KEY", "AWS_SECRET_ACCESS_KEY"] {
        if let Ok(v) = std::env::var(var) {
            assert!(!says(text, &v), "{var} leaked into: {text}");
        }
    }
}

fn lock_is_refused_while_held_naming_holder_and_age(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "locked");
    let b = backend(&u, tmp.path());
    let held = b.lock("standby apply --auto-approve").unwrap();
    let err = b.lock("standby state rm machine.db").unwrap_err();
    assert!(matches!(err, StateError::RemoteLocked { .. }), "{err:?}");
    let text = err.to_string();
    let info = held.info();
    for part in [
        format!("pid {}", info.pid),
        format!("on host {}", info.host),
        "\"standby apply --auto-approve\"".to_string(),
        format!("lock id {}", info.id),
        "since ".to_string(),
        "lock age ".to_string(),
        format!("{}/state.json", u),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(
        help.contains(&format!("standby state force-unlock {}", info.id)),
        "{help}"
    );
    assert_no_secrets(&text);
    // The refused attempt left the holder's lock alone.
    let stored: LockInfo =
        serde_json::from_slice(&get(&raw(&u, tmp.path()), REMOTE_LOCK_NAME).unwrap()).unwrap();
    assert_eq!(&stored, info);
}

fn an_old_lock_reports_its_age(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "oldlock");
    let mut info = LockInfo::for_this_process("standby apply");
    info.pid = 4_000_000; // a holder long gone
    info.since -= time::Duration::minutes(2 * 60 + 5);
    put(
        &raw(&u, tmp.path()),
        REMOTE_LOCK_NAME,
        serde_json::to_vec(&info).unwrap(),
    );
    let err = backend(&u, tmp.path()).lock("standby plan").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("lock age 2h 5m"), "{text}");
    assert!(text.contains("pid 4000000"), "{text}");
}

fn lock_is_released_on_drop(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "release");
    let b = backend(&u, tmp.path());
    let s = raw(&u, tmp.path());
    let lock = b.lock("first").unwrap();
    assert!(get(&s, REMOTE_LOCK_NAME).is_some());
    drop(lock);
    assert_eq!(
        get(&s, REMOTE_LOCK_NAME),
        None,
        "the lock object must be gone"
    );
    let again = b.lock("second").unwrap();
    assert_eq!(again.info().command, "second");
}

fn write_keeps_backup_and_bumps_serial(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "write");
    let b = backend(&u, tmp.path());
    assert_eq!(b.read().unwrap(), None);
    let mut doc = doc_with(&["a".into(), "b".into()]);
    seed(b.as_ref(), &mut doc);
    assert_eq!(doc.serial, 1);
    let first = get(&raw(&u, tmp.path()), REMOTE_STATE_NAME).unwrap();
    let lock = b.lock("second").unwrap();
    let mut read = b.read().unwrap().unwrap();
    assert_eq!(read, doc);
    read.objects.remove(&Address::new(Kind::Machine, "a"));
    b.write(&lock, &mut read).unwrap();
    assert_eq!(read.serial, 2);
    assert_eq!(b.read().unwrap().unwrap(), read);
    assert_eq!(
        get(&raw(&u, tmp.path()), "state.json.backup").unwrap(),
        first,
        "the backup holds the previous document"
    );
    // A second write from the same stale read is refused: serial moved.
    let mut stale = doc.clone();
    let err = b.write(&lock, &mut stale).unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");
    assert_eq!(b.read().unwrap().unwrap(), read);
}

fn force_unlock_needs_the_right_id(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "unlock");
    let b = backend(&u, tmp.path());
    let mut doc = doc_with(&["a".into()]);
    seed(b.as_ref(), &mut doc);
    let stuck = b.lock("standby apply").unwrap();
    let id = stuck.info().id.to_string();
    let cfg = format!("url={u}");

    let wrong = uuid::Uuid::new_v4().to_string();
    let out = run(
        tmp.path(),
        &["state", "force-unlock", &wrong, "--backend-config", &cfg],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(says(&err, "is not the id of the current lock"), "{err}");
    assert!(says(&err, &format!("lock id {id}")), "{err}");
    assert!(
        b.lock("other").is_err(),
        "a wrong id must leave the lock in place"
    );

    let out = run(
        tmp.path(),
        &["state", "force-unlock", &id, "-backend-config", &cfg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", flat(&out.stderr));
    let said = flat(&out.stdout);
    assert!(says(&said, &format!("Removed the lock {id}")), "{said}");
    assert!(says(&said, &format!("pid {}", stuck.info().pid)), "{said}");
    assert!(says(&said, "\"standby apply\""), "{said}");

    // Someone else takes the lock; the unlocked holder may no longer write,
    // and releasing its lock later must not remove the new holder's.
    let newer = b.lock("standby state rm machine.a").unwrap();
    let mut stale = b.read().unwrap().unwrap();
    let err = b.write(&stuck, &mut stale).unwrap_err();
    assert!(matches!(err, StateError::LockLost { .. }), "{err:?}");
    assert!(err.to_string().contains("force-unlocked"), "{err}");
    drop(stuck);
    let stored: LockInfo =
        serde_json::from_slice(&get(&raw(&u, tmp.path()), REMOTE_LOCK_NAME).unwrap()).unwrap();
    assert_eq!(stored.id, newer.info().id);
    assert_eq!(b.read().unwrap().unwrap().serial, 1, "nothing was written");
    drop(newer);

    let out = run(
        tmp.path(),
        &["state", "force-unlock", &id, "--backend-config", &cfg],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(says(&flat(&out.stderr), "is not locked"));
}

fn malformed_state_is_reported_and_never_overwritten(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "malformed");
    let s = raw(&u, tmp.path());
    let garbage = b"{\"format_version\": 1, \"lineage\": oops".to_vec();
    put(&s, REMOTE_STATE_NAME, garbage.clone());
    let cfg = format!("url={u}");
    for args in [
        vec!["state", "rm", "machine.a", "--backend-config", &cfg],
        vec!["state", "list", "--backend-config", &cfg],
    ] {
        let out = run(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = flat(&out.stderr);
        assert!(
            says(
                &err,
                &format!("state file {u}/state.json is not a valid state document")
            ),
            "{err}"
        );
        assert!(says(&err, "not valid JSON"), "{err}");
        assert!(says(&err, "will not overwrite it"), "{err}");
        assert_no_secrets(&err);
    }
    assert_eq!(get(&s, REMOTE_STATE_NAME), Some(garbage));
    assert_eq!(
        get(&s, REMOTE_LOCK_NAME),
        None,
        "the failed rm released its lock"
    );
}

/// Two `standby state rm` processes on different addresses, started at
/// once, round after round: each round one wins and the other is refused
/// naming the winner (or both win, one after the other); the final state
/// holds exactly the reported removals and the serial counts every write.
fn racing_processes_never_lose_a_write(kind: &str) {
    const ROUNDS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "race");
    let b = backend(&u, tmp.path());
    let names: Vec<String> = (0..ROUNDS)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    let mut doc = doc_with(&names);
    seed(b.as_ref(), &mut doc);
    let cfg = format!("url={u}");

    let mut removed = BTreeSet::new();
    let mut serials = Vec::new();
    let mut refusals = 0;
    // The serials each round wrote (its two processes may win in either order).
    let mut round_serials: Vec<Vec<u64>> = Vec::new();
    for i in 0..ROUNDS {
        let mut this_round = Vec::new();
        let targets = [format!("machine.a{i}"), format!("machine.b{i}")];
        let children: Vec<_> = targets
            .iter()
            .map(|t| {
                standby(tmp.path(), &["state", "rm", t, "--backend-config", &cfg])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut won = 0;
        for (k, out) in outs.iter().enumerate() {
            let (stdout, stderr) = (flat(&out.stdout), flat(&out.stderr));
            assert_no_secrets(&stderr);
            if out.status.success() {
                won += 1;
                assert!(
                    says(&stdout, &format!("Removed {}", targets[k])),
                    "{stdout}"
                );
                let serial: u64 = stdout
                    .split("(serial ")
                    .nth(1)
                    .and_then(|r| r.split(')').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no serial in {stdout}"));
                serials.push(serial);
                this_round.push(serial);
                removed.insert(targets[k].clone());
            } else {
                refusals += 1;
                let other = 1 - k;
                assert_eq!(out.status.code(), Some(1));
                for part in [
                    "is locked by".to_string(),
                    format!("pid {}", pids[other]),
                    format!(
                        "running \"standby -C {} state rm {}",
                        tmp.path().display(),
                        targets[other]
                    ),
                    "lock age".to_string(),
                    "standby state force-unlock".to_string(),
                ] {
                    assert!(
                        says(&stderr, &part),
                        "round {i}: {part:?} missing from: {stderr}"
                    );
                }
            }
        }
        assert!(won >= 1, "round {i}: nobody won");
        round_serials.push(this_round);
    }
    eprintln!(
        "{kind}: {ROUNDS} rounds, {} wins, {refusals} refused",
        serials.len()
    );
    let mut sorted = serials.clone();
    sorted.sort_unstable();
    let expected: Vec<u64> = (2..2 + serials.len() as u64).collect();
    assert_eq!(sorted, expected, "every win wrote exactly one new serial");
    for pair in round_serials.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert!(
            before.iter().max() < after.iter().min(),
            "a later round wrote an older serial: {round_serials:?}"
        );
    }

    let fin = b.read().unwrap().unwrap();
    assert_eq!(fin.serial, 1 + serials.len() as u64);
    assert_eq!(fin.lineage, doc.lineage);
    let left: BTreeSet<String> = fin.objects.keys().map(|a| a.to_string()).collect();
    let all: BTreeSet<String> = names.iter().map(|n| format!("machine.{n}")).collect();
    let want: BTreeSet<String> = all.difference(&removed).cloned().collect();
    assert_eq!(left, want, "the state holds exactly the reported removals");
    assert_eq!(get(&raw(&u, tmp.path()), REMOTE_LOCK_NAME), None);
}

fn backend_block_and_plan_use_the_remote_state(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "block");
    let b = backend(&u, tmp.path());
    let mut doc = doc_with(&["db".into(), "web".into()]);
    seed(b.as_ref(), &mut doc);
    std::fs::write(
        tmp.path().join("backend.hcl"),
        format!("backend {{\n  url = \"{u}\"\n}}\n"),
    )
    .unwrap();
    let out = run(tmp.path(), &["state", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", flat(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "machine.db\nmachine.web\n"
    );
    // The local files were never used.
    assert!(!tmp.path().join(".standby/state.json").exists());

    // --backend-config overrides the block.
    let other = url(kind, tmp.path(), "override");
    let out = run(
        tmp.path(),
        &["state", "list", "--backend-config", &format!("url={other}")],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(says(
        &flat(&out.stderr),
        &format!("No state yet: {other}/state.json")
    ));

    // plan reads the same remote state: a malformed one stops it, named.
    put(
        &raw(&u, tmp.path()),
        REMOTE_STATE_NAME,
        b"not json".to_vec(),
    );
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/invalid/44-top-level-attribute/main.hcl"),
    )
    .unwrap();
    let valid: String = config.lines().skip(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(tmp.path().join("main.hcl"), valid).unwrap();
    let out = run(tmp.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(
        says(
            &err,
            &format!("{u}/state.json is not a valid state document")
        ),
        "{err}"
    );
}

/// A state deleted behind standby's back while its backup remains is
/// named as such (commands refuse to start over from nothing then), and
/// no write is accepted.
fn a_deleted_state_with_its_backup_left_is_found(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let u = url(kind, tmp.path(), "orphan");
    let b = backend(&u, tmp.path());
    assert_eq!(b.orphaned_backup(), None);
    let mut doc = doc_with(&["a".into()]);
    seed(b.as_ref(), &mut doc);
    let lock = b.lock("second").unwrap();
    let mut read = b.read().unwrap().unwrap();
    b.write(&lock, &mut read).unwrap();
    drop(lock);
    assert_eq!(b.orphaned_backup(), None, "the state is there");
    let store = raw(&u, tmp.path());
    block_on(async {
        object_store::ObjectStoreExt::delete(&*store.inner, &store.path(REMOTE_STATE_NAME))
            .await
            .unwrap()
    });
    let found = b.orphaned_backup().expect("the backup is named");
    assert!(found.ends_with("state.json.backup"), "{found}");
    // No writer may start a new state beside it: the next write would
    // replace the backup, the only good copy, with it.
    let before = get(&store, "state.json.backup");
    let lock = b.lock("third").unwrap();
    let err = b.write(&lock, &mut StateDoc::default()).unwrap_err();
    assert!(
        matches!(err, standby::state::StateError::Orphaned { .. }),
        "{err}"
    );
    assert!(
        get(&store, "state.json").is_none(),
        "a new state was written"
    );
    assert_eq!(
        get(&store, "state.json.backup"),
        before,
        "the backup changed"
    );
}

/// Generate one test per backend for each suite function.
macro_rules! over_backends {
    ($($name:ident),* $(,)?) => {
        mod file { $( #[test] fn $name() { super::$name("file"); } )* }
        mod az { $( #[test] fn $name() { super::$name("az"); } )* }
        mod s3 { $( #[test] fn $name() { super::$name("s3"); } )* }
    };
}

over_backends!(
    lock_is_refused_while_held_naming_holder_and_age,
    an_old_lock_reports_its_age,
    lock_is_released_on_drop,
    write_keeps_backup_and_bumps_serial,
    force_unlock_needs_the_right_id,
    malformed_state_is_reported_and_never_overwritten,
    racing_processes_never_lose_a_write,
    backend_block_and_plan_use_the_remote_state,
    a_deleted_state_with_its_backup_left_is_found,
);

/// The executor persists from tokio tasks: the synchronous backend must work
/// from a multi-threaded runtime's task and from a current-thread runtime.
#[test]
fn usable_from_inside_async_runtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let u = url("az", tmp.path(), "async");
    let b: std::sync::Arc<dyn Backend> = backend(&u, tmp.path()).into();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b2 = b.clone();
    let serial = multi.block_on(async move {
        tokio::spawn(async move {
            let lock = b2.lock("from a task").unwrap();
            let mut doc = b2.read().unwrap().unwrap_or_default();
            b2.write(&lock, &mut doc).unwrap();
            doc.serial
            // `lock` drops here, inside the task.
        })
        .await
        .unwrap()
    });
    assert_eq!(serial, 1);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let serial = current.block_on(async {
        let lock = b.lock("from a current-thread runtime").unwrap();
        let mut doc = b.read().unwrap().unwrap();
        b.write(&lock, &mut doc).unwrap();
        doc.serial
    });
    assert_eq!(serial, 2);
    // The backend itself may be dropped inside a runtime too.
    current.block_on(async move { drop(b) });
    drop(multi);
}

/// A wrong Azure key makes every request fail; the message names the
/// store and never the key.
#[test]
fn a_refused_credential_is_reported_without_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let u = url("az", tmp.path(), "badkey");
    let bad_key = "QkFEa2V5QkFEa2V5QkFEa2V5QkFEa2V5QkFEa2V5QkFEa2V5"; // base64, wrong
    let out = standby(
        tmp.path(),
        &[
            "state",
            "rm",
            "machine.a",
            "--backend-config",
            &format!("url={u}"),
        ],
    )
    .env("AZURE_STORAGE_ACCOUNT_KEY", bad_key)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(
        says(&err, &common::service_url("STANDBY_TEST_AZ_URL")),
        "{err}"
    );
    assert!(!says(&err, bad_key), "the key leaked: {err}");
    assert!(!says(&err, "QkFEa2V5"), "part of the key leaked: {err}");
}

#[test]
fn invalid_backend_settings_are_precise() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        &["state", "list", "--backend-config", "url=gs://b/p"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(says(&flat(&out.stderr), "unsupported scheme \"gs\""));
    let out = run(
        tmp.path(),
        &["state", "list", "-backend-config", "bucket=x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(says(
        &flat(&out.stderr),
        "unknown backend setting \"bucket\""
    ));
    // A broken backend block is shown as configuration diagnostics.
    std::fs::write(
        tmp.path().join("main.hcl"),
        "backend {\n  url = var.where\n}\n",
    )
    .unwrap();
    let out = run(tmp.path(), &["state", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(
        says(&err, "the backend url must be a literal string"),
        "{err}"
    );
    assert!(says(&err, "main.hcl:2:9"), "{err}");
}

/// The local backend's force-unlock never removes a live OS lock.
#[test]
fn local_force_unlock_explains_os_locks() {
    let tmp = tempfile::tempdir().unwrap();
    let b = standby::state::LocalBackend::new(tmp.path());
    let out = run(tmp.path(), &["state", "force-unlock", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(says(&flat(&out.stderr), "is not locked"));
    let held = b.lock("standby apply").unwrap();
    let id = held.info().id.to_string();
    let out = run(tmp.path(), &["state", "force-unlock", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(says(&err, "is held by a live process"), "{err}");
    assert!(says(&err, &format!("pid {}", std::process::id())), "{err}");
    assert!(says(&err, "OS lock"), "{err}");
    let out = run(tmp.path(), &["state", "force-unlock", "wrong-id"]);
    assert!(says(
        &flat(&out.stderr),
        "is not the id of the current lock"
    ));
    // Still held: a write under it works.
    b.write(&held, &mut StateDoc::new()).unwrap();
}

/// Not a test: the figures `bench/remote_state.sh` prints (run with
/// `--ignored --nocapture`). Times lock + read + write + release, in
/// process, on each backend; asserts only that every round trip worked.
#[test]
#[ignore]
fn measure_lock_write_round_trip() {
    const ROUNDS: usize = 30;
    for kind in ["file", "az", "s3"] {
        let tmp = tempfile::tempdir().unwrap();
        let u = url(kind, tmp.path(), "measure");
        let b = backend(&u, tmp.path());
        let names: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        seed(b.as_ref(), &mut doc_with(&names));
        let mut lock_ms = Vec::new();
        let mut total_ms = Vec::new();
        for _ in 0..ROUNDS {
            let start = std::time::Instant::now();
            let lock = b.lock("bench").unwrap();
            let locked = start.elapsed();
            let mut doc = b.read().unwrap().unwrap();
            b.write(&lock, &mut doc).unwrap();
            drop(lock);
            lock_ms.push(locked.as_secs_f64() * 1000.0);
            total_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        assert_eq!(b.read().unwrap().unwrap().serial, 1 + ROUNDS as u64);
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() * 9 / 10])
        };
        let (lock_med, lock_p90) = stats(&mut lock_ms);
        let (med, p90) = stats(&mut total_ms);
        println!(
            "{kind:>4}: lock {lock_med:6.1} ms median ({lock_p90:6.1} p90); lock+read+write+release {med:6.1} ms median ({p90:6.1} p90), {ROUNDS} rounds, 100-object state"
        );
    }
}

/// A backend url naming a container or bucket that does not exist.
fn a_missing_bucket_is_named(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let base = url(kind, tmp.path(), "x");
    let scheme = &base[..base.find("://").unwrap()];
    let u = format!("{scheme}://{}/state", common::unique("nobucket"));
    let out = run(
        tmp.path(),
        &[
            "state",
            "rm",
            "machine.a",
            "--backend-config",
            &format!("url={u}"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(
        says(
            &err,
            &format!("the container or bucket of {u} does not exist")
        ),
        "{err}"
    );
    assert_no_secrets(&err);
}

#[test]
fn a_missing_container_is_named_az() {
    a_missing_bucket_is_named("az");
}

#[test]
fn a_missing_bucket_is_named_s3() {
    a_missing_bucket_is_named("s3");
}
