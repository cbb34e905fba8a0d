//! The data directory: where the CA's keys and certificates, the store and the configuration
//! live. Created owner-only (0700), keys written 0600, every file written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use zerogate_pki::{Authority, CaMaterial, Lifetimes, TrustDomain};
use zerogate_store::SqliteStore;

/// The environment variable naming the data directory.
pub const ENV: &str = "ZEROGATE_DATA_DIR";

/// Errors about the data directory, each naming the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// No CA yet.
    #[error("no CA in `{0}`: run `zerogate ca init --trust-domain …` first")]
    NotInitialised(PathBuf),
    /// A CA exists already.
    #[error("a CA already exists in `{0}`")]
    AlreadyInitialised(PathBuf),
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("`{path}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_owned(), source }
}

/// The platform's per-user data directory for zerogate: `$XDG_DATA_HOME/zerogate` or
/// `~/.local/share/zerogate` (Linux and other Unix), `~/Library/Application Support/zerogate`
/// (macOS), `%APPDATA%\zerogate` (Windows).
pub fn default_path() -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    if cfg!(target_os = "macos") {
        return home().join("Library/Application Support/zerogate");
    }
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(PathBuf::from).unwrap_or_else(home).join("zerogate");
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("zerogate"),
        None => home().join(".local/share/zerogate"),
    }
}

/// What `config.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaConfig {
    /// The trust domain.
    pub trust_domain: String,
    /// Default lifetime of workload certificates, seconds.
    pub workload_ttl: u64,
    /// Default lifetime of device certificates, seconds.
    pub device_ttl: u64,
    /// Maximum lifetime of any certificate, seconds.
    pub max_ttl: u64,
}

