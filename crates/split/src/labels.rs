//! Labels files as annotators deliver them: CSV or Parquet with columns `id` and `label`
//! (0 negative, 1 neutral, 2 positive); other columns (the text they read) are ignored.
//! Every problem names the file, the line (CSV) or row (Parquet) and the value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::Array;
use arrow::datatypes::DataType;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

/// What [`Labels::overlay`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Posts the labels had not.
    pub added: usize,
    /// Posts whose label changed…
    pub replaced: usize,
    /// …of which the target changed (`need_support` flipped, not only negative ↔ neutral).
    pub retargeted: usize,
    /// Posts already labelled the same.
    pub agreed: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    by_id: HashMap<String, i8>,
}

impl Labels {
    pub fn from_pairs<S: Into<String>>(pairs: impl IntoIterator<Item = (S, i8)>) -> Labels {
        Labels {
            by_id: pairs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }

    /// Lays `pairs` over these labels (a later source wins: a triage decision replaces the
    /// file's label of the same post); what it added, replaced and found already equal.
    pub fn overlay<S: Into<String>>(
        &mut self,
        pairs: impl IntoIterator<Item = (S, i8)>,
    ) -> Overlay {
        let mut o = Overlay::default();
        for (id, label) in pairs {
            match self.by_id.insert(id.into(), label) {
                None => o.added += 1,
                Some(old) if old == label => o.agreed += 1,
                Some(old) => {
                    o.replaced += 1;
                    let target = |l: i8| flagship_core::labels::need_support(i64::from(l));
                    if target(old) != target(label) {
                        o.retargeted += 1;
                    }
                }
            }
        }
        o
    }

    pub fn get(&self, id: &str) -> Option<i8> {
        self.by_id.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// In id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i8)> + '_ {
        let mut v: Vec<(&str, i8)> = self.by_id.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        v.sort_unstable();
        v.into_iter()
    }

    /// Reads `path` (`.csv`, or `.parquet`). A label outside 0–2, an id that is no post id
    /// (X's number, Bluesky's `at://…`, a Mastodon status URI), or an id labelled twice with different labels is an error.
    pub fn read(path: &Path) -> Result<Labels, LabelError> {
        let file_err = |message: String| LabelError::File {
            path: path.to_owned(),
            message,
        };
        let mut labels = Labels::default();
        let is_parquet = path.extension().is_some_and(|e| e == "parquet");
        if is_parquet {
            let f = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.build())
                .map_err(|e| file_err(e.to_string()))?;
            let mut row = 0u64;
            for batch in reader {
                let batch = batch.map_err(|e| file_err(e.to_string()))?;
                let get = |name: &str| -> Result<arrow::array::ArrayRef, LabelError> {
                    let c = batch
                        .column_by_name(name)
                        .ok_or_else(|| file_err(format!("no `{name}` column")))?;
                    let to = if name == "id" {
                        DataType::Utf8
                    } else {
                        DataType::Int64
                    };
                    arrow::compute::cast(c, &to)
                        .map_err(|e| file_err(format!("column `{name}`: {e}")))
                };
                let (ids, values) = (get("id")?, get("label")?);
                let ids = ids
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .expect("utf8");
                let values = values
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .expect("i64");
                for i in 0..batch.num_rows() {
                    row += 1;
                    let id = (!ids.is_null(i)).then(|| ids.value(i).to_owned());
                    let label = (!values.is_null(i)).then(|| values.value(i).to_string());
                    labels.add(path, row, id.as_deref(), label.as_deref(), "row")?;
                }
            }
            return Ok(labels);
        }
        let mut r = csv::Reader::from_path(path).map_err(|e| file_err(e.to_string()))?;
        let headers = r.headers().map_err(|e| file_err(e.to_string()))?.clone();
        let pos = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| {
                    file_err(format!(
                        "no `{name}` column in the header ({:?})",
                        headers.iter().collect::<Vec<_>>()
                    ))
                })
        };
        let (id_at, label_at) = (pos("id")?, pos("label")?);
        for rec in r.records() {
            let rec = rec.map_err(|e| file_err(e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line());
            labels.add(path, line, rec.get(id_at), rec.get(label_at), "line")?;
        }
        Ok(labels)
    }

    fn add(
        &mut self,
        path: &Path,
        line: u64,
        id: Option<&str>,
        label: Option<&str>,
        _unit: &str,
    ) -> Result<(), LabelError> {
        let bad = |message: String| LabelError::Line {
            path: path.to_owned(),
            line,
            message,
        };
        let id_text = id.unwrap_or("").trim();
        if flagship_core::Platform::of_id(id_text).is_none() {
            return Err(bad(format!(
                "id {id_text:?} is not a post id (an X id, an at:// or https:// post URI)"
            )));
        }
        let id = id_text.to_owned();
        let label_text = label.unwrap_or("").trim();
        let label: i8 = match label_text.parse::<f64>() {
            Ok(v) if v == 0.0 || v == 1.0 || v == 2.0 => v as i8,
            _ => {
                return Err(bad(format!(
                    "label {label_text:?} of tweet {id} is not 0 (negative), 1 (neutral) or 2 (positive)"
                )));
            }
        };
        match self.by_id.insert(id.clone(), label) {
            Some(prev) if prev != label => Err(bad(format!(
                "tweet {id} is labelled {prev} earlier in the file and {label} here"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_adds_replaces_and_counts_agreement() {
        let mut l = Labels::from_pairs([("1", 0), ("2", 2), ("3", 1)]);
        let o = l.overlay([
            ("2", 0),
            ("3", 1),
            ("1", 1),
            ("at://did:plc:a/app.bsky.feed.post/k", 2),
        ]);
        assert_eq!(
            o,
            Overlay {
                added: 1,
                replaced: 2,
                retargeted: 1,
                agreed: 1
            }
        );
        assert_eq!(l.get("2"), Some(0));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn csv_labels_and_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(
            &p,
            "id,text,label\n5,\"a, b\",0\n6,x,2\n7,y,1.0\n5,again,0\n",
        )
        .unwrap();
        let l = Labels::read(&p).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), [("5", 0), ("6", 2), ("7", 1)]);
        std::fs::write(&p, "id,label\n5,0\n6,3\n").unwrap();
        let e = Labels::read(&p).unwrap_err().to_string();
        assert!(e.ends_with("labels.csv:3: label \"3\" of tweet 6 is not 0 (negative), 1 (neutral) or 2 (positive)"), "{e}");
        std::fs::write(&p, "id,label\n5,0\n5,2\n").unwrap();
        let e = Labels::read(&p).unwrap_err().to_string();
        assert!(e.contains(":3: tweet 5 is labelled 0 earlier"), "{e}");
        std::fs::write(&p, "tweet,label\n5,0\n").unwrap();
        assert!(
            Labels::read(&p)
                .unwrap_err()
                .to_string()
                .contains("no `id` column")
        );
        // Post ids of every platform; anything else is named.
        std::fs::write(
            &p,
            "id,label\nat://did:plc:x/app.bsky.feed.post/3k,0\nhttps://mastodon.social/users/a/statuses/1,2\n12x,1\n",
        )
        .unwrap();
        let e = Labels::read(&p).unwrap_err().to_string();
        assert!(e.contains(":4: id \"12x\" is not a post id"), "{e}");
    }
}
