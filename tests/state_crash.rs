//! kill -9 in the middle of state writes never loses the state: after each
//! kill, `state.json` parses and holds at least the last acknowledged
//! write, the backup parses, and the next command gets the lock.

mod state_support;

use standby::model::{Address, Kind};
use standby::state::{Backend, LocalBackend, ObjectState, Status};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Run as a child process: write the state in a loop, acknowledging each
/// finished write on stdout, until killed.
#[test]
#[ignore = "helper run as a child process"]
fn write_state_until_killed() {
    let Ok(dir) = std::env::var("STANDBY_TEST_WRITE_LOOP_DIR") else {
        return;
    };
    let backend = LocalBackend::new(&dir);
    loop {
        let lock = backend.lock("standby crash-test").unwrap();
        let mut doc = backend.read().unwrap().unwrap_or_default();
        let n = doc.serial;
        doc.objects.insert(
            Address::keyed(Kind::Machine, "fleet", format!("m{n}")),
            ObjectState {
                kind: Kind::Machine,
                // Enough bytes that a write takes a moment to land.
                attributes: [("blob".to_string(), serde_json::json!("x".repeat(20_000)))]
                    .into_iter()
                    .collect(),
                status: Status::Ready,
                updated_at: time::OffsetDateTime::now_utc(),
            },
        );
        backend.write(&lock, &mut doc).unwrap();
        println!("WROTE {}", doc.serial);
    }
}

#[test]
fn sigkill_during_writes_keeps_a_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    for round in 0..8u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "write_state_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env("STANDBY_TEST_WRITE_LOOP_DIR", dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut acknowledged = 0u64;
        let mut seen = 0;
        let mut line = String::new();
        // Kill after a varying number of acknowledged writes, so the kill
        // lands at different points of a write.
        while seen < 2 + round {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "writer died");
            if let Some(n) = line.trim().strip_prefix("WROTE ") {
                acknowledged = n.parse().unwrap();
                seen += 1;
            }
        }
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
        child.wait().unwrap();

        let doc = backend
            .read()
            .unwrap_or_else(|e| panic!("round {round}: state lost: {e}"))
            .expect("state exists");
        assert!(
            doc.serial >= acknowledged,
            "round {round}: serial {} < acknowledged {acknowledged}",
            doc.serial
        );
        assert_eq!(doc.objects.len() as u64, doc.serial);
        let backup = std::fs::read(backend.backup_path()).unwrap();
        standby::state::parse_document(&backend.backup_path(), &backup)
            .unwrap_or_else(|e| panic!("round {round}: backup broken: {e}"));
        // No stuck lock.
        drop(backend.lock("standby after kill").unwrap());
    }
}
