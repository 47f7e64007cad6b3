//! flagship-combine: gathers the raw Firehose objects of each hour into one Parquet file.
//!
//! It lists the raw area (every page; a local folder or `s3://`), groups objects by the
//! `YYYY/MM/DD/HH` of their key (keys outside the layout are reported, never guessed at),
//! parses each line — an X API v2 stream message, or a record of the seed's legacy 53-column
//! TSV ([`legacy`]) — into the raw schema, drops repeated tweet ids (keeping the earliest
//! arrival, also across the [`DEDUP_WINDOW_HOURS`] hours before: a retried batch or a spill
//! file sent after an outage lands in a later hour than the first delivery) and writes `YYYYMMDDHH.parquet` (zstd) per hour, atomically, in the combined
//! schema (raw columns + `source_object`, `hour`). Malformed lines go to
//! `quarantine/combine/YYYYMMDDHH.jsonl` with object key, line and byte offset, and are
//! counted. An hour whose objects (keys, sizes, ETags) did not change since its output was
//! written is skipped ([`flagship_store::manifest`]).
//!
//! Parsing runs here, line by line, because quarantining a bad line needs it (DataFusion's
//! NDJSON scan fails a whole file on one bad line and cannot join `includes`); the dedup and
//! ordering of the parsed rows is a DataFusion plan. It never filters or cleans text.

pub mod legacy;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::prelude::{SessionContext, col};
use flagship_core::Post;
use flagship_core::layout::{hour_file, hour_of_key};
use flagship_core::schema::Stage;
use flagship_platforms::jsonl::{BadLine, PayloadError, parse_record};
use flagship_store::frames::{self, FrameError};
use flagship_store::manifest::{Fingerprint, Manifest, ManifestError};
use flagship_store::records::{self, RecordError};
use flagship_store::storage::{Entry, StorageError, Store};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

pub const STAGE: &str = "combine";

/// How far back an hour looks for ids it must not repeat. A redelivery (a Firehose batch
/// retried after a timeout that had in fact landed, a spill file sent with `ingest
/// replay-spill` after an outage, a replay restarted after a crash) arrives later than the
/// first copy; a week covers any outage an operator lets run before sending the spill.
pub const DEDUP_WINDOW_HOURS: i64 = 7 * 24;

#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("hour {hour}: {source}")]
    Records {
        hour: String,
        #[source]
        source: RecordError,
    },
    #[error("hour {hour}: {source}")]
    Frame {
        hour: String,
        #[source]
        source: FrameError,
    },
}

/// Raw objects by arrival hour, plus the keys that are not in the layout.
#[derive(Debug, Default, PartialEq)]
pub struct Hours {
    pub hours: BTreeMap<DateTime<Utc>, Vec<Entry>>,
    pub outside_layout: Vec<Entry>,
}

/// Groups a listing by hour; within an hour objects stay in key (= arrival) order.
pub fn group_by_hour(entries: impl IntoIterator<Item = Entry>) -> Hours {
    let mut out = Hours::default();
    for e in entries {
        match hour_of_key(&e.key) {
            Some(h) => out.hours.entry(h).or_default().push(e),
            None => out.outside_layout.push(e),
        }
    }
    for v in out.hours.values_mut() {
        v.sort_by(|a, b| a.key.cmp(&b.key));
    }
    out
}

/// What one hour held.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub objects: u64,
    pub lines: u64,
    pub keep_alives: u64,
    pub tweets: u64,
    pub legacy_records: u64,
    pub api_errors: u64,
    pub duplicates: u64,
    /// Of `duplicates`, ids already combined in an earlier hour (within the window).
    pub duplicates_of_earlier_hours: u64,
    pub quarantined: u64,
    pub rows: u64,
}

impl Counts {
    fn to_map(&self) -> BTreeMap<String, u64> {
        let v = serde_json::to_value(self).expect("counts serialize");
        serde_json::from_value(v).expect("counts are a flat map")
    }

