//! Saved plan files (`standby plan --out FILE`): the plan's JSON document,
//! written atomically, and the check `apply` makes before using one.

use super::{FORMAT_VERSION, Plan, render};
use crate::state::StateDoc;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A plan read back from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedPlan {
    pub plan: Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("cannot read plan file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write plan file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plan file {path} is not a standby plan: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "plan file {path} has format version {found}; this standby reads version {FORMAT_VERSION} (make the plan again with this version)"
    )]
    Version { path: PathBuf, found: u64 },
}

impl SavedPlan {
    /// Write `plan` to `path` atomically (temp file, fsync, rename).
    pub fn save(plan: &Plan, path: &Path) -> Result<(), SavedPlanError> {
        let err = |source| SavedPlanError::Write {
            path: path.to_path_buf(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(render::json(plan).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| SavedPlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |reason: String| SavedPlanError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(SavedPlanError::Version {
                    path: path.to_path_buf(),
                    found,
                });
            }
            None => return Err(malformed("it has no format_version".into())),
        }
        let plan = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
        Ok(SavedPlan { plan })
    }
}

/// Why a saved plan can no longer be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the saved plan is stale: {}; make a new plan", self.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
pub struct StalePlan {
    pub reasons: Vec<StaleReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleReason {
    #[error("the state's lineage differs (plan made against {planned}, state is {current})")]
    LineageDiffers {
        planned: uuid::Uuid,
        current: uuid::Uuid,
    },
    #[error("the state's serial moved from {from} to {to} since the plan was made")]
    SerialMoved { from: u64, to: u64 },
    #[error("the plan was made with no state, but a state now exists (serial {serial})")]
    StateCreated { serial: u64 },
    #[error("the plan was made against state serial {serial}, but there is no state now")]
    StateMissing { serial: u64 },
    #[error(
        "the configuration changed since the plan was made (hash {planned} then, {current} now)"
    )]
    ConfigChanged { planned: String, current: String },
}

/// Whether `saved` still applies to the current state and configuration.
pub fn ensure_applicable(
    saved: &SavedPlan,
    current_state: Option<&StateDoc>,
    current_source_hash: &str,
) -> Result<(), StalePlan> {
    let plan = &saved.plan;
    let mut reasons = Vec::new();
    match (plan.serial, current_state) {
        (None, None) => {}
        (None, Some(s)) => reasons.push(StaleReason::StateCreated { serial: s.serial }),
        (Some(serial), None) => reasons.push(StaleReason::StateMissing { serial }),
        (Some(serial), Some(s)) => {
            if s.lineage != plan.lineage {
                reasons.push(StaleReason::LineageDiffers {
                    planned: plan.lineage,
                    current: s.lineage,
                });
            } else if s.serial != serial {
                reasons.push(StaleReason::SerialMoved {
                    from: serial,
                    to: s.serial,
                });
            }
        }
    }
    if plan.source_hash != current_source_hash {
        reasons.push(StaleReason::ConfigChanged {
            planned: short(&plan.source_hash),
            current: short(current_source_hash),
        });
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(StalePlan { reasons })
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}
