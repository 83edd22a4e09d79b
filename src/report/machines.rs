//! Per-machine evidence of VMs (recovered to a `qemu` site): accelerator,
//! boot time to the guest agent, the checks with their output, the serial
//! console's last lines and SHA-256, and a screenshot (PNG, written beside
//! the report and embedded in report.md).

use crate::recovery::run::RunResult;
use crate::recovery::timeline::{EntryKind, Outcome};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    pub machine: String,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub accelerator_reason: String,
    /// What the VM ran with (0: unknown).
    pub memory_mib: u64,
    pub cpus: u32,
    /// Seconds from starting the VM to the guest agent answering.
    pub boot_seconds: Option<f64>,
    pub checks: Vec<CheckReport>,
    /// At most 20 lines, the last of the console when checks finished.
    pub console_tail: Vec<String>,
    /// SHA-256 (hex) of the whole console log then.
    pub console_sha256: String,
    /// The screenshot's file name beside the report (`screenshot-NAME.png`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot_error: Option<String>,
    #[serde(skip)]
    pub png: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub passed: bool,
    /// Exit code and output, or why it failed.
    pub output: String,
}

/// The machines of `run` that a VM provider reported on.
pub fn of_run(run: &RunResult) -> Vec<MachineReport> {
    let entries = run.timeline.entries();
    run.evidence
        .iter()
        .map(|(machine, ev)| {
            let checks = entries
                .iter()
                .filter(|e| e.kind == EntryKind::Check && e.machine.as_deref() == Some(machine))
                .map(|e| CheckReport {
                    name: e.name.clone(),
                    passed: e.outcome == Outcome::Passed,
                    output: e.detail.clone(),
                })
                .collect();
            let png = ev.screenshot_png.clone();
            MachineReport {
                machine: machine.clone(),
                accelerator: ev.accelerator.clone(),
                accelerator_reason: ev.accelerator_reason.clone(),
                memory_mib: ev.memory_mib,
                cpus: ev.cpus,
                boot_seconds: ev.boot_seconds,
                checks,
                console_tail: ev.console_tail.clone(),
                console_sha256: ev.console_sha256.clone(),
                screenshot: png.as_ref().map(|_| screenshot_name(machine)),
                screenshot_sha256: png.as_deref().map(standby_provider_qemu::site::sha256_hex),
                screenshot_error: ev.screenshot_error.clone(),
                png,
            }
        })
        .collect()
}

/// `screenshot-db.png` for `machine.db` (file-name safe).
pub fn screenshot_name(machine: &str) -> String {
    let m = machine.strip_prefix("machine.").unwrap_or(machine);
    let safe: String = m
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("screenshot-{safe}.png")
}

/// The Markdown section: a summary table, then per machine its checks'
/// output, its console and its screenshot (`embed`: a data URI, so
/// report.md stands alone; else a link to the file beside it).
pub fn markdown(machines: &[MachineReport], embed: bool) -> String {
    if machines.is_empty() {
        return String::new();
    }
    let mut o = String::from(
        "## Machines\n\n| machine | accelerator | memory, CPUs | boot to guest agent | console SHA-256 |\n|---|---|---|---|---|\n",
    );
    for m in machines {
        o.push_str(&format!(
            "| {} | {} | {} MiB, {} | {} | `{}` |\n",
            m.machine,
            m.accelerator.to_uppercase(),
            m.memory_mib,
            m.cpus,
            m.boot_seconds
                .map_or("-".to_string(), |s| format!("{s:.1}s")),
            m.console_sha256
        ));
    }
    o.push('\n');
    for m in machines {
        o.push_str(&format!("### {}\n\n", m.machine));
        for c in &m.checks {
            o.push_str(&format!(
                "Check `{}`: {}\n\n```\n{}\n```\n\n",
                c.name,
                if c.passed { "passed" } else { "**FAILED**" },
                c.output.replace("```", "'''")
            ));
        }
        o.push_str(&format!(
            "Console, last {} lines:\n\n```\n{}\n```\n\n",
            m.console_tail.len(),
            m.console_tail.join("\n").replace("```", "'''")
        ));
        match (&m.png, &m.screenshot_error) {
            (Some(png), _) if embed => o.push_str(&format!(
                "![screenshot of {}](data:image/png;base64,{})\n\n",
                m.machine,
                base64(png)
            )),
            (Some(_), _) => o.push_str(&format!(
                "![screenshot of {}]({})\n\n",
                m.machine,
                screenshot_name(&m.machine)
            )),
            (None, Some(e)) => o.push_str(&format!("No screenshot: {e}\n\n")),
            (None, None) => {}
        }
    }
    o
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(super::base64(b"a"), "YQ==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::base64(b"41\n41\n"), "NDEKNDEK");
    }

    #[test]
    fn screenshot_names_are_file_safe() {
        assert_eq!(super::screenshot_name("machine.db"), "screenshot-db.png");
        assert_eq!(
            super::screenshot_name("machine.web[\"a\"]"),
            "screenshot-web__a__.png"
        );
    }
}
