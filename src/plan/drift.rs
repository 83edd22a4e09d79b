//! Drift: one fact about a recorded object that changed outside standby (a
//! point deleted by hand, a disk that grew, a vault that is gone), as the
//! plan carries it and the renderers show it before the diff. Reading the
//! facts is the CLI's refresh (`cli/refresh.rs`); this is only the value.

use crate::model::Address;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One fact that changed outside standby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    pub address: Address,
    /// The fact's name (`recovery_points`, `disk.system.size`, `present`, ...).
    pub fact: String,
    /// As standby last recorded it; absent when it was not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// As found now; absent when it is gone (a missing disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

impl Drift {
    /// Why it matters, in a few words, when the change says something plain.
    pub fn reason(&self) -> Option<&'static str> {
        let n = self.fact.as_str();
        match (&self.before, &self.after) {
            (_, Some(Value::Bool(false))) if n == "present" => Some("the vault is gone"),
            (Some(_), None) if n.starts_with("disk.") => Some("the disk is missing"),
            (Some(b), Some(a)) if n == "recovery_points" && a.as_u64() < b.as_u64() => {
                Some("points were deleted outside standby")
            }
            (Some(b), Some(a)) if n.starts_with("disk.") && a.as_u64() > b.as_u64() => {
                Some("the disk grew")
            }
            (Some(b), Some(a)) if n.starts_with("disk.") && a.as_u64() < b.as_u64() => {
                Some("the disk shrank")
            }
            _ => None,
        }
    }

    fn show(&self, v: &Option<Value>) -> String {
        match v {
            None => "absent".to_string(),
            Some(Value::Number(n))
                if self.fact.ends_with("bytes") || self.fact.ends_with(".size") =>
            {
                n.as_u64().map_or_else(|| n.to_string(), crate::human::size)
            }
            Some(Value::String(s)) if self.fact == "newest_point" => crate::human::time_str(s),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }
}

/// `~ protection.web: recovery_points 1 -> 0 (points were deleted outside standby)`.
impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "~ {}: {} {} -> {}",
            self.address,
            self.fact,
            self.show(&self.before),
            self.show(&self.after)
        )?;
        if let Some(why) = self.reason() {
            write!(f, " ({why})")?;
        }
        Ok(())
    }
}
