//! Issue 16, bars 2 and 5: several `standby replicate --watch` services
//! share one configuration's work through leases in the vaults, through
//! the real binary, one vault on Azurite and one on moto.
//!
//! Each service runs in its own copy of the configuration directory (its
//! own `.standby/cache`, as on its own host, `--host hN`); the disks are
//! shared. Every point is app-consistent: the freeze hook takes a lock
//! the test's churner also takes to change a disk, and every change
//! writes the disk's generation into its first block and keeps a copy of
//! the disk as it then is, so a point's content is known exactly: the copy
//! of the generation it restores to.
//!
//! While the services run, services are killed with SIGKILL at set moments.
//! Then: every protection kept its RPO threshold except for at most one
//! lease-expiry period after a kill; no machine has two points for one
//! place in its chain (two writers at once would both write seq n+1); each
//! point after a machine's first is a delta, also the first one a new
//! holder takes after a takeover (bar 5); a one-shot `replicate` refuses a
//! batch a live service holds, naming it; `status --json` names each
//! protection's holder; each service's /metrics reports its own leases and
//! the vault-wide newest point of every protection; `vault verify
//! --read-data` passes; every listed point restores byte-identical to the
//! copy of its generation.
//!
//! Bounded for CI: 4 services, 8 protections (two consistency groups),
//! about 60 s, 2 kills. `bench/fleet.sh` runs the long form through the
//! environment: `STANDBY_FLEET_SERVICES`, `_PROTECTIONS`, `_SECONDS`,
//! `_KILLS`, `_PRUNE_EVERY`, `_POINT_EVERY`, `_RPO` (seconds).

mod common;
mod watch_support;

use common::count_from_env;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use watch_support::{expect_code, free_port, http_get, metric, standby, stdout, wait_for};

const DISK: u64 = 128 * 1024;
/// Lease renewal and expiry in seconds (`STANDBY_FLEET_RENEW`, `_EXPIRY`).
fn renew_s() -> u64 {
    count_from_env("STANDBY_FLEET_RENEW", 1)
}

fn expiry_s() -> u64 {
    count_from_env("STANDBY_FLEET_EXPIRY", 3)
}

struct Fleet {
    services: usize,
    protections: usize,
    seconds: u64,
    kills: usize,
    prune_every: u64,
    point_every: u64,
    rpo: u64,
}

impl Fleet {
    fn from_env() -> Fleet {
        let services = count_from_env("STANDBY_FLEET_SERVICES", 4) as usize;
        Fleet {
            services,
            protections: count_from_env("STANDBY_FLEET_PROTECTIONS", 8) as usize,
            seconds: count_from_env("STANDBY_FLEET_SECONDS", 60),
            kills: (count_from_env("STANDBY_FLEET_KILLS", 2) as usize).min(services - 1),
            prune_every: count_from_env("STANDBY_FLEET_PRUNE_EVERY", 10),
            point_every: count_from_env("STANDBY_FLEET_POINT_EVERY", 3),
            rpo: count_from_env("STANDBY_FLEET_RPO", 20),
        }
    }

    /// Vault of protection `i`: the first half on Azurite, the rest on moto.
    fn vault_of(&self, i: usize) -> &'static str {
        if i < self.protections / 2 { "az" } else { "s3" }
    }

    /// Consistency group of protection `i`: the first two of each vault.
    fn group_of(&self, i: usize) -> Option<&'static str> {
        let half = self.protections / 2;
        match i {
            0 | 1 => Some("g_az"),
            i if i == half || i == half + 1 => Some("g_s3"),
            _ => None,
        }
    }

    fn unit_of(&self, i: usize) -> String {
        match self.group_of(i) {
            Some(g) => format!("group {g}"),
            None => format!("protection.m{i}"),
        }
    }

    fn units(&self) -> BTreeSet<String> {
        (0..self.protections).map(|i| self.unit_of(i)).collect()
    }
}

fn service_url(var: &str) -> String {
    let base = common::service_url(var);
    format!("{}/{}", base.trim_end_matches('/'), common::unique("fleet"))
}

