//! The exec-provider protocol, version 1: one JSON request on the provider
//! command's stdin, one JSON reply on its stdout
//! (`schema/exec-provider.schema.json`).

use serde::{Deserialize, Serialize};
use standby_provider_core::{CommandCheck, DiskSpec, MachineSpec, Run};

pub const PROTOCOL: u32 = 1;

/// A machine by name (`disk_target`, `stop`) or in full (`start`, `check`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MachineRef<'a> {
    Name(&'a str),
    Spec(&'a MachineSpec),
}

#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub protocol: u32,
    pub action: &'static str,
    pub run: &'a Run,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<&'a DiskSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'a CommandCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
}

impl<'a> Request<'a> {
    pub fn new(action: &'static str, run: &'a Run) -> Self {
        Request {
            protocol: PROTOCOL,
            action,
            run,
            machine: None,
            disk: None,
            check: None,
            timeout_seconds: None,
        }
    }
}

/// `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
#[derive(Debug, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub passed: Option<bool>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}
