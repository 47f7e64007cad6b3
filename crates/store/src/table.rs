//! Example files for `train` and `predict`: JSONL, CSV or Parquet (`.gz` for the text formats),
//! with a `text` column and, for training, a `label` column (0 negative, 1 neutral,
//! 2 positive). Read into Arrow so every input column survives into the predictions file.
//! Lines that are not JSON objects are set aside with their line number; rows with a bad label
//! are counted and named, never silently used.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema};
use flagship_core::labels::{self, Example};

use crate::fs::{persist, temp_beside, write_atomic};

/// A table that cannot be read or written; the message names the file (and line, column).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TableError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TableError {
    fn msg(message: String) -> TableError {
        TableError {
            message,
            source: None,
        }
    }
}

macro_rules! from_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for TableError {
            fn from(e: $t) -> TableError {
                TableError { message: e.to_string(), source: Some(Box::new(e)) }
            }
        }
    )*};
}
from_errors!(
    arrow::error::ArrowError,
    parquet::errors::ParquetError,
    std::io::Error,
    crate::fs::WriteError,
    serde_json::Error
);

type Result<T, E = TableError> = std::result::Result<T, E>;

/// `anyhow`-style context for this module's errors.
trait Context<T> {
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| TableError {
            message: format!("{}: {e}", f()),
            source: Some(Box::new(e)),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| TableError::msg(f()))
    }
}

macro_rules! bail {
    ($($t:tt)*) => { return Err(TableError::msg(format!($($t)*))) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Parquet,
}

/// Format and compression from the file name: `x.jsonl`, `x.json`, `x.ndjson`, `x.csv`,
/// `x.parquet`, each text format optionally `.gz`.
pub fn format_of(path: &Path) -> Result<(Format, bool)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let (stem, gz) = match name.strip_suffix(".gz") {
        Some(s) => (s.to_string(), true),
        None => (name.clone(), false),
    };
    let format = match stem.rsplit('.').next() {
        Some("jsonl" | "json" | "ndjson") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some("parquet") if !gz => Format::Parquet,
        _ => bail!(
            "{}: unknown format (use .jsonl, .csv or .parquet; .jsonl.gz and .csv.gz too)",
            path.display()
        ),
    };
    Ok((format, gz))
}

fn open_text(path: &Path, gz: bool) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::new(f))
    })
}

/// A row whose label is missing or not 0/1/2: its line and the label as written.
pub type BadLabel = (usize, String);

/// A line of a JSONL file that is not a JSON object.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub line: usize,
    pub error: String,
    pub raw: String,
}

/// An example file, read.
pub struct Table {
    pub path: PathBuf,
    pub batch: RecordBatch,
    /// Input line (JSONL, CSV: 1-based incl. header) or row (Parquet: 0-based) of each row.
    pub lines: Vec<usize>,
    pub bad_lines: Vec<BadLine>,
    /// The column holding the texts to classify (`text` unless [`Table::with_text_column`]).
    pub text: String,
}

impl Table {
    /// Reads the texts from `name` instead of `text` (the pipeline trains on textproc's
    /// cleaned `text_model`).
    pub fn with_text_column(mut self, name: &str) -> Table {
        name.clone_into(&mut self.text);
        self
    }

    pub fn read(path: &Path) -> Result<Table> {
        let (format, gz) = format_of(path)?;
        let (batch, lines, bad_lines) = match format {
            Format::Jsonl => read_jsonl(path, gz)?,
            Format::Csv => {
                let b = read_csv(path, gz)?;
                let lines = (0..b.num_rows()).map(|i| i + 2).collect();
                (b, lines, Vec::new())
            }
            Format::Parquet => {
                let f =
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                        .with_context(|| format!("{}: not a Parquet file", path.display()))?
                        .build()?;
                let schema = reader.schema();
                let batches = reader.collect::<Result<Vec<_>, _>>()?;
                let b = concat_batches(&schema, &batches)?;
                let lines = (0..b.num_rows()).collect();
                (b, lines, Vec::new())
            }
        };
        Ok(Table {
            path: path.to_owned(),
            batch,
            lines,
            bad_lines,
            text: "text".into(),
        })
    }

    fn column(&self, name: &str) -> Option<&ArrayRef> {
        self.batch.column_by_name(name)
    }

    /// Column `name` as text, or an error naming the file, the column and what is there.
    fn text_column(&self, name: &str, what: &str) -> Result<ArrayRef> {
        let col = self.column(name).with_context(|| {
            format!(
                "{}: no `{name}` column ({what}) — columns: {}",
                self.path.display(),
                self.column_names().join(", ")
            )
        })?;
        cast(col, &DataType::Utf8)
            .with_context(|| format!("{}: column `{name}` is not text", self.path.display()))
    }

