//! A storage area used as local files: the location itself when it is a path; for `s3://`, a
//! local mirror that a job pulls before it reads and pushes after it writes (training,
//! prediction and the reports work on files). Also the digest of an area's contents, which
//! keys a pipeline stage: content hashes of local files (cached by size and mtime in
//! [`FileHashes`]), or keys, sizes and ETags on S3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Fingerprint;
use crate::storage::{Location, S3Options, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Write(#[from] crate::fs::WriteError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileHash {
    size: u64,
    modified: String,
    sha256: String,
}

/// Content hashes of local files, reused while a file's size and modification time are
/// unchanged (serialised with the state that keeps them). [`FileHashes::prune`] drops the
/// files not asked about since the last prune, so the cache never outgrows what a run uses.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct FileHashes {
    #[serde(flatten)]
    known: BTreeMap<String, FileHash>,
    #[serde(skip)]
    used: std::collections::BTreeSet<String>,
}

impl FileHashes {
    /// Forgets every file not hashed since the last prune.
    pub fn prune(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.known.retain(|k, _| used.contains(k));
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// SHA-256 of a local file's bytes, hex.
    pub fn sha256(&mut self, path: &Path) -> Result<String, MirrorError> {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let modified = format!("{:?}", meta.modified().map_err(io(path))?);
        let key = std::path::absolute(path)
            .map_err(io(path))?
            .display()
            .to_string();
        self.used.insert(key.clone());
        if let Some(h) = self.known.get(&key)
            && h.size == meta.len()
            && h.modified == modified
        {
            return Ok(h.sha256.clone());
        }
        let mut h = Sha256::new();
        std::io::copy(&mut std::fs::File::open(path).map_err(io(path))?, &mut h)
            .map_err(io(path))?;
        let sha256: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.known.insert(
            key,
            FileHash {
                size: meta.len(),
                modified,
                sha256: sha256.clone(),
            },
        );
        Ok(sha256)
    }
}

/// Bookkeeping that is never data: manifests and hidden (temporary) files.
fn skipped(rel: &str) -> bool {
    rel.starts_with("_manifest/") || rel.split('/').any(|p| p.starts_with('.'))
}

/// Every file under `dir` (relative, `/`-separated), bookkeeping left out; a missing folder
/// has none.
pub fn files_under(dir: &Path) -> Result<Vec<String>, MirrorError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), MirrorError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(dir)(e)),
        };
        for e in entries {
            let p = e.map_err(io(dir))?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(root) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if !skipped(&rel) {
                    out.push(rel);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Where S3 areas are mirrored: `FLAGSHIP_MIRROR`, else `$XDG_CACHE_HOME/flagship/mirror`,
/// else `~/.cache/flagship/mirror` — the user's own folder (created `0700`), not a shared,
/// predictable path under `/tmp` another user could prepare.
pub fn mirror_root() -> Result<PathBuf, MirrorError> {
    let root = std::env::var_os("FLAGSHIP_MIRROR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("flagship/mirror"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flagship/mirror"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("flagship-mirror"));
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&root))?;
    }
    Ok(root)
}

/// A storage area as local files (see the module doc).
pub struct Mirror {
    pub store: Store,
    /// Where the files are: the location itself, or the mirror of an `s3://` location.
    pub dir: PathBuf,
    pub remote: bool,
}

impl Mirror {
    /// Opens `location`; an `s3://` one is mirrored under [`mirror_root`]`/bucket/prefix`.
    pub fn open(location: &Location, s3: &S3Options) -> Result<Mirror, MirrorError> {
        let store = Store::open(location, s3)?;
        Ok(match location {
            Location::Local(p) => Mirror {
                store,
                dir: p.clone(),
                remote: false,
            },
            Location::S3 { bucket, prefix } => Mirror {
                store,
                dir: mirror_root()?.join(bucket).join(prefix),
                remote: true,
            },
        })
    }

    /// Adds the objects whose keys start with `prefix` to `f`: content hashes of local files,
    /// or keys, sizes and ETags on S3.
    pub async fn digest(
        &self,
        hashes: &mut FileHashes,
        f: &mut Fingerprint,
        prefix: &str,
    ) -> Result<(), MirrorError> {
        if self.remote {
            let entries: Vec<_> = self
                .store
                .list("")
                .await?
                .into_iter()
                .filter(|e| e.key.starts_with(prefix) && !skipped(&e.key))
                .collect();
            f.add_entries(&entries);
            return Ok(());
        }
        for rel in files_under(&self.dir)?
            .into_iter()
            .filter(|r| r.starts_with(prefix))
        {
            let sha = hashes.sha256(&self.dir.join(&rel))?;
            f.add(&rel).add(sha);
        }
        Ok(())
    }

    /// S3 → the mirror, for the keys starting with `prefix`.
    pub async fn pull(&self, prefix: &str) -> Result<(), MirrorError> {
        if !self.remote {
            return Ok(());
        }
        for e in self.store.list("").await? {
            if e.key.starts_with(prefix) && !skipped(&e.key) {
                let bytes = self.store.get(&e.key).await?;
                crate::fs::write_atomic(&self.dir.join(&e.key), &bytes)?;
            }
        }
        Ok(())
    }

    /// The mirror → S3, for the files starting with `prefix`; objects under it that the
    /// mirror no longer has are deleted.
    pub async fn push(&self, prefix: &str) -> Result<(), MirrorError> {
        if !self.remote {
            return Ok(());
        }
        let files: Vec<String> = files_under(&self.dir)?
            .into_iter()
            .filter(|r| r.starts_with(prefix))
            .collect();
        for rel in &files {
            let p = self.dir.join(rel);
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            self.store.put(rel, bytes.into()).await?;
        }
        for e in self.store.list("").await? {
            if e.key.starts_with(prefix) && !skipped(&e.key) && !files.contains(&e.key) {
                self.store.delete(&e.key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_skip_bookkeeping_and_hashes_follow_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (rel, text) in [
            ("a.parquet", "1"),
            ("sub/b.json", "2"),
            ("_manifest/x.json", "3"),
            (".tmp/c", "4"),
        ] {
            crate::fs::write_atomic(&d.join(rel), text.as_bytes()).unwrap();
        }
        assert_eq!(files_under(d).unwrap(), ["a.parquet", "sub/b.json"]);
        assert!(files_under(&d.join("missing")).unwrap().is_empty());
        let mut h = FileHashes::default();
        let one = h.sha256(&d.join("a.parquet")).unwrap();
        assert_eq!(
            one,
            "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
        );
        std::fs::write(d.join("a.parquet"), "10").unwrap();
        assert_ne!(h.sha256(&d.join("a.parquet")).unwrap(), one);
        h.sha256(&d.join("sub/b.json")).unwrap();
        // Serialised as a plain map of path → hash; a prune keeps what was used since the last.
        let back: FileHashes = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        h.prune();
        assert_eq!(h.len(), 2);
        h.sha256(&d.join("a.parquet")).unwrap();
        h.prune();
        assert_eq!(h.len(), 1);
    }
}
