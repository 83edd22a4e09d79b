//! The workspace: one value a command builds once, holding the loaded
//! configuration, the state backend (when the command uses state) and the
//! vaults opened so far, and answering the questions every command asks of
//! them — which vault, which policy, which site root, which points, where
//! the cache is — so that no consumer re-joins the configuration itself.
//! Opening a vault derives its keys, so each is opened once, lazily, and
//! shared (`Arc`) by the threads of the command.

use crate::model::{Address, Config, KeySource, Kind, Policy, Protection, RecoveryPlan};
use crate::state::{Backend, StateDoc};
use crate::vault::{Vault, VaultError, catalog, manifest};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a workspace question can fail on; messages name the object.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The address is not in the configuration.
    #[error("no {0} in the configuration")]
    NotConfigured(Address),
    /// A configured object refers to one the configuration lacks.
    #[error("{of}: no {missing} in the configuration")]
    Missing { of: Address, missing: Address },
    /// A vault neither configured nor recorded in state (a destroy of a
    /// vault the state never knew).
    #[error("{0} is neither configured nor recorded")]
    Unknown(Address),
    /// A vault recorded in state without the attribute named.
    #[error("{address} has no recorded {what}")]
    Unrecorded {
        address: Address,
        what: &'static str,
    },
    /// Opening or reading the vault failed.
    #[error("{address}: {error}")]
    Vault {
        address: Address,
        error: Box<VaultError>,
    },
    /// The command reads no state here.
    #[error("this command opened no state backend")]
    NoBackend,
}

/// The configuration, the state backend and the vaults of one command.
pub struct Workspace {
    pub config: Config,
    backend: Option<Arc<dyn Backend>>,
    store: crate::store::Options,
    vaults: Mutex<HashMap<Address, Arc<Vault>>>,
    /// The lineage vault handles act for (see `Vault::set_owner`); read
    /// from the state on first use.
    owner: Mutex<Option<Option<String>>>,
}

impl Workspace {
    /// A workspace over `config`, without state.
    pub fn new(config: Config) -> Workspace {
        Workspace {
            config,
            backend: None,
            store: crate::store::Options::default(),
            vaults: Mutex::new(HashMap::new()),
            owner: Mutex::new(None),
        }
    }

    /// The same, opening its vaults' stores per `opts` (e.g. a shorter
    /// request retry for `replicate --watch`).
    pub fn with_store_options(mut self, opts: crate::store::Options) -> Workspace {
        self.store = opts;
        self
    }

    /// The same, retrying each request to a remote store for at most
    /// `limit` (instead of three minutes).
    pub fn with_request_retry(self, limit: std::time::Duration) -> Workspace {
        let opts = crate::store::Options {
            request_retry: Some(limit),
        };
        self.with_store_options(opts)
    }

