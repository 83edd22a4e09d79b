//! Lowering checked blocks into the model, with the checks that need more
//! than one block: a protection's target, one protection per machine,
//! retention against RPO, plan coverage and `depends_on` cycles.

use super::diag::{Diagnostic, Diagnostics, Loc, Source, did_you_mean};
use super::eval::{Locals, Objects, Scope, VarValue};
use super::reader::{Reader, one_label, want_ref, wrong_type};
use super::value::{Ref, Value};
use crate::model::*;
use hcl_edit::structure::Block;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// A top-level block with its file.
pub struct Top<'f> {
    pub block: &'f Block,
    pub source: Arc<Source>,
    pub name: String,
    pub label: Loc,
}

/// What lowering needs beside the blocks themselves.
pub struct Ctx<'a> {
    pub vars: &'a HashMap<String, VarValue>,
    pub locals: &'a Locals,
    pub objects: &'a Objects,
}

impl<'a> Ctx<'a> {
    fn scope<'s>(&'s self, source: &'s Arc<Source>) -> Scope<'s> {
        Scope::top(source, self.vars, self.locals, self.objects)
    }
}

pub fn vault(ctx: &Ctx, t: &Top, diags: &mut Diagnostics) -> Option<Vault> {
    let mut r = Reader::new(
        ctx.scope(&t.source),
        t.block,
        &["url", "key_file", "key_env"],
        &[],
        diags,
    );
    let url = r.string("url", true, diags);
    let key = match (r.has("key_file"), r.has("key_env")) {
        (true, true) => {
            diags.push(
                Diagnostic::error(
                    "standby::conflicting_attributes",
                    r.key_loc("key_env").unwrap_or(r.header.clone()),
                    format!("{} sets both `key_file` and `key_env`", r.what),
                )
                .label("second key source")
                .help("the master key comes from one place: keep either key_file or key_env"),
            );
            None
        }
        (false, true) => r.string("key_env", false, diags).map(KeySource::Env),
        (true, false) => r
            .string("key_file", false, diags)
            .map(|p| KeySource::File(p.into())),
        (false, false) => Some(KeySource::File(
            format!(".standby/keys/{}.key", t.name).into(),
        )),
    };
    let url = url?;
    if !["file://", "az://", "s3://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        let loc = r
            .expr("url")
            .map(|e| Loc::new(r.source(), hcl_edit::Span::span(e)))
            .unwrap_or(r.header.clone());
        diags.push(
            Diagnostic::error(
                "standby::bad_url",
                loc,
                format!("unsupported vault url {url:?}"),
            )
            .label("unknown scheme")
            .help("use file://PATH, az://CONTAINER/PREFIX or s3://BUCKET/PREFIX"),
        );
        return None;
    }
    Some(Vault {
        addr: Address::new(Kind::Vault, &t.name),
        url,
        key: key?,
        sensitive: r.sensitive,
    })
}

/// Local site roots seen so far, lexically normalised, with where each was set.
pub type SiteRoots = Vec<(PathBuf, Address, Loc)>;

/// `a/./b/../c` -> `a/c`, without touching the disk (roots need not exist yet).
fn normalise(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub fn site(ctx: &Ctx, t: &Top, roots: &mut SiteRoots, diags: &mut Diagnostics) -> Option<Site> {
    let mut r = Reader::new(
        ctx.scope(&t.source),
        t.block,
        &["provider", "root", "command", "host"],
        &[],
        diags,
    );
    let host = super::site_host::read(&mut r, diags)?;
    let (pv, ploc) = r.required("provider", diags)?;
    let provider = super::reader::want_string(pv, &ploc, "provider", diags)?;
    let (root, command) = match provider.as_str() {
        "local" | "qemu" => (Some(r.string("root", true, diags)?.into()), None),
        "exec" => (None, Some(r.argv("command", true, diags)?)),
        other => {
            let help = match did_you_mean(other, ["local", "qemu", "exec"]) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "providers are \"local\" (this host), \"qemu\" (QEMU VMs on this host) and \"exec\" (your own scripts)".into(),
            };
            diags.push(
                Diagnostic::error(
                    "standby::unknown_provider",
                    ploc,
                    format!("unknown site provider {other:?}"),
                )
                .label("not a provider")
                .help(help),
            );
            return None;
        }
    };
    let wrong = if provider == "exec" {
        "root"
    } else {
        "command"
    };
    if let Some(loc) = r.key_loc(wrong) {
        diags.push(
            Diagnostic::error(
                "standby::unknown_attribute",
                loc,
                format!("`{wrong}` does not apply to a site with provider {provider:?}"),
            )
            .label("not used by this provider")
            .help("a local or qemu site takes `root`; an exec site takes `command`"),
        );
        return None;
    }
    let addr = Address::new(Kind::Site, &t.name);
    if let (Some(root), Some(loc)) = (&root, r.value_loc("root")) {
        let root: &PathBuf = root;
        let here = normalise(root);
        if let Some((_, other, _)) = roots
            .iter()
            .find(|(p, _, _)| p.starts_with(&here) || here.starts_with(p))
        {
            diags.push(
                Diagnostic::error(
                    "standby::site_roots_overlap",
                    loc,
                    format!("{addr}'s root overlaps {other}'s root"),
                )
                .label("same directory as another site, or inside it")
                .help("give each site a root of its own: replicas written into another site's tree would mix with (or overwrite) its machines' disks"),
            );
            return None;
        }
        roots.push((here, addr.clone(), loc));
    }
    Some(Site {
        addr,
        provider,
        root,
        command,
        host,
        sensitive: r.sensitive,
    })
}

