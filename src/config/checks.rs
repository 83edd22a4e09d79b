//! Values the language accepts but the rest of standby would not: checked
//! at validate time so that what `validate` passes works end to end.
//!
//! - names: what a point manifest allows ([`crate::vault::manifest::plain_name`]);
//! - disk paths: what the site providers accept when they place a disk
//!   ([`standby_provider_local::layout::disk_relative`]: no `..`, names a file);
//! - site roots: two sites never share a directory, compared after resolving
//!   symbolic links where the path exists;
//! - durations: zero never means "off" (or "always"); a bound keeps time
//!   arithmetic exact.

use super::diag::{Diagnostic, Diagnostics, Loc};
use crate::model::{Address, Duration};
use std::path::{Path, PathBuf};

/// The longest duration accepted: 100 years, in seconds.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// A block label or name a recovery point can carry (letters, digits, `_`,
/// `-`, at most 128 characters).
pub fn plain_name(s: &str) -> bool {
    crate::vault::manifest::plain_name(s)
}

/// A `consistency_group` value: it is written into every point's manifest.
pub fn group_name(name: &str, loc: &Loc, diags: &mut Diagnostics) -> bool {
    if plain_name(name) {
        return true;
    }
    diags.push(
        Diagnostic::error(
            "standby::invalid_name",
            loc.clone(),
            format!("consistency group {name:?} is not a valid name"),
        )
        .label("invalid name")
        .help("names use letters, digits, '_' and '-' only (at most 128)"),
    );
    false
}

/// A disk `path`: relative to its site root and staying inside it, or
/// absolute (a block device). Exactly what recovery accepts when it places
/// the disk at the target site.
pub fn disk_path(path: &str, loc: &Loc, diags: &mut Diagnostics) -> bool {
    match standby_provider_local::layout::disk_relative(Path::new(path)) {
        Ok(_) => true,
        Err(reason) => {
            diags.push(
                Diagnostic::error(
                    "standby::bad_disk_path",
                    loc.clone(),
                    reason.to_string(),
                )
                .label("not a path inside the site root")
                .help("give the disk's path relative to its site's root, without `..` (e.g. \"db/data.img\"), or an absolute device path"),
            );
            false
        }
    }
}