    /// The same, keeping its state in `backend`.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Workspace {
        self.backend = Some(backend);
        self
    }

    /// The state backend, when the command opened one.
    pub fn backend(&self) -> Result<&Arc<dyn Backend>, WorkspaceError> {
        self.backend.as_ref().ok_or(WorkspaceError::NoBackend)
    }

    /// The local change-tracking cache and staging area
    /// (`<config root>/.standby/cache`).
    pub fn cache_dir(&self) -> PathBuf {
        cache_dir(&self.config)
    }

    /// Where a site's disk paths are relative to: its `root` joined to the
    /// configuration's root (the root itself when the site sets none).
    /// `None` when the site is not configured.
    pub fn site_root(&self, site: &Address) -> Option<PathBuf> {
        let s = self.config.sites.get(site)?;
        Some(
            self.config
                .root
                .join(s.root.clone().unwrap_or_else(|| PathBuf::from("."))),
        )
    }

    /// The configuration directory as an absolute path (what providers,
    /// hooks and run locks are given; the configured root may be relative).
    pub fn root(&self) -> PathBuf {
        absolute_root(&self.config)
    }

    /// The protection of `machine` (`machine.NAME`), if it has one.
    pub fn protection_of(&self, machine: &Address) -> Option<&Protection> {
        protection_of(&self.config, machine)
    }

    /// The recovery plan named `name` (`shop` or `recovery_plan.shop`).
    pub fn recovery_plan(&self, name: &str) -> Result<&RecoveryPlan, PlanError> {
        let addr = Address::parse_as(name, Kind::RecoveryPlan)
            .map_err(|e| PlanError::BadName(e.to_string()))?;
        self.config
            .recovery_plans
            .get(&addr)
            .ok_or_else(|| PlanError::NotFound {
                have: self
                    .config
                    .recovery_plans
                    .keys()
                    .map(|a| a.instance_name())
                    .collect(),
                addr,
            })
    }

    /// The replication policy of a configured protection.
    pub fn policy_of(&self, protection: &Address) -> Option<&Policy> {
        let p = self.config.protections.get(protection)?;
        self.config.policies.get(&p.policy)
    }

    /// Act for the state of `lineage` (a new state's, before it is
    /// written): every vault handle, opened or to be, carries it.
    pub fn set_owner(&self, lineage: uuid::Uuid) {
        let owner = Some(lineage.to_string());
        *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some(owner.clone());
        if let Ok(vaults) = self.vaults.lock() {
            for v in vaults.values() {
                v.set_owner(owner.clone());
            }
        }
    }

    /// The lineage vault handles act for: the state's (`state` when given,
    /// else read once), None without a state.
    fn owner(&self, state: Option<&StateDoc>) -> Option<String> {
        let mut g = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = &*g {
            return o.clone();
        }
        let o = match state {
            Some(doc) => Some(doc.lineage.to_string()),
            None => owner_of(&self.config),
        };
        *g = Some(o.clone());
        o
    }

    /// The configured vault at `address`, opened once per workspace.
    pub fn vault(&self, address: &Address) -> Result<Arc<Vault>, WorkspaceError> {
        self.vault_as_recorded(address, None)
    }

    /// The configured vault at `address` opened anew, replacing the one
    /// kept (a key source that changed must open it before it is recorded).
    pub fn reopen(&self, address: &Address) -> Result<Arc<Vault>, WorkspaceError> {
        if let Ok(mut vaults) = self.vaults.lock() {
            vaults.remove(address);
        }
        self.vault_as_recorded(address, None)
    }

    /// The vault at `address` as configured, else as recorded in `state`
    /// (a vault the configuration no longer has, being destroyed).
    pub fn vault_as_recorded(
        &self,
        address: &Address,
        state: Option<&StateDoc>,
    ) -> Result<Arc<Vault>, WorkspaceError> {
        if let Some(v) = self.opened(address) {
            return Ok(v);
        }
        let (url, key) = match self.config.vaults.get(address) {
            Some(v) => (v.url.clone(), v.key.clone()),
            None => match state {
                Some(doc) => recorded_vault(doc, address)?,
                None => return Err(WorkspaceError::NotConfigured(address.clone())),
            },
        };
        let vault = Vault::open_with_options(&url, &key, &self.config.root, &self.store).map_err(
            |error| WorkspaceError::Vault {
                address: address.clone(),
                error: Box::new(error),
            },
        )?;
        vault.set_owner(self.owner(state));
        Ok(self.keep_vault(address, vault))
    }

    /// Keep a vault opened elsewhere (initialised, or opened with a new key
    /// source) for the rest of the command; returns the shared handle.
    pub fn keep_vault(&self, address: &Address, vault: Vault) -> Arc<Vault> {
        vault.set_owner(self.owner(None));
        vault.use_index_cache(self.cache_dir());
        let vault = Arc::new(vault);
        if let Ok(mut vaults) = self.vaults.lock() {
            vaults.insert(address.clone(), vault.clone());
        }
        vault
    }

    fn opened(&self, address: &Address) -> Option<Arc<Vault>> {
        self.vaults.lock().ok()?.get(address).cloned()
    }

    /// The recovery points of a configured protection in its vault, oldest
    /// first.
    pub fn points_of(
        &self,
        protection: &Address,
    ) -> Result<Vec<manifest::Manifest>, WorkspaceError> {
        let p = self
            .config
            .protections
            .get(protection)
            .ok_or_else(|| WorkspaceError::NotConfigured(protection.clone()))?;
        let vault = self.vault(&p.vault)?;
        points_in(&vault, protection, &p.machine.to_string()).map_err(|error| {
            WorkspaceError::Vault {
                address: p.vault.clone(),
                error: Box::new(error),
            }
        })
    }
}