    /// The `text` column (null → empty string, counted by [`Table::null_texts`]).
    pub fn texts(&self) -> Result<Vec<String>> {
        let s = self.text_column(&self.text, "the texts to classify")?;
        let s = s.as_any().downcast_ref::<StringArray>().expect("utf8");
        Ok(s.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
    }

    /// Column `name` cast to `ty`, every row required: a null is an error naming its line.
    fn required<T>(
        &self,
        name: &str,
        ty: DataType,
        values: impl Fn(&dyn Array) -> Vec<Option<T>>,
    ) -> Result<Vec<T>> {
        let col = self
            .column(name)
            .with_context(|| format!("{}: no `{name}` column", self.path.display()))?;
        let c = cast(col, &ty)
            .with_context(|| format!("{}: column `{name}` is not {ty}", self.path.display()))?;
        values(c.as_ref())
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.with_context(|| {
                    let line = self.lines[i];
                    format!("{}: line {line}: `{name}` is empty", self.path.display())
                })
            })
            .collect()
    }

    /// A numeric column as f64.
    pub fn f64_column(&self, name: &str) -> Result<Vec<f64>> {
        self.required(name, DataType::Float64, |a| {
            let a = a.as_any().downcast_ref::<arrow::array::Float64Array>();
            a.expect("f64").iter().collect()
        })
    }

    /// A boolean column (`true`/`false`, 1/0).
    pub fn bool_column(&self, name: &str) -> Result<Vec<bool>> {
        self.required(name, DataType::Boolean, |a| {
            let a = a.as_any().downcast_ref::<BooleanArray>();
            a.expect("bool").iter().collect()
        })
    }

    /// A column as optional strings (any type, cast to text).
    pub fn string_column(&self, name: &str) -> Result<Vec<Option<String>>> {
        let s = self.text_column(name, "")?;
        let s = s.as_any().downcast_ref::<StringArray>().expect("utf8");
        Ok(s.iter().map(|v| v.map(str::to_owned)).collect())
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.column(name).is_some()
    }

    pub fn null_texts(&self) -> usize {
        self.column(&self.text).map_or(0, |c| c.null_count())
    }

    fn column_names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The `label` column as 0/1/2; `Err((line, value))` for a row whose label is missing or
    /// outside 0–2.
    pub fn labels(&self) -> Result<Vec<Result<u8, BadLabel>>> {
        let s = self.text_column("label", "0 negative, 1 neutral, 2 positive")?;
        let s = s.as_any().downcast_ref::<StringArray>().expect("utf8");
        Ok((0..s.len())
            .map(|i| {
                let written = s.is_valid(i).then(|| s.value(i));
                written
                    .and_then(labels::parse)
                    .ok_or_else(|| (self.lines[i], written.unwrap_or("null").trim().to_owned()))
            })
            .collect())
    }

    /// Each row's target from its `label` (`flagship_core::labels`): `None` where the label is
    /// missing or not 0/1/2.
    pub fn targets(&self) -> Result<Vec<Option<bool>>> {
        Ok(self
            .labels()?
            .into_iter()
            .map(|l| l.ok().and_then(|l| labels::need_support(l.into())))
            .collect())
    }

    /// Labelled examples (`need_support` = label ≤ 1) and the rows left out for a bad label
    /// (line, label as written).
    pub fn examples(&self) -> Result<(Vec<Example>, Vec<BadLabel>)> {
        let mut bad = Vec::new();
        let mut out = Vec::new();
        for (text, label) in self.texts()?.into_iter().zip(self.labels()?) {
            match label {
                Ok(l) => out.push(Example {
                    text,
                    need_support: labels::need_support(l.into()) == Some(true),
                    label: Some(l),
                }),
                Err(e) => bad.push(e),
            }
        }
        Ok((out, bad))
    }

    /// Writes the input columns plus `need_support_probability` and `need_support` to `out`
    /// (format from its name), through a temporary file renamed into place.
    pub fn write_with_predictions(&self, out: &Path, probs: &[f32], flags: &[bool]) -> Result<()> {
        let mut fields: Vec<Field> = self
            .batch
            .schema()
            .fields()
            .iter()
            .filter(|f| {
                !matches!(
                    f.name().as_str(),
                    "need_support_probability" | "need_support"
                )
            })
            .map(|f| f.as_ref().clone())
            .collect();
        let mut cols: Vec<ArrayRef> = fields
            .iter()
            .map(|f| self.batch.column_by_name(f.name()).expect("field").clone())
            .collect();
        fields.push(Field::new(
            "need_support_probability",
            DataType::Float32,
            false,
        ));
        fields.push(Field::new("need_support", DataType::Boolean, false));
        cols.push(Arc::new(Float32Array::from(probs.to_vec())));
        cols.push(Arc::new(BooleanArray::from(flags.to_vec())));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        write_batch(out, &batch)
    }
}