    fn from_map(m: &BTreeMap<String, u64>) -> Counts {
        let g = |k: &str| m.get(k).copied().unwrap_or(0);
        Counts {
            objects: g("objects"),
            lines: g("lines"),
            keep_alives: g("keep_alives"),
            tweets: g("tweets"),
            legacy_records: g("legacy_records"),
            api_errors: g("api_errors"),
            duplicates: g("duplicates"),
            duplicates_of_earlier_hours: g("duplicates_of_earlier_hours"),
            quarantined: g("quarantined"),
            rows: g("rows"),
        }
    }

    fn add(&mut self, o: &Counts) {
        self.objects += o.objects;
        self.lines += o.lines;
        self.keep_alives += o.keep_alives;
        self.tweets += o.tweets;
        self.legacy_records += o.legacy_records;
        self.api_errors += o.api_errors;
        self.duplicates += o.duplicates;
        self.duplicates_of_earlier_hours += o.duplicates_of_earlier_hours;
        self.quarantined += o.quarantined;
        self.rows += o.rows;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourReport {
    pub hour: DateTime<Utc>,
    pub output: String,
    /// Unchanged inputs: the output was kept and these counts come from the manifest.
    pub skipped: bool,
    pub counts: Counts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub hours: Vec<HourReport>,
    pub outside_layout: Vec<String>,
    pub totals: Counts,
    /// Outputs of hours whose raw objects are all gone (a full run only).
    pub vanished: Vec<String>,
    /// Of those, the ones [`remove_vanished`] removed.
    pub removed: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let t = &self.totals;
        let skipped = self.hours.iter().filter(|h| h.skipped).count();
        write!(
            f,
            "{} hours ({skipped} unchanged, skipped), {} objects, {} lines → {} rows ({} duplicate ids dropped, {} of them first seen in an earlier hour; {} legacy TSV records), {} malformed lines quarantined, {} API error objects, {} keys outside the layout{}",
            self.hours.len(),
            t.objects,
            t.lines,
            t.rows,
            t.duplicates,
            t.duplicates_of_earlier_hours,
            t.legacy_records,
            t.quarantined,
            t.api_errors,
            self.outside_layout.len(),
            match (self.vanished.len(), self.removed.len()) {
                (0, _) => String::new(),
                (n, 0) => format!(
                    ", {n} outputs whose raw objects are gone (kept; --prune-vanished removes them)"
                ),
                (_, r) => format!(", {r} outputs of vanished hours removed"),
            }
        )
    }
}

/// The quarantine file of an hour.
pub fn quarantine_key(hour: DateTime<Utc>) -> String {
    format!("{STAGE}/{}.jsonl", hour.format("%Y%m%d%H"))
}

/// Parses one object's lines into `tweets` (with their object and sequence), counting. A
/// gzip object (Firehose's `GZIP` compression, or a gzipped upload) is read decompressed; one
/// that does not decompress is quarantined as one record saying so, not as lines of binary.
fn parse_object(
    key: &str,
    bytes: &[u8],
    tweets: &mut Vec<(Post, String)>,
    bad: &mut Vec<BadLine>,
    counts: &mut Counts,
) {
    let unzipped;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        match std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out) {
            Ok(_) => {
                unzipped = out;
                &unzipped[..]
            }
            Err(e) => {
                counts.lines += 1;
                bad.push(BadLine {
                    source: key.to_owned(),
                    line: 1,
                    offset: 0,
                    error: PayloadError {
                        path: ".".into(),
                        message: format!("a gzip object that does not decompress: {e}"),
                    },
                    raw: format!("<{} bytes of gzip>", bytes.len()),
                });
                return;
            }
        }
    } else {
        bytes
    };
    let mut offset = 0u64;
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let start = offset;
        offset += line.len() as u64;
        counts.lines += 1;
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.trim_ascii().is_empty() {
            counts.keep_alives += 1;
            continue;
        }
        let quarantine = |error: PayloadError| BadLine {
            source: key.to_owned(),
            line: i + 1,
            offset: start,
            error,
            raw: String::from_utf8_lossy(body).into_owned(),
        };
        if legacy::is_legacy(body) {
            match legacy::parse_line(&String::from_utf8_lossy(body)) {
                Ok(t) => {
                    counts.legacy_records += 1;
                    counts.tweets += 1;
                    tweets.push((t, key.to_owned()));
                }
                Err(e) => bad.push(quarantine(PayloadError {
                    path: match &e {
                        legacy::LegacyError::Value { field, .. } => (*field).to_owned(),
                        legacy::LegacyError::FieldCount { .. } => "record".into(),
                    },
                    message: format!("legacy TSV: {e}"),
                })),
            }
            continue;
        }
        match parse_record(body.trim_ascii(), None) {
            Ok(p) => {
                counts.api_errors += p.errors.len() as u64;
                counts.tweets += p.posts.len() as u64;
                tweets.extend(p.posts.into_iter().map(|t| (t, key.to_owned())));
            }
            Err(e) => bad.push(quarantine(e)),
        }
    }
}

