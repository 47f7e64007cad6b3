//! [`Post`] ⇄ Arrow [`RecordBatch`] in the raw schema, and Parquet bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, ListArray, ListBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt64Array, UInt64Builder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use flagship_core::Post;
use flagship_core::schema::{self, SchemaError, Stage};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("row {row}: column `{field}` is null but the record requires it")]
    Null { row: usize, field: &'static str },
    #[error("row {row}: column `{field}`: {message}")]
    Value {
        row: usize,
        field: &'static str,
        message: String,
    },
}

fn ts(tweets: &[Post], f: fn(&Post) -> Option<DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from_iter(
            tweets.iter().map(|t| f(t).map(|d| d.timestamp_millis())),
        )
        .with_timezone("UTC"),
    )
}
fn u64s(tweets: &[Post], f: fn(&Post) -> Option<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter(tweets.iter().map(f)))
}
fn strs(tweets: &[Post], f: fn(&Post) -> Option<&str>) -> ArrayRef {
    Arc::new(StringArray::from_iter(tweets.iter().map(f)))
}
fn bools(tweets: &[Post], f: fn(&Post) -> Option<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(tweets.iter().map(f)))
}
fn str_lists(tweets: &[Post], f: fn(&Post) -> &[String]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for t in tweets {
        for s in f(t) {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Builds a raw-schema batch from tweets.
pub fn to_batch(tweets: &[Post]) -> Result<RecordBatch, RecordError> {
    let mut edits = ListBuilder::new(UInt64Builder::new());
    for t in tweets {
        edits.values().append_slice(&t.edit_history_ids);
        edits.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strs(tweets, |t| Some(t.platform.as_str())),
        strs(tweets, |t| Some(&t.id)),
        strs(tweets, |t| t.url.as_deref()),
        ts(tweets, |t| t.created_at),
        strs(tweets, |t| Some(&t.text)),
        strs(tweets, |t| t.lang.as_deref()),
        strs(tweets, |t| t.source.as_deref()),
        u64s(tweets, |t| t.author_id),
        strs(tweets, |t| t.author_username.as_deref()),
        strs(tweets, |t| t.author_name.as_deref()),
        strs(tweets, |t| t.author_location.as_deref()),
        bools(tweets, |t| t.author_verified),
        u64s(tweets, |t| t.author_followers),
        ts(tweets, |t| t.author_created_at),
        u64s(tweets, |t| t.conversation_id),
        u64s(tweets, |t| t.in_reply_to_user_id),
        bools(tweets, |t| Some(t.is_retweet)),
        bools(tweets, |t| Some(t.is_reply)),
        bools(tweets, |t| Some(t.is_quote)),
        u64s(tweets, |t| t.retweeted_id),
        u64s(tweets, |t| t.replied_to_id),
        u64s(tweets, |t| t.quoted_id),
        strs(tweets, |t| t.referenced_text.as_deref()),
        str_lists(tweets, |t| &t.hashtags),
        str_lists(tweets, |t| &t.mentions),
        str_lists(tweets, |t| &t.urls),
        u64s(tweets, |t| t.retweet_count),
        u64s(tweets, |t| t.reply_count),
        u64s(tweets, |t| t.like_count),
        u64s(tweets, |t| t.quote_count),
        bools(tweets, |t| t.possibly_sensitive),
        str_lists(tweets, |t| &t.withheld_in),
        Arc::new(edits.finish()),
        strs(tweets, |t| t.place_id.as_deref()),
        strs(tweets, |t| t.place_full_name.as_deref()),
        strs(tweets, |t| t.place_country_code.as_deref()),
        str_lists(tweets, |t| &t.matching_rules),
        ts(tweets, |t| t.received_at),
        strs(tweets, |t| t.cid.as_deref()),
        json_strs(tweets, |t| t.reply_parent.as_ref()),
        json_strs(tweets, |t| t.reply_root.as_ref()),
    ];
    Ok(RecordBatch::try_new(Stage::Raw.schema(), columns)?)
}

/// A post reference as its column holds it (JSON), or null.
fn json_strs(tweets: &[Post], f: impl Fn(&Post) -> Option<&flagship_core::PostRef>) -> ArrayRef {
    let v: Vec<Option<String>> = tweets
        .iter()
        .map(|t| f(t).map(|r| serde_json::to_string(r).expect("a reference serialises")))
        .collect();
    Arc::new(StringArray::from(v))
}

/// Typed column access; the schema was checked first, so a failed downcast is a bug.
struct Cols<'a>(&'a RecordBatch);

impl<'a> Cols<'a> {
    /// A string column an older file may lack (then null).
    fn opt_str(&self, name: &str, i: usize) -> Option<String> {
        self.0.column_by_name(name).and_then(|_| self.str(name, i))
    }

    /// A JSON post reference, or null (also when an older file lacks the column).
    fn json(
        &self,
        name: &'static str,
        i: usize,
    ) -> Result<Option<flagship_core::PostRef>, RecordError> {
        match self.opt_str(name, i) {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| RecordError::Value {
                    row: i,
                    field: name,
                    message: e.to_string(),
                }),
        }
    }

    fn get<T: Array + 'static>(&self, name: &str) -> &'a T {
        self.0
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .unwrap_or_else(|| panic!("column `{name}` passed schema::check but has another type"))
    }
    fn ts(&self, name: &str, i: usize) -> Option<DateTime<Utc>> {
        let a: &TimestampMillisecondArray = self.get(name);
        a.is_valid(i)
            .then(|| DateTime::from_timestamp_millis(a.value(i)))
            .flatten()
    }
    fn u64(&self, name: &str, i: usize) -> Option<u64> {
        let a: &UInt64Array = self.get(name);
        a.is_valid(i).then(|| a.value(i))
    }
    fn str(&self, name: &str, i: usize) -> Option<String> {
        let a: &StringArray = self.get(name);
        a.is_valid(i).then(|| a.value(i).to_owned())
    }
    fn bool(&self, name: &str, i: usize) -> Option<bool> {
        let a: &BooleanArray = self.get(name);
        a.is_valid(i).then(|| a.value(i))
    }
    /// The items of a list cell, through `values` on the item array.
    fn list<A: Array + 'static, V>(
        &self,
        name: &str,
        i: usize,
        values: fn(&A) -> Vec<V>,
    ) -> Vec<V> {
        let a: &ListArray = self.get(name);
        if a.is_null(i) {
            return Vec::new();
        }
        let items = a.value(i);
        values(
            items
                .as_any()
                .downcast_ref::<A>()
                .expect("checked list item type"),
        )
    }
    fn strs(&self, name: &str, i: usize) -> Vec<String> {
        self.list(name, i, |s: &StringArray| {
            s.iter().flatten().map(str::to_owned).collect()
        })
    }
    fn u64s(&self, name: &str, i: usize) -> Vec<u64> {
        self.list(name, i, |s: &UInt64Array| s.iter().flatten().collect())
    }
}