pub fn policy(ctx: &Ctx, t: &Top, diags: &mut Diagnostics) -> Option<Policy> {
    let attrs = [
        "rpo_threshold",
        "crash_consistent_every",
        "app_consistent_every",
        "retention",
        "compression_level",
    ];
    let mut r = Reader::new(ctx.scope(&t.source), t.block, &attrs, &[], diags);
    let rpo = r.duration("rpo_threshold", true, diags);
    let crash = r.duration("crash_consistent_every", true, diags);
    let app = if r.has("app_consistent_every") {
        // "off" (no app-consistent points) or a duration.
        let (v, loc) = r.optional("app_consistent_every", diags)?;
        let hide = r.sensitive.contains("app_consistent_every");
        super::checks::app_consistent_every(v, &loc, hide, diags)?
    } else {
        None
    };
    let retention = r.duration("retention", true, diags);
    let level = match r.number("compression_level", diags) {
        None if r.has("compression_level") => None,
        None => Some(1),
        Some((n, loc)) => {
            if !n.to_i64().is_some_and(|i| (1..=19).contains(&i)) {
                diags.push(
                    Diagnostic::error(
                        "standby::out_of_range",
                        loc,
                        format!(
                            "compression_level must be a whole number from 1 to 19, found {}",
                            n
                        ),
                    )
                    .label("out of range")
                    .help("1 is fastest (the default); 19 packs tightest but is slow"),
                );
                None
            } else {
                n.to_i64().map(|i| i as i32)
            }
        }
    };
    let (rpo, crash, retention, level) = (rpo?, crash?, retention?, level?);
    let loc_of = |name: &str| {
        r.expr(name)
            .map(|e| Loc::new(r.source(), hcl_edit::Span::span(e)))
            .unwrap_or(r.header.clone())
    };
    if retention < rpo {
        diags.push(
            Diagnostic::error(
                "standby::retention_below_rpo",
                loc_of("retention"),
                format!(
                    "retention ({retention}) is shorter than the RPO threshold ({rpo}) in {}",
                    r.what
                ),
            )
            .label("shorter than rpo_threshold")
            .help(format!(
                "keep points at least as long as the RPO threshold: retention = \"{rpo}\" or more"
            )),
        );
        return None;
    }
    if crash > rpo {
        diags.push(
            Diagnostic::warning(
                "standby::frequency_above_rpo",
                loc_of("crash_consistent_every"),
                format!("crash_consistent_every ({crash}) is longer than rpo_threshold ({rpo}): the RPO will be missed between points"),
            )
            .label("longer than the RPO threshold")
            .help(format!("take points at least every {rpo}")),
        );
    }
    Some(Policy {
        addr: Address::new(Kind::Policy, &t.name),
        rpo_threshold: rpo,
        crash_consistent_every: crash,
        app_consistent_every: app,
        retention,
        compression_level: level,
    })
}

/// The instances a block's `for_each` makes: (key, each.value); one
/// unkeyed instance when there is no `for_each`.
pub fn instances(
    ctx: &Ctx,
    t: &Top,
    machine_keys: &MachineKeys,
    diags: &mut Diagnostics,
) -> Option<Vec<(Option<String>, Value)>> {
    if let Some(c) = t.block.body.get_attribute("count") {
        return count_instances(ctx, t, c, diags);
    }
    let Some(attr) = t.block.body.get_attribute("for_each") else {
        return Some(vec![(None, Value::Null)]);
    };
    let scope = ctx.scope(&t.source);
    let mut out = super::eval::Out {
        diags,
        sensitive: false,
    };
    let v = scope.eval(&attr.value, &mut out).ok()?;
    let loc = Loc::new(&t.source, hcl_edit::Span::span(&attr.value));
    match v {
        Value::Map(m) => Some(m.into_iter().map(|(k, v)| (Some(k), v)).collect()),
        // A set element's key is its value; a set has no duplicates.
        Value::Set(items) => {
            let mut res = Vec::new();
            for i in items {
                match i {
                    Value::String(s) => res.push((Some(s.clone()), Value::String(s))),
                    other => {
                        diags.push(
                            Diagnostic::error(
                                "standby::for_each_not_collection",
                                loc,
                                format!(
                                    "for_each over a set needs strings, found {}",
                                    other.type_name()
                                ),
                            )
                            .label("not a set of strings")
                            .help("use a map (keys name the instances) or a set of strings"),
                        );
                        return None;
                    }
                }
            }
            Some(res)
        }
        // Terraform refuses lists and tuples: their items have no names of
        // their own, and duplicates would silently merge into one instance.
        Value::List(_) => {
            diags.push(
                Diagnostic::error(
                    "standby::for_each_not_collection",
                    loc,
                    "the given \"for_each\" argument value is unsuitable: the \"for_each\" argument must be a map, or set of strings, and you have provided a value of type list",
                )
                .label("a list")
                .help("write for_each = toset([...]) (toset drops duplicates, so two equal items make one instance), or build a map with { for x in ... : KEY => x }"),
            );
            None
        }
        Value::Ref(Ref::Object {
            kind: Kind::Machine,
            name,
            key: None,
        }) if matches!(machine_keys.get(&name), Some(Some(_))) => Some(
            machine_keys[&name]
                .iter()
                .flatten()
                .filter_map(|a| a.key.as_ref().map(|k| k.text()))
                .map(|k| {
                    (
                        Some(k.clone()),
                        Value::Ref(Ref::Object {
                            kind: Kind::Machine,
                            name: name.clone(),
                            key: Some(k.clone()),
                        }),
                    )
                })
                .collect(),
        ),
        // That machine's own for_each failed and was reported.
        Value::Ref(Ref::Object {
            kind: Kind::Machine,
            name,
            key: None,
        }) if matches!(machine_keys.get(&name), Some(None)) => None,
        other => {
            diags.push(
                Diagnostic::error("standby::for_each_not_collection", loc, format!("for_each needs a map or a set of strings, found {}", other.type_name()))
                    .label("not a collection")
                    .help("write for_each = { a = ..., b = ... } or toset([\"a\", \"b\"]); each instance is named by its key"),
            );
            None
        }
    }
}

