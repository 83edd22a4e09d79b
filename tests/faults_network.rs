//! Network faults (issue 7): a TCP proxy on loopback between standby and
//! Azurite (and moto) stalls, resets and truncates connections at random.
//! `replicate` and remote-state `apply` must retry and either finish or
//! fail cleanly: no partial point, no lost state write. Afterwards, with
//! the network healthy, verify passes and every point restores exactly.
//!
//! `STANDBY_NETWORK_ROUNDS` sets the long form's rounds (bench/faults.sh).

mod common;
mod fault_proxy;

use common::*;
use fault_proxy::Proxy;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// Which server, its endpoint variable, and the URL prefix tests use.
struct Service {
    endpoint_var: &'static str,
    url_var: &'static str,
}

const AZURITE: Service = Service {
    endpoint_var: "AZURITE_BLOB_STORAGE_URL",
    url_var: "STANDBY_TEST_AZ_URL",
};
const MOTO: Service = Service {
    endpoint_var: "AWS_ENDPOINT",
    url_var: "STANDBY_TEST_S3_URL",
};

fn upstream(s: &Service) -> SocketAddr {
    let url = service_url(s.endpoint_var);
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// standby, with the service reached through the proxy.
fn via(proxy: &Proxy, s: &Service, root: &Path) -> Command {
    let mut c = standby(root);
    c.env(s.endpoint_var, proxy.url());
    c
}

fn ok_via(proxy: &Proxy, s: &Service, root: &Path, args: &[&str]) -> String {
    let o = via(proxy, s, root).args(args).output().unwrap();
    assert!(o.status.success(), "standby {args:?}:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn listed(proxy: &Proxy, s: &Service, root: &Path) -> Vec<(String, String)> {
    point_ids(&ok_via(proxy, s, root, &["points", "--json"]))
}

fn replicate_through_chaos(s: &Service, tag: &str) {
    let rounds = count_from_env("STANDBY_NETWORK_ROUNDS", 3);
    let mut rng = Rng::seeded(tag);
    let proxy = Proxy::start(upstream(s), 90, rng.next());
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    let url = format!("{}/{}", service_url(s.url_var), unique(tag));
    let main = root.join("main.hcl");
    let text0 = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text0.replace("file://.standby/vault", &url)).unwrap();
    ok_via(&proxy, s, &root, &["vault", "init"]);
    let mut points = Rounds::new(&root, &d.path().join("refs"));
    let (mut finished, mut failed) = (0, 0);
    for round in 0..rounds {
        points.next(round, Some(&mut rng));
        let before = listed(&proxy, s, &root);
        proxy.chaos(true);
        let o = via(&proxy, s, &root).arg("replicate").output().unwrap();
        proxy.chaos(false);
        let after = listed(&proxy, s, &root);
        match o.status.code() {
            Some(0) => {
                finished += 1;
                // A replicate that says it finished took a point of each machine.
                for m in ["machine.db", "machine.web"] {
                    assert!(
                        after.iter().any(|p| p.1 == m && !before.contains(p)),
                        "round {round}: replicate exited 0 without a new point of {m}"
                    );
                }
            }
            Some(1) => {
                failed += 1;
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("error"),
                    "a failure says so:\n{}",
                    text(&o)
                );
            }
            other => panic!("replicate ended with {other:?}:\n{}", text(&o)),
        }
        points.taken(&before, &after);
    }
    // Retries must get points through the faults, not only fail cleanly:
    // go on (bounded) until a round under faults has stored a point.
    let mut extra = 0;
    while points.expected.is_empty() && extra < 10 {
        points.next(rounds + extra, Some(&mut rng));
        let before = listed(&proxy, s, &root);
        proxy.chaos(true);
        let o = via(&proxy, s, &root).arg("replicate").output().unwrap();
        proxy.chaos(false);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        points.taken(&before, &listed(&proxy, s, &root));
        extra += 1;
    }
    assert!(
        !points.expected.is_empty(),
        "no point was stored under faults in {} rounds ({finished} finished)",
        rounds + extra
    );
    assert!(
        proxy.counts.total() > 0,
        "no fault was injected: {:?}",
        proxy.counts
    );
    // Healthy again: the vault is sound, every point restores exactly, and
    // the next replicate works.
    ok_via(&proxy, s, &root, &["vault", "verify", "--read-data"]);
    points.check_all(d.path(), |id, disk, to| {
        ok_via(
            &proxy,
            s,
            &root,
            &["restore", id, "--disk", disk, "--to", to.to_str().unwrap()],
        );
    });
    ok_via(&proxy, s, &root, &["replicate"]);
    println!(
        "{tag}: {rounds} rounds under faults ({finished} finished, {failed} failed cleanly), {} faults injected {:?}; {} points all restore exactly",
        proxy.counts.total(),
        proxy.counts,
        points.expected.len()
    );
}

#[test]
fn replicate_through_a_faulty_network_to_azurite() {
    replicate_through_chaos(&AZURITE, "net-az");
}

#[test]
fn replicate_through_a_faulty_network_to_moto() {
    replicate_through_chaos(&MOTO, "net-s3");
}

/// Remote state on Azurite behind the faulty proxy: an apply either
/// finishes or fails cleanly, and a later apply converges with every
/// step recorded once.
#[test]
fn remote_state_apply_through_a_faulty_network() {
    let s = &AZURITE;
    let rounds = count_from_env("STANDBY_NETWORK_ROUNDS", 3) * 2;
    let mut rng = Rng::seeded("net-state");
    let proxy = Proxy::start(upstream(s), 90, rng.next());
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    let state_url = format!("{}/{}", service_url(s.url_var), unique("net-state"));
    std::fs::write(
        root.join("backend.hcl"),
        format!("backend {{\n  url = \"{state_url}\"\n}}\n"),
    )
    .unwrap();
    let main = root.join("main.hcl");
    let text0 = std::fs::read_to_string(&main).unwrap();
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        // Each round changes the policy, so every apply has a state write.
        std::fs::write(
            &main,
            text0.replace(
                "retention              = \"24h\"",
                &format!("retention              = \"{}h\"", 24 + round),
            ),
        )
        .unwrap();
        proxy.chaos(true);
        let o = via(&proxy, s, &root)
            .args(["apply", "--auto-approve"])
            .output()
            .unwrap();
        proxy.chaos(false);
        outcomes.push(o.status.code());
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "apply ended with {:?}:\n{}",
            o.status.code(),
            text(&o)
        );
        // Healthy: the next apply converges, with no force-unlock: a run
        // that failed under faults must not leave the state locked.
        ok_via(&proxy, s, &root, &["apply", "--auto-approve"]);
        let code = via(&proxy, s, &root)
            .args(["plan", "--detailed-exitcode"])
            .output()
            .unwrap()
            .status
            .code();
        assert_eq!(code, Some(0), "round {round}: not converged");
    }
    assert!(proxy.counts.total() > 0, "no fault was injected");
    // Each protection got exactly its first point: nothing done twice.
    let out = ok_via(&proxy, s, &root, &["points", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for p in ["protection.db", "protection.web"] {
        assert_eq!(
            v.iter().filter(|x| x["protection"] == p).count(),
            1,
            "{p}: {v:?}"
        );
    }
    println!(
        "remote-state apply under faults: outcomes {outcomes:?}, {} faults {:?}",
        proxy.counts.total(),
        proxy.counts
    );
}
