//! The vault master key: create it (0600 key file), load it from a file or an
//! environment variable, and derive the subkeys each job uses.

use crate::model::KeySource;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a key could not be loaded or created. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{origin} does not hold a vault key (expected 64 hex digits)")]
    Malformed { origin: String },
    #[error(
        "environment variable {name} is not set (it should hold the vault key as 64 hex digits)"
    )]
    EnvMissing { name: String },
    #[error(
        "no key file at {path}; if the vault exists, restore its key file there from your backup or point key_file back at it (for a new vault, `standby vault init` creates one)"
    )]
    Missing { path: PathBuf },
    #[error(
        "the vault at {url} exists, but there is no key file at {path}: a new key cannot open it; restore the vault's key file to {path} from your backup, or point key_file back at where the key is"
    )]
    MissingForExisting { path: PathBuf, url: String },
}

/// 32 random bytes. Debug never prints them.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey(rand::random())
    }

    pub fn from_hex(text: &str, origin: &str) -> Result<MasterKey, KeyError> {
        let bad = || KeyError::Malformed {
            origin: origin.to_string(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(MasterKey(arr))
    }

    /// A key for one job outside the vault (its own `context`), e.g. the
    /// key of sensitive markers in the state.
    pub fn derive_for(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }

    /// Subkeys for one vault: distinct contexts so a key never serves two jobs.
    pub fn derive(&self, salt: &[u8]) -> Subkeys {
        let mut material = Vec::with_capacity(32 + salt.len());
        material.extend_from_slice(&self.0);
        material.extend_from_slice(salt);
        Subkeys {
            data: blake3::derive_key("standby vault v1 data sealing", &material),
            meta: blake3::derive_key("standby vault v1 manifest and index sealing", &material),
            id: blake3::derive_key("standby vault v1 object id hashing", &material),
        }
    }
}

/// Keys derived from the master key and the vault's salt.
#[derive(Clone)]
pub struct Subkeys {
    pub data: [u8; 32],
    pub meta: [u8; 32],
    pub id: [u8; 32],
}

/// Where a key file lives, resolving a relative path against `base`.
pub fn key_path(source: &KeySource, base: &Path) -> Option<PathBuf> {
    match source {
        KeySource::File(p) => Some(base.join(p)),
        KeySource::Env(_) => None,
    }
}

/// Load the master key from its source.
pub fn load(source: &KeySource, base: &Path) -> Result<MasterKey, KeyError> {
    match source {
        KeySource::Env(name) => {
            standby_provider_core::command::withhold_env(name);
            let v = std::env::var(name).map_err(|_| KeyError::EnvMissing { name: name.clone() })?;
            MasterKey::from_hex(&v, &format!("environment variable {name}"))
        }
        KeySource::File(p) => load_file(&base.join(p)),
    }
}

fn load_file(path: &Path) -> Result<MasterKey, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    MasterKey::from_hex(&text, &format!("key file {}", path.display()))
}

/// Create a new key file (mode 0600, parent directories created). Fails if
/// the file exists, so an existing key is never overwritten.
pub fn create_file(path: &Path) -> Result<MasterKey, KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    let key = MasterKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(werr)?;
    f.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())
        .map_err(werr)?;
    f.sync_all().map_err(werr)?;
    Ok(key)
}