/// The configuration: sites, hooks and disks at absolute paths, so every
/// service's copy of the directory reaches the same disks.
fn configure(f: &Fleet, d: &Path) -> PathBuf {
    let root = d.join("main");
    let shared = d.join("shared");
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::create_dir_all(shared.join("locks")).unwrap();
    std::fs::create_dir_all(shared.join("scripts")).unwrap();
    let freeze = shared.join("scripts/freeze.sh");
    // The lock a point's freeze holds while its disks are copied; a
    // holder killed while frozen (its pid gone) is broken.
    std::fs::write(
        &freeze,
        "#!/bin/sh\nwhile ! mkdir \"$1\" 2>/dev/null; do\n  p=$(cat \"$1/pid\" 2>/dev/null)\n  if [ -n \"$p\" ] && ! kill -0 \"$p\" 2>/dev/null; then rm -rf \"$1\"; fi\n  sleep 0.01\ndone\necho $PPID > \"$1.pid.$$\" && mv \"$1.pid.$$\" \"$1/pid\"\n",
    )
    .unwrap();
    let thaw = shared.join("scripts/thaw.sh");
    // Only its own freeze's lock: a thaw after a freeze that timed out
    // must not remove a lock someone else holds.
    std::fs::write(
        &thaw,
        "#!/bin/sh\n[ \"$(cat \"$1/pid\" 2>/dev/null)\" = \"$PPID\" ] && rm -rf \"$1\"\nexit 0\n",
    )
    .unwrap();
    let mut hcl = format!(
        r#"vault "az" {{
  url      = "{az}"
  key_file = "keys/az.key"
}}
vault "s3" {{
  url      = "{s3}"
  key_file = "keys/s3.key"
}}
site "onprem" {{
  provider = "local"
  root     = "{onprem}"
}}
site "dr" {{
  provider = "local"
  root     = "{dr}"
}}
policy "p" {{
  rpo_threshold          = "{rpo}s"
  crash_consistent_every = "{every}s"
  app_consistent_every   = "{every}s"
  retention              = "24h"
}}
"#,
        az = service_url("STANDBY_TEST_AZ_URL"),
        s3 = service_url("STANDBY_TEST_S3_URL"),
        onprem = shared.join("onprem").display(),
        dr = shared.join("dr").display(),
        rpo = f.rpo,
        every = f.point_every,
    );
    for i in 0..f.protections {
        let lock = shared.join(format!("locks/m{i}"));
        hcl.push_str(&format!(
            r#"machine "m{i}" {{
  site = site.onprem
  disk "system" {{ path = "m{i}/system.img" }}
  quiesce {{
    freeze  = ["sh", "{freeze}", "{lock}"]
    thaw    = ["sh", "{thaw}", "{lock}"]
    timeout = "20s"
  }}
}}
protection "m{i}" {{
  machine = machine.m{i}
  target  = site.dr
  vault   = vault.{vault}
  policy  = policy.p
{group}}}
"#,
            freeze = freeze.display(),
            thaw = thaw.display(),
            lock = lock.display(),
            vault = f.vault_of(i),
            group = f
                .group_of(i)
                .map(|g| format!("  consistency_group = \"{g}\"\n"))
                .unwrap_or_default(),
        ));
        let disk = disk(d, i);
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..DISK).map(|_| rand::random::<u8>()).collect();
        std::fs::write(&disk, data).unwrap();
    }
    std::fs::create_dir_all(shared.join("dr")).unwrap();
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    root
}

fn disk(d: &Path, i: usize) -> PathBuf {
    d.join(format!("shared/onprem/m{i}/system.img"))
}

fn refs(d: &Path) -> PathBuf {
    d.join("refs")
}

