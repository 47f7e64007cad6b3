//! One versioned Arrow schema per stage output. `docs/data.md` documents every column.
//!
//! Each schema carries two metadata keys, `flagship.schema` (the stage) and
//! `flagship.schema.version`; [`check`] compares a file's schema with the expected one and
//! names the first field that is missing or of the wrong type. A later stage's schema is
//! always the earlier one plus columns, so one reader serves them all.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const META_NAME: &str = "flagship.schema";
pub const META_VERSION: &str = "flagship.schema.version";
/// Bumped whenever a column changes meaning or type; readers refuse other versions.
pub const VERSION: &str = "3";

/// Earlier versions still read, and the columns each lacks (nullable, read as nulls):
/// version 2 had no reply references (`cid`, `reply_parent`, `reply_root`).
pub const READABLE: &[(&str, &[&str])] = &[("2", &["cid", "reply_parent", "reply_root"])];

/// The stage outputs, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Raw,
    Combined,
    Filtered,
    Processed,
    Split,
    Predictions,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Raw,
        Stage::Combined,
        Stage::Filtered,
        Stage::Processed,
        Stage::Split,
        Stage::Predictions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Raw => "raw",
            Stage::Combined => "combined",
            Stage::Filtered => "filtered",
            Stage::Processed => "processed",
            Stage::Split => "split",
            Stage::Predictions => "predictions",
        }
    }

    /// The Arrow schema of this stage's output.
    pub fn schema(self) -> SchemaRef {
        let fields = match self {
            Stage::Raw => raw_fields(),
            Stage::Combined => [raw_fields(), combined_extra()].concat(),
            Stage::Filtered => [raw_fields(), combined_extra(), filtered_extra()].concat(),
            Stage::Processed => [
                raw_fields(),
                combined_extra(),
                filtered_extra(),
                processed_extra(),
            ]
            .concat(),
            Stage::Split => [
                raw_fields(),
                combined_extra(),
                filtered_extra(),
                processed_extra(),
                split_extra(),
            ]
            .concat(),
            Stage::Predictions => predictions_fields(),
        };
        let meta = HashMap::from([
            (META_NAME.to_owned(), self.name().to_owned()),
            (META_VERSION.to_owned(), VERSION.to_owned()),
        ]);
        Arc::new(Schema::new_with_metadata(fields, meta))
    }
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn str_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn u64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)))
}

fn f(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

/// Columns of [`crate::Post`], in declaration order.
fn raw_fields() -> Vec<Field> {
    use DataType::*;
    vec![
        f("platform", Utf8, false),
        f("id", Utf8, false),
        f("url", Utf8, true),
        f("created_at", utc_ms(), true),
        f("text", Utf8, false),
        f("lang", Utf8, true),
        f("source", Utf8, true),
        f("author_id", UInt64, true),
        f("author_username", Utf8, true),
        f("author_name", Utf8, true),
        f("author_location", Utf8, true),
        f("author_verified", Boolean, true),
        f("author_followers", UInt64, true),
        f("author_created_at", utc_ms(), true),
        f("conversation_id", UInt64, true),
        f("in_reply_to_user_id", UInt64, true),
        f("is_retweet", Boolean, false),
        f("is_reply", Boolean, false),
        f("is_quote", Boolean, false),
        f("retweeted_id", UInt64, true),
        f("replied_to_id", UInt64, true),
        f("quoted_id", UInt64, true),
        f("referenced_text", Utf8, true),
        f("hashtags", str_list(), false),
        f("mentions", str_list(), false),
        f("urls", str_list(), false),
        f("retweet_count", UInt64, true),
        f("reply_count", UInt64, true),
        f("like_count", UInt64, true),
        f("quote_count", UInt64, true),
        f("possibly_sensitive", Boolean, true),
        f("withheld_in", str_list(), false),
        f("edit_history_ids", u64_list(), false),
        f("place_id", Utf8, true),
        f("place_full_name", Utf8, true),
        f("place_country_code", Utf8, true),
        f("matching_rules", str_list(), false),
        f("received_at", utc_ms(), true),
        // Version 3: what a reply needs (Bluesky's CID; the parent and the thread's root as
        // JSON `{"id", "cid"?, "instance"?}`).
        f("cid", Utf8, true),
        f("reply_parent", Utf8, true),
        f("reply_root", Utf8, true),
    ]
}

/// combine: where each row came from, and its Firehose hour.
fn combined_extra() -> Vec<Field> {
    vec![
        f("source_object", DataType::Utf8, false),
        f("hour", utc_ms(), false),
    ]
}

/// filter: the wanted terms that matched (for audit).
fn filtered_extra() -> Vec<Field> {
    vec![f("matched_terms", str_list(), false)]
}

/// textproc: cleaned texts and derived features.
fn processed_extra() -> Vec<Field> {
    use DataType::*;
    vec![
        f("text_model", Utf8, false),
        f("text_analysis", Utf8, false),
        f("num_words", UInt32, false),
        f("word_bin", Utf8, false),
        f("hour_of_day", UInt8, true),
        f("weekday", Utf8, true),
        f("time_of_day", Utf8, true),
        f("client", Utf8, true),
    ]
}

/// split: label, target and which split / batch a row belongs to.
fn split_extra() -> Vec<Field> {
    use DataType::*;
    vec![
        f("label", Int8, true),
        f("need_support", Boolean, true),
        f("split", Utf8, false),
        f("batch", UInt32, false),
    ]
}

fn predictions_fields() -> Vec<Field> {
    use DataType::*;
    vec![
        f("platform", Utf8, false),
        f("id", Utf8, false),
        f("url", Utf8, true),
        f("created_at", utc_ms(), true),
        f("text", Utf8, false),
        f("client", Utf8, true),
        f("time_of_day", Utf8, true),
        f("word_bin", Utf8, true),
        f("num_words", UInt32, true),
        f("need_support_probability", Float32, false),
        f("need_support", Boolean, false),
        f("model_id", Utf8, false),
    ]
}

/// Why a schema is not the one a stage expects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("expected a `{expected}` table, found one marked `{found}`")]
    WrongStage { expected: String, found: String },
    #[error(
        "schema version {found} of `{stage}` is not supported (this build reads version {VERSION})"
    )]
    WrongVersion { stage: String, found: String },
    #[error("missing column `{0}`")]
    MissingField(String),
    #[error("column `{field}` is {found}, expected {expected}")]
    WrongType {
        field: String,
        expected: DataType,
        found: DataType,
    },
}

