//! The site provider of each site, and the provider's view of a run at it.

use crate::model::{Address, Config};
use standby_provider_core::{Mode, Run, SiteProvider};
use std::path::Path;

/// Why a site has no provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("no {0} in the configuration")]
    NoSite(Address),
    #[error("{0}: provider \"exec\" needs a command (site {{ command = [...] }})")]
    ExecWithoutCommand(Address),
    #[error("{site}: provider {provider:?} is not built into this standby")]
    Unknown { site: Address, provider: String },
}

/// The provider a site's `provider` attribute names.
pub fn for_site(
    cfg: &Config,
    root: &Path,
    site: &Address,
) -> Result<Box<dyn SiteProvider>, ProviderError> {
    let s = cfg
        .sites
        .get(site)
        .ok_or_else(|| ProviderError::NoSite(site.clone()))?;
    match s.provider.as_str() {
        "local" => Ok(Box::new(standby_provider_local::LocalProvider::new())),
        "exec" => match &s.command {
            Some(command) if !command.is_empty() => Ok(Box::new(
                standby_provider_exec::ExecProvider::new(command.clone(), root.to_path_buf()),
            )),
            _ => Err(ProviderError::ExecWithoutCommand(site.clone())),
        },
        "qemu" => Ok(Box::new(super::vms::qemu_site(cfg, root, site))),
        other => Err(ProviderError::Unknown {
            site: site.clone(),
            provider: other.to_string(),
        }),
    }
}

/// The run as providers see it at `site`.
pub fn run_at(cfg: &Config, root: &Path, site: &Address, run_id: &str, mode: Mode) -> Run {
    let site_root = cfg
        .sites
        .get(site)
        .and_then(|s| s.root.clone())
        .map(|r| root.join(r));
    Run {
        run_id: run_id.to_string(),
        mode,
        site: site.to_string(),
        site_root,
        config_root: root.to_path_buf(),
        interrupt: Default::default(),
    }
}
