//! Running a user command (script steps, shutdown, check steps, the test
//! hook) with a timeout: argv without a shell, the configuration root as
//! working directory, output captured, killed when the time is up or the
//! run is cancelled.

use crate::exec::Cancel;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code and the tail of the output, for reports.
    pub fn describe(&self) -> String {
        let code = self
            .code
            .map_or("killed by a signal".to_string(), |c| format!("exit {c}"));
        let out = tail(&format!("{}{}", self.stdout, self.stderr), 400);
        if out.is_empty() {
            code
        } else {
            format!("{code}: {out}")
        }
    }
}

/// The last `max` bytes of `s`, trimmed, on char boundaries.
pub fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// Run `argv` in `cwd` with `env` added; `Err` when it cannot start, runs
/// past `timeout` (it is killed) or the run is cancelled.
pub fn run(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    cancel: Option<&Cancel>,
) -> Result<Finished, String> {
    let Some(program) = argv.first() else {
        return Err("the command is empty".into());
    };
    // A relative path with a slash means the configuration directory.
    let program = if program.contains('/') && Path::new(program).is_relative() {
        cwd.join(program).display().to_string()
    } else {
        program.clone()
    };
    let mut child = Command::new(&program)
        .args(&argv[1..])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(format!("cannot wait for {program}: {e}")),
        }
        if Instant::now() >= deadline {
            break Err(format!("did not finish within {}s", timeout.as_secs()));
        }
        if cancel.is_some_and(|c| c.is_cancelled()) {
            break Err("interrupted".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut outs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let stdout = outs.next().unwrap_or_default();
    let stderr = outs.next().unwrap_or_default();
    let status = status?;
    Ok(Finished {
        code: status.code(),
        stdout,
        stderr,
    })
}
