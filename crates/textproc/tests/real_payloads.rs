//! textproc's DataFusion plan on the real v2 payloads (fixtures/twitter-v2) plus tweets
//! carrying each defect the spec lists, checked row by row against a plain-Rust reference.

use std::sync::Arc;

use arrow::array::{
    Array, BooleanArray, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt8Array, UInt32Array,
};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use flagship_core::Post;
use flagship_core::schema::Stage;
use flagship_store::records;
use flagship_store::storage::{Location, S3Options, Store};
use regex::Regex;

fn real_tweets() -> Vec<Post> {
    let dir = flagship_testkit::fixture("twitter-v2");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let mut r = flagship_platforms::jsonl::ReadReport::default();
    for p in names {
        r.read(&p.display().to_string(), &std::fs::read(&p).unwrap(), None);
    }
    r.posts
}

fn crafted(id: u64, text: &str, created_at: DateTime<Utc>) -> Post {
    let raw = format!(
        r#"{{"data":{{"id":"{id}","text":{},"source":"Twitter Web App"}}}}"#,
        serde_json::to_string(text).unwrap()
    );
    let mut t = flagship_platforms::jsonl::parse_payload(raw.as_bytes(), None)
        .unwrap()
        .posts
        .remove(0);
    t.created_at = Some(created_at);
    t
}

/// Tweets as a filtered hour file (combined columns and matched_terms filled in).
fn filtered_batch(tweets: &[Post]) -> RecordBatch {
    let raw = records::to_batch(tweets).unwrap();
    let n = raw.num_rows();
    let mut cols = raw.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec!["obj"; n])));
    cols.push(Arc::new(
        TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC"),
    ));
    let mut terms = ListBuilder::new(StringBuilder::new());
    for _ in 0..n {
        terms.values().append_value("jwst");
        terms.append(true);
    }
    cols.push(Arc::new(terms.finish()));
    RecordBatch::try_new(Stage::Filtered.schema(), cols).unwrap()
}