/// Checks that `actual` holds every column of `stage`'s schema with the same type. Extra
/// columns are allowed; metadata, when present, must name the same stage and version.
pub fn check(actual: &Schema, stage: Stage) -> Result<(), SchemaError> {
    if let Some(found) = actual.metadata.get(META_NAME) {
        let accepted = Stage::ALL
            .iter()
            .skip_while(|s| **s != stage)
            .any(|s| s.name() == found)
            && !(stage != Stage::Predictions && found == "predictions");
        if !accepted {
            return Err(SchemaError::WrongStage {
                expected: stage.name().into(),
                found: found.clone(),
            });
        }
        if let Some(v) = actual.metadata.get(META_VERSION)
            && v != VERSION
            && !READABLE.iter().any(|(old, _)| old == v)
        {
            return Err(SchemaError::WrongVersion {
                stage: found.clone(),
                found: v.clone(),
            });
        }
    }
    // The columns an older version lacks may be absent (they read as nulls).
    let lacks: &[&str] = actual
        .metadata
        .get(META_VERSION)
        .and_then(|v| READABLE.iter().find(|(old, _)| old == v))
        .map_or(&[], |(_, lacks)| lacks);
    for want in stage.schema().fields() {
        if lacks.contains(&want.name().as_str()) && actual.field_with_name(want.name()).is_err() {
            continue;
        }
        let got = actual
            .field_with_name(want.name())
            .map_err(|_| SchemaError::MissingField(want.name().clone()))?;
        if !types_match(got.data_type(), want.data_type()) {
            return Err(SchemaError::WrongType {
                field: want.name().clone(),
                expected: want.data_type().clone(),
                found: got.data_type().clone(),
            });
        }
    }
    Ok(())
}

/// Type equality that ignores list item names and nullability (Parquet writers differ there).
fn types_match(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => types_match(x.data_type(), y.data_type()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_extends_the_previous() {
        let pairs = Stage::ALL[..5].windows(2);
        for w in pairs {
            let (a, b) = (w[0].schema(), w[1].schema());
            assert!(b.fields().len() > a.fields().len());
            // A later table satisfies the earlier stage's reader.
            check(&b, w[0]).unwrap();
            // An earlier table does not satisfy the later one.
            assert!(check(&a, w[1]).is_err());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut fields: Vec<Field> = Stage::Raw
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.retain(|f| f.name() != "lang");
        let s = Schema::new(fields.clone());
        assert_eq!(
            check(&s, Stage::Raw),
            Err(SchemaError::MissingField("lang".into()))
        );
        fields[1] = Field::new("id", DataType::UInt64, false);
        let e = check(&Schema::new(fields), Stage::Raw).unwrap_err();
        assert!(e.to_string().starts_with("column `id` is UInt64"), "{e}");

        let meta = HashMap::from([
            (META_NAME.to_owned(), "raw".to_owned()),
            (META_VERSION.to_owned(), "0".to_owned()),
        ]);
        let old = Stage::Raw.schema().as_ref().clone().with_metadata(meta);
        assert!(matches!(
            check(&old, Stage::Raw),
            Err(SchemaError::WrongVersion { .. })
        ));
        assert!(matches!(
            check(&Stage::Predictions.schema(), Stage::Raw),
            Err(SchemaError::WrongStage { .. })
        ));
    }
}
