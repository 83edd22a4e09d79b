//! The `backend` block: where the state is kept.
//!
//! ```hcl
//! backend {
//!   url = "az://tfstate/shop"
//! }
//! ```
//!
//! Commands that only need the state (`standby state ...`) read this block
//! without evaluating the rest of the configuration, so, as in Terraform, the
//! url must be a literal string; per-environment values go in
//! `--backend-config url=...`.

use super::diag::{Diagnostic, Diagnostics, Loc, Source};
use super::eval::Empty;
use super::reader::{self, Reader};
use crate::model::Backend;
use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::Block;
use std::path::Path;
use std::sync::Arc;

/// The one `backend` block among `blocks` (every top-level `backend` block
/// of the configuration, in file order), checked; `None` when there is none
/// or it has errors (reported in `diags`).
pub fn lower(blocks: &[(Arc<Source>, &Block)], diags: &mut Diagnostics) -> Option<Backend> {
    let (first_source, first) = blocks.first()?;
    for (source, b) in &blocks[1..] {
        diags.push(
            Diagnostic::error(
                "standby::duplicate_block",
                reader::header(source, b),
                "a second `backend` block",
            )
            .label("second backend")
            .help(format!(
                "the state is kept in one place: keep one backend block (the first is at {})",
                reader::header(first_source, first).position()
            )),
        );
    }
    if !first.labels.is_empty() {
        diags.push(
            Diagnostic::error(
                "standby::wrong_labels",
                reader::header(first_source, first),
                "a `backend` block takes no name",
            )
            .label("unexpected name")
            .help("write backend { url = \"az://CONTAINER/PREFIX\" }"),
        );
    }
    // Nothing in a backend block may refer to anything: read it in an empty scope.
    let empty = Empty::default();
    let scope = empty.scope(first_source);
    let r = Reader::new(scope, first, &["url"], &[], diags);
    let Some(expr) = r.expr("url") else {
        r.missing("url", diags);
        return None;
    };
    let loc = Loc::new(first_source, expr.span());
    let Expression::String(url) = expr else {
        diags.push(
            Diagnostic::error(
                "standby::not_constant",
                loc,
                "the backend url must be a literal string",
            )
            .label("not a literal string")
            .help("the state is found before variables are evaluated: write the url in quotes, or pass it with --backend-config url=VALUE"),
        );
        return None;
    };
    let url = url.to_string();
    if let Err(e) = crate::store::check_url(&url) {
        let reason = match e {
            crate::store::StoreError::BadUrl { reason, .. } => reason,
            other => other.to_string(),
        };
        diags.push(
            Diagnostic::error(
                "standby::bad_url",
                loc,
                format!("invalid backend url {url:?}: {reason}"),
            )
            .label("not a state location")
            .help("use az://CONTAINER/PREFIX, s3://BUCKET/PREFIX or file://DIR"),
        );
        return None;
    }
    Some(Backend { url })
}

/// Read only the `backend` block of the configuration in `dir`: parse every
/// file and check that block, evaluating nothing else. `Ok(None)` when the
/// configuration has no backend block, or `dir` holds no configuration.
pub fn load(dir: &Path) -> Result<Option<Backend>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let files = match super::config_files(dir) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let mut sources = Vec::new();
    for f in &files {
        let name = super::shown_name(dir, f);
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push(Source::new(name, text)),
            Err(e) => diags.push(Diagnostic::unreadable(
                &name,
                format!("cannot read {name}: {e}"),
                "configuration files must be readable UTF-8 text",
            )),
        }
    }
    let bodies: Vec<_> = sources
        .iter()
        .filter_map(|s| super::parse::parse(s, &mut diags).map(|b| (s.clone(), b)))
        .collect();
    let blocks: Vec<(Arc<Source>, &Block)> = bodies
        .iter()
        .flat_map(|(s, body)| {
            body.blocks()
                .filter(|b| b.ident.as_str() == "backend")
                .map(move |b| (s.clone(), b))
        })
        .collect();
    let backend = lower(&blocks, &mut diags);
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(backend)
    }
}