/// Change machine `i`'s disk under its freeze lock: the next generation
/// in the first 8 bytes, a few random blocks, then a copy of the disk as it
/// now is (`refs/m{i}-{gen}`).
fn churn(d: &Path, i: usize, generation: u64) {
    let lock = d.join(format!("shared/locks/m{i}"));
    let started = Instant::now();
    loop {
        if std::fs::create_dir(&lock).is_ok() {
            break;
        }
        // A freeze of a killed service: break it as the hook would.
        let pid = std::fs::read_to_string(lock.join("pid")).ok();
        let gone = pid
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
            .is_some_and(|p| unsafe { libc::kill(p, 0) } != 0);
        if gone || started.elapsed() > Duration::from_secs(30) {
            let _ = std::fs::remove_dir_all(&lock);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Written whole (renamed into place): a reader never sees it empty.
    let tmp = lock.with_extension("pid-tmp");
    std::fs::write(&tmp, std::process::id().to_string()).unwrap();
    std::fs::rename(&tmp, lock.join("pid")).unwrap();
    let path = disk(d, i);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&generation.to_le_bytes(), 0).unwrap();
    for _ in 0..(1 + rand::random::<u64>() % 4) {
        let block: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let at = (1 + rand::random::<u64>() % (DISK / 4096 - 1)) * 4096;
        f.write_all_at(&block, at).unwrap();
    }
    drop(f);
    std::fs::copy(&path, refs(d).join(format!("m{i}-{generation}"))).unwrap();
    std::fs::remove_dir_all(&lock).unwrap();
}

struct Service {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    host: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(f: &Fleet, d: &Path, root: &Path, n: usize) -> Service {
    let dir = d.join(format!("host{n}"));
    common::copy_dir(root, &dir);
    // Its own cache, as on its own host.
    let _ = std::fs::remove_dir_all(dir.join(".standby/cache"));
    let port = free_port();
    let log = d.join(format!("service{n}.log"));
    let host = format!("h{n}");
    let child = standby(&dir)
        .args(["replicate", "--watch", "--host", &host])
        .args(["--lease-renew", &format!("{}s", renew_s())])
        .args(["--lease-expiry", &format!("{}s", expiry_s())])
        .args(["--prune-every", &format!("{}s", f.prune_every)])
        .args(["--retry-max", "2s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Service {
        child: Some(child),
        port,
        log,
        host,
    }
}

fn points(dir: &Path) -> Vec<Value> {
    let out = expect_code(standby(dir).args(["points", "--json"]), 0);
    serde_json::from_str::<Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn created(p: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        p["created"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The services' log lines about `what`, about pruning and failures.
fn about(services: &[Service], what: &str) -> String {
    let all = logs(services);
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| {
            l.starts_with("---")
                || l.contains(what)
                || l.contains("prune")
                || l.contains("lease")
                || l.contains("failed")
        })
        .collect();
    lines[lines.len().saturating_sub(300)..].join("\n")
}

fn logs(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| {
            format!(
                "--- {} ---\n{}",
                s.host,
                std::fs::read_to_string(&s.log).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn services_share_the_work_take_over_after_kills_and_keep_every_rpo() {
    let f = Fleet::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(refs(d)).unwrap();
    let root = configure(&f, d);
    // Generation 0 of every disk, then the state and the first points.
    for i in 0..f.protections {
        churn(d, i, 0);
    }
    expect_code(standby(&root).args(["vault", "init"]), 0);
    expect_code(standby(&root).args(["apply", "--auto-approve"]), 0);

    let mut services: Vec<Service> = (0..f.services).map(|n| start(&f, d, &root, n)).collect();
    let started = OffsetDateTime::now_utc();
    let t0 = Instant::now();

    // The churner: every disk changes about twice per point interval.
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (stop, d, n) = (Arc::clone(&stop), d.to_path_buf(), f.protections);
        let pause =
            Duration::from_millis(f.point_every * 500 / n as u64).max(Duration::from_millis(5));
        std::thread::spawn(move || {
            let mut generation = vec![0u64; n];
            while !stop.load(Ordering::Relaxed) {
                for (i, g) in generation.iter_mut().enumerate() {
                    *g += 1;
                    churn(&d, i, *g);
                    std::thread::sleep(pause);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        })
    };

    // A fair share: every service holds leases once all have started,
    // and together they hold every batch.
    let units = f.units();
    wait_for(
        "every service to hold a fair share",
        Duration::from_secs(120),
        || {
            let mut total = 0.0;
            for s in &services {
                let (_, body) = http_get(s.port, "/metrics")?;
                let held = body
                    .lines()
                    .find_map(|l| l.strip_prefix("standby_leases_held "))?
                    .trim()
                    .parse::<f64>()
                    .ok()?;
                if held < 1.0 {
                    return None;
                }
                total += held;
            }
            (total as usize == units.len()).then_some(())
        },
    );

    // A one-shot replicate refuses a batch a live service holds, naming it.
    let refused = standby(&root)
        .args(["replicate", "protection.m2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success(),
        "replicate beside a service: {err}"
    );
    assert!(
        err.contains("is replicated by service") && err.contains("(pid "),
        "the refusal names the holder: {err}"
    );

    // Kills at evenly spaced moments of the run, each of a service that
    // holds leases; the rest run to the end.
    let mut kills: Vec<OffsetDateTime> = Vec::new();
    let run = Duration::from_secs(f.seconds);
    for k in 0..f.kills {
        let at = run * (k as u32 + 1) / (f.kills as u32 + 1);
        while t0.elapsed() < at {
            std::thread::sleep(Duration::from_millis(100));
        }
        let victim = services
            .iter_mut()
            .filter(|s| s.child.is_some())
            .max_by_key(|s| {
                http_get(s.port, "/metrics")
                    .and_then(|(_, b)| {
                        b.lines()
                            .find_map(|l| l.strip_prefix("standby_leases_held "))
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .unwrap_or(0.0) as u64
            })
            .unwrap();
        let mut child = victim.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push(OffsetDateTime::now_utc());
        eprintln!("killed {} at {:?}", victim.host, t0.elapsed());
    }
    while t0.elapsed() < run {
        std::thread::sleep(Duration::from_millis(100));
    }

    // For docs/DEPLOY.md (bench/fleet.sh): what each surviving service
    // spent, and how much it replicated (not asserted).
    for s in services.iter().filter(|s| s.child.is_some()) {
        let pid = s.child.as_ref().unwrap().id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, r)| r.split_whitespace().collect());
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = (ticks(11) + ticks(12)) / hz;
        let body = http_get(s.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let held = body
            .lines()
            .find_map(|l| l.strip_prefix("standby_leases_held "))
            .unwrap_or("?")
            .trim()
            .to_string();
        let taken: f64 = (0..f.protections)
            .filter_map(|i| {
                metric(
                    &body,
                    "standby_points_taken_total",
                    &format!("protection.m{i}"),
                )
            })
            .sum();
        eprintln!(
            "fleet: {} cpu {cpu:.1} s over {:.0} s wall, {held} batches held now, {taken} points taken",
            s.host,
            t0.elapsed().as_secs_f64()
        );
    }
    // Before stopping: the fleet view. Every batch has a live holder in
    // `status --json`, and each live service's /metrics has every
    // protection's newest point, not only those it took.
    let live: BTreeSet<String> = services
        .iter()
        .filter(|s| s.child.is_some())
        .map(|s| s.host.clone())
        .collect();
    let doc: Value = wait_for(
        "every batch held by a live service",
        Duration::from_secs(60),
        || {
            let out = standby(&root).args(["status", "--json"]).output().unwrap();
            let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
            doc["protections"]
                .as_array()?
                .iter()
                .all(|p| {
                    p["lease"]["host"]
                        .as_str()
                        .is_some_and(|h| live.contains(h))
                })
                .then_some(doc)
        },
    );
    for p in doc["protections"].as_array().unwrap() {
        let l = &p["lease"];
        assert!(
            l["pid"].as_u64().unwrap() > 0 && l["since"].as_str().is_some(),
            "{p}"
        );
    }
    for s in services.iter().filter(|s| s.child.is_some()) {
        let (_, body) = http_get(s.port, "/metrics").expect("metrics");
        for i in 0..f.protections {
            let age = metric(
                &body,
                "standby_newest_point_age_seconds",
                &format!("protection.m{i}"),
            );
            assert!(
                age.is_some_and(|a| a <= (f.rpo + expiry_s() + 5) as f64),
                "{}: protection.m{i} newest point age {age:?} in /metrics; the services said:\n{}",
                s.host,
                about(&services, &format!("protection.m{i}"))
            );
        }
    }

    // Stop: the churner, then every live service cleanly (SIGTERM).
    stop.store(true, Ordering::Relaxed);
    churner.join().unwrap();
    let ended = OffsetDateTime::now_utc();
    let mut stopped = Vec::new();
    for s in services.iter_mut() {
        if let Some(mut c) = s.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = wait_for("a service to stop", Duration::from_secs(120), || {
                c.try_wait().unwrap()
            });
            stopped.push((s.host.clone(), status));
        }
    }
    for (host, status) in stopped {
        assert!(status.success(), "{host}: {status}\n{}", logs(&services));
    }
    let all = points(&root);
    let by_machine: BTreeMap<String, Vec<&Value>> = all.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p["machine"].as_str().unwrap().to_string())
            .or_default()
            .push(p);
        m
    });
    assert_eq!(by_machine.len(), f.protections);
    let slack = time::Duration::seconds(3);
    let rpo = time::Duration::seconds(f.rpo as i64);
    let expiry = time::Duration::seconds(expiry_s() as i64);
    let mut writers = BTreeSet::new();
    for (machine, pts) in &by_machine {
        let mut pts = pts.clone();
        pts.sort_by_key(|p| p["seq"].as_u64().unwrap());
        // One chain: no place in it taken twice (two writers at once).
        let seqs: BTreeSet<u64> = pts.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs.len(), pts.len(), "{machine}: a forked chain: {pts:#?}");
        for (k, p) in pts.iter().enumerate() {
            let w = p["writer"].as_str().unwrap_or_else(|| panic!("{p}"));
            writers.insert(w.split('/').nth(2).unwrap().to_string());
            // Bar 5: every point after the first is a delta, also the
            // first a new holder takes after a takeover.
            if k > 0 {
                assert!(
                    p["disks"]["system"]["parent"].is_string(),
                    "{machine}: point {} by {w} is a full copy",
                    p["id"]
                );
                assert_eq!(
                    p["disks"]["system"]["parent"],
                    pts[k - 1]["id"],
                    "{machine}: point {} does not build on the one before",
                    p["id"]
                );
            }
        }
        // RPO: no gap longer than the threshold, except one lease expiry
        // more where a kill fell in it.
        let mut times: Vec<OffsetDateTime> = pts
            .iter()
            .map(|p| created(p))
            .filter(|t| *t >= started)
            .collect();
        let before = pts
            .iter()
            .map(|p| created(p))
            .filter(|t| *t < started)
            .max();
        times.insert(0, before.unwrap_or(started));
        times.push(ended);
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            let killed = kills.iter().any(|k| *k >= w[0] - expiry && *k <= w[1]);
            let allowed = if killed { rpo + expiry } else { rpo } + slack;
            assert!(
                gap <= allowed,
                "{machine}: no point for {gap} (from {} to {}; allowed {allowed}, kills at {kills:?})\n{}",
                w[0],
                w[1],
                about(&services, &machine.replace("machine.", "protection."))
            );
        }
    }
    // Several services wrote: the work was shared.
    assert!(writers.len() >= 2, "writers: {writers:?}");

    // The vaults verify, data read and authenticated.
    expect_code(standby(&root).args(["vault", "verify", "--read-data"]), 0);

    // Every listed point restores to the copy of the generation it holds.
    let out = d.join("restored");
    std::fs::create_dir_all(&out).unwrap();
    let jobs: Vec<(String, String)> = all
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["machine"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("machine.")
                    .to_string(),
            )
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, m)) = jobs.get(k) else { break };
                    let to = out.join(id);
                    expect_code(
                        standby(&root)
                            .args(["restore", id, "--disk", "system", "--to"])
                            .arg(&to),
                        0,
                    );
                    let bytes = std::fs::read(&to).unwrap();
                    let generation = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                    let want = std::fs::read(refs(d).join(format!("{m}-{generation}"))).unwrap();
                    assert!(
                        bytes == want,
                        "{m}: point {id} differs from generation {generation}"
                    );
                    std::fs::remove_file(&to).unwrap();
                }
            });
        }
    });
    eprintln!(
        "fleet: {} services, {} protections, {} s, {} kills: {} points by {} writers, all restored",
        f.services,
        f.protections,
        f.seconds,
        kills.len(),
        all.len(),
        writers.len()
    );
}

