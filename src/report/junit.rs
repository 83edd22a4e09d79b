//! JUnit XML: one test case per check, step, boot and cleanup, so a CI
//! system lists each and names the one that failed.

use super::Report;
use crate::recovery::timeline::{EntryKind, Outcome};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

pub fn junit(r: &Report) -> String {
    let mut cases = Vec::new();
    for e in &r.timeline {
        let (class, name) = match e.kind {
            EntryKind::Check => (
                format!(
                    "{}.{}.{}",
                    r.plan,
                    e.group.as_deref().unwrap_or("-"),
                    e.machine.as_deref().unwrap_or("-")
                ),
                format!("check {}", e.name),
            ),
            EntryKind::Step => (
                format!("{}.{}", r.plan, e.group.as_deref().unwrap_or("-")),
                format!("step {}", e.name),
            ),
            EntryKind::Boot => (
                format!(
                    "{}.{}.{}",
                    r.plan,
                    e.group.as_deref().unwrap_or("-"),
                    e.name
                ),
                "boot".to_string(),
            ),
            EntryKind::Shutdown => (format!("{}.source", r.plan), format!("shutdown {}", e.name)),
            EntryKind::FinalPoint => (
                format!("{}.source", r.plan),
                format!("final point {}", e.name),
            ),
            EntryKind::Cleanup => (r.plan.clone(), "cleanup".to_string()),
            EntryKind::Copy => (
                format!(
                    "{}.{}.{}",
                    r.plan,
                    e.group.as_deref().unwrap_or("-"),
                    e.machine.as_deref().unwrap_or("-")
                ),
                format!("instant copy {}", e.name),
            ),
            _ => continue,
        };
        // A run stopped by an interrupt is neither passed nor failed: what
        // the interrupt cut short is skipped, not a failure.
        let outcome = match e.outcome {
            Outcome::Failed if r.interrupted && e.detail.starts_with("interrupted") => {
                Outcome::Skipped
            }
            o => o,
        };
        cases.push((class, name, e, outcome));
    }
    // RTO against max_rto is a test case of its own, counted like the rest.
    let rto_case = match (r.rto.within, r.rto.seconds, r.rto.limit_seconds) {
        (Some(within), Some(rto), Some(max)) => Some((within, rto, max)),
        _ => None,
    };
    let tests = cases.len() + usize::from(rto_case.is_some());
    let failures = cases.iter().filter(|c| c.3 == Outcome::Failed).count()
        + usize::from(rto_case.is_some_and(|c| !c.0));
    let skipped = cases.iter().filter(|c| c.3 == Outcome::Skipped).count();
    let total: f64 = r.timeline.iter().map(|e| e.end_seconds).fold(0.0, f64::max);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"standby {}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{total:.3}\">\n",
        esc(&r.kind),
    ));
    x.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total:.3}\" timestamp=\"{}\">\n",
        esc(&r.plan),
        esc(&r.started_at)
    ));
    x.push_str(&format!(
        "    <properties><property name=\"run_id\" value=\"{}\"/><property name=\"kind\" value=\"{}\"/></properties>\n",
        esc(&r.run_id),
        esc(&r.kind)
    ));
    for (class, name, e, outcome) in &cases {
        let time = (e.end_seconds - e.start_seconds).max(0.0);
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
            esc(class),
            esc(name)
        ));
        // VM evidence: a check's output, a boot's accelerator and console.
        let out = system_out(r, e);
        match outcome {
            Outcome::Passed if !out.is_empty() => x.push_str(&format!(
                ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                esc(&out)
            )),
            Outcome::Passed => x.push_str("/>\n"),
            Outcome::Failed => x.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(&first_line(&e.detail)),
                esc(&e.detail)
            )),
            Outcome::Skipped if e.outcome == Outcome::Failed => x.push_str(&format!(
                ">\n      <skipped message=\"{} {}\"/>\n    </testcase>\n",
                esc(&r.kind),
                esc(&e.detail)
            )),
            Outcome::Skipped => x.push_str(&format!(
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                esc(&e.detail)
            )),
        }
    }
    if let Some((within, rto, max)) = rto_case {
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"rto within max_rto\" time=\"0\"",
            esc(&r.plan)
        ));
        if within {
            x.push_str("/>\n");
        } else {
            x.push_str(&format!(
                ">\n      <failure message=\"RTO {rto:.1}s exceeds max_rto {max}s\"/>\n    </testcase>\n"
            ));
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.len() > 200 {
        let mut end = 200;
        while !l.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &l[..end])
    } else {
        l.to_string()
    }
}

/// What a VM's test case carries besides its outcome: a check's output,
/// a boot's accelerator, boot time and console (only for machines with
/// VM evidence).
fn system_out(r: &Report, e: &crate::recovery::timeline::Entry) -> String {
    let machine = match e.kind {
        EntryKind::Boot => e.name.as_str(),
        _ => e.machine.as_deref().unwrap_or(""),
    };
    let Some(m) = r.machines.iter().find(|m| m.machine == machine) else {
        return String::new();
    };
    match e.kind {
        EntryKind::Check => e.detail.clone(),
        EntryKind::Boot => format!(
            "accelerator {}; guest agent answered after {}; console SHA-256 {}\n{}",
            m.accelerator,
            m.boot_seconds
                .map_or("-".to_string(), |s| format!("{s:.3}s")),
            m.console_sha256,
            m.console_tail.join("\n")
        ),
        _ => String::new(),
    }
}
