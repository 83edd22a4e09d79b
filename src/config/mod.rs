//! HCL -> typed model: parse (hcl-edit keeps spans), evaluate (variables,
//! locals, references, for_each), check (references, types, cycles), and
//! report every problem as a miette diagnostic with its source span.
//!
//! The steps of [`load`]: read and parse every `*.hcl` file; sort the
//! top-level blocks by kind and catch duplicate names; resolve variables;
//! then lower vaults, sites, policies, machines, protections and recovery
//! plans in that order, so each can check the ones before it.

mod backend;
mod checks;
mod diag;
mod dynamic;
mod equality;
mod eval;
mod funcs;
mod lower;
mod moved;
pub mod number;
pub(crate) mod parse;
mod qemu;
mod reader;
mod site_host;
mod value;
mod vars;

pub use backend::load as load_backend;
pub use diag::did_you_mean;
pub use diag::{Diagnostic, Diagnostics, Loc, Severity, Source};

use crate::model::{Address, Config, Kind};
use eval::{LocalDef, Locals, Objects};
use hcl_edit::Span;
use lower::{Ctx, Top};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Variable values given from outside the configuration files.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `NAME=VALUE` pairs from `--var`, in the order given (last wins).
    pub cli: Vec<String>,
    /// Extra variable files from `--var-file` (`standby.vars.hcl` in the
    /// configuration directory is always read when present).
    pub files: Vec<PathBuf>,
}

/// A loaded, checked configuration and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Diagnostics,
}

/// The variables file read from the configuration directory.
pub const VARS_FILE: &str = "standby.vars.hcl";

const TOP_BLOCKS: [&str; 10] = [
    "variable",
    "locals",
    "vault",
    "site",
    "policy",
    "machine",
    "protection",
    "recovery_plan",
    "backend",
    "moved",
];

/// A path as shown in messages: without a leading `./`.
pub(crate) fn display_path(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

/// The configuration files of `dir`, sorted by name.
fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".hcl") && name != VARS_FILE && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn shown_name(dir: &Path, file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        name
    } else {
        display_path(&dir.join(name))
    }
}