impl Workspace {
    /// The points in `vault` of every machine the configuration protects
    /// into it (its catalog entries: extents left out), oldest first per
    /// machine; filter by `Manifest::protection` for one protection.
    pub fn protected_points(
        &self,
        vault: &Address,
    ) -> Result<Vec<manifest::Manifest>, WorkspaceError> {
        let machines = self
            .config
            .protections
            .values()
            .filter(|p| &p.vault == vault)
            .map(|p| p.machine.to_string())
            .collect();
        let opened = self.vault(vault)?;
        catalog::list_machines(&opened, &machines).map_err(|error| WorkspaceError::Vault {
            address: vault.clone(),
            error: Box::new(error),
        })
    }

    /// Every configured vault's points (each vault's oldest first), with
    /// the vault's address, in address order. Catalog entries: the disks'
    /// extents are left out (read the manifest to resolve a point).
    pub fn all_points(&self) -> Result<Vec<(Address, manifest::Manifest)>, WorkspaceError> {
        self.machine_points(None)
    }

    /// [`Workspace::all_points`] of one machine (`machine.NAME`), reading
    /// only its catalog in each vault; None: every machine.
    pub fn machine_points(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<(Address, manifest::Manifest)>, WorkspaceError> {
        let mut out = Vec::new();
        for addr in self.config.vaults.keys() {
            let vault = self.vault(addr)?;
            let points =
                catalog::list_for(&vault, machine).map_err(|error| WorkspaceError::Vault {
                    address: addr.clone(),
                    error: Box::new(error),
                })?;
            out.extend(points.into_iter().map(|m| (addr.clone(), m)));
        }
        Ok(out)
    }
}

/// The recovery points of `protection` of `machine` in `vault`, oldest
/// first: the machine's catalog entries (extents left out), not every
/// manifest of the vault.
pub fn points_in(
    vault: &Vault,
    protection: &Address,
    machine: &str,
) -> Result<Vec<manifest::Manifest>, VaultError> {
    let name = protection.to_string();
    let points = catalog::list_for(vault, Some(machine))?;
    Ok(points
        .into_iter()
        .filter(|m| m.protection == name)
        .collect())
}

/// The lineage of `config`'s state: the owner its vault handles act for.
/// None when there is no state yet, or it cannot be read (then a handle
/// sees every point and prunes only points without an owner; a warning
/// says so).
pub fn owner_of(config: &Config) -> Option<String> {
    match crate::state::open_backend(&config.root, config.backend.as_ref()).and_then(|b| b.read()) {
        Ok(doc) => doc.map(|d| d.lineage.to_string()),
        Err(e) => {
            tracing::warn!("cannot read the state to know this configuration's points: {e}");
            None
        }
    }
}

/// Why [`Workspace::recovery_plan`] found no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not the name or address of a recovery plan.
    #[error("{0}")]
    BadName(String),
    #[error("no {addr} in the configuration")]
    NotFound { addr: Address, have: Vec<String> },
}

impl PlanError {
    /// The plans there are, for a name that is not one of them.
    pub fn help(&self) -> Option<String> {
        match self {
            PlanError::BadName(_) => None,
            PlanError::NotFound { have, .. } => {
                Some(format!("the configuration has: {}", have.join(", ")))
            }
        }
    }
}

/// The protection of `machine` in `config`, if it has one.
pub fn protection_of<'a>(config: &'a Config, machine: &Address) -> Option<&'a Protection> {
    config.protections.values().find(|p| &p.machine == machine)
}

/// `config`'s directory as an absolute path.
pub fn absolute_root(config: &Config) -> PathBuf {
    std::fs::canonicalize(&config.root).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(&config.root))
            .unwrap_or_else(|_| config.root.clone())
    })
}

/// The local change-tracking cache and staging area of `config`.
pub fn cache_dir(config: &Config) -> PathBuf {
    config.root.join(".standby").join("cache")
}

