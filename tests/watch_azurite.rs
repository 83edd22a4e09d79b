//! `standby replicate --watch` against Azurite, through an outage: this
//! test runs its own Azurite (the copy `.ci/services.sh` installs) on a free
//! port, stops it while the service runs, and starts it again on the same
//! port and data directory. It checks that failures are counted, the newest
//! point age rises during the outage and falls once points come again, no
//! point is damaged (`vault verify --read-data`) and every point restores.
//!
//! The outage lasts until the newest point is 10 s old (60 s with
//! STANDBY_LONG=1). Every wait polls a condition with a deadline.

mod watch_support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use watch_support::*;

const POLICY: &str = r#"  rpo_threshold          = "5s"
  crash_consistent_every = "2s"
  app_consistent_every   = "4s"
  retention              = "1h""#;

fn ci_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.cache")
}

/// Our own Azurite on `port`, keeping its data in `data`.
fn start_azurite(port: u16, data: &Path, log: &Path) -> Child {
    let bin = ci_cache().join("node/node_modules/.bin/azurite-blob");
    assert!(
        bin.exists(),
        "{} is missing: install it with .ci/services.sh start (bash .ci/run does)",
        bin.display()
    );
    let child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
        ])
        .arg(data)
        .args(["--skipApiVersionCheck", "--silent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    wait_for("azurite to listen", Duration::from_secs(90), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    child
}

/// Create the container `name` with the Azure SDK from the CI virtualenv.
fn create_container(blob_url: &str, name: &str) {
    let python = ci_cache().join("venv/bin/python");
    let script = "import os\nfrom azure.storage.blob import BlobServiceClient\n\
        c = BlobServiceClient(account_url=os.environ['URL'], credential={'account_name': os.environ['AZURE_STORAGE_ACCOUNT_NAME'], 'account_key': os.environ['AZURE_STORAGE_ACCOUNT_KEY']})\n\
        c.create_container(os.environ['NAME'])\n";
    let out = Command::new(python)
        .args(["-c", script])
        .env("URL", format!("{blob_url}/devstoreaccount1"))
        .env("NAME", name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for("azurite to stop", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
}

fn scrape(port: u16, name: &str, prot: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    metric(&body, name, prot)
}

#[test]
fn watch_survives_an_azurite_outage_without_damaged_points() {
    // The shared services' env names the account and key; we only swap the endpoint.
    let _ = common_url();
    let dir = tempfile::tempdir().unwrap();
    let az_port = free_port();
    let data = dir.path().join("azurite-data");
    std::fs::create_dir_all(&data).unwrap();
    let az_log = dir.path().join("azurite.log");
    let blob_url = format!("http://127.0.0.1:{az_port}");
    let mut azurite = KillOnDrop(start_azurite(az_port, &data, &az_log));
    create_container(&blob_url, "watch");

    let root = quickstart(dir.path(), POLICY, Some("az://watch/outage"));
    let with_env = |mut c: Command| {
        c.env("AZURITE_BLOB_STORAGE_URL", &blob_url)
            .env("AZURE_STORAGE_USE_EMULATOR", "true");
        c
    };
    expect_code(with_env(standby(&root)).args(["vault", "init"]), 0);

    let port = free_port();
    let log = dir.path().join("watch.log");
    let mut cmd = with_env(standby(&root));
    cmd.args([
        "replicate",
        "--watch",
        "--store-retry",
        "2s",
        "--retry-max",
        "4s",
        "--listen",
    ])
    .arg(format!("127.0.0.1:{port}"))
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let mut watch = KillOnDrop(cmd.spawn().unwrap());
    let db = "protection.db";

    wait_for(
        "two points before the outage",
        Duration::from_secs(120),
        || scrape(port, "standby_points_taken_total", db).filter(|n| *n >= 2.0),
    );
    let taken_before = scrape(port, "standby_points_taken_total", db).unwrap();

    // Outage: failures are counted and the newest point ages.
    stop(&mut azurite.0);
    let outage: f64 = if std::env::var("STANDBY_LONG").is_ok_and(|v| v == "1") {
        60.0
    } else {
        10.0
    };
    wait_for(
        "failures during the outage",
        Duration::from_secs(120),
        || scrape(port, "standby_replication_failures_total", db).filter(|n| *n >= 2.0),
    );
    let peak = wait_for("the newest point to age", Duration::from_secs(300), || {
        scrape(port, "standby_newest_point_age_seconds", db).filter(|a| *a >= outage)
    });
    let failures = scrape(port, "standby_replication_failures_total", db).unwrap();
    assert!(failures >= 2.0);
    let (status, _) = http_get(port, "/healthz").unwrap();
    assert_eq!(
        status, 200,
        "/healthz is liveness: the loop still runs during an outage"
    );

    // Back on the same port and data: points come again and the age falls.
    azurite.0 = start_azurite(az_port, &data, &az_log);
    wait_for(
        "the age to fall after the outage",
        Duration::from_secs(180),
        || {
            let taken = scrape(port, "standby_points_taken_total", db)?;
            let age = scrape(port, "standby_newest_point_age_seconds", db)?;
            (taken > taken_before && age < peak).then_some(())
        },
    );

    let status = terminate(&mut watch.0, Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("attempt failed"), "{text}");
    assert!(text.contains("caught up after"), "{text}");
    // No lock of the service is left behind (one released during the
    // outage is deleted at the next capture): prune gets its exclusive
    // lock at once.
    expect_code(
        with_env(standby(&root)).args(["vault", "prune", "--wait", "0"]),
        0,
    );

    // No damaged point, and every point restores to a clean disk.
    let out = expect_code(
        with_env(standby(&root)).args(["vault", "verify", "--read-data"]),
        0,
    );
    assert!(stdout(&out).contains("ok"), "{}", stdout(&out));
    let points: serde_json::Value = serde_json::from_str(&stdout(&expect_code(
        with_env(standby(&root)).args(["points", "--json"]),
        0,
    )))
    .unwrap();
    let points = points.as_array().unwrap();
    assert!(
        points.len() as f64 >= 2.0 * (taken_before + 1.0),
        "{}",
        points.len()
    );
    for p in points {
        let id = &p["id"].as_str().unwrap()[..16];
        let machine = p["machine"]
            .as_str()
            .unwrap()
            .trim_start_matches("machine.");
        for disk in p["disks"].as_object().unwrap().keys() {
            let to = dir.path().join(format!("r-{id}-{disk}"));
            expect_code(
                with_env(standby(&root))
                    .args(["restore", id, "--machine", machine, "--disk", disk, "--to"])
                    .arg(&to),
                0,
            );
            if disk == "data" {
                assert_eq!(standby::samples::sqlite_integrity(&to).unwrap(), "ok");
            } else {
                assert!(standby::samples::ext4_is_clean(&to).unwrap(), "{id} {disk}");
            }
            // Nothing writes to the source disks here: each point holds
            // exactly their bytes, not merely a disk that checks clean.
            let source = root
                .join("sites/onprem")
                .join(machine)
                .join(if disk == "data" {
                    "data.sqlite".to_string()
                } else {
                    format!("{disk}.img")
                });
            assert!(
                std::fs::read(&to).unwrap() == std::fs::read(&source).unwrap(),
                "{id} {disk}: restored bytes differ from {}",
                source.display()
            );
            std::fs::remove_file(&to).unwrap();
        }
    }
}

/// The shared services must be up: their env carries the emulator account.
fn common_url() -> String {
    let v = std::env::var("STANDBY_TEST_AZ_URL").unwrap_or_default();
    assert!(
        !v.is_empty() && std::env::var("AZURE_STORAGE_ACCOUNT_KEY").is_ok(),
        "STANDBY_TEST_AZ_URL is not set: start the services with .ci/services.sh (bash .ci/run does), then `source .ci/.cache/services.env`"
    );
    v
}
