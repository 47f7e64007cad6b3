//! Local files written whole or not at all: the one atomic-write helper of the workspace.
//!
//! Bytes go to a temporary file in the target's folder (created if needed), are flushed, and
//! the file is renamed onto the target: readers see the old file or the whole new one, never
//! a part. Stores on object storage get the same guarantee from S3's `PUT`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A local write that failed, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A temporary file in `out`'s folder (created if needed), to be persisted onto `out`.
pub fn temp_beside(out: &Path) -> Result<tempfile::NamedTempFile, WriteError> {
    let err = |source| WriteError {
        path: out.to_owned(),
        source,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    tempfile::NamedTempFile::new_in(dir).map_err(err)
}

/// Moves a finished temporary file onto `out`.
pub fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> Result<(), WriteError> {
    tmp.persist(out).map_err(|e| WriteError {
        path: out.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes `bytes` to `out` atomically.
pub fn write_atomic(out: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut tmp = temp_beside(out)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file_mut().flush())
        .map_err(|source| WriteError {
            path: out.to_owned(),
            source,
        })?;
    persist(tmp, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a/b/report.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(f.parent().unwrap()).unwrap().count(), 1);
        let e = write_atomic(&dir.path().join("a/b/report.json/x"), b"").unwrap_err();
        assert!(e.to_string().contains("report.json/x"), "{e}");
    }
}
