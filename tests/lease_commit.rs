//! Issue 16: a writer confirms its batch's lease right before it writes
//! a point's manifests; a lease another service took over means no point.
//! Library level on file://, every backend's conditional writes being
//! tested elsewhere (and the lease through the real binary on Azurite and
//! moto in tests/fleet_cli.rs).

mod vault_support;

use standby::replication::{self, Lease, Options, Progress, ReplicationError};
use standby::vault::lease::{Holder, LeaseError, Leases, Taken, Timing};
use std::sync::Arc;
use std::time::Duration;
use vault_support::{backend_url, new_vault, target};

fn holder(service: &str) -> Holder {
    // As on another host: its pid says nothing here.
    Holder {
        service: service.into(),
        host: format!("host-{service}"),
        pid: 1,
        kernel: "another-boot/pid:[1]".into(),
    }
}

#[test]
fn a_writer_whose_lease_was_taken_over_writes_no_point_and_the_new_holder_does() {
    let d = tempfile::tempdir().unwrap();
    let (vault, _) = new_vault(&backend_url("file", d.path()), d.path());
    let disk = d.path().join("disk.img");
    std::fs::write(&disk, vec![7u8; 256 * 1024]).unwrap();
    let t = target("db", &[("system", &disk)]);
    let fast = Timing {
        renew_every: Duration::from_millis(50),
        expire_after: Duration::from_millis(300),
    };
    let a = Arc::new(Leases::new(&vault, holder("a"), fast));
    let b = Arc::new(Leases::new(&vault, holder("b"), fast));
    assert!(matches!(a.take("protection.db").unwrap(), Taken::Fresh));
    let opts = |l: &Arc<Leases>| {
        let mut o = Options::new(d.path().join("cache"));
        o.lease = Lease::Held(Arc::clone(l));
        o
    };
    // a holds it: its point is written, recording a as its writer.
    let first = replication::take_points(
        &vault,
        std::slice::from_ref(&t),
        &opts(&a),
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(first[0].writer.as_deref(), Some("host-a/1/a"));
    // a stalls (no renewal); b watches the lease unchanged for the expiry
    // and takes it over.
    assert!(matches!(b.take("protection.db").unwrap(), Taken::Busy(_)));
    std::thread::sleep(Duration::from_millis(350));
    assert!(matches!(b.take("protection.db").unwrap(), Taken::Over(_)));
    // a still believes it holds the lease: its capture runs, but the
    // confirmation before the manifest fails, and no point is written.
    assert!(a.holds("protection.db"));
    std::fs::write(&disk, vec![8u8; 256 * 1024]).unwrap();
    let e = replication::take_points(
        &vault,
        std::slice::from_ref(&t),
        &opts(&a),
        &Progress::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ReplicationError::Lease(LeaseError::Lost { .. })),
        "{e}"
    );
    let machines = ["machine.db".to_string()].into();
    let listed = standby::vault::catalog::list_machines(&vault, &machines).unwrap();
    assert_eq!(listed.len(), 1, "a point was written without the lease");
    // b's point builds on the vault's newest point (a delta), not on
    // anything of its own.
    let second = replication::take_points(&vault, &[t], &opts(&b), &Progress::default()).unwrap();
    assert_eq!(second[0].writer.as_deref(), Some("host-b/1/b"));
    assert_eq!(second[0].disks["system"].parent, Some(first[0].id));
    assert_eq!(second[0].seq, Some(2));
    // A one-shot command (Lease::Take) refuses the batch b holds while b
    // renews it, naming b (a holder that stops renewing would be taken
    // over after its expiry: the unit test of `Guard`).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                b.renew("protection.db").unwrap();
            }
        })
    };
    let mut once = Options::new(d.path().join("cache2"));
    once.lease = Lease::Take;
    let e = replication::take_points(
        &vault,
        &[target("db", &[("system", &disk)])],
        &once,
        &Progress::default(),
    )
    .unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("service b on host-b (pid 1"), "{msg}");
    assert!(
        msg.contains("renewed while this command watched it"),
        "{msg}"
    );
}