/// Writes `batch` to `out` (format from its name) atomically.
pub fn write_batch(out: &Path, batch: &RecordBatch) -> Result<()> {
    let (format, gz) = format_of(out)?;
    if gz {
        bail!(
            "{}: write uncompressed output (.jsonl, .csv, .parquet)",
            out.display()
        );
    }
    let mut tmp = temp_beside(out)?;
    {
        let w = tmp.as_file_mut();
        match format {
            Format::Jsonl => {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut *w);
                writer.write(batch)?;
                writer.finish()?;
            }
            Format::Csv => {
                let mut writer = arrow::csv::Writer::new(&mut *w);
                writer.write(batch)?;
            }
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let mut writer =
                    parquet::arrow::ArrowWriter::try_new(&mut *w, batch.schema(), Some(props))?;
                writer.write(batch)?;
                writer.close()?;
            }
        }
        w.flush()?;
    }
    persist(tmp, out)?;
    Ok(())
}

fn read_jsonl(path: &Path, gz: bool) -> Result<(RecordBatch, Vec<usize>, Vec<BadLine>)> {
    let mut good = String::new();
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    let mut reader = open_text(path, gz)?;
    let mut raw = Vec::new();
    let mut n = 0;
    let mut order: Vec<String> = Vec::new();
    loop {
        raw.clear();
        if reader
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("{}: read failed after line {n}", path.display()))?
            == 0
        {
            break;
        }
        n += 1;
        // Text is never guessed: a line that is not UTF-8 is set aside, not turned into U+FFFD.
        let text = match std::str::from_utf8(&raw) {
            Ok(t) => t,
            Err(e) => {
                bad.push(BadLine {
                    line: n,
                    error: format!("not UTF-8 (invalid byte at {})", e.valid_up_to()),
                    raw: String::from_utf8_lossy(&raw).trim_end().to_owned(),
                });
                continue;
            }
        };
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => {
                if let Ok(Keys(keys)) = serde_json::from_str::<Keys>(line) {
                    for k in keys {
                        if !order.contains(&k) {
                            order.push(k);
                        }
                    }
                }
                good.push_str(line);
                good.push('\n');
                lines.push(n);
            }
            Ok(_) => bad.push(BadLine {
                line: n,
                error: "not a JSON object".into(),
                raw: line.to_owned(),
            }),
            Err(e) => bad.push(BadLine {
                line: n,
                error: e.to_string(),
                raw: line.to_owned(),
            }),
        }
    }
    if lines.is_empty() {
        bail!(
            "{}: no JSON objects ({} lines, {} malformed)",
            path.display(),
            n,
            bad.len()
        );
    }
    let (schema, _) = arrow::json::reader::infer_json_schema(std::io::Cursor::new(&good), None)
        .with_context(|| format!("{}: cannot infer columns", path.display()))?;
    // Inference sorts the keys; keep the file's order instead.
    let schema = Arc::new(Schema::new(
        order
            .iter()
            .filter_map(|k| schema.field_with_name(k).ok().cloned())
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build(std::io::Cursor::new(good))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: rows do not share column types", path.display()))?;
    Ok((concat_batches(&schema, &batches)?, lines, bad))
}

fn read_csv(path: &Path, gz: bool) -> Result<RecordBatch> {
    let mut bytes = Vec::new();
    open_text(path, gz)?.read_to_end(&mut bytes)?;
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(std::io::Cursor::new(&bytes), None)
        .with_context(|| format!("{}: cannot read CSV header/columns", path.display()))?;
    // Keep ids and labels as written: every column read as text, labels parsed later.
    let schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(std::io::Cursor::new(bytes))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: malformed CSV", path.display()))?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Quarantine file of bad lines: one JSON object per line with file, line, error and raw text.
pub fn write_bad_lines(out: &Path, source: &Path, bad: &[BadLine]) -> Result<()> {
    let mut text = String::new();
    for b in bad {
        text.push_str(
            &serde_json::json!({
                "source": source.display().to_string(),
                "line": b.line,
                "error": b.error,
                "raw": b.raw,
            })
            .to_string(),
        );
        text.push('\n');
    }
    Ok(write_atomic(out, text.as_bytes())?)
}

/// The keys of a JSON object, in the order written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}