/// Load every `*.hcl` file of `dir` as one configuration.
pub fn load(dir: &Path, vars: &VarInputs) -> Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::default();
    let config = load_into(dir, vars, &mut diags);
    let mut seen = HashSet::new();
    diags.items.retain(|d| {
        seen.insert((
            d.code,
            d.loc.source.name.clone(),
            d.loc.span.clone(),
            d.message.clone(),
        ))
    });
    // A vault key's variable never reaches a child process.
    for v in config.iter().flat_map(|c| c.vaults.values()) {
        if let crate::model::KeySource::Env(name) = &v.key {
            standby_provider_core::command::withhold_env(name);
        }
    }
    match config {
        Some(config) if !diags.has_errors() => Ok(Loaded {
            config,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

fn load_into(dir: &Path, inputs: &VarInputs, diags: &mut Diagnostics) -> Option<Config> {
    let files = match config_files(dir) {
        Ok(f) => f,
        Err(e) => {
            let src = Source::new(display_path(dir), "");
            diags.push(
                Diagnostic::error(
                    "standby::io",
                    Loc::new(&src, None),
                    format!(
                        "cannot read the configuration directory {}: {e}",
                        display_path(dir)
                    ),
                )
                .label("unreadable")
                .help("pass the configuration directory with -C DIR or as an argument"),
            );
            return None;
        }
    };
    if files.is_empty() {
        let src = Source::new(display_path(dir), "");
        diags.push(
            Diagnostic::error(
                "standby::no_configuration",
                Loc::new(&src, None),
                format!("no configuration files (*.hcl) in {}", display_path(dir)),
            )
            .label("empty")
            .help("run in the configuration directory, or pass it with -C DIR"),
        );
        return None;
    }
    let mut sources = Vec::new();
    let mut hasher = blake3::Hasher::new();
    for f in &files {
        let name = shown_name(dir, f);
        match std::fs::read_to_string(f) {
            Ok(text) => {
                let file_name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                // The text as read (no BOM, LF endings): a checkout with
                // CRLF endings has the same configuration hash.
                let source = Source::new(name, text);
                hasher.update(file_name.as_bytes());
                hasher.update(&[0]);
                hasher.update(source.text.as_bytes());
                hasher.update(&[0]);
                sources.push(source);
            }
            Err(e) => diags.push(Diagnostic::unreadable(
                &name,
                format!("cannot read {name}: {e}"),
                "configuration files must be readable UTF-8 text",
            )),
        }
    }
    let started = std::time::Instant::now();
    let bodies: Vec<(Arc<Source>, hcl_edit::structure::Body)> = sources
        .iter()
        .filter_map(|s| parse::parse(s, diags).map(|b| (s.clone(), b)))
        .collect();
    let parsed_all = bodies.len() == files.len();
    tracing::debug!(elapsed = ?started.elapsed(), files = files.len(), "parsed");

    // Sort the top-level blocks by kind, catching unknown blocks and names seen twice.
    let mut tops: HashMap<&str, Vec<Top>> = HashMap::new();
    let mut locals = Locals::default();
    let mut local_locs: HashMap<String, Loc> = HashMap::new();
    let mut names: HashMap<&str, HashMap<String, Loc>> = HashMap::new();
    // Kinds with a block whose name is missing or invalid (already reported).
    let mut unnamed: HashSet<Kind> = HashSet::new();
    let mut backend_blocks = Vec::new();
    let mut moved_blocks = Vec::new();
    for (source, body) in &bodies {
        for a in body.attributes() {
            diags.push(
                Diagnostic::error("standby::unexpected_attribute", Loc::new(source, a.key.span()), format!("attribute `{}` outside any block", a.key.as_str()))
                    .label("top-level attribute")
                    .help("put it inside a block, or in `locals { ... }`; variable values go in standby.vars.hcl"),
            );
        }
        for b in body.blocks() {
            let ident = b.ident.as_str();
            let Some(&kind) = TOP_BLOCKS.iter().find(|k| **k == ident) else {
                let help = match diag::did_you_mean(ident, TOP_BLOCKS) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("top-level blocks are: {}", TOP_BLOCKS.join(", ")),
                };
                diags.push(
                    Diagnostic::error(
                        "standby::unknown_block",
                        Loc::new(source, b.ident.span()),
                        format!("unknown block type `{ident}`"),
                    )
                    .label("not a block standby knows")
                    .help(help),
                );
                continue;
            };
            if kind == "backend" {
                backend_blocks.push((source.clone(), b));
                continue;
            }
            if kind == "moved" {
                moved_blocks.push((source.clone(), b));
                continue;
            }
            if kind == "locals" {
                if !b.labels.is_empty() {
                    diags.push(
                        Diagnostic::error(
                            "standby::wrong_labels",
                            reader::header(source, b),
                            "a `locals` block takes no name",
                        )
                        .label("unexpected name")
                        .help("write locals { NAME = VALUE }"),
                    );
                }
                for blk in b.body.blocks() {
                    diags.push(
                        Diagnostic::error(
                            "standby::unknown_block",
                            Loc::new(source, blk.ident.span()),
                            format!("unknown block `{}` in locals", blk.ident.as_str()),
                        )
                        .label("not expected here")
                        .help("locals hold only `NAME = VALUE` lines"),
                    );
                }
                for a in b.body.attributes() {
                    let name = a.key.as_str().to_string();
                    let loc = Loc::new(source, a.key.span());
                    if let Some(first) = local_locs.get(&name) {
                        diags.push(
                            Diagnostic::error(
                                "standby::duplicate_name",
                                loc,
                                format!("local {name:?} is declared twice"),
                            )
                            .label("second declaration")
                            .help(format!(
                                "the first is at {}; rename one of them",
                                first.position()
                            )),
                        );
                        continue;
                    }
                    local_locs.insert(name.clone(), loc);
                    locals.order.push(name.clone());
                    locals.defs.insert(
                        name,
                        LocalDef {
                            expr: a.value.clone(),
                            source: source.clone(),
                        },
                    );
                }
                continue;
            }
            let Some((name, label)) = reader::one_label(source, b, diags) else {
                if let Some(k) = Kind::from_block_name(kind) {
                    unnamed.insert(k);
                }
                continue;
            };
            let seen = names.entry(kind).or_default();
            if let Some(first) = seen.get(&name) {
                diags.push(
                    Diagnostic::error(
                        "standby::duplicate_name",
                        label,
                        format!("{kind} {name:?} is declared twice"),
                    )
                    .label("second declaration")
                    .help(format!(
                        "the first is at {}; names must be unique per block type",
                        first.position()
                    )),
                );
                continue;
            }
            seen.insert(name.clone(), label.clone());
            tops.entry(kind).or_default().push(Top {
                block: b,
                source: source.clone(),
                name,
                label,
            });
        }
    }
    let empty = Vec::new();
    let of = |k: &str| tops.get(k).unwrap_or(&empty);

    // Variables.
    let mut decls = Vec::new();
    let empty = eval::Empty::default();
    for t in of("variable") {
        // Variable blocks may not refer to anything: read them in an empty scope.
        let scope = empty.scope(&t.source);
        let r = reader::Reader::new(
            scope,
            t.block,
            &["default", "type", "description", "sensitive"],
            &[],
            diags,
        );
        let ty = match r.expr("type") {
            Some(e) => vars::parse_type(e, &t.source, diags).unwrap_or(value::Type::Any),
            None => value::Type::Any,
        };
        // Terraform's parsing mode: literal without a type or for a
        // primitive one, HCL for `any` and the rest.
        let literal = r.expr("type").is_none()
            || matches!(
                ty,
                value::Type::String | value::Type::Number | value::Type::Bool
            );
        let text = |name: &str, diags: &mut Diagnostics| match r.expr(name) {
            Some(hcl_edit::expr::Expression::String(s)) => Some(s.to_string()),
            Some(e) => {
                diags.push(
                    Diagnostic::error(
                        "standby::wrong_type",
                        Loc::new(&t.source, e.span()),
                        format!("`{name}` of a variable must be a literal string"),
                    )
                    .label("not a literal string")
                    .help("write it in quotes without references"),
                );
                None
            }
            None => None,
        };
        let description = text("description", diags);
        let sensitive = match r.expr("sensitive") {
            Some(hcl_edit::expr::Expression::Bool(b)) => **b,
            Some(e) => {
                diags.push(
                    Diagnostic::error(
                        "standby::wrong_type",
                        Loc::new(&t.source, e.span()),
                        "`sensitive` must be true or false",
                    )
                    .label("not a bool")
                    .help("write sensitive = true"),
                );
                false
            }
            None => false,
        };
        decls.push(vars::Declared {
            name: t.name.clone(),
            label: t.label.clone(),
            ty,
            default: r.expr("default").map(|e| (e.clone(), t.source.clone())),
            description,
            sensitive,
            literal,
        });
    }
    let (mut var_values, variables) = vars::resolve(&decls, dir, inputs, diags);
    for name in broken_variables(&sources, &bodies) {
        var_values.entry(name).or_insert(eval::VarValue {
            value: value::Value::Null,
            sensitive: false,
            known: false,
            ty: value::Type::Any,
        });
    }
    for (name, v) in &variables {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(v.value.to_string().as_bytes());
        hasher.update(&[0]);
    }

    // Declared names, so references resolve by lookup.
    let mut objects = Objects {
        broken: broken_blocks(&sources, &bodies),
        unnamed,
        ..Objects::default()
    };
    for kind in Kind::ALL {
        let entry = objects.names.entry(kind).or_default();
        for t in of(kind.block_name()) {
            entry.insert(t.name.clone(), repeated(t.block));
        }
    }
    for kind in ["vault", "site", "policy", "recovery_plan"] {
        for t in of(kind) {
            for attr in ["for_each", "count"] {
                if let Some(a) = t.block.body.get_attribute(attr) {
                    diags.push(
                        Diagnostic::error(
                            "standby::unknown_attribute",
                            Loc::new(&t.source, a.key.span()),
                            format!("`{attr}` is not supported on {kind} blocks"),
                        )
                        .label("not supported here")
                        .help(format!("only machine and protection blocks take {attr}")),
                    );
                }
            }
        }
    }
    let ctx = Ctx {
        vars: &var_values,
        locals: &locals,
        objects: &objects,
    };
    for name in &locals.order {
        // Evaluate every local once so errors in unused locals are reported too.
        let src = &locals.defs[name].source;
        let scope = eval::Scope::top(src, &var_values, &locals, &objects);
        let mut out = eval::Out {
            diags: &mut *diags,
            sensitive: false,
        };
        let local =
            hcl_edit::expr::Expression::Traversal(Box::new(hcl_edit::expr::Traversal::new(
                hcl_edit::expr::Expression::Variable(hcl_edit::Decorated::new(
                    hcl_edit::Ident::new("local"),
                )),
                vec![hcl_edit::Decorated::new(
                    hcl_edit::expr::TraversalOperator::GetAttr(hcl_edit::Decorated::new(
                        hcl_edit::Ident::new(name.as_str()),
                    )),
                )],
            )));
        let _ = scope.eval(&local, &mut out);
    }

    tracing::debug!(elapsed = ?started.elapsed(), "variables and locals resolved");
    let mut config = Config {
        root: dir.to_path_buf(),
        variables,
        backend: backend::lower(&backend_blocks, diags),
        ..Config::default()
    };
    for t in of("vault") {
        if let Some(v) = lower::vault(&ctx, t, diags) {
            config.vaults.insert(v.addr.clone(), v);
        }
    }
    let mut roots = lower::SiteRoots::new();
    for t in of("site") {
        if let Some(s) = lower::site(&ctx, t, &mut roots, diags) {
            config.sites.insert(s.addr.clone(), s);
        }
    }
    checks::site_roots(dir, &roots, diags);
    for t in of("policy") {
        if let Some(p) = lower::policy(&ctx, t, diags) {
            config.policies.insert(p.addr.clone(), p);
        }
    }
    let mut machine_keys: lower::MachineKeys = HashMap::new();
    let mut machine_instances = Vec::new();
    for t in of("machine") {
        let inst = lower::instances(&ctx, t, &machine_keys, diags);
        if repeated(t.block) {
            let keys = inst.as_ref().map(|i| {
                i.iter()
                    .filter(|(k, _)| k.is_some())
                    .map(|(k, _)| lower::addr(Kind::Machine, t, k))
                    .collect()
            });
            machine_keys.insert(t.name.clone(), keys);
        }
        machine_instances.push((t, inst));
    }
    for (t, inst) in &machine_instances {
        for (key, each) in inst.iter().flatten() {
            if let Some(m) = lower::machine(&ctx, t, key, each, &config.sites, diags) {
                config.machines.insert(m.addr.clone(), m);
            }
        }
    }
    // A file that did not parse may hold the protections: judging coverage
    // without it would add bogus "no protection covers it" errors.
    let mut seen = lower::Protections {
        coverage_unknown: !parsed_all,
        ..Default::default()
    };
    for t in of("protection") {
        let Some(inst) = lower::instances(&ctx, t, &machine_keys, diags) else {
            seen.coverage_unknown = true;
            continue;
        };
        for (key, each) in &inst {
            if let Some(p) = lower::protection(
                &ctx,
                t,
                key,
                each,
                &config.machines,
                &machine_keys,
                &mut seen,
                diags,
            ) {
                config.protections.insert(p.addr.clone(), p);
            }
        }
    }

    checks::failover_targets(dir, &config, &seen.by_machine, diags);
    qemu::guest_checks_target(&config, &seen.by_machine, diags);
    for t in of("recovery_plan") {
        if let Some(p) = lower::recovery_plan(&ctx, t, &machine_keys, &seen, &config, diags) {
            config.recovery_plans.insert(p.addr.clone(), p);
        }
    }
    // Names declared by a block, lowered or not: a `moved` block's `to` whose
    // block failed its own check is already reported there.
    let declared: HashSet<(Kind, String)> = of("protection")
        .iter()
        .map(|t| (Kind::Protection, t.name.clone()))
        .chain(
            of("machine")
                .iter()
                .map(|t| (Kind::Machine, t.name.clone())),
        )
        .collect();
    config.moves = moved::lower(&moved_blocks, &config, &declared, diags);
    config.source_hash = hasher.finalize().to_hex().to_string();
    tracing::debug!(elapsed = ?started.elapsed(), "lowered");
    parsed_all.then_some(config)
}

/// Whether a block makes several instances (`for_each` or `count`).
fn repeated(b: &hcl_edit::structure::Block) -> bool {
    b.body.has_attribute("for_each") || b.body.has_attribute("count")
}

/// `KIND "NAME"` headers found by a plain scan of files that failed to parse.
fn scan_headers(
    sources: &[Arc<Source>],
    bodies: &[(Arc<Source>, hcl_edit::structure::Body)],
) -> Vec<(String, String)> {
    let parsed: HashSet<&str> = bodies.iter().map(|(s, _)| s.name.as_str()).collect();
    let mut found = Vec::new();
    for s in sources.iter().filter(|s| !parsed.contains(s.name.as_str())) {
        for line in s.text.lines() {
            let mut words = line.split_whitespace();
            if let (Some(kind), Some(name)) = (words.next(), words.next())
                && let Some(name) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"'))
            {
                found.push((kind.to_string(), name.to_string()));
            }
        }
    }
    found
}

fn broken_blocks(
    sources: &[Arc<Source>],
    bodies: &[(Arc<Source>, hcl_edit::structure::Body)],
) -> HashSet<(Kind, String)> {
    scan_headers(sources, bodies)
        .into_iter()
        .filter_map(|(k, n)| Kind::from_block_name(&k).map(|k| (k, n)))
        .collect()
}

fn broken_variables(
    sources: &[Arc<Source>],
    bodies: &[(Arc<Source>, hcl_edit::structure::Body)],
) -> Vec<String> {
    scan_headers(sources, bodies)
        .into_iter()
        .filter(|(k, _)| k == "variable")
        .map(|(_, n)| n)
        .collect()
}

/// The sensitive attribute names recorded for an object, for callers that
/// want one view across kinds.
pub fn sensitive_of(config: &Config, addr: &Address) -> BTreeSet<String> {
    match addr.kind {
        Kind::Vault => config.vaults.get(addr).map(|v| v.sensitive.clone()),
        Kind::Site => config.sites.get(addr).map(|v| v.sensitive.clone()),
        Kind::Machine => config.machines.get(addr).map(|v| v.sensitive.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
