//! flagship-textproc: cleans tweet text and derives the features later stages group by.
//!
//! Every step is a DataFusion expression built from built-in functions ([`features`]), so one
//! logical plan runs in this process or on a Ballista cluster; no row-by-row Rust UDF. From
//! the filtered `text` it derives
//! - `text_model`: what the classifier reads — `&amp; &lt; &gt;` unescaped, URLs and
//!   @mentions removed, hashtag words kept (`#JWST` → `JWST`), every whitespace run (tabs,
//!   newlines) one space — a newline never joins two words — trimmed; case and punctuation kept;
//! - `text_analysis`: the seed's aggressive form for word statistics — `text_model` lower-cased,
//!   every run of characters outside `a-z` one space (the seed's `[^a-zA-z]` typo, which kept
//!   `[ \ ] ^ _` and backticks, is fixed);
//! - `num_words` (whitespace-separated words of `text_model`), `word_bin` (the seed's 5-word
//!   bins, "20-25" label kept), `hour_of_day`, `weekday`, `time_of_day` (the seed's 4-hour
//!   buckets, right-closed, hour 0 in Late Night), `client` (`source`).
//!
//! Retweet / reply / quote flags are not derived here: they come from `referenced_tweets`
//! at parse time (never from a leading "RT", the seed's defect). [`run`] applies the plan to
//! every filtered hour file. It never drops a row and never changes `text`.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch, StringArray};
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::{
    btrim, date_part, lower, regexp_count, regexp_replace, replace, to_char,
};
use datafusion::logical_expr::{Expr, lit, when};
use datafusion::prelude::{DataFrame, SessionContext, col};
use flagship_core::features::{TIME_OF_DAY, word_bin};
use flagship_core::schema::Stage;
use flagship_store::Store;
use flagship_store::frames::{self, FrameError, HourDone, HoursError};

pub const STAGE: &str = "textproc";

fn g() -> Option<Expr> {
    Some(lit("g"))
}

/// `text` cleaned for the model (see the crate docs).
pub fn model_text(text: Expr) -> Expr {
    // &amp; last, so "&amp;lt;" becomes "&lt;" (one level of escaping, as X sends it).
    let t = replace(
        replace(replace(text, lit("&lt;"), lit("<")), lit("&gt;"), lit(">")),
        lit("&amp;"),
        lit("&"),
    );
    let t = regexp_replace(t, lit(r"(?i)\b(?:https?://|www\.)\S+"), lit(" "), g());
    let t = regexp_replace(t, lit(r"\B@\w+"), lit(" "), g());
    let t = regexp_replace(t, lit(r"#(\w+)"), lit(r"\1"), g());
    btrim(vec![regexp_replace(t, lit(r"\s+"), lit(" "), g())])
}

/// The seed's analysis text, from the model text.
pub fn analysis_text(model: Expr) -> Expr {
    btrim(vec![regexp_replace(
        lower(model),
        lit("[^a-z]+"),
        lit(" "),
        g(),
    )])
}

/// The word-count bin of `n` words, as [`word_bin`] names it (`flagship_core::features`).
fn word_bin_expr(n: Expr) -> Expr {
    let mut b = when(n.clone().lt_eq(lit(5i64)), lit(word_bin(0)));
    for i in 1..12u32 {
        b.when(
            n.clone().lt_eq(lit(i64::from(5 * (i + 1)))),
            lit(word_bin(5 * i + 1)),
        );
    }
    b.otherwise(lit(word_bin(61))).expect("a valid CASE")
}

fn time_of_day_expr(hour: Expr) -> Expr {
    let null = lit(ScalarValue::Utf8(None));
    let mut b = when(hour.clone().is_null(), null);
    for (upper, label) in [(4i64, 0usize), (8, 1), (12, 2), (16, 3), (20, 4)] {
        b.when(hour.clone().lt_eq(lit(upper)), lit(TIME_OF_DAY[label]));
    }
    b.otherwise(lit(TIME_OF_DAY[5])).expect("a valid CASE")
}

/// `df` (with `text`, `created_at`, `source`) plus the processed columns.
pub fn features(df: DataFrame) -> Result<DataFrame, FrameError> {
    let hour = date_part(lit("hour"), col("created_at"));
    let words = regexp_count(col("text_model"), lit(r"\S+"), None, None);
    Ok(df
        .with_column("text_model", model_text(col("text")))?
        .with_column("text_analysis", analysis_text(col("text_model")))?
        .with_column("num_words", words.clone())?
        .with_column("word_bin", word_bin_expr(words))?
        .with_column("hour_of_day", hour.clone())?
        .with_column("weekday", to_char(col("created_at"), lit("%A")))?
        .with_column("time_of_day", time_of_day_expr(hour))?
        .with_column("client", col("source"))?
        .sort(vec![
            col("created_at").sort(true, false),
            col("id").sort(true, false),
        ])?)
}

/// Processes one hour's DataFrame: the processed rows and their counts.
pub async fn process_frame(
    df: DataFrame,
) -> Result<(RecordBatch, BTreeMap<String, u64>), FrameError> {
    let batch = frames::collect(features(df)?, &Stage::Processed.schema()).await?;
    let model = batch
        .column_by_name("text_model")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .expect("text_model is utf8 after conform");
    let empty = (0..model.len())
        .filter(|&i| model.value(i).is_empty())
        .count();
    let counts = BTreeMap::from([
        ("rows".to_owned(), batch.num_rows() as u64),
        ("empty_text_model".to_owned(), empty as u64),
    ]);
    Ok((batch, counts))
}

/// Processes every filtered hour of `input` into `output` (unchanged hours skipped).
pub async fn run(
    ctx: &SessionContext,
    input: &Store,
    output: &Store,
    concurrency: usize,
    progress: &(dyn Fn(&HourDone, usize, usize) + Sync),
) -> Result<Vec<HourDone>, HoursError> {
    let hourly = frames::HourlyStage {
        stage: STAGE,
        settings: "textproc/1",
        input,
        output,
        schema: &Stage::Processed.schema(),
        concurrency,
    };
    frames::run_hours(ctx, &hourly, process_frame, progress).await
}
