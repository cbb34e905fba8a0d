//! The policy set a running gateway decides with: loaded from files, replaced atomically when
//! the files change, and kept when they stop validating. A decision takes the current engine
//! (an `Arc`), so a reload never changes a decision half-way, and a bad edit never leaves the
//! gateway without policy: it keeps deciding with the last good set and reports the error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{PolicyEngine, PolicyError};

/// Where a policy set comes from: a `.cedar` file or a directory of them, and an optional
/// entities file (Cedar entity JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFiles {
    /// A `.cedar` file, or a directory whose `.cedar` files (sorted by name) are the set.
    pub policies: PathBuf,
    /// Users, groups, applications, routes… as Cedar entity JSON.
    pub entities: Option<PathBuf>,
}

impl PolicyFiles {
    /// Reads and validates the set.
    pub fn load(&self) -> Result<PolicyEngine, PolicyError> {
        PolicyEngine::load(&read_sources(&self.policies)?, read_entities(self.entities.as_deref())?)
    }
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> PolicyError {
    PolicyError::Io(format!("`{}`: {error}", path.display()))
}

/// The `.cedar` sources at `path` (a file, or a directory's `.cedar` files sorted by name), as
/// (file name, text).
pub fn read_sources(path: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
            let file = entry.map_err(|e| io_error(path, e))?.path();
            if file.extension().is_some_and(|e| e == "cedar") {
                files.push(file);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(io_error(path, "no .cedar files"));
        }
    } else {
        files.push(path.to_owned());
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| io_error(&file, e))?;
            Ok((file.display().to_string(), text))
        })
        .collect()
}

/// The entities file as JSON (none: an empty list).
pub fn read_entities(path: Option<&Path>) -> Result<serde_json::Value, PolicyError> {
    let Some(path) = path else { return Ok(serde_json::json!([])) };
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| io_error(path, format!("not JSON: {e}")))
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new set is in force.
    Applied {
        /// Its generation (1 for the set loaded at start).
        generation: u64,
        /// Its number of policies.
        policies: usize,
    },
    /// The new set was refused; the last good one stays in force.
    Kept {
        /// The generation still in force.
        generation: u64,
        /// Why the new set was refused (Cedar's diagnostics).
        error: PolicyError,
    },
}

struct Current {
    engine: Arc<PolicyEngine>,
    generation: u64,
}

/// The live policy set.
pub struct LivePolicy {
    files: PolicyFiles,
    current: RwLock<Current>,
}

impl std::fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicy").field("files", &self.files).field("generation", &self.generation()).finish()
    }
}

impl LivePolicy {
    /// Loads the set at start: an invalid set is an error (a gateway must not start without a
    /// valid policy).
    pub fn start(files: PolicyFiles) -> Result<Self, PolicyError> {
        let engine = Arc::new(files.load()?);
        Ok(Self { files, current: RwLock::new(Current { engine, generation: 1 }) })
    }

    /// The engine to decide with now.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current.engine),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().engine),
        }
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        match self.current.read() {
            Ok(current) => current.generation,
            Err(poisoned) => poisoned.into_inner().generation,
        }
    }

    /// Reads the files again: a valid set replaces the current one atomically; an invalid one is
    /// refused and the last good set stays.
    pub fn reload(&self) -> Reload {
        match self.files.load() {
            Ok(engine) => {
                let policies = engine.len();
                let mut current = match self.current.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                current.engine = Arc::new(engine);
                current.generation += 1;
                Reload::Applied { generation: current.generation, policies }
            }
            Err(error) => Reload::Kept { generation: self.generation(), error },
        }
    }
}
