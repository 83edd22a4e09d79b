//! Mutated example configurations never panic: every failure is a
//! diagnostic (issue 7 item 5, the deterministic companion of the
//! `config_loader` fuzz target). Each round copies one example directory
//! (`plans/*`), mutates one of its files — flipped bytes, a cut, a deleted
//! or duplicated span, a swapped token, a bracket dropped — and loads it
//! with the real loader, which must return a configuration or diagnostics
//! that render, never panic. 300 rounds in CI; `STANDBY_CONFIG_MUTATIONS`
//! sets the long form, `STANDBY_SEED` replays one.

mod common;

use common::{Rng, copy_dir, count_from_env};
use standby::config::{self, VarInputs};
use std::path::{Path, PathBuf};

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"=",
    b",",
    b"${",
    b"var.",
    b"machine.",
    b"site.",
    b"vault.",
    b"for_each",
    b"each.key",
    b"\n",
    b"#",
    b"/*",
    b"<<EOT\n",
    b"\\",
    b"0",
    b"-1",
    b"1e999",
    b"\"\xff\xfe\"",
    b"null",
    b"true",
];

fn mutate(rng: &mut Rng, text: &mut Vec<u8>) -> String {
    let len = text.len() as u64;
    let at = rng.below(len + 1) as usize;
    match rng.below(6) {
        0 => {
            let n = 1 + rng.below(4);
            for _ in 0..n {
                let i = rng.below(len.max(1)) as usize;
                if let Some(b) = text.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            format!("{n} bit flip(s)")
        }
        1 => {
            text.truncate(at);
            format!("cut at {at}")
        }
        2 => {
            let end = (at + 1 + rng.below(40) as usize).min(text.len());
            text.drain(at.min(end)..end);
            format!("deleted {at}..{end}")
        }
        3 => {
            let end = (at + 1 + rng.below(80) as usize).min(text.len());
            let span = text[at.min(end)..end].to_vec();
            let to = rng.below(text.len() as u64 + 1) as usize;
            text.splice(to..to, span);
            format!("duplicated {at}..{end} at {to}")
        }
        4 => {
            let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
            text.splice(at..at, t.iter().copied());
            format!("inserted {:?} at {at}", String::from_utf8_lossy(t))
        }
        _ => {
            let brackets: Vec<usize> = text
                .iter()
                .enumerate()
                .filter(|(_, b)| b"{}[]()\"".contains(b))
                .map(|(i, _)| i)
                .collect();
            if brackets.is_empty() {
                return "nothing".into();
            }
            let i = brackets[rng.below(brackets.len() as u64) as usize];
            text.remove(i);
            format!("dropped bracket at {i}")
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    assert!(out.len() >= 3, "{out:?}");
    out
}

#[test]
fn mutated_examples_give_diagnostics_never_panics() {
    let rounds = count_from_env("STANDBY_CONFIG_MUTATIONS", 300);
    let mut rng = Rng::seeded("config mutations");
    let examples = examples();
    let d = tempfile::tempdir().unwrap();
    let (mut loaded, mut refused) = (0, 0);
    for round in 0..rounds {
        let example = &examples[(round as usize) % examples.len()];
        let dir = d.path().join(format!("r{round}"));
        copy_dir(example, &dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hcl"))
            .collect();
        files.sort();
        let file = &files[rng.below(files.len() as u64) as usize];
        let mut text = std::fs::read(file).unwrap();
        let what = mutate(&mut rng, &mut text);
        std::fs::write(file, &text).unwrap();
        let result = std::panic::catch_unwind(|| match config::load(&dir, &VarInputs::default()) {
            Ok(l) => {
                let _ = l.warnings.render(false);
                true
            }
            Err(diags) => {
                assert!(diags.has_errors(), "a refused load names an error");
                assert!(!diags.render(false).trim().is_empty());
                false
            }
        });
        match result {
            Ok(true) => loaded += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!(
                "round {round}: loading {} after {what} panicked (the file is kept in {})",
                file.display(),
                d.keep().display()
            ),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{rounds} mutations: {loaded} still loaded, {refused} refused with diagnostics");
    assert!(
        refused > 0,
        "no mutation was refused: the mutations do nothing"
    );
}
