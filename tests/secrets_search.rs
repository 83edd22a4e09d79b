//! Secrets never leave standby (issue 7 item 6): every command runs with a
//! known vault key (key_env), a sensitive variable, the Azurite account key
//! (remote state) and the moto access keys (an s3:// vault), with debug
//! logging on; then every byte standby printed (stdout, stderr, /metrics)
//! or wrote (files under the configuration directory, the state objects on
//! Azurite, the vault's object names and its plain config object) is
//! searched for each secret in raw, hex (both cases), base64 (standard and
//! URL-safe, at every alignment) and percent-encoded forms. None may appear.
//!
//! The commands include a drill and a planned failover (with reports), one
//! machine is recovered to an exec site whose command holds the sensitive
//! token, and a freeze hook, a check and the exec provider each write their
//! whole environment to a file under the configuration directory: children
//! get an explicit environment, so none of those files holds a secret.

mod common;
mod watch_support;

use object_store::ObjectStoreExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use watch_support::{free_port, http_get, quickstart, standby, terminate, wait_for};

const VAULT_KEY: &str = "5eC2e7f00dfacade0badc0ffee15deadbeef4242abad1dea7e57ab1ec0debabe";
const TOKEN: &str = "dr-T0ken-kept-out-of-sight-9713";

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

fn b64(data: &[u8], url: bool) -> String {
    let table: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &v) in chunk.iter().enumerate() {
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Every form of `secret` to look for: raw, hex (lower and upper), and the
/// part of its base64 (standard and URL-safe) that is the same wherever in
/// a longer text it was encoded.
fn forms(name: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (format!("{name} (raw)"), secret.to_vec()),
        (format!("{name} (hex)"), hex::encode(secret).into_bytes()),
        (
            format!("{name} (HEX)"),
            hex::encode_upper(secret).into_bytes(),
        ),
    ];
    // Percent-encoded: every byte outside RFC 3986's unreserved set as %XX,
    // in either case (a secret of only unreserved bytes is its raw form).
    for upper in [true, false] {
        let enc: String = secret
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        if enc.as_bytes() != secret {
            out.push((format!("{name} (percent-encoded)"), enc.into_bytes()));
        }
    }
    for url in [false, true] {
        for pad in 0..3usize {
            let mut data = vec![0u8; pad];
            data.extend_from_slice(secret);
            let enc = b64(&data, url);
            let skip = pad.div_ceil(3) * 4;
            let end = enc.len().saturating_sub(4);
            if end > skip + 8 {
                out.push((
                    format!(
                        "{name} (base64{}, offset {pad})",
                        if url { "url" } else { "" }
                    ),
                    enc.as_bytes()[skip..end].to_vec(),
                ));
            }
        }
    }
    out
}

fn secrets() -> Vec<(String, Vec<u8>)> {
    let az_key = std::env::var("AZURE_STORAGE_ACCOUNT_KEY").expect("services.env");
    let aws_secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("services.env");
    let mut all = Vec::new();
    all.extend(forms("vault key", VAULT_KEY.as_bytes()));
    all.extend(forms("vault key bytes", &hex::decode(VAULT_KEY).unwrap()));
    all.extend(forms("sensitive variable", TOKEN.as_bytes()));
    all.extend(forms("Azure account key", az_key.as_bytes()));
    all.extend(forms("Azure account key bytes", &b64_decode(&az_key)));
    all.extend(forms("AWS secret key", aws_secret.as_bytes()));
    all
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

struct Search {
    secrets: Vec<(String, Vec<u8>)>,
    found: Vec<String>,
    searched: usize,
}

impl Search {
    fn check(&mut self, what: &str, bytes: &[u8]) {
        self.searched += bytes.len();
        for (name, form) in &self.secrets {
            if find(bytes, form) {
                self.found.push(format!("{name} in {what}"));
            }
        }
    }

    fn output(&mut self, what: &str, o: &Output) {
        self.check(&format!("stdout of {what}"), &o.stdout);
        self.check(&format!("stderr of {what}"), &o.stderr);
    }

    fn files(&mut self, dir: &Path, skip: &[PathBuf]) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if skip.contains(&p) {
                continue;
            }
            self.check(
                &format!("the name {}", p.display()),
                p.to_string_lossy().as_bytes(),
            );
            if p.is_dir() {
                self.files(&p, skip);
            } else {
                self.check(&p.display().to_string(), &std::fs::read(&p).unwrap());
            }
        }
    }

    /// Object names under `url`, and the contents of those `read` says.
    fn objects(&mut self, url: &str, base: &Path, read: impl Fn(&str) -> bool) {
        let store = standby::store::open(url, base).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let names: Vec<String> = rt.block_on(async {
            use futures::StreamExt;
            store
                .inner
                .list(Some(&store.prefix))
                .map(|m| m.unwrap().location.to_string())
                .collect()
                .await
        });
        assert!(!names.is_empty(), "nothing stored under {url}");
        for n in names {
            self.check(&format!("object name {n}"), n.as_bytes());
            if read(&n) {
                let path = object_store::path::Path::from(n.as_str());
                let bytes = rt
                    .block_on(async { store.inner.get(&path).await?.bytes().await })
                    .unwrap();
                self.check(&format!("object {n}"), &bytes);
            }
        }
    }
}