/// The reference cleaning, step by step with the `regex` crate.
fn reference_model_text(t: &str) -> String {
    let t = t
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let t = Regex::new(r"(?i)\b(?:https?://|www\.)\S+")
        .unwrap()
        .replace_all(&t, " ");
    let t = Regex::new(r"\B@\w+").unwrap().replace_all(&t, " ");
    let t = Regex::new(r"#(\w+)").unwrap().replace_all(&t, "$1");
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn reference_analysis(model: &str) -> String {
    let lower = model.to_lowercase();
    let mapped: String = lower
        .chars()
        .map(|c| if c.is_ascii_lowercase() { c } else { ' ' })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strs<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

#[tokio::test]
async fn textproc_matches_the_reference_and_fixes_the_seed_defects() {
    let at = |d, h, m| Utc.with_ymd_and_hms(2022, 1, d, h, m, 0).unwrap();
    let mut tweets = real_tweets();
    assert!(tweets.len() > 500, "{}", tweets.len());
    // The spec's defects, each in one tweet.
    let defects = [
        (9_000_000_001, "Webb\tunfolds\nits sunshield\r\ntoday"), // tabs/newlines join words in the seed
        (9_000_000_002, "RT if you love #JWST &amp; NASA"), // not a retweet, whatever the text says
        (
            9_000_000_003,
            "&lt;3 the @NASAWebb team https://t.co/abc123 www.nasa.gov/webb mail@x.org",
        ),
        (9_000_000_004, "Go_[webb]^ `now` 2022!"), // the seed's A-z typo kept [ ] ^ _ `
        (9_000_000_005, "https://t.co/only @only"), // nothing left to read
    ];
    for (i, (id, text)) in defects.iter().enumerate() {
        tweets.push(crafted(*id, text, at(9, [0, 4, 5, 21, 23][i], 30)));
    }
    let dir = tempfile::tempdir().unwrap();
    let open =
        |p: &str| Store::open(&Location::Local(dir.path().join(p)), &S3Options::default()).unwrap();
    let (input, output) = (open("filtered"), open("processed"));
    let mut sorted = tweets.clone();
    sorted.sort_by_key(|t| (t.created_at.is_none(), t.created_at, t.id.clone()));
    input
        .write_parquet(
            "2022010900.parquet",
            &Stage::Filtered.schema(),
            &[filtered_batch(&tweets)],
        )
        .await
        .unwrap();

    let ctx = flagship_store::frames::local_session();
    let hours = flagship_textproc::run(&ctx, &input, &output, 2, &|_, _, _| {})
        .await
        .unwrap();
    assert_eq!(hours[0].counts["rows"], tweets.len() as u64);
    let empties = tweets
        .iter()
        .filter(|t| reference_model_text(&t.text).is_empty())
        .count();
    assert!(empties >= 1);
    assert_eq!(hours[0].counts["empty_text_model"], empties as u64);
    let (schema, batches) = output.read_parquet("2022010900.parquet").await.unwrap();
    flagship_core::schema::check(&schema, Stage::Processed).unwrap();
    let b = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(b.num_rows(), tweets.len());
    let ids: &arrow::array::StringArray = b
        .column_by_name("id")
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap();
    let (text, model, analysis) = (
        strs(&b, "text"),
        strs(&b, "text_model"),
        strs(&b, "text_analysis"),
    );
    let (bin, weekday, tod, client) = (
        strs(&b, "word_bin"),
        strs(&b, "weekday"),
        strs(&b, "time_of_day"),
        strs(&b, "client"),
    );
    let words: &UInt32Array = b
        .column_by_name("num_words")
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap();
    let hod: &UInt8Array = b
        .column_by_name("hour_of_day")
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap();
    let rt: &BooleanArray = b
        .column_by_name("is_retweet")
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap();
    for (i, t) in sorted.iter().enumerate() {
        assert_eq!(ids.value(i), t.id, "row {i}: ordered by time, then id");
        assert_eq!(text.value(i), t.text, "the original text is kept");
        let m = reference_model_text(&t.text);
        assert_eq!(model.value(i), m, "tweet {}", t.id);
        assert_eq!(analysis.value(i), reference_analysis(&m), "tweet {}", t.id);
        let n = m.split_whitespace().count() as u32;
        assert_eq!(words.value(i), n);
        assert_eq!(bin.value(i), flagship_core::features::word_bin(n));
        match t.created_at {
            Some(c) => {
                assert_eq!(u32::from(hod.value(i)), c.hour());
                assert_eq!(
                    tod.value(i),
                    flagship_core::features::time_of_day(c.hour()).unwrap()
                );
                assert_eq!(weekday.value(i), c.format("%A").to_string());
                let _ = c.weekday();
            }
            None => assert!(hod.is_null(i) && tod.is_null(i) && weekday.is_null(i)),
        }
        assert_eq!(client.is_null(i), t.source.is_none());
        assert_eq!(rt.value(i), t.is_retweet);
    }
    // The defects, spelled out.
    let row = |id: u64| {
        (0..b.num_rows())
            .find(|&i| ids.value(i) == id.to_string())
            .unwrap()
    };
    assert_eq!(
        model.value(row(9_000_000_001)),
        "Webb unfolds its sunshield today"
    );
    assert_eq!(
        model.value(row(9_000_000_002)),
        "RT if you love JWST & NASA"
    );
    assert!(
        !rt.value(row(9_000_000_002)),
        "a leading RT is not a retweet"
    );
    assert_eq!(model.value(row(9_000_000_003)), "<3 the team mail@x.org");
    assert_eq!(analysis.value(row(9_000_000_004)), "go webb now");
    assert_eq!(model.value(row(9_000_000_005)), "");
    assert_eq!(tod.value(row(9_000_000_001)), "Late Night");
    assert_eq!(tod.value(row(9_000_000_003)), "Early Morning");
    // Real retweets are flagged from referenced_tweets.
    let real_rts = sorted.iter().filter(|t| t.is_retweet).count();
    assert!(real_rts > 0);
    assert_eq!((0..b.num_rows()).filter(|&i| rt.value(i)).count(), real_rts);
}
