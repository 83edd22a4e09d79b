//! The terminal view: terraform-like `+`, `~`, `-/+`, `-` blocks with
//! per-attribute `old -> new`, the summary line, then the review notes.

use super::{headline, human, key_width, plan_summary_line, shown};
use crate::plan::{Action, Plan};
use owo_colors::OwoColorize;
use serde_json::Value;
use std::fmt::Write as _;

/// Render for a terminal; colours only when `color`.
pub fn text(plan: &Plan, color: bool) -> String {
    let paint = |sym: &str| -> String {
        if !color {
            return sym.to_string();
        }
        match sym {
            "+" => sym.green().to_string(),
            "~" => sym.yellow().to_string(),
            _ => sym.red().to_string(),
        }
    };
    let mut out = String::new();
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "{}:\n", super::OUTSIDE);
        for d in &plan.drift {
            let _ = writeln!(out, "  {d}");
        }
        let _ = writeln!(out, "\n{}\n", super::OUTSIDE_HINT);
    }
    if plan.has_changes() {
        out.push_str("Standby will perform the following actions:\n");
    }
    for c in &plan.changes {
        let sym = c.action.symbol();
        let _ = writeln!(out, "\n  # {}", headline(c));
        if c.action == Action::Move {
            continue;
        }
        let _ = writeln!(out, "{:>3} {} {{", paint(sym), c.address);
        let width = key_width(&c.attributes);
        for a in &c.attributes {
            if let (Some(Value::Array(b)), Some(Value::Array(v)), false) =
                (&a.before, &a.after, a.sensitive)
            {
                list_change(&mut out, &paint, &a.name, width, b, v);
                continue;
            }
            let (s, value) = match (&a.before, &a.after) {
                (None, Some(v)) => ("+", shown(a, v)),
                (Some(v), None) => ("-", shown(a, v)),
                (Some(b), Some(v)) => ("~", format!("{} -> {}", shown(a, b), shown(a, v))),
                (None, None) => continue,
            };
            let forces = if a.forces_replacement && matches!(c.action, Action::Replace { .. }) {
                " # forces replacement"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "      {} {:<width$} = {value}{forces}",
                paint(s),
                a.name
            );
        }
        out.push_str("    }\n");
    }
    if plan.has_changes() {
        out.push('\n');
    }
    out.push_str(&plan_summary_line(plan));
    out.push('\n');
    if !plan.site_changes.is_empty() {
        out.push_str("\nRecovery plans that change site:\n");
        out.push_str(&crate::plan::site::render_text(&plan.site_changes));
    }
    if !plan.notes.is_empty() {
        out.push_str("\nReview notes:\n");
        for n in &plan.notes {
            let mark = if color {
                "!".yellow().bold().to_string()
            } else {
                "!".to_string()
            };
            let _ = writeln!(out, "  {mark} {}", n.message);
        }
    }
    out
}

/// A changed list, one element a line, terraform style: kept elements plain,
/// removed ones `-`, added ones `+`.
fn list_change(
    out: &mut String,
    paint: &dyn Fn(&str) -> String,
    name: &str,
    width: usize,
    before: &[Value],
    after: &[Value],
) {
    let _ = writeln!(out, "      {} {name:<width$} = [", paint("~"));
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, before, after) {
        for change in op.iter_changes(before, after) {
            let sym = match change.tag() {
                similar::ChangeTag::Equal => " ".to_string(),
                similar::ChangeTag::Delete => paint("-"),
                similar::ChangeTag::Insert => paint("+"),
            };
            let _ = writeln!(out, "          {sym} {},", human(&change.value()));
        }
    }
    out.push_str("        ]\n");
}