/// A site that names a host no service runs on is left alone: the batch
/// is never leased, and the service says so.
#[test]
fn a_service_takes_only_batches_whose_site_names_its_host() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("qs");
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::create_dir_all(root.join("sites/a/m")).unwrap();
    std::fs::create_dir_all(root.join("sites/b/m")).unwrap();
    std::fs::write(root.join("sites/a/m/d.img"), vec![1u8; 65536]).unwrap();
    std::fs::write(root.join("sites/b/m/d.img"), vec![2u8; 65536]).unwrap();
    std::fs::write(
        root.join("main.hcl"),
        r#"vault "main" {
  url      = "file://.standby/vault"
  key_file = "keys/vault.key"
}
site "a" {
  provider = "local"
  root     = "sites/a"
  host     = "here"
}
site "b" {
  provider = "local"
  root     = "sites/b"
  host     = "elsewhere"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
  host     = "elsewhere"
}
recovery_plan "pa" {
  group "g" {
    machines = [machine.ma]
  }
}
policy "p" {
  rpo_threshold          = "1m"
  crash_consistent_every = "2s"
  retention              = "1h"
}
machine "ma" {
  site = site.a
  disk "d" { path = "m/d.img" }
}
machine "mb" {
  site = site.b
  disk "d" { path = "m/d.img" }
}
protection "ma" {
  machine = machine.ma
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}
protection "mb" {
  machine = machine.mb
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}
"#,
    )
    .unwrap();
    // apply, here (neither "here" nor "elsewhere" by its host name), sets
    // both protections up and leaves their first points to their hosts.
    let out = stdout(&expect_code(
        standby(&root).args(["apply", "--auto-approve"]),
        0,
    ));
    for (m, site, host) in [("ma", "a", "here"), ("mb", "b", "elsewhere")] {
        assert!(
            out.contains(&format!(
                "no first point taken here: machine.{m}'s disks are at site.{site}, whose host is {host}"
            )),
            "{out}"
        );
    }
    // An expiry that would not outlive two missed renewals is refused.
    let out = expect_code(
        standby(&root).args([
            "replicate",
            "--watch",
            "--lease-renew",
            "10s",
            "--lease-expiry",
            "15s",
        ]),
        1,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("less than twice --lease-renew"),
        "{out:?}"
    );
    let port = free_port();
    let log = tmp.path().join("svc.log");
    let mut child = watch_support::KillOnDrop(
        standby(&root)
            .args(["replicate", "--watch", "--host", "here"])
            .args(["--lease-renew", "1s", "--lease-expiry", "3s", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let body = wait_for("a point of protection.ma", Duration::from_secs(60), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, "standby_points_taken_total", "protection.ma")? >= 2.0).then_some(body)
    });
    assert_eq!(
        metric(&body, "standby_lease_held", "protection.ma"),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "standby_lease_held", "protection.mb"),
        Some(0.0)
    );
    assert_eq!(
        metric(&body, "standby_points_taken_total", "protection.mb"),
        Some(0.0)
    );
    // A one-shot replicate here skips mb (its site names another host);
    // on that host (`--host elsewhere`) it takes it (and its lease, then
    // gives it back), and status names ma's holder only.
    let out = expect_code(standby(&root).args(["replicate", "protection.mb"]), 0);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("machine.mb's disks are at site.b, whose host is elsewhere"),
        "{said}"
    );
    let of_mb = |root: &Path| {
        points(root)
            .iter()
            .filter(|p| p["protection"] == "protection.mb")
            .count()
    };
    assert_eq!(of_mb(&root), 0);
    // status says why nobody replicates mb.
    let out = standby(&root).arg("status").output().unwrap();
    assert!(
        stdout(&out)
            .contains("protection.mb: no service holds its lease; its site names host elsewhere"),
        "{}",
        stdout(&out)
    );
    expect_code(
        standby(&root).args(["replicate", "--host", "elsewhere", "protection.mb"]),
        0,
    );
    assert_eq!(of_mb(&root), 1);
    let out = standby(&root).args(["status", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let lease = |a: &str| {
        doc["protections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["protection"] == a)
            .unwrap()["lease"]
            .clone()
    };
    assert_eq!(lease("protection.ma")["host"], "here");
    let site_host = |a: &str| {
        doc["protections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["protection"] == a)
            .unwrap()["host"]
            .clone()
    };
    assert_eq!(site_host("protection.mb"), "elsewhere");
    // The documented shape, lease included.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/status.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
    assert!(lease("protection.mb").is_null(), "{doc}");
    // ma fails over to site.dr (host "elsewhere") and is reprotected there:
    // its disks are now on the other host, so this service gives its lease
    // back and takes no more points of it.
    expect_code(standby(&root).args(["failover", "unplanned", "pa"]), 0);
    expect_code(standby(&root).args(["failover", "commit", "pa"]), 0);
    expect_code(standby(&root).args(["reprotect", "pa"]), 0);
    let taken = wait_for("ma's lease given back", Duration::from_secs(60), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, "standby_lease_held", "protection.ma")? == 0.0)
            .then(|| metric(&body, "standby_points_taken_total", "protection.ma"))
            .flatten()
    });
    // Without its lease the service takes no more points of ma.
    let (_, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        metric(&body, "standby_points_taken_total", "protection.ma"),
        Some(taken)
    );
    watch_support::terminate(&mut child.0, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("lease given back (its disks are at another host's site)"),
        "{text}"
    );
    assert!(
        text.contains("machine.mb's disks are at site.b, whose host is elsewhere, not here"),
        "{text}"
    );
    assert!(
        text.contains("machine.ma's disks are at site.dr, whose host is elsewhere, not here"),
        "{text}"
    );

    // Released on a clean exit: status shows no holder any more.
    let out = standby(&root).args(["status", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        doc["protections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lease"].is_null()),
        "{doc}"
    );
}