/// A vault's url and key source as recorded in state.
pub fn recorded_vault(
    doc: &StateDoc,
    address: &Address,
) -> Result<(String, KeySource), WorkspaceError> {
    let rec = doc
        .objects
        .get(address)
        .ok_or_else(|| WorkspaceError::Unknown(address.clone()))?;
    let get = |k: &str| rec.attributes.get(k).and_then(|v| v.as_str());
    let missing = |what| WorkspaceError::Unrecorded {
        address: address.clone(),
        what,
    };
    let url = get("url").ok_or_else(|| missing("url"))?;
    let key = match (get("key_file"), get("key_env")) {
        (Some(f), _) => KeySource::File(f.into()),
        (None, Some(e)) => KeySource::Env(e.to_string()),
        _ => return Err(missing("key source")),
    };
    Ok((url.to_string(), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use std::path::Path;

    /// The quickstart's configuration, loaded from a copy under `dir`.
    fn quickstart(dir: &Path) -> Config {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart");
        for e in std::fs::read_dir(&from).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "hcl") {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        crate::config::load(dir, &Default::default())
            .unwrap_or_else(|d| panic!("{}", d.render(false)))
            .config
    }

    #[test]
    fn answers_from_the_configuration() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::new(quickstart(d.path()));
        let root = &ws.config.root;
        assert_eq!(
            ws.site_root(&Address::new(Kind::Site, "onprem")),
            Some(root.join("sites/onprem"))
        );
        assert_eq!(ws.site_root(&Address::new(Kind::Site, "nowhere")), None);
        let policy = ws.policy_of(&Address::new(Kind::Protection, "db"));
        assert_eq!(
            policy.map(|p| p.addr.clone()),
            Some(Address::new(Kind::Policy, "standard"))
        );
        assert_eq!(ws.cache_dir(), root.join(".standby/cache"));
        assert!(matches!(ws.backend(), Err(WorkspaceError::NoBackend)));
    }

    #[test]
    fn finds_plans_protections_and_the_absolute_root() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::new(quickstart(d.path()));
        assert!(ws.root().is_absolute());
        let shop = ws.recovery_plan("shop").unwrap();
        assert_eq!(shop.addr, Address::new(Kind::RecoveryPlan, "shop"));
        assert_eq!(
            ws.recovery_plan("recovery_plan.shop").unwrap().addr,
            shop.addr
        );
        let e = ws.recovery_plan("shpo").unwrap_err();
        assert_eq!(e.to_string(), "no recovery_plan.shpo in the configuration");
        assert_eq!(e.help().as_deref(), Some("the configuration has: shop"));
        let e = ws.recovery_plan("machine.db").unwrap_err();
        assert_eq!(e.to_string(), "no machine.db in the configuration");
        let e = ws.recovery_plan("a.b.c").unwrap_err();
        assert!(matches!(e, PlanError::BadName(_)), "{e:?}");
        let db = Address::new(Kind::Machine, "db");
        assert_eq!(
            ws.protection_of(&db).map(|p| p.addr.clone()),
            Some(Address::new(Kind::Protection, "db"))
        );
        assert!(
            ws.protection_of(&Address::new(Kind::Machine, "none"))
                .is_none()
        );
    }

    #[test]
    fn opens_each_vault_once_and_lists_a_protections_points() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::new(quickstart(d.path()));
        let main = Address::new(Kind::Vault, "main");
        // Not created yet: the vault's own error, naming the vault.
        let e = ws.vault(&main).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.starts_with("vault.main: ")),
            "{e:?}"
        );
        assert!(matches!(
            ws.vault(&Address::new(Kind::Vault, "other")),
            Err(WorkspaceError::NotConfigured(_))
        ));
        let v = &ws.config.vaults[&main];
        crate::vault::Vault::init(&v.url, &v.key, &ws.config.root).unwrap();
        let (a, b) = (ws.vault(&main).unwrap(), ws.vault(&main).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        let points = ws.points_of(&Address::new(Kind::Protection, "db")).unwrap();
        assert!(points.is_empty());
        assert!(ws.protected_points(&main).unwrap().is_empty());
    }
}
