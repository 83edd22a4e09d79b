//! The bounded CI form of the fuzz targets (issue 7): the same bodies the
//! libFuzzer targets run (`standby::fuzz_bodies`), fed their seeds, any
//! corpus a long run kept (`fuzz/corpus/TARGET`), and random mutations of
//! them — without the sanitizer build, which is too slow for CI. The long
//! runs are `fuzz/run.sh SECONDS` (docs/RELIABILITY.md has their figures).
//! `STANDBY_FUZZ_MUTATIONS` sets how many mutations per target.

mod common;

use common::{Rng, count_from_env};
use standby::fuzz_bodies;
use std::path::{Path, PathBuf};

fn files(dir: &Path, ext: Option<&str>, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)) {
            out.push(p);
        }
    }
}

/// Seeds and kept corpus for `target`; the loader's are the repo's configs.
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    if target == "config_loader" {
        for d in ["plans", "testdata/invalid", "testdata/plans"] {
            files(&repo.join(d), Some("hcl"), &mut paths);
        }
    } else {
        files(&repo.join("fuzz/seeds").join(target), None, &mut paths);
    }
    files(&repo.join("fuzz/corpus").join(target), None, &mut paths);
    assert!(!paths.is_empty(), "no seeds for {target}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// One random edit: flip bits, cut, duplicate or delete a span, or splice
/// in a token that parsers find hard.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let len = v.len() as u64;
    let at = rng.below(len + 1) as usize;
    match rng.below(6) {
        0 if !v.is_empty() => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(len) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        1 => v.truncate(at),
        2 if !v.is_empty() => {
            let end = (at + 1 + rng.below(64) as usize).min(v.len());
            let span: Vec<u8> = v[at.min(end)..end].to_vec();
            v.splice(at..at, span);
        }
        3 if !v.is_empty() => {
            let end = (at + 1 + rng.below(64) as usize).min(v.len());
            v.drain(at.min(end)..end);
        }
        _ => {
            const TOKENS: [&[u8]; 10] = [
                b"${",
                b"}",
                b"<<EOT\n",
                b"1e999",
                b"\xff\xfe",
                b"\"",
                b"[",
                b"{\"disks\":",
                b"18446744073709551615",
                b"-1",
            ];
            let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
            v.splice(at..at, t.iter().copied());
        }
    }
    v
}

/// Feed `body` the seeds of `seeds_of` and random mutations of them.
fn replay(target: &str, seeds_of: &str, mut body: impl FnMut(&[u8])) {
    let n = count_from_env("STANDBY_FUZZ_MUTATIONS", 2000);
    let mut rng = Rng::seeded(target);
    let seeds = inputs(seeds_of);
    for s in &seeds {
        body(s);
    }
    for _ in 0..n {
        let s = &seeds[rng.below(seeds.len() as u64) as usize];
        let mut m = mutate(s, &mut rng);
        if rng.below(2) == 0 {
            m = mutate(&m, &mut rng);
        }
        body(&m);
    }
    println!(
        "{target}: {} seeds, {n} mutations, no broken promise",
        seeds.len()
    );
}

#[test]
fn config_loader_replay() {
    let dir = tempfile::tempdir().unwrap();
    replay("config_loader", "config_loader", |d| {
        fuzz_bodies::config_loader(dir.path(), d)
    });
}

#[test]
fn sealed_object_replay() {
    // Structured plaintexts (manifests), then random and repetitive bytes.
    replay(
        "sealed_object",
        "manifest_parser",
        fuzz_bodies::sealed_object,
    );
    let mut rng = Rng::seeded("sealed_object random");
    for _ in 0..count_from_env("STANDBY_FUZZ_MUTATIONS", 2000) {
        let len = rng.below(3000) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        fuzz_bodies::sealed_object(&data);
        let text = vec![b'a' + (rng.below(3) as u8); len];
        fuzz_bodies::sealed_object(&text);
    }
}

#[test]
fn manifest_parser_replay() {
    replay(
        "manifest_parser",
        "manifest_parser",
        fuzz_bodies::manifest_parser,
    );
}

#[test]
fn index_parser_replay() {
    replay("index_parser", "index_parser", fuzz_bodies::index_parser);
}