/// A service at its `--max-protections` takes nothing given back, and a
/// batch only one service reaches is never given back: the service that
/// must hold more than its fair share keeps it (it gave leases back and
/// took them again forever, each time leaving a batch without a holder).
#[test]
fn leases_are_given_back_only_to_a_service_that_can_take_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("qs");
    std::fs::create_dir_all(root.join("keys")).unwrap();
    let mut hcl = String::from(
        r#"vault "main" {
  url      = "file://.standby/vault"
  key_file = "keys/vault.key"
}
site "a" {
  provider = "local"
  root     = "sites/a"
  host     = "ha"
}
site "any" {
  provider = "local"
  root     = "sites/any"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "p" {
  rpo_threshold          = "1m"
  crash_consistent_every = "1s"
  retention              = "1h"
}
"#,
    );
    for i in 0..5 {
        let site = if i == 0 { "any" } else { "a" };
        std::fs::create_dir_all(root.join(format!("sites/{site}/m{i}"))).unwrap();
        std::fs::write(
            root.join(format!("sites/{site}/m{i}/d.img")),
            vec![i as u8; 65536],
        )
        .unwrap();
        hcl.push_str(&format!(
            "machine \"m{i}\" {{\n  site = site.{site}\n  disk \"d\" {{ path = \"m{i}/d.img\" }}\n}}\nprotection \"m{i}\" {{\n  machine = machine.m{i}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.p\n}}\n"
        ));
    }
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    expect_code(standby(&root).args(["vault", "init"]), 0);
    let start = |host: &str, extra: &[&str]| {
        let port = free_port();
        let log = tmp.path().join(format!("{host}.log"));
        let child = watch_support::KillOnDrop(
            standby(&root)
                .args(["replicate", "--watch", "--host", host])
                .args(["--lease-renew", "1s", "--lease-expiry", "3s", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        (child, port, log)
    };
    // "hb" reaches only m0 and takes at most one protection; "ha" reaches
    // all five, so it must hold four: more than the fair share of 3.
    let (_b, b_port, _) = start("hb", &["--max-protections", "1"]);
    let (_a, a_port, a_log) = start("ha", &[]);
    let held = |port: u16, i: usize| {
        http_get(port, "/metrics")
            .and_then(|(_, body)| metric(&body, "standby_lease_held", &format!("protection.m{i}")))
    };
    let taken = |i: usize| {
        http_get(a_port, "/metrics").and_then(|(_, body)| {
            metric(
                &body,
                "standby_points_taken_total",
                &format!("protection.m{i}"),
            )
        })
    };
    wait_for("ha holds m1..m4 and hb m0", Duration::from_secs(90), || {
        ((1..5).all(|i| held(a_port, i) == Some(1.0)) && held(b_port, 0) == Some(1.0)).then_some(())
    });
    // Many lease rounds on: each of ha's batches takes 5 more points (one
    // a second), and ha never gave one back meanwhile.
    let before: Vec<f64> = (1..5).map(|i| taken(i).unwrap_or(0.0)).collect();
    wait_for("5 more points of each", Duration::from_secs(90), || {
        (1..5)
            .all(|i| taken(i).is_some_and(|n| n >= before[i - 1] + 5.0))
            .then_some(())
    });
    assert!((1..5).all(|i| held(a_port, i) == Some(1.0)));
    // Only m0 may have gone back (to hb, which reaches it); m1..m4 only
    // ha reaches.
    let text = std::fs::read_to_string(&a_log).unwrap();
    let back: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("lease given back") && !l.contains("protection.m0"))
        .collect();
    assert!(back.is_empty(), "{back:#?}\n{text}");
}