/// The combined rows of one hour, duplicates dropped (earliest arrival kept, then the first
/// in key and line order), ordered by creation time and id.
pub async fn combine_rows(
    ctx: &SessionContext,
    hour: DateTime<Utc>,
    tweets: &[(Post, String)],
) -> Result<RecordBatch, CombineError> {
    let schema = Stage::Combined.schema();
    if tweets.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let label = hour.format("%Y-%m-%d %H:00").to_string();
    let frame = |source| CombineError::Frame {
        hour: label.clone(),
        source,
    };
    let df = ctx
        .read_batch(input_rows(hour, tweets)?)
        .and_then(rows_frame)
        .map_err(|e| frame(e.into()))?;
    frames::collect(df, &schema).await.map_err(frame)
}

/// What [`rows_frame`] reads: `(post, source object)` rows received in `hour`, as records
/// with `source_object`, `hour` and their order (`_seq`). Its schema does not depend on the
/// rows (an empty slice gives it).
pub fn input_rows(
    hour: DateTime<Utc>,
    tweets: &[(Post, String)],
) -> Result<RecordBatch, CombineError> {
    let label = hour.format("%Y-%m-%d %H:00").to_string();
    let plain: Vec<Post> = tweets.iter().map(|(t, _)| t.clone()).collect();
    let raw = records::to_batch(&plain).map_err(|source| CombineError::Records {
        hour: label.clone(),
        source,
    })?;
    let n = tweets.len();
    let mut fields: Vec<Field> = raw
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = raw.columns().to_vec();
    fields.push(Field::new("source_object", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from_iter_values(
        tweets.iter().map(|(_, k)| k.as_str()),
    )));
    let hour_type = Stage::Combined
        .schema()
        .field_with_name("hour")
        .expect("hour column")
        .data_type()
        .clone();
    fields.push(Field::new("hour", hour_type, false));
    columns.push(Arc::new(
        TimestampMillisecondArray::from(vec![hour.timestamp_millis(); n]).with_timezone("UTC"),
    ));
    fields.push(Field::new("_seq", DataType::UInt64, false));
    columns.push(Arc::new(UInt64Array::from_iter_values(0..n as u64)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| {
        CombineError::Records {
            hour: label,
            source: RecordError::Arrow(e),
        }
    })
}

/// Combine's rule over [`input_rows`], as a plan: one row per platform and id (the earliest
/// arrival, then the first in key and line order), the combined columns, ordered by creation
/// time and id.
pub fn rows_frame(
    df: datafusion::prelude::DataFrame,
) -> Result<datafusion::prelude::DataFrame, datafusion::error::DataFusionError> {
    let keep: Vec<_> = Stage::Combined
        .schema()
        .fields()
        .iter()
        .map(|f| col(f.name()))
        .collect();
    df.distinct_on(
        vec![col("platform"), col("id")],
        keep,
        Some(vec![
            col("platform").sort(true, false),
            col("id").sort(true, false),
            col("received_at").sort(true, false),
            col("_seq").sort(true, false),
        ]),
    )?
    .sort(vec![
        col("created_at").sort(true, false),
        col("id").sort(true, false),
    ])
}

/// Combines every hour under `prefix` of `raw` into `out`; bad lines go to `quarantine`.
/// `progress` is called after each hour.
pub async fn run(
    ctx: &SessionContext,
    raw: &Store,
    prefix: &str,
    out: &Store,
    quarantine: &Store,
    progress: &(dyn Fn(&HourReport, usize, usize) + Sync),
) -> Result<Report, CombineError> {
    let listing = raw.list(prefix).await?;
    let grouped = group_by_hour(listing);
    let mut manifest = Manifest::load(out, STAGE).await?;
    let mut report = Report {
        outside_layout: grouped
            .outside_layout
            .iter()
            .map(|e| e.key.clone())
            .collect(),
        ..Report::default()
    };
    let total = grouped.hours.len();
    // An hour's output depends on its objects and on the ids of the window before it, so its
    // fingerprint chains the fingerprints of the hours in that window.
    let mut chained: BTreeMap<DateTime<Utc>, String> = BTreeMap::new();
    let mut earlier = EarlierIds::default();
    let areas = Areas {
        raw,
        out,
        quarantine,
    };
    for (i, (hour, entries)) in grouped.hours.iter().enumerate() {
        let output = hour_file(*hour);
        let from = window_start(*hour);
        let fp = chained_fingerprint(entries, *hour, &chained);
        chained.insert(*hour, fp.clone());
        earlier.forget_before(from);
        let hour_report = match manifest.done(&output, &fp) {
            Some(done) if out.exists(&output).await? => {
                earlier.later(*hour, &output);
                HourReport {
                    hour: *hour,
                    output,
                    skipped: true,
                    counts: Counts::from_map(&done.counts),
                }
            }
            _ => {
                let seen = earlier.load(out).await?;
                let job = HourJob {
                    hour: *hour,
                    entries,
                    output: &output,
                };
                let (counts, ids) = combine_hour(ctx, &areas, &job, seen).await?;
                earlier.add(*hour, ids);
                manifest.record(&output, fp, counts.to_map());
                manifest.save(out).await?;
                HourReport {
                    hour: *hour,
                    output,
                    skipped: false,
                    counts,
                }
            }
        };
        report.totals.add(&hour_report.counts);
        progress(&hour_report, i + 1, total);
        report.hours.push(hour_report);
    }
    // Outputs of hours whose raw objects are all gone (a full run only): reported, removed
    // only when asked ([`remove_vanished`]) — raw objects also vanish by design (an S3
    // lifecycle rule expiring old raw data), and combined data must not vanish with them.
    if prefix.is_empty() {
        report.vanished = vanished(&manifest, &grouped);
    }
    Ok(report)
}

/// The first hour of the dedup window before `hour`.
fn window_start(hour: DateTime<Utc>) -> DateTime<Utc> {
    hour - chrono::Duration::hours(DEDUP_WINDOW_HOURS)
}

/// An hour's fingerprint: its objects, chained with the fingerprints (`chained`) of the
/// hours in its dedup window, as its output depends on their ids too.
fn chained_fingerprint(
    entries: &[Entry],
    hour: DateTime<Utc>,
    chained: &BTreeMap<DateTime<Utc>, String>,
) -> String {
    let mut fp = Fingerprint::new(STAGE);
    fp.add_entries(entries);
    for (h, f) in chained.range(window_start(hour)..hour) {
        fp.add(h.to_rfc3339()).add(f);
    }
    fp.finish()
}

/// The outputs the manifest records for hours without raw objects now.
fn vanished(manifest: &Manifest, grouped: &Hours) -> Vec<String> {
    let live: std::collections::BTreeSet<String> =
        grouped.hours.keys().map(|h| hour_file(*h)).collect();
    manifest
        .outputs
        .keys()
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect()
}

/// Removes the outputs `report` found without raw objects, and their manifest entries.
pub async fn remove_vanished(out: &Store, report: &mut Report) -> Result<(), CombineError> {
    if report.vanished.is_empty() {
        return Ok(());
    }
    let mut manifest = Manifest::load(out, STAGE).await?;
    for output in &report.vanished {
        if out.exists(output).await? {
            out.delete(output).await?;
        }
        manifest.outputs.remove(output);
        report.removed.push(output.clone());
    }
    manifest.save(out).await?;
    Ok(())
}

/// A post's key: ids are unique per platform.
type Key = (flagship_core::Platform, String);

/// The ids combined in the hours of the window before the one being combined: loaded from
/// the outputs of skipped hours only when a later hour needs them.
#[derive(Default)]
struct EarlierIds {
    hours: BTreeMap<DateTime<Utc>, Earlier>,
}

enum Earlier {
    Unread(String),
    Ids(HashSet<Key>),
}

impl EarlierIds {
    fn forget_before(&mut self, from: DateTime<Utc>) {
        self.hours = self.hours.split_off(&from);
    }

    fn later(&mut self, hour: DateTime<Utc>, output: &str) {
        self.hours.insert(hour, Earlier::Unread(output.to_owned()));
    }

    fn add(&mut self, hour: DateTime<Utc>, ids: HashSet<Key>) {
        self.hours.insert(hour, Earlier::Ids(ids));
    }

    async fn load(&mut self, out: &Store) -> Result<Vec<&HashSet<Key>>, CombineError> {
        for (hour, e) in self.hours.iter_mut() {
            if let Earlier::Unread(output) = e {
                let (_, batches) = out.read_parquet(output).await?;
                let mut ids = HashSet::new();
                for b in &batches {
                    let tweets =
                        records::from_batch(b).map_err(|source| CombineError::Records {
                            hour: hour.format("%Y-%m-%d %H:00").to_string(),
                            source,
                        })?;
                    ids.extend(tweets.into_iter().map(|t| (t.platform, t.id)));
                }
                *e = Earlier::Ids(ids);
            }
        }
        Ok(self
            .hours
            .values()
            .filter_map(|e| match e {
                Earlier::Ids(ids) => Some(ids),
                Earlier::Unread(_) => None,
            })
            .collect())
    }
}

/// The three areas combine works between: raw objects in; the combined hours and the
/// quarantined lines out.
struct Areas<'a> {
    raw: &'a Store,
    out: &'a Store,
    quarantine: &'a Store,
}

