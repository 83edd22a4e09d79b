//! Views of a [`Plan`]: text for terminals, Markdown for pull requests, JSON
//! for machines (`schema/plan.schema.json`). Renderers only read the plan.

mod markdown;
mod text;

pub use markdown::markdown;
pub use text::text;

use super::{AttributeChange, Plan, Summary};
use serde_json::Value;

/// The JSON document (also the saved plan file format), pretty, newline-terminated.
pub fn json(plan: &Plan) -> String {
    // Serializing plain data with string keys cannot fail.
    let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
    s.push('\n');
    s
}

/// The summary line, exactly as terraform words it.
pub fn summary_line(s: &Summary) -> String {
    if s.add + s.change + s.destroy + s.moved == 0 {
        NO_CHANGES.to_string()
    } else {
        format!(
            "Plan: {}{} to add, {} to change, {} to destroy.",
            moved(s),
            s.add,
            s.change,
            s.destroy
        )
    }
}

/// `1 to move, ` when objects are renamed (nothing otherwise).
fn moved(s: &Summary) -> String {
    if s.moved == 0 {
        String::new()
    } else {
        format!("{} to move, ", s.moved)
    }
}

/// The heading of the drift section, before the diff in every view.
pub const OUTSIDE: &str = "Changes outside standby";

/// What the drift section says after its list.
pub const OUTSIDE_HINT: &str = "These facts changed since standby last recorded them; they are not changes this plan makes. `standby apply --refresh-only` records them in state.";
/// The summary line, counting recovery plans that change site too.
pub fn plan_summary_line(plan: &crate::plan::Plan) -> String {
    let n = plan.site_changes.len();
    if n == 0 {
        return summary_line(&plan.summary());
    }
    let s = plan.summary();
    format!(
        "Plan: {}{} to add, {} to change, {} to destroy, {} to change site.",
        moved(&s),
        s.add,
        s.change,
        s.destroy,
        crate::human::count(n, "recovery plan")
    )
}

pub const NO_CHANGES: &str = "No changes. The DR topology matches the configuration.";

/// A value as shown to humans: `(sensitive)` for markers, strings quoted.
fn shown(a: &AttributeChange, v: &Value) -> String {
    if a.sensitive || super::attributes::is_marker(v) {
        "(sensitive)".to_string()
    } else {
        human(v)
    }
}

/// JSON with a space after each `,` and `:`, on one line.
pub(super) fn human(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(human).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), human(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// `# X will be created` and friends.
fn headline(c: &super::Change) -> String {
    let what = match &c.action {
        super::Action::Create => "will be created",
        super::Action::Update => "will be updated in place",
        super::Action::Replace { .. } => "must be replaced",
        super::Action::Delete => "will be destroyed",
        super::Action::Move => {
            let from = c.moved_from.as_ref().unwrap_or(&c.address);
            return format!("{from} has moved to {}", c.address);
        }
    };
    match &c.moved_from {
        Some(from) => format!("{} {what} (moved from {from})", c.address),
        None => format!("{} {what}", c.address),
    }
}

/// Width of the widest attribute name, to align `=`.
fn key_width(attrs: &[AttributeChange]) -> usize {
    attrs.iter().map(|a| a.name.len()).max().unwrap_or(0)
}