/// The quickstart with an s3:// vault keyed by an environment variable, state
/// on Azurite, and machine.web recovered to an exec site whose command is
/// given a sensitive token. The db's freeze hook, boot and shutdown
/// commands, a db check, a script step and the exec provider write their
/// environment to `envdump/*-env`.
fn config(d: &Path, vault_url: &str, state_url: &str) -> PathBuf {
    let qs = quickstart(d, POLICY, Some(vault_url));
    std::fs::create_dir_all(qs.join("envdump")).unwrap();
    let edit = |file: &str, from: &str, to: &str| {
        let p = qs.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "main.hcl",
        "key_file = var.vault_key_file",
        "key_env  = \"SECRETS_TEST_VAULT_KEY\"",
    );
    edit(
        "machines.hcl",
        r#"freeze  = ["sh", "scripts/db-freeze.sh"]"#,
        r#"freeze  = ["sh", "-c", "env > envdump/freeze-env && sh scripts/db-freeze.sh"]"#,
    );
    edit(
        "machines.hcl",
        r#"  check "filesystem" {"#,
        "  check \"env\" {\n    command = [\"sh\", \"-c\", \"env > envdump/check-env\"]\n  }\n  check \"filesystem\" {",
    );
    edit(
        "machines.hcl",
        r#"boot { command = ["sh", "scripts/db-start.sh"] }"#,
        r#"boot { command = ["sh", "-c", "env > envdump/boot-env && sh scripts/db-start.sh"] }"#,
    );
    edit(
        "machines.hcl",
        r#"shutdown { command = ["sh", "scripts/db-stop.sh"] }"#,
        r#"shutdown { command = ["sh", "-c", "env > envdump/shutdown-env && sh scripts/db-stop.sh"] }"#,
    );
    edit(
        "recovery.hcl",
        "machines = [machine.db]\n",
        "machines = [machine.db]\n    before {\n      script \"env\" {\n        command = [\"sh\", \"-c\", \"env > envdump/script-env\"]\n      }\n    }\n",
    );
    edit(
        "protection.hcl",
        "machine           = machine.web\n  target            = site.dr\n",
        "machine           = machine.web\n  target            = site.dr2\n",
    );
    // The exec provider: plans/exec-example's stand-in hypervisor behind a
    // wrapper that takes the token and records its environment.
    let provider = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/exec-example/provider.py");
    let wrapper = qs.join("scripts/dr-provider.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv > envdump/provider-env\n[ \"$1\" = --token ] && shift 2\nexec python3 {} --root hypervisor \"$@\"\n",
            provider.display()
        ),
    )
    .unwrap();
    std::fs::write(
        qs.join("secrets.hcl"),
        format!(
            "backend {{\n  url = \"{state_url}\"\n}}\n\n\
             variable \"dr_token\" {{\n  sensitive = true\n}}\n\n\
             site \"dr2\" {{\n  provider = \"exec\"\n  command  = [\"sh\", \"scripts/dr-provider.sh\", \"--token\", var.dr_token]\n}}\n"
        ),
    )
    .unwrap();
    qs
}

fn cmd(dir: &Path) -> Command {
    let mut c = standby(dir);
    // A prefix the user passes on purpose that also matches the vault
    // key's variable: the key must still stay out of every child.
    c.env("SECRETS_TEST_VAULT_KEY", VAULT_KEY)
        .env("STANDBY_PASS_ENV", "SECRETS_TEST_*")
        .env("STANDBY_VAR_dr_token", TOKEN)
        .env("STANDBY_LOG", "debug")
        .stdin(Stdio::null());
    c
}

#[test]
fn the_search_finds_each_form_it_looks_for() {
    let secret = TOKEN.as_bytes();
    let list = forms("token", secret);
    for leak in [
        format!("x{TOKEN}y"),
        format!("x{}y", hex::encode(secret)),
        format!("x{}y", hex::encode_upper(secret)),
        format!("x{}y", b64(secret, false)),
        b64(&[b"a", secret].concat(), false),
        b64(&[b"ab", secret, b"c"].concat(), true),
    ] {
        assert!(
            list.iter().any(|(_, f)| find(leak.as_bytes(), f)),
            "{leak} not found"
        );
    }
    assert!(!list.iter().any(|(_, f)| find(b"nothing to see here", f)));
}