/// Reads tweets back from any batch whose schema contains the raw columns.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Post>, RecordError> {
    schema::check(&batch.schema(), Stage::Raw)?;
    let c = Cols(batch);
    let need = |v: Option<String>, row, field| v.ok_or(RecordError::Null { row, field });
    (0..batch.num_rows())
        .map(|i| {
            Ok(Post {
                platform: need(c.str("platform", i), i, "platform")?.parse().map_err(
                    |message| RecordError::Value {
                        row: i,
                        field: "platform",
                        message,
                    },
                )?,
                id: need(c.str("id", i), i, "id")?,
                url: c.str("url", i),
                created_at: c.ts("created_at", i),
                text: need(c.str("text", i), i, "text")?,
                lang: c.str("lang", i),
                source: c.str("source", i),
                author_id: c.u64("author_id", i),
                author_username: c.str("author_username", i),
                author_name: c.str("author_name", i),
                author_location: c.str("author_location", i),
                author_verified: c.bool("author_verified", i),
                author_followers: c.u64("author_followers", i),
                author_created_at: c.ts("author_created_at", i),
                conversation_id: c.u64("conversation_id", i),
                in_reply_to_user_id: c.u64("in_reply_to_user_id", i),
                is_retweet: c.bool("is_retweet", i).unwrap_or(false),
                is_reply: c.bool("is_reply", i).unwrap_or(false),
                is_quote: c.bool("is_quote", i).unwrap_or(false),
                retweeted_id: c.u64("retweeted_id", i),
                replied_to_id: c.u64("replied_to_id", i),
                quoted_id: c.u64("quoted_id", i),
                referenced_text: c.str("referenced_text", i),
                hashtags: c.strs("hashtags", i),
                mentions: c.strs("mentions", i),
                urls: c.strs("urls", i),
                retweet_count: c.u64("retweet_count", i),
                reply_count: c.u64("reply_count", i),
                like_count: c.u64("like_count", i),
                quote_count: c.u64("quote_count", i),
                possibly_sensitive: c.bool("possibly_sensitive", i),
                withheld_in: c.strs("withheld_in", i),
                edit_history_ids: c.u64s("edit_history_ids", i),
                place_id: c.str("place_id", i),
                place_full_name: c.str("place_full_name", i),
                place_country_code: c.str("place_country_code", i),
                matching_rules: c.strs("matching_rules", i),
                received_at: c.ts("received_at", i),
                // Absent from version-2 files: none.
                cid: c.opt_str("cid", i),
                reply_parent: c.json("reply_parent", i)?,
                reply_root: c.json("reply_root", i)?,
            })
        })
        .collect()
}

/// Encodes batches as one zstd-compressed Parquet file (schema metadata included). The rows
/// are concatenated first, so how they were batched never changes the bytes.
pub fn to_parquet(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Bytes, RecordError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
    if !batches.is_empty() {
        let all = arrow::compute::concat_batches(schema, batches)?;
        w.write(&all)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// Decodes a whole Parquet file.
pub fn from_parquet(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>), RecordError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = builder.schema().clone();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}
