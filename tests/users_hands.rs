//! Terraform's hands (issue 12, item 2) through the real binary: single-dash
//! long options wherever the double-dash form works, and usage errors that
//! exit 1 (never 2, which `plan -detailed-exitcode` and `status` use for
//! "changes" and "past RPO").

mod common;

use common::{quickstart, standby, text};
use std::path::Path;

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    standby(dir).args(args).output().unwrap()
}

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["status", "--jsn"][..],
        &["plan", "--detailed-exitcod"],
        &["plan", "-detailed-exitcod"],
        &["plan", "--out"],
        &["points", "--json", "extra", "more"],
        &["no-such-command"],
        &[],
    ] {
        let o = run(d.path(), args);
        assert_eq!(o.status.code(), Some(1), "standby {args:?}:\n{}", text(&o));
        assert!(!o.stderr.is_empty(), "standby {args:?} said nothing");
    }
    for typo in ["--jsn", "-jsn"] {
        let o = run(d.path(), &["status", typo]);
        assert!(
            text(&o).contains("a similar argument exists: '--json'"),
            "no suggestion:\n{}",
            text(&o)
        );
    }
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["--version"],
        &["help", "plan"],
    ] {
        let o = run(d.path(), args);
        assert_eq!(o.status.code(), Some(0), "standby {args:?}:\n{}", text(&o));
    }
}

#[test]
fn single_dash_long_options_work_like_double_dash() {
    let d = tempfile::tempdir().unwrap();
    let dir = quickstart(d.path(), 8, 8);
    // fmt -check -diff -recursive -no-color answers as the double-dash form.
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("sub/x.hcl"),
        "variable \"a\" {\n  default = 1\n}\n",
    )
    .unwrap();
    let single = run(
        &dir,
        &["fmt", "-check", "-diff", "-recursive", "-no-color", "sub"],
    );
    let double = run(
        &dir,
        &[
            "fmt",
            "--check",
            "--diff",
            "--recursive",
            "--no-color",
            "sub",
        ],
    );
    assert_eq!(single.status.code(), Some(0), "{}", text(&single));
    assert_eq!(single.stdout, double.stdout);
    std::fs::write(dir.join("sub/x.hcl"), "variable \"a\" {\n default=1\n}\n").unwrap();
    let single = run(&dir, &["fmt", "-check", "-diff", "-recursive", "sub"]);
    let double = run(&dir, &["fmt", "--check", "--diff", "--recursive", "sub"]);
    assert_eq!(single.status.code(), Some(3), "{}", text(&single));
    assert_eq!(single.stdout, double.stdout);
    std::fs::remove_dir_all(dir.join("sub")).unwrap();
    let o = run(&dir, &["validate", "-no-color", "-json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // plan -detailed-exitcode: 2 means changes (nothing applied yet).
    let o = run(
        &dir,
        &["plan", "-detailed-exitcode", "-no-color", "-no-refresh"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&dir, &["plan", "-json", "-out=tf.plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc.get("changes").is_some(), "{doc}");
    assert!(dir.join("tf.plan").exists());
    let o = run(&dir, &["apply", "-auto-approve", "-no-color"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&dir, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&dir, &["status", "-json"]);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok(),
        "{}",
        text(&o)
    );
    // A long option of another command stays unknown here: a usage error.
    let o = run(&dir, &["status", "-auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// Issue 12 item 2 (gap): Terraform users put `-input=false` and
/// `-lock=false` in CI. `-input=false` is accepted everywhere and never
/// prompts, even on a terminal; `-lock=false` is refused, saying why.
#[test]
fn input_false_never_prompts_and_lock_false_is_refused_precisely() {
    let d = tempfile::tempdir().unwrap();
    let dir = quickstart(d.path(), 8, 8);
    let plain = run(&dir, &["plan", "-detailed-exitcode"]);
    for flag in ["-input=false", "--input=false", "-lock=true"] {
        let o = run(&dir, &["plan", flag, "-detailed-exitcode"]);
        assert_eq!(o.status.code(), plain.status.code(), "{flag}: {}", text(&o));
        assert_eq!(o.stdout, plain.stdout, "{flag}");
    }
    // On a terminal (a pty from script(1)), apply would ask; with
    // -input=false it refuses at once instead, changing nothing.
    let cmd = format!(
        "{} -C {} apply -input=false",
        env!("CARGO_BIN_EXE_standby"),
        dir.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("-input=false"), "{all}");
    assert!(
        !all.contains("Only 'yes' will be accepted"),
        "it prompted: {all}"
    );
    assert!(!dir.join(".standby/state.json").exists());
    for args in [
        &["plan", "-lock=false"][..],
        &["apply", "-lock=false", "-auto-approve"],
        &["replicate", "--lock=false"],
    ] {
        let o = run(&dir, args);
        let all = text(&o).split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("-lock=false is not supported: standby always takes the state lock"),
            "{args:?}: {all}"
        );
        assert!(all.contains("-lock-timeout"), "{all}");
    }
    assert!(!dir.join(".standby/state.json").exists());
}