/// Where a root really is: `dir`/`root`, with symbolic links resolved for
/// the longest part that exists and `.`/`..` folded in the rest.
pub fn resolved(dir: &Path, root: &Path) -> PathBuf {
    let joined = dir.join(root);
    let abs = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir().unwrap_or_default().join(joined)
    };
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut head = lexical.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&head) {
            let mut out = c;
            for n in tail.into_iter().rev() {
                out.push(n);
            }
            return out;
        }
        match (head.file_name().map(|n| n.to_owned()), head.parent()) {
            (Some(n), Some(p)) => {
                tail.push(n);
                head = p.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

/// Site roots compared where they really are (after the lexical check in
/// `lower::site`): a DR root that is a link to the source's root, or into
/// it, is the same place, and a failover there would overwrite the source's
/// disks. A root that exists but is not a directory is refused too.
pub fn site_roots(dir: &Path, roots: &[(PathBuf, Address, Loc)], diags: &mut Diagnostics) {
    let base = resolved(dir, Path::new("."));
    // Inside the configuration directory, paths are shown relative to it.
    let shown = |p: &Path| match p.strip_prefix(&base) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    };
    let mut seen: Vec<(PathBuf, &Address)> = Vec::new();
    for (root, addr, loc) in roots {
        let real = resolved(dir, root);
        if let Ok(m) = std::fs::metadata(&real)
            && !m.is_dir()
        {
            diags.push(
                Diagnostic::error(
                    "standby::site_root_not_a_directory",
                    loc.clone(),
                    format!("{addr}'s root {} is not a directory", shown(&real)),
                )
                .label("not a directory")
                .help("a local site's root is the directory its disks live under"),
            );
            continue;
        }
        if let Some((other_real, other)) = seen
            .iter()
            .find(|(p, _)| p.starts_with(&real) || real.starts_with(p))
        {
            diags.push(
                Diagnostic::error(
                    "standby::site_roots_overlap",
                    loc.clone(),
                    format!(
                        "{addr}'s root overlaps {other}'s root once links are resolved: it is {}, {other}'s is {}",
                        shown(&real),
                        shown(other_real)
                    ),
                )
                .label("a link into another site's directory")
                .help("give each site a root of its own: replicas written into another site's tree would mix with (or overwrite) its machines' disks"),
            );
            continue;
        }
        seen.push((real, addr));
    }
}

/// A duration attribute's value: zero is refused (it never means "off":
/// `app_consistent_every = "off"` turns app-consistent points off), except
/// for a check's `interval` (retry at once); so is more than 100 years.
pub fn duration(attr: &str, d: Duration, loc: &Loc, diags: &mut Diagnostics) -> Option<Duration> {
    let secs = d.as_secs();
    let problem = if secs == 0 && attr != "interval" {
        Some((
            format!("`{attr}` must be longer than zero"),
            "zero",
            match attr {
                "app_consistent_every" => {
                    "to take no app-consistent points write app_consistent_every = \"off\""
                        .to_string()
                }
                "crash_consistent_every" => {
                    "how often to take a crash-consistent point, e.g. \"5m\"".to_string()
                }
                "rpo_threshold" => {
                    "the age past which the newest point is too old, e.g. \"15m\"".to_string()
                }
                _ => "give a duration such as \"30s\", \"5m\" or \"1h\"".to_string(),
            },
        ))
    } else if secs > MAX_DURATION_SECS {
        Some((
            format!("`{attr}` is longer than 100 years"),
            "too long",
            "give a duration of at most 100 years (\"36500d\")".to_string(),
        ))
    } else {
        None
    };
    match problem {
        None => Some(d),
        Some((message, label, help)) => {
            diags.push(
                Diagnostic::error("standby::bad_duration", loc.clone(), message)
                    .label(label)
                    .help(help),
            );
            None
        }
    }
}

/// `app_consistent_every`: `"off"` (None: crash-consistent points only,
/// as when the attribute is absent) or a duration longer than zero. None
/// when reported.
pub fn app_consistent_every(
    v: super::value::Value,
    loc: &Loc,
    hide: bool,
    diags: &mut Diagnostics,
) -> Option<Option<Duration>> {
    if matches!(&v, super::value::Value::String(s) if s == "off") {
        return Some(None);
    }
    super::reader::want_duration(v, loc, "app_consistent_every", hide, diags).map(Some)
}

/// Where a failover would write each protected disk, after resolving links,
/// must be inside its target site and never a disk of a machine at its own
/// site: a DR directory that is a link into the source site would have a
/// failover overwrite the live source disks. Reported where the protection
/// names its machine (`machines`: machine -> that place).
pub fn failover_targets(
    dir: &Path,
    cfg: &crate::model::Config,
    machines: &std::collections::HashMap<Address, (Address, Loc)>,
    diags: &mut Diagnostics,
) {
    let root_of = |site: &Address| {
        cfg.sites
            .get(site)
            .and_then(|s| s.root.as_ref())
            .map(|r| resolved(dir, r))
    };
    let sources: Vec<(PathBuf, String)> = cfg
        .machines
        .values()
        .flat_map(|m| {
            let root = root_of(&m.site);
            m.disks.iter().filter_map(move |d| {
                let root = root.as_ref()?;
                Some((
                    resolved(root, &d.path),
                    format!("disk {} of {} at {}", d.name, m.addr, m.site),
                ))
            })
        })
        .collect();
    for p in cfg.protections.values() {
        let (Some(m), Some(dr)) = (cfg.machines.get(&p.machine), root_of(&p.target)) else {
            continue;
        };
        // A root that overlaps another site's was reported by `site_roots`.
        let overlaps = cfg
            .sites
            .keys()
            .filter(|s| **s != p.target)
            .any(|s| root_of(s).is_some_and(|r| r.starts_with(&dr) || dr.starts_with(&r)));
        if overlaps {
            continue;
        }
        let Some((_, loc)) = machines.get(&p.machine) else {
            continue;
        };
        for d in &m.disks {
            let Ok(rel) = standby_provider_local::layout::disk_relative(&d.path) else {
                continue;
            };
            // A path that is a directory where the machine runs: nothing a
            // point could read (replicate would only fail later).
            let configured = cfg.sites.get(&m.site).and_then(|s| s.root.as_ref());
            if let Some(shown) = configured.map(|r| r.join(&d.path))
                && root_of(&m.site).is_some_and(|r| resolved(&r, &d.path).is_dir())
            {
                diags.push(
                    Diagnostic::error(
                        "standby::bad_disk_path",
                        loc.clone(),
                        format!(
                            "disk {} of {}: {} is a directory, not a disk file",
                            d.name,
                            m.addr,
                            shown.display()
                        ),
                    )
                    .label("its disk is a directory")
                    .help("give the path of the disk image or device file itself (e.g. \"db/data.img\"), relative to the site's root"),
                );
            }
            let lands = resolved(&dr, &rel);
            let clash = sources
                .iter()
                .find(|(s, _)| *s == lands)
                .map(|(_, what)| what.clone())
                .or_else(|| {
                    (!lands.starts_with(&dr)).then(|| format!("outside {}'s root", p.target))
                });
            if let Some(what) = clash {
                diags.push(
                    Diagnostic::error(
                        "standby::failover_target_overlaps",
                        loc.clone(),
                        format!(
                            "a failover of {} to {} would write disk {} through a link onto {what}",
                            m.addr, p.target, d.name
                        ),
                    )
                    .label("its disks would land on another site's data")
                    .help("a directory under the DR site's root links elsewhere; give the DR site directories of its own"),
                );
            }
        }
    }
}
