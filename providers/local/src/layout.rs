//! Where a run's files live at a local site: the test sandbox, the run
//! bookkeeping directory, and the target path of each disk.

use standby_provider_core::{Mode, ProviderError, Run};
use std::path::{Component, Path, PathBuf};

/// The directory under a site root holding every test sandbox.
pub const TEST_DIR: &str = ".standby-test";
/// The directory under a site root holding failover runs' bookkeeping.
pub const RUNS_DIR: &str = ".standby-runs";
/// A test sandbox's bookkeeping directory.
const SANDBOX_RUNS: &str = ".runs";

/// The site root of `run`: required, absolute. Also checks the run id, which
/// becomes a directory name.
pub fn site_root<'a>(run: &'a Run, action: &'static str) -> Result<&'a Path, ProviderError> {
    let bad = |reason: String| ProviderError::Action {
        action,
        subject: run.site.clone(),
        reason,
    };
    let root = run.site_root.as_deref().ok_or_else(|| {
        bad("the local provider needs the site's root directory (`root` in the site block), and none was given".into())
    })?;
    if !root.is_absolute() {
        return Err(bad(format!(
            "the site root {} is not an absolute path",
            root.display()
        )));
    }
    if run.run_id.is_empty()
        || !run
            .run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(bad(format!(
            "run id {:?} is not a safe file name ([A-Za-z0-9-])",
            run.run_id
        )));
    }
    Ok(root)
}

/// `<site_root>/.standby-test/<run_id>`: everything a test run creates.
pub fn sandbox(root: &Path, run: &Run) -> PathBuf {
    root.join(TEST_DIR).join(&run.run_id)
}

/// Where pid files and boot logs of the run's machines go.
pub fn runs_dir(root: &Path, run: &Run) -> PathBuf {
    match run.mode {
        Mode::Test => sandbox(root, run).join(SANDBOX_RUNS),
        Mode::Failover => root.join(RUNS_DIR).join(&run.run_id),
    }
}

/// A machine address as a file name: `machine.web["a"]` -> `machine.web-a`.
pub fn machine_file_name(machine: &str) -> String {
    let mut s = String::with_capacity(machine.len());
    for c in machine.chars() {
        match c {
            '[' => s.push('-'),
            '"' | ']' => {}
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => s.push(c),
            _ => s.push('_'),
        }
    }
    // Never `.`/`..`, never hidden (`.runs` lives beside machine dirs).
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// A disk path no site can materialize.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiskPathError {
    #[error("disk path {} leaves its directory (`..`); disk paths must stay inside the site root", .0.display())]
    Leaves(PathBuf),
    #[error("disk path {:?} ends with `/`: it names a directory, not a disk file", .0.display().to_string())]
    Directory(PathBuf),
    #[error("disk path {:?} names no file", .0.display().to_string())]
    NoFile(PathBuf),
}

/// A disk's path relative to the place it is materialized: a relative path
/// as it is; an absolute one (a device on the source) under `devices/`.
/// `..` is refused so no disk lands outside its site root or sandbox.
pub fn disk_relative(path: &Path) -> Result<PathBuf, DiskPathError> {
    let mut out = PathBuf::new();
    if path.is_absolute() {
        out.push("devices");
    }
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(DiskPathError::Leaves(path.to_path_buf()));
            }
        }
    }
    // `db/` or `db/.` names a directory: components() would fold the
    // slash away and make it the file `db`, which replication cannot read.
    let text = path.as_os_str().as_encoded_bytes();
    if text.ends_with(b"/") || text.ends_with(b"/.") {
        return Err(DiskPathError::Directory(path.to_path_buf()));
    }
    if out.as_os_str().is_empty() || out == Path::new("devices") {
        return Err(DiskPathError::NoFile(path.to_path_buf()));
    }
    Ok(out)
}

/// Where `machine`'s disk goes: `<sandbox>/<machine>/<disk>` for test runs,
/// `<site_root>/<disk>` for failover runs.
pub fn disk_target(
    root: &Path,
    run: &Run,
    machine: &str,
    disk: &Path,
) -> Result<PathBuf, DiskPathError> {
    let rel = disk_relative(disk)?;
    Ok(match run.mode {
        Mode::Test => sandbox(root, run)
            .join(machine_file_name(machine))
            .join(rel),
        Mode::Failover => root.join(rel),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode) -> Run {
        Run {
            run_id: "r-1".into(),
            mode,
            site: "site.dr".into(),
            site_root: Some(PathBuf::from("/dr")),
            config_root: PathBuf::from("/cfg"),
            interrupt: Default::default(),
        }
    }

    #[test]
    fn machine_addresses_become_file_names() {
        assert_eq!(machine_file_name("machine.web[\"a\"]"), "machine.web-a");
        assert_eq!(machine_file_name("machine.db"), "machine.db");
        assert_eq!(machine_file_name("machine.x[\"a/b c\"]"), "machine.x-a_b_c");
        assert_eq!(machine_file_name(".."), "_..");
    }

    #[test]
    fn test_disks_go_to_the_sandbox_and_failover_disks_to_the_site() {
        let t = run(Mode::Test);
        assert_eq!(
            disk_target(
                Path::new("/dr"),
                &t,
                "machine.web[\"a\"]",
                Path::new("web/sys.img")
            )
            .unwrap(),
            PathBuf::from("/dr/.standby-test/r-1/machine.web-a/web/sys.img")
        );
        let f = run(Mode::Failover);
        assert_eq!(
            disk_target(Path::new("/dr"), &f, "machine.db", Path::new("db/data.img")).unwrap(),
            PathBuf::from("/dr/db/data.img")
        );
        assert_eq!(
            disk_target(Path::new("/dr"), &f, "machine.db", Path::new("/dev/sdb")).unwrap(),
            PathBuf::from("/dr/devices/dev/sdb")
        );
        assert_eq!(
            disk_target(Path::new("/dr"), &t, "machine.db", Path::new("/dev/sdb")).unwrap(),
            PathBuf::from("/dr/.standby-test/r-1/machine.db/devices/dev/sdb")
        );
    }

    #[test]
    fn escaping_disk_paths_are_refused() {
        let e = disk_relative(Path::new("../../etc/passwd")).unwrap_err();
        assert!(e.to_string().contains("leaves its directory"), "{e}");
        assert!(disk_relative(Path::new("/")).is_err());
        assert!(disk_relative(Path::new("")).is_err());
    }

    #[test]
    fn site_root_is_required_absolute_and_run_ids_safe() {
        let mut r = run(Mode::Test);
        assert!(site_root(&r, "prepare").is_ok());
        r.site_root = None;
        let e = site_root(&r, "prepare").unwrap_err().to_string();
        assert!(e.contains("needs the site's root directory"), "{e}");
        r.site_root = Some(PathBuf::from("rel/dr"));
        let e = site_root(&r, "prepare").unwrap_err().to_string();
        assert!(e.contains("not an absolute path"), "{e}");
        r.site_root = Some(PathBuf::from("/dr"));
        r.run_id = "../x".into();
        let e = site_root(&r, "prepare").unwrap_err().to_string();
        assert!(e.contains("not a safe file name"), "{e}");
    }
}