/// `count = N`: instances keyed "0" to "N-1" (Terraform's `[0]`...), each
/// with its number as the value `count.index` reads.
fn count_instances(
    ctx: &Ctx,
    t: &Top,
    c: &hcl_edit::structure::Attribute,
    diags: &mut Diagnostics,
) -> Option<Vec<(Option<String>, Value)>> {
    let loc = Loc::new(&t.source, hcl_edit::Span::span(&c.value));
    if let Some(fe) = t.block.body.get_attribute("for_each") {
        diags.push(
            Diagnostic::error(
                "standby::count_and_for_each",
                Loc::new(&t.source, hcl_edit::Span::span(&fe.key)),
                format!(
                    "{} sets both `count` and `for_each`",
                    super::reader::describe(t.block)
                ),
            )
            .label("second way to repeat the block")
            .help("use one of them: for_each for instances named by key, count for numbered ones"),
        );
        return None;
    }
    let scope = ctx.scope(&t.source);
    let mut out = super::eval::Out {
        diags: &mut *diags,
        sensitive: false,
    };
    let v = scope.eval(&c.value, &mut out).ok()?;
    match super::value::Type::Number.convert(v.clone()) {
        Ok(Value::Number(n)) if n.to_i64().is_some_and(|i| (0..=100_000).contains(&i)) => Some(
            (0..n.to_i64().unwrap_or(0))
                .map(|i| (Some(i.to_string()), Value::Number(i.into())))
                .collect(),
        ),
        _ => {
            diags.push(
                Diagnostic::error(
                    "standby::wrong_type",
                    loc,
                    format!(
                        "`count` needs a whole number from 0, found {}",
                        match v {
                            Value::Number(n) => n.to_text(),
                            other => other.type_name(),
                        }
                    ),
                )
                .label("not a count")
                .help("count = 3 makes instances [0], [1] and [2]"),
            );
            None
        }
    }
}

/// The scope of one instance: `each.key`/`each.value` with `for_each`,
/// `count.index` with `count`.
fn instance_scope<'a>(scope: &mut Scope<'a>, t: &Top, key: &'a Option<String>, each: &'a Value) {
    if t.block.body.has_attribute("count") {
        let index = std::collections::BTreeMap::from([("index".to_string(), each.clone())]);
        scope
            .for_vars
            .push(("count".to_string(), Value::Map(index)));
    } else {
        scope.each = key.as_deref().map(|k| (k, each));
    }
}

/// The address of one instance of `t`: `NAME[N]` for a `count` instance
/// (as Terraform writes it), `NAME["KEY"]` for a `for_each` one.
pub fn addr(kind: Kind, t: &Top, key: &Option<String>) -> Address {
    let index = key.as_deref().and_then(|k| k.parse::<u64>().ok());
    match (key, index) {
        (Some(_), Some(i)) if t.block.body.has_attribute("count") => {
            Address::indexed(kind, &t.name, i)
        }
        (Some(k), _) => Address::keyed(kind, &t.name, k),
        (None, _) => Address::new(kind, &t.name),
    }
}

fn probe(r: &mut Reader, diags: &mut Diagnostics) -> Option<Probe> {
    let kinds: Vec<&str> = ["command", "http", "tcp", "guest", "console"]
        .into_iter()
        .filter(|k| r.has(k))
        .collect();
    if kinds.len() != 1 {
        let (loc, msg) = if kinds.is_empty() {
            (r.header.clone(), format!("{} has no probe", r.what))
        } else {
            (
                r.key_loc(kinds[1]).unwrap_or(r.header.clone()),
                format!(
                    "{} has more than one probe: {}",
                    r.what,
                    kinds.join(" and ")
                ),
            )
        };
        diags.push(
            Diagnostic::error("standby::probe_count", loc, msg)
                .label(if kinds.is_empty() { "needs a probe" } else { "second probe" })
                .help("a check has exactly one of: command = [argv], http = \"URL\", tcp = \"HOST:PORT\", guest = [argv] (in a VM's guest) or console = \"REGEX\" (on a VM's serial console)"),
        );
        return None;
    }
    let only = |r: &Reader, attr: &str, probe: &str, diags: &mut Diagnostics| {
        if let Some(loc) = r.key_loc(attr) {
            diags.push(
                Diagnostic::error(
                    "standby::unknown_attribute",
                    loc,
                    format!("`{attr}` applies only to {probe} checks"),
                )
                .label(format!("not used by a {} check", kinds[0]))
                .help(format!("remove `{attr}`, or make this a {probe} check")),
            );
            return false;
        }
        true
    };
    match kinds[0] {
        "command" => {
            let ok = only(r, "status", "http", diags) & only(r, "contains", "http", diags);
            let command = r.argv("command", true, diags)?;
            let expect = if r.has("expect") {
                Some(r.string("expect", false, diags)?)
            } else {
                None
            };
            ok.then_some(Probe::Command { command, expect })
        }
        "http" => {
            let ok = only(r, "expect", "command", diags);
            let url = r.string("http", true, diags)?;
            let status = match r.number("status", diags) {
                None if r.has("status") => return None,
                None => 200,
                Some((n, _)) if n.to_i64().is_some_and(|i| (100..=599).contains(&i)) => {
                    n.to_i64().unwrap_or(200) as u16
                }
                Some((n, loc)) => {
                    diags.push(
                        Diagnostic::error(
                            "standby::out_of_range",
                            loc,
                            format!("status {} is not an HTTP status code", n),
                        )
                        .label("not 100..599")
                        .help("write the status the check expects, e.g. 200"),
                    );
                    return None;
                }
            };
            let contains = if r.has("contains") {
                Some(r.string("contains", false, diags)?)
            } else {
                None
            };
            ok.then_some(Probe::Http {
                url,
                status,
                contains,
            })
        }
        "guest" => {
            let ok = only(r, "status", "http", diags) & only(r, "contains", "http", diags);
            let command = r.argv("guest", true, diags)?;
            let expect = if r.has("expect") {
                Some(r.string("expect", false, diags)?)
            } else {
                None
            };
            ok.then_some(Probe::Guest { command, expect })
        }
        "console" => super::qemu::console_probe(r, diags),
        _ => {
            let ok = only(r, "expect", "command", diags)
                & only(r, "status", "http", diags)
                & only(r, "contains", "http", diags);
            let address = r.string("tcp", true, diags)?;
            ok.then_some(Probe::Tcp { address })
        }
    }
}

