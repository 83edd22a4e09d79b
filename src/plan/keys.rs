//! The review note on a vault key change. A vault's data stays sealed with
//! the key it was created with: pointing `key_file` (or `key_env`) elsewhere
//! changes nothing in the vault, so unless the same key is there, every
//! command after the apply fails to open it. A reviewer must see that.

use super::{Action, Change, NoteKind, ReviewNote};
use crate::model::Kind;
use serde_json::Value;

/// One note per vault whose key source changes (`key_file` or `key_env`
/// added, removed or changed). Never names the key, only where it is kept.
pub(super) fn notes(changes: &[Change]) -> Vec<ReviewNote> {
    let mut out = Vec::new();
    for c in changes {
        if c.kind != Kind::Vault || c.action != Action::Update {
            continue;
        }
        let moved: Vec<String> = c
            .attributes
            .iter()
            .filter(|a| a.name == "key_file" || a.name == "key_env")
            .filter(|a| a.before.is_some() || a.after.is_some())
            .map(|a| format!("{} {} -> {}", a.name, show(&a.before), show(&a.after)))
            .collect();
        if moved.is_empty() {
            continue;
        }
        out.push(ReviewNote {
            subject: c.address.clone(),
            kind: NoteKind::KeyChanged,
            message: format!(
                "{}: the vault key is read from elsewhere ({}); the vault stays sealed with its existing key, so put that same key there before applying (copy the key file), or every command will fail to open the vault",
                c.address,
                moved.join(", ")
            ),
        });
    }
    out
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}
