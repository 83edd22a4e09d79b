//! `moved` blocks, as Terraform's: a protection or machine (or one
//! `for_each` instance) renamed in the configuration keeps its recorded
//! state and its recovery points.
//!
//! ```hcl
//! moved {
//!   from = protection.web
//!   to   = protection.webserver
//! }
//! ```
//!
//! `from` and `to` are addresses, not expressions: `from` names an object
//! that no longer exists, so nothing is evaluated. Both must be the same
//! kind, `protection` or `machine`; `to` must be in the configuration.

use super::diag::{Diagnostic, Diagnostics, Loc, Source};
use super::eval::Empty;
use super::reader::{self, Reader};
use crate::model::{Address, Config, Kind, Move};
use hcl_edit::Span;
use hcl_edit::structure::Block;
use std::collections::HashSet;
use std::sync::Arc;

/// Every `moved` block, checked, in file order; blocks with errors are
/// reported in `diags` and left out. `declared` holds the (kind, name) of
/// every protection and machine block, lowered or not: when the
/// configuration has errors, a `to` whose block is declared but failed its
/// own check is not reported again as missing.
pub fn lower(
    blocks: &[(Arc<Source>, &Block)],
    config: &Config,
    declared: &HashSet<(Kind, String)>,
    diags: &mut Diagnostics,
) -> Vec<Move> {
    let mut out: Vec<Move> = Vec::new();
    for (source, b) in blocks {
        if !b.labels.is_empty() {
            diags.push(
                Diagnostic::error(
                    "standby::wrong_labels",
                    reader::header(source, b),
                    "a `moved` block takes no name",
                )
                .label("unexpected name")
                .help("write moved { from = protection.OLD  to = protection.NEW }"),
            );
            continue;
        }
        let empty = Empty::default();
        let r = Reader::new(empty.scope(source), b, &["from", "to"], &[], diags);
        let (Some(from), Some(to)) = (
            address(&r, source, "from", diags),
            address(&r, source, "to", diags),
        ) else {
            continue;
        };
        let ((from, from_loc), (to, to_loc)) = (from, to);
        if from.kind != to.kind {
            diags.push(
                Diagnostic::error("standby::invalid_move", to_loc, format!("cannot move a {} to a {}", from.kind, to.kind))
                    .label("another kind")
                    .help("a moved block renames an object within its kind: protection to protection, machine to machine"),
            );
            continue;
        }
        if from == to {
            diags.push(
                Diagnostic::error(
                    "standby::invalid_move",
                    to_loc,
                    format!("{from} is moved to itself"),
                )
                .label("same address")
                .help("remove this moved block"),
            );
            continue;
        }
        let exists = match to.kind {
            Kind::Protection => config.protections.contains_key(&to),
            _ => config.machines.contains_key(&to),
        };
        if !exists && diags.has_errors() && declared.contains(&(to.kind, to.name.clone())) {
            continue;
        }
        if !exists {
            diags.push(
                Diagnostic::error(
                    "standby::invalid_move",
                    to_loc,
                    format!("{to} is not in the configuration"),
                )
                .label("not declared")
                .help("`to` names the object's new address, declared in the configuration"),
            );
            continue;
        }
        let declared = match from.kind {
            Kind::Protection => config.protections.contains_key(&from),
            _ => config.machines.contains_key(&from),
        };
        if declared {
            diags.push(
                Diagnostic::error(
                    "standby::invalid_move",
                    from_loc,
                    format!("{from} is still in the configuration"),
                )
                .label("still declared")
                .help("a moved block's `from` is the old address: remove or rename the old block"),
            );
            continue;
        }
        if let Some(other) = out.iter().find(|m| m.from == from) {
            diags.push(
                Diagnostic::error(
                    "standby::invalid_move",
                    from_loc,
                    format!("{from} is moved twice (also to {})", other.to),
                )
                .label("moved again")
                .help("keep one moved block per old address"),
            );
            continue;
        }
        out.push(Move { from, to });
    }
    out
}

/// `from`/`to` as an address (`protection.web`, `machine.web["a"]`).
fn address(
    r: &Reader,
    source: &Arc<Source>,
    name: &str,
    diags: &mut Diagnostics,
) -> Option<(Address, Loc)> {
    let Some(expr) = r.expr(name) else {
        r.missing(name, diags);
        return None;
    };
    let span = expr.span()?;
    let loc = Loc::new(source, Some(span.clone()));
    let text: String = source.text.get(span)?.split_whitespace().collect();
    match text.parse::<Address>() {
        Ok(a) if matches!(a.kind, Kind::Protection | Kind::Machine) => Some((a, loc)),
        Ok(a) => {
            diags.push(
                Diagnostic::error("standby::invalid_move", loc, format!("{a} cannot be moved"))
                    .label("not a protection or machine")
                    .help("moved blocks rename protections and machines"),
            );
            None
        }
        Err(e) => {
            diags.push(
                Diagnostic::error("standby::invalid_move", loc, format!("`{name}` is not an address: {e}"))
                    .label("not an address")
                    .help("write an address without quotes: protection.NAME, machine.NAME or machine.NAME[\"KEY\"]"),
            );
            None
        }
    }
}
