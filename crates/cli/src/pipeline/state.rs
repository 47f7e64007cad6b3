//! `pipeline.json`, the record of finished stages, and the lock that keeps two runs on one
//! reports location apart.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use flagship_store::fs::write_atomic;
use flagship_store::mirror::FileHashes;
use serde::{Deserialize, Serialize};

use super::Stage;

/// The record of finished stages, under `storage.reports`.
pub const STATE_FILE: &str = "pipeline.json";

/// A finished stage, as `pipeline.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    /// SHA-256 over the stage's inputs and settings.
    pub inputs: String,
    /// SHA-256 over what it wrote.
    pub outputs: String,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub summary: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub stages: BTreeMap<Stage, Done>,
    /// Content hashes of local files, reused while a file's size and mtime are unchanged.
    #[serde(default)]
    pub(super) files: FileHashes,
}

impl State {
    pub fn load(path: &Path) -> Result<State> {
        match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s)
                .with_context(|| format!("{}: not a pipeline state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub(super) fn save(&self, path: &Path) -> Result<()> {
        Ok(write_atomic(
            path,
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )?)
    }
}

/// Held while a pipeline runs on a reports location, so two runs never interleave stages.
pub const LOCK_FILE: &str = "pipeline.lock";

/// An exclusive OS lock (`flock`) on the lock file, held for the whole run and released by the
/// OS however the process ends; the file holds the holder's process id, for the message.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    pub fn take(path: &Path) -> Result<Lock> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Lock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                bail!(
                    "another pipeline (pid {}) is running on these locations (lock {}); wait for it or stop it",
                    holder.trim(),
                    path.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pipeline_at_a_time_and_a_dead_ones_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports").join(LOCK_FILE);
        let held = Lock::take(&path).unwrap();
        let e = Lock::take(&path).err().expect("a second run is refused");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        // The file a finished (or killed) run leaves behind holds no lock: the next run takes it.
        std::fs::write(&path, "4194305\n").unwrap();
        let _again = Lock::take(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
