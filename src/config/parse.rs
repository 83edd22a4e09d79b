//! Parsing one source into an hcl-edit body, turning syntax errors into
//! diagnostics at the exact offset.

use super::diag::{Diagnostic, Diagnostics, Loc, Source};
use hcl_edit::structure::Body;
use std::sync::Arc;

pub fn parse(source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Body> {
    match hcl_edit::parser::parse_body(&source.text) {
        Ok(body) => Some(body),
        Err(e) => {
            let at = e.location().offset().min(source.text.len());
            let end = source.text[at..]
                .chars()
                .next()
                .map_or(at, |c| if c == '\n' { at } else { at + c.len_utf8() });
            diags.push(
                Diagnostic::error(
                    "standby::syntax",
                    Loc::new(source, Some(at..end)),
                    format!("syntax error: {}", e.message()),
                )
                .label("the parser stopped here")
                .help(if e.message().contains("redefined attribute") {
                    "an attribute is set once per block: remove one of the two"
                } else if e.message().contains("redefined object key") {
                    "a key appears once per object: remove one of the two"
                } else {
                    "check for a missing quote, brace, bracket or `=` just before this point"
                }),
            );
            None
        }
    }
}