/// One hour to combine: its arrival hour, its raw objects (in arrival order) and the name
/// of its output file.
struct HourJob<'a> {
    hour: DateTime<Utc>,
    entries: &'a [Entry],
    output: &'a str,
}

/// Combines one hour: reads and parses its objects, drops the ids of `earlier` hours, writes
/// its quarantine file (or removes a stale one), then its output. Returns its counts and the
/// ids it combined.
async fn combine_hour(
    ctx: &SessionContext,
    areas: &Areas<'_>,
    job: &HourJob<'_>,
    earlier: Vec<&HashSet<Key>>,
) -> Result<(Counts, HashSet<Key>), CombineError> {
    let Areas {
        raw,
        out,
        quarantine,
    } = *areas;
    let HourJob {
        hour,
        entries,
        output,
    } = *job;
    let objects: Vec<(String, Bytes)> = futures::stream::iter(
        entries
            .iter()
            .map(|e| async { raw.get(&e.key).await.map(|b| (e.key.clone(), b)) }),
    )
    .buffered(8)
    .try_collect()
    .await?;
    let mut counts = Counts {
        objects: entries.len() as u64,
        ..Counts::default()
    };
    let (mut tweets, mut bad) = (Vec::new(), Vec::new());
    for (key, bytes) in &objects {
        parse_object(key, bytes, &mut tweets, &mut bad, &mut counts);
    }
    let before = tweets.len();
    tweets.retain(|(t, _)| {
        let key = (t.platform, t.id.clone());
        !earlier.iter().any(|ids| ids.contains(&key))
    });
    counts.duplicates_of_earlier_hours = (before - tweets.len()) as u64;
    let ids: HashSet<Key> = tweets
        .iter()
        .map(|(t, _)| (t.platform, t.id.clone()))
        .collect();
    let batch = combine_rows(ctx, hour, &tweets).await?;
    counts.rows = batch.num_rows() as u64;
    counts.duplicates = counts.tweets - counts.rows;
    counts.quarantined = bad.len() as u64;
    // Quarantine first: the output (which marks the hour done) never exists without it.
    let qkey = quarantine_key(hour);
    if bad.is_empty() {
        if quarantine.exists(&qkey).await? {
            quarantine.delete(&qkey).await?;
        }
    } else {
        let text: String = bad
            .iter()
            .map(|b| serde_json::to_string(b).expect("BadLine serializes") + "\n")
            .collect();
        quarantine.put(&qkey, Bytes::from(text)).await?;
    }
    out.write_parquet(output, &Stage::Combined.schema(), &[batch])
        .await?;
    Ok((counts, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn gzip_objects_are_read_and_a_broken_one_is_one_quarantined_record() {
        use std::io::Write;
        let text = b"{\"data\":{\"id\":\"7\",\"text\":\"hello\"}}\n{}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        let gz = gz.finish().unwrap();
        let (mut tweets, mut bad, mut counts) = (Vec::new(), Vec::new(), Counts::default());
        parse_object("k.gz", &gz, &mut tweets, &mut bad, &mut counts);
        // `{}` is not a payload: quarantined, never silently dropped.
        assert_eq!((tweets.len(), bad.len(), counts.lines), (1, 1, 2));
        assert!(bad[0].error.message.contains("not an X API v2 payload"));
        let (mut tweets, mut bad, mut counts) = (Vec::new(), Vec::new(), Counts::default());
        parse_object(
            "broken.gz",
            &gz[..gz.len() / 2],
            &mut tweets,
            &mut bad,
            &mut counts,
        );
        assert_eq!((tweets.len(), bad.len()), (0, 1));
        assert!(bad[0].error.message.contains("gzip"), "{:?}", bad[0]);
    }
    use flagship_core::layout::object_key;
    use flagship_store::storage::{Location, S3Options};

    #[tokio::test]
    async fn groups_a_real_listing_by_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &Location::Local(dir.path().to_owned()),
            &S3Options::default(),
        )
        .unwrap();
        let t = |h, m| Utc.with_ymd_and_hms(2022, 1, 9, h, m, 0).unwrap();
        for (at, id) in [(t(23, 59), "c"), (t(23, 1), "b"), (t(22, 30), "a")] {
            let key = object_key("kinesis-demo", "s", at, id);
            store.put(&key, Bytes::from_static(b"{}\n")).await.unwrap();
        }
        store
            .put("kinesis-demo/README", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let g = group_by_hour(store.list("kinesis-demo").await.unwrap());
        let counts: Vec<(u32, usize)> = g
            .hours
            .iter()
            .map(|(h, v)| (chrono::Timelike::hour(h), v.len()))
            .collect();
        assert_eq!(counts, [(22, 1), (23, 2)]);
        assert!(g.hours[&t(23, 0)][0].key.ends_with("-b"));
        assert_eq!(g.outside_layout.len(), 1);
        assert_eq!(g.outside_layout[0].key, "kinesis-demo/README");
    }

    #[tokio::test]
    async fn outputs_of_hours_whose_input_vanished_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            Store::open(
                &Location::Local(dir.path().join(name)),
                &S3Options::default(),
            )
            .unwrap()
        };
        let (raw, out, q) = (open("raw"), open("combined"), open("quarantine"));
        let t = |h| Utc.with_ymd_and_hms(2022, 1, 9, h, 5, 0).unwrap();
        let line = |id: u32| format!("{{\"data\":{{\"id\":\"{id}\",\"text\":\"hi\"}}}}\n");
        raw.put(&object_key("", "s", t(1), "a"), line(1).into())
            .await
            .unwrap();
        raw.put(&object_key("", "s", t(2), "b"), line(2).into())
            .await
            .unwrap();
        let ctx = flagship_store::frames::local_session();
        let r = run(&ctx, &raw, "", &out, &q, &|_, _, _| {}).await.unwrap();
        assert_eq!((r.hours.len(), r.removed.len()), (2, 0));
        raw.delete(&object_key("", "s", t(2), "b")).await.unwrap();
        let mut r = run(&ctx, &raw, "", &out, &q, &|_, _, _| {}).await.unwrap();
        // Reported and kept unless asked: raw data also expires by design.
        assert_eq!(r.vanished.len(), 1);
        assert!(out.exists(&r.vanished[0]).await.unwrap());
        assert!(
            r.to_string()
                .contains("1 outputs whose raw objects are gone (kept"),
            "{r}"
        );
        remove_vanished(&out, &mut r).await.unwrap();
        assert_eq!(
            r.removed,
            [hour_file(
                Utc.with_ymd_and_hms(2022, 1, 9, 2, 0, 0).unwrap()
            )]
        );
        assert!(!out.exists(&r.removed[0]).await.unwrap());
        assert!(
            out.exists(&hour_file(
                Utc.with_ymd_and_hms(2022, 1, 9, 1, 0, 0).unwrap()
            ))
            .await
            .unwrap()
        );
        assert!(
            r.to_string()
                .contains("1 outputs of vanished hours removed"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn an_id_combined_in_an_earlier_hour_is_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            Store::open(
                &Location::Local(dir.path().join(name)),
                &S3Options::default(),
            )
            .unwrap()
        };
        let (raw, out, q) = (open("raw"), open("combined"), open("quarantine"));
        let t = |d, h| Utc.with_ymd_and_hms(2022, 1, d, h, 5, 0).unwrap();
        let line = |id: u32| format!("{{\"data\":{{\"id\":\"{id}\",\"text\":\"hi\"}}}}\n");
        raw.put(
            &object_key("", "s", t(9, 1), "a"),
            (line(1) + &line(2)).into(),
        )
        .await
        .unwrap();
        let ctx = flagship_store::frames::local_session();
        // Per hour: (skipped, rows, duplicates first seen in an earlier hour).
        let per_hour = |r: &Report| -> Vec<(bool, u64, u64)> {
            r.hours
                .iter()
                .map(|h| {
                    (
                        h.skipped,
                        h.counts.rows,
                        h.counts.duplicates_of_earlier_hours,
                    )
                })
                .collect()
        };
        run(&ctx, &raw, "", &out, &q, &|_, _, _| {}).await.unwrap();
        // A spill file sent two hours later repeats id 2; a week later, id 1 comes back.
        raw.put(
            &object_key("", "s", t(9, 3), "b"),
            (line(2) + &line(3)).into(),
        )
        .await
        .unwrap();
        raw.put(&object_key("", "s", t(17, 3), "c"), line(1).into())
            .await
            .unwrap();
        let r = run(&ctx, &raw, "", &out, &q, &|_, _, _| {}).await.unwrap();
        // The first hour was kept and its ids read back; past the window an id counts anew.
        assert_eq!(per_hour(&r), [(true, 2, 0), (false, 1, 1), (false, 1, 0)]);
        assert_eq!(r.totals.duplicates, 1);
        assert!(
            r.to_string()
                .contains("1 of them first seen in an earlier hour"),
            "{r}"
        );
        // A change to the first hour is a change to the hours that depend on it.
        raw.put(&object_key("", "s", t(9, 1), "a2"), line(3).into())
            .await
            .unwrap();
        let r = run(&ctx, &raw, "", &out, &q, &|_, _, _| {}).await.unwrap();
        // The hour past the window does not depend on it and is kept.
        assert_eq!(per_hour(&r), [(false, 3, 0), (false, 0, 2), (true, 1, 0)]);
    }
}
