//! One error, one message (issue 12, item 7) through the real binary: a
//! syntax error brings no bogus follow-up errors, every command closes a
//! configuration failure with the same line, unknown addresses are errors
//! with a suggestion, `--point` help fits its command, and steps run only in
//! their direction (`when`).

mod common;

use common::{ok, quickstart, standby, text};
use std::path::Path;

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    standby(dir).args(args).output().unwrap()
}

#[test]
fn a_syntax_error_is_the_only_error_and_every_command_closes_alike() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let prot = qs.join("protection.hcl");
    let mut hcl = std::fs::read_to_string(&prot).unwrap();
    hcl.push_str("oops {\n");
    std::fs::write(&prot, hcl).unwrap();
    for args in [
        &["validate"][..],
        &["plan"],
        &["apply", "--auto-approve"],
        &["points"],
        &["replicate"],
        &["graph"],
        &["drill", "shop"],
        &["state", "list"],
    ] {
        let o = run(&qs, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        if args[0] != "state" {
            assert!(err.contains("standby::syntax"), "{args:?}\n{err}");
            assert!(!err.contains("no protection covers it"), "{args:?}\n{err}");
            assert!(
                err.trim_end()
                    .ends_with("Error: the configuration is not valid (1 error)."),
                "{args:?} ends otherwise:\n{err}"
            );
            assert_eq!(err.matches("Error:").count(), 1, "{args:?}\n{err}");
        }
    }
}

#[test]
fn unknown_addresses_are_errors_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let o = run(&qs, &["points", "machine.nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no machine.nope in the configuration"),
        "{err}"
    );
    assert!(err.contains("machine.db, machine.web"), "{err}");
    assert!(o.stdout.is_empty(), "{}", text(&o));
    let o = run(&qs, &["points", "machine.dbb"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("did you mean `machine.db`?"),
        "{}",
        text(&o)
    );
    let o = run(&qs, &["replicate", "protection.webb"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("did you mean `protection.web`?"),
        "{}",
        text(&o)
    );
    // A known machine is listed as before.
    let out = ok(&qs, &["points", "machine.db"]);
    assert!(
        out.contains("machine.db") && !out.contains("machine.web"),
        "{out}"
    );
}

#[test]
fn point_help_fits_each_command() {
    let d = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| ok(d.path(), args);
    for cmd in [&["drill", "--help"][..], &["failover", "test", "--help"]] {
        let h = help(cmd);
        assert!(h.contains("Which point to test from"), "{cmd:?}\n{h}");
        assert!(!h.contains("unplanned"), "{cmd:?}\n{h}");
    }
    for cmd in [
        &["failback", "--help"][..],
        &["failover", "planned", "--help"],
    ] {
        let h = help(cmd);
        assert!(
            !h.contains("--point"),
            "{cmd:?} takes its own final point:\n{h}"
        );
    }
    let h = help(&["failover", "unplanned", "--help"]);
    assert!(h.contains("Which point to fail over to"), "{h}");
}

#[test]
fn steps_run_only_in_their_direction() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let rec = qs.join("recovery.hcl");
    let hcl = std::fs::read_to_string(&rec).unwrap();
    let from = "        instructions = \"Point shop.example.com at the DR site\"\n      }\n";
    assert!(hcl.contains(from), "{hcl}");
    let hcl = hcl.replacen(
        from,
        &format!(
            "{from}      manual \"dns-home\" {{\n        instructions = \"Point shop.example.com back at the main site\"\n        when         = \"failback\"\n      }}\n      script \"announce\" {{\n        command = [\"sh\", \"-c\", \"echo $STANDBY_MODE >> .standby/announced\"]\n        when    = \"always\"\n      }}\n"
        ),
        1,
    );
    std::fs::write(&rec, hcl).unwrap();
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let out = ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    assert!(
        out.contains("Point shop.example.com at the DR site"),
        "{out}"
    );
    assert!(!out.contains("back at the main site"), "{out}");
    ok(&qs, &["failover", "commit", "shop"]);
    ok(&qs, &["reprotect", "shop"]);
    // `dns` is failover-only: the failback never asks for it.
    let out = ok(&qs, &["failback", "shop", "--approve", "dns-home"]);
    assert!(out.contains("dns-home"), "{out}");
    assert!(
        !out.contains("Point shop.example.com at the DR site"),
        "{out}"
    );
    assert!(!out.contains("step dns:"), "{out}");
    let announced = std::fs::read_to_string(qs.join(".standby/announced")).unwrap();
    assert_eq!(
        announced.lines().count(),
        2,
        "the `always` step ran once each way: {announced}"
    );

    // A direction that is not one.
    let hcl = std::fs::read_to_string(&rec)
        .unwrap()
        .replacen("\"failback\"", "\"failbak\"", 1);
    std::fs::write(&rec, hcl).unwrap();
    let o = run(&qs, &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("did you mean \"failback\"?"),
        "{}",
        text(&o)
    );
}

/// A `moved` block whose `to` is declared but failed its own check (here a
/// protection moved out of its consistency group's vault) brings no second
/// error claiming `to` is not in the configuration: one error, one message.
#[test]
fn a_moved_target_that_failed_its_own_check_is_not_reported_missing() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    let web = "protection \"web\" {\n  machine           = machine.web\n  target            = site.dr\n  vault             = vault.main\n";
    assert!(hcl.contains(web), "{hcl}");
    std::fs::write(
        &prot,
        hcl.replace(
            web,
            "protection \"web2\" {\n  machine           = machine.web\n  target            = site.dr\n  vault             = vault.other\n",
        ),
    )
    .unwrap();
    std::fs::write(
        qs.join("moved.hcl"),
        "vault \"other\" {\n  url      = \"file://.standby/other\"\n  key_file = var.vault_key_file\n}\n\nmoved {\n  from = protection.web\n  to   = protection.web2\n}\n",
    )
    .unwrap();
    for args in [&["validate"][..], &["plan"]] {
        let o = run(&qs, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("shop"), "the group error is missing: {err}");
        assert!(
            !err.contains("is not in the configuration"),
            "{args:?}\n{err}"
        );
        assert_eq!(err.matches("Error:").count(), 1, "{args:?}\n{err}");
    }
    // A `to` that really is not declared is still an error.
    std::fs::write(&prot, hcl).unwrap();
    std::fs::write(
        qs.join("moved.hcl"),
        "moved {\n  from = protection.old\n  to   = protection.nowhere\n}\n",
    )
    .unwrap();
    let o = run(&qs, &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("protection.nowhere is not in the configuration"),
        "{}",
        text(&o)
    );
}
