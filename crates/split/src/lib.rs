//! flagship-split: chronological train / validation / test splits, and the label → target map.
//!
//! Two rules every split obeys: rows are ordered by time (then id, so ties are stable) and the
//! last `test_size` rows are test, the `val_size` before them validation, the rest train — no
//! later tweet ever lands in an earlier split; and labels 0 / 1 / 2 (negative / neutral /
//! positive) map to `need_support` = label ∈ {0, 1}.
//!
//! [`candidates`] is a DataFusion plan over every processed hour: like the seed, originals and
//! replies only (no retweets, no quotes), one row per tweet id and per cleaned text (the
//! earliest copy kept), no empty text. [`run`] joins the labels file ([`Labels`]: CSV or
//! Parquet, `id,label`) by id, refuses to split while any candidate is unlabeled (saying how
//! many, in which split, and the first ids), and writes `train.parquet`, `val.parquet`,
//! `test.parquet` in the split schema with `batch` = 1. [`export_for_labeling`] writes the
//! unlabeled candidates (id, created_at, text) as CSV for annotators. It reads processed rows
//! and labels; it never edits a label.

mod labels;

pub use labels::{LabelError, Labels, Overlay};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int8Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{JoinType, lit, when};
use datafusion::prelude::{SessionContext, col};
use flagship_core::schema::Stage;
use flagship_store::frames::{self, FrameError};
use flagship_store::storage::{StorageError, Store};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("label {label} of tweet {id} is not 0 (negative), 1 (neutral) or 2 (positive)")]
    BadLabel { id: String, label: i64 },
    #[error(
        "{rows} rows cannot fill test ({test}) and validation ({val}) and leave any for training"
    )]
    TooFewRows {
        rows: usize,
        test: usize,
        val: usize,
    },
    #[error(
        "{total} of {candidates} candidate tweets have no label ({}); first ids: {}. \
         Write them out with `split export-for-labeling`, label them, and add them to the labels file",
        by_part.iter().map(|(p, n)| format!("{n} in {p}")).collect::<Vec<_>>().join(", "),
        first_ids.join(", ")
    )]
    Unlabeled {
        total: usize,
        candidates: usize,
        by_part: BTreeMap<String, usize>,
        first_ids: Vec<String>,
    },
    #[error("no processed hour files in {0}")]
    NoInput(String),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Engine(#[from] FrameError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

fn df_err(e: datafusion::error::DataFusionError) -> SplitError {
    SplitError::Engine(FrameError::DataFusion(e))
}

/// The target of tweet `id` from its hand label (`flagship_core::labels`), or an error naming
/// the tweet and the label.
pub fn need_support(id: &str, label: i64) -> Result<bool, SplitError> {
    flagship_core::labels::need_support(label).ok_or_else(|| SplitError::BadLabel {
        id: id.to_owned(),
        label,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];

    /// The output file of this part.
    pub fn file(self) -> String {
        format!("{}.parquet", self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// Assigns each `(created_at, id)` row its part. The result is in input order.
pub fn chronological(
    rows: &[(DateTime<Utc>, String)],
    test_size: usize,
    val_size: usize,
) -> Result<Vec<Part>, SplitError> {
    let n = rows.len();
    if n <= test_size + val_size {
        return Err(SplitError::TooFewRows {
            rows: n,
            test: test_size,
            val: val_size,
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| rows[i].cmp(&rows[j]));
    let mut parts = vec![Part::Train; n];
    for (rank, &i) in order.iter().enumerate() {
        parts[i] = if rank >= n - test_size {
            Part::Test
        } else if rank >= n - test_size - val_size {
            Part::Val
        } else {
            Part::Train
        };
    }
    Ok(parts)
}

/// What [`candidates`] kept and why it set rows aside.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CandidateCounts {
    pub processed: u64,
    pub retweets: u64,
    pub quotes: u64,
    pub no_time: u64,
    pub empty_text: u64,
    pub duplicate_ids: u64,
    pub duplicate_texts: u64,
    pub candidates: u64,
}

/// The candidate tweets of every processed hour in `processed`, ordered by time and id.
pub async fn candidates(
    ctx: &SessionContext,
    processed: &Store,
) -> Result<(RecordBatch, CandidateCounts), SplitError> {
    let keys: Vec<String> = frames::hour_files(processed)
        .await?
        .into_iter()
        .map(|(_, e)| e.key)
        .collect();
    if keys.is_empty() {
        return Err(SplitError::NoInput(processed.location().to_string()));
    }
    let all = frames::read_parquet(ctx, processed, &keys).await?;
    // Each row set aside is counted under the first rule it fails, in one aggregate plan;
    // the kept rows are a second plan over the same files.
    let reason = when(col("is_retweet"), lit("retweets"))
        .when(col("is_quote"), lit("quotes"))
        .when(col("created_at").is_null(), lit("no_time"))
        .when(col("text_model").eq(lit("")), lit("empty_text"))
        .otherwise(lit("kept"))
        .map_err(df_err)?;
    let by_reason = all
        .clone()
        .aggregate(
            vec![reason.alias("reason")],
            vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("n")],
        )
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let mut c = CandidateCounts::default();
    let mut left = 0;
    for b in &by_reason {
        let reasons = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| SplitError::Engine(e.into()))?;
        let reasons = column_of::<StringArray>(&reasons);
        let n = column_of::<arrow::array::Int64Array>(b.column(1));
        for i in 0..b.num_rows() {
            let n = n.value(i) as u64;
            c.processed += n;
            match reasons.value(i) {
                "retweets" => c.retweets = n,
                "quotes" => c.quotes = n,
                "no_time" => c.no_time = n,
                "empty_text" => c.empty_text = n,
                _ => left = n,
            }
        }
    }
    let df = all
        .filter(
            (!col("is_retweet"))
                .and(!col("is_quote"))
                .and(col("created_at").is_not_null())
                .and(col("text_model").not_eq(lit(""))),
        )
        .map_err(df_err)?;
    // Repeated ids and texts: the earliest copy is kept. (Done over the time-ordered rows
    // here: DataFusion 55's DISTINCT ON panics in `first_value` over several partitions.)
    let df = df
        .sort(vec![
            col("created_at").sort(true, false),
            col("id").sort(true, false),
        ])
        .map_err(df_err)?;
    let ordered = frames::collect(df, &Stage::Processed.schema()).await?;
    let ids = column::<StringArray>(&ordered, "id");
    let texts = column::<StringArray>(&ordered, "text_model");
    let (mut seen_ids, mut seen_texts) = (HashSet::new(), HashSet::new());
    let mut keep = Vec::with_capacity(ordered.num_rows());
    for i in 0..ordered.num_rows() {
        if !seen_ids.insert(ids.value(i)) {
            c.duplicate_ids += 1;
            keep.push(false);
        } else if !seen_texts.insert(texts.value(i)) {
            c.duplicate_texts += 1;
            keep.push(false);
        } else {
            keep.push(true);
        }
    }
    let batch = arrow::compute::filter_record_batch(&ordered, &BooleanArray::from(keep))
        .map_err(|e| SplitError::Engine(e.into()))?;
    c.candidates = batch.num_rows() as u64;
    debug_assert_eq!(left, c.candidates + c.duplicate_ids + c.duplicate_texts);
    Ok((batch, c))
}

/// The rows of one part, with its need-support share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartReport {
    pub part: Part,
    pub file: String,
    pub rows: usize,
    pub need_support: usize,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub candidates: CandidateCounts,
    pub labels: usize,
    /// Labels whose tweet is not among the candidates (a retweet, another dataset, a typo):
    /// not used, and said so.
    pub labels_unmatched: usize,
    pub parts: Vec<PartReport>,
}

/// `candidates` joined with the labels: `label` (null where unlabeled).
async fn join_labels(
    ctx: &SessionContext,
    candidates: RecordBatch,
    labels: &Labels,
) -> Result<RecordBatch, SplitError> {
    let lschema = Arc::new(Schema::new(vec![
        Field::new("label_id", DataType::Utf8, false),
        Field::new("label", DataType::Int8, false),
    ]));
    let (ids, values): (Vec<&str>, Vec<i8>) = labels.iter().unzip();
    let lbatch = RecordBatch::try_new(
        lschema,
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(Int8Array::from(values)),
        ],
    )
    .map_err(|e| SplitError::Engine(e.into()))?;
    let df = ctx
        .read_batch(candidates)
        .and_then(|c| {
            c.join(
                ctx.read_batch(lbatch)?,
                JoinType::Left,
                &["id"],
                &["label_id"],
                None,
            )
        })
        .and_then(|d| {
            d.sort(vec![
                col("created_at").sort(true, false),
                col("id").sort(true, false),
            ])
        })
        .map_err(df_err)?;
    let mut schema: Vec<Field> = Stage::Processed
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    schema.push(Field::new("label", DataType::Int8, true));
    Ok(frames::collect(df, &Arc::new(Schema::new(schema))).await?)
}

fn column_of<T: 'static>(a: &arrow::array::ArrayRef) -> &T {
    a.as_any()
        .downcast_ref::<T>()
        .expect("an aggregate's column has its planned type")
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .unwrap_or_else(|| panic!("column {name} conformed"))
}

/// Splits the processed candidates with their labels and writes the three parts to `out`.
/// `(created_at, id)` of every row, in row order.
fn keys(b: &RecordBatch) -> Vec<(DateTime<Utc>, String)> {
    let ids = column::<StringArray>(b, "id");
    let times = column::<TimestampMillisecondArray>(b, "created_at");
    (0..b.num_rows())
        .map(|i| {
            (
                DateTime::from_timestamp_millis(times.value(i)).expect("a valid time"),
                ids.value(i).to_owned(),
            )
        })
        .collect()
}

/// `joined` (processed columns + `label`) plus `need_support`, `split`, `batch`.
fn with_split_columns(
    joined: &RecordBatch,
    split: impl Fn(usize) -> &'static str,
    batch: u32,
) -> Result<RecordBatch, SplitError> {
    let n = joined.num_rows();
    let ids = column::<StringArray>(joined, "id");
    let label = column::<Int8Array>(joined, "label");
    let need: Vec<Option<bool>> = (0..n)
        .map(|i| {
            (!label.is_null(i))
                .then(|| need_support(ids.value(i), i64::from(label.value(i))))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let mut columns: Vec<ArrayRef> = joined.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(need)));
    columns.push(Arc::new(StringArray::from_iter_values((0..n).map(split))));
    columns.push(Arc::new(UInt32Array::from(vec![batch; n])));
    RecordBatch::try_new(Stage::Split.schema(), columns).map_err(|e| SplitError::Engine(e.into()))
}

fn keep_rows(b: &RecordBatch, keep: impl Fn(usize) -> bool) -> Result<RecordBatch, SplitError> {
    let mask = BooleanArray::from((0..b.num_rows()).map(keep).collect::<Vec<_>>());
    arrow::compute::filter_record_batch(b, &mask).map_err(|e| SplitError::Engine(e.into()))
}

/// Splits the processed candidates (those created up to `until`, when given) with their
/// labels and writes the three parts to `out` with `batch` = 1.
pub async fn run(
    ctx: &SessionContext,
    processed: &Store,
    labels: &Labels,
    test_size: usize,
    val_size: usize,
    until: Option<DateTime<Utc>>,
    out: &Store,
) -> Result<Report, SplitError> {
    let (cands, counts) = candidates(ctx, processed).await?;
    let candidate_ids: std::collections::HashSet<&str> = column::<StringArray>(&cands, "id")
        .iter()
        .flatten()
        .collect();
    let labels_unmatched = labels
        .iter()
        .filter(|(id, _)| !candidate_ids.contains(id))
        .count();
    let joined = join_labels(ctx, cands, labels).await?;
    let joined = match until {
        Some(u) => {
            let k = keys(&joined);
            keep_rows(&joined, |i| k[i].0 <= u)?
        }
        None => joined,
    };
    let n = joined.num_rows();
    let rows = keys(&joined);
    let parts = chronological(&rows, test_size, val_size)?;
    let label = column::<Int8Array>(&joined, "label");
    let unlabeled: Vec<usize> = (0..n).filter(|&i| label.is_null(i)).collect();
    if !unlabeled.is_empty() {
        let mut by_part = BTreeMap::new();
        for &i in &unlabeled {
            *by_part.entry(parts[i].name().to_owned()).or_insert(0) += 1;
        }
        return Err(SplitError::Unlabeled {
            total: unlabeled.len(),
            candidates: n,
            by_part,
            first_ids: unlabeled
                .iter()
                .take(5)
                .map(|&i| rows[i].1.clone())
                .collect(),
        });
    }
    let all = with_split_columns(&joined, |i| parts[i].name(), 1)?;
    let need = column::<BooleanArray>(&all, "need_support");
    let schema = Stage::Split.schema();
    let mut reports = Vec::new();
    for part in Part::ALL {
        let part_rows = keep_rows(&all, |i| parts[i] == part)?;
        let idx: Vec<usize> = (0..n).filter(|&i| parts[i] == part).collect();
        out.write_parquet(&part.file(), &schema, &[part_rows])
            .await?;
        reports.push(PartReport {
            part,
            file: part.file(),
            rows: idx.len(),
            need_support: idx.iter().filter(|&&i| need.value(i)).count(),
            first: idx.iter().map(|&i| rows[i].0).min(),
            last: idx.iter().map(|&i| rows[i].0).max(),
        });
    }
    Ok(Report {
        candidates: counts,
        labels: labels.len(),
        labels_unmatched,
        parts: reports,
    })
}

/// One monitoring batch written by [`append`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchReport {
    pub batch: u32,
    pub file: String,
    pub rows: usize,
    pub labelled: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppendReport {
    pub batches: Vec<BatchReport>,
    /// Newer candidates not yet filling a batch; they wait for the next run.
    pub pending: usize,
}

/// The file of monitoring batch `n` (2, 3, …).
pub fn batch_file(n: u32) -> String {
    format!("batch-{n:04}.parquet")
}

/// Appends the candidates newer than everything already split (the test part and earlier
/// batches) as monitoring batches of `batch_size` rows in time order (`split` = `inference`,
/// `batch` = 2, 3, …; labels joined where the labels file has them). Only full batches are
/// written; the rest waits.
pub async fn append(
    ctx: &SessionContext,
    processed: &Store,
    labels: &Labels,
    batch_size: usize,
    out: &Store,
) -> Result<AppendReport, SplitError> {
    if !out.exists(&Part::Test.file()).await? {
        return Err(SplitError::NoInput(format!(
            "{} (run `split` first: batches follow the initial split)",
            out.location().join(&Part::Test.file())
        )));
    }
    let mut done = vec![Part::Test.file()];
    let mut next = 2u32;
    for e in out.list("").await? {
        if let Some(n) = e
            .key
            .strip_prefix("batch-")
            .and_then(|r| r.strip_suffix(".parquet"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            done.push(e.key.clone());
            next = next.max(n + 1);
        }
    }
    let mut last: Option<(DateTime<Utc>, String)> = None;
    for key in &done {
        let (_, batches) = out.read_parquet(key).await?;
        for b in &batches {
            last = last.max(keys(b).into_iter().max());
        }
    }
    let (cands, _) = candidates(ctx, processed).await?;
    let joined = join_labels(ctx, cands, labels).await?;
    let k = keys(&joined);
    let newer = keep_rows(&joined, |i| Some(&k[i]) > last.as_ref())?;
    let full = newer.num_rows() / batch_size.max(1);
    let mut batches = Vec::new();
    for j in 0..full {
        let rows = newer.slice(j * batch_size, batch_size);
        let b = with_split_columns(&rows, |_| "inference", next)?;
        let labelled = rows.num_rows() - column::<Int8Array>(&rows, "label").null_count();
        out.write_parquet(&batch_file(next), &Stage::Split.schema(), &[b])
            .await?;
        batches.push(BatchReport {
            batch: next,
            file: batch_file(next),
            rows: batch_size,
            labelled,
        });
        next += 1;
    }
    Ok(AppendReport {
        batches,
        pending: newer.num_rows() - full * batch_size,
    })
}

/// Writes the candidates that have no label yet as CSV (`id,created_at,text`) for
/// annotators; returns how many.
pub async fn export_for_labeling(
    ctx: &SessionContext,
    processed: &Store,
    labels: &Labels,
    out: &Store,
    key: &str,
) -> Result<usize, SplitError> {
    let (cands, _) = candidates(ctx, processed).await?;
    let ids = column::<StringArray>(&cands, "id");
    let times = column::<TimestampMillisecondArray>(&cands, "created_at");
    let texts = column::<StringArray>(&cands, "text");
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| SplitError::Io {
        path: out.location().join(key).to_string(),
        message: e.to_string(),
    };
    w.write_record(["id", "created_at", "text"]).map_err(io)?;
    let mut n = 0;
    for i in 0..cands.num_rows() {
        if labels.get(ids.value(i)).is_some() {
            continue;
        }
        let at = DateTime::from_timestamp_millis(times.value(i))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        w.write_record([ids.value(i).to_string(), at, texts.value(i).to_owned()])
            .map_err(io)?;
        n += 1;
    }
    let bytes = w.into_inner().map_err(|e| SplitError::Io {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    out.put(key, Bytes::from(bytes)).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn labels_map_to_need_support() {
        assert!(need_support("1", 0).unwrap());
        assert!(need_support("1", 1).unwrap());
        assert!(!need_support("1", 2).unwrap());
        let e = need_support("42", 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "label 3 of tweet 42 is not 0 (negative), 1 (neutral) or 2 (positive)"
        );
    }

    #[test]
    fn no_later_tweet_in_an_earlier_split() {
        // Shuffled times, with ties broken by id.
        let t0 = Utc.with_ymd_and_hms(2021, 12, 30, 17, 0, 0).unwrap();
        let rows: Vec<(DateTime<Utc>, String)> = (0..50u64)
            .map(|i| {
                let k = (i * 37) % 50;
                (
                    t0 + chrono::Duration::minutes((k / 2) as i64),
                    format!("{k:03}"),
                )
            })
            .collect();
        let parts = chronological(&rows, 10, 5).unwrap();
        let count = |p| parts.iter().filter(|&&x| x == p).count();
        assert_eq!(
            (count(Part::Train), count(Part::Val), count(Part::Test)),
            (35, 5, 10)
        );
        let span = |p| {
            let of_p = || {
                rows.iter()
                    .zip(&parts)
                    .filter(move |(_, x)| **x == p)
                    .map(|(r, _)| r.clone())
            };
            (of_p().min().unwrap(), of_p().max().unwrap())
        };
        let (train, val, test) = (span(Part::Train), span(Part::Val), span(Part::Test));
        assert!(train.1 < val.0, "train ends before validation starts");
        assert!(val.1 < test.0, "validation ends before test starts");
        assert!(matches!(
            chronological(&rows, 40, 10),
            Err(SplitError::TooFewRows {
                rows: 50,
                test: 40,
                val: 10
            })
        ));
    }
}
