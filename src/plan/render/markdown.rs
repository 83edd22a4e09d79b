//! The pull-request view: summary, a table of changes, the diff in a
//! ```diff block, and review notes as a list.

use super::{key_width, plan_summary_line, shown};
use crate::plan::{Action, Plan};
use std::fmt::Write as _;

/// Render as a Markdown comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::from("### standby plan\n\n");
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "#### {}\n", super::OUTSIDE);
        for d in &plan.drift {
            // Drop the leading `~ `: a list item needs no symbol.
            let line = d.to_string();
            let _ = writeln!(out, "- {}", line.strip_prefix("~ ").unwrap_or(&line));
        }
        let _ = writeln!(out, "\n{}\n", super::OUTSIDE_HINT);
    }
    let _ = writeln!(out, "**{}**", plan_summary_line(plan));
    if !plan.changes.is_empty() {
        out.push_str("\n| Action | Object | Changed attributes |\n|---|---|---|\n");
        for c in &plan.changes {
            let attrs = match &c.action {
                Action::Create | Action::Delete => String::new(),
                Action::Move => match &c.moved_from {
                    Some(from) => format!("moved from `{}`", cell(&from.to_string())),
                    None => String::new(),
                },
                Action::Update => names(c.attributes.iter().map(|a| a.name.as_str())),
                Action::Replace { forced_by } => format!(
                    "{} (forces replacement: {})",
                    names(c.attributes.iter().map(|a| a.name.as_str())),
                    names(forced_by.iter().map(String::as_str))
                ),
            };
            let _ = writeln!(
                out,
                "| `{}` {} | `{}` | {} |",
                c.action.symbol(),
                c.action.word(),
                cell(&c.address.to_string()),
                attrs
            );
        }
        out.push_str("\n```diff\n");
        for c in &plan.changes {
            // The first character is what GitHub colours: + green, - red.
            let head = match c.action {
                Action::Create => format!("+ {} (create)", c.address),
                Action::Delete => format!("- {} (destroy)", c.address),
                Action::Update => format!("~ {} (update in place)", c.address),
                Action::Replace { .. } => {
                    format!("~ {} (replace: destroy, then create)", c.address)
                }
                Action::Move => format!(
                    "  {} (moved to {})",
                    c.moved_from.as_ref().unwrap_or(&c.address),
                    c.address
                ),
            };
            let head = match (&c.moved_from, &c.action) {
                (Some(from), Action::Update | Action::Replace { .. }) => {
                    format!("{head} (moved from {from})")
                }
                _ => head,
            };
            let _ = writeln!(out, "{head}");
            let width = key_width(&c.attributes);
            for a in &c.attributes {
                let forces = if a.forces_replacement && matches!(c.action, Action::Replace { .. }) {
                    "  # forces replacement"
                } else {
                    ""
                };
                if let Some(b) = &a.before {
                    let _ = writeln!(out, "-     {:<width$} = {}{forces}", a.name, shown(a, b));
                }
                if let Some(v) = &a.after {
                    let _ = writeln!(out, "+     {:<width$} = {}{forces}", a.name, shown(a, v));
                }
            }
            out.push('\n');
        }
        // The last blank line would show inside the block.
        out.pop();
        out.push_str("```\n");
    }
    if !plan.site_changes.is_empty() {
        out.push_str("\n#### Recovery plans that change site\n\n```\n");
        out.push_str(crate::plan::site::render_text(&plan.site_changes).trim_start_matches('\n'));
        out.push_str("```\n");
    }
    if !plan.notes.is_empty() {
        out.push_str("\n#### Review notes\n\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- ⚠️ {}", n.message);
        }
    }
    out
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{}`", cell(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keep a value inside one table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
