//! The team's decisions out of the desk: the split stage's labels file (`id,label`), a
//! Label Studio import (JSON tasks with the decision as an annotation and the model's score as
//! a prediction) or Argilla records (JSON lines for `rg.Record`: fields, metadata, a
//! suggestion and a response). Written to a temporary name and renamed.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::{DeskError, DeskStore, Item};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `id,label` (0 needs support, 2 does not): `split.labels`.
    Labels,
    /// Label Studio's JSON task list, choices `needs_reply` / `no_reply`.
    LabelStudio,
    /// Argilla 2 records, one JSON object per line.
    Argilla,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "labels" => Ok(Format::Labels),
            "label-studio" => Ok(Format::LabelStudio),
            "argilla" => Ok(Format::Argilla),
            other => Err(format!(
                "export format {other:?}: use labels, label-studio or argilla"
            )),
        }
    }
}

impl Format {
    /// The file name a download suggests.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Labels => "desk-labels.csv",
            Format::LabelStudio => "desk-label-studio.json",
            Format::Argilla => "desk-argilla.jsonl",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Labels => "text/csv; charset=utf-8",
            Format::LabelStudio => "application/json",
            Format::Argilla => "application/x-ndjson",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_uuids_are_stable_version_8() {
        let a = super::user_uuid("ana");
        assert_eq!(a, super::user_uuid("ana"));
        assert_ne!(a, super::user_uuid("bo"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Desk(#[from] DeskError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The choice a decision amounts to, in the labeling tools' vocabulary.
fn choice(needs: bool) -> &'static str {
    if needs { "needs_reply" } else { "no_reply" }
}

/// The model's suggestion and its confidence in it (P(needs a reply), or 1 − that for
/// `no_reply`).
fn suggestion(item: &Item) -> (&'static str, f64) {
    let p = item.probability;
    (
        choice(item.need_support),
        if item.need_support { p } else { 1.0 - p },
    )
}

/// A stable UUID for a desk user name (Argilla identifies users by UUID): version 8, from
/// the name's SHA-256. The name itself goes into the record's metadata.
fn user_uuid(name: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("flagship-desk-user:{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn label_studio(item: &Item, who: &str) -> Option<Value> {
    let needs = item.decision?.needs_support()?;
    let result = |needs: bool| {
        json!([{
            "from_name": "need_support",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [choice(needs)]}
        }])
    };
    Some(json!({
        // Label Studio's `completed_by` is one of its own user ids: the desk's person is data.
        "data": {
            "text": item.text,
            "post_id": item.id,
            "platform": item.platform,
            "url": item.url,
            "author": item.author,
            "created_at": item.created_at,
            "decided_by": who,
        },
        "annotations": [{"result": result(needs)}],
        "predictions": [{
            "model_version": item.model_id,
            "score": suggestion(item).1,
            "result": result(item.need_support),
        }],
    }))
}

fn argilla(item: &Item, who: &str) -> Option<Value> {
    let needs = item.decision?.needs_support()?;
    Some(json!({
        "id": item.id,
        "fields": {"text": item.text},
        "metadata": {
            "platform": item.platform,
            "url": item.url,
            "author": item.author,
            "created_at": item.created_at,
            "decided_by": who,
        },
        "suggestions": [{
            "question_name": "need_support",
            "value": suggestion(item).0,
            "score": suggestion(item).1,
            "agent": item.model_id,
        }],
        "responses": [{
            "question_name": "need_support",
            "value": choice(needs),
            "user_id": user_uuid(who),
            "status": "submitted",
        }],
    }))
}

/// The export of the store's current decisions, as bytes; and how many posts it holds.
/// `bulk`: also the posts decided with their whole question group (else only those decided
/// one by one).
pub fn render(
    store: &DeskStore,
    format: Format,
    bulk: bool,
) -> Result<(Vec<u8>, usize), DeskError> {
    let one_by_one = (!bulk).then(|| store.decided_one_by_one()).transpose()?;
    let decided = || -> Result<Vec<(Item, String)>, DeskError> {
        Ok(store
            .decided()?
            .into_iter()
            .filter(|(i, _)| one_by_one.as_ref().is_none_or(|o| o.contains(&i.id)))
            .collect())
    };
    let mut out = Vec::new();
    let mut n = 0;
    match format {
        Format::Labels => {
            out.extend_from_slice(b"id,label\n");
            for (id, label) in store.labels(bulk)? {
                // Ids hold no comma or quote on any platform, but a CSV stays a CSV.
                if id.contains([',', '"', '\n']) {
                    out.extend_from_slice(format!("\"{}\"", id.replace('"', "\"\"")).as_bytes());
                } else {
                    out.extend_from_slice(id.as_bytes());
                }
                out.extend_from_slice(format!(",{label}\n").as_bytes());
                n += 1;
            }
        }
        Format::LabelStudio => {
            let tasks: Vec<Value> = decided()?
                .iter()
                .filter_map(|(i, who)| label_studio(i, who))
                .collect();
            n = tasks.len();
            out = serde_json::to_vec_pretty(&tasks).expect("JSON values serialise");
            out.push(b'\n');
        }
        Format::Argilla => {
            for record in decided()?.iter().filter_map(|(i, who)| argilla(i, who)) {
                out.extend_from_slice(record.to_string().as_bytes());
                out.push(b'\n');
                n += 1;
            }
        }
    }
    Ok((out, n))
}

/// Writes the export to `path` (a temporary name, then renamed); how many posts it holds.
pub fn write(
    store: &DeskStore,
    format: Format,
    bulk: bool,
    path: &Path,
) -> Result<usize, ExportError> {
    let (bytes, n) = render(store, format, bulk)?;
    let io = |source| ExportError::Io {
        path: path.to_owned(),
        source,
    };
    let moved = |e: flagship_store::fs::WriteError| ExportError::Io {
        path: e.path,
        source: e.source,
    };
    let mut tmp = flagship_store::fs::temp_beside(path).map_err(moved)?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    flagship_store::fs::persist(tmp, path).map_err(moved)?;
    Ok(n)
}
