//! Which inputs produced each output of a stage, so finished work is skipped.
//!
//! A stage keeps `_manifest/<stage>.json` in its output area: for every output key, the
//! fingerprint of everything that went into it (input keys, sizes and ETags, the settings that
//! change the result, the flagship schema version) and the counts it reported. An output whose
//! fingerprint is unchanged and which still exists is not recomputed, and its counts are
//! reported again from the manifest. The manifest is written atomically after each output.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{Entry, StorageError, Store};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub outputs: BTreeMap<String, Done>,
}

/// One finished output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub fingerprint: String,
    /// What the stage counted while making it (rows, quarantined, per reason…).
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key}: not a flagship manifest: {message}")]
    Corrupt { key: String, message: String },
}

/// Builds a fingerprint from ordered parts (each length-prefixed, so parts never run together).
#[derive(Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new(stage: &str) -> Fingerprint {
        let mut f = Fingerprint(Sha256::new());
        f.add(stage).add(flagship_core::schema::VERSION);
        f
    }

    pub fn add(&mut self, part: impl AsRef<[u8]>) -> &mut Self {
        let b = part.as_ref();
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }

    /// Adds objects by key, size and ETag (or modification time where a store has no ETag).
    pub fn add_entries(&mut self, entries: &[Entry]) -> &mut Self {
        for e in entries {
            self.add(&e.key).add(e.size.to_le_bytes());
            match &e.e_tag {
                Some(t) => self.add(t),
                None => self.add(e.last_modified.to_rfc3339()),
            };
        }
        self
    }

    pub fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Manifest {
    pub fn key(stage: &str) -> String {
        format!("_manifest/{stage}.json")
    }

    /// The stage's manifest in `store`, or an empty one.
    pub async fn load(store: &Store, stage: &str) -> Result<Manifest, ManifestError> {
        let key = Manifest::key(stage);
        if !store.exists(&key).await? {
            return Ok(Manifest {
                stage: stage.to_owned(),
                outputs: BTreeMap::new(),
            });
        }
        let bytes = store.get(&key).await?;
        serde_json::from_slice(&bytes).map_err(|e| ManifestError::Corrupt {
            key: store.location().join(&key).to_string(),
            message: e.to_string(),
        })
    }

    pub async fn save(&self, store: &Store) -> Result<(), ManifestError> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        store
            .put(&Manifest::key(&self.stage), Bytes::from(json))
            .await?;
        Ok(())
    }

    /// The recorded counts of `output` when it was made from `fingerprint`.
    pub fn done(&self, output: &str, fingerprint: &str) -> Option<&Done> {
        self.outputs
            .get(output)
            .filter(|d| d.fingerprint == fingerprint)
    }

    pub fn record(&mut self, output: &str, fingerprint: String, counts: BTreeMap<String, u64>) {
        self.outputs.insert(
            output.to_owned(),
            Done {
                fingerprint,
                counts,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Location, S3Options};

    #[tokio::test]
    async fn roundtrip_and_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&Location::Local(dir.path().into()), &S3Options::default()).unwrap();
        let mut m = Manifest::load(&store, "combine").await.unwrap();
        assert!(m.outputs.is_empty());
        let fp = |parts: &[&str]| {
            let mut f = Fingerprint::new("combine");
            for p in parts {
                f.add(p);
            }
            f.finish()
        };
        assert_ne!(fp(&["ab", "c"]), fp(&["a", "bc"]));
        assert_eq!(fp(&["a"]), fp(&["a"]));
        m.record(
            "x.parquet",
            fp(&["a"]),
            BTreeMap::from([("rows".into(), 3)]),
        );
        m.save(&store).await.unwrap();
        let back = Manifest::load(&store, "combine").await.unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.done("x.parquet", &fp(&["a"])).unwrap().counts["rows"],
            3
        );
        assert!(back.done("x.parquet", &fp(&["b"])).is_none());
        store
            .put(&Manifest::key("combine"), Bytes::from_static(b"{"))
            .await
            .unwrap();
        let e = Manifest::load(&store, "combine").await.unwrap_err();
        assert!(e.to_string().contains("_manifest/combine.json"), "{e}");
    }
}