const CHECK_ATTRS: [&str; 11] = [
    "command", "expect", "http", "status", "contains", "tcp", "guest", "console", "timeout",
    "retries", "interval",
];

fn check(
    r: &Reader,
    b: &Block,
    default_timeout: u64,
    diags: &mut Diagnostics,
) -> Option<(Check, Loc)> {
    let (name, loc) = one_label(r.source(), b, diags)?;
    let mut c = r.nested(b, &format!("check.{name}"), &CHECK_ATTRS, &[], diags);
    let probe = probe(&mut c, diags);
    let timeout = c.duration_or("timeout", default_timeout, diags);
    let interval = c.duration_or("interval", 5, diags);
    let retries = match c.number("retries", diags) {
        None if c.has("retries") => None,
        None => Some(3),
        Some((n, _)) if n.to_i64().is_some_and(|i| (0..=1000).contains(&i)) => {
            n.to_i64().map(|i| i as u32)
        }
        Some((n, l)) => {
            diags.push(
                Diagnostic::error(
                    "standby::out_of_range",
                    l,
                    format!("retries must be a whole number from 0 to 1000, found {}", n),
                )
                .label("out of range")
                .help("retries counts extra attempts after the first; 3 is the default"),
            );
            None
        }
    };
    Some((
        Check {
            name,
            probe: probe?,
            timeout: timeout?,
            retries: retries?,
            interval: interval?,
        },
        loc,
    ))
}

/// Report a name seen twice among sibling blocks.
fn dup_name(
    seen: &mut HashMap<String, Loc>,
    name: &str,
    loc: &Loc,
    what: &str,
    diags: &mut Diagnostics,
) -> bool {
    if let Some(first) = seen.get(name) {
        diags.push(
            Diagnostic::error(
                "standby::duplicate_name",
                loc.clone(),
                format!("{what} {name:?} is declared twice"),
            )
            .label("second declaration")
            .help(format!(
                "the first is at {}; rename one of them",
                first.position()
            )),
        );
        return true;
    }
    seen.insert(name.to_string(), loc.clone());
    false
}

