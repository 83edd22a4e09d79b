//! Storage faults (issue 7): the vault's file system and the state's file
//! system fill up mid-run. Each is a real tmpfs that really runs out of
//! space. What must hold: a clear error, nothing committed half (no point
//! listed that does not restore, no torn state), and the next run succeeds
//! once space is back.

mod common;

use common::*;
use std::io::Write;

/// Replace a sample disk with incompressible bytes, so it cannot fit.
fn random_disk(path: &std::path::Path, mib: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
}

#[test]
fn a_full_vault_fails_replicate_cleanly_and_the_next_run_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    let fs = Tmpfs::mount(&d.path().join("vaultfs"), "3m");
    let main = root.join("main.hcl");
    let text0 = std::fs::read_to_string(&main).unwrap();
    let url = format!("file://{}/vault", fs.0.display());
    std::fs::write(&main, text0.replace("file://.standby/vault", &url)).unwrap();
    ok(&root, &["vault", "init"]);
    // The web disk: 6 MiB that does not compress, into 3 MiB of space.
    let web = root.join("sites/onprem/web/system.img");
    random_disk(&web, 6);

    let out = standby(&root).args(["replicate", "web"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("no space left"),
        "the error says why: {err}"
    );
    assert!(points(&root).is_empty(), "no half point is listed");
    ok(&root, &["vault", "verify", "--read-data"]);

    // Space comes back: the same command now succeeds and restores exactly.
    fs.resize("64m");
    ok(&root, &["replicate", "web"]);
    let listed = points(&root);
    let web_points: Vec<_> = listed
        .iter()
        .filter(|p| p["machine"] == "machine.web")
        .collect();
    assert_eq!(web_points.len(), 1, "{listed:?}");
    let to = d.path().join("restored.img");
    let id = web_points[0]["id"].as_str().unwrap();
    ok(
        &root,
        &[
            "restore",
            id,
            "--disk",
            "system",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&to).unwrap() == std::fs::read(&web).unwrap());
    ok(&root, &["vault", "verify", "--read-data"]);
}

#[test]
fn a_full_state_file_system_fails_apply_cleanly_and_keeps_the_state() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    // The vault and key live elsewhere; only the state's directory fills up.
    let main = root.join("main.hcl");
    let text0 = std::fs::read_to_string(&main).unwrap();
    let vault = d.path().join("vault");
    let key = d.path().join("main.key");
    std::fs::write(
        &main,
        text0
            .replace(
                "file://.standby/vault",
                &format!("file://{}", vault.display()),
            )
            .replace(".standby/keys/main.key", key.to_str().unwrap()),
    )
    .unwrap();
    // Room for the staging copies of app-consistent points, until filled.
    let fs = Tmpfs::mount(&root.join(".standby"), "64m");
    ok(&root, &["apply", "--auto-approve"]);
    let state_path = root.join(".standby/state.json");
    let before = std::fs::read(&state_path).unwrap();
    // A change that apply records in state.
    let policy = root.join("main.hcl");
    let text1 = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text1.replace(
            "retention              = \"24h\"",
            "retention              = \"48h\"",
        ),
    )
    .unwrap();
    assert_eq!(
        standby(&root)
            .args(["plan", "--detailed-exitcode"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );

    let filler = fill(&fs.0, "filler");
    let out = standby(&root)
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out).to_lowercase();
    assert!(all.contains("no space left"), "the error says why: {all}");
    // The state file is whole: the old document or a newer complete one.
    let after = std::fs::read(&state_path).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&after)
        .unwrap_or_else(|e| panic!("state torn by the full disk: {e}"));
    assert!(doc["serial"].as_u64().unwrap() >= 1);
    if after != before {
        ok(&root, &["state", "list"]);
    }

    std::fs::remove_file(filler).unwrap();
    ok(&root, &["apply", "--auto-approve"]);
    let code = standby(&root)
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap()
        .status
        .code();
    assert_eq!(code, Some(0), "apply converged once space was back");
}