/// A data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory at `path` (not created until [`DataDir::init`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn ca(&self, file: &str) -> PathBuf {
        self.root.join("ca").join(file)
    }

    /// The root certificate (PEM): what clients and gateways trust.
    pub fn root_cert_path(&self) -> PathBuf {
        self.ca("root.pem")
    }

    /// The root key, while it is online.
    pub fn root_key_path(&self) -> PathBuf {
        self.ca("root.key.pem")
    }

    /// The SQLite store.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// The audit log.
    pub fn audit_log_path(&self) -> PathBuf {
        self.root.join("audit").join("audit.log")
    }

    /// The public key that verifies the audit log's checkpoints (base64 Ed25519).
    pub fn audit_public_key_path(&self) -> PathBuf {
        self.root.join("audit").join("checkpoint.pub")
    }

    fn audit_key_path(&self) -> PathBuf {
        self.root.join("audit").join("checkpoint.key")
    }

    /// Opens the audit log, creating it and its checkpoint key on first use.
    pub fn audit_log(&self) -> Result<zerogate_audit::AuditLog, DataDirError> {
        self.audit_log_with(zerogate_audit::Options::default())
    }

    /// As [`Self::audit_log`], with `options` (the gateway's segment size).
    pub fn audit_log_with(&self, options: zerogate_audit::Options) -> Result<zerogate_audit::AuditLog, DataDirError> {
        if !self.is_initialised() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        create_private_dir(&self.root.join("audit"))?;
        let key_path = self.audit_key_path();
        let key = if key_path.exists() {
            let bytes = std::fs::read(&key_path).map_err(io(&key_path))?;
            zerogate_audit::CheckpointKey::from_pkcs8(&bytes)
                .map_err(|reason| DataDirError::Invalid { path: key_path.clone(), reason })?
        } else {
            let key = zerogate_audit::CheckpointKey::generate()
                .map_err(|reason| DataDirError::Invalid { path: key_path.clone(), reason })?;
            write_atomic(&key_path, key.pkcs8(), true)?;
            write_atomic(&self.audit_public_key_path(), format!("{}\n", key.public_key_b64()).as_bytes(), false)?;
            key
        };
        let path = self.audit_log_path();
        zerogate_audit::AuditLog::open(&path, key, options)
            .map_err(|e| DataDirError::Invalid { path, reason: e.to_string() })
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// Whether a CA exists here.
    pub fn is_initialised(&self) -> bool {
        self.config_path().exists()
    }

    /// Creates the CA. The root key goes to `offline_root_key` when given (and never into the
    /// data directory), else to `ca/root.key.pem`.
    pub fn init(
        &self,
        domain: &TrustDomain,
        lifetimes: Lifetimes,
        offline_root_key: Option<&Path>,
        now: i64,
    ) -> Result<(), DataDirError> {
        if self.is_initialised() {
            return Err(DataDirError::AlreadyInitialised(self.root.clone()));
        }
        create_private_dir(&self.root)?;
        create_private_dir(&self.root.join("ca"))?;
        let new = Authority::init(domain, now)
            .map_err(|e| DataDirError::Invalid { path: self.root.clone(), reason: e.to_string() })?;
        match offline_root_key {
            Some(path) => write_atomic(path, new.root_key_pem.as_bytes(), true)?,
            None => write_atomic(&self.root_key_path(), new.root_key_pem.as_bytes(), true)?,
        }
        write_atomic(&self.root_cert_path(), new.material.root_cert_pem.as_bytes(), false)?;
        write_atomic(&self.ca("intermediate.pem"), new.material.intermediate_cert_pem.as_bytes(), false)?;
        write_atomic(&self.ca("intermediate.key.pem"), new.material.intermediate_key_pem.as_bytes(), true)?;
        SqliteStore::open(&self.store_path())
            .map_err(|e| DataDirError::Invalid { path: self.store_path(), reason: e.to_string() })?;
        // Token hashes and the event log: owner only (SQLite gives its WAL the same mode).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = self.store_path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        }
        let config = CaConfig {
            trust_domain: domain.to_string(),
            workload_ttl: lifetimes.workload,
            device_ttl: lifetimes.device,
            max_ttl: lifetimes.max,
        };
        let json = serde_json::to_vec_pretty(&config).unwrap_or_default();
        // Written last: its presence means the CA is complete.
        write_atomic(&self.config_path(), &json, false)
    }

    /// Moves the root key out of the data directory to `to` (owner-only), for an offline root.
    /// The CA keeps issuing with its intermediate; the root key is needed again only to sign a
    /// new intermediate.
    pub fn export_root_key(&self, to: &Path) -> Result<(), DataDirError> {
        if !self.is_initialised() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        let from = self.root_key_path();
        if !from.exists() {
            return Err(DataDirError::Invalid {
                path: from,
                reason: "the root key is not here (already offline?)".into(),
            });
        }
        if to.exists() {
            return Err(DataDirError::Invalid { path: to.to_owned(), reason: "exists; refusing to overwrite".into() });
        }
        let key = std::fs::read(&from).map_err(io(&from))?;
        // Written and synced before the original is removed: never zero copies.
        write_atomic(to, &key, true)?;
        std::fs::remove_file(&from).map_err(io(&from))
    }

    /// Reads the configuration.
    pub fn config(&self) -> Result<CaConfig, DataDirError> {
        let path = self.config_path();
        if !path.exists() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| DataDirError::Invalid { path, reason: e.to_string() })
    }

    /// Loads the authority.
    pub fn authority(&self) -> Result<Authority, DataDirError> {
        let config = self.config()?;
        let domain = TrustDomain::parse(&config.trust_domain)
            .map_err(|e| DataDirError::Invalid { path: self.config_path(), reason: format!("trust_domain: {e}") })?;
        let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(io(&path));
        let material = CaMaterial {
            root_cert_pem: read(self.root_cert_path())?,
            intermediate_cert_pem: read(self.ca("intermediate.pem"))?,
            intermediate_key_pem: read(self.ca("intermediate.key.pem"))?,
        };
        let lifetimes = Lifetimes { workload: config.workload_ttl, device: config.device_ttl, max: config.max_ttl };
        Authority::load(domain, &material, lifetimes)
            .map_err(|e| DataDirError::Invalid { path: self.root.join("ca"), reason: e.to_string() })
    }

    /// Opens the store.
    pub fn store(&self) -> Result<SqliteStore, DataDirError> {
        if !self.is_initialised() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        SqliteStore::open(&self.store_path())
            .map_err(|e| DataDirError::Invalid { path: self.store_path(), reason: e.to_string() })
    }
}

fn create_private_dir(path: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never part of
/// one: a temporary file beside it, synced, then renamed over it. With `secret`, the file is
/// created readable by its owner only (0600) before any byte is written.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), DataDirError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}