pub fn machine(
    ctx: &Ctx,
    t: &Top,
    key: &Option<String>,
    each: &Value,
    sites: &std::collections::BTreeMap<Address, Site>,
    diags: &mut Diagnostics,
) -> Option<Machine> {
    let mut scope = ctx.scope(&t.source);
    instance_scope(&mut scope, t, key, each);
    let expanded = super::dynamic::expand(&scope, t.block, &["disk", "check"], diags)?;
    let mut r = Reader::expanded(
        scope,
        &expanded,
        &["site", "for_each", "count"],
        &["disk", "quiesce", "boot", "shutdown", "check", "vm"],
        diags,
    );
    let site = r.reference("site", Kind::Site, diags);
    let mut disks = Vec::new();
    let mut qemu_disks = Vec::new();
    let mut ok = true;
    let mut seen = HashMap::new();
    for b in r.blocks("disk") {
        let Some((name, loc)) = one_label(r.source(), b, diags) else {
            ok = false;
            continue;
        };
        if dup_name(&mut seen, &name, &loc, "disk", diags) {
            ok = false;
            continue;
        }
        let attrs = [
            "path",
            super::qemu::DISK_ATTRS[0],
            super::qemu::DISK_ATTRS[1],
        ];
        let mut d = r.nested(b, &format!("disk.{name}"), &attrs, &[], diags);
        let path_loc = d.value_loc("path");
        let path = d.string("path", true, diags).filter(|p| {
            path_loc
                .as_ref()
                .is_none_or(|l| super::checks::disk_path(p, l, diags))
        });
        let path = path.and_then(|p| {
            let q = super::qemu::disk_opts(&mut d, &name, &p, diags)?;
            qemu_disks.push(q);
            Some(p)
        });
        match path {
            Some(p) => disks.push(Disk {
                name,
                path: p.into(),
            }),
            None => ok = false,
        }
        r.sensitive.extend(d.sensitive);
    }
    if disks.is_empty() && ok && !r.suggested.contains("disk") {
        diags.push(
            Diagnostic::error(
                "standby::missing_block",
                r.header.clone(),
                format!("{} has no disk", r.what),
            )
            .label("needs a disk block")
            .help("add at least one: disk \"system\" { path = \"...\" }"),
        );
        ok = false;
    }
    let quiesce = match r.single_block("quiesce", diags) {
        None => None,
        Some(b) => {
            let mut q = r.nested(b, "quiesce", &["freeze", "thaw", "timeout"], &[], diags);
            let freeze = q.argv("freeze", true, diags);
            let thaw = q.argv("thaw", true, diags);
            let timeout = q.duration_or("timeout", 30, diags);
            r.sensitive.extend(std::mem::take(&mut q.sensitive));
            match (freeze, thaw, timeout) {
                (Some(freeze), Some(thaw), Some(timeout)) => Some(Quiesce {
                    freeze,
                    thaw,
                    timeout,
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let boot = match r.single_block("boot", diags) {
        None => None,
        Some(b) => {
            let mut q = r.nested(b, "boot", &["command", "timeout"], &[], diags);
            let command = q.argv("command", true, diags);
            let timeout = q.duration_or("timeout", 300, diags);
            r.sensitive.extend(std::mem::take(&mut q.sensitive));
            match (command, timeout) {
                (Some(command), Some(timeout)) => Some(Boot { command, timeout }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let shutdown = match r.single_block("shutdown", diags) {
        None => None,
        Some(b) => {
            let mut q = r.nested(b, "shutdown", &["command", "timeout"], &[], diags);
            let command = q.argv("command", true, diags);
            let timeout = q.duration_or("timeout", 300, diags);
            r.sensitive.extend(std::mem::take(&mut q.sensitive));
            match (command, timeout) {
                (Some(command), Some(timeout)) => Some(Shutdown { command, timeout }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let mut checks = Vec::new();
    let mut seen = HashMap::new();
    for b in r.blocks("check") {
        match check(&r, b, 30, diags) {
            Some((c, loc)) => {
                if !dup_name(&mut seen, &c.name, &loc, "check", diags) {
                    checks.push(c);
                }
            }
            None => ok = false,
        }
    }
    let provider = site.as_ref().and_then(|(n, _, _)| {
        let s = sites.get(&Address::new(Kind::Site, n))?;
        Some(s.provider.as_str())
    });
    let vm = super::qemu::machine_vm(&mut r, provider, &qemu_disks, diags);
    let (site, _, _) = site?;
    let (true, Ok(vm)) = (ok, vm) else {
        return None;
    };
    Some(Machine {
        addr: addr(Kind::Machine, t, key),
        site: Address::new(Kind::Site, site),
        disks,
        quiesce,
        boot,
        shutdown,
        checks,
        sensitive: r.sensitive,
        vm,
    })
}

/// The instances of each machine with `for_each` or `count`; None when
/// its `for_each` failed (references to it are then not reported again).
pub type MachineKeys = HashMap<String, Option<Vec<Address>>>;

/// Resolve a reference to one machine instance against the declared
/// instances (`machine_keys` lists the keys of machines with `for_each`).
fn machine_addrs(
    name: &str,
    key: Option<String>,
    loc: &Loc,
    machine_keys: &MachineKeys,
    allow_all: bool,
    diags: &mut Diagnostics,
) -> Option<Vec<Address>> {
    match (machine_keys.get(name), key) {
        (None, _) => Some(vec![Address::new(Kind::Machine, name)]),
        (Some(None), _) => None,
        (Some(Some(instances)), Some(k)) => {
            // `machine.web[0]` and `machine.web["0"]` find a count instance.
            let keys: Vec<String> = instances
                .iter()
                .filter_map(|a| a.key.as_ref().map(|k| k.text()))
                .collect();
            if let Some(i) = keys.iter().position(|x| *x == k) {
                Some(vec![instances[i].clone()])
            } else {
                let help = match did_you_mean(&k, keys.iter().map(String::as_str)) {
                    Some(s) => match keys.iter().position(|x| *x == s) {
                        Some(i) => format!("did you mean {}?", instances[i]),
                        None => format!("did you mean machine.{name}[{s:?}]?"),
                    },
                    None => {
                        let shown: Vec<String> = instances
                            .iter()
                            .take(5)
                            .filter_map(|a| match a.key.as_ref()? {
                                Key::Name(s) => Some(format!("{s:?}")),
                                Key::Index(i) => Some(format!("[{i}]")),
                            })
                            .collect();
                        let more = if keys.len() > 5 { ", ..." } else { "" };
                        format!(
                            "machine.{name} has the instances {}{more}",
                            shown.join(", ")
                        )
                    }
                };
                diags.push(
                    Diagnostic::error(
                        "standby::unknown_reference",
                        loc.clone(),
                        // As the instances are written: [2] for count, ["a"] for for_each.
                        match instances.first().and_then(|a| a.key.as_ref()) {
                            Some(Key::Index(_)) => format!("machine.{name} has no instance [{k}]"),
                            _ => format!("machine.{name} has no instance {k:?}"),
                        },
                    )
                    .label("no such key")
                    .help(help),
                );
                None
            }
        }
        (Some(Some(instances)), None) if allow_all => Some(instances.clone()),
        (Some(Some(_)), None) => {
            diags.push(
                Diagnostic::error("standby::wrong_type", loc.clone(), format!("machine.{name} has for_each, so it names many machines; one is needed here"))
                    .label("many machines")
                    .help(format!("pick one instance with machine.{name}[\"KEY\"], or use machine.{name}[each.key] with for_each")),
            );
            None
        }
    }
}

/// State shared across protections for the cross-block checks.
#[derive(Default)]
pub struct Protections {
    /// Machine -> (protection, where it names the machine).
    pub by_machine: HashMap<Address, (Address, Loc)>,
    /// Machines named by a protection that failed to resolve them.
    pub uncertain: HashSet<String>,
    /// Consistency group -> (first protection, its vault, its policy).
    pub groups: HashMap<String, (Address, Address, Address)>,
    /// A protection failed before naming its machine: coverage can't be judged.
    pub coverage_unknown: bool,
}

#[allow(clippy::too_many_arguments)]
pub fn protection(
    ctx: &Ctx,
    t: &Top,
    key: &Option<String>,
    each: &Value,
    machines: &std::collections::BTreeMap<Address, Machine>,
    machine_keys: &MachineKeys,
    seen: &mut Protections,
    diags: &mut Diagnostics,
) -> Option<Protection> {
    let mut scope = ctx.scope(&t.source);
    instance_scope(&mut scope, t, key, each);
    let attrs = [
        "machine",
        "target",
        "vault",
        "policy",
        "consistency_group",
        "prevent_destroy",
        "for_each",
        "count",
    ];
    let mut r = Reader::new(scope, t.block, &attrs, &["target_vm"], diags);
    let this = addr(Kind::Protection, t, key);
    let target_vm = super::qemu::target_vm(&mut r, diags);
    let machine = match r.reference("machine", Kind::Machine, diags) {
        Some((n, k, loc)) => match machine_addrs(&n, k, &loc, machine_keys, false, diags) {
            Some(mut a) => a.pop().map(|a| (a, loc)),
            None => {
                // Its instances may still be listed in a plan: don't call them unprotected.
                seen.uncertain.insert(n);
                None
            }
        },
        None => {
            seen.coverage_unknown = true;
            None
        }
    };
    let target = r.reference("target", Kind::Site, diags);
    let vault = r.reference("vault", Kind::Vault, diags);
    let policy = r.reference("policy", Kind::Policy, diags);
    // Evaluated without returning early, so the machine still counts as covered.
    let group = if r.has("consistency_group") {
        r.string("consistency_group", false, diags).map(Some)
    } else {
        Some(None)
    };
    let group_loc = r
        .expr("consistency_group")
        .map(|e| Loc::new(r.source(), hcl_edit::Span::span(e)));
    let group = match (group, &group_loc) {
        (Some(Some(g)), Some(l)) if !super::checks::group_name(&g, l, diags) => None,
        (g, _) => g,
    };
    let prevent_destroy = r.bool_or("prevent_destroy", false, diags);
    let (machine, mloc) = machine?;
    let mut ok = true;
    if let Some((other, first)) = seen.by_machine.get(&machine) {
        diags.push(
            Diagnostic::error(
                "standby::duplicate_protection",
                mloc.clone(),
                format!("{machine} is already protected by {other}"),
            )
            .label("second protection of this machine")
            .help(format!(
                "a machine has one protection; {other} names it at {}. Remove one of them",
                first.position()
            )),
        );
        ok = false;
    } else {
        seen.by_machine
            .insert(machine.clone(), (this.clone(), mloc));
    }
    let (target, _, tloc) = target?;
    if let Some(m) = machines.get(&machine)
        && m.site.name == target
    {
        diags.push(
                Diagnostic::error("standby::target_is_source", tloc, format!("{this} replicates {machine} to its own site, site.{target}"))
                    .label("the machine already runs here")
                    .help("the target must be a different site from the machine's `site`, so a loss of one site leaves the other"),
            );
        ok = false;
    }
    let (vault, _, _) = vault?;
    let (policy, _, _) = policy?;
    let group = group?;
    let (vault, policy) = (
        Address::new(Kind::Vault, vault),
        Address::new(Kind::Policy, policy),
    );
    if let (Some(g), Some(gloc)) = (&group, group_loc) {
        match seen.groups.get(g) {
            Some((first, fvault, fpolicy)) if (fvault, fpolicy) != (&vault, &policy) => {
                let (what, mine, theirs) = if fvault != &vault {
                    ("vault", &vault, fvault)
                } else {
                    ("policy", &policy, fpolicy)
                };
                diags.push(
                    Diagnostic::error(
                        "standby::inconsistent_group",
                        gloc,
                        format!("{this} uses {mine} but {first}, in the same consistency group {g:?}, uses {theirs}"),
                    )
                    .label(format!("different {what} in this group"))
                    .help("machines of one consistency group share recovery points, so their protections need the same vault and policy"),
                );
                ok = false;
            }
            Some(_) => {}
            None => {
                seen.groups
                    .insert(g.clone(), (this.clone(), vault.clone(), policy.clone()));
            }
        }
    }
    if !ok {
        return None;
    }
    Some(Protection {
        addr: this,
        machine,
        target: Address::new(Kind::Site, target),
        vault,
        policy,
        consistency_group: group,
        prevent_destroy: prevent_destroy?,
        target_vm: target_vm.ok()?,
    })
}

fn steps(r: &Reader, b: &Block, prefix: &str, diags: &mut Diagnostics) -> Option<Vec<Step>> {
    let outer = r.nested(b, prefix, &[], &["script", "manual", "check"], diags);
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen = HashMap::new();
    for s in outer.body.blocks() {
        let kind = s.ident.as_str();
        if !["script", "manual", "check"].contains(&kind) {
            continue;
        }
        let step = match kind {
            "check" => check(&outer, s, 300, diags).map(|(c, loc)| {
                (
                    Step {
                        name: c.name,
                        action: StepAction::Check(c.probe),
                        timeout: c.timeout,
                        // Checks change nothing: they verify in both directions.
                        when: StepWhen::Always,
                    },
                    loc,
                )
            }),
            _ => (|| {
                let (name, loc) = one_label(outer.source(), s, diags)?;
                let attrs: &[&str] = if kind == "script" {
                    &["command", "timeout", "when"]
                } else {
                    &["instructions", "timeout", "when"]
                };
                let mut sr = outer.nested(s, &format!("{kind}.{name}"), attrs, &[], diags);
                let (action, default) = if kind == "script" {
                    (
                        sr.argv("command", true, diags)
                            .map(|command| StepAction::Script { command }),
                        600,
                    )
                } else {
                    (
                        sr.string("instructions", true, diags)
                            .map(|instructions| StepAction::Manual { instructions }),
                        86_400,
                    )
                };
                let timeout = sr.duration_or("timeout", default, diags);
                let when = step_when(&mut sr, diags);
                Some((
                    Step {
                        name,
                        action: action?,
                        timeout: timeout?,
                        when: when?,
                    },
                    loc,
                ))
            })(),
        };
        match step {
            Some((st, loc)) => {
                if !dup_name(&mut seen, &st.name, &loc, "step", diags) {
                    out.push(st);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `drill { instant = true }` boots every machine of the plan from its
/// disks served out of the vault: each must be a VM (`vm` block) recovered
/// to a `qemu` site. False when one is not (reported at `loc`).
fn instant_vms(
    groups: &[Group],
    config: &crate::model::Config,
    loc: &Loc,
    diags: &mut Diagnostics,
) -> bool {
    let bad: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.machines)
        .filter(|m| {
            let Some(machine) = config.machines.get(m) else {
                return false; // an unknown machine is reported by its group
            };
            let provider = config
                .protections
                .values()
                .find(|p| &p.machine == *m)
                .and_then(|p| config.sites.get(&p.target))
                .map(|s| s.provider.as_str());
            machine.vm.is_none() || provider != Some("qemu")
        })
        .map(|m| m.to_string())
        .collect();
    if bad.is_empty() {
        return true;
    }
    diags.push(
        Diagnostic::error(
            "standby::instant_without_vm",
            loc.clone(),
            format!(
                "instant drills boot VMs from disks served out of the vault, but {} {} not a VM recovered to a qemu site",
                bad.join(", "),
                if bad.len() == 1 { "is" } else { "are" }
            ),
        )
        .label("instant recovery needs VMs at a qemu site")
        .help("remove instant (the drill restores the disks first), or give those machines a vm block and a protection to a site with provider = \"qemu\""),
    );
    false
}

pub fn recovery_plan(
    ctx: &Ctx,
    t: &Top,
    machine_keys: &MachineKeys,
    seen_protections: &Protections,
    config: &crate::model::Config,
    diags: &mut Diagnostics,
) -> Option<RecoveryPlan> {
    let expanded = super::dynamic::expand(&ctx.scope(&t.source), t.block, &["group"], diags)?;
    let mut group_names = Vec::new();
    let mut seen = HashMap::new();
    for b in expanded
        .block
        .body
        .blocks()
        .filter(|b| b.ident.as_str() == "group")
    {
        if let Some((name, loc)) = one_label(&t.source, b, &mut Diagnostics::default())
            && !seen.contains_key(&name)
        {
            seen.insert(name.clone(), loc);
            group_names.push(name);
        }
    }
    let mut scope = ctx.scope(&t.source);
    scope.groups = Some(&group_names);
    let mut r = Reader::expanded(
        scope,
        &expanded,
        &["active_site"],
        &["group", "drill"],
        diags,
    );
    let this = Address::new(Kind::RecoveryPlan, &t.name);
    let active_site = if r.has("active_site") {
        r.reference("active_site", Kind::Site, diags)
            .map(|(n, _, loc)| Some((Address::new(Kind::Site, n), loc)))
    } else {
        Some(None)
    };
    let mut ok = true;
    let mut groups = Vec::new();
    let mut dep_locs: HashMap<String, Loc> = HashMap::new();
    let mut seen = HashMap::new();
    let mut listed: HashMap<Address, Loc> = HashMap::new();
    for b in r.blocks("group") {
        let Some((name, loc)) = one_label(r.source(), b, diags) else {
            ok = false;
            continue;
        };
        if dup_name(&mut seen, &name, &loc, "group", diags) {
            ok = false;
            continue;
        }
        let mut g = r.nested(
            b,
            &format!("group.{name}"),
            &["machines", "depends_on"],
            &["before", "after"],
            diags,
        );
        let mut machines = Vec::new();
        match g.list_items("machines", diags) {
            None if !g.has("machines") => {
                g.missing("machines", diags);
                ok = false;
            }
            None => ok = false,
            Some(items) => {
                for (v, loc) in items {
                    let Some((n, k)) = want_ref(v, &loc, "machines", Kind::Machine, diags) else {
                        ok = false;
                        continue;
                    };
                    let Some(addrs) = machine_addrs(&n, k, &loc, machine_keys, true, diags) else {
                        ok = false;
                        continue;
                    };
                    for a in addrs {
                        if let Some(first) = listed.get(&a) {
                            diags.push(
                                Diagnostic::error(
                                    "standby::duplicate_name",
                                    loc.clone(),
                                    format!("{a} is listed twice in recovery_plan {:?}", t.name),
                                )
                                .label("listed again")
                                .help(format!(
                                    "a machine recovers in one group; it is first listed at {}",
                                    first.position()
                                )),
                            );
                            ok = false;
                            continue;
                        }
                        listed.insert(a.clone(), loc.clone());
                        let covered = seen_protections.by_machine.contains_key(&a)
                            || seen_protections.uncertain.contains(&a.name)
                            || seen_protections.coverage_unknown;
                        if !covered {
                            diags.push(
                                Diagnostic::error("standby::unprotected_machine", loc.clone(), format!("recovery_plan {:?} lists {a}, but no protection covers it", t.name))
                                    .label("not protected")
                                    .help(format!("add a protection with machine = {a}, or remove it from this group")),
                            );
                            ok = false;
                        }
                        machines.push(a);
                    }
                }
            }
        }
        let mut depends_on = Vec::new();
        if g.has("depends_on") {
            if let Some(l) = g.key_loc("depends_on") {
                dep_locs.insert(name.clone(), l);
            }
            match g.list_items("depends_on", diags) {
                None => ok = false,
                Some(items) => {
                    for (v, loc) in items {
                        match v {
                            Value::Ref(Ref::Group(d)) => depends_on.push(d),
                            other => {
                                wrong_type(
                                    &loc,
                                    "depends_on",
                                    "a reference to a group (like group.NAME)",
                                    &other,
                                    diags,
                                );
                                ok = false;
                            }
                        }
                    }
                }
            }
        }
        let before = g
            .single_block("before", diags)
            .map(|b| steps(&g, b, "before", diags));
        let after = g
            .single_block("after", diags)
            .map(|b| steps(&g, b, "after", diags));
        let (before, after) = match (before, after) {
            (Some(None), _) | (_, Some(None)) => {
                ok = false;
                (Vec::new(), Vec::new())
            }
            (b, a) => (
                b.flatten().unwrap_or_default(),
                a.flatten().unwrap_or_default(),
            ),
        };
        groups.push(Group {
            name,
            machines,
            depends_on,
            before,
            after,
        });
    }
    if groups.is_empty() && ok && !r.suggested.contains("group") {
        diags.push(
            Diagnostic::error(
                "standby::missing_block",
                r.header.clone(),
                format!("{} has no group", r.what),
            )
            .label("needs a group block")
            .help("add one: group \"app\" { machines = [machine.NAME] }"),
        );
        ok = false;
    }
    if let Some(cycle) = find_cycle(&groups) {
        let loc = dep_locs.get(&cycle[0]).cloned().unwrap_or(r.header.clone());
        let path: Vec<String> = cycle.iter().map(|g| format!("group.{g}")).collect();
        diags.push(
            Diagnostic::error(
                "standby::dependency_cycle",
                loc,
                format!(
                    "groups of recovery_plan {:?} depend on each other in a cycle: {}",
                    t.name,
                    path.join(" -> ")
                ),
            )
            .label("part of the cycle")
            .help("remove one of these depends_on entries so that the groups can start in order"),
        );
        ok = false;
    }
    let drill = match r.single_block("drill", diags) {
        None => None,
        Some(b) => {
            let mut d = r.nested(b, "drill", &["schedule", "max_rto", "instant"], &[], diags);
            let schedule = d.required("schedule", diags).and_then(|(v, loc)| {
                let s = super::reader::want_string(v.clone(), &loc, "schedule", diags)?;
                match s.as_str() {
                    "daily" => Some(Schedule::Daily),
                    "weekly" => Some(Schedule::Weekly),
                    "monthly" => Some(Schedule::Monthly),
                    _ => match s.parse::<Duration>() {
                        Ok(d) => Some(Schedule::Every(d)),
                        Err(e) => {
                            diags.push(
                                Diagnostic::error("standby::bad_duration", loc, format!("`schedule` must be daily, weekly, monthly or a duration; {:?} is none of these", e.input))
                                    .label("not a schedule")
                                    .help("write \"daily\", \"weekly\", \"monthly\" or a duration such as \"3d\""),
                            );
                            None
                        }
                    },
                }
            });
            let max_rto = d.duration("max_rto", true, diags);
            // Instant recovery in drills (`drill --instant` does it once).
            let instant = d.bool_or("instant", false, diags);
            if instant == Some(true)
                && let Some((_, loc)) = d.optional("instant", &mut Diagnostics::default())
                && !instant_vms(&groups, config, &loc, diags)
            {
                ok = false;
            }
            r.sensitive.extend(d.sensitive);
            match (schedule, max_rto, instant) {
                (Some(schedule), Some(max_rto), Some(instant)) => Some(Drill {
                    schedule,
                    max_rto,
                    instant,
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let active_site = match active_site {
        None => {
            ok = false;
            None
        }
        Some(None) => None,
        Some(Some((site, loc))) => {
            // Each machine can run at its own site or its protection's target.
            for m in groups.iter().flat_map(|g: &Group| &g.machines) {
                let Some(own) = config.machines.get(m).map(|x| &x.site) else {
                    continue;
                };
                let target = config
                    .protections
                    .values()
                    .find(|p| &p.machine == m)
                    .map(|p| &p.target);
                if own != &site && target != Some(&site) {
                    let to = target.map_or("(no protection)".to_string(), |t| t.to_string());
                    diags.push(
                        Diagnostic::error(
                            "standby::active_site_out_of_reach",
                            loc.clone(),
                            format!("recovery_plan {:?} cannot be active at {site}: {m} runs at {own} and is recovered to {to}", t.name),
                        )
                        .label("neither the machines' site nor their protection's target")
                        .help(format!("active_site names where the plan's machines run: {own} (their own site, the default) or {to} (failed over)")),
                    );
                    ok = false;
                    break;
                }
            }
            Some(site)
        }
    };
    ok.then_some(RecoveryPlan {
        addr: this,
        groups,
        drill,
        active_site,
    })
}

/// The first `depends_on` cycle among groups, as names in order with the
/// first repeated at the end; None when the groups form a DAG.
fn find_cycle(groups: &[Group]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done
    let mut color = vec![0u8; groups.len()];
    fn visit(
        i: usize,
        groups: &[Group],
        index: &HashMap<&str, usize>,
        color: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        color[i] = 1;
        path.push(i);
        for d in &groups[i].depends_on {
            let Some(&j) = index.get(d.as_str()) else {
                continue;
            };
            if color[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|&p| groups[p].name.clone())
                    .collect();
                cycle.push(groups[j].name.clone());
                return Some(cycle);
            }
            if color[j] == 0
                && let Some(c) = visit(j, groups, index, color, path)
            {
                return Some(c);
            }
        }
        path.pop();
        color[i] = 2;
        None
    }
    for i in 0..groups.len() {
        if color[i] == 0
            && let Some(c) = visit(i, groups, &index, &mut color, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// A step's `when`: `"failover"` (the default), `"failback"` or `"always"`.
fn step_when(r: &mut Reader, diags: &mut Diagnostics) -> Option<StepWhen> {
    if !r.has("when") {
        return Some(StepWhen::Failover);
    }
    let (v, loc) = r.optional("when", diags)?;
    let s = super::reader::want_string(v, &loc, "when", diags)?;
    match s.as_str() {
        "failover" => Some(StepWhen::Failover),
        "failback" => Some(StepWhen::Failback),
        "always" => Some(StepWhen::Always),
        _ => {
            let help = match did_you_mean(&s, StepWhen::NAMES) {
                Some(close) => format!("did you mean \"{close}\"?"),
                None => {
                    "a step runs on \"failover\" (the default), \"failback\" or \"always\"".into()
                }
            };
            diags.push(
                Diagnostic::error(
                    "standby::invalid_value",
                    loc,
                    format!("when must be \"failover\", \"failback\" or \"always\", found {s:?}"),
                )
                .label("not a direction")
                .help(help),
            );
            None
        }
    }
}