#[test]
fn no_secret_appears_in_anything_standby_prints_or_writes() {
    let az = common::service_url("STANDBY_TEST_AZ_URL");
    let s3 = common::service_url("STANDBY_TEST_S3_URL");
    let unique = common::unique("secrets");
    let vault_url = format!("{}/{unique}/vault", s3.trim_end_matches('/'));
    let state_url = format!("{}/{unique}/state", az.trim_end_matches('/'));
    let d = tempfile::tempdir().unwrap();
    let qs = config(d.path(), &vault_url, &state_url);
    let restored = d.path().join("restored.img");
    let mut search = Search {
        secrets: secrets(),
        found: Vec::new(),
        searched: 0,
    };

    let runs: Vec<Vec<&str>> = vec![
        vec!["validate"],
        vec!["fmt", "--check"],
        vec!["plan"],
        vec!["plan", "--format", "markdown"],
        vec!["plan", "--json", "--out", "saved.plan"],
        vec!["graph"],
        vec!["apply", "saved.plan"],
        vec!["apply", "--auto-approve"],
        vec!["apply", "--refresh-only", "--auto-approve"],
        vec!["plan", "--refresh-only"],
        vec!["state", "list"],
        vec!["state", "show", "site.dr2"],
        vec!["state", "show", "site.dr2", "--json"],
        vec!["state", "show", "vault.main", "--json"],
        vec!["vault", "init"],
        vec!["replicate"],
        vec!["points"],
        vec!["points", "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["vault", "verify", "--read-data"],
        vec!["vault", "prune", "--dry-run"],
        vec![
            "restore",
            "latest",
            "--machine",
            "machine.db",
            "--disk",
            "system",
            "--to",
            restored.to_str().unwrap(),
        ],
        vec![
            "drill",
            "shop",
            "--approve",
            "dns",
            "--report-dir",
            "reports/drill",
        ],
        // An error path too: a restore from an unknown vault.
        vec![
            "restore",
            "latest",
            "--vault",
            "vault.nope",
            "--disk",
            "system",
            "--to",
            "nowhere.img",
        ],
    ];
    for args in &runs {
        let o = cmd(&qs).args(args).output().unwrap();
        search.output(&args.join(" "), &o);
        let must_pass = !args.contains(&"vault.nope") && !args.contains(&"--check");
        assert!(
            !must_pass || o.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A wrong key and a missing sensitive variable fail without echoing.
    let o = cmd(&qs)
        .env("SECRETS_TEST_VAULT_KEY", "00".repeat(32))
        .args(["points"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    search.output("points with a wrong key", &o);
    let o = cmd(&qs)
        .env("SECRETS_TEST_VAULT_KEY", &VAULT_KEY[..63])
        .args(["points"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    search.output("points with a malformed key", &o);

    // The replication service, its metrics and its shutdown.
    let port = free_port();
    let mut watch = cmd(&qs)
        .args([
            "replicate",
            "--watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes while it runs: debug logs would fill them.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(watch.stdout.take().unwrap()));
    let err = drain(Box::new(watch.stderr.take().unwrap()));
    let metrics = wait_for("/metrics", Duration::from_secs(60), || {
        http_get(port, "/metrics").filter(|(code, _)| *code == 200)
    });
    search.check("/metrics", metrics.1.as_bytes());
    terminate(&mut watch, Duration::from_secs(60));
    search.check("stdout of replicate --watch", &out.join().unwrap());
    search.check("stderr of replicate --watch", &err.join().unwrap());

    // A planned failover, with its report (machine.web goes to the exec site).
    let o = cmd(&qs)
        .args([
            "failover",
            "planned",
            "shop",
            "--approve",
            "dns",
            "--report-dir",
            "reports/failover",
        ])
        .output()
        .unwrap();
    search.output("failover planned", &o);
    assert!(
        o.status.success(),
        "failover planned failed:\n{}",
        common::text(&o)
    );
    // The children did run and did write their environment.
    for (file, machine) in [
        ("freeze-env", Some("machine.db")),
        ("check-env", Some("machine.db")),
        ("provider-env", None),
        ("boot-env", Some("machine.db")),
        ("shutdown-env", Some("machine.db")),
        ("script-env", None),
    ] {
        let env = std::fs::read_to_string(qs.join("envdump").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(env.contains("PATH="), "{file}:\n{env}");
        if let Some(m) = machine {
            assert!(
                env.contains(&format!("STANDBY_MACHINE={m}")),
                "{file}:\n{env}"
            );
        }
    }
    for kind in ["drill", "failover"] {
        let report = std::fs::read_to_string(qs.join("reports").join(kind).join("report.json"))
            .unwrap_or_else(|e| panic!("{kind} report: {e}"));
        assert!(report.contains("machine.web"), "{kind} report:\n{report}");
    }
    // machine.web ran at the exec site (the stand-in hypervisor's disks).
    assert!(qs.join("hypervisor/disks").is_dir());

    // Everything written locally (the sample disks are the user's input).
    search.files(&qs, &[qs.join("sites")]);
    search.check("restored disk", &std::fs::read(&restored).unwrap());
    // The state objects on Azurite, names and contents; the vault's object
    // names and its one plain object.
    search.objects(&state_url, &qs, |_| true);
    search.objects(&vault_url, &qs, |n| n.ends_with("/config"));

    eprintln!(
        "searched {} bytes for {} forms of 6 secrets after {} commands",
        search.searched,
        search.secrets.len(),
        runs.len() + 4
    );
    assert!(
        search.searched > 100_000,
        "searched only {} bytes",
        search.searched
    );
    assert!(
        search.found.is_empty(),
        "secrets found:\n{}",
        search.found.join("\n")
    );
}
