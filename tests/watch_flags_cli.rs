//! The service's flags (`--max-protections`, `--lease-*`, `--listen`,
//! `--prune-*`, `--retry-max`, `--store-retry`) only mean something with
//! `--watch`: without it they were accepted and ignored. They are refused,
//! naming `--watch`, and nothing is taken. (`--host` means this host for
//! a one-shot replicate too: tests/fleet_cli.rs.)

mod watch_support;

use watch_support::*;

#[test]
fn service_flags_without_watch_are_refused_and_take_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = quickstart(
        dir.path(),
        r#"  rpo_threshold          = "1h"
  crash_consistent_every = "10m"
  retention              = "24h""#,
        None,
    );
    expect_code(standby(&root).args(["vault", "init"]), 0);
    for flag in [
        &["--max-protections", "1"][..],
        &["--lease-expiry", "60s"],
        &["--lease-renew", "5s"],
        &["--listen", "127.0.0.1:1"],
        &["--listen-any"],
        &["--prune-every", "1m"],
        &["--prune-grace", "1m"],
        &["--retry-max", "1m"],
        &["--store-retry", "1m"],
    ] {
        let out = expect_code(standby(&root).arg("replicate").args(flag), 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--watch"), "{flag:?}: {err}");
    }
    let out = expect_code(standby(&root).args(["points", "--json"]), 0);
    let points: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(points.as_array().map(Vec::len), Some(0), "{points}");
}
